/*
 * consumer.c - what happens to each delivery.
 *
 *   backlog (filled by the dispatcher, up to "consume.batch.max")
 *      |  without the connection lock, so heartbeats go on:
 *      v
 *   take a batch: decode each delivery in order, and end the batch early
 *   when the decoded envelopes would take more than
 *   "consume.batch.max.decoded.bytes" (the rest waits, undecoded)
 *      |
 *   delivered too often, never settled? --yes--> DLQ "delivery-limit"
 *   (classic queue, redelivered: sent back with its count instead, below)
 *      |
 *   decode + validate envelope (I-JSON, limits) --bad--> DLQ "malformed"
 *      |
 *   handler for event_type? --none--> DLQ "no-handler"
 *      |
 *   verified producer the declared one? --no--> DLQ "forbidden-producer"
 *      |
 *   schema_version known? --newer--> DLQ "unknown-schema-version" (or
 *      |                             retried, as the declaration says)
 *   upcast --refused--> DLQ "malformed"
 *      |
 *   handler(...) -> HANDLED      -> publish its emitted events
 *                   RETRY_LATER  -> publish to retry queue n (attempt + 1),
 *                                   or DLQ "retries-exhausted" after the last
 *                   REJECT       -> DLQ "rejected"
 *      |  with the lock:
 *      v
 *   wait for every confirm of the batch, then ack the batch (one
 *   multiple-ack when all went well).  A publish that fails (nack, return)
 *   turns the delivery's ack into a nack with requeue: it is handled again.
 *
 * Invariant: a delivery is acked only after everything it caused is
 * confirmed by the broker.  A lost connection or consumer channel drops the
 * batch without acking; the broker redelivers it.
 *
 * The durable path (store.type = postgres).  The same checks; then the
 * batch is one transaction (tx.c), two round trips on the happy path:
 *
 *   BEGIN; UPDATE outbox SET published_at ... (earlier confirms)  queued
 *   INSERT INTO inbox SELECT ... unnest($1) ... RETURNING         trip 1
 *     each delivery, in order:
 *       a duplicate (its inbox row is older): nothing runs; acked
 *       otherwise its saga guard (saga_run.c), then its handler; the
 *       first delivery gets a savepoint only when it runs SQL of its own,
 *       every later one from its start, under a bounded lock wait (tx.c);
 *       its events become rows in memory (emit.c)
 *       RETRY_LATER, REJECT, an invalid emit: its part is undone (its
 *       savepoint, its rows, its inbox claim) and its retry or DLQ copy
 *       joins the batch's publishes
 *   INSERT INTO outbox VALUES (...), (...); COMMIT                trip 2
 *      |
 *   every row and copy published from memory; one confirm wait for them
 *   all, while the next batch is taken and handled (two in flight)
 *      |
 *   acked, oldest batch first; the confirmed ids ride on the next BEGIN
 *
 * A conflict (serialization failure, a version another writer took, a
 * lock wait that ran out) of a batch's first delivery runs it again at
 * once; of a later one, the deliveries before it commit and it runs again
 * first in a transaction of its own.  Every delivery after the first of a
 * transaction waits for a row lock "store.lock.wait.ms" at most (tx.c), so
 * two instances' batches never wait on each other's locks in a circle:
 * no deadlock for PostgreSQL to detect, no second-long stall.  An error outside a savepoint aborts the transaction: the
 * batch runs again "careful", each delivery in a savepoint of its own.  A
 * crash at any point acks nothing that is not committed and confirmed:
 * the broker redelivers, the inbox row drops what was committed, and the
 * relay (outbox.c) publishes committed rows whose confirm never came.
 * The states of a delivery and a batch, and what moves them: batch.c.
 *
 * Copies.  A retry, a dead letter and a counted redelivery are copies of
 * the delivery's message published by this service: they carry its own
 * broker user as user_id (RabbitMQ refuses any other) and the verified
 * producer of the original in x-chorus-producer, which only this service
 * can have written (only its own connections may publish with its
 * user_id).  A copy always fits a frame: when the original headers plus
 * chorus' fault headers would not, the largest original headers are left
 * out, largest first, and named in x-chorus-dropped-headers -- an encoding
 * problem of one message never becomes a lost connection.
 *
 * Delivery limit.  A message that comes back without ever being settled
 * (it kills the process, or the connection drops each time) would be
 * handled forever.  Quorum queues count returns (x-delivery-count, and
 * dead-letter by themselves past x-delivery-limit); for a classic queue
 * chorus counts: a redelivered message is not handled but published again
 * to the service queue with x-chorus-redeliveries incremented, then acked.
 * Either way, once the count reaches "consume.delivery.limit" the message
 * is dead-lettered with reason "delivery-limit".
 */
#include "amqp_props_int.h"
#include "chorus_int.h"
#include "saga_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

void chorus__delivery_free(chorus_delivery_t *d) {
    if (!d)
        return;
    free(d->routing_key);
    amqp_destroy_message(&d->msg);
    chorus_envelope_destroy(d->env);
    for (size_t i = 0; i < d->nemitted; i++)
        chorus_envelope_destroy(d->emitted[i]);
    free(d->emitted);
    free(d);
}

chorus_err_t chorus__consumer_deliver(chorus_t *ch, uint64_t tag, bool redelivered,
                                      const char *routing_key, amqp_message_t *msg) {
    chorus_delivery_t *d = calloc(1, sizeof(*d));
    if (d)
        d->routing_key = strdup(routing_key);
    if (!d || !d->routing_key) {
        free(d);
        amqp_destroy_message(msg);
        return CHORUS_ERR_NOMEM; /* the connection goes: the broker keeps it */
    }
    d->ch = ch;
    d->tag = tag;
    d->redelivered = redelivered;
    d->gen = ch->consume_gen;
    d->msg = *msg; /* taken: pool, properties, body */
    if (ch->backlog_tail)
        ch->backlog_tail->next = d;
    else
        ch->backlog_head = d;
    ch->backlog_tail = d;
    ch->backlog_len++;
    return CHORUS_OK;
}

void chorus__consumer_refused(chorus_t *ch) { ch->stats.dead_lettered++; }

void chorus__backlog_clear(chorus_t *ch) {
    chorus_delivery_t *d = ch->backlog_head;
    while (d) {
        chorus_delivery_t *next = d->next;
        chorus__delivery_free(d);
        d = next;
    }
    ch->backlog_head = ch->backlog_tail = NULL;
    ch->backlog_len = 0;
}

chorus_err_t chorus__consume_start(chorus_t *ch) {
    char err[512];
    if (ch->store.enabled && !ch->store.up) {
        ch->store.paused = true; /* chorus_poll() resumes when the store is back */
        return CHORUS_OK;
    }
    char tag[128];
    snprintf(tag, sizeof(tag), "%s.%ld", ch->service, (long)getpid());
    chorus_err_t rc = ch->link->consume(ch, tag, err, sizeof(err));
    if (rc) {
        chorus__log(ch, CHORUS_LOG_ERR, "%s", err);
        return rc;
    }
    ch->consuming = true;
    ch->consume_gen++;
    return CHORUS_OK;
}

/* ---- handling (no lock) -------------------------------------------------- */

static const chorus__handler_t *find_handler(const chorus_t *ch, const char *type) {
    for (size_t i = 0; i < ch->nhandlers; i++)
        if (strcmp(ch->handlers[i].event_type, type) == 0)
            return &ch->handlers[i];
    return NULL;
}

/* The one way a delivery's state changes (batch.c has the table). */
static void to(chorus_delivery_t *d, chorus__devent_t ev) {
    int next = chorus__delivery_next(d->state, ev);
    if (next < 0) {
        /* a bug in chorus: say so loudly, keep the delivery where it is */
        chorus__log(d->ch, CHORUS_LOG_ERR, "delivery in state %s: transition %d refused",
                    chorus__dstate_name(d->state), (int)ev);
        return;
    }
    d->state = (chorus__dstate_t)next;
}

static void dead_letter(chorus_delivery_t *d, const char *reason) {
    to(d, CHORUS__DE_REFUSE);
    d->reason = reason;
}

static bool is_handled(const chorus_delivery_t *d) { return d->state == CHORUS__D_HANDLED; }

/* Records what the handler decided: retries run out become DLQ. */
static void set_outcome(chorus_t *ch, chorus_delivery_t *d, chorus_outcome_t out) {
    d->reason = NULL;
    if (out == CHORUS_HANDLED) {
        to(d, CHORUS__DE_SUCCEED);
        return;
    }
    if (out == CHORUS_RETRY_LATER) {
        to(d, CHORUS__DE_RETRY);
        if (chorus__retry_decide(&ch->retry, d->attempt).dead_letter)
            dead_letter(d, "retries-exhausted");
    } else {
        dead_letter(d, "rejected");
    }
    if (!d->error[0])
        snprintf(d->error, sizeof(d->error), "handler returned %s",
                 out == CHORUS_RETRY_LATER ? "retry-later" : "reject");
    chorus__log_env(ch, CHORUS_LOG_NOTICE, d->env, "attempt %d: %s: %s", d->attempt,
                    d->reason ? d->reason : "retry later", d->error);
}

/* Whether the message is a copy this service made itself (a retry, a
 * counted redelivery, a requeued dead letter): its user_id is ours, which
 * RabbitMQ lets only our own connections set.  Only then are the
 * x-chorus-* headers on it believed; any other producer could write them. */
static bool own_copy(const chorus_t *ch, const chorus_delivery_t *d) {
    const amqp_basic_properties_t *p = &d->msg.properties;
    size_t n = strlen(ch->conn_user);
    return (p->_flags & AMQP_BASIC_USER_ID_FLAG) && n && p->user_id.len == n &&
           memcmp(p->user_id.bytes, ch->conn_user, n) == 0;
}

/* The headers chorus reads from a delivery: all of them on its own
 * copies, none of its x-chorus-* ones from anyone else. */
static const amqp_table_t *chorus_headers(const chorus_t *ch, const chorus_delivery_t *d) {
    return (d->msg.properties._flags & AMQP_BASIC_HEADERS_FLAG) && own_copy(ch, d)
               ? &d->msg.properties.headers : NULL;
}

/* Unsettled deliveries of this message before this one.  A quorum queue
 * sets x-delivery-count only on a redelivery (a first delivery carrying
 * one was written by its producer). */
static long long prior_deliveries(const chorus_t *ch, const chorus_delivery_t *d) {
    const amqp_table_t *all = (d->msg.properties._flags & AMQP_BASIC_HEADERS_FLAG)
                                  ? &d->msg.properties.headers : NULL;
    long long n = ch->topo.quorum
                      ? (d->redelivered ? chorus__table_int(all, CHORUS__H_DELIVERY_COUNT, 0) : 0)
                      : chorus__table_int(chorus_headers(ch, d), CHORUS__H_REDELIVERIES, 0) +
                            (d->redelivered ? 1 : 0);
    return n < 0 ? 0 : n;
}

/* The verified producer: the AMQP user_id (RabbitMQ checked it against
 * the publishing connection), or, on a copy this service made itself, the
 * producer it recorded. */
static void verified_producer(const chorus_t *ch, const chorus_delivery_t *d,
                              const amqp_table_t *h, char *out, size_t size) {
    const amqp_basic_properties_t *p = &d->msg.properties;
    out[0] = '\0';
    if (p->_flags & AMQP_BASIC_USER_ID_FLAG)
        snprintf(out, size, "%.*s", (int)p->user_id.len, (const char *)p->user_id.bytes);
    const amqp_table_entry_t *e = chorus__table_find(h, CHORUS__H_PRODUCER);
    if (own_copy(ch, d) && e && e->value.kind == AMQP_FIELD_KIND_UTF8)
        snprintf(out, size, "%.*s", (int)e->value.value.bytes.len,
                 (const char *)e->value.value.bytes.bytes);
}

static bool producer_allowed(const chorus__handler_t *hd, const char *user) {
    for (size_t i = 0; i < hd->nproducer_users; i++)
        if (strcmp(hd->producer_users[i], user) == 0)
            return true;
    return false;
}

/* The checks before a handler may see the event; false (and the delivery
 * marked) when one fails. */
static bool admissible(chorus_t *ch, chorus_delivery_t *d, const chorus__handler_t *hd,
                       const amqp_table_t *h) {
    const char *type = chorus_envelope_event_type(d->env);
    if (hd->producer_users) {
        char user[256];
        verified_producer(ch, d, h, user, sizeof(user));
        if (!producer_allowed(hd, user)) {
            snprintf(d->error, sizeof(d->error),
                     "%s may be produced only by broker user%s %s%s; this one came from %s%s%s",
                     type, hd->nproducer_users == 1 ? "" : "s",
                     hd->nproducer_users ? hd->producer_users[0] : "(none)",
                     hd->nproducer_users > 1 ? " and others" : "", *user ? "'" : "",
                     *user ? user : "a publisher that set no user_id", *user ? "'" : "");
            chorus__log_env(ch, CHORUS_LOG_WARNING, d->env, "forbidden producer: %s", d->error);
            dead_letter(d, "forbidden-producer");
            return false;
        }
    }
    int sv = chorus_envelope_schema_version(d->env);
    if (sv > hd->newest_schema) {
        snprintf(d->error, sizeof(d->error),
                 "schema_version %d of %s is newer than %d, the newest this consumer knows", sv,
                 type, hd->newest_schema);
        chorus__log_env(ch, CHORUS_LOG_WARNING, d->env, "%s", d->error);
        if (!hd->newer_retry || chorus__retry_decide(&ch->retry, d->attempt).dead_letter)
            dead_letter(d, "unknown-schema-version");
        else
            to(d, CHORUS__DE_RETRY);
        return false;
    }
    return true;
}

/* Decodes, validates and upcasts the envelope and finds its handler; NULL
 * (and the delivery marked for the DLQ, a retry or a count) when any of
 * that fails. */
static const chorus__handler_t *decode(chorus_t *ch, chorus_delivery_t *d) {
    const amqp_table_t *h = chorus_headers(ch, d);
    long long attempt = chorus__table_int(h, CHORUS__H_ATTEMPT, 1);
    d->attempt = attempt < 1 ? 1 : attempt > 1000000 ? 1000000 : (int)attempt;
    d->handled_ms = chorus_now_ms();

    long long prior = prior_deliveries(ch, d);
    if (prior >= ch->delivery_limit) {
        snprintf(d->error, sizeof(d->error),
                 "delivered %lld times without being settled (the consumer died or lost its "
                 "connection each time); consume.delivery.limit is %d", prior, ch->delivery_limit);
        chorus__log(ch, CHORUS_LOG_WARNING, "delivery on '%s': %s", d->routing_key, d->error);
        dead_letter(d, "delivery-limit");
        return NULL;
    }
    if (!ch->topo.quorum && d->redelivered) {
        to(d, CHORUS__DE_RECOUNT); /* counted, and handled when it comes back */
        return NULL;
    }

    chorus_error_t *perr = NULL;
    chorus_err_t rc = chorus__envelope_parse(d->msg.body.bytes, d->msg.body.len, &ch->limits,
                                             ch->max_decoded, &d->env, &perr);
    if (rc) {
        snprintf(d->error, sizeof(d->error), "%s", chorus_error_string(perr));
        chorus_error_destroy(perr);
        chorus__log(ch, CHORUS_LOG_WARNING, "malformed delivery on '%s': %s",
                    d->routing_key, d->error);
        dead_letter(d, "malformed");
        return NULL;
    }
    const chorus__handler_t *hd = find_handler(ch, chorus_envelope_event_type(d->env));
    if (!hd) {
        snprintf(d->error, sizeof(d->error), "no handler for event type '%s'",
                 chorus_envelope_event_type(d->env));
        chorus__log_env(ch, CHORUS_LOG_WARNING, d->env, "%s", d->error);
        dead_letter(d, "no-handler");
        return NULL;
    }
    if (!admissible(ch, d, hd, h))
        return NULL;
    if ((rc = chorus__upcast(ch, d->env, &perr)) != CHORUS_OK) {
        snprintf(d->error, sizeof(d->error), "%s", chorus_error_string(perr));
        chorus_error_destroy(perr);
        chorus__log_env(ch, CHORUS_LOG_WARNING, d->env, "%s", d->error);
        dead_letter(d, "malformed");
        return NULL;
    }
    /* the declared contract of its data, before any handler sees it */
    char why[400];
    if (!chorus__saga_data_ok(ch, d->env, why, sizeof(why))) {
        snprintf(d->error, sizeof(d->error), "%s", why);
        chorus__log_env(ch, CHORUS_LOG_WARNING, d->env, "invalid data: %s", d->error);
        dead_letter(d, "invalid-data");
        return NULL;
    }
    to(d, CHORUS__DE_DECODE);
    return hd;
}

/* Forgets what decode() found, so the delivery can wait for a later
 * batch without holding its decoded envelope. */
static void undecode(chorus_delivery_t *d) {
    chorus_envelope_destroy(d->env);
    d->env = NULL;
    d->hd = NULL;
    d->reason = NULL;
    d->error[0] = '\0';
    to(d, CHORUS__DE_UNDECODE);
}

static void handle_plain(chorus_t *ch, chorus_delivery_t *d) {
    if (d->state != CHORUS__D_DECODED)
        return;
    set_outcome(ch, d, chorus__call_handler(ch, d, d->hd));
    if (d->bad_emit) {
        dead_letter(d, "invalid-emit");
        chorus__log_env(ch, CHORUS_LOG_ERR, d->env, "%s", d->error);
    }
}

/* What became of one delivery in a batch transaction. */
typedef enum {
    ONE_DONE,    /* it has its outcome; the transaction goes on */
    ONE_SPLIT,   /* it conflicted with another transaction: commit those
                    before it, and run it again in a transaction of its own */
    ONE_BROKEN,  /* the transaction is aborted: the batch runs again, careful */
    ONE_LOST     /* the connection died */
} one_rc_t;

/* A failed delivery leaves nothing: its savepoint, its events and (claimed
 * for the whole batch) its inbox row are undone. */
static void undo(chorus_tx_t *tx, chorus_delivery_t *d) {
    chorus__tx_undo(tx);
    if (!tx->careful && d->fresh)
        chorus__inbox_unclaim(tx, chorus_envelope_event_id(d->env));
}

/*
 * One delivery inside the batch transaction: the inbox's verdict, then the
 * handler (behind its saga guard).  A conflict (another writer took the
 * aggregate version, a serialization failure, a deadlock) undoes it and
 * runs it again -- at once when it is the first of its transaction,
 * otherwise in a transaction of its own after the ones before it commit
 * (their row locks may be what the other side waits for) -- a bounded
 * number of times.
 */
static one_rc_t handle_durable(chorus_t *ch, chorus_tx_t *tx, chorus_delivery_t *d, bool first,
                               long *runs) {
    long max_runs = 1 + chorus__conf_int(ch->conf, "store.conflict.retries");
    for (;;) {
        ++*runs;
        d->ran = false;
        chorus__tx_enter(tx, d, !first);
        d->tx = tx;
        if (tx->careful) {
            int claim = chorus__inbox_claim(tx, chorus_envelope_event_id(d->env));
            if (tx->lost)
                return ONE_LOST;
            if (claim < 0 && tx->conflict && !first && !tx->broken) {
                /* its lock wait ran out (a redelivered copy another
                 * instance is handling): first in a transaction of its own */
                chorus__tx_undo(tx);
                ch->stats.splits++;
                return ONE_SPLIT;
            }
            if (claim < 0)
                return ONE_BROKEN; /* even in its savepoint: give the batch back */
            d->fresh = claim == 1;
        }
        if (!d->fresh && !chorus__mutated(ch, CHORUS__MUT_INBOX_BYPASS)) {
            to(d, CHORUS__DE_DUPLICATE);
            chorus__tx_keep(tx);
            return ONE_DONE;
        }
        chorus_outcome_t out = chorus__saga_deliver(ch, d, d->hd);
        if (tx->lost)
            return ONE_LOST;
        if (tx->broken) /* even careful: its savepoint could not save it */
            return ONE_BROKEN;
        if (tx->conflict && *runs < max_runs) {
            ch->stats.conflicts++;
            chorus__log_env(ch, CHORUS_LOG_INFO, d->env, "conflict; running the handler again%s",
                            first ? "" : " in a transaction of its own");
            /* its effects go; its inbox claim stays for the run again (or,
             * split off, unclaim_from() takes it back with the others') */
            chorus__tx_undo(tx);
            d->error[0] = '\0';
            if (!first) {
                ch->stats.splits++;
                return ONE_SPLIT;
            }
            continue;
        }
        if (tx->invalid_emit) {
            /* the handler's output breaks the declared contract: a bug no
             * retry mends, and nothing of it may leave */
            chorus__log_env(ch, CHORUS_LOG_ERR, d->env, "%s", d->error);
            undo(tx, d);
            to(d, CHORUS__DE_REFUSE);
            d->reason = "invalid-emit";
            return ONE_DONE;
        }
        if (tx->too_large) {
            /* it would be too large on every attempt: no retry helps */
            snprintf(d->error, sizeof(d->error), "the handler emitted an event larger than "
                     "message.max.bytes");
            out = CHORUS_REJECT;
        } else if (tx->conflict) {
            snprintf(d->error, sizeof(d->error), "still conflicting after %ld runs", *runs);
            out = CHORUS_RETRY_LATER;
        } else if (out == CHORUS_HANDLED && tx->failed) {
            snprintf(d->error, sizeof(d->error), "an SQL statement of the handler failed%s%s",
                     tx->err.rc ? ": " : "", tx->err.rc ? tx->err.message : "");
            out = CHORUS_RETRY_LATER;
        }
        set_outcome(ch, d, out);
        if (out == CHORUS_HANDLED) {
            d->row_from = tx->rows_mark;
            d->nrows = tx->nrows - tx->rows_mark;
            chorus__tx_keep(tx);
        } else {
            undo(tx, d);
        }
        return ONE_DONE;
    }
}

typedef enum { BATCH_OK, BATCH_AGAIN, BATCH_STORE_DOWN } batch_rc_t;

/* The committed transaction's rows join the batch's, each delivery's
 * range moved along. */
static bool adopt_rows(chorus__batch_t *b, chorus_tx_t *tx, chorus_delivery_t *from,
                       const chorus_delivery_t *to_excl) {
    if (b->nrows + tx->nrows > b->caprows) {
        size_t cap = (b->nrows + tx->nrows) * 2;
        chorus__row_t *r = realloc(b->rows, cap * sizeof(*r));
        if (!r)
            return false;
        b->rows = r;
        b->caprows = cap;
    }
    if (tx->nrows > 0) /* tx->rows may be NULL then */
        memcpy(b->rows + b->nrows, tx->rows, tx->nrows * sizeof(*tx->rows));
    for (chorus_delivery_t *d = from; d != to_excl; d = d->next)
        if (is_handled(d))
            d->row_from += b->nrows;
    b->nrows += tx->nrows;
    tx->nrows = 0; /* moved, not freed */
    return true;
}

/* The batch's inbox rows, in one statement at the start of a transaction:
 * every delivery from @p d on. */
static bool claim_from(chorus_tx_t *tx, chorus_delivery_t *d) {
    size_t n = 0;
    for (chorus_delivery_t *e = d; e; e = e->next)
        n += e->state == CHORUS__D_DECODED;
    if (n == 0)
        return true;
    const char **ids = calloc(n, sizeof(*ids));
    bool *fresh = calloc(n, sizeof(*fresh));
    bool ok = ids && fresh;
    size_t k = 0;
    for (chorus_delivery_t *e = d; ok && e; e = e->next)
        if (e->state == CHORUS__D_DECODED)
            ids[k++] = chorus_envelope_event_id(e->env);
    ok = ok && chorus__inbox_claim_all(tx, ids, n, fresh);
    k = 0;
    for (chorus_delivery_t *e = d; ok && e; e = e->next)
        if (e->state == CHORUS__D_DECODED)
            e->fresh = fresh[k++];
    free(ids);
    free(fresh);
    if (!ok && !tx->lost)
        tx->broken = true;
    return ok;
}

/* Takes back the claims of deliveries not handled in this transaction. */
static void unclaim_from(chorus_tx_t *tx, chorus_delivery_t *d) {
    for (; d; d = d->next)
        if (d->state == CHORUS__D_DECODED && d->fresh)
            chorus__inbox_unclaim(tx, chorus_envelope_event_id(d->env));
}

/*
 * The whole batch in as few transactions as conflicts allow (one when
 * nothing conflicts).  @p careful: every delivery in a savepoint from its
 * start, its inbox row claimed inside it, statements not merged -- the
 * slow, exact way, for a batch whose fast run broke its transaction.
 */
static batch_rc_t process_durable(chorus_t *ch, chorus__batch_t *b, bool careful) {
    chorus_delivery_t *d = b->resume;
    while (d) {
        chorus_tx_t *tx = &b->tx;
        /* what a failed run left (its rows, when its COMMIT failed) */
        chorus__tx_clear(tx);
        if (chorus__tx_open(ch, tx, careful) != CHORUS_OK) {
            chorus__store_lost(ch, "BEGIN failed");
            return BATCH_STORE_DOWN;
        }
        if (!careful && !claim_from(tx, d)) {
            chorus__tx_abort(tx);
            if (tx->lost)
                chorus__store_lost(ch, "the inbox claim failed");
            return tx->lost ? BATCH_STORE_DOWN : BATCH_AGAIN;
        }
        chorus_delivery_t *start = d;
        one_rc_t orc = ONE_DONE;
        bool first = true; /* no delivery of this transaction handled yet */
        for (; d; d = d->next) {
            if (d->state != CHORUS__D_DECODED)
                continue;
            orc = handle_durable(ch, tx, d, first, &d->runs);
            first = false;
            d->tx = NULL;
            if (orc != ONE_DONE)
                break;
        }
        if (orc == ONE_LOST) {
            chorus__tx_abort(tx);
            chorus__store_lost(ch, "a statement failed");
            return BATCH_STORE_DOWN;
        }
        if (orc == ONE_BROKEN) {
            chorus__tx_abort(tx);
            return BATCH_AGAIN;
        }
        if (orc == ONE_SPLIT && !careful)
            unclaim_from(tx, d); /* claimed with this transaction, handled in the next */
        chorus__crash_point(ch, "before-commit");
        chorus_err_t rc = chorus__outbox_commit(tx);
        if (rc == CHORUS_ERR_CONN_CLOSED) {
            chorus__store_lost(ch, "COMMIT failed");
            return BATCH_STORE_DOWN;
        }
        if (rc) {
            if (rc == CHORUS_ERR_CONFLICT)
                ch->stats.conflicts++;
            return BATCH_AGAIN;
        }
        for (chorus_delivery_t *e = start; ch->link->handled && e != d; e = e->next)
            if (e->ran && e->state == CHORUS__D_HANDLED)
                ch->link->handled(ch, e->env);
        chorus__crash_point(ch, "after-commit");
        ch->stats.transactions++;
        b->resume = d; /* what came before is committed: it stays */
        if (!adopt_rows(b, tx, start, d)) {
            /* out of memory: the rows are committed; the relay sends them */
            ch->store.relay_wanted = true;
            for (chorus_delivery_t *e = start; e != d; e = e->next)
                e->nrows = 0;
        }
        chorus__tx_clear(tx);
    }
    return BATCH_OK;
}

/* What handling a delivery in a batch transaction left on it, undone so
 * the batch can run again (its decoding stays). */
static void unhandle(chorus_delivery_t *d) {
    if (d->state == CHORUS__D_RECEIVED || d->state == CHORUS__D_REFUSED ||
        d->state == CHORUS__D_RECOUNT || !d->hd)
        return;
    to(d, CHORUS__DE_RESET);
    d->reason = NULL;
    d->error[0] = '\0';
    d->fresh = false;
    d->row_from = d->nrows = 0;
    d->runs = 0;
}

/*
 * A batch whose transaction failed as a whole (a serialization failure at
 * COMMIT, a statement outside any savepoint) runs again here, careful, with
 * the deliveries still held, a bounded number of times: handing it back to
 * the broker would count against every delivery's delivery limit, though
 * nothing was wrong with them.  Transactions of it that committed before
 * stay committed: their deliveries are duplicates now, as the inbox says.
 */
static batch_rc_t process_durable_again(chorus_t *ch, chorus__batch_t *b) {
    long runs = 1 + chorus__conf_int(ch->conf, "store.conflict.retries");
    b->resume = b->head;
    batch_rc_t brc = process_durable(ch, b, false);
    for (long run = 1; brc == BATCH_AGAIN && run < runs; run++) {
        for (chorus_delivery_t *d = b->resume; d; d = d->next)
            unhandle(d);
        ch->stats.careful_runs++;
        brc = process_durable(ch, b, true);
    }
    return brc;
}

/* ---- copies for retry, DLQ and counting (lock held) ----------------------- */

/* A header chorus puts on a copy. */
typedef struct {
    const char *key;
    bool is_int;
    const char *s;
    long long i;
} addh_t;

static bool key_is(const amqp_bytes_t *k, const char *key) {
    size_t n = strlen(key);
    return k->len == n && (n == 0 || memcmp(k->bytes, key, n) == 0);
}

static bool pool_dup(amqp_pool_t *pool, const char *s, size_t n, amqp_bytes_t *out) {
    *out = amqp_empty_bytes;
    if (n == 0)
        return true;
    amqp_pool_alloc_bytes(pool, n, out);
    if (!out->bytes)
        return false;
    memcpy(out->bytes, s, n);
    return true;
}

static bool set_entry(amqp_pool_t *pool, amqp_table_entry_t *e, const addh_t *a) {
    e->key = amqp_cstring_bytes(a->key); /* static text */
    if (a->is_int) {
        e->value.kind = AMQP_FIELD_KIND_I64;
        e->value.value.i64 = a->i;
        return true;
    }
    e->value.kind = AMQP_FIELD_KIND_UTF8;
    return pool_dup(pool, a->s, strlen(a->s), &e->value.value.bytes);
}

/* Original headers a copy never carries: the counters of the queue the
 * message is leaving, and whatever chorus sets anew. */
static bool replaced(const amqp_bytes_t *k, const addh_t *add, int nadd, bool own) {
    if (key_is(k, CHORUS__H_DELIVERY_COUNT) || key_is(k, CHORUS__H_REDELIVERIES) ||
        key_is(k, CHORUS__H_DROPPED))
        return true;
    /* chorus' own headers from another producer: forged, not carried */
    if (!own && k->len >= 9 && memcmp(k->bytes, "x-chorus-", 9) == 0)
        return true;
    for (int i = 0; i < nadd; i++)
        if (key_is(k, add[i].key))
            return true;
    return false;
}

typedef struct {
    int index;
    size_t size;
} sized_t;

static int by_size_desc(const void *a, const void *b) {
    const sized_t *x = a, *y = b;
    return x->size < y->size ? 1 : x->size > y->size ? -1 : x->index - y->index;
}

/* "a, b (and 12 more)": the names of the dropped headers, bounded; an
 * earlier copy's list (@p before) comes first, so no drop goes unrecorded. */
static void dropped_names(const amqp_table_t *orig, const bool *drop, const amqp_bytes_t *before,
                          char *out, size_t size) {
    size_t o = 0;
    int listed = 0, more = 0;
    out[0] = '\0';
    if (before && before->len)
        o += (size_t)snprintf(out, size, "%.*s", (int)(before->len < 600 ? before->len : 600),
                              (const char *)before->bytes), listed++;
    for (int i = 0; i < orig->num_entries; i++) {
        if (!drop[i])
            continue;
        const amqp_bytes_t *k = &orig->entries[i].key;
        if (o + k->len + 40 < size) {
            o += (size_t)snprintf(out + o, size - o, "%s%.*s", listed++ ? ", " : "", (int)k->len,
                                  (const char *)k->bytes);
        } else {
            more++;
        }
    }
    if (more)
        snprintf(out + o, size - o, " (and %d more)", more);
}

/* Builds the copy's table: the originals not omitted or dropped, then
 * @p add, then the dropped-names header when there is one. */
static bool build_table(chorus__pub_t *p, const amqp_table_t *orig, const bool *omit,
                        const bool *drop, const addh_t *add, int nadd, const char *names,
                        amqp_table_entry_t *e) {
    int k = 0;
    bool ok = true;
    for (int i = 0; i < orig->num_entries; i++)
        if (!omit[i] && !drop[i])
            e[k++] = orig->entries[i];
    for (int i = 0; i < nadd && ok; i++)
        ok = set_entry(&p->pool, &e[k++], &add[i]);
    if (ok && names[0])
        ok = set_entry(&p->pool, &e[k++], &(addh_t){CHORUS__H_DROPPED, false, names, 0});
    p->props.headers = (amqp_table_t){.num_entries = k, .entries = e};
    return ok;
}

/*
 * The headers of a copy: the original ones (cloned into the copy's pool,
 * less the replaced ones) followed by @p add, and -- when that would not
 * fit the connection's frame -- without the largest originals, named in
 * x-chorus-dropped-headers.  The excess is measured once and the largest
 * originals dropped in one pass (many small headers must not make this
 * quadratic under the connection lock).  False when out of memory.
 */
static bool copy_headers(chorus_t *ch, chorus__pub_t *p, const addh_t *add, int nadd, bool own) {
    amqp_table_t orig = p->props.headers; /* the clone made by chorus__props_clone */
    int n = orig.num_entries;
    bool *omit = calloc((size_t)n + 1, sizeof(*omit)), *drop = calloc((size_t)n + 1, sizeof(*drop));
    sized_t *order = calloc((size_t)n + 1, sizeof(*order));
    amqp_table_entry_t *e = amqp_pool_alloc(&p->pool, sizeof(*e) * (size_t)(n + nadd + 1));
    bool ok = omit && drop && order && e;
    int candidates = 0;
    const amqp_bytes_t *before = NULL;
    for (int i = 0; ok && i < n; i++) {
        const amqp_table_entry_t *o = &orig.entries[i];
        if (own && key_is(&o->key, CHORUS__H_DROPPED) && o->value.kind == AMQP_FIELD_KIND_UTF8)
            before = &o->value.value.bytes;
        if ((omit[i] = replaced(&o->key, add, nadd, own)))
            continue;
        size_t v;
        /* what cannot be sent at all goes first */
        bool sendable = o->key.len <= 255 && chorus__field_size(&o->value, 1, &v, NULL, 0);
        order[candidates++] = (sized_t){i, sendable ? v + o->key.len + 1 : SIZE_MAX};
    }
    if (ok)
        qsort(order, (size_t)candidates, sizeof(*order), by_size_desc);
    int frame_max = ch->link->frame_max(ch);
    size_t room = (size_t)frame_max - CHORUS__HEADER_FRAME_OVERHEAD, size = 0;
    char names[1024] = "";
    if (before)
        dropped_names(&orig, drop, before, names, sizeof(names));
    ok = ok && build_table(p, &orig, omit, drop, add, nadd, names, e);
    if (ok && !chorus__props_size(&p->props, &size, NULL, 0))
        size = SIZE_MAX;
    int next = 0;
    if (ok && size > room) {
        /* What cannot be sent at all (sorted first) goes in any case;
         * then the largest, until the excess and the room of the
         * dropped-names header itself (at its longest) are freed. */
        for (; next < candidates && order[next].size == SIZE_MAX; next++)
            drop[order[next].index] = true;
        ok = build_table(p, &orig, omit, drop, add, nadd, "", e) &&
             chorus__props_size(&p->props, &size, NULL, 0);
        size_t need = ok && size > room ? size - room + sizeof(names) + 40 : 0, freed = 0;
        for (; ok && next < candidates && freed < need; next++) {
            drop[order[next].index] = true;
            freed += order[next].size;
        }
        dropped_names(&orig, drop, before, names, sizeof(names));
        ok = ok && build_table(p, &orig, omit, drop, add, nadd, names, e);
    }
    /* The estimate leaves room to spare; should it not, one more at a time. */
    while (ok && !chorus__props_fit(&p->props, frame_max, NULL, 0) && next < candidates) {
        drop[order[next++].index] = true;
        dropped_names(&orig, drop, before, names, sizeof(names));
        ok = build_table(p, &orig, omit, drop, add, nadd, names, e);
    }
    /* Chorus' own headers are bounded far below any frame, so this holds;
     * if it ever did not, the copy is refused here, never sent broken. */
    ok = ok && chorus__props_fit(&p->props, frame_max, NULL, 0);
    free(omit);
    free(drop);
    free(order);
    return ok;
}

/*
 * A copy of the delivery's message published by this service: original
 * body and properties, except user_id (ours: RabbitMQ checks it), no
 * per-message TTL (the target queue decides), persistent; the original's
 * verified producer in x-chorus-producer.  Its headers: copy_headers().
 */
static chorus__pub_t *make_copy(chorus_t *ch, chorus_delivery_t *d, addh_t *add, int nadd) {
    chorus__pub_t *p = chorus__pub_new();
    if (!p)
        return NULL;
    if (!chorus__props_clone(&d->msg.properties, &p->props, &p->pool))
        goto fail;
    char producer[256];
    verified_producer(ch, d, chorus_headers(ch, d), producer, sizeof(producer));
    add[nadd++] = (addh_t){CHORUS__H_PRODUCER, false, producer, 0};
    p->props._flags &= (amqp_flags_t)~AMQP_BASIC_EXPIRATION_FLAG;
    p->props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    if (!copy_headers(ch, p, add, nadd, own_copy(ch, d)))
        goto fail;
    p->body = amqp_bytes_malloc_dup(d->msg.body);
    if (d->msg.body.len && !p->body.bytes)
        goto fail;
    p->mandatory = true;
    p->waiter = &d->w;
    return p;
fail:
    chorus__pub_destroy(p);
    return NULL;
}

/* The routing key the delivery came with, or the one recorded on a copy. */
static const char *original_rk(const chorus_t *ch, const chorus_delivery_t *d, char *buf,
                               size_t size) {
    const amqp_table_entry_t *e = chorus__table_find(chorus_headers(ch, d), CHORUS__H_ORIG_RK);
    if (e && e->value.kind == AMQP_FIELD_KIND_UTF8) {
        snprintf(buf, size, "%.*s", (int)e->value.value.bytes.len,
                 (const char *)e->value.value.bytes.bytes);
        return buf;
    }
    return d->routing_key;
}

static chorus__pub_t *fault_copy(chorus_t *ch, chorus_delivery_t *d) {
    char ts[25], rk[CHORUS__NAME_MAX];
    chorus_format_timestamp(chorus_now_ms(), ts);
    addh_t add[10] = {
        {CHORUS__H_ORIG_RK, false, original_rk(ch, d, rk, sizeof(rk)), 0},
        {CHORUS__H_ORIG_Q, false, ch->topo.names.queue, 0},
        {CHORUS__H_REASON, false, d->reason, 0},
        {CHORUS__H_ERROR, false, d->error, 0},
        {CHORUS__H_TIME, false, ts, 0},
        {CHORUS__H_SERVICE, false, ch->service, 0},
        {CHORUS__H_ATTEMPTS, true, NULL, d->attempt},
    };
    chorus__pub_t *p = make_copy(ch, d, add, 7);
    if (p) {
        p->exchange = amqp_cstring_bytes(ch->topo.names.dlx);
        p->routing_key = amqp_cstring_bytes(ch->service);
    }
    return p;
}

static chorus__pub_t *retry_copy(chorus_t *ch, chorus_delivery_t *d) {
    chorus__retry_decision_t dec = chorus__retry_decide(&ch->retry, d->attempt);
    char rk[CHORUS__NAME_MAX];
    addh_t add[6] = {
        {CHORUS__H_ORIG_RK, false, original_rk(ch, d, rk, sizeof(rk)), 0},
        {CHORUS__H_ATTEMPT, true, NULL, dec.next_attempt},
        {CHORUS__H_LAST_ERROR, false, d->error, 0},
    };
    chorus__pub_t *p = make_copy(ch, d, add, 3);
    if (p) {
        p->exchange = amqp_cstring_bytes(ch->topo.names.retry_exchange);
        p->routing_key = amqp_cstring_bytes(ch->topo.names.retry[dec.delay_index]);
    }
    return p;
}

/* A classic queue's redelivered message, back to the queue with its count
 * (x-chorus-redeliveries), through the service's own retry exchange. */
static chorus__pub_t *recount_copy(chorus_t *ch, chorus_delivery_t *d) {
    char rk[CHORUS__NAME_MAX];
    addh_t add[6] = {
        {CHORUS__H_ORIG_RK, false, original_rk(ch, d, rk, sizeof(rk)), 0},
        {CHORUS__H_REDELIVERIES, true, NULL, prior_deliveries(ch, d)},
    };
    chorus__pub_t *p = make_copy(ch, d, add, 2);
    if (p) {
        p->exchange = amqp_cstring_bytes(ch->topo.names.retry_exchange);
        p->routing_key = amqp_cstring_bytes(ch->topo.names.queue);
    }
    return p;
}

static void send_for(chorus_t *ch, chorus_delivery_t *d, chorus__pub_t *p) {
    if (!p) {
        d->w.failed = true;
        return;
    }
    d->w.pending++;
    chorus_err_t rc = chorus__pub_send(ch, p);
    if (rc == CHORUS_ERR_STATE || rc == CHORUS_ERR_NOMEM || rc == CHORUS_ERR_TOO_LARGE) {
        d->w.pending--;
        d->w.failed = true;
        chorus__pub_destroy(p);
    }
}

/* The publishes of a handled delivery's emitted events, all made before
 * any is sent: an event too large to publish turns the delivery into a
 * dead letter (requeued, it would only fail again). */
static bool make_emits(chorus_t *ch, chorus_delivery_t *d, chorus__pub_t **pubs) {
    for (size_t i = 0; i < d->nemitted; i++) {
        char rk[CHORUS__NAME_MAX];
        snprintf(rk, sizeof(rk), "%s.%s", ch->service, chorus_envelope_event_type(d->emitted[i]));
        chorus__pub_t *p = chorus__pub_new();
        chorus_err_t rc = p ? chorus__pub_from_envelope(ch, p, d->emitted[i],
                                                        ch->topo.names.exchange, rk)
                            : CHORUS_ERR_NOMEM;
        if (rc == CHORUS_ERR_TOO_LARGE) {
            snprintf(d->error, sizeof(d->error), "the handler emitted %s larger than "
                     "message.max.bytes", chorus_envelope_event_type(d->emitted[i]));
            dead_letter(d, "rejected");
        }
        if (rc) {
            chorus__pub_destroy(p); /* it took no envelope */
            for (size_t k = 0; k < i; k++) { /* give the envelopes back */
                d->emitted[k] = pubs[k]->env;
                pubs[k]->env = NULL;
                chorus__pub_destroy(pubs[k]);
            }
            return false;
        }
        p->waiter = &d->w;
        pubs[i] = p;
    }
    for (size_t i = 0; i < d->nemitted; i++)
        d->emitted[i] = NULL; /* the publishes own them now */
    return true;
}

/* What a delivery's outcome sends: its events (durable: the committed rows
 * from memory; plain: made now), or a retry, DLQ or recount copy. */
static void send_outcome(chorus_t *ch, chorus__batch_t *b, chorus_delivery_t *d) {
    switch (d->state) {
    case CHORUS__D_RECOUNT:
        send_for(ch, d, recount_copy(ch, d));
        return;
    case CHORUS__D_HANDLED:
        if (d->nrows) { /* durable */
            chorus__outbox_send(ch, b->rows + d->row_from, d->nrows, &d->w);
            return;
        }
        if (!d->nemitted)
            return;
        break;
    case CHORUS__D_DEAD:
    case CHORUS__D_REFUSED:
        send_for(ch, d, fault_copy(ch, d));
        return;
    case CHORUS__D_RETRY:
        send_for(ch, d, retry_copy(ch, d));
        return;
    default: /* duplicates: nothing */
        return;
    }
    chorus__pub_t **pubs = calloc(d->nemitted, sizeof(*pubs));
    if (!pubs || !make_emits(ch, d, pubs)) {
        free(pubs);
        if (!d->reason) /* out of memory: it comes again */
            send_for(ch, d, NULL);
        else
            send_for(ch, d, fault_copy(ch, d));
        return;
    }
    for (size_t i = 0; i < d->nemitted; i++)
        send_for(ch, d, chorus__up(ch) ? pubs[i] : (chorus__pub_destroy(pubs[i]), NULL));
    free(pubs);
}

/* ---- the batch ----------------------------------------------------------- */

/* The one way a batch's state changes (batch.c has the table). */
static void batch_to(chorus_t *ch, chorus__batch_t *b, chorus__bevent_t ev) {
    int next = chorus__batch_next(b->state, ev);
    if (next < 0) {
        chorus__log(ch, CHORUS_LOG_ERR, "batch in state %s: transition %d refused",
                    chorus__bstate_name(b->state), (int)ev);
        return;
    }
    b->state = (chorus__bstate_t)next;
}

static bool batch_settled(const chorus__batch_t *b) {
    for (chorus_delivery_t *d = b->head; d; d = d->next)
        if (d->w.pending > 0)
            return false;
    return true;
}

static void count(chorus_t *ch, const chorus_delivery_t *d) {
    switch (d->state) {
    case CHORUS__D_DUPLICATE: ch->stats.duplicates++; break;
    case CHORUS__D_HANDLED: ch->stats.handled++; break;
    case CHORUS__D_DEAD:
    case CHORUS__D_REFUSED: ch->stats.dead_lettered++; break;
    case CHORUS__D_RETRY: ch->stats.retried++; break;
    default: break; /* a recount is counted when it comes back */
    }
}

/* Keeps @p d unacknowledged for @p ms before it goes back to the queue
 * (chorus__consumer_release_held); it counts against the prefetch meanwhile,
 * so refusals slow consumption down instead of spinning.  Out of memory: at
 * once. */
static int hold(chorus_t *ch, chorus_delivery_t *d, long ms) {
    if (ch->nheld == ch->capheld) {
        int cap = ch->capheld ? 2 * ch->capheld : 16;
        struct chorus__held_s *n = realloc(ch->held, (size_t)cap * sizeof(*n));
        if (!n)
            return ch->link->nack(ch, d->tag, true);
        ch->held = n;
        ch->capheld = cap;
    }
    ch->held[ch->nheld++] = (struct chorus__held_s){.tag = d->tag,
                                                    .due_ms = chorus__mono_ms() + ms};
    return AMQP_STATUS_OK;
}

void chorus__consumer_release_held(chorus_t *ch) {
    int64_t now = chorus__mono_ms();
    int kept = 0;
    for (int i = 0; i < ch->nheld; i++) {
        struct chorus__held_s *h = &ch->held[i];
        if (h->due_ms > now || !chorus__up(ch)) {
            ch->held[kept++] = *h;
            continue;
        }
        if (ch->link->nack(ch, h->tag, true) != AMQP_STATUS_OK) {
            chorus__conn_lost(ch, "nack failed");
            kept = 0;
            break;
        }
    }
    ch->nheld = kept;
}

/* Acks a settled batch: one multiple ack when every publish went well. */
static void ack_batch(chorus_t *ch, chorus__batch_t *b) {
    chorus__crash_point(ch, "before-ack");
    if (!chorus__up(ch))
        return; /* died there (a simulated participant) */
    bool all_ok = true;
    uint64_t last = 0;
    for (chorus_delivery_t *d = b->head; d; d = d->next) {
        all_ok = all_ok && !d->w.failed;
        last = d->tag;
    }
    /* The delay starts again only after a quiet spell: other deliveries
     * acked meanwhile say nothing of the queue that refuses. */
    long hold_ms = 0;
    int64_t now = chorus__mono_ms();
    if (!all_ok)
        hold_ms = chorus__backoff_failed(&ch->pubfail, now);
    else if (ch->pubfail.cur_ms && now > ch->pubfail.next_ms + ch->pubfail.max_ms)
        chorus__backoff_reset(&ch->pubfail);
    /* a multiple ack would take held deliveries with it: one by one then */
    for (int i = 0; all_ok && i < ch->nheld; i++)
        all_ok = ch->held[i].tag > last;
    if (all_ok) {
        if (ch->link->ack(ch, last, true) != AMQP_STATUS_OK) {
            chorus__conn_lost(ch, "ack failed");
            return;
        }
        for (chorus_delivery_t *d = b->head; d; d = d->next)
            count(ch, d);
        ch->stats.batches++;
        batch_to(ch, b, CHORUS__BE_ACK);
        return;
    }
    for (chorus_delivery_t *d = b->head; d && chorus__up(ch); d = d->next) {
        int s;
        if (d->w.failed) {
            chorus__log_env(ch, CHORUS_LOG_WARNING, d->env,
                            "a publish it caused failed; returning it to the queue in %ld ms",
                            hold_ms);
            s = hold(ch, d, hold_ms);
        } else {
            s = ch->link->ack(ch, d->tag, false);
            count(ch, d);
        }
        if (s != AMQP_STATUS_OK)
            chorus__conn_lost(ch, "ack failed");
    }
    if (chorus__up(ch)) {
        ch->stats.batches++;
        batch_to(ch, b, CHORUS__BE_ACK);
    }
}

/* Gives deliveries back to the broker (nack, requeue): nothing of them is
 * acked, nothing dead-lettered; they come again. */
static void requeue(chorus_t *ch, chorus_delivery_t *head) {
    for (chorus_delivery_t *d = head; d && chorus__up(ch); d = d->next)
        if (d->gen == ch->consume_gen &&
            ch->link->nack(ch, d->tag, true) != AMQP_STATUS_OK)
            chorus__conn_lost(ch, "nack failed");
}

static void free_deliveries(chorus_delivery_t *d) {
    while (d) {
        chorus_delivery_t *next = d->next;
        chorus__delivery_free(d);
        d = next;
    }
}

static void batch_free(chorus__batch_t *b) {
    free_deliveries(b->head);
    chorus__tx_clear(&b->tx);
    for (size_t i = 0; i < b->nrows; i++)
        chorus__row_free(&b->rows[i]);
    free(b->rows);
    free(b);
}

/*
 * Takes the backlog as a batch, decoding each delivery in order.  When the
 * decoded envelopes would take more than "consume.batch.max.decoded.bytes",
 * the batch ends before the one that would pass the bound (the first is
 * always taken), which goes back to the head of the backlog undecoded, with
 * everything after it.
 */
static chorus__batch_t *take_batch(chorus_t *ch) {
    chorus__batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->head = ch->backlog_head;
    ch->backlog_head = ch->backlog_tail = NULL;
    ch->backlog_len = 0;
    size_t total = 0;
    for (chorus_delivery_t *d = b->head, *prev = NULL; d; prev = d, d = d->next) {
        d->hd = decode(ch, d);
        size_t size = d->env ? chorus__envelope_decoded(d->env) : 0;
        if (prev && total + size > ch->batch_max_decoded) {
            undecode(d);
            prev->next = NULL;
            ch->backlog_head = d;
            for (; d; d = d->next) {
                ch->backlog_tail = d;
                ch->backlog_len++;
            }
            break;
        }
        total += size;
        b->n++;
    }
    return b;
}

/* TAKEN -> HANDLED (or REQUEUED): the handlers, and for a durable
 * participant the transaction.  No lock: heartbeats go on meanwhile. */
static void handle_batch(chorus_t *ch, chorus__batch_t *b) {
    batch_rc_t brc = BATCH_OK;
    if (!ch->store.enabled) {
        for (chorus_delivery_t *d = b->head; d; d = d->next)
            handle_plain(ch, d);
    } else if (ch->store.paused || !ch->store.up) {
        brc = BATCH_STORE_DOWN;
    } else {
        brc = process_durable_again(ch, b);
    }
    chorus__lock(ch);
    if (chorus__batch_done(b->state)) {
        /* lost meanwhile (void): the broker has them back already */
    } else if (brc == BATCH_OK) {
        batch_to(ch, b, CHORUS__BE_HANDLE);
    } else {
        /* What committed stays committed: its deliveries are duplicates
         * when they come back.  The rest was rolled back. */
        requeue(ch, b->head);
        batch_to(ch, b, CHORUS__BE_GIVE_BACK);
        if (brc == BATCH_STORE_DOWN)
            chorus__consume_pause(ch);
    }
    chorus__unlock(ch);
}

/* HANDLED -> SENT: every publish of the batch at once (lock held). */
static void send_batch(chorus_t *ch, chorus__batch_t *b) {
    for (chorus_delivery_t *d = b->head; d && chorus__up(ch); d = d->next) {
        send_outcome(ch, b, d);
        /* its count goes back to our own queue: it must not be handled
         * (and die) again before this batch's ack says it was counted */
        if (d->state == CHORUS__D_RECOUNT)
            b->alone = true;
    }
    b->due_ms = chorus__mono_ms() + chorus__conf_int(ch->conf, "amqp.rpc.timeout.ms");
    if (chorus__up(ch))
        batch_to(ch, b, CHORUS__BE_SEND);
}

/* At most this many batches between TAKEN and ACKED: one waiting for its
 * confirms while the next is handled. */
#define MAX_INFLIGHT 2

bool chorus__consumer_waiting(const chorus_t *ch) {
    for (const chorus__batch_t *b = ch->inflight; b; b = b->next)
        if (b->state == CHORUS__B_SENT)
            return true;
    return false;
}

int64_t chorus__consumer_due(const chorus_t *ch) {
    int64_t due = INT64_MAX;
    for (int i = 0; i < ch->nheld; i++)
        if (ch->held[i].due_ms < due)
            due = ch->held[i].due_ms;
    for (const chorus__batch_t *b = ch->inflight; b; b = b->next)
        if (b->state == CHORUS__B_SENT && b->due_ms < due)
            due = b->due_ms;
    return due;
}

void chorus__consumer_lost(chorus_t *ch) {
    ch->nheld = 0; /* the broker gives them back with the channel */
    for (chorus__batch_t *b = ch->inflight; b; b = b->next) {
        if (chorus__batch_done(b->state))
            continue;
        if (b->nrows && b->state != CHORUS__B_SENT && b->state != CHORUS__B_SETTLED)
            ch->store.relay_wanted = true; /* committed, not sent */
        batch_to(ch, b, CHORUS__BE_LOSE);
    }
}

bool chorus__consumer_room(const chorus_t *ch) {
    /* blocked: a new batch would only hold publishes; deliveries wait */
    if (ch->ninflight >= MAX_INFLIGHT || ch->draining || ch->blocked)
        return false;
    for (const chorus__batch_t *b = ch->inflight; b; b = b->next)
        if (b->alone)
            return false;
    return true;
}

void chorus__consumer_free(chorus_t *ch) {
    while (ch->inflight) {
        chorus__batch_t *b = ch->inflight;
        ch->inflight = b->next;
        batch_free(b);
    }
    ch->ninflight = 0;
}

/* Settled batches acked, oldest first (a multiple ack covers every tag
 * before it: a younger batch waits for the older ones), and finished ones
 * freed.  Lock held. */
static void advance(chorus_t *ch) {
    int64_t now = chorus__mono_ms();
    for (chorus__batch_t *b = ch->inflight; b && chorus__up(ch); b = b->next) {
        if (b->state == CHORUS__B_SENT && batch_settled(b))
            batch_to(ch, b, CHORUS__BE_SETTLE);
        else if (b->state == CHORUS__B_SENT && ch->blocked)
            b->due_ms = now + 1000; /* confirms are not late while the broker blocks */
        else if (b->state == CHORUS__B_SENT && now >= b->due_ms) {
            chorus__conn_lost(ch, "publisher confirms timed out");
            break;
        }
    }
    /* Tags of an older consumer (before a reconnect or a reopened channel)
     * mean nothing now: those deliveries come again. */
    for (chorus__batch_t *b = ch->inflight; b; b = b->next)
        if (!chorus__batch_done(b->state) && b->head && b->head->gen != ch->consume_gen)
            batch_to(ch, b, CHORUS__BE_LOSE);
    while (ch->inflight && chorus__up(ch) && ch->inflight->state == CHORUS__B_SETTLED)
        ack_batch(ch, ch->inflight);
    while (ch->inflight && chorus__batch_done(ch->inflight->state)) {
        chorus__batch_t *b = ch->inflight;
        ch->inflight = b->next;
        ch->ninflight--;
        batch_free(b);
    }
    /* an older batch still waiting: the ones after it wait too */
    while (ch->inflight && chorus__up(ch) && ch->inflight->state == CHORUS__B_SETTLED)
        ack_batch(ch, ch->inflight);
}

void chorus__consumer_process(chorus_t *ch) {
    chorus__lock(ch);
    advance(ch);
    bool room = chorus__consumer_room(ch) && ch->backlog_head && chorus__up(ch) &&
                !(ch->store.enabled && ch->store.paused);
    chorus__unlock(ch);
    if (!room)
        return;
    chorus__batch_t *b = take_batch(ch);
    if (!b)
        return; /* out of memory: the backlog waits */
    /* appended now: a loss while it is handled voids it too */
    chorus__batch_t **tail = &ch->inflight;
    while (*tail)
        tail = &(*tail)->next;
    *tail = b;
    ch->ninflight++;
    handle_batch(ch, b);
    chorus__lock(ch);
    if (b->state == CHORUS__B_HANDLED && chorus__up(ch))
        send_batch(ch, b);
    advance(ch);
    chorus__unlock(ch);
}

void chorus__consume_pause(chorus_t *ch) {
    ch->store.paused = true;
    if (!chorus__up(ch) || !ch->consuming)
        return;
    char tag[128];
    snprintf(tag, sizeof(tag), "%s.%ld", ch->service, (long)getpid());
    char err[256];
    if (ch->link->cancel(ch, tag, err, sizeof(err))) {
        chorus__conn_lost(ch, err);
        return;
    }
    ch->consuming = false;
    /* What arrived before the cancel took effect goes back too. */
    chorus_delivery_t *late = ch->backlog_head;
    ch->backlog_head = ch->backlog_tail = NULL;
    ch->backlog_len = 0;
    requeue(ch, late);
    free_deliveries(late);
    chorus__log(ch, CHORUS_LOG_WARNING, "consumption paused until PostgreSQL is back");
}

void chorus__consume_resume(chorus_t *ch) {
    if (!ch->store.paused || !chorus__up(ch) || !ch->store.up)
        return;
    if (ch->nhandlers == 0 || chorus__consume_start(ch) == CHORUS_OK) {
        ch->store.paused = false;
        chorus__log(ch, CHORUS_LOG_NOTICE, "PostgreSQL is back; consuming again");
    }
}

void chorus__crash_point(chorus_t *ch, const char *point) {
    if (ch->crash_point && strcmp(ch->crash_point, point) == 0)
        ch->link->crash(ch, point);
}

/* ---- the handler's API --------------------------------------------------- */

chorus_err_t chorus_emit(chorus_delivery_t *d, chorus_envelope_t *env) {
    if (!d || !env || !d->env) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_INVALID_ARG;
    }
    if (d->ch->store.enabled) {
        if (!d->tx) { /* outside its handler */
            chorus_envelope_destroy(env);
            return CHORUS_ERR_STATE;
        }
        return chorus__emit(d->tx, env); /* in the handler's transaction */
    }
    chorus_err_t rc = chorus__inherit(d, env);
    if (!rc && (rc = chorus__saga_check_emit(d->ch, d, env, "not emitted")) == CHORUS_ERR_SCHEMA)
        d->bad_emit = true;
    if (rc) {
        chorus_envelope_destroy(env);
        return rc;
    }
    if (d->nemitted == d->capemitted) {
        size_t ncap = d->capemitted ? d->capemitted * 2 : 4;
        chorus_envelope_t **n = realloc(d->emitted, ncap * sizeof(*n));
        if (!n) {
            chorus_envelope_destroy(env);
            return CHORUS_ERR_NOMEM;
        }
        d->emitted = n;
        d->capemitted = ncap;
    }
    d->emitted[d->nemitted++] = env;
    return CHORUS_OK;
}

int chorus_delivery_attempt(const chorus_delivery_t *d) { return d->attempt; }
int chorus_delivery_redelivered(const chorus_delivery_t *d) { return d->redelivered; }
const char *chorus_delivery_routing_key(const chorus_delivery_t *d) {
    return d->routing_key;
}

void chorus_delivery_set_error(chorus_delivery_t *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->error, sizeof(d->error), fmt, ap);
    va_end(ap);
}
