/*
 * The event store against the real PostgreSQL: snapshots plus tail equal a
 * full replay, "state as of T" (also with snapshots newer than T), optimistic
 * concurrency between two writers, upcasting of stored v1 events (the row
 * itself unchanged), replay in global order with early stop, and paging.
 *
 * Each test works in a schema of its own (chorus migrates it on the first
 * transaction) and drops it at the end.  No broker connection is needed:
 * chorus_tx_begin() works without chorus_start(); appended events stay in
 * the outbox.
 */
#include "testlib.h"
#include "chorus/chorus_pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- an Order aggregate ----------------------------------------------------- */

typedef struct {
    char status[16];
    int items;
    int64_t total;
    char currency[8];
} order_t;

/* What the callbacks saw, reset by each load. */
static struct {
    int applies, restores;
    int last_schema;
    int64_t last_version, last_ts;
    bool out_of_order;
} g;

static void seen_reset(void) { memset(&g, 0, sizeof(g)); }

static int64_t num(const cJSON *data, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(data, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

static chorus_err_t order_apply(void *state, const chorus_envelope_t *ev, void *opaque) {
    (void)opaque;
    order_t *o = state;
    const char *t = chorus_envelope_event_type(ev);
    const cJSON *d = chorus_envelope_data(ev);
    if (chorus_envelope_version(ev) != g.last_version + 1 && g.last_version)
        g.out_of_order = true;
    g.applies++;
    g.last_version = chorus_envelope_version(ev);
    g.last_schema = chorus_envelope_schema_version(ev);
    g.last_ts = chorus_envelope_timestamp_ms(ev);
    if (strcmp(t, "OrderPlaced") == 0) {
        snprintf(o->status, sizeof(o->status), "placed");
        if (g.last_schema >= 2) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(d, "currency");
            o->total += num(d, "total_cents");
            snprintf(o->currency, sizeof(o->currency), "%s",
                     cJSON_IsString(c) ? c->valuestring : "?");
        } else {
            o->total += num(d, "total");
        }
    } else if (strcmp(t, "ItemAdded") == 0) {
        o->items++;
        o->total += num(d, "price");
    } else if (strcmp(t, "OrderPaid") == 0) {
        snprintf(o->status, sizeof(o->status), "paid");
    } else if (strcmp(t, "OrderShipped") == 0) {
        snprintf(o->status, sizeof(o->status), "shipped");
    } else {
        return CHORUS_ERR_INVALID_ARG;
    }
    return CHORUS_OK;
}

static char *order_snapshot(const void *state, void *opaque) {
    (void)opaque;
    const order_t *o = state;
    char *s = malloc(128);
    snprintf(s, 128, "{\"status\":\"%s\",\"items\":%d,\"total\":%" PRId64 ",\"currency\":\"%s\"}",
             o->status, o->items, o->total, o->currency);
    return s;
}

static chorus_err_t order_restore(void *state, const char *json, void *opaque) {
    (void)opaque;
    order_t *o = state;
    cJSON *j = cJSON_Parse(json);
    if (!j)
        return CHORUS_ERR_PARSE;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(j, "currency");
    snprintf(o->status, sizeof(o->status), "%s", cJSON_IsString(st) ? st->valuestring : "");
    snprintf(o->currency, sizeof(o->currency), "%s", cJSON_IsString(cur) ? cur->valuestring : "");
    o->items = (int)num(j, "items");
    o->total = num(j, "total");
    cJSON_Delete(j);
    g.restores++;
    return CHORUS_OK;
}

static const chorus_aggregate_type_t ORDER = {
    "Order", order_apply, order_snapshot, order_restore, NULL};
/* The same events under another aggregate type, for replay filtering. */
static const chorus_aggregate_type_t CART = {
    "Cart", order_apply, order_snapshot, order_restore, NULL};

/* ---- fixtures ------------------------------------------------------------------ */

static void set(chorus_conf_t *c, const char *k, const char *v) {
    char err[256];
    if (chorus_conf_set(c, k, v, err, sizeof(err)) != CHORUS_CONF_OK)
        fail_msg("conf %s=%s: %s", k, v, err);
}

/* The schema of the running test, dropped by its teardown even when it
 * failed.  A failed test leaves its chorus_t (and maybe an open
 * transaction) behind, so the sessions holding locks in that schema -- its
 * own, the name is unique -- are ended first. */
static char current_schema[64];

static int drop_current_schema(void **unused) {
    (void)unused;
    const char *p[] = {current_schema};
    if (!current_schema[0])
        return 0;
    free(it_pg_value("SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "
                     "JOIN pg_class c ON c.oid = l.relation "
                     "JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                     1, p));
    it_pg_drop_schema(current_schema);
    current_schema[0] = '\0';
    return 0;
}

/* A participant whose store is schema "<ns>_<suffix>" (written to schema). */
static chorus_t *es_new(const char *suffix, const char *every, char schema[64]) {
    char err[512];
    chorus_conf_t *c = it_conf("order");
    snprintf(schema, 64, "%s_%s", it_ns(), suffix);
    snprintf(current_schema, sizeof(current_schema), "%s", schema);
    set(c, "store.type", "postgres");
    set(c, "store.schema", schema);
    set(c, "store.snapshot.every", every);
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    if (!ch)
        fail_msg("chorus_new: %s", err);
    return ch;
}

static chorus_tx_t *begin(chorus_t *ch) {
    chorus_tx_t *tx = NULL;
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    assert_non_null(tx);
    return tx;
}

static chorus_envelope_t *event(const char *agg, const char *type, const char *data,
                                int64_t ts_ms) {
    chorus_envelope_t *e = chorus_envelope_new(type, agg, 1, data, NULL);
    assert_non_null(e);
    if (ts_ms >= 0)
        assert_int_equal(chorus_envelope_set_timestamp_ms(e, ts_ms), CHORUS_OK);
    return e;
}

static void append(chorus_tx_t *tx, const chorus_aggregate_type_t *type, order_t *o,
                   int64_t expected, const char *agg, const char *evtype, const char *data,
                   int64_t ts_ms) {
    assert_int_equal(chorus_es_append(tx, type, o, expected, event(agg, evtype, data, ts_ms)),
                     CHORUS_OK);
}

/* Loads into a fresh state; returns the version. */
static int64_t load(chorus_tx_t *tx, const chorus_aggregate_type_t *type, const char *agg,
                    order_t *o, int64_t as_of_ms) {
    int64_t v = -1;
    memset(o, 0, sizeof(*o));
    seen_reset();
    assert_int_equal(chorus_es_load(tx, type, agg, o, &v, as_of_ms), CHORUS_OK);
    return v;
}

/* SQL on the test's own connection, with "%s" for the schema. */
static char *value_in(const char *schema, const char *fmt, const char *p1) {
    char sql[512];
    const char *p[] = {p1};
    snprintf(sql, sizeof(sql), fmt, schema);
    return it_pg_value(sql, p1 ? 1 : 0, p1 ? p : NULL);
}

static void assert_value(char *got, const char *want) {
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void finish(chorus_t *ch, const char *schema) {
    chorus_destroy(ch);
    it_pg_drop_schema(schema);
    current_schema[0] = '\0';
}

/* ---- snapshots --------------------------------------------------------------- */

/* 12 events, 3 per transaction, snapshots every 5: loading from the
 * snapshot at 10 plus events 11..12 equals replaying all 12. */
static void snapshot_plus_tail_equals_full_replay(void **unused) {
    (void)unused;
    char schema[64], agg[37], data[64];
    chorus_t *ch = es_new("es_snap", "5", schema);
    chorus_uuid_v7(agg);
    order_t o;
    int n = 0;
    for (int t = 0; t < 4; t++) {
        chorus_tx_t *tx = begin(ch);
        assert_int_equal(load(tx, &ORDER, agg, &o, -1), n);
        for (int k = 0; k < 3; k++, n++) {
            if (n == 0)
                append(tx, &ORDER, &o, n, agg, "OrderPlaced", "{\"total\":0}", -1);
            else if (n == 11)
                append(tx, &ORDER, &o, n, agg, "OrderPaid", NULL, -1);
            else {
                snprintf(data, sizeof(data), "{\"price\":%d}", (n + 1) * 100);
                append(tx, &ORDER, &o, n, agg, "ItemAdded", data, -1);
            }
        }
        assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    }
    /* Versions 2..11 add (2+...+11) * 100 = 6500 over 10 items. */
    assert_string_equal(o.status, "paid");
    assert_int_equal(o.items, 10);
    assert_int_equal(o.total, 6500);

    assert_value(value_in(schema, "SELECT string_agg(version::text, ',' ORDER BY version) "
                                  "FROM %s.snapshots WHERE aggregate_id = $1::uuid", agg),
                 "5,10");
    assert_value(value_in(schema, "SELECT state->>'items' FROM %s.snapshots "
                                  "WHERE aggregate_id = $1::uuid AND version = 10", agg),
                 "9");
    assert_value(value_in(schema, "SELECT count(*) FROM %s.outbox WHERE aggregate_id = $1::uuid",
                          agg), "12");

    chorus_tx_t *tx = begin(ch);
    order_t snap, full;
    assert_int_equal(load(tx, &ORDER, agg, &snap, -1), 12);
    assert_int_equal(g.restores, 1);
    assert_int_equal(g.applies, 2); /* 11 and 12 after the snapshot at 10 */
    assert_int_equal(g.last_version, 12);
    chorus_tx_rollback(tx);

    assert_value(value_in(schema, "WITH d AS (DELETE FROM %s.snapshots RETURNING 1) "
                                  "SELECT count(*) FROM d", NULL), "2");
    assert_value(value_in(schema, "SELECT count(*) FROM %s.snapshots", NULL), "0");

    tx = begin(ch);
    assert_int_equal(load(tx, &ORDER, agg, &full, -1), 12);
    assert_int_equal(g.restores, 0);
    assert_int_equal(g.applies, 12);
    assert_false(g.out_of_order);
    chorus_tx_rollback(tx);
    assert_memory_equal(&snap, &full, sizeof(order_t));
    assert_string_equal(full.status, "paid");
    assert_int_equal(full.items, 10);
    assert_int_equal(full.total, 6500);
    finish(ch, schema);
}

/* ---- as of --------------------------------------------------------------------- */

#define T0 INT64_C(1767225600123) /* 2026-01-01T00:00:00.123Z */
#define HOUR INT64_C(3600000)

static void state_as_of_time(void **unused) {
    (void)unused;
    char schema[64], agg[37];
    chorus_t *ch = es_new("es_asof", "2", schema);
    chorus_uuid_v7(agg);
    order_t o = {0};
    chorus_tx_t *tx = begin(ch);
    append(tx, &ORDER, &o, 0, agg, "OrderPlaced", "{\"total\":1000}", T0);
    append(tx, &ORDER, &o, 1, agg, "ItemAdded", "{\"price\":100}", T0 + HOUR);
    append(tx, &ORDER, &o, 2, agg, "ItemAdded", "{\"price\":200}", T0 + 2 * HOUR);
    append(tx, &ORDER, &o, 3, agg, "OrderPaid", NULL, T0 + 3 * HOUR);
    append(tx, &ORDER, &o, 4, agg, "OrderShipped", NULL, T0 + 4 * HOUR);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    assert_value(value_in(schema, "SELECT string_agg(version::text, ',' ORDER BY version) "
                                  "FROM %s.snapshots WHERE aggregate_id = $1::uuid", agg),
                 "2,4");
    /* created_at is the envelope's timestamp, to the millisecond. */
    assert_value(value_in(schema, "SELECT to_char(created_at AT TIME ZONE 'UTC', "
                                  "'YYYY-MM-DD HH24:MI:SS.MS') FROM %s.events "
                                  "WHERE aggregate_id = $1::uuid AND version = 2", agg),
                 "2026-01-01 01:00:00.123");

    tx = begin(ch);
    /* After the 2nd event, before the 3rd: the snapshot at 2 serves. */
    assert_int_equal(load(tx, &ORDER, agg, &o, T0 + HOUR + HOUR / 2), 2);
    assert_string_equal(o.status, "placed");
    assert_int_equal(o.items, 1);
    assert_int_equal(o.total, 1100);
    /* Before the first event: nothing. */
    assert_int_equal(load(tx, &ORDER, agg, &o, T0 - 1), 0);
    assert_string_equal(o.status, "");
    assert_int_equal(g.applies + g.restores, 0);
    /* At version 3 the snapshot at 4 must not be used: snapshot 2 + event 3. */
    assert_int_equal(load(tx, &ORDER, agg, &o, T0 + 2 * HOUR + HOUR / 2), 3);
    assert_int_equal(g.restores, 1);
    assert_int_equal(g.applies, 1);
    assert_int_equal(g.last_version, 3);
    assert_string_equal(o.status, "placed");
    assert_int_equal(o.items, 2);
    assert_int_equal(o.total, 1300);
    /* The instant of an event counts (inclusive), one ms earlier does not. */
    assert_int_equal(load(tx, &ORDER, agg, &o, T0 + 3 * HOUR), 4);
    assert_string_equal(o.status, "paid");
    assert_int_equal(load(tx, &ORDER, agg, &o, T0 + 3 * HOUR - 1), 3);
    assert_string_equal(o.status, "placed");
    /* Now, and far in the future: everything; the timestamp round trips. */
    assert_int_equal(load(tx, &ORDER, agg, &o, -1), 5);
    assert_string_equal(o.status, "shipped");
    assert_int_equal(g.last_ts, T0 + 4 * HOUR);
    assert_int_equal(load(tx, &ORDER, agg, &o, T0 + 1000 * HOUR), 5);
    assert_string_equal(o.status, "shipped");
    assert_int_equal(o.total, 1300);
    assert_int_equal(load(tx, &ORDER, agg, &o, INT64_MAX), 5);
    assert_string_equal(o.status, "shipped");
    /* An aggregate with no events. */
    char none[37];
    chorus_uuid_v7(none);
    assert_int_equal(load(tx, &ORDER, none, &o, -1), 0);
    assert_int_equal(g.applies, 0);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK); /* reads left it sound */
    finish(ch, schema);
}

/* ---- optimistic concurrency ------------------------------------------------------ */

static void concurrent_writers_conflict(void **unused) {
    (void)unused;
    char schema[64], agg[37];
    chorus_t *a = es_new("es_occ", "50", schema);
    chorus_t *b = es_new("es_occ", "50", schema);
    chorus_uuid_v7(agg);
    order_t oa = {0}, ob = {0};
    chorus_tx_t *ta = begin(a);
    append(ta, &ORDER, &oa, 0, agg, "OrderPlaced", "{\"total\":1000}", -1);
    append(ta, &ORDER, &oa, 1, agg, "ItemAdded", "{\"price\":100}", -1);
    assert_int_equal(chorus_tx_commit(ta), CHORUS_OK);

    ta = begin(a);
    chorus_tx_t *tb = begin(b);
    assert_int_equal(load(ta, &ORDER, agg, &oa, -1), 2);
    assert_int_equal(load(tb, &ORDER, agg, &ob, -1), 2);
    append(ta, &ORDER, &oa, 2, agg, "ItemAdded", "{\"price\":300}", -1);
    assert_int_equal(chorus_tx_commit(ta), CHORUS_OK);

    chorus_envelope_t *late = event(agg, "ItemAdded", "{\"price\":500}", -1);
    assert_int_equal(chorus_es_append(tb, &ORDER, &ob, 2, late), CHORUS_ERR_CONFLICT);
    assert_int_equal(ob.items, 1); /* not applied */
    assert_int_equal(ob.total, 1100);
    /* The transaction knows: it cannot commit. */
    assert_int_equal(chorus_tx_commit(tb), CHORUS_ERR_CONFLICT);

    tb = begin(b);
    assert_int_equal(load(tb, &ORDER, agg, &ob, -1), 3);
    assert_int_equal(ob.total, 1400);
    append(tb, &ORDER, &ob, 3, agg, "ItemAdded", "{\"price\":500}", -1);
    assert_int_equal(chorus_tx_commit(tb), CHORUS_OK);

    ta = begin(a);
    assert_int_equal(load(ta, &ORDER, agg, &oa, -1), 4);
    assert_int_equal(oa.items, 3);
    assert_int_equal(oa.total, 1900);
    chorus_tx_rollback(ta);
    assert_value(value_in(schema, "SELECT string_agg(event_data->>'price', ',' ORDER BY version) "
                                  "FROM %s.events WHERE aggregate_id = $1::uuid", agg),
                 "100,300,500");
    chorus_destroy(b);
    finish(a, schema);
}

/* ---- upcasting --------------------------------------------------------------------- */

static chorus_err_t placed_v1_to_v2(cJSON *data, int from, void *opaque) {
    (void)opaque;
    cJSON *total = cJSON_GetObjectItemCaseSensitive(data, "total");
    if (from != 1 || !cJSON_IsNumber(total))
        return CHORUS_ERR_SCHEMA;
    cJSON_AddNumberToObject(data, "total_cents", total->valuedouble);
    cJSON_AddStringToObject(data, "currency", "EUR");
    cJSON_DeleteItemFromObjectCaseSensitive(data, "total");
    return CHORUS_OK;
}

typedef struct {
    int n;
    int schema;
    char data[256];
} seen_t;

static int remember(chorus_tx_t *tx, const chorus_envelope_t *ev, void *opaque) {
    (void)tx;
    seen_t *s = opaque;
    s->n++;
    s->schema = chorus_envelope_schema_version(ev);
    snprintf(s->data, sizeof(s->data), "%s", chorus_envelope_data_json(ev));
    return 0;
}

static void insert_raw_v1(chorus_tx_t *tx, const char *agg, const char *data) {
    char id[37];
    chorus_uuid_v7(id);
    const char *p[] = {id, agg, data};
    assert_int_equal(
        chorus_tx_exec(tx, "INSERT INTO events (event_id, aggregate_id, aggregate_type, "
                           "event_type, event_data, metadata, version, schema_version, "
                           "created_at) VALUES ($1::uuid, $2::uuid, 'Order', 'OrderPlaced', "
                           "$3::jsonb, '{}', 1, 1, now())",
                       3, p, NULL),
        CHORUS_OK);
}

static void stored_v1_event_is_upcast_on_read(void **unused) {
    (void)unused;
    char schema[64], agg[37], bad[37];
    chorus_t *ch = es_new("es_upcast", "50", schema);
    assert_int_equal(chorus_register_upcaster(ch, "OrderPlaced", 1, placed_v1_to_v2, NULL),
                     CHORUS_OK);
    chorus_uuid_v7(agg);
    chorus_uuid_v7(bad);
    chorus_tx_t *tx = begin(ch);
    insert_raw_v1(tx, agg, "{\"total\": 4999}");
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);

    order_t o;
    tx = begin(ch);
    assert_int_equal(load(tx, &ORDER, agg, &o, -1), 1);
    assert_int_equal(g.applies, 1);
    assert_int_equal(g.last_schema, 2);
    assert_int_equal(o.total, 4999);
    assert_string_equal(o.currency, "EUR");
    seen_t s = {0};
    assert_int_equal(chorus_es_replay(tx, "Order", remember, &s), CHORUS_OK);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.schema, 2);
    assert_string_equal(s.data, "{\"total_cents\":4999,\"currency\":\"EUR\"}");
    /* A v2 event appended after it is stored as v2 and read as is. */
    append(tx, &ORDER, &o, 1, agg, "OrderPaid", NULL, -1);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);

    /* The stored original never changed. */
    assert_value(value_in(schema, "SELECT event_data::text || ' v' || schema_version "
                                  "FROM %s.events WHERE aggregate_id = $1::uuid "
                                  "AND version = 1", agg),
                 "{\"total\": 4999} v1");
    tx = begin(ch);
    assert_int_equal(load(tx, &ORDER, agg, &o, -1), 2);
    assert_string_equal(o.status, "paid");
    assert_int_equal(o.total, 4999);
    chorus_tx_rollback(tx);

    /* An event the upcaster refuses cannot be loaded or replayed, and the
     * transaction that tried knows it failed. */
    tx = begin(ch);
    insert_raw_v1(tx, bad, "{\"amount\": 1}");
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    tx = begin(ch);
    int64_t v = -1;
    memset(&o, 0, sizeof(o));
    assert_int_equal(chorus_es_load(tx, &ORDER, bad, &o, &v, -1), CHORUS_ERR_SCHEMA);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_ERR_DB);
    tx = begin(ch);
    memset(&s, 0, sizeof(s));
    assert_int_equal(chorus_es_replay(tx, NULL, remember, &s), CHORUS_ERR_SCHEMA);
    assert_int_equal(s.n, 2); /* the two good events came first */
    chorus_tx_rollback(tx);
    finish(ch, schema);
}

/* ---- replay ---------------------------------------------------------------------------- */

typedef struct {
    int n, stop_after;
    char aggs[16][37];
    int64_t versions[16];
} trail_t;

static int record(chorus_tx_t *tx, const chorus_envelope_t *ev, void *opaque) {
    (void)tx;
    trail_t *t = opaque;
    if (t->n < 16) {
        snprintf(t->aggs[t->n], 37, "%s", chorus_envelope_aggregate_id(ev));
        t->versions[t->n] = chorus_envelope_version(ev);
    }
    t->n++;
    return t->stop_after && t->n >= t->stop_after;
}

static void replay_global_order_and_early_stop(void **unused) {
    (void)unused;
    char schema[64], a[37], b[37];
    chorus_t *ch = es_new("es_replay", "50", schema);
    chorus_uuid_v7(a);
    chorus_uuid_v7(b);
    order_t oa = {0}, ob = {0};
    /* Global order A1 B1 A2 B2 A3, over three transactions. */
    chorus_tx_t *tx = begin(ch);
    append(tx, &ORDER, &oa, 0, a, "OrderPlaced", "{\"total\":1}", -1);
    append(tx, &CART, &ob, 0, b, "OrderPlaced", "{\"total\":2}", -1);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    tx = begin(ch);
    append(tx, &ORDER, &oa, 1, a, "ItemAdded", "{\"price\":3}", -1);
    append(tx, &CART, &ob, 1, b, "ItemAdded", "{\"price\":4}", -1);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    tx = begin(ch);
    append(tx, &ORDER, &oa, 2, a, "OrderPaid", NULL, -1);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);

    const char *order[] = {a, b, a, b, a};
    const int64_t vers[] = {1, 1, 2, 2, 3};
    tx = begin(ch);
    trail_t t = {0};
    assert_int_equal(chorus_es_replay(tx, NULL, record, &t), CHORUS_OK);
    assert_int_equal(t.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(t.aggs[i], order[i]);
        assert_int_equal(t.versions[i], vers[i]);
    }
    /* Stopping early: the third call returns non-zero, no fourth. */
    trail_t early = {.stop_after = 3};
    assert_int_equal(chorus_es_replay(tx, NULL, record, &early), CHORUS_OK);
    assert_int_equal(early.n, 3);
    assert_string_equal(early.aggs[2], a);
    assert_int_equal(early.versions[2], 2);
    /* One aggregate type only. */
    trail_t carts = {0};
    assert_int_equal(chorus_es_replay(tx, "Cart", record, &carts), CHORUS_OK);
    assert_int_equal(carts.n, 2);
    assert_string_equal(carts.aggs[0], b);
    assert_string_equal(carts.aggs[1], b);
    assert_int_equal(carts.versions[1], 2);
    trail_t nobody = {0};
    assert_int_equal(chorus_es_replay(tx, "Nothing", record, &nobody), CHORUS_OK);
    assert_int_equal(nobody.n, 0);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    finish(ch, schema);
}

/* More events than one page (500 rows) for both load and replay. */
static void long_streams_are_paged(void **unused) {
    (void)unused;
    char schema[64], agg[37];
    chorus_t *ch = es_new("es_pages", "1000000", schema);
    chorus_uuid_v7(agg);
    order_t o = {0};
    enum { N = 1203 };
    chorus_tx_t *tx = begin(ch);
    append(tx, &ORDER, &o, 0, agg, "OrderPlaced", "{\"total\":0}", -1);
    for (int v = 1; v < N; v++)
        append(tx, &ORDER, &o, v, agg, "ItemAdded", "{\"price\":1}", -1);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);

    tx = begin(ch);
    assert_int_equal(load(tx, &ORDER, agg, &o, -1), N);
    assert_int_equal(g.applies, N);
    assert_false(g.out_of_order);
    assert_int_equal(o.items, N - 1);
    trail_t t = {0};
    assert_int_equal(chorus_es_replay(tx, "Order", record, &t), CHORUS_OK);
    assert_int_equal(t.n, N);
    trail_t early = {.stop_after = 501};
    assert_int_equal(chorus_es_replay(tx, NULL, record, &early), CHORUS_OK);
    assert_int_equal(early.n, 501);
    chorus_tx_rollback(tx);
    finish(ch, schema);
}

int main(void) {
    it_amqp_url();
    it_pg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(snapshot_plus_tail_equals_full_replay, drop_current_schema),
        cmocka_unit_test_teardown(state_as_of_time, drop_current_schema),
        cmocka_unit_test_teardown(concurrent_writers_conflict, drop_current_schema),
        cmocka_unit_test_teardown(stored_v1_event_is_upcast_on_read, drop_current_schema),
        cmocka_unit_test_teardown(replay_global_order_and_early_stop, drop_current_schema),
        cmocka_unit_test_teardown(long_streams_are_paged, drop_current_schema),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    it_pg_close();
    return rc;
}
