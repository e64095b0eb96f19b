/*
 * publisher.c - publishing with publisher confirms.
 *
 * A message (chorus__pub_t) owns everything rabbitmq-c needs to send it
 * again: body, properties, headers.  It is sent on the publish channel,
 * which is in confirm mode, and handed to the confirm tracker; it lives
 * until the broker settles it:
 *
 *   chorus_publish() / a delivery's emits, retries, dead letters
 *        |
 *        v
 *   chorus__pub_send() --basic.publish--> broker
 *        |                                  |  basic.return (unroutable,
 *        v                                  |  before the ack)
 *   confirm tracker  <--basic.ack/nack------+
 *        |
 *        +-- waiter (a delivery, an outbox flush): one fewer pending
 *        |   publish; consumer.c acks when none is left and none failed
 *        +-- free-standing: delivery report to the application
 *
 * Publishing never waits for a round trip: up to "publish.window" messages
 * are in flight.  When the channel or the connection is lost, unconfirmed
 * free-standing messages go to the resend list and are published again
 * after the reconnect (at-least-once); a delivery's publishes are dropped
 * instead, because the unacked delivery itself comes back and is handled
 * again.
 */
#include "amqp_props_int.h"
#include "chorus_int.h"

#include <stdlib.h>
#include <string.h>

chorus__pub_t *chorus__pub_new(void) {
    chorus__pub_t *p = calloc(1, sizeof(*p));
    if (p)
        init_amqp_pool(&p->pool, 1024);
    return p;
}

void chorus__pub_destroy(chorus__pub_t *p) {
    if (!p)
        return;
    empty_amqp_pool(&p->pool);
    amqp_bytes_free(p->body);
    chorus_envelope_destroy(p->env);
    free(p);
}

static amqp_bytes_t pool_str(amqp_pool_t *pool, const char *s) {
    amqp_bytes_t b = {0};
    size_t n = strlen(s);
    if (n == 0)
        return amqp_empty_bytes;
    amqp_pool_alloc_bytes(pool, n, &b);
    if (b.bytes)
        memcpy(b.bytes, s, n);
    return b;
}

amqp_table_entry_t *chorus__table_find(const amqp_table_t *t, const char *key) {
    size_t n = strlen(key);
    for (int i = 0; t && i < t->num_entries; i++)
        if (t->entries[i].key.len == n && (n == 0 || memcmp(t->entries[i].key.bytes, key, n) == 0))
            return &t->entries[i];
    return NULL;
}

long long chorus__table_int(const amqp_table_t *t, const char *key, long long dflt) {
    amqp_table_entry_t *e = chorus__table_find(t, key);
    if (!e)
        return dflt;
    switch (e->value.kind) {
    case AMQP_FIELD_KIND_I8: return e->value.value.i8;
    case AMQP_FIELD_KIND_U8: return e->value.value.u8;
    case AMQP_FIELD_KIND_I16: return e->value.value.i16;
    case AMQP_FIELD_KIND_U16: return e->value.value.u16;
    case AMQP_FIELD_KIND_I32: return e->value.value.i32;
    case AMQP_FIELD_KIND_U32: return e->value.value.u32;
    case AMQP_FIELD_KIND_I64: return e->value.value.i64;
    case AMQP_FIELD_KIND_U64: return (long long)e->value.value.u64;
    default: return dflt;
    }
}

chorus_err_t chorus__pub_fill(chorus_t *ch, chorus__pub_t *p, chorus_envelope_t *env, char *json,
                             size_t len, const char *exchange, const char *routing_key) {
    if (len > ch->limits.max_bytes) {
        /* A consumer with the same limits would only dead-letter it. */
        chorus__log_env(ch, CHORUS_LOG_ERR, env, "envelope of %zu bytes exceeds "
                        "message.max.bytes (%zu); not published", len, ch->limits.max_bytes);
        return CHORUS_ERR_TOO_LARGE;
    }
    p->exchange = pool_str(&p->pool, exchange);
    p->routing_key = pool_str(&p->pool, routing_key);
    p->mandatory = true;
    amqp_basic_properties_t *pr = &p->props;
    pr->_flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                 AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG |
                 AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG;
    pr->content_type = pool_str(&p->pool, "application/json");
    pr->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    pr->message_id = pool_str(&p->pool, chorus_envelope_event_id(env));
    pr->type = pool_str(&p->pool, chorus_envelope_event_type(env));
    int64_t ts = chorus_envelope_timestamp_ms(env);
    pr->timestamp = ts >= 0 ? (uint64_t)(ts / 1000) : 0;
    if (ts < 0) /* before 1970: AMQP's timestamp cannot say it */
        pr->_flags &= (amqp_flags_t)~AMQP_BASIC_TIMESTAMP_FLAG;
    pr->app_id = pool_str(&p->pool, ch->service);
    const char *corr = chorus_envelope_correlation_id(env);
    if (corr) {
        pr->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        pr->correlation_id = pool_str(&p->pool, corr);
    }
    const char *tp = chorus_envelope_traceparent(env);
    if (tp) {
        amqp_table_entry_t *e = amqp_pool_alloc(&p->pool, sizeof(*e));
        if (!e)
            return CHORUS_ERR_NOMEM;
        e->key = amqp_cstring_bytes("traceparent");
        e->value.kind = AMQP_FIELD_KIND_UTF8;
        e->value.value.bytes = pool_str(&p->pool, tp);
        pr->_flags |= AMQP_BASIC_HEADERS_FLAG;
        pr->headers = (amqp_table_t){.num_entries = 1, .entries = e};
    }
    if (!p->exchange.bytes || !p->routing_key.bytes || !pr->message_id.bytes)
        return CHORUS_ERR_NOMEM;
    p->body.bytes = json;
    p->body.len = len;
    p->env = env;
    return CHORUS_OK;
}

chorus_err_t chorus__pub_from_envelope(chorus_t *ch, chorus__pub_t *p,
                                       chorus_envelope_t *env, const char *exchange,
                                       const char *routing_key) {
    char *json = NULL;
    size_t len = 0;
    chorus_err_t rc = chorus_envelope_serialize(env, &json, &len);
    if (!rc && (rc = chorus__pub_fill(ch, p, env, json, len, exchange, routing_key)))
        free(json);
    return rc;
}

chorus__pub_t *chorus__pub_from_text(chorus_t *ch, const char *json, size_t len,
                                     const char *routing_key, size_t rk_len) {
    chorus_envelope_t *env = NULL;
    chorus_error_t *err = NULL;
    chorus__pub_t *p = NULL;
    char rk[CHORUS__NAME_MAX];
    snprintf(rk, sizeof(rk), "%.*s", (int)rk_len, routing_key);
    if (chorus_envelope_parse(json, len, &ch->limits, &env, &err) != CHORUS_OK) {
        chorus__log(ch, CHORUS_LOG_ERR, "outbox row for '%s' is not a valid envelope: %s",
                    rk, chorus_error_string(err));
        chorus_error_destroy(err);
        return NULL;
    }
    char *body = malloc(len ? len : 1);
    if (body)
        memcpy(body, json, len);
    /* On failure the envelope is still ours (p takes it only on success). */
    if (!body || !(p = chorus__pub_new()) ||
        chorus__pub_fill(ch, p, env, body, len, ch->topo.names.exchange, rk)) {
        free(body);
        chorus__pub_destroy(p);
        chorus_envelope_destroy(env);
        return NULL;
    }
    return p;
}

static void resend_push(chorus_t *ch, chorus__pub_t *p) {
    p->next = NULL;
    p->returned = false;
    if (ch->resend_tail)
        ch->resend_tail->next = p;
    else
        ch->resend_head = p;
    ch->resend_tail = p;
}

chorus_err_t chorus__pub_send(chorus_t *ch, chorus__pub_t *p) {
    /* connection.blocked: a publish nobody waits for is held back until
     * connection.unblocked (chorus_poll() sends it then).  One a batch or
     * an outbox flush waits for is written: the broker keeps it unread in
     * the socket and confirms it after the alarm (no confirm deadline runs
     * out meanwhile: consumer.c); refusing it would fail its delivery. */
    if (!chorus__up(ch) || (ch->blocked && !p->waiter)) {
        if (p->waiter)
            return CHORUS_ERR_STATE; /* not taken: the caller still owns it */
        resend_push(ch, p); /* goes out after the reconnect */
        return CHORUS_OK;
    }
    /* The producer is named on every publish: RabbitMQ refuses a user_id
     * other than the connection's user, so consumers can trust it. */
    p->props._flags |= AMQP_BASIC_USER_ID_FLAG;
    p->props.user_id = amqp_cstring_bytes(ch->conn_user);
    /* Measured before anything is sent: a header that does not fit is this
     * message's problem, not the connection's (see amqp_props_int.h). */
    char why[256];
    if (!chorus__props_fit(&p->props, ch->link->frame_max(ch), why, sizeof(why))) {
        chorus__log_env(ch, CHORUS_LOG_ERR, p->env, "not publishing to '%.*s': %s",
                        (int)p->routing_key.len, (const char *)p->routing_key.bytes, why);
        return CHORUS_ERR_TOO_LARGE;
    }
    uint64_t seq = chorus__confirms_add(&ch->confirms, p);
    if (seq == 0)
        return CHORUS_ERR_NOMEM;
    bool waited = p->waiter != NULL;
    int s = ch->link->publish(ch, p);
    if (s != AMQP_STATUS_OK) {
        /* The tracker holds it: the loss handling below settles it (and
         * may free it: @p p is not touched again). */
        chorus__conn_lost(ch, amqp_error_string2(s));
        return waited ? CHORUS_ERR_CONN_CLOSED : CHORUS_OK;
    }
    return CHORUS_OK;
}

static void report(chorus_t *ch, chorus__pub_t *p, chorus_err_t res) {
    if (p->done)
        p->done(ch, p, res);
    if (p->waiter) {
        p->waiter->pending--;
        if (res)
            p->waiter->failed = true;
    } else if (!p->done) {
        ch->outq--;
        if (ch->conf->dr_cb)
            ch->conf->dr_cb(ch, p->env, res, p->msg_opaque, ch->conf->dr_opaque);
    }
    chorus__pub_destroy(p);
}

static void on_settle(void *item, chorus__confirm_result_t res, void *opaque) {
    chorus_t *ch = opaque;
    chorus__pub_t *p = item;
    chorus_err_t r = CHORUS_OK;
    if (res == CHORUS__CONFIRM_NACK) {
        r = CHORUS_ERR_NACKED;
        ch->stats.nacked++;
    } else if (p->returned) {
        r = CHORUS_ERR_UNROUTABLE;
        ch->stats.returned++;
        /* Our own retry queue or DLQ is missing: someone deleted it. */
        if (p->waiter)
            ch->need_redeclare = true;
    } else {
        ch->stats.published++;
    }
    if (r)
        chorus__log_env(ch, CHORUS_LOG_WARNING, p->env, "publish to '%.*s' failed: %s",
                        (int)p->routing_key.len, (const char *)p->routing_key.bytes,
                        chorus_strerror(r));
    report(ch, p, r);
}

void chorus__on_confirm(chorus_t *ch, uint64_t tag, bool multiple, bool nack) {
    int n = chorus__confirms_settle(&ch->confirms, tag, multiple,
                                    nack ? CHORUS__CONFIRM_NACK : CHORUS__CONFIRM_ACK,
                                    on_settle, ch);
    if (n < 0)
        chorus__log(ch, CHORUS_LOG_WARNING, "confirm for unknown tag %llu ignored",
                    (unsigned long long)tag);
}

/* A basic.return precedes the ack of the same message; match it by
 * message_id with the oldest pending publish that was not returned yet. */
void chorus__on_return(chorus_t *ch, const amqp_message_t *msg) {
    const chorus__confirms_t *c = &ch->confirms;
    amqp_bytes_t id = msg->properties.message_id;
    for (uint64_t seq = c->first_seq; seq < c->next_seq; seq++) {
        chorus__pub_t *p = chorus__confirms_get(c, seq);
        if (p && !p->returned && p->props.message_id.len == id.len &&
            (id.len == 0 || memcmp(p->props.message_id.bytes, id.bytes, id.len) == 0)) {
            p->returned = true;
            return;
        }
    }
}

static void reset_one(void *item, void *opaque) {
    chorus_t *ch = opaque;
    chorus__pub_t *p = item;
    if (p->waiter || p->done)
        report(ch, p, CHORUS_ERR_CONN_CLOSED); /* it comes again: a delivery, the relay */
    else
        resend_push(ch, p);
}

void chorus__publisher_reset(chorus_t *ch) {
    /* Keep the resend order: what was unconfirmed goes before what waited. */
    chorus__pub_t *waiting = ch->resend_head;
    ch->resend_head = ch->resend_tail = NULL;
    chorus__confirms_reset(&ch->confirms, reset_one, ch);
    while (waiting) {
        chorus__pub_t *next = waiting->next;
        resend_push(ch, waiting);
        waiting = next;
    }
}

void chorus__publisher_resend(chorus_t *ch) {
    chorus__pub_t *p = ch->resend_head;
    ch->resend_head = ch->resend_tail = NULL;
    while (p && chorus__up(ch)) {
        chorus__pub_t *next = p->next;
        p->next = NULL;
        chorus_err_t rc = chorus__pub_send(ch, p);
        if (rc == CHORUS_ERR_TOO_LARGE || rc == CHORUS_ERR_NOMEM)
            report(ch, p, rc); /* not taken: its report says why */
        p = next;
    }
    while (p) { /* lost again meanwhile: keep the rest */
        chorus__pub_t *next = p->next;
        resend_push(ch, p);
        p = next;
    }
}

static void destroy_one(void *item, void *opaque) {
    (void)opaque;
    chorus__pub_destroy(item);
}

void chorus__publisher_destroy(chorus_t *ch) {
    chorus__confirms_reset(&ch->confirms, destroy_one, NULL);
    chorus__confirms_free(&ch->confirms);
    chorus__pub_t *p = ch->resend_head;
    while (p) {
        chorus__pub_t *next = p->next;
        chorus__pub_destroy(p);
        p = next;
    }
    ch->resend_head = ch->resend_tail = NULL;
}

chorus_err_t chorus__wait_until(chorus_t *ch, int64_t deadline_ms,
                                bool (*done)(chorus_t *, void *), void *arg) {
    while (!done(ch, arg)) {
        int64_t left = deadline_ms - chorus__mono_ms();
        if (left <= 0)
            return CHORUS_ERR_TIMEOUT;
        chorus_err_t rc = chorus__dispatch(ch, left > 200 ? 200 : (int)left);
        if (rc == CHORUS_ERR_CONN_CLOSED)
            return rc;
    }
    return CHORUS_OK;
}
