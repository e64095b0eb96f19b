/*
 * order - the order service of the order-fulfillment saga.
 *
 * It starts each saga (PlaceOrder, from the command line: cli.c), owns the
 * saga's deadline, and ends each saga:
 *
 *   ShipmentScheduled              -> OrderCompleted
 *   PaymentFailed, PaymentRefunded -> OrderCancelled   (compensation)
 *   deadline passed, still placed  -> OrderCancelled   (every participant
 *                                     then compensates what it did)
 *
 * The Order is event-sourced (aggregate.c): every decision is an append at
 * the version the handler loaded, so a completion and a cancellation racing
 * for the same order cannot both win; the loser runs again on the new
 * version and finds the order already decided.
 *
 *   order [run]          the participant
 *   order monitor        the saga monitor participant (monitor.c)
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

static chorus_outcome_t on_payment_undone(chorus_t *ch, chorus_delivery_t *d,
                                          const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)opaque;
    chorus_tx_t *tx = chorus_delivery_tx(d);
    const char *id = chorus_envelope_aggregate_id(env);
    const char *type = chorus_envelope_event_type(env);
    const char *why = strcmp(type, "PaymentFailed") == 0 ? "payment declined" : "payment refunded";
    const char *detail = svc_str(chorus_envelope_data(env), "reason");
    char reason[300];
    snprintf(reason, sizeof(reason), "%s%s%s", why, detail ? ": " : "", detail ? detail : "");
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

/* The deadline: orders still placed after it are cancelled. */
static void deadline_tick(chorus_t *ch, void *opaque) {
    const int64_t *deadline_ms = opaque;
    if (*deadline_ms <= 0)
        return;
    chorus_tx_t *tx;
    if (chorus_tx_begin(ch, &tx))
        return;
    char ms[32];
    snprintf(ms, sizeof(ms), "%lld", (long long)*deadline_ms);
    PGresult *r = NULL;
    /* The saga's own first event (OrderPlaced, version 1) is the cause. */
    chorus_err_t rc = svc_sql(tx, &r,
                              "SELECT s.order_id, e.event_id FROM order_summaries s"
                              " JOIN events e ON e.aggregate_id = s.order_id AND e.version = 1"
                              " WHERE s.status = 'placed'"
                              " AND placed_at < now() - make_interval(secs => $1::double precision"
                              " / 1000) ORDER BY s.placed_at LIMIT 50 FOR UPDATE OF s SKIP LOCKED",
                              ms, NULL);
    int cancelled = 0;
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        bool done = false;
        rc = order_cancel(tx, PQgetvalue(r, i, 0), "deadline passed", PQgetvalue(r, i, 1),
                          &done, NULL);
        cancelled += done;
    }
    PQclear(r);
    if (rc) {
        chorus_tx_rollback(tx); /* a handler decided one meanwhile: next tick */
        return;
    }
    if (chorus_tx_commit(tx) == CHORUS_OK && cancelled)
        svc_log(SERVICE, NULL, "deadline: cancelled %d orders", cancelled);
}

int order_run(int argc, char **argv) {
    (void)argc; (void)argv;
    char err[512];
    chorus_conf_t *conf = svc_conf(SERVICE, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "order: %s\n", err);
        return 2;
    }
    const char *saga_file = chorus_conf_get(conf, "saga.file");
    chorus_saga_t *saga = chorus_saga_load(saga_file, err, sizeof(err));
    if (!saga) {
        fprintf(stderr, "order: %s\n", err);
        chorus_conf_destroy(conf);
        return 1;
    }
    int64_t deadline_ms = chorus_saga_deadline_ms(saga);
    chorus_saga_destroy(saga);
    chorus_t *ch = svc_new(conf);
    if (!ch)
        return 1;
    chorus_register(ch, "ShipmentScheduled", on_shipped, NULL);
    chorus_register(ch, "PaymentFailed", on_payment_undone, NULL);
    chorus_register(ch, "PaymentRefunded", on_payment_undone, NULL);
    if (order_prepare_tables(ch)) {
        fprintf(stderr, "order: cannot prepare its tables (is PostgreSQL up?)\n");
        chorus_destroy(ch);
        return 1;
    }
    int code = svc_run(ch, deadline_tick, 500, &deadline_ms);
    chorus_destroy(ch);
    return code;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "run") == 0)
        return order_run(argc, argv);
    if (strcmp(argv[1], "monitor") == 0)
        return monitor_run(argc - 1, argv + 1);
    return cli_main(argc - 1, argv + 1);
}
