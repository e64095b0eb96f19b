/*
 * consumer.c - what happens to each delivery.
 *
 *   backlog (filled by the dispatcher, up to "consume.batch.max")
 *      |  without the connection lock, so heartbeats go on:
 *      v
 *   decode + validate envelope --bad--> DLQ "malformed" (no retries)
 *      |
 *   handler for event_type? --none--> DLQ "no-handler"
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
 */
#include "chorus_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

void chorus__delivery_free(chorus_delivery_t *d) {
    if (!d)
        return;
    chorus__tx_clear(&d->tx);
    free(d->routing_key);
    amqp_destroy_message(&d->msg);
    chorus_envelope_destroy(d->env);
    for (size_t i = 0; i < d->nemitted; i++)
        chorus_envelope_destroy(d->emitted[i]);
    free(d->emitted);
    free(d);
}

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
    amqp_basic_qos(ch->st, CHORUS__CH_CONSUME, 0, (uint16_t)ch->topo.prefetch, 0);
    chorus_err_t rc = chorus__amqp_reply_error(ch->st, CHORUS__CH_CONSUME,
                                               amqp_get_rpc_reply(ch->st),
                                               "basic.qos", err, sizeof(err));
    if (rc)
        goto fail;
    char tag[128];
    snprintf(tag, sizeof(tag), "%s.%ld", ch->service, (long)getpid());
    amqp_basic_consume(ch->st, CHORUS__CH_CONSUME,
                       amqp_cstring_bytes(ch->topo.names.queue),
                       amqp_cstring_bytes(tag), 0, 0, 0, amqp_empty_table);
    rc = chorus__amqp_reply_error(ch->st, CHORUS__CH_CONSUME, amqp_get_rpc_reply(ch->st),
                                  "basic.consume", err, sizeof(err));
    if (rc)
        goto fail;
    ch->consuming = true;
    ch->consume_gen++;
    return CHORUS_OK;
fail:
    chorus__log(ch, CHORUS_LOG_ERR, "%s", err);
    return rc;
}

/* ---- handling (no lock) -------------------------------------------------- */

static const chorus__handler_t *find_handler(const chorus_t *ch, const char *type) {
    for (size_t i = 0; i < ch->nhandlers; i++)
        if (strcmp(ch->handlers[i].event_type, type) == 0)
            return &ch->handlers[i];
    return NULL;
}

static void dead_letter(chorus_delivery_t *d, const char *reason) {
    d->outcome = CHORUS_REJECT;
    d->reason = reason;
}

/* Records what the handler decided: retries run out become DLQ. */
static void set_outcome(chorus_t *ch, chorus_delivery_t *d, chorus_outcome_t out) {
    d->reason = NULL;
    if (out == CHORUS_HANDLED) {
        d->outcome = CHORUS_HANDLED;
        return;
    }
    if (out == CHORUS_RETRY_LATER) {
        d->outcome = CHORUS_RETRY_LATER;
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

/* Decodes, validates and upcasts the envelope and finds its handler; NULL
 * (and the delivery marked for the DLQ) when any of that fails. */
static const chorus__handler_t *decode(chorus_t *ch, chorus_delivery_t *d) {
    const amqp_table_t *h = (d->msg.properties._flags & AMQP_BASIC_HEADERS_FLAG)
                                ? &d->msg.properties.headers : NULL;
    long long attempt = chorus__table_int(h, CHORUS__H_ATTEMPT, 1);
    d->attempt = attempt < 1 ? 1 : attempt > 1000000 ? 1000000 : (int)attempt;
    d->handled_ms = chorus_now_ms();

    chorus_error_t *perr = NULL;
    chorus_err_t rc = chorus_envelope_parse(d->msg.body.bytes, d->msg.body.len,
                                            &ch->limits, &d->env, &perr);
    if (!rc)
        rc = chorus__upcast(ch, d->env, &perr);
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
    }
    return hd;
}

static chorus_outcome_t call_handler(chorus_t *ch, chorus_delivery_t *d,
                                     const chorus__handler_t *hd) {
    uint64_t t0 = chorus__mono_ns();
    chorus_outcome_t out = hd->fn(ch, d, d->env, hd->opaque);
    ch->stats.handler_ns += chorus__mono_ns() - t0;
    int64_t lag = d->handled_ms - chorus_envelope_timestamp_ms(d->env);
    if (lag > 0)
        ch->stats.propagation_ms += (uint64_t)lag;
    return out;
}

static void handle_plain(chorus_t *ch, chorus_delivery_t *d) {
    const chorus__handler_t *hd = decode(ch, d);
    if (hd)
        set_outcome(ch, d, call_handler(ch, d, hd));
}

/*
 * One delivery inside the batch transaction, in its own savepoint: the
 * inbox row, then the handler.  A conflict (another writer took the
 * aggregate version, a serialization failure, a deadlock) undoes the
 * savepoint and runs the handler again at once, a bounded number of times.
 */
static void handle_durable(chorus_t *ch, chorus_delivery_t *d, const chorus__handler_t *hd) {
    chorus_tx_t *tx = &d->tx;
    long max_runs = 1 + chorus__conf_int(ch->conf, "store.conflict.retries");
    for (long run = 1;; run++) {
        if (!chorus__tx_savepoint(tx))
            return;
        int claim = chorus__inbox_claim(tx, chorus_envelope_event_id(d->env));
        if (claim == 0) {
            d->duplicate = true;
            chorus__tx_release(tx);
            return;
        }
        if (claim < 0) {
            chorus__tx_rollback_to(tx);
            snprintf(d->error, sizeof(d->error), "inbox insert failed");
            set_outcome(ch, d, CHORUS_RETRY_LATER);
            return;
        }
        chorus_outcome_t out = call_handler(ch, d, hd);
        if (tx->lost)
            return;
        if (tx->conflict && run < max_runs) {
            ch->stats.conflicts++;
            chorus__log_env(ch, CHORUS_LOG_INFO, d->env, "conflict; running the handler again");
            chorus__tx_rollback_to(tx);
            tx->conflict = false;
            d->error[0] = '\0';
            continue;
        }
        if (tx->conflict) {
            snprintf(d->error, sizeof(d->error), "still conflicting after %ld runs", run);
            out = CHORUS_RETRY_LATER;
        } else if (out == CHORUS_HANDLED && tx->failed) {
            snprintf(d->error, sizeof(d->error), "an SQL statement of the handler failed");
            out = CHORUS_RETRY_LATER;
        }
        set_outcome(ch, d, out);
        if (out == CHORUS_HANDLED)
            chorus__tx_release(tx);
        else
            chorus__tx_rollback_to(tx);
        return;
    }
}

typedef enum { BATCH_OK, BATCH_AGAIN, BATCH_STORE_DOWN } batch_rc_t;

/* The whole batch in one transaction; every delivery in a savepoint. */
static batch_rc_t process_durable(chorus_t *ch, chorus_delivery_t *batch) {
    chorus_tx_t btx;
    if (chorus__tx_open(ch, &btx) != CHORUS_OK) {
        chorus__store_lost(ch, "BEGIN failed");
        return BATCH_STORE_DOWN;
    }
    for (chorus_delivery_t *d = batch; d; d = d->next) {
        d->tx = btx;
        d->tx.d = d;
        const chorus__handler_t *hd = decode(ch, d);
        if (hd)
            handle_durable(ch, d, hd);
        if (d->tx.lost) {
            chorus__store_lost(ch, "a statement failed");
            return BATCH_STORE_DOWN;
        }
        if (d->tx.failed) { /* a savepoint could not be undone: start over */
            chorus__tx_abort(&btx);
            return BATCH_AGAIN;
        }
    }
    chorus__crash_point(ch, "before-commit");
    chorus_err_t rc = chorus__tx_finish(&btx);
    if (rc == CHORUS_ERR_CONN_CLOSED) {
        chorus__store_lost(ch, "COMMIT failed");
        return BATCH_STORE_DOWN;
    }
    if (rc) {
        if (rc == CHORUS_ERR_CONFLICT)
            ch->stats.conflicts++;
        return BATCH_AGAIN;
    }
    chorus__crash_point(ch, "after-commit");
    return BATCH_OK;
}

/* After the commit: publish what the batch wrote to the outbox. */
static void flush_batch_outbox(chorus_t *ch, chorus_delivery_t *batch) {
    size_t n = 0, cap = 0;
    int64_t *seqs = NULL;
    for (chorus_delivery_t *d = batch; d; d = d->next) {
        if (d->outcome != CHORUS_HANDLED || d->duplicate || d->tx.nseqs == 0)
            continue;
        if (n + d->tx.nseqs > cap) {
            cap = (n + d->tx.nseqs) * 2;
            int64_t *g = realloc(seqs, cap * sizeof(*g));
            if (!g)
                break; /* the relay will publish them */
            seqs = g;
        }
        memcpy(seqs + n, d->tx.seqs, d->tx.nseqs * sizeof(*seqs));
        n += d->tx.nseqs;
    }
    if (n)
        chorus__outbox_flush(ch, seqs, n);
    free(seqs);
}

/* ---- copies for retry and DLQ (lock held) ------------------------------- */

typedef struct {
    amqp_table_entry_t *e;
    int n, cap;
    amqp_pool_t *pool;
} hdrs_t;

static amqp_table_entry_t *hdr_slot(hdrs_t *h, const char *key) {
    for (int i = 0; i < h->n; i++)
        if (h->e[i].key.len == strlen(key) && memcmp(h->e[i].key.bytes, key, h->e[i].key.len) == 0)
            return &h->e[i];
    if (h->n == h->cap)
        return NULL;
    amqp_table_entry_t *e = &h->e[h->n++];
    amqp_pool_alloc_bytes(h->pool, strlen(key), &e->key);
    if (e->key.bytes)
        memcpy(e->key.bytes, key, strlen(key));
    return e;
}

static void hdr_str(hdrs_t *h, const char *key, const char *v) {
    amqp_table_entry_t *e = hdr_slot(h, key);
    if (!e)
        return;
    size_t n = strlen(v);
    e->value.kind = AMQP_FIELD_KIND_UTF8;
    e->value.value.bytes = amqp_empty_bytes;
    if (n) {
        amqp_pool_alloc_bytes(h->pool, n, &e->value.value.bytes);
        if (e->value.value.bytes.bytes)
            memcpy(e->value.value.bytes.bytes, v, n);
    }
}

static void hdr_int(hdrs_t *h, const char *key, long long v) {
    amqp_table_entry_t *e = hdr_slot(h, key);
    if (!e)
        return;
    e->value.kind = AMQP_FIELD_KIND_I64;
    e->value.value.i64 = v;
}

static bool hdr_has(const hdrs_t *h, const char *key) {
    amqp_table_t t = {.num_entries = h->n, .entries = h->e};
    return chorus__table_find(&t, key) != NULL;
}

/* A copy of the delivery's message; its headers can take 12 more entries. */
static chorus__pub_t *copy_delivery(chorus_delivery_t *d, hdrs_t *h) {
    chorus__pub_t *p = chorus__pub_new();
    if (!p)
        return NULL;
    amqp_basic_properties_t *src = &d->msg.properties;
    amqp_table_t orig = (src->_flags & AMQP_BASIC_HEADERS_FLAG) ? src->headers
                                                                : amqp_empty_table;
    amqp_table_t cloned;
    if (amqp_table_clone(&orig, &cloned, &p->pool) != AMQP_STATUS_OK)
        goto fail;
    p->props = *src; /* scalars; byte fields re-pointed below */
#define CLONE(field, flag)                                                    \
    if ((src->_flags & (flag)) && src->field.len) {                           \
        amqp_pool_alloc_bytes(&p->pool, src->field.len, &p->props.field);     \
        if (!p->props.field.bytes)                                            \
            goto fail;                                                        \
        memcpy(p->props.field.bytes, src->field.bytes, src->field.len);       \
    }
    CLONE(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG)
    CLONE(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG)
    CLONE(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG)
    CLONE(reply_to, AMQP_BASIC_REPLY_TO_FLAG)
    CLONE(expiration, AMQP_BASIC_EXPIRATION_FLAG)
    CLONE(message_id, AMQP_BASIC_MESSAGE_ID_FLAG)
    CLONE(type, AMQP_BASIC_TYPE_FLAG)
    CLONE(user_id, AMQP_BASIC_USER_ID_FLAG)
    CLONE(app_id, AMQP_BASIC_APP_ID_FLAG)
    CLONE(cluster_id, AMQP_BASIC_CLUSTER_ID_FLAG)
#undef CLONE
    /* A per-message TTL would make the copy expire in the retry queue or
     * DLQ; the queues' own arguments decide instead. */
    p->props._flags &= (amqp_flags_t)~AMQP_BASIC_EXPIRATION_FLAG;
    p->props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p->props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    h->pool = &p->pool;
    h->cap = cloned.num_entries + 12;
    h->n = cloned.num_entries;
    h->e = amqp_pool_alloc(&p->pool, sizeof(*h->e) * (size_t)h->cap);
    if (!h->e)
        goto fail;
    if (cloned.num_entries)
        memcpy(h->e, cloned.entries, sizeof(*h->e) * (size_t)cloned.num_entries);
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

static chorus__pub_t *fault_copy(chorus_t *ch, chorus_delivery_t *d) {
    hdrs_t h;
    chorus__pub_t *p = copy_delivery(d, &h);
    if (!p)
        return NULL;
    char ts[25];
    chorus_format_timestamp(chorus_now_ms(), ts);
    if (!hdr_has(&h, CHORUS__H_ORIG_RK))
        hdr_str(&h, CHORUS__H_ORIG_RK, d->routing_key);
    hdr_str(&h, CHORUS__H_ORIG_Q, ch->topo.names.queue);
    hdr_str(&h, CHORUS__H_REASON, d->reason);
    hdr_str(&h, CHORUS__H_ERROR, d->error);
    hdr_str(&h, CHORUS__H_TIME, ts);
    hdr_str(&h, CHORUS__H_SERVICE, ch->service);
    hdr_int(&h, CHORUS__H_ATTEMPTS, d->attempt);
    p->props.headers = (amqp_table_t){.num_entries = h.n, .entries = h.e};
    p->exchange = amqp_cstring_bytes(ch->topo.names.dlx);
    p->routing_key = amqp_cstring_bytes(ch->service);
    return p;
}

static chorus__pub_t *retry_copy(chorus_t *ch, chorus_delivery_t *d) {
    chorus__retry_decision_t dec = chorus__retry_decide(&ch->retry, d->attempt);
    hdrs_t h;
    chorus__pub_t *p = copy_delivery(d, &h);
    if (!p)
        return NULL;
    if (!hdr_has(&h, CHORUS__H_ORIG_RK))
        hdr_str(&h, CHORUS__H_ORIG_RK, d->routing_key);
    hdr_int(&h, CHORUS__H_ATTEMPT, dec.next_attempt);
    hdr_str(&h, CHORUS__H_LAST_ERROR, d->error);
    p->props.headers = (amqp_table_t){.num_entries = h.n, .entries = h.e};
    p->exchange = amqp_empty_bytes;
    p->routing_key = amqp_cstring_bytes(ch->topo.names.retry[dec.delay_index]);
    return p;
}

static void send_for(chorus_t *ch, chorus_delivery_t *d, chorus__pub_t *p) {
    if (!p) {
        d->w.failed = true;
        return;
    }
    d->w.pending++;
    chorus_err_t rc = chorus__pub_send(ch, p);
    if (rc == CHORUS_ERR_STATE || rc == CHORUS_ERR_NOMEM) {
        d->w.pending--;
        d->w.failed = true;
        chorus__pub_destroy(p);
    }
}

static void send_outcome(chorus_t *ch, chorus_delivery_t *d) {
    if (d->outcome == CHORUS_HANDLED) {
        for (size_t i = 0; i < d->nemitted && ch->st; i++) {
            chorus__pub_t *p = chorus__pub_new();
            char rk[CHORUS__NAME_MAX];
            snprintf(rk, sizeof(rk), "%s.%s", ch->service,
                     chorus_envelope_event_type(d->emitted[i]));
            if (p && chorus__pub_from_envelope(ch, p, d->emitted[i],
                                               ch->topo.names.exchange, rk) == CHORUS_OK) {
                d->emitted[i] = NULL; /* the publish owns it now */
                p->waiter = &d->w;
            } else {
                chorus__pub_destroy(p);
                p = NULL;
            }
            send_for(ch, d, p);
        }
    } else if (d->reason) {
        send_for(ch, d, fault_copy(ch, d));
    } else {
        send_for(ch, d, retry_copy(ch, d));
    }
}

/* ---- the batch ----------------------------------------------------------- */

static bool batch_settled(chorus_t *ch, void *arg) {
    (void)ch;
    for (chorus_delivery_t *d = arg; d; d = d->next)
        if (d->w.pending > 0)
            return false;
    return true;
}

static void count(chorus_t *ch, const chorus_delivery_t *d) {
    if (d->duplicate)
        ch->stats.duplicates++;
    else if (d->outcome == CHORUS_HANDLED)
        ch->stats.handled++;
    else if (d->reason)
        ch->stats.dead_lettered++;
    else
        ch->stats.retried++;
}

static void settle_batch(chorus_t *ch, chorus_delivery_t *batch) {
    bool all_ok = true;
    uint64_t last = 0;
    for (chorus_delivery_t *d = batch; d; d = d->next) {
        all_ok = all_ok && !d->w.failed;
        last = d->tag;
    }
    if (all_ok) {
        if (amqp_basic_ack(ch->st, CHORUS__CH_CONSUME, last, 1) != AMQP_STATUS_OK) {
            chorus__conn_lost(ch, "ack failed");
            return;
        }
        for (chorus_delivery_t *d = batch; d; d = d->next)
            count(ch, d);
        return;
    }
    for (chorus_delivery_t *d = batch; d && ch->st; d = d->next) {
        int s;
        if (d->w.failed) {
            chorus__log_env(ch, CHORUS_LOG_WARNING, d->env,
                            "a publish it caused failed; returning it to the queue");
            s = amqp_basic_nack(ch->st, CHORUS__CH_CONSUME, d->tag, 0, 1);
        } else {
            s = amqp_basic_ack(ch->st, CHORUS__CH_CONSUME, d->tag, 0);
            count(ch, d);
        }
        if (s != AMQP_STATUS_OK)
            chorus__conn_lost(ch, "ack failed");
    }
}

/* Gives a batch back to the broker (nack, requeue): nothing of it is
 * acked, nothing dead-lettered; it comes again. */
static void requeue(chorus_t *ch, chorus_delivery_t *batch) {
    for (chorus_delivery_t *d = batch; d && ch->st; d = d->next)
        if (d->gen == ch->consume_gen &&
            amqp_basic_nack(ch->st, CHORUS__CH_CONSUME, d->tag, 0, 1) != AMQP_STATUS_OK)
            chorus__conn_lost(ch, "nack failed");
}

static void free_batch(chorus_delivery_t *batch) {
    while (batch) {
        chorus_delivery_t *next = batch->next;
        chorus__delivery_free(batch);
        batch = next;
    }
}

void chorus__consumer_process(chorus_t *ch) {
    chorus_delivery_t *batch = ch->backlog_head;
    if (!batch)
        return;
    ch->backlog_head = ch->backlog_tail = NULL;
    ch->backlog_len = 0;

    batch_rc_t brc = BATCH_OK;
    if (!ch->store.enabled) {
        for (chorus_delivery_t *d = batch; d; d = d->next)
            handle_plain(ch, d);
    } else if (ch->store.paused || !ch->store.up) {
        brc = BATCH_STORE_DOWN;
    } else if ((brc = process_durable(ch, batch)) == BATCH_OK) {
        flush_batch_outbox(ch, batch);
    }

    chorus__lock(ch);
    if (brc != BATCH_OK) {
        requeue(ch, batch);
        if (brc == BATCH_STORE_DOWN)
            chorus__consume_pause(ch);
    } else {
        for (chorus_delivery_t *d = batch; d && ch->st; d = d->next)
            send_outcome(ch, d);
        int64_t deadline = chorus__mono_ms() + chorus__conf_int(ch->conf, "amqp.rpc.timeout.ms");
        if (ch->st && chorus__wait_until(ch, deadline, batch_settled, batch) == CHORUS_ERR_TIMEOUT)
            chorus__conn_lost(ch, "publisher confirms timed out");
        /* Tags of an older consumer (before a reconnect or a reopened
         * channel) mean nothing now: those deliveries come again. */
        if (ch->st && batch->gen == ch->consume_gen)
            settle_batch(ch, batch);
    }
    chorus__unlock(ch);
    free_batch(batch);
}

void chorus__consume_pause(chorus_t *ch) {
    ch->store.paused = true;
    if (!ch->st || !ch->consuming)
        return;
    char tag[128];
    snprintf(tag, sizeof(tag), "%s.%ld", ch->service, (long)getpid());
    amqp_basic_cancel(ch->st, CHORUS__CH_CONSUME, amqp_cstring_bytes(tag));
    char err[256];
    if (chorus__amqp_reply_error(ch->st, CHORUS__CH_CONSUME, amqp_get_rpc_reply(ch->st),
                                 "basic.cancel", err, sizeof(err))) {
        chorus__conn_lost(ch, err);
        return;
    }
    ch->consuming = false;
    /* What arrived before the cancel took effect goes back too. */
    chorus_delivery_t *late = ch->backlog_head;
    ch->backlog_head = ch->backlog_tail = NULL;
    ch->backlog_len = 0;
    requeue(ch, late);
    free_batch(late);
    chorus__log(ch, CHORUS_LOG_WARNING, "consumption paused until PostgreSQL is back");
}

void chorus__consume_resume(chorus_t *ch) {
    if (!ch->store.paused || !ch->st || !ch->store.up)
        return;
    if (ch->nhandlers == 0 || chorus__consume_start(ch) == CHORUS_OK) {
        ch->store.paused = false;
        chorus__log(ch, CHORUS_LOG_NOTICE, "PostgreSQL is back; consuming again");
    }
}

void chorus__crash_point(const chorus_t *ch, const char *point) {
    if (ch->crash_point && strcmp(ch->crash_point, point) == 0) {
        chorus__log(ch, CHORUS_LOG_WARNING, "debug.crash.point: dying at %s", point);
        raise(SIGKILL);
    }
}

/* ---- the handler's API --------------------------------------------------- */

void chorus__inherit(const chorus_delivery_t *d, chorus_envelope_t *env) {
    const chorus_envelope_t *cause = d->env;
    if (!chorus_envelope_correlation_id(env)) {
        const char *corr = chorus_envelope_correlation_id(cause);
        chorus_envelope_set_correlation_id(env, corr ? corr : chorus_envelope_event_id(cause));
    }
    if (!chorus_envelope_causation_id(env))
        chorus_envelope_set_causation_id(env, chorus_envelope_event_id(cause));
    const char *tp = chorus_envelope_traceparent(cause);
    if (tp && !chorus_envelope_traceparent(env))
        chorus_envelope_set_traceparent(env, tp);
}

chorus_err_t chorus_emit(chorus_delivery_t *d, chorus_envelope_t *env) {
    if (!d || !env || !d->env) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_INVALID_ARG;
    }
    chorus__inherit(d, env);
    if (d->ch->store.enabled)
        return chorus__outbox_insert(&d->tx, env); /* in the handler's transaction */
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
