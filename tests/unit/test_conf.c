/* Configuration: validation results, defaults, and generated docs. */
#include "cm.h"
#include "conf_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_and_get(void **state) {
    (void)state;
    chorus_conf_t *c = chorus_conf_new();
    char err[256];
    assert_int_equal(chorus_conf_get(c, "topology.prefetch")[0], '1');
    assert_int_equal(chorus_conf_set(c, "topology.prefetch", "250", err, sizeof(err)),
                     CHORUS_CONF_OK);
    assert_int_equal(chorus__conf_int(c, "topology.prefetch"), 250);
    assert_int_equal(chorus_conf_set(c, "service.name", "payment", err, sizeof(err)),
                     CHORUS_CONF_OK);
    assert_string_equal(chorus_conf_get(c, "service.name"), "payment");
    chorus_conf_t *d = chorus_conf_dup(c);
    assert_string_equal(chorus_conf_get(d, "service.name"), "payment");
    chorus_conf_destroy(c);
    chorus_conf_destroy(d);
}

static void rejects(void **state) {
    (void)state;
    chorus_conf_t *c = chorus_conf_new();
    char err[256];
    assert_int_equal(chorus_conf_set(c, "no.such.key", "1", err, sizeof(err)),
                     CHORUS_CONF_UNKNOWN);
    assert_non_null(strstr(err, "no.such.key"));
    assert_int_equal(chorus_conf_set(c, "topology.prefetch", "0", err, sizeof(err)),
                     CHORUS_CONF_INVALID);
    assert_non_null(strstr(err, "1 to 65535"));
    assert_int_equal(chorus_conf_set(c, "topology.prefetch", "12abc", err, sizeof(err)),
                     CHORUS_CONF_INVALID);
    assert_int_equal(chorus_conf_set(c, "topology.queue.type", "stream", err, sizeof(err)),
                     CHORUS_CONF_INVALID);
    assert_non_null(strstr(err, "quorum|classic"));
    assert_int_equal(chorus_conf_set(c, "service.name", "Bad Name", err, sizeof(err)),
                     CHORUS_CONF_INVALID);
    assert_int_equal(chorus_conf_set(c, "retry.delays.ms", "1s,x", err, sizeof(err)),
                     CHORUS_CONF_INVALID);
    /* a rejected value leaves the old one */
    assert_string_equal(chorus_conf_get(c, "topology.prefetch"), "100");
    assert_null(chorus_conf_get(c, "no.such.key"));
    chorus_conf_destroy(c);
    chorus_conf_destroy(NULL);
}

static void new_requires_service_and_url(void **state) {
    (void)state;
    chorus_conf_t *c = chorus_conf_new();
    char err[256];
    unsetenv("CHORUS_AMQP_URL");
    assert_null(chorus_new(c, err, sizeof(err)));
    assert_non_null(strstr(err, "service.name"));
    chorus_conf_set(c, "service.name", "svc", err, sizeof(err));
    assert_null(chorus_new(c, err, sizeof(err)));
    assert_non_null(strstr(err, "AMQP URL"));
    chorus_conf_set(c, "amqp.url", "amqp://u:topsecret@h:99999/", err, sizeof(err));
    assert_null(chorus_new(c, err, sizeof(err)));
    assert_non_null(strstr(err, "port"));
    assert_null(strstr(err, "topsecret"));
    chorus_conf_set(c, "amqp.url", "amqp://u:p@127.0.0.1:1/", err, sizeof(err));
    chorus_t *ch = chorus_new(c, err, sizeof(err)); /* takes c */
    assert_non_null(ch);
    assert_string_equal(chorus_queue_name(ch), "chorus.svc");
    assert_string_equal(chorus_dlq_name(ch), "chorus.svc.dlq");
    chorus_destroy(ch);
    chorus_destroy(NULL);
}

/* lib/docs/CONFIGURATION.md is what chorus_conf_write_docs() writes. */
static void docs_are_current(void **state) {
    (void)state;
    const char *root = getenv("CHORUS_SOURCE_ROOT");
    assert_non_null(root);
    char path[4096];
    snprintf(path, sizeof(path), "%s/lib/docs/CONFIGURATION.md", root);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s is missing: generate it with build/tools/chorus-conf-docs", path);
    static char want[65536], got[65536];
    size_t nw = fread(want, 1, sizeof(want) - 1, f);
    fclose(f);
    FILE *m = fmemopen(got, sizeof(got), "w");
    chorus_conf_write_docs(m);
    fclose(m);
    want[nw] = '\0';
    if (strcmp(want, got) != 0)
        fail_msg("lib/docs/CONFIGURATION.md is out of date: regenerate it with build/lib/tools/chorus-conf-docs");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_and_get),
        cmocka_unit_test(rejects),
        cmocka_unit_test(new_requires_service_and_url),
        cmocka_unit_test(docs_are_current),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
