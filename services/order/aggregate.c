/*
 * aggregate.c - the Order aggregate, event-sourced, and its read model.
 *
 * Write side: an order is the fold of its events in the event store
 * (OrderPlaced, then OrderCompleted or OrderCancelled); appends carry the
 * expected version, so two writers cannot both decide an order's fate.
 * Snapshots hold {status,total,items,customer}.
 *
 * Read side: order_summaries, one row per order, written in the same
 * transaction as the event by an idempotent, version-guarded upsert
 * ("SET status = x WHERE version < new version"): replaying an event, or
 * the whole store into an empty table (rebuild), gives the same rows.
 */
#include "order.h"

#include <stdlib.h>
#include <string.h>

static chorus_err_t apply(void *state, const chorus_envelope_t *ev, void *opaque) {
    (void)opaque;
    order_state_t *o = state;
    const char *type = chorus_envelope_event_type(ev);
    const cJSON *data = chorus_envelope_data(ev);
    if (strcmp(type, "OrderPlaced") == 0) {
        long long total = 0;
        svc_int(data, "total", &total);
        const char *cust = svc_str(data, "customer_id");
        snprintf(o->status, sizeof(o->status), "placed");
        snprintf(o->customer, sizeof(o->customer), "%s", cust ? cust : "");
        o->total = total;
        o->items = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(data, "items"));
        const char *corr = chorus_envelope_correlation_id(ev);
        snprintf(o->correlation, sizeof(o->correlation), "%s",
                 corr ? corr : chorus_envelope_event_id(ev));
    } else if (strcmp(type, "OrderCompleted") == 0) {
        snprintf(o->status, sizeof(o->status), "completed");
    } else if (strcmp(type, "OrderCancelled") == 0) {
        snprintf(o->status, sizeof(o->status), "cancelled");
    } else {
        return CHORUS_ERR_SCHEMA;
    }
    return CHORUS_OK;
}

static char *snapshot(const void *state, void *opaque) {
    (void)opaque;
    const order_state_t *o = state;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", o->status);
    cJSON_AddNumberToObject(j, "total", (double)o->total);
    cJSON_AddNumberToObject(j, "items", o->items);
    cJSON_AddStringToObject(j, "customer", o->customer);
    cJSON_AddStringToObject(j, "correlation", o->correlation);
    char *s = chorus_json_print(j, NULL);
    cJSON_Delete(j);
    return s;
}

static chorus_err_t restore(void *state, const char *json, void *opaque) {
    (void)opaque;
    order_state_t *o = state;
    cJSON *j = NULL;
    chorus_json_parse(json, strlen(json), &j, NULL);
    const char *st = svc_str(j, "status"), *cust = svc_str(j, "customer");
    const char *corr = svc_str(j, "correlation");
    long long total = 0, items = 0;
    if (!st || !cust || !corr || !svc_int(j, "total", &total) || !svc_int(j, "items", &items)) {
        cJSON_Delete(j);
        return CHORUS_ERR_SCHEMA;
    }
    snprintf(o->status, sizeof(o->status), "%s", st);
    snprintf(o->customer, sizeof(o->customer), "%s", cust);
    snprintf(o->correlation, sizeof(o->correlation), "%s", corr);
    o->total = total;
    o->items = (int)items;
    cJSON_Delete(j);
    return CHORUS_OK;
}

const chorus_aggregate_type_t ORDER_TYPE = {
    .name = "Order", .apply = apply, .snapshot = snapshot, .restore = restore};

static const char *const TABLES[] = {
    "CREATE TABLE IF NOT EXISTS order_summaries ("
    " order_id uuid PRIMARY KEY, customer_id uuid, status text NOT NULL,"
    " total bigint NOT NULL, items int NOT NULL, reason text,"
    " version bigint NOT NULL, placed_at timestamptz NOT NULL,"
    " updated_at timestamptz NOT NULL)",
    "CREATE INDEX IF NOT EXISTS order_summaries_open "
    "ON order_summaries (placed_at) WHERE status = 'placed'",
};

chorus_err_t order_prepare_tables(chorus_t *ch) {
    return svc_create_tables(ch, TABLES, sizeof(TABLES) / sizeof(TABLES[0]), NULL, NULL)
               ? CHORUS_OK
               : CHORUS_ERR_DB;
}

/* The projection: one idempotent upsert per event, guarded by version. */
static chorus_err_t project(chorus_tx_t *tx, const char *id, int64_t version_n, int64_t ts_ms,
                            const char *reason, const order_state_t *o) {
    char version[24], total[24], items[16], ts[32];
    snprintf(version, sizeof(version), "%lld", (long long)version_n);
    snprintf(total, sizeof(total), "%lld", o->total);
    snprintf(items, sizeof(items), "%d", o->items);
    snprintf(ts, sizeof(ts), "%lld", (long long)ts_ms);
    return svc_sql(tx, NULL,
                   "INSERT INTO order_summaries (order_id, customer_id, status, total, items,"
                   " reason, version, placed_at, updated_at)"
                   " VALUES ($1, NULLIF($2, '')::uuid, $3, $4, $5, NULLIF($6, ''), $7,"
                   "  to_timestamp($8::double precision / 1000),"
                   "  to_timestamp($8::double precision / 1000))"
                   " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
                   "  reason = coalesce(EXCLUDED.reason, order_summaries.reason),"
                   "  version = EXCLUDED.version, updated_at = EXCLUDED.updated_at"
                   " WHERE order_summaries.version < EXCLUDED.version",
                   id, o->customer, o->status, total, items, reason ? reason : "", version, ts,
                   NULL);
}

static chorus_err_t project_event(chorus_tx_t *tx, const chorus_envelope_t *ev,
                                  const order_state_t *o) {
    return project(tx, chorus_envelope_aggregate_id(ev), chorus_envelope_version(ev),
                   chorus_envelope_timestamp_ms(ev), svc_str(chorus_envelope_data(ev), "reason"),
                   o);
}

chorus_err_t order_load(chorus_tx_t *tx, const char *id, order_state_t *state,
                        int64_t *versionp) {
    memset(state, 0, sizeof(*state));
    return chorus_es_load(tx, &ORDER_TYPE, id, state, versionp, -1);
}

chorus_err_t order_append(chorus_tx_t *tx, order_state_t *state, int64_t expected_version,
                          chorus_envelope_t *env) {
    /* chorus_es_append takes env: keep what the projection needs. */
    char id[37], reason[256];
    const char *r = svc_str(chorus_envelope_data(env), "reason");
    snprintf(id, sizeof(id), "%s", chorus_envelope_aggregate_id(env));
    snprintf(reason, sizeof(reason), "%s", r ? r : "");
    svc_utf8_trim(reason);
    int64_t ts = chorus_envelope_timestamp_ms(env);
    chorus_err_t rc = chorus_es_append(tx, &ORDER_TYPE, state, expected_version, env);
    if (rc)
        return rc;
    return project(tx, id, expected_version + 1, ts, r ? reason : NULL, state);
}

chorus_err_t order_cancel(chorus_tx_t *tx, const char *id, const char *reason,
                          const char *causation, bool *done, int64_t *versionp) {
    order_state_t o;
    int64_t v = 0;
    *done = false;
    chorus_err_t rc = order_load(tx, id, &o, &v);
    if (versionp)
        *versionp = v;
    if (rc || v == 0 || strcmp(o.status, "placed") != 0)
        return rc; /* unknown, or already completed/cancelled: nothing to do */
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "order_id", id);
    cJSON_AddStringToObject(data, "reason", reason);
    chorus_envelope_t *ev = chorus_envelope_new_json("OrderCancelled", id, v + 1, data, NULL);
    if (!ev)
        return CHORUS_ERR_NOMEM;
    chorus_envelope_set_correlation_id(ev, o.correlation);
    if (causation)
        chorus_envelope_set_causation_id(ev, causation);
    rc = order_append(tx, &o, v, ev);
    *done = rc == CHORUS_OK;
    return rc;
}

typedef struct {
    long events;
    chorus_err_t rc;
} rebuild_t;

/* Replays one stored event into the projection: the summary row so far is
 * the fold of the earlier events, so applying this one to it continues the
 * fold without loading the aggregate again. */
static int rebuild_one(chorus_tx_t *tx, const chorus_envelope_t *ev, void *opaque) {
    rebuild_t *r = opaque;
    order_state_t o = {0};
    PGresult *res = NULL;
    r->rc = svc_sql(tx, &res, "SELECT status, total, items, coalesce(customer_id::text, '') "
                              "FROM order_summaries WHERE order_id = $1",
                    chorus_envelope_aggregate_id(ev), NULL);
    if (!r->rc && PQntuples(res) == 1) {
        snprintf(o.status, sizeof(o.status), "%s", PQgetvalue(res, 0, 0));
        o.total = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        o.items = atoi(PQgetvalue(res, 0, 2));
        snprintf(o.customer, sizeof(o.customer), "%s", PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    if (r->rc || (r->rc = ORDER_TYPE.apply(&o, ev, NULL)) || (r->rc = project_event(tx, ev, &o)))
        return 1;
    r->events++;
    return 0;
}

chorus_err_t order_rebuild_projection(chorus_tx_t *tx, long *events) {
    rebuild_t r = {0};
    chorus_err_t rc = svc_sql(tx, NULL, "TRUNCATE order_summaries", NULL);
    if (!rc)
        rc = chorus_es_replay(tx, "Order", rebuild_one, &r);
    *events = r.events;
    return rc ? rc : r.rc;
}
