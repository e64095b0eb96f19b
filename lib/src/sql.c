/*
 * sql.c - statements on one PostgreSQL connection (see sql_int.h).
 *
 * Every text is counted in a small cache; from its second use it runs as
 * a prepared statement ("chorus_s<n>"), prepared in the same pipeline as
 * its first prepared run, so preparing costs no round trip.  Parse and
 * plan then happen once per connection instead of once per statement.
 *
 * A group (the deferred statements and the one asked) goes out as one
 * pipeline with one Sync.  After an error the server skips the rest of
 * the group (PGRES_PIPELINE_ABORTED); inside a transaction block the
 * transaction (or the savepoint the failure happened in) is then aborted,
 * exactly as if the statements had been sent one by one.
 */
#include "sql_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chorus__sql_init(chorus__sql_t *s, PGconn *pg) {
    memset(s, 0, sizeof(*s));
    s->pg = pg;
}

static void cache_clear(chorus__sql_t *s) {
    if (s->cache)
        for (size_t i = 0; i < CHORUS__SQL_CACHE; i++)
            free(s->cache[i].text);
    free(s->cache);
    s->cache = NULL;
    s->ncache = 0;
}

void chorus__sql_reset(chorus__sql_t *s, PGconn *pg) {
    cache_clear(s);
    chorus__sql_drop(s);
    s->pg = pg;
}

void chorus__sql_free(chorus__sql_t *s) {
    cache_clear(s);
    free(s->q);
    free(s->offs);
    free(s->arena);
    memset(s, 0, sizeof(*s));
}

void chorus__sql_drop(chorus__sql_t *s) {
    s->nq = 0;
    s->noffs = 0;
    s->arena_len = 0;
}

static uint64_t fnv1a(const char *t) {
    uint64_t h = 1469598103934665603ULL;
    for (; *t; t++)
        h = (h ^ (unsigned char)*t) * 1099511628211ULL;
    return h;
}

/* The cache entry of @p sql, counting this use; NULL when the cache is
 * full or out of memory (the statement then simply runs unprepared). */
static chorus__sql_stmt_t *lookup(chorus__sql_t *s, const char *sql) {
    if (!s->cache && !(s->cache = calloc(CHORUS__SQL_CACHE, sizeof(*s->cache))))
        return NULL;
    uint64_t h = fnv1a(sql);
    for (size_t i = 0; i < CHORUS__SQL_CACHE; i++) {
        chorus__sql_stmt_t *e = &s->cache[(h + i) % CHORUS__SQL_CACHE];
        if (!e->text) {
            if (s->ncache >= CHORUS__SQL_CACHE / 2 || !(e->text = strdup(sql)))
                return NULL;
            e->hash = h;
            s->ncache++;
        } else if (e->hash != h || strcmp(e->text, sql) != 0) {
            continue;
        }
        e->uses++;
        return e;
    }
    return NULL;
}

/* Copies into the arena, by offset: the arena may move as the queue grows. */
static bool arena_put(chorus__sql_t *s, const char *v, size_t *off) {
    size_t n = strlen(v) + 1;
    if (s->arena_len + n > s->arena_cap) {
        size_t cap = s->arena_cap ? s->arena_cap : 4096;
        while (cap < s->arena_len + n)
            cap *= 2;
        char *a = realloc(s->arena, cap);
        if (!a)
            return false;
        s->arena = a;
        s->arena_cap = cap;
    }
    memcpy(s->arena + s->arena_len, v, n);
    *off = s->arena_len;
    s->arena_len += n;
    return true;
}

chorus_err_t chorus__sql_defer(chorus__sql_t *s, const char *sql, int n,
                               const char *const *params) {
    if (n < 0 || n > 64)
        return CHORUS_ERR_INVALID_ARG;
    if (s->nq == s->capq) {
        size_t cap = s->capq ? s->capq * 2 : 16;
        chorus__sql_queued_t *q = realloc(s->q, cap * sizeof(*q));
        if (!q)
            return CHORUS_ERR_NOMEM;
        s->q = q;
        s->capq = cap;
    }
    if (s->noffs + (size_t)n > s->capoffs) {
        size_t cap = s->capoffs ? s->capoffs * 2 : 64;
        while (cap < s->noffs + (size_t)n)
            cap *= 2;
        size_t *o = realloc(s->offs, cap * sizeof(*o));
        if (!o)
            return CHORUS_ERR_NOMEM;
        s->offs = o;
        s->capoffs = cap;
    }
    chorus__sql_queued_t *q = &s->q[s->nq];
    if (!arena_put(s, sql, &q->text))
        return CHORUS_ERR_NOMEM;
    q->n = n;
    q->first = s->noffs;
    for (int i = 0; i < n; i++) {
        size_t off = SIZE_MAX;
        if (params[i] && !arena_put(s, params[i], &off))
            return CHORUS_ERR_NOMEM;
        s->offs[s->noffs + (size_t)i] = off;
    }
    s->noffs += (size_t)n;
    s->nq++;
    return CHORUS_OK;
}

static void set_err(chorus__sql_err_t *err, const PGresult *r, PGconn *pg, bool deferred) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r && *PQresultErrorMessage(r) ? PQresultErrorMessage(r) : PQerrorMessage(pg);
    if (err->rc)
        return; /* the first failure is the one that counts */
    bool conflict = state && (strcmp(state, "23505") == 0 || /* unique_violation */
                              strcmp(state, "40001") == 0 || /* serialization_failure */
                              strcmp(state, "40P01") == 0 || /* deadlock_detected */
                              strcmp(state, "55P03") == 0);  /* lock_not_available:
                                                                store.lock.wait.ms ran out */
    err->rc = conflict ? CHORUS_ERR_CONFLICT : CHORUS_ERR_DB;
    if (PQstatus(pg) == CONNECTION_BAD) {
        err->rc = CHORUS_ERR_CONN_CLOSED;
        err->lost = true;
    }
    err->deferred = deferred;
    snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", state ? state : "");
    snprintf(err->message, sizeof(err->message), "%.*s", (int)strcspn(msg, "\n"), msg);
}

static bool ok_status(ExecStatusType st) {
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* A statement whose prepared plan the server refuses now (the table it
 * reads changed shape: "cached plan must not change result type") is
 * prepared again under a new name on its next use. */
static void forget_plan(chorus__sql_stmt_t *e, const chorus__sql_err_t *err) {
    if (e && e->prepared && strcmp(err->sqlstate, "0A000") == 0) {
        e->prepared = false;
        e->uses = 0;
    }
}

/* One statement alone, no pipeline: the common case of a handler's query. */
static chorus_err_t send_one(chorus__sql_t *s, chorus__sql_stmt_t *e, const char *sql, int n,
                             const char *const *params, PGresult **resp, chorus__sql_err_t *err) {
    char name[32];
    PGresult *r;
    if (e && e->prepared) {
        snprintf(name, sizeof(name), "chorus_s%u", e->name);
        r = PQexecPrepared(s->pg, name, n, params, NULL, NULL, 0);
    } else {
        r = PQexecParams(s->pg, sql, n, NULL, params, NULL, NULL, 0);
    }
    s->round_trips++;
    s->statements++;
    if (r && ok_status(PQresultStatus(r))) {
        if (resp)
            *resp = r;
        else
            PQclear(r);
        return CHORUS_OK;
    }
    set_err(err, r, s->pg, false);
    forget_plan(e, err);
    PQclear(r);
    return err->rc;
}

/* Sends one statement into the open pipeline, preparing it first when it
 * is due to be; false when libpq refused to queue it. */
static bool pipe_send(chorus__sql_t *s, chorus__sql_stmt_t *e, const char *sql, int n,
                      const char *const *params, bool *preparing) {
    char name[32];
    *preparing = false;
    if (e && !e->prepared && e->uses >= 2) {
        e->name = ++s->next_name;
        snprintf(name, sizeof(name), "chorus_s%u", e->name);
        if (!PQsendPrepare(s->pg, name, sql, n, NULL))
            return false;
        *preparing = true;
    }
    if (e && (e->prepared || *preparing)) {
        snprintf(name, sizeof(name), "chorus_s%u", e->name);
        return PQsendQueryPrepared(s->pg, name, n, params, NULL, NULL, 0) == 1;
    }
    return PQsendQueryParams(s->pg, sql, n, NULL, params, NULL, NULL, 0) == 1;
}

/* Reads one queued item's result; NULL result with false: the stream broke. */
static bool pipe_read(chorus__sql_t *s, PGresult **out) {
    PGresult *r = PQgetResult(s->pg);
    if (!r)
        return false;
    PGresult *end = PQgetResult(s->pg); /* NULL ends each item's results */
    if (end) {
        PQclear(end);
        PQclear(r);
        return false;
    }
    *out = r;
    return true;
}

typedef struct {
    chorus__sql_stmt_t *e;
    bool preparing;
} sent_t;

static chorus_err_t send_group(chorus__sql_t *s, const char *sql, int n,
                               const char *const *params, PGresult **resp,
                               chorus__sql_err_t *err) {
    size_t total = s->nq + (sql ? 1 : 0);
    chorus__sql_stmt_t *last = sql ? lookup(s, sql) : NULL;
    if (total == 0)
        return CHORUS_OK;
    if (s->nq == 0 && (!last || last->prepared || last->uses < 2))
        return send_one(s, last, sql, n, params, resp, err);

    sent_t *sent = calloc(total, sizeof(*sent));
    if (!sent)
        return err->rc = CHORUS_ERR_NOMEM;
    bool broken = PQenterPipelineMode(s->pg) != 1;
    size_t k = 0;
    for (; !broken && k < s->nq; k++) {
        const chorus__sql_queued_t *q = &s->q[k];
        const char *text = s->arena + q->text;
        const char *pv[64];
        for (int i = 0; i < q->n; i++) {
            size_t off = s->offs[q->first + (size_t)i];
            pv[i] = off == SIZE_MAX ? NULL : s->arena + off;
        }
        sent[k].e = lookup(s, text);
        broken = !pipe_send(s, sent[k].e, text, q->n, pv, &sent[k].preparing);
    }
    if (!broken && sql) {
        sent[k].e = last;
        broken = !pipe_send(s, last, sql, n, params, &sent[k].preparing);
        k++;
    }
    broken = broken || PQpipelineSync(s->pg) != 1;
    s->round_trips++;
    s->statements += k;
    /* Read every answer, in order, up to the Sync. */
    for (size_t i = 0; !broken && i < k; i++) {
        bool deferred = !sql || i + 1 < k;
        PGresult *r = NULL;
        if (sent[i].preparing) {
            if (!pipe_read(s, &r)) {
                broken = true;
                break;
            }
            if (PQresultStatus(r) == PGRES_COMMAND_OK)
                sent[i].e->prepared = true;
            else if (PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
                set_err(err, r, s->pg, deferred);
            PQclear(r);
        }
        if (!pipe_read(s, &r)) {
            broken = true;
            break;
        }
        ExecStatusType st = PQresultStatus(r);
        if (ok_status(st) && !deferred && resp) {
            *resp = r;
            r = NULL;
        } else if (!ok_status(st) && st != PGRES_PIPELINE_ABORTED) {
            set_err(err, r, s->pg, deferred);
            forget_plan(sent[i].e, err);
        } else if (st == PGRES_PIPELINE_ABORTED && !err->rc) {
            set_err(err, r, s->pg, deferred);
        }
        PQclear(r);
    }
    if (!broken) {
        PGresult *r = PQgetResult(s->pg);
        broken = !r || PQresultStatus(r) != PGRES_PIPELINE_SYNC;
        PQclear(r);
    }
    broken = broken || PQexitPipelineMode(s->pg) != 1;
    free(sent);
    chorus__sql_drop(s);
    if (broken) {
        /* Whatever libpq holds now cannot be trusted: the caller drops the
         * connection and its transaction. */
        if (resp && *resp) {
            PQclear(*resp);
            *resp = NULL;
        }
        if (!err->rc || !err->lost) {
            err->rc = CHORUS_ERR_CONN_CLOSED;
            err->lost = true;
            snprintf(err->message, sizeof(err->message), "pipeline: %.*s",
                     (int)strcspn(PQerrorMessage(s->pg), "\n"), PQerrorMessage(s->pg));
        }
    }
    if (err->rc && resp && *resp) {
        PQclear(*resp);
        *resp = NULL;
    }
    return err->rc;
}

chorus_err_t chorus__sql_exec(chorus__sql_t *s, const char *sql, int n,
                              const char *const *params, PGresult **resp,
                              chorus__sql_err_t *err) {
    chorus__sql_err_t local;
    if (!err)
        err = &local;
    memset(err, 0, sizeof(*err));
    if (resp)
        *resp = NULL;
    if (!s->pg) {
        err->rc = CHORUS_ERR_CONN_CLOSED;
        err->lost = true;
        snprintf(err->message, sizeof(err->message), "no connection");
        chorus__sql_drop(s);
        return err->rc;
    }
    return send_group(s, sql, n, params, resp, err);
}
