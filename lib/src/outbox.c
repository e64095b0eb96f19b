/*
 * outbox.c - the transactional outbox and its relay.
 *
 * An emitted event becomes a row in the same transaction as the effects
 * that caused it, so either both happen or neither.  The rows wait in
 * memory until the transaction ends: one multi-row INSERT writes them,
 * sent with the COMMIT, and after the commit they are published from
 * memory -- never read back:
 *
 *   handler: chorus_emit()         -> a row in tx->rows (checked, serialized)
 *   commit:  INSERT INTO outbox VALUES (...), (...); COMMIT   -- one round trip
 *   publish: each row, with confirms (the batch's one confirm wait)
 *   confirm: its event id joins the marks; the next transaction (or the idle
 *            poll) runs UPDATE outbox SET published_at ... for all of them
 *
 * Rows left behind (a crash between COMMIT and the confirm, a nack, a
 * command-line tool that only wrote rows) are found by the relay: at
 * start-up, every "store.relay.interval.ms", and whenever a NOTIFY from
 * the outbox trigger arrives.  Rows a running participant writes and
 * publishes itself carry own = true, which the trigger skips (nobody is
 * woken for them) and every relay leaves alone for RELAY_OWN_AGE seconds
 * (their writer is publishing them); after that (their writer died before
 * the confirm, say) any relay takes them.  The relay runs only when none of this process'
 * rows is in flight and every confirmed one is marked, so it never
 * publishes its own rows twice.  Publishing twice is otherwise possible
 * (a crash after the confirm, before the mark; two instances' relays) and
 * harmless: consumers' inboxes drop duplicates.
 *
 * The application's own transactions (chorus_tx_begin, chorus_tx_commit)
 * live here too: their commit is the outbox's (rows written with the
 * COMMIT, then published and, for the caller, confirmed).
 */
#include "chorus_int.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAY_PAGE 500
#define INSERT_ROWS 200 /* rows per INSERT: 4 parameters each */

chorus_err_t chorus__outbox_add(chorus_tx_t *tx, chorus_envelope_t *env) {
    chorus_t *ch = tx->ch;
    char *json = NULL;
    size_t len;
    chorus_err_t rc = chorus_envelope_serialize(env, &json, &len);
    if (!rc && len > ch->limits.max_bytes) {
        /* It could never be published (consumers would refuse it): fail
         * the transaction now rather than leave a row the relay cannot send. */
        chorus__log_env(ch, CHORUS_LOG_ERR, env, "envelope of %zu bytes exceeds "
                        "message.max.bytes (%zu); not emitted", len, ch->limits.max_bytes);
        rc = CHORUS_ERR_TOO_LARGE;
        tx->too_large = true;
    }
    if (!rc && tx->nrows == tx->caprows) {
        size_t ncap = tx->caprows ? tx->caprows * 2 : 8;
        chorus__row_t *n = realloc(tx->rows, ncap * sizeof(*n));
        if (n) {
            tx->rows = n;
            tx->caprows = ncap;
        } else {
            rc = CHORUS_ERR_NOMEM;
        }
    }
    if (rc) {
        if (!tx->too_large && !tx->invalid_emit)
            tx->failed = true;
        free(json);
        chorus_envelope_destroy(env);
        return rc;
    }
    chorus__row_t *row = &tx->rows[tx->nrows++];
    row->env = env;
    row->json = json;
    row->len = len;
    snprintf(row->routing_key, sizeof(row->routing_key), "%s.%s", ch->service,
             chorus_envelope_event_type(env));
    return CHORUS_OK;
}

/* "INSERT INTO outbox ... VALUES ($1,$2,$3,$4),($5,...)" for @p n rows: one
 * text per row count, each prepared once. */
static char *insert_sql(size_t n, bool own) {
    static const char head[] = "INSERT INTO outbox (event_id, aggregate_id, routing_key, envelope, "
                               "own, created_at) VALUES ";
    static const char tail[] = " ON CONFLICT (event_id) DO NOTHING";
    size_t cap = sizeof(head) + sizeof(tail) + n * 100;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t o = (size_t)snprintf(s, cap, "%s", head);
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o,
                              "%s($%zu,$%zu,$%zu,$%zu,%s,coalesce(to_timestamp($%zu::float8/1000),"
                              "now()))",
                              i ? "," : "", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4,
                              own ? "true" : "false", 4 * n + 1);
    snprintf(s + o, cap - o, "%s", tail);
    return s;
}

void chorus__outbox_write(chorus_tx_t *tx, size_t from) {
    /* An event id is the event: a second row with one (a timer's event
     * fired twice, a handler's fixed id) is the same event, not a new one. */
    for (size_t at = from; at < tx->nrows && !tx->broken;) {
        size_t n = tx->nrows - at < INSERT_ROWS ? tx->nrows - at : INSERT_ROWS;
        /* created_at: PostgreSQL's now(), or the simulated clock's (the
         * relay's age test, "own" rows are left alone a while, uses the same) */
        const char *p[4 * INSERT_ROWS + 1];
        char now[24];
        p[4 * n] = chorus__sim_now(now, sizeof(now));
        for (size_t i = 0; i < n; i++) {
            const chorus__row_t *r = &tx->rows[at + i];
            p[4 * i] = chorus_envelope_event_id(r->env);
            p[4 * i + 1] = chorus_envelope_aggregate_id(r->env);
            p[4 * i + 2] = r->routing_key;
            p[4 * i + 3] = r->json;
        }
        /* a running participant publishes its rows itself after COMMIT */
        char *sql = insert_sql(n, tx->ch->started);
        if (!sql) {
            tx->failed = tx->broken = true;
            return;
        }
        /* with its parameters: too many to queue, so it is sent with the
         * queue in front of it; its answer is the next round trip's */
        chorus__tx_exec(tx, sql, (int)(4 * n + 1), p, NULL);
        free(sql);
        at += n;
    }
}

/* ---- marks: confirmed rows, marked published later ---------------------- */

/* A row's publish settled: confirmed rows are marked later; a failed one
 * stays unpublished, for the relay. */
static void row_settled(chorus_t *ch, chorus__pub_t *p, chorus_err_t res) {
    chorus__store_t *s = &ch->store;
    if (res || !s->up || !chorus__marks_reserve(&s->marks, s->marks.n + 1)) {
        s->relay_wanted = true;
        return;
    }
    snprintf(s->marks.ids[s->marks.n++], 37, "%.36s", (const char *)p->props.message_id.bytes);
}

chorus__pub_t *chorus__outbox_pub(chorus_t *ch, chorus__row_t *row) {
    chorus__pub_t *p = chorus__pub_new();
    if (!p || chorus__pub_fill(ch, p, row->env, row->json, row->len, ch->topo.names.exchange,
                               row->routing_key)) {
        chorus__pub_destroy(p);
        return NULL;
    }
    row->env = NULL; /* the publish owns them now */
    row->json = NULL;
    p->done = row_settled;
    return p;
}

/* Extra copies of a row (debug.publish.copies), for duplicate tests. */
static chorus__pub_t *copy_pub(chorus_t *ch, const chorus__pub_t *orig) {
    chorus__pub_t *p = chorus__pub_from_text(ch, orig->body.bytes, orig->body.len,
                                             (const char *)orig->routing_key.bytes,
                                             orig->routing_key.len);
    if (p)
        p->done = row_settled;
    return p;
}

/* Hands @p p to the publisher for row duty; false when it was not taken. */
static bool send_row(chorus_t *ch, chorus__pub_t *p, chorus__waiter_t *w) {
    p->waiter = w;
    if (w)
        w->pending++;
    chorus_err_t rc = chorus__pub_send(ch, p);
    if (rc == CHORUS_ERR_STATE || rc == CHORUS_ERR_NOMEM || rc == CHORUS_ERR_TOO_LARGE) {
        if (w) {
            w->pending--;
            w->failed = true;
        }
        ch->store.relay_wanted = true;
        chorus__pub_destroy(p);
        return false;
    }
    return true;
}

int chorus__outbox_send(chorus_t *ch, chorus__row_t *rows, size_t n, chorus__waiter_t *w) {
    long copies = chorus__conf_int(ch->conf, "debug.publish.copies");
    int sent = 0;
    for (size_t i = 0; i < n; i++) {
        chorus__pub_t *p = chorus__up(ch) ? chorus__outbox_pub(ch, &rows[i]) : NULL;
        if (!p) {
            ch->store.relay_wanted = true;
            if (w)
                w->failed = true;
            continue;
        }
        chorus__pub_t *extra[2] = {NULL, NULL};
        for (long k = 1; k < copies && k <= 2; k++)
            extra[k - 1] = copy_pub(ch, p);
        if (send_row(ch, p, w))
            sent++;
        for (int k = 0; k < 2; k++)
            if (extra[k] && chorus__up(ch))
                send_row(ch, extra[k], w);
            else
                chorus__pub_destroy(extra[k]);
    }
    return sent;
}

static bool waiter_settled(chorus_t *ch, void *arg) {
    (void)ch;
    return ((chorus__waiter_t *)arg)->pending == 0;
}

void chorus__outbox_publish_committed(chorus_t *ch, chorus__row_t *rows, size_t n, bool wait) {
    if (!ch->started || !chorus__up(ch) || ch->blocked) {
        ch->store.relay_wanted = true; /* blocked: the relay after connection.unblocked */
        return; /* a command-line tool: the service's relay (NOTIFY) publishes them */
    }
    chorus__waiter_t w = {0};
    chorus__lock(ch);
    chorus__outbox_send(ch, rows, n, wait ? &w : NULL);
    int64_t deadline = chorus__mono_ms() + chorus__conf_int(ch->conf, "amqp.rpc.timeout.ms");
    if (wait && chorus__up(ch) && chorus__wait_until(ch, deadline, waiter_settled, &w) == CHORUS_ERR_TIMEOUT)
        chorus__conn_lost(ch, "publisher confirms timed out");
    chorus__unlock(ch);
}

/* ---- the relay ------------------------------------------------------------ */

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

/* Publishes the selected rows and waits for their confirms (from the poll
 * loop, never inside a batch); returns how many were confirmed, their seqs
 * in @p ok.  A row counts only when its own confirm came. */
static size_t publish_rows(chorus_t *ch, PGresult *rows, int64_t *ok) {
    rows_wait_t w = {.n = PQntuples(rows)};
    if (w.n == 0 || !(w.each = calloc((size_t)w.n, sizeof(*w.each))))
        return 0;
    long copies = chorus__conf_int(ch->conf, "debug.publish.copies");
    chorus__lock(ch);
    for (int i = 0; i < w.n; i++) {
        w.each[i].failed = true; /* until a copy is handed to the publisher */
        for (long k = 0; k < copies && chorus__up(ch); k++) {
            chorus__pub_t *p = chorus__pub_from_text(ch, PQgetvalue(rows, i, 2),
                                                     (size_t)PQgetlength(rows, i, 2),
                                                     PQgetvalue(rows, i, 1),
                                                     (size_t)PQgetlength(rows, i, 1));
            if (!p)
                break; /* an unparseable row (logged): left unpublished for a human */
            if (k == 0)
                w.each[i].failed = false;
            p->waiter = &w.each[i];
            w.each[i].pending++;
            chorus_err_t rc = chorus__pub_send(ch, p);
            if (rc == CHORUS_ERR_STATE || rc == CHORUS_ERR_NOMEM || rc == CHORUS_ERR_TOO_LARGE) {
                w.each[i].pending--;
                w.each[i].failed = true;
                chorus__pub_destroy(p);
            }
        }
    }
    int64_t deadline = chorus__mono_ms() + chorus__conf_int(ch->conf, "amqp.rpc.timeout.ms");
    if (chorus__up(ch) && chorus__wait_until(ch, deadline, rows_settled, &w) == CHORUS_ERR_TIMEOUT)
        chorus__conn_lost(ch, "publisher confirms timed out");
    chorus__unlock(ch);
    size_t nok = 0;
    for (int i = 0; i < w.n; i++)
        if (w.each[i].pending == 0 && !w.each[i].failed)
            ok[nok++] = strtoll(PQgetvalue(rows, i, 0), NULL, 10);
    free(w.each);
    return nok;
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

/*
 * One page of rows left behind, in a transaction that holds them: the
 * advisory lock per aggregate keeps each aggregate with one relay at a
 * time (its rows then leave in seq order), SKIP LOCKED passes over rows
 * another relay is publishing, and rows a running participant is
 * publishing itself ("own") are left alone for RELAY_OWN_AGE.  Published,
 * confirmed, marked, committed.  The number published, or -1.
 */
#define RELAY_OWN_AGE "3"

static int relay_page(chorus_t *ch) {
    chorus_tx_t tx;
    if (chorus__tx_open(ch, &tx, false) != CHORUS_OK) {
        chorus__store_lost(ch, "BEGIN failed");
        return -1;
    }
    PGresult *rows = NULL;
    char page[16], now[24];
    snprintf(page, sizeof(page), "%d", RELAY_PAGE);
    const char *p[] = {page, RELAY_OWN_AGE, chorus__sim_now(now, sizeof(now))};
    chorus_err_t rc = chorus__tx_exec(&tx,
        "SELECT seq, routing_key, envelope FROM outbox "
        "WHERE published_at IS NULL AND (NOT own OR created_at < " CHORUS__SQL_NOW("$3")
        " - make_interval(secs => $2::int)) AND pg_try_advisory_xact_lock(hashtext(current_schema()), "
        "hashtext(aggregate_id::text)) ORDER BY seq LIMIT $1::int FOR UPDATE SKIP LOCKED",
        3, p, &rows);
    int published = -1;
    int64_t *ok = rows ? calloc((size_t)PQntuples(rows) + 1, sizeof(int64_t)) : NULL;
    if (!rc && ok) {
        size_t nok = publish_rows(ch, rows, ok);
        char *done = seq_array(ok, nok);
        const char *dp[] = {done};
        if (nok == 0 || (done && chorus__tx_exec(&tx, "UPDATE outbox SET published_at = now() "
                                                      "WHERE seq = ANY($1::bigint[])",
                                                 1, dp, NULL) == CHORUS_OK))
            published = (int)nok;
        free(done);
    }
    int found = rows ? PQntuples(rows) : 0;
    free(ok);
    PQclear(rows);
    if (published >= 0 && chorus__tx_finish(&tx) != CHORUS_OK)
        published = -1;
    else if (published < 0)
        chorus__tx_abort(&tx);
    if (tx.lost)
        chorus__store_lost(ch, "outbox relay failed");
    chorus__tx_clear(&tx);
    if (published > 0) {
        ch->stats.relayed += (uint64_t)published;
        chorus__log(ch, CHORUS_LOG_INFO, "outbox relay published %d rows left behind", published);
    }
    return published < 0 ? -1 : found;
}

void chorus__relay_poll(chorus_t *ch, bool idle) {
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
    if (ch->blocked) /* connection.blocked: the rows wait (relay_wanted) */
        return;
    int64_t now = chorus__mono_ms();
    if (now >= s->next_relay_ms) {
        s->relay_wanted = true;
        s->next_relay_ms = now + chorus__conf_int(ch->conf, "store.relay.interval.ms");
    }
    if (now >= s->next_prune_ms) {
        s->next_prune_ms = now + 3600 * 1000;
        chorus__inbox_prune(ch);
    }
    /* Confirmed rows are marked with the next transaction; when none comes
     * (idle), now. */
    if (idle)
        chorus__marks_flush(ch);
    if (!s->relay_wanted || !chorus__up(ch) || !s->up)
        return;
    s->relay_wanted = false;
    /* A few pages at most per poll: consuming must not starve. */
    for (int page = 0; page < 4 && s->up && chorus__up(ch); page++)
        if (relay_page(ch) < RELAY_PAGE)
            break;
}

chorus_err_t chorus__outbox_commit(chorus_tx_t *tx) {
    if (!tx->failed && !tx->broken)
        chorus__outbox_write(tx, 0); /* sent with the COMMIT */
    return chorus__tx_finish(tx);
}

/* ---- the application's transactions ---------------------------------- */

chorus_err_t chorus_tx_begin(chorus_t *ch, chorus_tx_t **txp) {
    *txp = NULL;
    if (!ch->store.enabled)
        return CHORUS_ERR_STATE;
    if (!ch->store.up && chorus__store_connect(ch) != CHORUS_OK)
        return CHORUS_ERR_DB;
    chorus_tx_t *tx = malloc(sizeof(*tx));
    if (!tx)
        return CHORUS_ERR_NOMEM;
    chorus_err_t rc = chorus__tx_open(ch, tx, false);
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
    chorus__outbox_write(tx, 0);
    if (chorus__tx_exec(tx, NULL, 0, NULL, NULL) != CHORUS_OK || !PQsendQuery(pg, "COMMIT"))
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
    else if (tx->failed || tx->broken)
        rc = chorus__tx_finish(tx); /* refuses: rolls back */
    else if (was_up && tx->keyed &&
             strcmp(chorus__conf_str(ch->conf, "debug.commit.answer"), "lost") == 0)
        rc = commit_answer_lost(tx);
    else
        rc = chorus__outbox_commit(tx);
    if (rc == CHORUS_ERR_CONN_CLOSED && was_up && !tx->failed)
        rc = CHORUS_ERR_COMMIT_UNKNOWN;
    if (tx->lost)
        chorus__store_lost(ch, rc == CHORUS_ERR_COMMIT_UNKNOWN
                                   ? "the connection was lost during COMMIT; its outcome is unknown"
                                   : "commit failed");
    /* Publish now when we can; otherwise a relay does (NOTIFY woke it). */
    if (rc == CHORUS_OK && tx->nrows)
        chorus__outbox_publish_committed(ch, tx->rows, tx->nrows, !tx->internal);
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
