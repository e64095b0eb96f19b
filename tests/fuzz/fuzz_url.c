/*
 * fuzz_url.c - the AMQP URL parser (url.c), as chorus_new() runs it on
 * "amqp.url" or CHORUS_AMQP_URL: chorus__url_parse_list().
 *
 * Invariants, for every input (a C string: cut at its first NUL):
 *   refused   -1 and a message; the message repeats no password: the text
 *             between the first ':' and the last '@' of an authority, of 4
 *             bytes or more, is not in it unless url.c's fixed texts hold it
 *             too (a password "supported" is no leak);
 *   accepted  1..max URLs; every field is NUL-terminated inside its array,
 *             host and vhost are not empty, the port is 1..65535;
 *             chorus__url_describe() depends on host, port and vhost only
 *             (so it cannot show the password), is NUL-terminated in any
 *             buffer size and cut, never overrun;
 *             a URL written back from the fields (every byte outside
 *             [A-Za-z0-9-._~] percent-encoded) parses to the same fields;
 *             a list of one URL parses as chorus__url_parse() does.
 */
#include "fuzz_common.h"

#include "url_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_URLS 16

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

static bool same_url(const chorus__url_t *a, const chorus__url_t *b) {
    return strcmp(a->user, b->user) == 0 && strcmp(a->pass, b->pass) == 0 &&
           strcmp(a->host, b->host) == 0 && a->port == b->port &&
           strcmp(a->vhost, b->vhost) == 0 && a->tls == b->tls;
}

static void pct(char *out, size_t *o, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out[(*o)++] = (char)c;
        } else {
            out[(*o)++] = '%';
            out[(*o)++] = hex[c >> 4];
            out[(*o)++] = hex[c & 15];
        }
    }
}

static void check_rebuilt(const chorus__url_t *u) {
    /* 3 bytes per byte of each field, and the punctuation */
    char url[3 * (128 + 256 + 256 + 256) + 64];
    size_t o = 0;
    o = (size_t)snprintf(url, sizeof(url), "%s", u->tls ? "amqps://" : "amqp://");
    pct(url, &o, u->user);
    url[o++] = ':';
    pct(url, &o, u->pass);
    url[o++] = '@';
    pct(url, &o, u->host);
    o += (size_t)snprintf(url + o, sizeof(url) - o, ":%d/", u->port);
    pct(url, &o, u->vhost);
    url[o] = '\0';
    chorus__url_t back;
    char err[256];
    if (chorus__url_parse(url, &back, err, sizeof(err)) != CHORUS_OK)
        fuzz_fail("a URL written from parsed fields does not parse: %s", err);
    if (!same_url(u, &back))
        fuzz_fail("a URL written from parsed fields parses to other fields");
}

static void check_describe(const chorus__url_t *u) {
    char a[1024], b[1024];
    chorus__url_describe(u, a, sizeof(a));
    FUZZ_CHECK(TERMINATED(a));
    chorus__url_t other = *u;
    memset(other.user, 'U', sizeof(other.user) - 1);
    other.user[sizeof(other.user) - 1] = '\0';
    memset(other.pass, 'P', sizeof(other.pass) - 1);
    other.pass[sizeof(other.pass) - 1] = '\0';
    chorus__url_describe(&other, b, sizeof(b));
    if (strcmp(a, b) != 0)
        fuzz_fail("chorus__url_describe depends on the credentials: '%s' / '%s'", a, b);
    FUZZ_CHECK(strstr(a, "@") == NULL || strchr(u->host, '@') || strchr(u->vhost, '@'));
    static const size_t sizes[] = {1, 2, 7, 16, 33};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        char *small = malloc(n);
        FUZZ_CHECK(small != NULL);
        chorus__url_describe(u, small, n);
        FUZZ_CHECK(memchr(small, '\0', n) != NULL);
        FUZZ_CHECK(strncmp(small, a, strlen(small)) == 0);
        free(small);
    }
}

static void check_url(const chorus__url_t *u) {
    FUZZ_CHECK(TERMINATED(u->user) && TERMINATED(u->pass) && TERMINATED(u->host) &&
               TERMINATED(u->vhost));
    FUZZ_CHECK(u->host[0] != '\0' && u->vhost[0] != '\0');
    FUZZ_CHECK(u->port >= 1 && u->port <= 65535);
    check_describe(u);
    check_rebuilt(u);
}

/* The password as written (between the first ':' and the last '@' of the
 * first authority), when the input spells one of at least 4 bytes. */
static bool written_password(const char *s, char *out, size_t size) {
    const char *plain = strstr(s, "amqp://"), *tls = strstr(s, "amqps://");
    const char *auth = plain && (!tls || plain < tls) ? plain + 7 : tls ? tls + 8 : NULL;
    if (!auth)
        return false;
    size_t end = strcspn(auth, "/, \t\r\n");
    const char *at = NULL;
    for (size_t i = 0; i < end; i++)
        if (auth[i] == '@')
            at = auth + i;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon || at - colon - 1 < 4 || (size_t)(at - colon - 1) >= size)
        return false;
    snprintf(out, size, "%.*s", (int)(at - colon - 1), colon + 1);
    return true;
}

/* What url.c's messages say whatever the input (chorus__url_parse_list()
 * called with at most MAX_URLS or 1 URL). */
static const char *const fixed_texts[] = {
    "bad AMQP URL: empty",
    "bad AMQP URL: must start with amqp:// or amqps://",
    "bad AMQP URL: query strings and fragments are not supported",
    "bad AMQP URL: user name has a bad %-escape or is too long",
    "bad AMQP URL: password has a bad %-escape or is too long",
    "bad AMQP URL: IPv6 address lacks its closing ']'",
    "bad AMQP URL: IPv6 address is empty or too long",
    "bad AMQP URL: unexpected text after ']'",
    "bad AMQP URL: host has a bad %-escape or is too long",
    "bad AMQP URL: port must be a number from 1 to 65535",
    "bad AMQP URL: vhost must be one path segment (write '/' as %2f)",
    "bad AMQP URL: vhost has a bad %-escape or is too long",
    "bad AMQP URL: longer than 1023 bytes",
    "too many AMQP URLs (at most 16)",
    "too many AMQP URLs (at most 1)",
    "no AMQP URL given (set amqp.url or CHORUS_AMQP_URL)",
};

static bool in_fixed_text(const char *s) {
    for (size_t i = 0; i < sizeof(fixed_texts) / sizeof(fixed_texts[0]); i++)
        if (strstr(fixed_texts[i], s))
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = fuzz_cstring(data, size);
    chorus__url_t *urls = malloc(sizeof(*urls) * MAX_URLS);
    char err[512] = "";
    FUZZ_CHECK(urls != NULL);
    int n = chorus__url_parse_list(s, urls, MAX_URLS, err, sizeof(err));
    if (n < 0) {
        FUZZ_CHECK(n == -1 && fuzz_message_ok(err, sizeof(err)));
        char pw[1100];
        if (written_password(s, pw, sizeof(pw)) && strstr(err, pw) && !in_fixed_text(pw))
            fuzz_fail("the error message repeats the password: %s", err);
    } else {
        FUZZ_CHECK(n >= 1 && n <= MAX_URLS);
        for (int i = 0; i < n; i++)
            check_url(&urls[i]);
        if (n == 1 && !strpbrk(s, ", \t\r\n\v\f")) {
            chorus__url_t one;
            FUZZ_CHECK(chorus__url_parse(s, &one, err, sizeof(err)) == CHORUS_OK);
            FUZZ_CHECK(same_url(&one, &urls[0]));
        }
    }
    /* a zero-sized or absent message buffer is never written */
    (void)chorus__url_parse_list(s, urls, 1, NULL, 0);
    free(urls);
    free(s);
    return 0;
}
