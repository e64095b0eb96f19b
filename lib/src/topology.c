/*
 * topology.c - every exchange, queue and binding chorus declares, in one
 * place, so two services started with the same configuration can never
 * disagree about a name or an argument.
 *
 *                        alternate-exchange
 *   publish --> <ns>.events (topic) -----------> <ns>.events.unrouted (fanout)
 *                   |  "<svc>.<Type>" bindings              |
 *                   v                                       v
 *               <ns>.<svc>  (quorum | classic)         <ns>.unrouted
 *                   |   ^  ^
 *   retry later:    |   |  |  TTL expires: dead-letter back through
 *   <ns>.<svc>.retry|   |  |  <ns>.<svc>.retry, key "<ns>.<svc>"
 *   (direct) ------>|   |  +-- key "<ns>.<svc>": also a redelivered message
 *       key = queue v   |      sent back with its count (classic queues)
 *               <ns>.<svc>.retry.<ms>   (one per configured delay)
 *
 *   malformed / rejected / exhausted / forbidden producer (chorus' publish
 *   with fault headers), and what the broker itself dead-letters from the
 *   service queue (a delivery limit reached; a message chorus rejected
 *   unread):
 *               --> <ns>.<svc>.dlx (direct, key <svc>) --> <ns>.<svc>.dlq
 *
 * Dead-lettering and retries are explicit publishes with confirms followed
 * by the ack of the original delivery (consumer.c), so fault headers can be
 * added and nothing is lost between the two.  The retry queues' own
 * dead-lettering back into the service queue is RabbitMQ's: for quorum
 * queues it uses the at-least-once strategy (which needs reject-publish
 * overflow), so an expiring message is never dropped on the way back.
 *
 * Every exchange a service publishes to is its own or the events
 * exchange, where topic permissions limit it to its own routing-key
 * prefix: nothing goes through the default exchange, so a service's broker
 * user needs no write permission on amq.default, and it cannot put a
 * message straight into another service's queue.
 *
 * The service queue's own dead-letter exchange is the backstop against a
 * message that keeps coming back unsettled (it crashes the process, or
 * cannot be read): a quorum queue dead-letters it after "x-delivery-limit"
 * returns; a classic queue has no such limit, so chorus counts
 * redeliveries itself (consumer.c).
 *
 * chorus__topology_build() makes the plan as data; unit tests check it
 * without a broker.  chorus__topology_declare() sends it, after every
 * (re)connect; every declaration is idempotent.
 */
#include "topology_int.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool fmt(char *out, const char *f, const char *a, const char *b) {
    int n = snprintf(out, CHORUS__NAME_MAX, f, a, b);
    return n > 0 && n < CHORUS__NAME_MAX;
}

chorus_err_t chorus__names_build(const char *ns, const char *service,
                                 const chorus__retry_schedule_t *retry,
                                 chorus__names_t *n) {
    memset(n, 0, sizeof(*n));
    if (!ns || !*ns || !service || !*service)
        return CHORUS_ERR_INVALID_ARG;
    if (!fmt(n->exchange, "%s.events%s", ns, "") ||
        !fmt(n->unrouted_exchange, "%s.events.unrouted%s", ns, "") ||
        !fmt(n->unrouted_queue, "%s.unrouted%s", ns, "") ||
        !fmt(n->dlx, "%s.%s.dlx", ns, service) ||
        !fmt(n->retry_exchange, "%s.%s.retry", ns, service) ||
        !fmt(n->queue, "%s.%s", ns, service) ||
        !fmt(n->dlq, "%s.%s.dlq", ns, service))
        return CHORUS_ERR_INVALID_ARG;
    for (int i = 0; retry && i < retry->ndelays; i++) {
        char ms[32];
        snprintf(ms, sizeof(ms), "%ld", retry->delays_ms[i]);
        char base[CHORUS__NAME_MAX];
        if (!fmt(base, "%s.%s", ns, service) ||
            !fmt(n->retry[i], "%s.retry.%s", base, ms))
            return CHORUS_ERR_INVALID_ARG;
    }
    n->nretry = retry ? retry->ndelays : 0;
    return CHORUS_OK;
}

static void arg_str(chorus__topo_op_t *op, const char *k, const char *v) {
    chorus__arg_t *a = &op->args[op->nargs++];
    snprintf(a->key, sizeof(a->key), "%s", k);
    snprintf(a->s, sizeof(a->s), "%s", v);
    a->is_int = false;
}

static void arg_int(chorus__topo_op_t *op, const char *k, long long v) {
    chorus__arg_t *a = &op->args[op->nargs++];
    snprintf(a->key, sizeof(a->key), "%s", k);
    a->i = v;
    a->is_int = true;
}

static void arg_bool(chorus__topo_op_t *op, const char *k, bool v) {
    arg_int(op, k, v);
    op->args[op->nargs - 1].is_bool = true;
}

static chorus__topo_op_t *add(chorus__topology_t *t, chorus__op_kind_t kind,
                              const char *name) {
    chorus__topo_op_t *op = &t->ops[t->nops++];
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    snprintf(op->name, sizeof(op->name), "%s", name);
    return op;
}

static void exchange(chorus__topology_t *t, const char *name, const char *type) {
    chorus__topo_op_t *op = add(t, CHORUS__OP_EXCHANGE, name);
    snprintf(op->type, sizeof(op->type), "%s", type);
}

static chorus__topo_op_t *queue(chorus__topology_t *t, const char *name) {
    chorus__topo_op_t *op = add(t, CHORUS__OP_QUEUE, name);
    arg_str(op, "x-queue-type", t->quorum ? "quorum" : "classic");
    return op;
}

static void bind(chorus__topology_t *t, const char *q, const char *ex,
                 const char *key) {
    chorus__topo_op_t *op = add(t, CHORUS__OP_BIND, q);
    snprintf(op->source, sizeof(op->source), "%s", ex);
    snprintf(op->key, sizeof(op->key), "%s", key);
}

chorus_err_t chorus__topology_build(const chorus__topology_spec_t *spec,
                                    chorus__topology_t *t) {
    memset(t, 0, sizeof(*t));
    chorus_err_t rc = chorus__names_build(spec->ns, spec->service, spec->retry,
                                          &t->names);
    if (rc)
        return rc;
    for (int i = 0; i < spec->nbindings; i++)
        if (strlen(spec->bindings[i]) >= CHORUS__NAME_MAX)
            return CHORUS_ERR_INVALID_ARG;
    t->quorum = spec->quorum;
    t->prefetch = spec->prefetch;
    t->ops = calloc((size_t)(14 + spec->nbindings + 2 * t->names.nretry),
                    sizeof(*t->ops));
    if (!t->ops)
        return CHORUS_ERR_NOMEM;
    const chorus__names_t *n = &t->names;

    /* Unroutable events stay visible: the events exchange's alternate. */
    exchange(t, n->unrouted_exchange, "fanout");
    queue(t, n->unrouted_queue);
    bind(t, n->unrouted_queue, n->unrouted_exchange, "");
    exchange(t, n->exchange, "topic");
    arg_str(&t->ops[t->nops - 1], "alternate-exchange", n->unrouted_exchange);

    /* The DLQ is always a classic queue: browsing it (scripts/dlq) hands
     * messages back with nack, and only a classic queue puts a returned
     * message back in its original place; a quorum queue (RabbitMQ 3.10)
     * puts it behind whatever arrived meanwhile. */
    exchange(t, n->dlx, "direct");
    chorus__topo_op_t *dlq = add(t, CHORUS__OP_QUEUE, n->dlq);
    arg_str(dlq, "x-queue-type", "classic");
    bind(t, n->dlq, n->dlx, spec->service);

    chorus__topo_op_t *q = queue(t, n->queue);
    arg_str(q, "x-dead-letter-exchange", n->dlx);
    arg_str(q, "x-dead-letter-routing-key", spec->service);
    if (t->quorum) {
        arg_int(q, "x-delivery-limit", spec->delivery_limit > 0 ? spec->delivery_limit : 20);
        if (!spec->retry_at_most_once) {
            arg_str(q, "x-dead-letter-strategy", "at-least-once");
            arg_str(q, "x-overflow", "reject-publish");
        }
    }
    /* One consumer at a time, the others standing by: the order the
     * queue holds is the order of handling (README, "Ordering"). */
    if (spec->single_active)
        arg_bool(q, "x-single-active-consumer", true);
    for (int i = 0; i < spec->nbindings; i++)
        bind(t, n->queue, n->exchange, spec->bindings[i]);

    /* Retries and counted redeliveries go through the service's own
     * exchange, never the default one. */
    exchange(t, n->retry_exchange, "direct");
    bind(t, n->queue, n->retry_exchange, n->queue);
    for (int i = 0; i < n->nretry; i++) {
        chorus__topo_op_t *op = queue(t, n->retry[i]);
        arg_int(op, "x-message-ttl", spec->retry->delays_ms[i]);
        /* Back through the retry exchange too: dead-lettering to "" would
         * need write permission on amq.default to declare the queue. */
        arg_str(op, "x-dead-letter-exchange", n->retry_exchange);
        arg_str(op, "x-dead-letter-routing-key", n->queue);
        if (t->quorum && !spec->retry_at_most_once) {
            arg_str(op, "x-dead-letter-strategy", "at-least-once");
            arg_str(op, "x-overflow", "reject-publish");
        }
        bind(t, n->retry[i], n->retry_exchange, n->retry[i]);
    }
    return CHORUS_OK;
}

void chorus__topology_free(chorus__topology_t *t) {
    free(t->ops);
    t->ops = NULL;
    t->nops = 0;
}

const chorus__arg_t *chorus__op_arg(const chorus__topo_op_t *op, const char *key) {
    for (int i = 0; i < op->nargs; i++)
        if (strcmp(op->args[i].key, key) == 0)
            return &op->args[i];
    return NULL;
}

/* ---- declaration -------------------------------------------------------- */

chorus_err_t chorus__amqp_reply_error(amqp_connection_state_t st,
                                      amqp_channel_t channel,
                                      amqp_rpc_reply_t r, const char *what,
                                      char *errstr, size_t size) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return CHORUS_OK;
    case AMQP_RESPONSE_NONE:
        chorus__errstr(errstr, size, "%s: no reply", what);
        return CHORUS_ERR_PROTOCOL;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        chorus__errstr(errstr, size, "%s: %s", what,
                       amqp_error_string2(r.library_error));
        return r.library_error == AMQP_STATUS_TIMEOUT ? CHORUS_ERR_TIMEOUT
                                                      : CHORUS_ERR_CONN_CLOSED;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        break;
    }
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        chorus__errstr(errstr, size, "%s: broker closed the channel: %u %.*s",
                       what, m->reply_code, (int)m->reply_text.len,
                       (const char *)m->reply_text.bytes);
        amqp_channel_close_ok_t ok = {0};
        amqp_send_method(st, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        if (m->reply_code == AMQP_PRECONDITION_FAILED)
            return CHORUS_ERR_PRECONDITION;
        if (m->reply_code == AMQP_NOT_FOUND)
            return CHORUS_ERR_NOT_FOUND;
        return CHORUS_ERR_CHANNEL_CLOSED;
    }
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = r.reply.decoded;
        chorus__errstr(errstr, size, "%s: broker closed the connection: %u %.*s",
                       what, m->reply_code, (int)m->reply_text.len,
                       (const char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        if (m->reply_code == AMQP_ACCESS_REFUSED)
            return CHORUS_ERR_AUTH;
        return CHORUS_ERR_CONN_CLOSED;
    }
    chorus__errstr(errstr, size, "%s: unexpected method 0x%08x", what, r.reply.id);
    return CHORUS_ERR_PROTOCOL;
}

static amqp_table_t args_table(const chorus__topo_op_t *op,
                               amqp_table_entry_t *entries) {
    for (int i = 0; i < op->nargs; i++) {
        entries[i].key = amqp_cstring_bytes(op->args[i].key);
        if (op->args[i].is_bool) {
            entries[i].value.kind = AMQP_FIELD_KIND_BOOLEAN;
            entries[i].value.value.boolean = op->args[i].i != 0;
        } else if (op->args[i].is_int) {
            entries[i].value.kind = AMQP_FIELD_KIND_I64;
            entries[i].value.value.i64 = op->args[i].i;
        } else {
            entries[i].value.kind = AMQP_FIELD_KIND_UTF8;
            entries[i].value.value.bytes = amqp_cstring_bytes(op->args[i].s);
        }
    }
    return (amqp_table_t){.num_entries = op->nargs, .entries = entries};
}

static chorus_err_t declare_one(amqp_connection_state_t st, amqp_channel_t ch,
                                const chorus__topo_op_t *op, char *errstr,
                                size_t size) {
    amqp_table_entry_t entries[8];
    amqp_table_t args = args_table(op, entries);
    char what[CHORUS__NAME_MAX * 3 + 64];
    switch (op->kind) {
    case CHORUS__OP_EXCHANGE:
        amqp_exchange_declare(st, ch, amqp_cstring_bytes(op->name),
                              amqp_cstring_bytes(op->type), 0, 1, 0, 0, args);
        snprintf(what, sizeof(what), "declaring exchange '%s'", op->name);
        break;
    case CHORUS__OP_QUEUE:
        amqp_queue_declare(st, ch, amqp_cstring_bytes(op->name), 0, 1, 0, 0, args);
        snprintf(what, sizeof(what), "declaring queue '%s'", op->name);
        break;
    case CHORUS__OP_BIND:
        amqp_queue_bind(st, ch, amqp_cstring_bytes(op->name),
                        amqp_cstring_bytes(op->source), amqp_cstring_bytes(op->key),
                        args);
        snprintf(what, sizeof(what), "binding queue '%s' to '%s' with key '%s'",
                 op->name, op->source, op->key);
        break;
    }
    chorus_err_t rc = chorus__amqp_reply_error(st, ch, amqp_get_rpc_reply(st), what, errstr,
                                               size);
    if (rc == CHORUS_ERR_PRECONDITION && op->kind == CHORUS__OP_QUEUE) {
        /* RabbitMQ never changes an existing queue's arguments: say what
         * to do rather than leave "inequivalent arg" to be decoded */
        size_t len = strlen(errstr);
        if (len + 1 < size)
            snprintf(errstr + len, size - len,
                     " -- the queue exists with other arguments (was topology.queue.type, "
                     "consume.single.active, consume.delivery.limit or a retry delay "
                     "changed?); RabbitMQ cannot change an existing queue's arguments: drain "
                     "and delete the queue, or start with the configuration it was declared "
                     "with");
    }
    return rc;
}

chorus_err_t chorus__topology_declare(amqp_connection_state_t st,
                                      amqp_channel_t channel,
                                      const chorus__topology_t *t, char *errstr,
                                      size_t size) {
    for (int i = 0; i < t->nops; i++) {
        chorus_err_t rc = declare_one(st, channel, &t->ops[i], errstr, size);
        if (rc)
            return rc;
    }
    return CHORUS_OK;
}

/* ------------------------------------------------------------------------
 * The plan as a RabbitMQ definitions document: what an operator imports
 * (rabbitmqctl import_definitions, or POST /api/definitions) to create
 * everything before the participant starts.  Its arguments are those
 * chorus__topology_declare() sends, so the participant's own declaration
 * is then a no-op, and a difference would fail it with PRECONDITION_FAILED.
 */
static cJSON *args_json(const chorus__topo_op_t *op) {
    cJSON *a = cJSON_CreateObject();
    for (int i = 0; a && i < op->nargs; i++) {
        const chorus__arg_t *x = &op->args[i];
        if (!(x->is_bool  ? cJSON_AddBoolToObject(a, x->key, x->i != 0)
              : x->is_int ? cJSON_AddNumberToObject(a, x->key, (double)x->i)
                          : cJSON_AddStringToObject(a, x->key, x->s))) {
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static bool add_op_json(cJSON *arr, const chorus__topo_op_t *op, const char *vhost) {
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(arr, o))
        return (cJSON_Delete(o), false);
    bool ok;
    switch (op->kind) {
    case CHORUS__OP_EXCHANGE:
        ok = cJSON_AddStringToObject(o, "name", op->name) &&
             cJSON_AddStringToObject(o, "vhost", vhost) &&
             cJSON_AddStringToObject(o, "type", op->type) &&
             cJSON_AddTrueToObject(o, "durable") && cJSON_AddFalseToObject(o, "auto_delete") &&
             cJSON_AddFalseToObject(o, "internal");
        break;
    case CHORUS__OP_QUEUE:
        ok = cJSON_AddStringToObject(o, "name", op->name) &&
             cJSON_AddStringToObject(o, "vhost", vhost) && cJSON_AddTrueToObject(o, "durable") &&
             cJSON_AddFalseToObject(o, "auto_delete");
        break;
    default:
        ok = cJSON_AddStringToObject(o, "source", op->source) &&
             cJSON_AddStringToObject(o, "vhost", vhost) &&
             cJSON_AddStringToObject(o, "destination", op->name) &&
             cJSON_AddStringToObject(o, "destination_type", "queue") &&
             cJSON_AddStringToObject(o, "routing_key", op->key);
        break;
    }
    cJSON *a = ok ? args_json(op) : NULL;
    return a && cJSON_AddItemToObject(o, "arguments", a);
}

char *chorus__topology_definitions(const chorus__topology_t *t, const char *vhost) {
    cJSON *doc = cJSON_CreateObject();
    cJSON *ex = cJSON_AddArrayToObject(doc, "exchanges");
    cJSON *qs = cJSON_AddArrayToObject(doc, "queues");
    cJSON *bs = cJSON_AddArrayToObject(doc, "bindings");
    bool ok = doc && ex && qs && bs;
    for (int i = 0; ok && i < t->nops; i++) {
        const chorus__topo_op_t *op = &t->ops[i];
        ok = add_op_json(op->kind == CHORUS__OP_EXCHANGE ? ex
                         : op->kind == CHORUS__OP_QUEUE  ? qs
                                                         : bs,
                         op, vhost);
    }
    char *out = ok ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    return out;
}
