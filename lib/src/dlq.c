/*
 * dlq.c - inspecting and repairing a service's dead-letter queue.
 *
 * Browsing must not lose, duplicate or reorder anything, so messages are
 * never taken out to be put back: they are fetched with basic.get and held
 * unacknowledged.  What the operator removes is acked; what is requeued is
 * first published to its original queue and confirmed, then acked; the rest
 * is handed back with basic.nack(requeue), one message at a time in queue
 * order, so it keeps its place.  If the process dies while holding
 * messages, the broker returns them all by itself.  Messages dead-lettered
 * while a command runs are behind the ones held, and untouched.
 *
 *   open -> fetch (hold N) -> requeue i / remove j ... -> finish
 *                               |                          |
 *            publish to the original queue,        ack removed, nack the
 *            wait for the confirm                  rest back in order
 *
 * Channel 1 holds the messages; channel 2, in confirm mode, publishes.
 */
#include "amqp_json.h"
#include "chorus_int.h"

#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CH_GET 1
#define CH_PUB 2

struct chorus_dead_letter_s {
    uint64_t tag;
    amqp_message_t msg;
    chorus_envelope_t *env; /* NULL when the body does not decode */
    bool leave;             /* acked by finish (requeued or removed) */
    struct dl_str {         /* NUL-terminated copies handed out by the */
        bool prop;          /* accessors, made on first use, freed with it */
        char *key, *value;
    } *strs;
    int nstrs;
};

struct chorus_dlq_s {
    amqp_connection_state_t st;
    char queue[CHORUS__NAME_MAX];
    char service_queue[CHORUS__NAME_MAX];
    chorus_dead_letter_t *items;
    size_t n, cap;
};

static bool reply_ok(amqp_connection_state_t st, char *err, size_t size, const char *what) {
    return chorus__amqp_reply_error(st, 0, amqp_get_rpc_reply(st), what, err, size) == CHORUS_OK;
}

chorus_dlq_t *chorus_dlq_open(const char *url, const char *ns, const char *service,
                              char *errstr, size_t size) {
    chorus__url_t u[CHORUS__MAX_URLS];
    chorus__names_t names;
    if (chorus__url_parse_list(url, u, CHORUS__MAX_URLS, errstr, size) < 1)
        return NULL;
    if (chorus__names_build(ns && *ns ? ns : "chorus", service, NULL, &names)) {
        chorus__errstr(errstr, size, "bad namespace or service name");
        return NULL;
    }
    chorus_dlq_t *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    snprintf(q->queue, sizeof(q->queue), "%s", names.dlq);
    snprintf(q->service_queue, sizeof(q->service_queue), "%s", names.queue);
    q->st = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(q->st);
    struct timeval tv = {.tv_sec = 10};
    amqp_set_rpc_timeout(q->st, &tv);
    amqp_set_handshake_timeout(q->st, &tv);
    int s = sock ? amqp_socket_open_noblock(sock, u[0].host, u[0].port, &tv) : AMQP_STATUS_NO_MEMORY;
    if (s) {
        chorus__errstr(errstr, size, "cannot connect to the broker: %s", amqp_error_string2(s));
        goto fail;
    }
    amqp_rpc_reply_t r = amqp_login(q->st, u[0].vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                    u[0].user, u[0].pass);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        chorus__errstr(errstr, size, "the broker refused the login");
        goto fail;
    }
    amqp_channel_open(q->st, CH_GET);
    if (!reply_ok(q->st, errstr, size, "channel.open"))
        goto fail;
    amqp_channel_open(q->st, CH_PUB);
    if (!reply_ok(q->st, errstr, size, "channel.open"))
        goto fail;
    amqp_confirm_select(q->st, CH_PUB);
    if (!reply_ok(q->st, errstr, size, "confirm.select"))
        goto fail;
    amqp_queue_declare(q->st, CH_GET, amqp_cstring_bytes(q->queue), 1, 0, 0, 0, amqp_empty_table);
    if (chorus__amqp_reply_error(q->st, CH_GET, amqp_get_rpc_reply(q->st), "looking up the DLQ",
                                 errstr, size)) {
        chorus__errstr(errstr, size, "no dead-letter queue '%s' (has service '%s' ever run?)",
                       q->queue, service);
        goto fail;
    }
    return q;
fail:
    amqp_destroy_connection(q->st);
    free(q);
    return NULL;
}

const char *chorus_dlq_queue(const chorus_dlq_t *q) { return q->queue; }
size_t chorus_dlq_count(const chorus_dlq_t *q) { return q->n; }

const chorus_dead_letter_t *chorus_dlq_at(const chorus_dlq_t *q, size_t i) {
    return i < q->n ? &q->items[i] : NULL;
}

chorus_err_t chorus_dlq_fetch(chorus_dlq_t *q, size_t max) {
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(q->st, CH_GET, amqp_cstring_bytes(q->queue),
                                                     1, 0, 0, 0, amqp_empty_table);
    if (!ok)
        return CHORUS_ERR_CONN_CLOSED;
    size_t want = ok->message_count; /* what is there now; later arrivals stay put */
    if (max && max < want)
        want = max;
    while (q->n < want) {
        amqp_rpc_reply_t r = amqp_basic_get(q->st, CH_GET, amqp_cstring_bytes(q->queue), 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            return CHORUS_ERR_CONN_CLOSED;
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
            break;
        uint64_t tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
        if (q->n == q->cap) {
            size_t ncap = q->cap ? q->cap * 2 : 64;
            chorus_dead_letter_t *n = realloc(q->items, ncap * sizeof(*n));
            if (!n)
                return CHORUS_ERR_NOMEM;
            q->items = n;
            q->cap = ncap;
        }
        chorus_dead_letter_t *dl = &q->items[q->n];
        memset(dl, 0, sizeof(*dl));
        dl->tag = tag;
        if (amqp_read_message(q->st, CH_GET, &dl->msg, 0).reply_type != AMQP_RESPONSE_NORMAL)
            return CHORUS_ERR_CONN_CLOSED;
        q->n++;
        chorus_envelope_parse(dl->msg.body.bytes, dl->msg.body.len, NULL, &dl->env, NULL);
    }
    return CHORUS_OK;
}

static const amqp_table_t *headers(const chorus_dead_letter_t *dl) {
    return dl->msg.properties._flags & AMQP_BASIC_HEADERS_FLAG ? &dl->msg.properties.headers : NULL;
}

/* The accessors return borrowed C strings; AMQP strings are not
 * NUL-terminated, so each is copied once, on first use. */
static const char *cached(const chorus_dead_letter_t *dl, bool prop, const char *key,
                          amqp_bytes_t b) {
    chorus_dead_letter_t *m = (chorus_dead_letter_t *)dl;
    for (int i = 0; i < m->nstrs; i++)
        if (m->strs[i].prop == prop && strcmp(m->strs[i].key, key) == 0)
            return m->strs[i].value;
    struct dl_str *n = realloc(m->strs, sizeof(*n) * (size_t)(m->nstrs + 1));
    if (!n)
        return NULL;
    m->strs = n;
    n[m->nstrs] = (struct dl_str){.prop = prop,
                                  .key = strdup(key),
                                  .value = strndup(b.bytes ? b.bytes : "", b.len)};
    if (!n[m->nstrs].key || !n[m->nstrs].value) {
        free(n[m->nstrs].key);
        free(n[m->nstrs].value);
        return NULL;
    }
    return n[m->nstrs++].value;
}

const char *chorus_dead_letter_header(const chorus_dead_letter_t *dl, const char *key) {
    amqp_table_entry_t *e = chorus__table_find(headers(dl), key);
    if (!e || e->value.kind != AMQP_FIELD_KIND_UTF8)
        return NULL;
    return cached(dl, false, key, e->value.value.bytes);
}

long long chorus_dead_letter_header_int(const chorus_dead_letter_t *dl, const char *key,
                                        long long dflt) {
    return chorus__table_int(headers(dl), key, dflt);
}

static const char *prop(const chorus_dead_letter_t *dl, amqp_flags_t flag, amqp_bytes_t b,
                        const char *key) {
    const char *v = (dl->msg.properties._flags & flag) && b.len ? cached(dl, true, key, b) : NULL;
    return v ? v : "";
}

const char *chorus_dead_letter_event_id(const chorus_dead_letter_t *dl) {
    return dl->env ? chorus_envelope_event_id(dl->env)
                   : prop(dl, AMQP_BASIC_MESSAGE_ID_FLAG, dl->msg.properties.message_id, "message_id");
}

const char *chorus_dead_letter_event_type(const chorus_dead_letter_t *dl) {
    return dl->env ? chorus_envelope_event_type(dl->env)
                   : prop(dl, AMQP_BASIC_TYPE_FLAG, dl->msg.properties.type, "type");
}

static cJSON *x_death(const chorus_dead_letter_t *dl) {
    cJSON *out = cJSON_CreateArray();
    amqp_table_entry_t *e = chorus__table_find(headers(dl), "x-death");
    if (!e || e->value.kind != AMQP_FIELD_KIND_ARRAY)
        return out;
    for (int i = 0; i < e->value.value.array.num_entries; i++) {
        const amqp_field_value_t *v = &e->value.value.array.entries[i];
        if (v->kind == AMQP_FIELD_KIND_TABLE)
            cJSON_AddItemToArray(out, chorus__table_to_plain(&v->value.table));
    }
    return out;
}

static void add_str_or_null(cJSON *o, const char *k, const char *v) {
    cJSON_AddItemToObject(o, k, v ? cJSON_CreateString(v) : cJSON_CreateNull());
}

char *chorus_dead_letter_json(const chorus_dead_letter_t *dl) {
    cJSON *o = cJSON_CreateObject();
    add_str_or_null(o, "event_id", chorus_dead_letter_event_id(dl));
    add_str_or_null(o, "event_type", chorus_dead_letter_event_type(dl));
    add_str_or_null(o, "reason", chorus_dead_letter_header(dl, CHORUS__H_REASON));
    add_str_or_null(o, "error", chorus_dead_letter_header(dl, CHORUS__H_ERROR));
    add_str_or_null(o, "original_queue", chorus_dead_letter_header(dl, CHORUS__H_ORIG_Q));
    add_str_or_null(o, "original_routing_key", chorus_dead_letter_header(dl, CHORUS__H_ORIG_RK));
    cJSON_AddNumberToObject(o, "attempts",
                            (double)chorus_dead_letter_header_int(dl, CHORUS__H_ATTEMPTS, 0));
    add_str_or_null(o, "time", chorus_dead_letter_header(dl, CHORUS__H_TIME));
    add_str_or_null(o, "fault_service", chorus_dead_letter_header(dl, CHORUS__H_SERVICE));
    cJSON_AddNumberToObject(o, "requeues",
                            (double)chorus_dead_letter_header_int(dl, "x-chorus-requeue-count", 0));
    cJSON *env = dl->env ? cJSON_ParseWithLength(dl->msg.body.bytes, dl->msg.body.len) : NULL;
    cJSON_AddItemToObject(o, "envelope", env ? env : cJSON_CreateNull());
    if (!env) {
        char *raw = strndup(dl->msg.body.bytes ? dl->msg.body.bytes : "", dl->msg.body.len);
        add_str_or_null(o, "body", raw);
        free(raw);
    }
    cJSON_AddItemToObject(o, "x_death", x_death(dl));
    cJSON *h = chorus__table_to_plain(headers(dl));
    cJSON_DeleteItemFromObjectCaseSensitive(h, "x-delivery-count"); /* the broker's, per read */
    cJSON_AddItemToObject(o, "headers", h);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *chorus_dead_letter_export(const chorus_dead_letter_t *dl) {
    cJSON *o = cJSON_CreateObject();
    char *b = chorus__base64(dl->msg.body.bytes, dl->msg.body.len);
    add_str_or_null(o, "routing_key", chorus_dead_letter_header(dl, CHORUS__H_ORIG_RK));
    cJSON_AddItemToObject(o, "properties", chorus__props_to_json(&dl->msg.properties));
    cJSON *h = chorus__table_to_typed(headers(dl));
    cJSON_DeleteItemFromObjectCaseSensitive(h, "x-delivery-count"); /* the broker's, per read */
    cJSON_AddItemToObject(o, "headers", h);
    add_str_or_null(o, "body_base64", b);
    free(b);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Publishes on the confirm channel and waits for the broker's answer. */
static chorus_err_t publish_confirmed(chorus_dlq_t *q, amqp_bytes_t exchange, amqp_bytes_t rk,
                                      const amqp_basic_properties_t *p, amqp_bytes_t body) {
    if (amqp_basic_publish(q->st, CH_PUB, exchange, rk, 1, 0, p, body))
        return CHORUS_ERR_CONN_CLOSED;
    bool returned = false;
    for (;;) {
        amqp_frame_t f;
        struct timeval tv = {.tv_sec = 10};
        if (amqp_simple_wait_frame_noblock(q->st, &f, &tv) != AMQP_STATUS_OK)
            return CHORUS_ERR_TIMEOUT;
        if (f.frame_type != AMQP_FRAME_METHOD || f.channel != CH_PUB)
            continue;
        if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            amqp_message_t m;
            if (amqp_read_message(q->st, CH_PUB, &m, 0).reply_type == AMQP_RESPONSE_NORMAL)
                amqp_destroy_message(&m);
            returned = true;
        } else if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            return returned ? CHORUS_ERR_UNROUTABLE : CHORUS_OK;
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            return CHORUS_ERR_NACKED;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
            return CHORUS_ERR_CHANNEL_CLOSED;
        }
    }
}

chorus_err_t chorus_dlq_requeue(chorus_dlq_t *q, size_t i) {
    if (i >= q->n || q->items[i].leave)
        return CHORUS_ERR_INVALID_ARG;
    chorus_dead_letter_t *dl = &q->items[i];
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t p = dl->msg.properties;
    const amqp_table_t *h = headers(dl);
    int n = h ? h->num_entries : 0;
    amqp_table_entry_t *e = amqp_pool_alloc(&pool, sizeof(*e) * (size_t)(n + 2));
    int k = 0;
    for (int j = 0; e && j < n; j++) {
        amqp_bytes_t key = h->entries[j].key;
        /* the broker's own count of this queue's deliveries does not travel */
        if ((key.len == 16 && memcmp(key.bytes, "x-delivery-count", 16) == 0) ||
            (key.len == strlen(CHORUS__H_ATTEMPT) && memcmp(key.bytes, CHORUS__H_ATTEMPT, key.len) == 0) ||
            (key.len == 22 && memcmp(key.bytes, "x-chorus-requeue-count", 22) == 0))
            continue;
        e[k++] = h->entries[j];
    }
    chorus_err_t rc = CHORUS_ERR_NOMEM;
    if (e) {
        e[k].key = amqp_cstring_bytes("x-chorus-requeue-count");
        e[k].value.kind = AMQP_FIELD_KIND_I64;
        e[k++].value.value.i64 = chorus__table_int(h, "x-chorus-requeue-count", 0) + 1;
        e[k].key = amqp_cstring_bytes(CHORUS__H_ATTEMPT);
        e[k].value.kind = AMQP_FIELD_KIND_I64;
        e[k++].value.value.i64 = 1;
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers = (amqp_table_t){.num_entries = k, .entries = e};
        const char *orig = chorus_dead_letter_header(dl, CHORUS__H_ORIG_Q);
        rc = publish_confirmed(q, amqp_empty_bytes,
                               amqp_cstring_bytes(orig ? orig : q->service_queue), &p,
                               dl->msg.body);
    }
    empty_amqp_pool(&pool);
    if (!rc)
        dl->leave = true;
    return rc;
}

chorus_err_t chorus_dlq_remove(chorus_dlq_t *q, size_t i) {
    if (i >= q->n)
        return CHORUS_ERR_INVALID_ARG;
    q->items[i].leave = true;
    return CHORUS_OK;
}

chorus_err_t chorus_dlq_import(chorus_dlq_t *q, const char *line, char *errstr, size_t size) {
    cJSON *j = cJSON_Parse(line);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t p = {0};
    amqp_bytes_t body = {0};
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "body_base64");
    chorus_err_t rc = CHORUS_ERR_PARSE;
    cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "headers"),
                                            "x-delivery-count");
    if (!j || !chorus__props_from_json(cJSON_GetObjectItemCaseSensitive(j, "properties"), &p, &pool) ||
        !chorus__table_from_typed(cJSON_GetObjectItemCaseSensitive(j, "headers"), &p.headers, &pool) ||
        !cJSON_IsString(b) || !chorus__unbase64(b->valuestring, &body)) {
        chorus__errstr(errstr, size, "not a line of 'dlq export' (properties, headers, body_base64)");
    } else {
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        rc = publish_confirmed(q, amqp_empty_bytes, amqp_cstring_bytes(q->queue), &p, body);
        if (rc)
            chorus__errstr(errstr, size, "publishing into %s: %s", q->queue, chorus_strerror(rc));
    }
    free(body.bytes);
    empty_amqp_pool(&pool);
    cJSON_Delete(j);
    return rc;
}

/* Ready messages in the DLQ now (passive declare); -1 on error. */
static long ready_count(chorus_dlq_t *q) {
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(q->st, CH_GET, amqp_cstring_bytes(q->queue),
                                                     1, 0, 0, 0, amqp_empty_table);
    return ok ? (long)ok->message_count : -1;
}

chorus_err_t chorus_dlq_finish(chorus_dlq_t *q) {
    chorus_err_t rc = CHORUS_OK;
    long before = q->n ? ready_count(q) : 0, back = 0;
    for (size_t i = 0; i < q->n; i++) {
        chorus_dead_letter_t *dl = &q->items[i];
        int s = dl->leave ? amqp_basic_ack(q->st, CH_GET, dl->tag, 0)
                          : amqp_basic_nack(q->st, CH_GET, dl->tag, 0, 1);
        back += !dl->leave;
        if (s)
            rc = CHORUS_ERR_CONN_CLOSED; /* the broker gives back what was not acked */
        amqp_destroy_message(&dl->msg);
        chorus_envelope_destroy(dl->env);
        for (int k = 0; k < dl->nstrs; k++) {
            free(dl->strs[k].key);
            free(dl->strs[k].value);
        }
        free(dl->strs);
    }
    /* A quorum queue applies returns asynchronously: wait until every
     * message handed back is ready again, so that the next command (which
     * may take newer arrivals) finds them first and in their order. */
    for (int tries = 0; back > 0 && before >= 0 && tries < 250; tries++) {
        long now = ready_count(q);
        if (now < 0 || now >= before + back)
            break;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    q->n = 0;
    amqp_maybe_release_buffers(q->st);
    return rc;
}

void chorus_dlq_close(chorus_dlq_t *q) {
    if (!q)
        return;
    chorus_dlq_finish(q);
    amqp_channel_close(q->st, CH_PUB, AMQP_REPLY_SUCCESS);
    amqp_channel_close(q->st, CH_GET, AMQP_REPLY_SUCCESS);
    amqp_connection_close(q->st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(q->st);
    free(q->items);
    free(q);
}
