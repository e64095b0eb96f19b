/*
 * fuzz_conf.c - the configuration setter, chorus_conf_set(), and
 * chorus_new() on what it accepted.
 *
 * The input is up to 32 lines "key=value" (a line is cut at its first
 * NUL, as a C string; the key ends at the first '=').  For each:
 *   UNKNOWN   exactly when chorus_conf_get() knows no such key (NULL);
 *   OK        chorus_conf_get() returns the value, byte for byte;
 *   INVALID   the value before is still there, and errstr says why;
 *   errstr    NUL-terminated in any buffer size (each line uses another,
 *             from 1 to 200 bytes), never overrun.
 * Then chorus_conf_dup() holds the same values, and chorus_new() on the
 * conf either returns a handle (named by service.name; then
 * chorus_destroy()) or NULL, a message, and the conf still the caller's.
 * chorus_new() does not connect; CHORUS_AMQP_URL is unset so that only
 * the input decides.
 */
#include "fuzz_common.h"

#include "conf_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINES 32

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    unsetenv("CHORUS_AMQP_URL");
    return 0;
}

/* Every key the property table has, read from chorus_conf_write_docs()
 * (the table generates it). */
static char **keys;
static size_t nkeys;

static void load_keys(void) {
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    FUZZ_CHECK(f != NULL);
    chorus_conf_write_docs(f);
    fclose(f);
    for (char *line = strtok(doc, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "| `", 3) != 0)
            continue;
        char *end = strchr(line + 3, '`');
        FUZZ_CHECK(end != NULL);
        keys = realloc(keys, (nkeys + 1) * sizeof(*keys));
        FUZZ_CHECK(keys != NULL);
        keys[nkeys++] = strndup(line + 3, (size_t)(end - line - 3));
    }
    free(doc);
    FUZZ_CHECK(nkeys > 10);
}

static void set_one(chorus_conf_t *conf, const char *key, const char *value, size_t errsize) {
    const char *cur = chorus_conf_get(conf, key);
    char *before = cur ? strdup(cur) : NULL;
    char *err = malloc(errsize);
    FUZZ_CHECK(err != NULL && (!cur || before));
    memset(err, 'X', errsize);
    chorus_conf_res_t rc = chorus_conf_set(conf, key, value, err, errsize);
    const char *after = chorus_conf_get(conf, key);
    switch (rc) {
    case CHORUS_CONF_UNKNOWN:
        FUZZ_CHECK(cur == NULL && after == NULL);
        break;
    case CHORUS_CONF_OK:
        FUZZ_CHECK(cur != NULL && after != NULL);
        if (strcmp(after, value) != 0)
            fuzz_fail("set '%s' to '%.100s', get gives '%.100s'", key, value, after);
        break;
    case CHORUS_CONF_INVALID:
        FUZZ_CHECK(cur != NULL && after != NULL);
        if (strcmp(after, before) != 0)
            fuzz_fail("a refused value changed '%s': '%.100s' -> '%.100s'", key, before, after);
        FUZZ_CHECK(errsize < 2 || err[0] != '\0');
        break;
    default: fuzz_fail("chorus_conf_set returned %d", (int)rc);
    }
    if (rc != CHORUS_CONF_OK)
        FUZZ_CHECK(memchr(err, '\0', errsize) != NULL);
    free(err);
    free(before);
}

static void check_dup(const chorus_conf_t *conf) {
    chorus_conf_t *d = chorus_conf_dup(conf);
    FUZZ_CHECK(d != NULL);
    for (size_t i = 0; i < nkeys; i++) {
        const char *a = chorus_conf_get(conf, keys[i]), *b = chorus_conf_get(d, keys[i]);
        FUZZ_CHECK(a && b && strcmp(a, b) == 0);
    }
    chorus_conf_destroy(d);
}

/* What the typed getters make of validated values. */
static void check_typed(const chorus_conf_t *conf) {
    long delays[CHORUS__MAX_DELAYS];
    FUZZ_CHECK(chorus__parse_delays(chorus__conf_str(conf, "retry.delays.ms"), delays,
                                    CHORUS__MAX_DELAYS) >= 0);
    long depth = chorus__conf_int(conf, "message.max.depth");
    FUZZ_CHECK(depth >= 2 && depth <= 1000);
    long prefetch = chorus__conf_int(conf, "topology.prefetch");
    FUZZ_CHECK(prefetch >= 1 && prefetch <= 65535);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!keys)
        load_keys();
    chorus_conf_t *conf = chorus_conf_new();
    FUZZ_CHECK(conf != NULL);
    size_t pos = 0;
    for (int line = 0; line < MAX_LINES && pos < size; line++) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
        char *text = fuzz_cstring(data + pos, n);
        char *eq = strchr(text, '=');
        const char *value = "";
        if (eq) {
            *eq = '\0';
            value = eq + 1;
        }
        set_one(conf, text, value, (size_t)line * 7 % 200 + 1);
        free(text);
        pos += n + 1;
    }
    check_dup(conf);
    check_typed(conf);

    char err[512] = "";
    chorus_t *ch = chorus_new(conf, err, sizeof(err));
    if (ch) {
        FUZZ_CHECK(strcmp(chorus_service(ch), chorus_conf_get(conf, "service.name")) == 0);
        FUZZ_CHECK(chorus_queue_name(ch) && chorus_dlq_name(ch) && chorus_exchange_name(ch));
        chorus_destroy(ch); /* the conf went with it */
    } else {
        FUZZ_CHECK(fuzz_message_ok(err, sizeof(err)));
        chorus_conf_destroy(conf);
    }
    return 0;
}
