/*
 * fuzz_saga.c - the saga declaration loader, chorus_saga_parse().
 *
 * Invariants, for every input:
 *   refused   NULL, and a message that starts with the name given;
 *   accepted  the derived data is consistent:
 *     - the saga has a valid name and at least one service; a deadline has
 *       an owner taking part;
 *     - for every service: its consumes list is sorted, unique, of event
 *       names; each event it consumes has at least one binding
 *       "<producer>.<Event>" whose producer produces it, and each binding
 *       is for an event it consumes;
 *     - chorus_saga_check_handlers() with exactly that list is CHORUS_OK;
 *       one missing or one extra handler is CHORUS_ERR_INVALID_CONF;
 *     - chorus_saga_permissions() works and its regular expressions
 *       compile, match the service's own queues and the events exchange,
 *       and match no other service's queue;
 *     - chorus_saga_write_dot() writes one digraph.
 */
#include "fuzz_common.h"

#include "saga_int.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME "fuzz.json"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

static bool name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_'))
            return false;
    return true;
}

static bool in_list(const char *const *l, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i], s) == 0)
            return true;
    return false;
}

static void check_bindings(const chorus_saga_t *s, const char *svc, const char *const *types,
                           size_t nt) {
    const char *const *keys = NULL;
    size_t nk = chorus_saga_bindings(s, svc, &keys);
    FUZZ_CHECK(nk == 0 || keys != NULL);
    for (size_t i = 0; i < nk; i++) {
        const char *dot = strchr(keys[i], '.');
        if (!dot)
            fuzz_fail("binding '%s' of '%s' is not <producer>.<Event>", keys[i], svc);
        char producer[128];
        snprintf(producer, sizeof(producer), "%.*s", (int)(dot - keys[i]), keys[i]);
        if (!name_ok(producer) || !in_list(types, nt, dot + 1) ||
            !chorus__saga_produces(s, producer, dot + 1))
            fuzz_fail("binding '%s' of '%s' is for no consumed, produced event", keys[i], svc);
        if (i > 0 && strcmp(keys[i - 1], keys[i]) >= 0)
            fuzz_fail("bindings of '%s' are not sorted and unique", svc);
    }
    for (size_t i = 0; i < nt; i++) {
        bool bound = false;
        for (size_t k = 0; k < nk && !bound; k++) {
            const char *dot = strchr(keys[k], '.');
            bound = dot && strcmp(dot + 1, types[i]) == 0;
        }
        if (!bound)
            fuzz_fail("'%s' consumes %s but binds no key for it", svc, types[i]);
    }
}

static void check_handlers(const chorus_saga_t *s, const char *svc, const char *const *types,
                           size_t nt) {
    char err[2048];
    chorus_err_t rc = chorus_saga_check_handlers(s, svc, types, nt, err, sizeof(err));
    if (rc != CHORUS_OK)
        fuzz_fail("'%s' with its own consumes list: %s (%s)", svc, chorus_err_name(rc), err);
    /* a small buffer is never overrun, and says no less than "refused" */
    char tiny[8];
    if (nt > 0) {
        /* one handler fewer is refused, unless chorus answers that event
         * itself there (the pivot's cancellation request, refuses_after) */
        rc = chorus_saga_check_handlers(s, svc, types + 1, nt - 1, tiny, sizeof(tiny));
        FUZZ_CHECK(rc == (chorus__saga_library_handled(s, svc, types[0]) ? CHORUS_OK
                                                                         : CHORUS_ERR_INVALID_CONF));
        FUZZ_CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL);
    }
    if (!in_list(types, nt, "ZzzFuzzExtra")) {
        const char **more = malloc((nt + 1) * sizeof(*more));
        FUZZ_CHECK(more != NULL);
        for (size_t i = 0; i < nt; i++)
            more[i] = types[i];
        more[nt] = "ZzzFuzzExtra";
        FUZZ_CHECK(chorus_saga_check_handlers(s, svc, more, nt + 1, err, sizeof(err)) ==
                   CHORUS_ERR_INVALID_CONF);
        FUZZ_CHECK(strstr(err, "ZzzFuzzExtra") != NULL);
        free(more);
    }
}

static bool matches(const char *re, const char *subject) {
    regex_t r;
    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB) != 0)
        fuzz_fail("permission '%s' does not compile", re);
    bool m = regexec(&r, subject, 0, NULL, 0) == 0;
    regfree(&r);
    return m;
}

static void check_permissions(const chorus_saga_t *s, const char *svc, const char *ns,
                              const char *const *names, size_t nn) {
    char conf[1024], wr[1024], rd[1024], topic[1024], q[256];
    chorus_err_t rc = chorus_saga_permissions(s, svc, ns, conf, wr, rd, topic, sizeof(conf));
    if (rc != CHORUS_OK)
        fuzz_fail("permissions of '%s': %s", svc, chorus_err_name(rc));
    snprintf(q, sizeof(q), "%s.%s", ns, svc);
    FUZZ_CHECK(matches(conf, q) && matches(wr, q) && matches(rd, q));
    snprintf(q, sizeof(q), "%s.%s.dlq", ns, svc);
    FUZZ_CHECK(matches(conf, q) && matches(rd, q));
    snprintf(q, sizeof(q), "%s.events", ns);
    FUZZ_CHECK(matches(conf, q) && matches(wr, q) && matches(rd, q));
    snprintf(q, sizeof(q), "%s.SomeEvent", svc);
    FUZZ_CHECK(matches(topic, q));
    for (size_t i = 0; i < nn; i++) {
        if (strcmp(names[i], svc) == 0)
            continue;
        snprintf(q, sizeof(q), "%s.%s", ns, names[i]);
        if (matches(conf, q) || matches(wr, q) || matches(rd, q))
            fuzz_fail("permissions of '%s' reach the queue of '%s'", svc, names[i]);
        snprintf(q, sizeof(q), "%s.SomeEvent", names[i]);
        if (matches(topic, q))
            fuzz_fail("'%s' may publish as '%s'", svc, names[i]);
    }
    FUZZ_CHECK(chorus_saga_permissions(s, svc, ns, conf, wr, rd, topic, 8) ==
               CHORUS_ERR_INVALID_ARG);
}

static void check_dot(const chorus_saga_t *s) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    FUZZ_CHECK(f != NULL);
    chorus_saga_write_dot(s, f);
    FUZZ_CHECK(fclose(f) == 0);
    char head[128];
    snprintf(head, sizeof(head), "digraph \"%s\" {\n", chorus_saga_name(s));
    FUZZ_CHECK(strncmp(text, head, strlen(head)) == 0);
    FUZZ_CHECK(len >= 2 && strcmp(text + len - 2, "}\n") == 0);
    FUZZ_CHECK(strlen(text) == len);
    free(text);

    FILE *null = fopen("/dev/null", "w");
    FUZZ_CHECK(null != NULL);
    chorus_saga_write_dot(s, null);
    fclose(null);
}

static void check_saga(const chorus_saga_t *s) {
    FUZZ_CHECK(name_ok(chorus_saga_name(s)));
    const char *const *names = NULL;
    size_t nn = chorus_saga_services(s, &names);
    FUZZ_CHECK(nn >= 1 && names != NULL);
    FUZZ_CHECK(chorus_saga_deadline_ms(s) >= 0);
    if (chorus_saga_deadline_ms(s) > 0)
        FUZZ_CHECK(in_list(names, nn, chorus_saga_deadline_owner(s)));
    for (size_t i = 0; i < nn; i++) {
        const char *svc = names[i];
        FUZZ_CHECK(name_ok(svc));
        FUZZ_CHECK(!in_list(names, i, svc));
        const char *const *types = NULL;
        size_t nt = chorus_saga_consumes(s, svc, &types);
        FUZZ_CHECK(nt == 0 || types != NULL);
        for (size_t k = 0; k < nt; k++) {
            FUZZ_CHECK(types[k][0] >= 'A' && types[k][0] <= 'Z');
            if (k > 0 && strcmp(types[k - 1], types[k]) >= 0)
                fuzz_fail("consumes of '%s' are not sorted and unique", svc);
            (void)chorus_saga_is_terminal(s, types[k]);
            (void)chorus__saga_schema_version(s, types[k]);
            int np = chorus__saga_newer_policy(s, types[k]);
            FUZZ_CHECK(np >= -1 && np <= 1);
        }
        check_bindings(s, svc, types, nt);
        check_handlers(s, svc, types, nt);
        check_permissions(s, svc, "shop", names, nn);
        check_permissions(s, svc, "x_y-9", names, nn);
    }
    const char *const *none = NULL;
    if (!in_list(names, nn, "no-such-service")) {
        FUZZ_CHECK(chorus_saga_consumes(s, "no-such-service", &none) == 0);
        FUZZ_CHECK(chorus_saga_check_handlers(s, "no-such-service", NULL, 0, NULL, 0) ==
                   CHORUS_ERR_INVALID_CONF);
    }
    check_dot(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_cstring(data, size);
    char err[1024] = "";
    chorus_saga_t *s = chorus_saga_parse(text, NAME, err, sizeof(err));
    if (!s) {
        FUZZ_CHECK(fuzz_text_message_ok(err, sizeof(err)));
        FUZZ_CHECK(strncmp(err, NAME ": ", strlen(NAME) + 2) == 0);
    } else {
        check_saga(s);
        chorus_saga_destroy(s);
    }
    free(text);
    return 0;
}
