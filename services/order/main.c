/*
 * order - the order service of the order-fulfillment saga.
 *
 * It starts each saga (PlaceOrder, from the command line: cli.c) and ends
 * each saga:
 *
 *   ShipmentScheduled              -> OrderCompleted
 *   PaymentFailed, PaymentRefunded,
 *   ShipmentCancelled              -> OrderCancelled   (compensation; every
 *                                     participant then undoes what it did)
 *
 * The deadline is libchorus' (the declaration's "deadline" and
 * "cancellation"): the first event carries it, a durable timer armed with
 * it asks shipping, the pivot, to cancel, and ShipmentCancelled comes back
 * when shipping had not shipped.  `order cancel ID` asks the same.
 *
 * The Order is event-sourced (aggregate.c): every decision is an append at
 * the version the handler loaded, so a completion and a cancellation racing
 * for the same order cannot both win; the loser runs again on the new
 * version and finds the order already decided.
 *
 *   order [run]          the participant
 *   order place ...      and the other commands of cli.c
 */
#include "order.h"

#include <stdlib.h>
#include <string.h>

static const char *SERVICE = "order";

static chorus_outcome_t fail_unknown(chorus_delivery_t *d, const chorus_envelope_t *env) {
    chorus_delivery_set_error(d, "no order %s", chorus_envelope_aggregate_id(env));
    return CHORUS_REJECT;
}

static chorus_outcome_t on_shipped(chorus_t *ch, chorus_delivery_t *d,
                                   const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)opaque;
    chorus_tx_t *tx = chorus_delivery_tx(d);
    const char *id = chorus_envelope_aggregate_id(env);
    order_state_t o;
    int64_t v = 0;
    if (order_load(tx, id, &o, &v))
        return CHORUS_RETRY_LATER;
    if (v == 0)
        return fail_unknown(d, env);
    if (strcmp(o.status, "cancelled") == 0) {
        svc_log(SERVICE, env, "shipment scheduled for an order already cancelled");
        return CHORUS_HANDLED;
    }
    if (strcmp(o.status, "placed") != 0)
        return CHORUS_HANDLED; /* already completed */
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "order_id", id);
    chorus_envelope_t *ev = chorus_envelope_new_json("OrderCompleted", id, v + 1, data, NULL);
    if (ev)
        chorus_envelope_set_correlation_id(ev, o.correlation);
    if (!ev || order_append(tx, &o, v, ev))
        return CHORUS_RETRY_LATER;
    svc_log(SERVICE, env, "order %s completed", id);
    return CHORUS_HANDLED;
}

/* PaymentFailed, PaymentRefunded, ShipmentCancelled: the order is cancelled. */
static chorus_outcome_t on_undone(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                  void *opaque) {
    (void)ch; (void)opaque;
    chorus_tx_t *tx = chorus_delivery_tx(d);
    const char *id = chorus_envelope_aggregate_id(env);
    const char *type = chorus_envelope_event_type(env);
    const char *why = strcmp(type, "PaymentFailed") == 0    ? "payment declined"
                      : strcmp(type, "PaymentRefunded") == 0 ? "payment refunded"
                                                             : "cancelled before shipping";
    const char *detail = svc_str(chorus_envelope_data(env), "reason");
    char reason[300];
    snprintf(reason, sizeof(reason), "%s%s%s", why, detail ? ": " : "", detail ? detail : "");
    svc_utf8_trim(reason);
    bool done = false;
    int64_t v = 0;
    if (order_cancel(tx, id, reason, NULL, &done, &v))
        return CHORUS_RETRY_LATER;
    if (v == 0)
        return fail_unknown(d, env);
    if (done)
        svc_log(SERVICE, env, "order %s cancelled: %s", id, reason);
    return CHORUS_HANDLED;
}

chorus_err_t order_setup(chorus_t *ch, void *opaque) {
    (void)opaque;
    chorus_err_t rc = chorus_register(ch, "ShipmentScheduled", on_shipped, NULL);
    if (!rc)
        rc = chorus_register(ch, "PaymentFailed", on_undone, NULL);
    if (!rc)
        rc = chorus_register(ch, "PaymentRefunded", on_undone, NULL);
    if (!rc)
        rc = chorus_register(ch, "ShipmentCancelled", on_undone, NULL);
    return rc ? rc : order_prepare_tables(ch);
}

int order_run(int argc, char **argv) {
    (void)argc; (void)argv;
    char err[512];
    chorus_conf_t *conf = svc_conf(SERVICE, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "order: %s\n", err);
        return 2;
    }
    chorus_t *ch = svc_new(conf);
    if (!ch)
        return 1;
    if (order_setup(ch, NULL)) {
        fprintf(stderr, "order: cannot prepare its tables (is PostgreSQL up?)\n");
        chorus_destroy(ch);
        return 1;
    }
    int code = svc_run(ch);
    chorus_destroy(ch);
    return code;
}

#ifndef SVC_NO_MAIN
int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "run") == 0)
        return order_run(argc, argv);
    return cli_main(argc - 1, argv + 1);
}
#endif
