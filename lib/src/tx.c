/*
 * tx.c - transactions: one per batch of deliveries (each delivery in a
 * savepoint of it), or one begun by the application for a command.
 *
 *   BEGIN
 *     SAVEPOINT d           -- delivery 1: inbox row, handler SQL, outbox rows
 *     RELEASE | ROLLBACK TO -- kept when handled, undone otherwise
 *     SAVEPOINT d           -- delivery 2 ...
 *   COMMIT
 *
 * A COMMIT in an aborted transaction "succeeds" as a ROLLBACK; tx_finish
 * checks the command tag, so an error a handler ignored can never be
 * mistaken for a commit.
 */
#include "chorus_int.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chorus__tx_note(chorus_tx_t *tx, chorus_err_t rc, bool lost) {
    if (rc == CHORUS_ERR_CONFLICT)
        tx->conflict = true;
    else if (rc)
        tx->failed = true;
    if (lost)
        tx->lost = true;
}

static bool run(chorus_tx_t *tx, const char *sql) {
    bool lost;
    chorus_err_t rc = chorus__pg_exec(tx->ch, tx->pg, sql, 0, NULL, NULL, &lost);
    if (rc)
        chorus__tx_note(tx, rc, lost);
    return rc == CHORUS_OK;
}

chorus_err_t chorus__tx_open(chorus_t *ch, chorus_tx_t *tx) {
    memset(tx, 0, sizeof(*tx));
    tx->ch = ch;
    tx->pg = ch->store.pg;
    if (!ch->store.up || !tx->pg)
        return CHORUS_ERR_CONN_CLOSED;
    return run(tx, "BEGIN") ? CHORUS_OK : tx->lost ? CHORUS_ERR_CONN_CLOSED : CHORUS_ERR_DB;
}

bool chorus__tx_savepoint(chorus_tx_t *tx) { return run(tx, "SAVEPOINT chorus_delivery"); }
bool chorus__tx_release(chorus_tx_t *tx) { return run(tx, "RELEASE SAVEPOINT chorus_delivery"); }

bool chorus__tx_rollback_to(chorus_tx_t *tx) {
    tx->nseqs = 0; /* the rows are gone with the savepoint */
    tx->failed = false;
    tx->invalid_emit = tx->too_large = false; /* and what they were */
    return run(tx, "ROLLBACK TO SAVEPOINT chorus_delivery") &&
           run(tx, "RELEASE SAVEPOINT chorus_delivery");
}

chorus_err_t chorus__tx_finish(chorus_tx_t *tx) {
    if (tx->failed) {
        chorus__tx_abort(tx);
        return CHORUS_ERR_DB;
    }
    PGresult *r = PQexec(tx->pg, "COMMIT");
    ExecStatusType st = PQresultStatus(r);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    bool committed = st == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    bool conflict = state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0);
    PQclear(r);
    if (committed)
        return CHORUS_OK;
    if (PQstatus(tx->pg) == CONNECTION_BAD) {
        tx->lost = true;
        return CHORUS_ERR_CONN_CLOSED;
    }
    chorus__tx_abort(tx);
    return conflict ? CHORUS_ERR_CONFLICT : CHORUS_ERR_DB;
}

void chorus__tx_abort(chorus_tx_t *tx) {
    if (tx->pg && PQstatus(tx->pg) == CONNECTION_OK &&
        PQtransactionStatus(tx->pg) != PQTRANS_IDLE)
        PQclear(PQexec(tx->pg, "ROLLBACK"));
}

void chorus__tx_clear(chorus_tx_t *tx) {
    free(tx->seqs);
    tx->seqs = NULL;
    tx->nseqs = tx->capseqs = 0;
}

/* ---- the public API ------------------------------------------------------ */

chorus_err_t chorus_tx_begin(chorus_t *ch, chorus_tx_t **txp) {
    *txp = NULL;
    if (!ch->store.enabled)
        return CHORUS_ERR_STATE;
    if (!ch->store.up && chorus__store_connect(ch) != CHORUS_OK)
        return CHORUS_ERR_DB;
    chorus_tx_t *tx = malloc(sizeof(*tx));
    if (!tx)
        return CHORUS_ERR_NOMEM;
    chorus_err_t rc = chorus__tx_open(ch, tx);
    if (rc) {
        if (tx->lost)
            chorus__store_lost(ch, "BEGIN failed");
        free(tx);
        return rc;
    }
    tx->own = true;
    *txp = tx;
    return CHORUS_OK;
}

/* debug.commit.answer=lost: COMMIT is sent and the server's answer
 * arrives, but is dropped with the connection, unread. */
static chorus_err_t commit_answer_lost(chorus_tx_t *tx) {
    PGconn *pg = tx->pg;
    if (!PQsendQuery(pg, "COMMIT"))
        return CHORUS_ERR_CONN_CLOSED;
    struct pollfd fd = {.fd = PQsocket(pg), .events = POLLIN};
    while (PQflush(pg) == 1)
        ;
    /* Wait until the answer is in: the transaction is then committed. */
    while (PQisBusy(pg) && poll(&fd, 1, 5000) > 0 && PQconsumeInput(pg))
        ;
    chorus__log(tx->ch, CHORUS_LOG_WARNING,
                "debug.commit.answer: dropping the connection before reading COMMIT's answer");
    tx->lost = true;
    return CHORUS_ERR_COMMIT_UNKNOWN;
}

chorus_err_t chorus_tx_commit(chorus_tx_t *tx) {
    if (!tx)
        return CHORUS_ERR_INVALID_ARG;
    chorus_t *ch = tx->ch;
    chorus_err_t rc = tx->conflict ? CHORUS_ERR_CONFLICT : CHORUS_OK;
    /* Whether COMMIT can have reached the server: once it may have, a lost
     * connection leaves the outcome unknown, not failed. */
    bool was_up = tx->pg && PQstatus(tx->pg) == CONNECTION_OK;
    if (rc)
        chorus__tx_abort(tx);
    else if (!tx->failed && was_up && tx->keyed &&
             strcmp(chorus__conf_str(ch->conf, "debug.commit.answer"), "lost") == 0)
        rc = commit_answer_lost(tx);
    else
        rc = chorus__tx_finish(tx);
    if (rc == CHORUS_ERR_CONN_CLOSED && was_up && !tx->failed)
        rc = CHORUS_ERR_COMMIT_UNKNOWN;
    if (tx->lost)
        chorus__store_lost(ch, rc == CHORUS_ERR_COMMIT_UNKNOWN
                                   ? "the connection was lost during COMMIT; its outcome is unknown"
                                   : "commit failed");
    /* Publish now when we can; otherwise a relay does (NOTIFY woke it). */
    if (rc == CHORUS_OK && tx->nseqs && ch->started && ch->st)
        chorus__outbox_flush(ch, tx->seqs, tx->nseqs);
    chorus__tx_clear(tx);
    free(tx);
    return rc;
}

void chorus_tx_rollback(chorus_tx_t *tx) {
    if (!tx)
        return;
    chorus__tx_abort(tx);
    chorus__tx_clear(tx);
    free(tx);
}

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

PGconn *chorus_tx_pg(chorus_tx_t *tx) { return tx ? tx->pg : NULL; }

chorus_err_t chorus_tx_exec(chorus_tx_t *tx, const char *sql, int nparams,
                            const char *const *params, PGresult **resp) {
    if (!tx || !sql)
        return CHORUS_ERR_INVALID_ARG;
    bool lost;
    chorus_err_t rc = chorus__pg_exec(tx->ch, tx->pg, sql, nparams, params, resp, &lost);
    if (rc)
        chorus__tx_note(tx, rc, lost);
    return rc;
}

chorus_err_t chorus_tx_emit(chorus_tx_t *tx, chorus_envelope_t *env) {
    if (!tx || !env) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_INVALID_ARG;
    }
    if (tx->d)
        return chorus_emit(tx->d, env);
    return chorus__outbox_insert(tx, env);
}

chorus_tx_t *chorus_delivery_tx(chorus_delivery_t *d) {
    return d && d->ch->store.enabled ? &d->tx : NULL;
}
