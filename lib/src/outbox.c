/*
 * outbox.c - the transactional outbox and its relay.
 *
 * An emitted event becomes a row in the same transaction as the effects
 * that caused it, so either both happen or neither.  After the commit the
 * rows are published with confirms and only then marked published:
 *
 *   tx (handler): INSERT outbox ... RETURNING seq          -- with effects
 *   COMMIT
 *   flush:  BEGIN
 *           SELECT ... WHERE seq = ANY(these) AND published_at IS NULL
 *                  FOR UPDATE SKIP LOCKED
 *           publish each, wait for the confirms
 *           UPDATE outbox SET published_at = now() WHERE seq = ANY(confirmed)
 *           COMMIT
 *
 * Rows left behind (a crash between COMMIT and the flush, a nack, a
 * command-line tool that only wrote rows) are found by the relay: at
 * start-up, every "store.relay.interval.ms", and whenever a NOTIFY from
 * the outbox trigger arrives.  Several instances relay side by side: an
 * aggregate's pending rows go to whichever relay takes its advisory lock
 * first (the others skip that aggregate until it commits), so each
 * aggregate's events leave in order, and FOR UPDATE SKIP LOCKED keeps a
 * relay off rows another flush is publishing.  A row is marked published only
 * after its confirm; publishing twice (a crash after the confirm, before
 * the mark) is possible and harmless: consumers' inboxes drop duplicates.
 */
#include "chorus_int.h"
#include "saga_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAY_PAGE 500

chorus_err_t chorus__tx_adopt(chorus_tx_t *tx, chorus_envelope_t *env) {
    if (tx->d)
        return chorus__inherit(tx->d, env); /* a handler's events carry the flow's ids */
    if (chorus_envelope_correlation_id(env))
        return CHORUS_OK;
    return chorus_envelope_set_correlation_id(env, chorus_envelope_event_id(env));
}

chorus_err_t chorus__outbox_insert(chorus_tx_t *tx, chorus_envelope_t *env) {
    chorus_t *ch = tx->ch;
    char *json = NULL;
    size_t len;
    /* the flow's ids, the declared contract and the saga's bookkeeping */
    chorus_err_t rc = chorus__tx_adopt(tx, env);
    if (!rc)
        rc = chorus__saga_on_emit(tx, env);
    if (!rc)
        rc = chorus_envelope_serialize(env, &json, &len);
    if (!rc && len > ch->limits.max_bytes) {
        /* It could never be published (consumers would refuse it): fail
         * the transaction now rather than leave a row the relay cannot send. */
        chorus__log_env(ch, CHORUS_LOG_ERR, env, "envelope of %zu bytes exceeds "
                        "message.max.bytes (%zu); not emitted", len, ch->limits.max_bytes);
        rc = CHORUS_ERR_TOO_LARGE;
        tx->too_large = true;
    }
    char rk[CHORUS__NAME_MAX];
    snprintf(rk, sizeof(rk), "%s.%s", ch->service, chorus_envelope_event_type(env));
    PGresult *r = NULL;
    bool lost = false;
    if (!rc) {
        const char *p[] = {chorus_envelope_event_id(env), chorus_envelope_aggregate_id(env), rk,
                           json};
        rc = chorus__pg_exec(ch, tx->pg,
                             "INSERT INTO outbox (event_id, aggregate_id, routing_key, envelope) "
                             "VALUES ($1, $2, $3, $4) RETURNING seq",
                             4, p, &r, &lost);
    }
    if (!rc && tx->nseqs == tx->capseqs) {
        size_t ncap = tx->capseqs ? tx->capseqs * 2 : 8;
        int64_t *n = realloc(tx->seqs, ncap * sizeof(*n));
        if (n) {
            tx->seqs = n;
            tx->capseqs = ncap;
        } else {
            rc = CHORUS_ERR_NOMEM;
        }
    }
    if (!rc)
        tx->seqs[tx->nseqs++] = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        chorus__tx_note(tx, rc, lost);
    PQclear(r);
    free(json);
    chorus_envelope_destroy(env);
    return rc;
}

static char *seq_array(const int64_t *seqs, size_t n) {
    size_t cap = 3 + n * 21; /* "{", up to 20 digits and a comma each, "}", NUL */
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t o = 0;
    s[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s%lld", i ? "," : "", (long long)seqs[i]);
    s[o++] = '}';
    s[o] = '\0';
    return s;
}

typedef struct {
    chorus__waiter_t *each;
    int n;
} rows_wait_t;

static bool rows_settled(chorus_t *ch, void *arg) {
    (void)ch;
    const rows_wait_t *w = arg;
    for (int i = 0; i < w->n; i++)
        if (w->each[i].pending)
            return false;
    return true;
}

/* Hands row @p i to the publisher with @p wt waiting for its confirm; the
 * first copy of a row clears the "failed" a row starts with. */
static void send_row(chorus_t *ch, PGresult *rows, int i, chorus__waiter_t *wt, bool first) {
    chorus__pub_t *p = chorus__pub_from_text(ch, PQgetvalue(rows, i, 2),
                                             (size_t)PQgetlength(rows, i, 2),
                                             PQgetvalue(rows, i, 1));
    if (!p)
        return; /* an unparseable row (logged): left unpublished for a human */
    p->waiter = wt;
    if (first)
        wt->failed = false;
    wt->pending++;
    chorus_err_t rc = chorus__pub_send(ch, p);
    if (rc == CHORUS_ERR_STATE || rc == CHORUS_ERR_NOMEM || rc == CHORUS_ERR_TOO_LARGE) {
        wt->pending--;
        wt->failed = true;
        chorus__pub_destroy(p);
    }
}

/* Publishes the selected rows; returns how many were confirmed and writes
 * their seqs to @p ok.  A row counts only when its own confirm came. */
static size_t publish_rows(chorus_t *ch, PGresult *rows, int64_t *ok) {
    rows_wait_t w = {.n = PQntuples(rows)};
    if (w.n == 0 || !(w.each = calloc((size_t)w.n, sizeof(*w.each))))
        return 0;
    long copies = chorus__conf_int(ch->conf, "debug.publish.copies");
    chorus__lock(ch);
    for (int i = 0; i < w.n; i++) {
        w.each[i].failed = true; /* until a copy is handed to the publisher */
        for (long k = 0; k < copies && ch->st; k++)
            send_row(ch, rows, i, &w.each[i], k == 0);
    }
    int64_t deadline = chorus__mono_ms() + chorus__conf_int(ch->conf, "amqp.rpc.timeout.ms");
    if (ch->st && chorus__wait_until(ch, deadline, rows_settled, &w) == CHORUS_ERR_TIMEOUT)
        chorus__conn_lost(ch, "publisher confirms timed out");
    chorus__unlock(ch);
    size_t nok = 0;
    for (int i = 0; i < w.n; i++)
        if (w.each[i].pending == 0 && !w.each[i].failed)
            ok[nok++] = strtoll(PQgetvalue(rows, i, 0), NULL, 10);
    free(w.each);
    return nok;
}

int chorus__outbox_flush(chorus_t *ch, const int64_t *seqs, size_t n) {
    if (!ch->store.up || !ch->st)
        return -1;
    chorus_tx_t tx;
    if (chorus__tx_open(ch, &tx) != CHORUS_OK) {
        chorus__store_lost(ch, "BEGIN failed");
        return -1;
    }
    PGresult *rows = NULL;
    chorus_err_t rc;
    char *arr = NULL;
    if (seqs) {
        arr = seq_array(seqs, n);
        const char *p[] = {arr};
        rc = chorus_tx_exec(&tx,
                            "SELECT seq, routing_key, envelope FROM outbox "
                            "WHERE seq = ANY($1::bigint[]) AND published_at IS NULL "
                            "ORDER BY seq FOR UPDATE SKIP LOCKED",
                            1, p, &rows);
    } else {
        /* The advisory lock per aggregate keeps each aggregate with one
         * relay at a time (its rows then leave in seq order); SKIP LOCKED
         * passes over rows a flush elsewhere is publishing. */
        rc = chorus_tx_exec(&tx,
                            "SELECT seq, routing_key, envelope FROM outbox "
                            "WHERE published_at IS NULL AND pg_try_advisory_xact_lock("
                            "  hashtext(current_schema()), hashtext(aggregate_id::text)) "
                            "ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED",
                            0, NULL, &rows);
    }
    free(arr);
    int published = -1;
    int64_t *ok = rows ? calloc((size_t)PQntuples(rows) + 1, sizeof(int64_t)) : NULL;
    if (!rc && ok) {
        size_t nok = publish_rows(ch, rows, ok);
        char *done = seq_array(ok, nok);
        const char *p[] = {done};
        if (nok == 0 ||
            chorus_tx_exec(&tx, "UPDATE outbox SET published_at = now() "
                                "WHERE seq = ANY($1::bigint[])", 1, p, NULL) == CHORUS_OK)
            published = (int)nok;
        free(done);
    }
    free(ok);
    PQclear(rows);
    if (published >= 0 && chorus__tx_finish(&tx) != CHORUS_OK)
        published = -1;
    else if (published < 0)
        chorus__tx_abort(&tx);
    if (tx.lost)
        chorus__store_lost(ch, "outbox flush failed");
    chorus__tx_clear(&tx);
    if (!seqs && published > 0) {
        ch->stats.relayed += (uint64_t)published;
        chorus__log(ch, CHORUS_LOG_INFO, "outbox relay published %d rows left behind", published);
    }
    return published;
}

void chorus__relay_poll(chorus_t *ch) {
    chorus__store_t *s = &ch->store;
    if (!s->up)
        return;
    if (!PQconsumeInput(s->listen)) {
        chorus__store_lost(ch, "LISTEN connection failed");
        return;
    }
    PGnotify *nf;
    while ((nf = PQnotifies(s->listen)) != NULL) {
        s->relay_wanted = true;
        PQfreemem(nf);
    }
    int64_t now = chorus__mono_ms();
    if (now >= s->next_relay_ms) {
        s->relay_wanted = true;
        s->next_relay_ms = now + chorus__conf_int(ch->conf, "store.relay.interval.ms");
    }
    if (now >= s->next_prune_ms) {
        s->next_prune_ms = now + 3600 * 1000;
        chorus__inbox_prune(ch);
    }
    if (!s->relay_wanted || !ch->st)
        return;
    s->relay_wanted = false;
    /* A few pages at most per poll: consuming must not starve. */
    for (int page = 0; page < 4; page++)
        if (chorus__outbox_flush(ch, NULL, 0) < RELAY_PAGE)
            break;
}
