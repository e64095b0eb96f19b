/*
 * e2e-inject NAMESPACE PRODUCER EVENT_TYPE AGGREGATE_ID DATA_JSON
 *
 * Publishes one event as PRODUCER would (routing key "PRODUCER.EVENT_TYPE")
 * with publisher confirms; for end-to-end tests that need an event to
 * arrive at a chosen moment.
 */
#include "chorus/chorus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The services' CHORUS_CONF ("key=value;..."), so this publisher declares
 * their queues with the same arguments. */
static int apply_env_conf(chorus_conf_t *c, char *err, size_t n) {
    const char *env = getenv("CHORUS_CONF");
    char *copy = env ? strdup(env) : NULL, *save = NULL;
    int rc = 0;
    for (char *kv = copy ? strtok_r(copy, ";", &save) : NULL; kv && !rc;
         kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        if (eq) {
            *eq = '\0';
            rc = chorus_conf_set(c, kv, eq + 1, err, n) != CHORUS_CONF_OK;
        }
    }
    free(copy);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: e2e-inject NAMESPACE PRODUCER EVENT_TYPE AGGREGATE_ID DATA_JSON\n");
        return 2;
    }
    char err[512];
    chorus_conf_t *c = chorus_conf_new();
    if (chorus_conf_set(c, "service.name", argv[2], err, sizeof(err)) ||
        chorus_conf_set(c, "topology.namespace", argv[1], err, sizeof(err)) ||
        apply_env_conf(c, err, sizeof(err))) {
        fprintf(stderr, "e2e-inject: %s\n", err);
        return 2;
    }
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    if (!ch) {
        fprintf(stderr, "e2e-inject: %s\n", err);
        return 1;
    }
    chorus_error_t *e = NULL;
    chorus_envelope_t *env = chorus_envelope_new(argv[3], argv[4], 1, argv[5], &e);
    if (!env) {
        fprintf(stderr, "e2e-inject: %s\n", chorus_error_string(e));
        chorus_error_destroy(e);
        chorus_destroy(ch);
        return 2;
    }
    int rc = chorus_start(ch) || chorus_publish(ch, env, NULL) || chorus_flush(ch, 10000);
    chorus_destroy(ch);
    if (rc)
        fprintf(stderr, "e2e-inject: publishing failed\n");
    return rc;
}
