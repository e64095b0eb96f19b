/*
 * sim_broker.c - an in-memory broker for the deterministic simulation: the
 * part of RabbitMQ that chorus' topology uses, driven by a simulated clock
 * and by whoever schedules (nothing here happens on its own).
 *
 *   declare   the same chorus__topology_t the real connection declares:
 *             exchanges (topic, direct, fanout; alternate-exchange),
 *             queues (x-dead-letter-exchange, x-dead-letter-routing-key,
 *             x-message-ttl, x-delivery-limit), bindings
 *   publish   routed as RabbitMQ routes: topic words ("*" one, "#" any
 *             number), direct keys, fanout; no route: the alternate
 *             exchange, else unroutable (0 queues: returned if mandatory)
 *   take      a ready message becomes unacked under a delivery tag; the
 *             caller says which of the ready ones (the head, or another:
 *             the scheduler's reordering)
 *   ack       gone; nack/reject without requeue: dead-lettered ("rejected")
 *   requeue   nack with requeue, or lose (a consumer's channel went): back
 *             at the head of a classic queue, behind what arrived meanwhile
 *             in a quorum queue (RabbitMQ 3.10), redelivered, its
 *             x-delivery-count one higher;
 *             past x-delivery-limit dead-lettered ("delivery_limit")
 *   tick      messages older than their queue's x-message-ttl by the
 *             simulated clock are dead-lettered ("expired"): the retry
 *             queues' way back to the service queue
 *
 * Dead-lettering republishes to the queue's x-dead-letter-exchange with its
 * x-dead-letter-routing-key (or the message's own key) and records the
 * reason in the x-first-death-reason header, as RabbitMQ does.
 */
#include "sim_broker_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sim_msg_s {
    struct sim_msg_s *next;
    char *exchange, *routing_key;
    amqp_message_t m;     /* its own pool */
    uint64_t tag;         /* unacked: its delivery tag */
    int64_t enqueued_ms;  /* for x-message-ttl */
    int deliveries;       /* x-delivery-count */
    bool redelivered;
    char death[32];       /* x-first-death-reason once dead-lettered */
} sim_msg_t;

typedef struct {
    char name[CHORUS__NAME_MAX], type[16], alternate[CHORUS__NAME_MAX];
} sim_exchange_t;

typedef struct {
    char name[CHORUS__NAME_MAX], dlx[CHORUS__NAME_MAX], dlk[CHORUS__NAME_MAX];
    long long ttl_ms, delivery_limit; /* 0: none */
    bool quorum;                      /* x-queue-type: a return goes to the tail */
    sim_msg_t *ready, *ready_tail, *unacked;
    size_t nready, nunacked;
} sim_queue_t;

typedef struct {
    char queue[CHORUS__NAME_MAX], exchange[CHORUS__NAME_MAX], key[CHORUS__NAME_MAX];
} sim_binding_t;

struct chorus__sim_broker_s {
    sim_exchange_t *ex;
    size_t nex;
    sim_queue_t *q;
    size_t nq;
    sim_binding_t *bind;
    size_t nbind;
    uint64_t next_tag;
};

chorus__sim_broker_t *chorus__sim_broker_new(void) {
    chorus__sim_broker_t *b = calloc(1, sizeof(*b));
    if (b)
        b->next_tag = 1;
    return b;
}

static void msg_free(sim_msg_t *m) {
    if (!m)
        return;
    free(m->exchange);
    free(m->routing_key);
    amqp_destroy_message(&m->m);
    free(m);
}

static void list_free(sim_msg_t *m) {
    while (m) {
        sim_msg_t *n = m->next;
        msg_free(m);
        m = n;
    }
}

void chorus__sim_broker_free(chorus__sim_broker_t *b) {
    if (!b)
        return;
    for (size_t i = 0; i < b->nq; i++) {
        list_free(b->q[i].ready);
        list_free(b->q[i].unacked);
    }
    free(b->ex);
    free(b->q);
    free(b->bind);
    free(b);
}

static sim_exchange_t *find_ex(chorus__sim_broker_t *b, const char *name) {
    for (size_t i = 0; i < b->nex; i++)
        if (strcmp(b->ex[i].name, name) == 0)
            return &b->ex[i];
    return NULL;
}

static sim_queue_t *find_q(chorus__sim_broker_t *b, const char *name) {
    for (size_t i = 0; i < b->nq; i++)
        if (strcmp(b->q[i].name, name) == 0)
            return &b->q[i];
    return NULL;
}

static bool grow(void **v, size_t n, size_t size) {
    void *p = realloc(*v, (n + 1) * size);
    if (!p)
        return false;
    *v = p;
    memset((char *)p + n * size, 0, size);
    return true;
}

static const char *arg_s(const chorus__topo_op_t *op, const char *key) {
    const chorus__arg_t *a = chorus__op_arg(op, key);
    return a && !a->is_int ? a->s : "";
}

static long long arg_i(const chorus__topo_op_t *op, const char *key) {
    const chorus__arg_t *a = chorus__op_arg(op, key);
    return a && a->is_int ? a->i : 0;
}

/* One op, as the broker would take it: a redeclaration with other
 * properties is refused (RabbitMQ's 406 PRECONDITION_FAILED). */
static chorus_err_t declare_op(chorus__sim_broker_t *b, const chorus__topo_op_t *op, char *err,
                               size_t n) {
    switch (op->kind) {
    case CHORUS__OP_EXCHANGE: {
        sim_exchange_t *e = find_ex(b, op->name);
        const char *alt = arg_s(op, "alternate-exchange");
        if (e) {
            if (strcmp(e->type, op->type) == 0 && strcmp(e->alternate, alt) == 0)
                return CHORUS_OK;
            snprintf(err, n, "exchange '%s' exists with other properties", op->name);
            return CHORUS_ERR_PRECONDITION;
        }
        if (strcmp(op->type, "topic") && strcmp(op->type, "direct") && strcmp(op->type, "fanout")) {
            snprintf(err, n, "exchange '%s': type '%s' is not simulated", op->name, op->type);
            return CHORUS_ERR_PRECONDITION;
        }
        if (!grow((void **)&b->ex, b->nex, sizeof(*b->ex)))
            return CHORUS_ERR_NOMEM;
        e = &b->ex[b->nex++];
        snprintf(e->name, sizeof(e->name), "%s", op->name);
        snprintf(e->type, sizeof(e->type), "%s", op->type);
        snprintf(e->alternate, sizeof(e->alternate), "%s", alt);
        return CHORUS_OK;
    }
    case CHORUS__OP_QUEUE: {
        sim_queue_t want = {0};
        snprintf(want.name, sizeof(want.name), "%s", op->name);
        snprintf(want.dlx, sizeof(want.dlx), "%s", arg_s(op, "x-dead-letter-exchange"));
        snprintf(want.dlk, sizeof(want.dlk), "%s", arg_s(op, "x-dead-letter-routing-key"));
        want.ttl_ms = arg_i(op, "x-message-ttl");
        want.delivery_limit = arg_i(op, "x-delivery-limit");
        want.quorum = strcmp(arg_s(op, "x-queue-type"), "quorum") == 0;
        sim_queue_t *q = find_q(b, op->name);
        if (q) {
            if (strcmp(q->dlx, want.dlx) == 0 && strcmp(q->dlk, want.dlk) == 0 &&
                q->ttl_ms == want.ttl_ms && q->delivery_limit == want.delivery_limit &&
                q->quorum == want.quorum)
                return CHORUS_OK;
            snprintf(err, n, "queue '%s' exists with other arguments", op->name);
            return CHORUS_ERR_PRECONDITION;
        }
        if (!grow((void **)&b->q, b->nq, sizeof(*b->q)))
            return CHORUS_ERR_NOMEM;
        b->q[b->nq++] = want;
        return CHORUS_OK;
    }
    case CHORUS__OP_BIND:
        if (!find_q(b, op->name) || !find_ex(b, op->source)) {
            snprintf(err, n, "binding '%s' -> '%s': no such %s", op->source, op->name,
                     find_q(b, op->name) ? "exchange" : "queue");
            return CHORUS_ERR_NOT_FOUND;
        }
        for (size_t i = 0; i < b->nbind; i++)
            if (!strcmp(b->bind[i].queue, op->name) && !strcmp(b->bind[i].exchange, op->source) &&
                !strcmp(b->bind[i].key, op->key))
                return CHORUS_OK;
        if (!grow((void **)&b->bind, b->nbind, sizeof(*b->bind)))
            return CHORUS_ERR_NOMEM;
        sim_binding_t *bd = &b->bind[b->nbind++];
        snprintf(bd->queue, sizeof(bd->queue), "%s", op->name);
        snprintf(bd->exchange, sizeof(bd->exchange), "%s", op->source);
        snprintf(bd->key, sizeof(bd->key), "%s", op->key);
        return CHORUS_OK;
    }
    return CHORUS_ERR_INVALID_ARG;
}

chorus_err_t chorus__sim_declare(chorus__sim_broker_t *b, const chorus__topology_t *t, char *err,
                                 size_t n) {
    for (int i = 0; i < t->nops; i++) {
        chorus_err_t rc = declare_op(b, &t->ops[i], err, n);
        if (rc)
            return rc;
    }
    return CHORUS_OK;
}

/* AMQP topic matching on words separated by '.': "*" is exactly one word,
 * "#" any number of them (none too); the empty key has no words. */
#define MAX_WORDS 64

static int split(char *s, char **w) {
    int n = 0;
    if (!*s)
        return 0;
    for (char *p = s; n < MAX_WORDS; p++) {
        w[n++] = p;
        if (!(p = strchr(p, '.')))
            break;
        *p = '\0';
    }
    return n;
}

static bool match_words(char **p, int np, char **k, int nk) {
    if (np == 0)
        return nk == 0;
    if (strcmp(p[0], "#") == 0) {
        for (int i = 0; i <= nk; i++)
            if (match_words(p + 1, np - 1, k + i, nk - i))
                return true;
        return false;
    }
    if (nk == 0 || (strcmp(p[0], "*") != 0 && strcmp(p[0], k[0]) != 0))
        return false;
    return match_words(p + 1, np - 1, k + 1, nk - 1);
}

static bool topic_match(const char *pattern, const char *key) {
    char pb[CHORUS__NAME_MAX], kb[CHORUS__NAME_MAX], *pw[MAX_WORDS], *kw[MAX_WORDS];
    if (strlen(pattern) >= sizeof(pb) || strlen(key) >= sizeof(kb))
        return false;
    strcpy(pb, pattern);
    strcpy(kb, key);
    int np = split(pb, pw), nk = split(kb, kw);
    return match_words(pw, np, kw, nk);
}

bool chorus__sim_topic_match(const char *pattern, const char *key) {
    return topic_match(pattern, key);
}

static bool binding_matches(const sim_exchange_t *e, const sim_binding_t *bd, const char *key) {
    if (strcmp(e->type, "fanout") == 0)
        return true;
    if (strcmp(e->type, "direct") == 0)
        return strcmp(bd->key, key) == 0;
    return topic_match(bd->key, key);
}

/* @p death: "" for a publish, the reason for a dead-lettered copy. */
static sim_msg_t *msg_new(const char *exchange, const char *key,
                          const amqp_basic_properties_t *props, amqp_bytes_t body,
                          const char *death) {
    sim_msg_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    snprintf(m->death, sizeof(m->death), "%s", death);
    init_amqp_pool(&m->m.pool, 4096);
    m->exchange = strdup(exchange);
    m->routing_key = strdup(key);
    m->m.body = amqp_bytes_malloc_dup(body);
    if (!m->exchange || !m->routing_key || (body.len && !m->m.body.bytes) ||
        !chorus__props_clone(props, &m->m.properties, &m->m.pool)) {
        msg_free(m);
        return NULL;
    }
    return m;
}

static void enqueue(sim_queue_t *q, sim_msg_t *m, bool at_head) {
    m->enqueued_ms = chorus_now_ms();
    if (at_head) {
        m->next = q->ready;
        q->ready = m;
        if (!q->ready_tail)
            q->ready_tail = m;
    } else {
        m->next = NULL;
        if (q->ready_tail)
            q->ready_tail->next = m;
        else
            q->ready = m;
        q->ready_tail = m;
    }
    q->nready++;
}

static int route(chorus__sim_broker_t *b, const char *exchange, const char *key,
                 const amqp_basic_properties_t *props, amqp_bytes_t body, const char *death,
                 int depth) {
    if (!*exchange) { /* the default exchange: the queue named by the key */
        sim_queue_t *q = find_q(b, key);
        sim_msg_t *m = q ? msg_new(exchange, key, props, body, death) : NULL;
        if (!m)
            return q ? -1 : 0;
        enqueue(q, m, false);
        return 1;
    }
    sim_exchange_t *e = find_ex(b, exchange);
    if (!e)
        return 0;
    int n = 0;
    for (size_t i = 0; i < b->nbind; i++) {
        sim_binding_t *bd = &b->bind[i];
        if (strcmp(bd->exchange, exchange) || !binding_matches(e, bd, key))
            continue;
        sim_queue_t *q = find_q(b, bd->queue);
        bool twice = false; /* one copy per queue, however many bindings match */
        for (size_t k = 0; k < i && !twice; k++)
            twice = !strcmp(b->bind[k].exchange, exchange) && !strcmp(b->bind[k].queue, bd->queue) &&
                    binding_matches(e, &b->bind[k], key);
        if (!q || twice)
            continue;
        sim_msg_t *m = msg_new(exchange, key, props, body, death);
        if (!m)
            return -1;
        enqueue(q, m, false);
        n++;
    }
    if (n == 0 && *e->alternate && depth < 4)
        return route(b, e->alternate, key, props, body, death, depth + 1);
    return n;
}

int chorus__sim_publish(chorus__sim_broker_t *b, const char *exchange, const char *key,
                        const amqp_basic_properties_t *props, amqp_bytes_t body) {
    return route(b, exchange, key, props, body, "", 0);
}

size_t chorus__sim_ready(chorus__sim_broker_t *b, const char *queue) {
    sim_queue_t *q = find_q(b, queue);
    return q ? q->nready : 0;
}

size_t chorus__sim_unacked(chorus__sim_broker_t *b, const char *queue) {
    sim_queue_t *q = find_q(b, queue);
    return q ? q->nunacked : 0;
}

bool chorus__sim_take(chorus__sim_broker_t *b, const char *queue, size_t index,
                      chorus__sim_delivery_t *out) {
    sim_queue_t *q = find_q(b, queue);
    if (!q || index >= q->nready)
        return false;
    sim_msg_t **pp = &q->ready, *prev = NULL;
    for (size_t i = 0; i < index; i++) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    sim_msg_t *m = *pp;
    *pp = m->next;
    if (q->ready_tail == m)
        q->ready_tail = prev;
    q->nready--;
    m->tag = b->next_tag++;
    m->next = q->unacked;
    q->unacked = m;
    q->nunacked++;
    *out = (chorus__sim_delivery_t){.tag = m->tag,
                                    .redelivered = m->redelivered,
                                    .delivery_count = m->deliveries,
                                    .exchange = m->exchange,
                                    .routing_key = m->routing_key,
                                    .message = &m->m,
                                    .death = m->death};
    return true;
}

/* The unacked message under @p tag, unlinked; its queue in @p qp. */
static sim_msg_t *unlink_tag(chorus__sim_broker_t *b, uint64_t tag, sim_queue_t **qp) {
    for (size_t i = 0; i < b->nq; i++)
        for (sim_msg_t **pp = &b->q[i].unacked; *pp; pp = &(*pp)->next)
            if ((*pp)->tag == tag) {
                sim_msg_t *m = *pp;
                *pp = m->next;
                b->q[i].nunacked--;
                *qp = &b->q[i];
                return m;
            }
    return NULL;
}

/* Republished to the queue's dead-letter exchange, routed as a publish
 * there is, with its reason; dropped without one (or with no route). */
static void dead_letter(chorus__sim_broker_t *b, sim_queue_t *q, sim_msg_t *m, const char *why) {
    if (*q->dlx)
        route(b, q->dlx, *q->dlk ? q->dlk : m->routing_key, &m->m.properties, m->m.body, why, 0);
    msg_free(m);
}

chorus_err_t chorus__sim_ack(chorus__sim_broker_t *b, uint64_t tag) {
    sim_queue_t *q;
    sim_msg_t *m = unlink_tag(b, tag, &q);
    if (!m)
        return CHORUS_ERR_NOT_FOUND; /* RabbitMQ: PRECONDITION_FAILED, unknown tag */
    msg_free(m);
    return CHORUS_OK;
}

static void requeue(chorus__sim_broker_t *b, sim_queue_t *q, sim_msg_t *m) {
    m->deliveries++;
    m->redelivered = true;
    if (q->delivery_limit > 0 && m->deliveries > q->delivery_limit)
        dead_letter(b, q, m, "delivery_limit");
    else
        enqueue(q, m, !q->quorum); /* classic: its place at the head */
}

chorus_err_t chorus__sim_nack(chorus__sim_broker_t *b, uint64_t tag, bool back) {
    sim_queue_t *q;
    sim_msg_t *m = unlink_tag(b, tag, &q);
    if (!m)
        return CHORUS_ERR_NOT_FOUND;
    if (back)
        requeue(b, q, m);
    else
        dead_letter(b, q, m, "rejected");
    return CHORUS_OK;
}

void chorus__sim_lose(chorus__sim_broker_t *b, const char *queue) {
    sim_queue_t *q = find_q(b, queue);
    if (!q)
        return;
    /* back in the order they were taken: the oldest ends at the head (or,
     * quorum, first at the tail); the unacked list is newest first */
    if (q->quorum) {
        sim_msg_t *rev = NULL;
        while (q->unacked) {
            sim_msg_t *m = q->unacked;
            q->unacked = m->next;
            m->next = rev;
            rev = m;
        }
        q->unacked = rev;
    }
    while (q->unacked) {
        sim_msg_t *m = q->unacked;
        q->unacked = m->next;
        q->nunacked--;
        requeue(b, q, m);
    }
}

size_t chorus__sim_tick(chorus__sim_broker_t *b) {
    int64_t now = chorus_now_ms();
    size_t n = 0;
    for (size_t i = 0; i < b->nq; i++) {
        sim_queue_t *q = &b->q[i];
        /* RabbitMQ expires from the head only; a queue's messages share its TTL */
        while (q->ttl_ms > 0 && q->ready && now - q->ready->enqueued_ms >= q->ttl_ms) {
            sim_msg_t *m = q->ready;
            q->ready = m->next;
            if (!q->ready)
                q->ready_tail = NULL;
            q->nready--;
            dead_letter(b, q, m, "expired");
            n++;
        }
    }
    return n;
}

static sim_msg_t *ready_at(sim_queue_t *q, size_t index) {
    sim_msg_t *m = q ? q->ready : NULL;
    for (size_t i = 0; m && i < index; i++)
        m = m->next;
    return m;
}

bool chorus__sim_copy(chorus__sim_broker_t *b, const char *queue, size_t index) {
    sim_queue_t *q = find_q(b, queue);
    sim_msg_t *m = ready_at(q, index);
    sim_msg_t *c = m ? msg_new(m->exchange, m->routing_key, &m->m.properties, m->m.body, m->death)
                     : NULL;
    if (!c)
        return false;
    enqueue(q, c, false);
    return true;
}

const amqp_message_t *chorus__sim_peek(chorus__sim_broker_t *b, const char *queue, size_t index) {
    sim_msg_t *m = ready_at(find_q(b, queue), index);
    return m ? &m->m : NULL;
}

size_t chorus__sim_queue_count(const chorus__sim_broker_t *b) { return b->nq; }

const char *chorus__sim_queue_name(const chorus__sim_broker_t *b, size_t i) {
    return i < b->nq ? b->q[i].name : NULL;
}
