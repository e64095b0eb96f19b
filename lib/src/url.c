/*
 * url.c - parsing of amqp:// and amqps:// URLs, as the RabbitMQ URI
 * specification puts it:
 *
 *     amqp[s]://[user[:password]@]host[:port][/vhost]
 *
 * Each part is percent-decoded; an empty path means vhost "/", and "/%2f"
 * spells "/" explicitly.  IPv6 literals go in brackets.  amqps:// marks the
 * URL as TLS (u->tls) and makes 5671 the default port; how TLS is set up
 * (CA, client certificate, checks) is configuration, not part of the URL
 * (amqp.tls.*, see amqp_conn.c), so a list may mix both schemes.  Errors
 * name the part at fault and never repeat the password.
 */
#include "url_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes [s, s+n) into out (size cap); false on a bad escape or overflow. */
static bool pct_decode(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return false;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return false;
            c = h * 16 + l;
            if (c == 0)
                return false;
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

static chorus_err_t fail(char *errstr, size_t size, const char *what) {
    chorus__errstr(errstr, size, "bad AMQP URL: %s", what);
    return CHORUS_ERR_BAD_URL;
}

static chorus_err_t parse_port(const char *p, size_t n, int *port, char *errstr,
                               size_t size) {
    if (n == 0 || n > 5)
        return fail(errstr, size, "port must be a number from 1 to 65535");
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i]))
            return fail(errstr, size, "port must be a number from 1 to 65535");
        v = v * 10 + (p[i] - '0');
    }
    if (v < 1 || v > 65535)
        return fail(errstr, size, "port must be a number from 1 to 65535");
    *port = (int)v;
    return CHORUS_OK;
}

static chorus_err_t parse_userinfo(const char *s, size_t n, chorus__url_t *u,
                                   char *errstr, size_t size) {
    const char *colon = memchr(s, ':', n);
    size_t ulen = colon ? (size_t)(colon - s) : n;
    if (!pct_decode(s, ulen, u->user, sizeof(u->user)))
        return fail(errstr, size, "user name has a bad %-escape or is too long");
    if (colon &&
        !pct_decode(colon + 1, n - ulen - 1, u->pass, sizeof(u->pass)))
        return fail(errstr, size, "password has a bad %-escape or is too long");
    if (!colon)
        u->pass[0] = '\0';
    return CHORUS_OK;
}

static chorus_err_t parse_hostport(const char *s, size_t n, chorus__url_t *u,
                                   char *errstr, size_t size) {
    const char *port = NULL;
    size_t hlen;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return fail(errstr, size, "IPv6 address lacks its closing ']'");
        hlen = (size_t)(close - s - 1);
        if (hlen == 0 || hlen >= sizeof(u->host))
            return fail(errstr, size, "IPv6 address is empty or too long");
        memcpy(u->host, s + 1, hlen);
        u->host[hlen] = '\0';
        const char *after = close + 1;
        if (after < s + n) {
            if (*after != ':')
                return fail(errstr, size, "unexpected text after ']'");
            port = after + 1;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hlen = colon ? (size_t)(colon - s) : n;
        if (hlen == 0) {
            strcpy(u->host, "localhost");
        } else if (!pct_decode(s, hlen, u->host, sizeof(u->host))) {
            return fail(errstr, size, "host has a bad %-escape or is too long");
        }
        if (colon)
            port = colon + 1;
    }
    if (port)
        return parse_port(port, (size_t)(s + n - port), &u->port, errstr, size);
    return CHORUS_OK;
}

chorus_err_t chorus__url_parse(const char *s, chorus__url_t *u, char *errstr,
                               size_t size) {
    memset(u, 0, sizeof(*u));
    strcpy(u->user, "guest");
    strcpy(u->pass, "guest");
    strcpy(u->host, "localhost");
    u->port = 5672;
    strcpy(u->vhost, "/");
    if (!s || !*s)
        return fail(errstr, size, "empty");
    const char *auth;
    if (strncmp(s, "amqps://", 8) == 0) {
        u->tls = true;
        u->port = 5671;
        auth = s + 8;
    } else if (strncmp(s, "amqp://", 7) == 0) {
        auth = s + 7;
    } else {
        return fail(errstr, size, "must start with amqp:// or amqps://");
    }
    const char *slash = strchr(auth, '/');
    const char *end = slash ? slash : auth + strlen(auth);
    if (memchr(auth, '?', (size_t)(end - auth)) || memchr(auth, '#', (size_t)(end - auth)))
        return fail(errstr, size, "query strings and fragments are not supported");
    /* The last '@' before the path separates credentials from host. */
    const char *at = NULL;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            at = p;
    chorus_err_t rc;
    if (at && (rc = parse_userinfo(auth, (size_t)(at - auth), u, errstr, size)))
        return rc;
    const char *host = at ? at + 1 : auth;
    if ((rc = parse_hostport(host, (size_t)(end - host), u, errstr, size)))
        return rc;
    if (slash) {
        const char *path = slash + 1;
        if (strpbrk(path, "/?#"))
            return fail(errstr, size, "vhost must be one path segment (write '/' as %2f)");
        if (*path && !pct_decode(path, strlen(path), u->vhost, sizeof(u->vhost)))
            return fail(errstr, size, "vhost has a bad %-escape or is too long");
        if (!*path)
            strcpy(u->vhost, "/");
    }
    return CHORUS_OK;
}

int chorus__url_parse_list(const char *s, chorus__url_t *out, int max,
                           char *errstr, size_t size) {
    int n = 0;
    const char *p = s ? s : "";
    for (;;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, ", \t\r\n");
        char one[1024];
        if (len >= sizeof(one)) {
            chorus__errstr(errstr, size, "bad AMQP URL: longer than %zu bytes", sizeof(one) - 1);
            return -1;
        }
        if (n == max) {
            chorus__errstr(errstr, size, "too many AMQP URLs (at most %d)", max);
            return -1;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (chorus__url_parse(one, &out[n], errstr, size) != CHORUS_OK)
            return -1;
        n++;
        p += len;
    }
    if (n == 0)
        chorus__errstr(errstr, size, "no AMQP URL given (set amqp.url or CHORUS_AMQP_URL)");
    return n == 0 ? -1 : n;
}

void chorus__url_describe(const chorus__url_t *u, char *buf, size_t size) {
    const char *v = strcmp(u->vhost, "/") == 0 ? "" : u->vhost;
    const char *tls = u->tls ? " (TLS)" : "";
    if (strchr(u->host, ':'))
        snprintf(buf, size, "[%s]:%d/%s%s", u->host, u->port, v, tls);
    else
        snprintf(buf, size, "%s:%d/%s%s", u->host, u->port, v, tls);
}
