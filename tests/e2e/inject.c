/*
 * e2e-inject NAMESPACE PRODUCER EVENT_TYPE AGGREGATE_ID DATA_JSON [CORRELATION_ID]
 *
 * Publishes one event as PRODUCER would (routing key "PRODUCER.EVENT_TYPE")
 * with publisher confirms; for end-to-end tests that need an event to
 * arrive at a chosen moment.  CORRELATION_ID puts it into that saga
 * instance (default: a flow of its own).
 */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: e2e-inject NAMESPACE PRODUCER EVENT_TYPE AGGREGATE_ID DATA_JSON "
                        "[CORRELATION_ID]\n");
        return 2;
    }
    char err[512];
    chorus_conf_t *c = chorus_conf_new();
    if (chorus_conf_set(c, "service.name", argv[2], err, sizeof(err)) ||
        chorus_conf_set(c, "topology.namespace", argv[1], err, sizeof(err)) ||
        /* the services' settings, so it declares their queues alike */
        !svc_conf_extra(c, getenv("CHORUS_CONF") ? getenv("CHORUS_CONF") : "", err,
                        sizeof(err))) {
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
    if (argc == 7 && chorus_envelope_set_correlation_id(env, argv[6])) {
        fprintf(stderr, "e2e-inject: '%s' is not a UUID\n", argv[6]);
        chorus_envelope_destroy(env);
        chorus_destroy(ch);
        return 2;
    }
    int rc = chorus_start(ch) || chorus_publish(ch, env, NULL) || chorus_flush(ch, 10000);
    chorus_destroy(ch);
    if (rc)
        fprintf(stderr, "e2e-inject: publishing failed\n");
    return rc;
}
