/*
 * monitor.c - the saga monitor: a projection of every saga instance.
 *
 * It is the saga's observer (declared under "observers"): it consumes every
 * event of the saga and keeps, per correlation id (one saga instance = one
 * order), the steps seen (which service produced which event, when) and the
 * instance's state:
 *
 *   running       only happy-path events so far
 *   compensating  a failure or compensation event was seen
 *   completed     OrderCompleted      (terminal)
 *   cancelled     OrderCancelled      (terminal; compensations may follow)
 *   stuck         not terminal and older than the saga's deadline
 *                 (computed when read, not stored)
 *
 * Events can reach the monitor in any order; every update is monotonic
 * (a state only moves up: running < compensating < terminal; times take
 * min/max), so the result does not depend on the order, and the inbox
 * makes each event count once.
 */
#include "order.h"

#include <stdlib.h>
#include <string.h>

static const char *SERVICE = "monitor";
static const char *const HAPPY[] = {"OrderPlaced", "PaymentSucceeded", "InventoryReserved",
                                    "ShipmentScheduled"};
static chorus_saga_t *saga;

static const char *state_for(const char *type) {
    if (chorus_saga_is_terminal(saga, type))
        return strcmp(type, "OrderCompleted") == 0 ? "completed" : "cancelled";
    for (size_t i = 0; i < sizeof(HAPPY) / sizeof(HAPPY[0]); i++)
        if (strcmp(HAPPY[i], type) == 0)
            return "running";
    return "compensating";
}

static chorus_outcome_t on_event(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                 void *opaque) {
    (void)ch; (void)opaque;
    chorus_tx_t *tx = chorus_delivery_tx(d);
    const char *rk = chorus_delivery_routing_key(d);
    char producer[64];
    snprintf(producer, sizeof(producer), "%.*s", (int)strcspn(rk, "."), rk);
    const char *corr = chorus_envelope_correlation_id(env);
    if (!corr)
        corr = chorus_envelope_event_id(env);
    char ts[32];
    snprintf(ts, sizeof(ts), "%lld", (long long)chorus_envelope_timestamp_ms(env));
    const char *type = chorus_envelope_event_type(env);
    const char *state = state_for(type);
    bool terminal = chorus_saga_is_terminal(saga, type);
    chorus_err_t rc = svc_sql(tx, NULL,
        "INSERT INTO saga_steps (event_id, correlation_id, event_type, service, occurred_at)"
        " VALUES ($1, $2, $3, $4, to_timestamp($5::double precision / 1000))"
        " ON CONFLICT DO NOTHING",
        chorus_envelope_event_id(env), corr, type, producer, ts, NULL);
    if (!rc)
        rc = svc_sql(tx, NULL,
            "INSERT INTO saga_instances AS s (correlation_id, order_id, saga, state, started_at,"
            "  last_event_at, ended_at, steps)"
            " VALUES ($1, $2, $3, $4, to_timestamp($5::double precision / 1000),"
            "  to_timestamp($5::double precision / 1000),"
            "  CASE WHEN $6 THEN to_timestamp($5::double precision / 1000) END, 1)"
            " ON CONFLICT (correlation_id) DO UPDATE SET"
            "  state = CASE WHEN monitor_rank(EXCLUDED.state) > monitor_rank(s.state)"
            "    THEN EXCLUDED.state ELSE s.state END,"
            "  started_at = least(s.started_at, EXCLUDED.started_at),"
            "  last_event_at = greatest(s.last_event_at, EXCLUDED.last_event_at),"
            "  ended_at = coalesce(least(s.ended_at, EXCLUDED.ended_at), s.ended_at,"
            "    EXCLUDED.ended_at),"
            "  steps = s.steps + 1",
            corr, chorus_envelope_aggregate_id(env), chorus_saga_name(saga), state, ts,
            terminal ? "true" : "false", NULL);
    return rc ? CHORUS_RETRY_LATER : CHORUS_HANDLED;
}

static const char *const DDL[] = {
    "CREATE TABLE IF NOT EXISTS saga_instances ("
    " correlation_id uuid PRIMARY KEY, order_id uuid NOT NULL, saga text NOT NULL,"
    " state text NOT NULL, started_at timestamptz NOT NULL,"
    " last_event_at timestamptz NOT NULL, ended_at timestamptz, steps int NOT NULL)",
    "CREATE INDEX IF NOT EXISTS saga_instances_order ON saga_instances (order_id)",
    "CREATE TABLE IF NOT EXISTS saga_steps ("
    " event_id uuid PRIMARY KEY, correlation_id uuid NOT NULL, event_type text NOT NULL,"
    " service text NOT NULL, occurred_at timestamptz NOT NULL,"
    " received_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS saga_steps_corr ON saga_steps (correlation_id, occurred_at)",
    "CREATE OR REPLACE FUNCTION monitor_rank(state text) RETURNS int"
    " LANGUAGE sql IMMUTABLE AS $$ SELECT CASE state WHEN 'running' THEN 1"
    " WHEN 'compensating' THEN 2 ELSE 3 END $$",
};

static chorus_err_t prepare(chorus_t *ch) {
    return svc_create_tables(ch, DDL, sizeof(DDL) / sizeof(DDL[0]), NULL, NULL) ? CHORUS_OK
                                                                             : CHORUS_ERR_DB;
}

static chorus_t *monitor_new(char *err, size_t n) {
    chorus_conf_t *conf = svc_conf(SERVICE, err, n);
    if (!conf)
        return NULL;
    saga = chorus_saga_load(chorus_conf_get(conf, "saga.file"), err, n);
    if (!saga) {
        chorus_conf_destroy(conf);
        return NULL;
    }
    return svc_new(conf);
}

int monitor_run(int argc, char **argv) {
    (void)argc; (void)argv;
    char err[512];
    chorus_t *ch = monitor_new(err, sizeof(err));
    if (!ch) {
        fprintf(stderr, "monitor: %s\n", err);
        return 1;
    }
    const char *const *types;
    size_t n = chorus_saga_consumes(saga, SERVICE, &types);
    for (size_t i = 0; i < n; i++)
        chorus_register(ch, types[i], on_event, NULL);
    int code = 1;
    if (prepare(ch) == CHORUS_OK)
        code = svc_run(ch, NULL, 0, NULL);
    else
        fprintf(stderr, "monitor: cannot prepare its tables (is PostgreSQL up?)\n");
    chorus_destroy(ch);
    chorus_saga_destroy(saga);
    return code;
}

static bool prepare_ok(chorus_tx_t *tx) {
    PGresult *r = NULL;
    bool ok = svc_sql(tx, &r, "SELECT to_regclass('saga_instances') IS NOT NULL", NULL) ==
                  CHORUS_OK && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!ok)
        fprintf(stderr, "saga-status: the saga monitor has not run yet (order monitor)\n");
    return ok;
}

/* scripts/saga status ID: one saga's timeline, by order or correlation id. */
int monitor_status(const char *id) {
    char err[512];
    chorus_t *ch = monitor_new(err, sizeof(err));
    if (!ch) {
        fprintf(stderr, "saga-status: %s\n", err);
        return 1;
    }
    chorus_tx_t *tx;
    int code = 1;
    char deadline[32];
    snprintf(deadline, sizeof(deadline), "%lld", (long long)chorus_saga_deadline_ms(saga));
    PGresult *r = NULL, *steps = NULL;
    if (!chorus_uuid_valid(id)) {
        fprintf(stderr, "saga-status: '%s' is not an order or correlation id (a UUID)\n", id);
        code = 2;
    } else if (chorus_tx_begin(ch, &tx) == CHORUS_OK) {
        if (prepare_ok(tx) &&
            svc_sql(tx, &r,
                "SELECT correlation_id, order_id, CASE WHEN state IN ('running','compensating')"
                " AND started_at + make_interval(secs => $2::double precision / 1000) < now()"
                " THEN 'stuck (' || state || ')' ELSE state END,"
                " started_at, round(extract(epoch FROM last_event_at - started_at) * 1000), steps"
                " FROM saga_instances WHERE order_id = $1 OR correlation_id = $1",
                id, deadline, NULL) == CHORUS_OK && PQntuples(r) == 1 &&
            svc_sql(tx, &steps,
                "SELECT round(extract(epoch FROM s.occurred_at - i.started_at) * 1000),"
                " s.service, s.event_type FROM saga_steps s JOIN saga_instances i"
                " USING (correlation_id) WHERE s.correlation_id = $1 ORDER BY s.occurred_at",
                PQgetvalue(r, 0, 0), NULL) == CHORUS_OK) {
            printf("saga %s  order %s\n  correlation %s\n  state %s, %s steps, %s ms from "
                   "first to last event\n\n", chorus_saga_name(saga), PQgetvalue(r, 0, 1),
                   PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 5),
                   PQgetvalue(r, 0, 4));
            for (int i = 0; i < PQntuples(steps); i++)
                printf("  +%6s ms  %-10s %s\n", PQgetvalue(steps, i, 0),
                       PQgetvalue(steps, i, 1), PQgetvalue(steps, i, 2));
            code = 0;
        } else {
            fprintf(stderr, "saga-status: no saga instance for %s\n", id);
        }
        chorus_tx_rollback(tx);
    }
    PQclear(r);
    PQclear(steps);
    chorus_destroy(ch);
    chorus_saga_destroy(saga);
    return code;
}
