/*
 * store.c - the participant's PostgreSQL connections and its schema.
 *
 * Two connections per participant: one for transactions, one that only
 * LISTENs for outbox NOTIFYs (a connection inside a transaction does not
 * receive notifications until it ends).  Both set search_path to the
 * service's schema, so the same table names serve every service while
 * each keeps its own data.
 *
 * Migrations are numbered and run once each, in order, under an advisory
 * lock, so several instances starting together apply them exactly once;
 * chorus_schema_version records what is applied.  A migration is never
 * edited once released: a change is a new entry at the end.
 *
 * When PostgreSQL goes away the store is marked down, the consumer is
 * paused (nothing is handled, nothing acked), and chorus_poll() reconnects
 * with exponential backoff; see store_poll() in chorus.c.
 */
#include "chorus_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const chorus__migrations[] = {
    /* 1: inbox, outbox, event store, snapshots */
    "CREATE TABLE inbox ("
    "  event_id uuid NOT NULL,"
    "  consumer text NOT NULL,"
    "  processed_at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (event_id, consumer));"
    "CREATE INDEX inbox_processed_at ON inbox (processed_at);"
    "CREATE TABLE outbox ("
    "  seq bigserial PRIMARY KEY,"
    "  event_id uuid NOT NULL UNIQUE,"
    "  aggregate_id uuid NOT NULL,"
    "  routing_key text NOT NULL,"
    "  envelope text NOT NULL,"
    "  headers jsonb NOT NULL DEFAULT '{}',"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  published_at timestamptz);"
    "CREATE INDEX outbox_unpublished ON outbox (aggregate_id, seq) WHERE published_at IS NULL;"
    "CREATE TABLE events ("
    "  position bigserial NOT NULL UNIQUE,"
    "  event_id uuid PRIMARY KEY,"
    "  aggregate_id uuid NOT NULL,"
    "  aggregate_type text NOT NULL,"
    "  event_type text NOT NULL,"
    "  event_data jsonb NOT NULL,"
    "  metadata jsonb NOT NULL,"
    "  version bigint NOT NULL CHECK (version >= 1),"
    "  schema_version int NOT NULL DEFAULT 1,"
    "  created_at timestamptz NOT NULL,"
    "  UNIQUE (aggregate_id, version));"
    "CREATE INDEX events_created_at ON events (aggregate_id, created_at);"
    "CREATE TABLE snapshots ("
    "  aggregate_id uuid NOT NULL,"
    "  aggregate_type text NOT NULL,"
    "  version bigint NOT NULL,"
    "  state jsonb NOT NULL,"
    "  created_at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (aggregate_id, version));"
    /* Wakes the relays of this schema's service when rows are written. */
    "CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN PERFORM pg_notify(left('chorus_outbox_' || TG_TABLE_SCHEMA, 63), '');"
    " RETURN NULL; END $$;"
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox"
    "  FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();",
    /* 2: idempotency keys of commands (chorus_tx_idempotent) */
    "CREATE TABLE idempotency ("
    "  key text PRIMARY KEY,"
    "  result text NOT NULL,"
    "  created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX idempotency_created_at ON idempotency (created_at);",
    /* 3: saga guards (saga_run.c) and durable timers (timer.c) */
    "CREATE TABLE saga_guards ("
    "  correlation_id uuid NOT NULL,"
    "  step text NOT NULL,"
    "  state text NOT NULL,"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (correlation_id, step));"
    "CREATE TABLE timers ("
    "  key text PRIMARY KEY,"
    "  fire_at timestamptz NOT NULL,"
    "  envelope text NOT NULL,"
    "  state text NOT NULL DEFAULT 'pending'"
    "    CHECK (state IN ('pending', 'fired', 'cancelled', 'failed')),"
    "  created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX timers_due ON timers (fire_at) WHERE state = 'pending';",
    /* 4: rows a running participant publishes itself right after COMMIT
     * ("own") wake nobody, and other relays leave them alone for a while;
     * rows a command-line tool writes still wake the relays at once. */
    "ALTER TABLE outbox ADD COLUMN own boolean NOT NULL DEFAULT false;"
    "DROP TRIGGER outbox_notify ON outbox;"
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH ROW"
    "  WHEN (NOT NEW.own) EXECUTE FUNCTION outbox_notify();",
};
const int chorus__nmigrations = (int)(sizeof(chorus__migrations) / sizeof(chorus__migrations[0]));

static bool is_conflict(const char *state) {
    return state && (strcmp(state, "23505") == 0 || /* unique_violation */
                     strcmp(state, "40001") == 0 || /* serialization_failure */
                     strcmp(state, "40P01") == 0);  /* deadlock_detected */
}

chorus_err_t chorus__pg_exec(chorus_t *ch, PGconn *pg, const char *sql, int n,
                             const char *const *params, PGresult **resp, bool *lost) {
    if (resp)
        *resp = NULL;
    if (lost)
        *lost = false;
    if (!pg) {
        if (lost)
            *lost = true;
        return CHORUS_ERR_CONN_CLOSED;
    }
    PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (resp)
            *resp = r;
        else
            PQclear(r);
        return CHORUS_OK;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    chorus_err_t rc = is_conflict(state) ? CHORUS_ERR_CONFLICT : CHORUS_ERR_DB;
    if (PQstatus(pg) == CONNECTION_BAD) {
        rc = CHORUS_ERR_CONN_CLOSED;
        if (lost)
            *lost = true;
    }
    if (rc != CHORUS_ERR_CONFLICT) {
        const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(pg);
        chorus__log(ch, rc == CHORUS_ERR_CONN_CLOSED ? CHORUS_LOG_WARNING : CHORUS_LOG_ERR,
                    "SQL failed (%s): %.*s", state ? state : "no SQLSTATE",
                    (int)strcspn(msg, "\n"), msg);
        chorus__fail(ch, state, "PostgreSQL: %.*s", (int)strcspn(msg, "\n"), msg);
    }
    PQclear(r);
    return rc;
}

chorus_err_t chorus__store_exec(chorus_t *ch, const char *sql, int n, const char *const *params,
                                PGresult **resp, bool *lost) {
    chorus__sql_err_t err;
    chorus_err_t rc = chorus__sql_exec(&ch->store.sql, sql, n, params, resp, &err);
    if (lost)
        *lost = rc && err.lost;
    if (rc && rc != CHORUS_ERR_CONFLICT) {
        chorus__log(ch, err.lost ? CHORUS_LOG_WARNING : CHORUS_LOG_ERR, "SQL failed (%s): %s",
                    *err.sqlstate ? err.sqlstate : "no SQLSTATE", err.message);
        chorus__fail(ch, err.sqlstate, "PostgreSQL: %s", err.message);
    }
    return rc;
}

/* The first line of a libpq message ("out of memory" when there is none). */
static void first_line(const char *msg, char *out, size_t size) {
    if (!msg)
        msg = "out of memory";
    snprintf(out, size, "%.*s", (int)strcspn(msg, "\n"), msg);
}

static PGconn *open_one(chorus_t *ch) {
    PGconn *kept = ch->link->pg_take ? ch->link->pg_take(ch) : NULL;
    if (kept)
        return kept;
    const char *ci = chorus__conf_str(ch->conf, "store.conninfo");
    /* A connect timeout and keepalives so a dead server is noticed. */
    const char *keys[] = {"dbname", "connect_timeout", "keepalives", "keepalives_idle",
                          "application_name", "options", NULL};
    const char *vals[] = {*ci ? ci : NULL, "5", "1", "10", ch->service,
                          "-c client_min_messages=warning", NULL};
    if (!*ci) {
        keys[0] = "connect_timeout";
        vals[0] = "5";
    }
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        /* Down, or starting up / shutting down / in recovery: an outage to
         * wait out.  A server that answers but refuses us (password, role,
         * database) is an answer, and chorus_start fails at once. */
        char why[256];
        first_line(pg ? PQerrorMessage(pg) : NULL, why, sizeof(why));
        /* NO_RESPONSE also covers the client's own TLS refusals (no server
         * answer came), which are not outages */
        PGPing ping = PQpingParams(keys, vals, 1);
        ch->store.unreachable = ping == PQPING_REJECT ||
                                (ping == PQPING_NO_RESPONSE && !strstr(why, "SSL") &&
                                 !strstr(why, "certificate"));
        chorus__log(ch, CHORUS_LOG_WARNING, "PostgreSQL: %s", why);
        chorus__fail(ch, NULL, "PostgreSQL: %s", why);
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/* Plain PQexec: migrations hold several statements, which the extended
 * protocol (PQexecParams) refuses.  Only for chorus' own fixed text. */
static bool exec_simple(chorus_t *ch, PGconn *pg, const char *sql) {
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        char why[256];
        first_line(PQresultErrorMessage(r), why, sizeof(why));
        chorus__log(ch, CHORUS_LOG_ERR, "SQL failed: %s", why);
        chorus__fail(ch, PQresultErrorField(r, PG_DIAG_SQLSTATE), "PostgreSQL: %s", why);
    }
    PQclear(r);
    return ok;
}

static bool use_schema(chorus_t *ch, PGconn *pg) {
    const char *p[] = {ch->store.schema};
    return chorus__pg_exec(ch, pg, "SELECT set_config('search_path', quote_ident($1), false)",
                           1, p, NULL, NULL) == CHORUS_OK;
}

static bool migrate(chorus_t *ch, PGconn *pg) {
    const char *p[] = {ch->store.schema};
    PGresult *r = NULL;
    bool ok = exec_simple(ch, pg, "BEGIN") &&
              chorus__pg_exec(ch, pg, "SELECT pg_advisory_xact_lock(hashtext('chorus:' || $1))",
                              1, p, NULL, NULL) == CHORUS_OK &&
              /* Only when missing: a role that owns a schema an administrator
               * made for it may lack CREATE on the database itself. */
              chorus__pg_exec(ch, pg, "SELECT CASE WHEN to_regnamespace(quote_ident($1)) IS NULL"
                                      " THEN format('CREATE SCHEMA %I', $1::text)"
                                      " ELSE 'SELECT 1' END",
                              1, p, &r, NULL) == CHORUS_OK &&
              exec_simple(ch, pg, PQgetvalue(r, 0, 0)) &&
              exec_simple(ch, pg, "CREATE TABLE IF NOT EXISTS chorus_schema_version ("
                                  " version int PRIMARY KEY,"
                                  " applied_at timestamptz NOT NULL DEFAULT now())");
    PQclear(r);
    r = NULL;
    int have = 0;
    if (ok && (ok = chorus__pg_exec(ch, pg, "SELECT coalesce(max(version), 0) "
                                            "FROM chorus_schema_version", 0, NULL, &r,
                                    NULL) == CHORUS_OK))
        have = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    for (int v = have + 1; ok && v <= chorus__nmigrations; v++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", v);
        const char *vp[] = {num};
        ok = exec_simple(ch, pg, chorus__migrations[v - 1]) &&
             chorus__pg_exec(ch, pg, "INSERT INTO chorus_schema_version (version) VALUES ($1)",
                             1, vp, NULL, NULL) == CHORUS_OK;
        if (ok)
            chorus__log(ch, CHORUS_LOG_INFO, "schema %s: migration %d applied",
                        ch->store.schema, v);
    }
    if (ok)
        return exec_simple(ch, pg, "COMMIT");
    exec_simple(ch, pg, "ROLLBACK");
    return false;
}

static bool listen_outbox(chorus_t *ch, PGconn *pg) {
    PGresult *r = NULL;
    const char *p[] = {ch->store.channel};
    bool ok = chorus__pg_exec(ch, pg, "SELECT format('LISTEN %I', $1::text)", 1, p, &r,
                              NULL) == CHORUS_OK &&
              exec_simple(ch, pg, PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok && PQsetnonblocking(pg, 1) == 0;
}

chorus_err_t chorus__store_connect(chorus_t *ch) {
    chorus__store_t *s = &ch->store;
    chorus__store_close(ch);
    s->pg = open_one(ch);
    s->listen = s->pg ? open_one(ch) : NULL;
    bool ok = s->pg && s->listen && use_schema(ch, s->pg) && migrate(ch, s->pg) &&
              listen_outbox(ch, s->listen);
    if (!ok) {
        chorus__store_lost(ch, "could not connect and prepare the schema");
        return CHORUS_ERR_DB;
    }
    chorus__sql_reset(&s->sql, s->pg);
    s->up = true;
    chorus__backoff_reset(&s->retry);
    s->relay_wanted = true; /* rows may have been left behind */
    chorus__log(ch, CHORUS_LOG_INFO, "PostgreSQL ready (schema %s)", s->schema);
    return CHORUS_OK;
}

void chorus__store_close(chorus_t *ch) {
    chorus__store_t *s = &ch->store;
    chorus__sql_reset(&s->sql, NULL);
    if (ch->link->pg_give) {
        ch->link->pg_give(ch, s->pg);
        ch->link->pg_give(ch, s->listen);
    } else {
        PQfinish(s->pg);
        PQfinish(s->listen);
    }
    s->pg = s->listen = NULL;
    /* confirmed rows not marked yet are published again by a relay */
    s->marks.n = 0;
    s->up = false;
}

void chorus__store_lost(chorus_t *ch, const char *why) {
    chorus__store_t *s = &ch->store;
    if (s->up)
        chorus__log(ch, CHORUS_LOG_WARNING, "PostgreSQL lost: %s; pausing consumption", why);
    chorus__store_close(ch);
    chorus__backoff_failed(&s->retry, chorus__mono_ms());
}

const char *chorus__sim_now(char *buf, size_t n) {
    if (!chorus__clock_simulated())
        return NULL;
    snprintf(buf, n, "%lld", (long long)chorus_now_ms());
    return buf;
}
