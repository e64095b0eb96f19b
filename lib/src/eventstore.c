/*
 * eventstore.c - event-sourced aggregates on PostgreSQL: load, append,
 * replay (chorus_pg.h, "Event store").
 *
 * An aggregate is the fold of its events.  The tables (created by the
 * migrations in store.c, in the participant's schema):
 *
 *   events    (position bigserial, event_id, aggregate_id, aggregate_type,
 *              event_type, event_data, metadata, version, schema_version,
 *              created_at;  UNIQUE (aggregate_id, version))   append-only
 *   snapshots (aggregate_id, version, aggregate_type, state, created_at)
 *
 * Load:   snapshot <= target ──restore──> state ──apply──> events (snap, target]
 * Append: INSERT events (expected + 1) ──apply──> [snapshot] ──> outbox
 * Replay: events by position, 500 rows a page ──upcast──> fn
 *
 * Optimistic concurrency is the unique constraint, nothing else: two writers
 * that loaded version v both INSERT version v + 1 and the second one gets a
 * unique violation, which chorus__pg_exec() reports as CHORUS_ERR_CONFLICT.
 * The transaction is then aborted (noted in the chorus_tx_t); the writer
 * loads again in a fresh transaction (inside a handler, chorus re-runs it).
 *
 * Invariants:
 *  - a stored row is never changed: upcasters run on the envelope rebuilt
 *    from the row, at every read;
 *  - created_at is the envelope's timestamp (to the millisecond), so "as of
 *    T" asks what the events themselves say about their time;
 *  - a snapshot at version n is exactly the fold of events 1..n, written in
 *    the transaction that appended event n (every "store.snapshot.every").
 *
 * "As of T": the target version is the highest version created at or
 * before T, and the state is the fold of events 1..target.  Were it "every
 * event created at or before T" instead, a clock step between two writers
 * could leave a hole in the fold; an event cannot exist before the one it
 * follows, so the prefix is the truthful answer.  A snapshot is used only
 * when its version is <= the target, so a snapshot written after T never
 * leaks later events into the past.
 *
 * Every statement is parameterized; uuid and jsonb travel as text with
 * casts.  Every failure is noted in the transaction (chorus__tx_note), so
 * the caller's commit logic sees it even when the SQL itself succeeded (a
 * refused upcast, a failing apply).  Replay pages by position within the
 * caller's transaction; a writer whose lower position commits after a
 * later one may be missed by a concurrent replay (as in any bigserial
 * store), which is why projections are rebuilt into an empty table while
 * their handlers keep them current afterwards.
 */
#include "chorus_int.h"
#include "saga_int.h"
#include "json_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ES_PAGE 500
/* 9999-12-31T23:59:59.999Z: no envelope is later (chorus_envelope_
 * set_timestamp_ms refuses it), so a later "as of" means now -- and is never
 * handed to to_timestamp(), which would fail beyond its range. */
#define ES_MAX_TS_MS INT64_C(253402300799999)
#define ES_PAGE_S "500"

/* The eight parts chorus__envelope_from_parts() takes, in order; a scan
 * query selects its page key first and these after it. */
#define ES_COLS                                                              \
    "event_id::text, event_type, aggregate_id::text, version, "            \
    "schema_version, round(extract(epoch FROM created_at) * 1000)::bigint, " \
    "event_data::text, metadata::text"

static const char SQL_INSERT_EVENT[] =
    "INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, "
    "event_data, metadata, version, schema_version, created_at) "
    "VALUES ($1::uuid, $2::uuid, $3, $4, $5::jsonb, $6::jsonb, $7::bigint, "
    "$8::int, to_timestamp($9::double precision / 1000))";

static const char SQL_INSERT_SNAPSHOT[] =
    "INSERT INTO snapshots (aggregate_id, aggregate_type, version, state) "
    "VALUES ($1::uuid, $2, $3::bigint, $4::jsonb) ON CONFLICT DO NOTHING";

static const char SQL_AS_OF_VERSION[] =
    "SELECT coalesce(max(version), 0) FROM events "
    "WHERE aggregate_id = $1::uuid AND aggregate_type = $2 "
    "AND created_at <= to_timestamp($3::double precision / 1000)";

static const char SQL_SNAPSHOT[] =
    "SELECT version, state::text FROM snapshots "
    "WHERE aggregate_id = $1::uuid AND aggregate_type = $2 "
    "AND version <= $3::bigint ORDER BY version DESC LIMIT 1";

/* $1: last version seen. */
static const char SQL_LOAD_PAGE[] =
    "SELECT version, " ES_COLS " FROM events "
    "WHERE aggregate_id = $2::uuid AND aggregate_type = $3 "
    "AND version > $1::bigint AND version <= $4::bigint "
    "ORDER BY version LIMIT " ES_PAGE_S;

/* $1: last position seen; $2: aggregate type or NULL for all. */
static const char SQL_REPLAY_PAGE[] =
    "SELECT position, " ES_COLS " FROM events "
    "WHERE position > $1::bigint AND ($2::text IS NULL OR aggregate_type = $2::text) "
    "ORDER BY position LIMIT " ES_PAGE_S;

/* ---------------------------------------------------------------- helpers */

static chorus_err_t es_note(chorus_tx_t *tx, chorus_err_t rc) {
    chorus__sql_err_t err = {.rc = rc};
    snprintf(err.message, sizeof(err.message), "%s", chorus_strerror(rc));
    chorus__tx_note(tx, &err);
    return rc;
}

/* One statement on the transaction; a failure is noted. */
static chorus_err_t es_exec(chorus_tx_t *tx, const char *sql, int n,
                            const char *const *params, PGresult **resp) {
    return chorus_tx_exec(tx, sql, n, params, resp); /* the handler's SQL: in its savepoint */
}

static void fmt_i64(char out[24], int64_t v) {
    snprintf(out, 24, "%" PRId64, v);
}

static int64_t get_i64(const PGresult *res, int row, int col) {
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* The envelope of scan row @p i (columns 1..8), upcast; NULL with *rcp set
 * (and the transaction noted) when the row cannot be read. */
static chorus_envelope_t *row_envelope(chorus_tx_t *tx, const PGresult *res,
                                       int i, chorus_err_t *rcp) {
    chorus_error_t *err = NULL;
    const char *id = PQgetvalue(res, i, 1), *agg = PQgetvalue(res, i, 3);
    chorus_envelope_t *env = chorus__envelope_from_parts(
        id, PQgetvalue(res, i, 2), agg, get_i64(res, i, 4),
        (int)get_i64(res, i, 5), get_i64(res, i, 6), PQgetvalue(res, i, 7),
        PQgetvalue(res, i, 8), &err);
    chorus_err_t rc = env ? chorus__upcast(tx->ch, env, &err)
                          : (err ? chorus_error_code(err) : CHORUS_ERR_NOMEM);
    if (!rc)
        return env;
    chorus__log(tx->ch, CHORUS_LOG_ERR,
                "event store: event %s of aggregate %s cannot be read: %s", id,
                agg, err ? chorus_error_string(err) : chorus_strerror(rc));
    chorus_error_destroy(err);
    chorus_envelope_destroy(env);
    *rcp = es_note(tx, rc);
    return NULL;
}

typedef chorus_err_t(es_visit_fn)(chorus_tx_t *tx, const chorus_envelope_t *env,
                                  void *arg, bool *stop);

#define ES_SCAN_MAX_PARAMS 4

/*
 * Runs the page query @p sql again and again, $1 being the key (column 0)
 * of the last row seen, starting after @p after, and hands each row's
 * envelope to @p visit, until a short page, an error or *stop.  @p fixed
 * are $2.. ($2..$n+1).
 */
static chorus_err_t es_scan(chorus_tx_t *tx, const char *sql, const char *const *fixed,
                            int n, int64_t after, es_visit_fn *visit, void *arg) {
    char key[24];
    const char *params[ES_SCAN_MAX_PARAMS] = {key};
    bool stop = false;
    int rows = ES_PAGE;
    chorus_err_t rc = CHORUS_OK;
    for (int i = 0; i < n && i + 1 < ES_SCAN_MAX_PARAMS; i++)
        params[i + 1] = fixed[i];
    while (!rc && !stop && rows == ES_PAGE) {
        PGresult *res = NULL;
        fmt_i64(key, after);
        if ((rc = es_exec(tx, sql, n + 1, params, &res)))
            break;
        rows = PQntuples(res);
        for (int i = 0; i < rows && !rc && !stop; i++) {
            after = get_i64(res, i, 0);
            chorus_envelope_t *env = row_envelope(tx, res, i, &rc);
            if (env)
                rc = visit(tx, env, arg, &stop);
            chorus_envelope_destroy(env);
        }
        PQclear(res);
    }
    return rc;
}

/* ------------------------------------------------------------------- load */

typedef struct {
    const chorus_aggregate_type_t *type;
    void *state;
    int64_t version; /* last applied */
} load_ctx_t;

static chorus_err_t load_visit(chorus_tx_t *tx, const chorus_envelope_t *env,
                               void *arg, bool *stop) {
    load_ctx_t *c = arg;
    chorus_err_t rc;
    (void)stop;
    if (env->version != c->version + 1) {
        chorus__log_env(tx->ch, CHORUS_LOG_ERR, env,
                        "event store: aggregate %s jumps from version %" PRId64
                        " to %" PRId64, env->aggregate_id, c->version, env->version);
        return es_note(tx, CHORUS_ERR_DB);
    }
    if ((rc = c->type->apply(c->state, env, c->type->opaque))) {
        chorus__log_env(tx->ch, CHORUS_LOG_ERR, env,
                        "event store: %s apply failed on version %" PRId64 ": %s",
                        c->type->name, env->version, chorus_strerror(rc));
        return es_note(tx, rc);
    }
    c->version = env->version;
    return CHORUS_OK;
}

/* The highest version created at or before @p as_of_ms (0: none). */
static chorus_err_t as_of_version(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                                  const char *id, int64_t as_of_ms, int64_t *outp) {
    char ms[24];
    const char *p[3] = {id, type->name, ms};
    PGresult *res = NULL;
    fmt_i64(ms, as_of_ms);
    chorus_err_t rc = es_exec(tx, SQL_AS_OF_VERSION, 3, p, &res);
    if (!rc) {
        *outp = PQntuples(res) == 1 ? get_i64(res, 0, 0) : 0;
        PQclear(res);
    }
    return rc;
}

/* Restores the latest snapshot at or below @p upto; *versionp is its
 * version, 0 when there is none (or the type cannot restore). */
static chorus_err_t load_snapshot(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                                  const char *id, int64_t upto, void *state,
                                  int64_t *versionp) {
    char up[24];
    const char *p[3] = {id, type->name, up};
    PGresult *res = NULL;
    *versionp = 0;
    if (!type->restore)
        return CHORUS_OK;
    fmt_i64(up, upto);
    chorus_err_t rc = es_exec(tx, SQL_SNAPSHOT, 3, p, &res);
    if (rc || PQntuples(res) != 1) {
        PQclear(res);
        return rc;
    }
    *versionp = get_i64(res, 0, 0);
    if ((rc = type->restore(state, PQgetvalue(res, 0, 1), type->opaque))) {
        chorus__log(tx->ch, CHORUS_LOG_ERR,
                    "event store: %s %s: snapshot at version %" PRId64
                    " cannot be restored: %s", type->name, id, *versionp,
                    chorus_strerror(rc));
        es_note(tx, rc);
    }
    PQclear(res);
    return rc;
}

chorus_err_t chorus_es_load(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                            const char *aggregate_id, void *state,
                            int64_t *versionp, int64_t as_of_ms) {
    int64_t upto = INT64_MAX;
    load_ctx_t c = {type, state, 0};
    char up[24];
    const char *p[3] = {aggregate_id, type ? type->name : NULL, up};
    chorus_err_t rc = CHORUS_OK;
    if (versionp)
        *versionp = 0;
    if (!tx || !type || !type->name || !type->apply || !chorus_uuid_valid(aggregate_id))
        return CHORUS_ERR_INVALID_ARG;
    if (as_of_ms >= 0 && as_of_ms <= ES_MAX_TS_MS &&
        (rc = as_of_version(tx, type, aggregate_id, as_of_ms, &upto)))
        return rc;
    if (upto == 0)
        return CHORUS_OK;
    fmt_i64(up, upto);
    rc = load_snapshot(tx, type, aggregate_id, upto, state, &c.version);
    if (!rc)
        rc = es_scan(tx, SQL_LOAD_PAGE, p, 3, c.version, load_visit, &c);
    if (!rc && versionp)
        *versionp = c.version;
    return rc;
}

/* ----------------------------------------------------------------- append */

/* The flow's ids go into the stored row as into the published message
 * (the same rules as chorus__emit(), which then finds them set):
 * inside a handler, caused by its delivery; otherwise a flow of its own. */
static chorus_err_t adopt_cause(chorus_tx_t *tx, chorus_envelope_t *env) {
    chorus_err_t rc = chorus__tx_adopt(tx, env);
    if (!rc)
        rc = chorus__saga_stamp(tx->ch, env);
    /* the declared contract before anything is stored or applied */
    if (!rc && (rc = chorus__saga_check_emit(tx->ch, tx->d, env, "not appended")))
        tx->invalid_emit = rc == CHORUS_ERR_SCHEMA;
    return rc;
}

static chorus_err_t insert_event(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                                 const chorus_envelope_t *env) {
    char ver[24], sv[24], ts[24];
    char *meta = chorus__envelope_metadata_json(env);
    const char *data = chorus_envelope_data_json(env);
    const char *p[9] = {env->event_id, env->aggregate_id, type->name, env->event_type,
                        data, meta, ver, sv, ts};
    if (!meta || !data) {
        free(meta);
        return es_note(tx, CHORUS_ERR_NOMEM);
    }
    fmt_i64(ver, env->version);
    fmt_i64(sv, env->schema_version);
    fmt_i64(ts, env->ts_ms);
    chorus_err_t rc = es_exec(tx, SQL_INSERT_EVENT, 9, p, NULL);
    free(meta);
    if (rc == CHORUS_ERR_CONFLICT)
        chorus__log_env(tx->ch, CHORUS_LOG_INFO, env,
                        "event store: version %" PRId64 " of %s %s was taken "
                        "by another writer", env->version, type->name, env->aggregate_id);
    return rc;
}

/* Writes a snapshot when the new version is a multiple of
 * "store.snapshot.every" and the type can both take and restore one. */
static chorus_err_t maybe_snapshot(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                                   const void *state, const chorus_envelope_t *env) {
    long every = chorus__conf_int(tx->ch->conf, "store.snapshot.every");
    if (every <= 0 || env->version % every != 0 || !type->snapshot || !type->restore)
        return CHORUS_OK;
    char *json = type->snapshot(state, type->opaque);
    cJSON *check = NULL;
    if (json)
        chorus__json_parse(json, strlen(json), &(chorus__json_limits_t){.max_depth = 64}, &check,
                           NULL, NULL);
    cJSON_Delete(check);
    if (!check) { /* a snapshot is an optimisation: skip it, keep the event */
        if (json)
            chorus__log(tx->ch, CHORUS_LOG_WARNING,
                        "event store: %s snapshot is not I-JSON; not written", type->name);
        free(json);
        return CHORUS_OK;
    }
    char ver[24];
    const char *p[4] = {env->aggregate_id, type->name, ver, json};
    fmt_i64(ver, env->version);
    chorus_err_t rc = es_exec(tx, SQL_INSERT_SNAPSHOT, 4, p, NULL);
    free(json);
    return rc;
}

chorus_err_t chorus_es_append(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                              void *state, int64_t expected_version,
                              chorus_envelope_t *env) {
    chorus_err_t rc;
    if (!tx || !env || !type || !type->name || !type->apply || expected_version < 0 ||
        expected_version >= CHORUS__MAX_SAFE_INT) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_INVALID_ARG;
    }
    env->version = expected_version + 1;
    if ((rc = adopt_cause(tx, env)))
        rc = es_note(tx, rc);
    if (!rc)
        rc = insert_event(tx, type, env);
    if (!rc && (rc = type->apply(state, env, type->opaque))) {
        chorus__log_env(tx->ch, CHORUS_LOG_ERR, env,
                        "event store: %s apply failed on appended version %" PRId64
                        ": %s", type->name, env->version, chorus_strerror(rc));
        es_note(tx, rc);
    }
    if (!rc)
        rc = maybe_snapshot(tx, type, state, env);
    if (rc) {
        chorus_envelope_destroy(env);
        return rc;
    }
    return chorus__emit(tx, env); /* takes env; notes a failure */
}

/* ----------------------------------------------------------------- replay */

typedef struct {
    chorus_replay_fn *fn;
    void *opaque;
} replay_ctx_t;

static chorus_err_t replay_visit(chorus_tx_t *tx, const chorus_envelope_t *env,
                                 void *arg, bool *stop) {
    replay_ctx_t *c = arg;
    *stop = c->fn(tx, env, c->opaque) != 0;
    return CHORUS_OK;
}

chorus_err_t chorus_es_replay(chorus_tx_t *tx, const char *aggregate_type,
                              chorus_replay_fn *fn, void *opaque) {
    replay_ctx_t c = {fn, opaque};
    const char *p[1] = {aggregate_type};
    if (!tx || !fn)
        return CHORUS_ERR_INVALID_ARG;
    return es_scan(tx, SQL_REPLAY_PAGE, p, 1, 0, replay_visit, &c);
}
