/*
 * tx.c - transactions: one per batch of deliveries, or one begun by the
 * application for a command.  Statements whose answer nobody reads wait in
 * the statement session (sql.c) and go out with the next one that is
 * needed; a batch transaction on the happy path is two round trips:
 *
 *   BEGIN; UPDATE outbox SET published_at (marks)               -- queued
 *   INSERT INTO inbox ... RETURNING event_id   (the whole batch) -- 1
 *     delivery 1: guard, handler SQL (SAVEPOINT queued before its
 *                 first statement, RELEASE queued after), rows in memory
 *     delivery 2: ...
 *   INSERT INTO outbox VALUES (...), (...); COMMIT              -- 2
 *
 * The first delivery gets a savepoint only when its handler runs SQL of
 * its own (chorus_tx_exec, chorus_tx_pg, the event store); chorus' own
 * statements (inbox, guards) need none: a failed delivery's inbox claim is
 * taken back with a DELETE, a guard row left empty means "not run".
 *
 * No lock cycles through batching.  A transaction holds the row locks of
 * every delivery it handled until it commits; two instances' batches that
 * each hold one row and want the other's would wait in a circle, which
 * PostgreSQL breaks only after deadlock_timeout (1 s) and by killing one.
 * So a transaction may wait for a lock without bound only while it holds
 * no delivery's locks but the current one's: every delivery after the
 * first runs under "SET LOCAL lock_timeout = store.lock.wait.ms", in a
 * savepoint from its start; a wait that runs out (55P03, a conflict)
 * rolls back to it, the deliveries before commit, and it runs first in a
 * transaction of its own (consumer.c), where it may wait as long as it
 * takes.  A first delivery waits only for a transaction that is itself
 * waiting boundedly or not at all, so no circle can close.  What the
 * transaction holds besides (taken before the first delivery): the inbox
 * claims, sorted by id (two claims wait in one order), and the published
 * marks of its own outbox rows (the relay takes rows SKIP LOCKED and
 * waits for nothing) -- neither waits for a handler's row.  Within one
 * delivery the handler's own order is its business: a handler locking
 * several rows takes them sorted (services/inventory does).  A failure
 * outside a savepoint breaks the whole transaction: the batch is then run
 * again "careful" (consumer.c), every delivery in a savepoint of its own.
 *
 * The event ids whose publish was confirmed (the published marks) ride on
 * the next transaction's BEGIN, or go out alone when the participant is
 * idle.  The rows themselves are the outbox's (outbox.c writes them just
 * before chorus__tx_finish()); tx.c knows nothing above the store.
 *
 * A COMMIT in an aborted transaction "succeeds" as a ROLLBACK; tx_finish
 * checks the command tag, so an error a handler ignored can never be
 * mistaken for a commit.
 */
#include "chorus_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chorus__row_free(chorus__row_t *r) {
    chorus_envelope_destroy(r->env);
    free(r->json);
    r->env = NULL;
    r->json = NULL;
}

void chorus__marks_free(chorus__marks_t *m) {
    free(m->ids);
    memset(m, 0, sizeof(*m));
}

void chorus__tx_note(chorus_tx_t *tx, const chorus__sql_err_t *err) {
    if (!err->rc)
        return;
    tx->err = *err;
    if (err->rc == CHORUS_ERR_CONFLICT)
        tx->conflict = true;
    else
        tx->failed = true;
    /* Outside a savepoint, or in a statement queued before this one (a
     * RELEASE, a guard), the error aborted the whole transaction. */
    if (!tx->savepoint || err->deferred || !tx->d)
        tx->broken = true;
    if (err->lost)
        tx->lost = true;
}

static void log_err(chorus_tx_t *tx, const chorus__sql_err_t *err) {
    if (err->rc && err->rc != CHORUS_ERR_CONFLICT)
        chorus__log(tx->ch, err->lost ? CHORUS_LOG_WARNING : CHORUS_LOG_ERR, "SQL failed (%s): %s",
                    *err->sqlstate ? err->sqlstate : "no SQLSTATE", err->message);
}

chorus_err_t chorus__tx_exec(chorus_tx_t *tx, const char *sql, int n,
                             const char *const *params, PGresult **resp) {
    chorus__sql_err_t err;
    if (tx->broken) { /* the server would only answer "transaction is aborted" */
        if (resp)
            *resp = NULL;
        return CHORUS_ERR_DB;
    }
    chorus_err_t rc = chorus__sql_exec(tx->sql, sql, n, params, resp, &err);
    if (rc) {
        log_err(tx, &err);
        chorus__tx_note(tx, &err);
    }
    return rc;
}

void chorus__tx_defer(chorus_tx_t *tx, const char *sql, int n, const char *const *params) {
    if (tx->broken)
        return;
    if (chorus__sql_defer(tx->sql, sql, n, params) != CHORUS_OK) {
        /* out of memory: the statement is lost, so is the transaction */
        tx->failed = tx->broken = true;
        return;
    }
    if (chorus__sql_queued(tx->sql) >= CHORUS__SQL_QUEUE_MAX)
        chorus__tx_exec(tx, NULL, 0, NULL, NULL);
}

/* ---- published marks ------------------------------------------------ */

bool chorus__marks_reserve(chorus__marks_t *m, size_t n) {
    if (n <= m->cap)
        return true;
    size_t cap = m->cap ? m->cap : 64;
    while (cap < n)
        cap *= 2;
    char(*ids)[37] = realloc(m->ids, cap * sizeof(*ids));
    if (!ids)
        return false;
    m->ids = ids;
    m->cap = cap;
    return true;
}

static const char *mark_at(const void *m, size_t i) {
    return ((const chorus__marks_t *)m)->ids[i];
}

static char *marks_array(const chorus__marks_t *m) { return chorus__uuid_array(m->n, mark_at, m); }

static const char MARK_SQL[] =
    "UPDATE outbox SET published_at = now() WHERE event_id = ANY($1::uuid[]) "
    "AND published_at IS NULL";

static void mark_sql(chorus_tx_t *tx, const chorus__marks_t *m) {
    char *arr = marks_array(m);
    if (!arr)
        return; /* published again later by the relay: harmless */
    const char *p[] = {arr};
    chorus__tx_defer(tx, MARK_SQL, 1, p);
    free(arr);
}

void chorus__marks_flush(chorus_t *ch) {
    chorus__marks_t *m = &ch->store.marks;
    if (!ch->store.up || m->n == 0)
        return;
    char *arr = marks_array(m);
    const char *p[] = {arr};
    bool lost = false;
    if (arr && chorus__store_exec(ch, MARK_SQL, 1, p, NULL, &lost) == CHORUS_OK)
        m->n = 0;
    free(arr);
    if (lost)
        chorus__store_lost(ch, "marking outbox rows failed");
}

/* Marks of confirmed publishes go with the transaction's first statements;
 * kept for a later one if it does not commit. */
static void take_marks(chorus_tx_t *tx) {
    chorus__marks_t *m = &tx->ch->store.marks;
    if (m->n == 0)
        return;
    tx->marking = *m;
    memset(m, 0, sizeof(*m));
    mark_sql(tx, &tx->marking);
}

static void give_back_marks(chorus_tx_t *tx) {
    chorus__marks_t *t = &tx->marking;
    if (t->n == 0)
        return;
    chorus__marks_t *m = &tx->ch->store.marks;
    if (m->n + t->n <= m->cap || chorus__marks_reserve(m, m->n + t->n)) {
        memcpy(m->ids + m->n, t->ids, t->n * sizeof(*t->ids));
        m->n += t->n;
    } /* else: the rows are published twice, later, by the relay */
    chorus__marks_free(t);
}

chorus_err_t chorus__tx_open(chorus_t *ch, chorus_tx_t *tx, bool careful) {
    memset(tx, 0, sizeof(*tx));
    tx->ch = ch;
    tx->pg = ch->store.pg;
    tx->sql = &ch->store.sql;
    tx->careful = careful;
    if (!ch->store.up || !tx->pg) {
        tx->lost = true;
        return CHORUS_ERR_CONN_CLOSED;
    }
    chorus__sql_drop(tx->sql); /* nothing of an earlier transaction may leak in */
    chorus__tx_defer(tx, "BEGIN", 0, NULL);
    take_marks(tx);
    return tx->broken ? CHORUS_ERR_NOMEM : CHORUS_OK;
}

void chorus__tx_enter(chorus_tx_t *tx, struct chorus_delivery_s *d, bool later) {
    tx->d = d;
    tx->conflict = tx->failed = tx->too_large = tx->invalid_emit = false;
    tx->saga_emit = 0;
    tx->rows_mark = tx->nrows;
    tx->savepoint = false;
    long wait_ms = chorus__conf_int(tx->ch->conf, "store.lock.wait.ms");
    if (later && wait_ms > 0) {
        /* Set outside any savepoint, so it stays to the end of the
         * transaction: every delivery after the first waits this long at
         * most.  Its savepoint from the start: a wait that runs out in
         * chorus' own statements (the saga guard) undoes it alone. */
        if (!tx->lock_bounded) {
            char sql[64];
            snprintf(sql, sizeof(sql), "SET LOCAL lock_timeout = %ld", wait_ms);
            chorus__tx_defer(tx, sql, 0, NULL);
            tx->lock_bounded = true;
        }
        chorus__tx_defer(tx, "SAVEPOINT chorus_delivery", 0, NULL);
        tx->savepoint = true;
    } else if (tx->careful) {
        chorus__tx_defer(tx, "SAVEPOINT chorus_delivery", 0, NULL);
        tx->savepoint = true;
    }
}

/* A handler's own SQL is about to run: from here on it needs a savepoint,
 * sent with its first statement. */
static void isolate(chorus_tx_t *tx) {
    if (tx->d && !tx->savepoint) {
        chorus__tx_defer(tx, "SAVEPOINT chorus_delivery", 0, NULL);
        tx->savepoint = true;
    }
}

void chorus__tx_keep(chorus_tx_t *tx) {
    if (tx->savepoint)
        chorus__tx_defer(tx, "RELEASE SAVEPOINT chorus_delivery", 0, NULL);
    tx->savepoint = false;
    tx->d = NULL;
}

void chorus__tx_undo(chorus_tx_t *tx) {
    for (size_t i = tx->rows_mark; i < tx->nrows; i++)
        chorus__row_free(&tx->rows[i]);
    tx->nrows = tx->rows_mark; /* its events go with it */
    if (tx->savepoint) {
        chorus__tx_defer(tx, "ROLLBACK TO SAVEPOINT chorus_delivery", 0, NULL);
        chorus__tx_defer(tx, "RELEASE SAVEPOINT chorus_delivery", 0, NULL);
        tx->savepoint = false;
        /* an error inside the savepoint is undone with it */
        if (!tx->broken)
            tx->failed = false;
    }
    tx->invalid_emit = tx->too_large = false;
}

chorus_err_t chorus__tx_finish(chorus_tx_t *tx) {
    if (tx->failed || tx->broken) {
        chorus__tx_abort(tx);
        return CHORUS_ERR_DB;
    }
    PGresult *r = NULL;
    chorus__sql_err_t err = {0};
    chorus_err_t rc = tx->broken ? CHORUS_ERR_NOMEM
                                 : chorus__sql_exec(tx->sql, "COMMIT", 0, NULL, &r, &err);
    bool committed = rc == CHORUS_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    PQclear(r);
    if (committed) {
        chorus__marks_free(&tx->marking);
        return CHORUS_OK;
    }
    if (rc && rc != CHORUS_ERR_NOMEM) {
        log_err(tx, &err);
        tx->err = err;
    }
    if (PQstatus(tx->pg) == CONNECTION_BAD || (rc && err.lost)) {
        tx->lost = true;
        give_back_marks(tx);
        return CHORUS_ERR_CONN_CLOSED;
    }
    chorus__tx_abort(tx);
    return rc == CHORUS_ERR_CONFLICT ? CHORUS_ERR_CONFLICT : CHORUS_ERR_DB;
}

void chorus__tx_abort(chorus_tx_t *tx) {
    chorus__sql_drop(tx->sql);
    give_back_marks(tx);
    if (tx->pg && PQstatus(tx->pg) == CONNECTION_OK &&
        PQtransactionStatus(tx->pg) != PQTRANS_IDLE)
        PQclear(PQexec(tx->pg, "ROLLBACK"));
}

void chorus__tx_clear(chorus_tx_t *tx) {
    for (size_t i = 0; i < tx->nrows; i++)
        chorus__row_free(&tx->rows[i]);
    free(tx->rows);
    tx->rows = NULL;
    tx->nrows = tx->caprows = tx->rows_mark = 0;
    give_back_marks(tx);
}

/* ---- the public API ------------------------------------------------------ */

chorus_err_t chorus_tx_idempotent(chorus_tx_t *tx, const char *key, const char *result,
                                  char *prev, size_t prev_size) {
    if (!tx || !key || !*key || strlen(key) > 200 || !result)
        return CHORUS_ERR_INVALID_ARG;
    if (prev && prev_size)
        prev[0] = '\0';
    /* A concurrent holder of the same key makes this wait for its commit
     * (the primary key), then see its row. */
    const char *p[] = {key, result};
    PGresult *r = NULL;
    chorus_err_t rc = chorus_tx_exec(tx, "INSERT INTO idempotency (key, result) VALUES ($1, $2) "
                                         "ON CONFLICT (key) DO NOTHING RETURNING key",
                                     2, p, &r);
    if (rc)
        return rc;
    bool fresh = PQntuples(r) == 1;
    PQclear(r);
    if (fresh) {
        tx->keyed = true;
        return CHORUS_OK;
    }
    rc = chorus_tx_exec(tx, "SELECT result FROM idempotency WHERE key = $1", 1, p, &r);
    if (rc)
        return rc;
    if (PQntuples(r) == 1 && prev && prev_size)
        snprintf(prev, prev_size, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return CHORUS_ERR_DUPLICATE;
}

PGconn *chorus_tx_pg(chorus_tx_t *tx) {
    if (!tx)
        return NULL;
    /* The handler talks to libpq itself: what is queued goes first, and
     * its statements get their savepoint now. */
    isolate(tx);
    chorus__tx_exec(tx, NULL, 0, NULL, NULL);
    return tx->pg;
}

chorus_err_t chorus_tx_exec(chorus_tx_t *tx, const char *sql, int nparams,
                            const char *const *params, PGresult **resp) {
    if (resp)
        *resp = NULL;
    if (!tx || !sql || nparams < 0 || (nparams && !params))
        return CHORUS_ERR_INVALID_ARG;
    isolate(tx);
    return chorus__tx_exec(tx, sql, nparams, params, resp);
}

const char *chorus_tx_sqlstate(const chorus_tx_t *tx) {
    return tx && tx->err.rc ? tx->err.sqlstate : NULL;
}

const char *chorus_tx_error_message(const chorus_tx_t *tx) {
    return tx && tx->err.rc ? tx->err.message : NULL;
}

chorus_tx_t *chorus_delivery_tx(chorus_delivery_t *d) {
    return d && d->ch->store.enabled ? d->tx : NULL;
}
