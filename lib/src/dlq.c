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
 *
 * What a dead letter is reported as (show) leaves nothing out: a body that
 * is no envelope is shown raw (base64 when it is not text), headers in the
 * plain form of amqp_json.h with a note for everything shown other than
 * as itself.  Where the broker dead-lettered the message itself (a
 * delivery limit, or chorus rejecting what it cannot read) there is no
 * x-chorus-fault-reason; the fault fields then come from x-death.  Every
 * publish (requeue, import) is first measured with chorus__props_fit(), so
 * a message that cannot be sent is refused on its own instead of breaking
 * the connection.
 */
#include "amqp_json.h"
#include "amqp_props_int.h"
#include "chorus_int.h"
#include "json_int.h"

#include <amqp_tcp_socket.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CH_GET 1
#define CH_PUB 2

#define H_REQUEUES "x-chorus-requeue-count"
#define H_DROPPED "x-chorus-dropped-headers"
#define H_DELIVERY_COUNT "x-delivery-count"

/* What the accessors hand out, made on first use, freed with the message. */
typedef enum { STR_HEADER, STR_PROP, STR_FAULT } str_kind_t;

struct chorus_dead_letter_s {
    uint64_t tag;
    amqp_message_t msg;
    chorus_envelope_t *env; /* NULL when the body does not decode */
    char *env_error;        /* then why (malloc'd) */
    bool leave;             /* acked by finish (requeued or removed) */
    struct dl_str {
        str_kind_t kind;
        char *key, *value; /* value NULL: known to be absent */
        bool base64;       /* value is "base64:..." (the bytes are not text) */
    } *strs;
    int nstrs;
};

struct chorus_dlq_s {
    amqp_connection_state_t st;
    char queue[CHORUS__NAME_MAX];
    char service_queue[CHORUS__NAME_MAX];
    chorus_dead_letter_t *items;
    size_t n, cap;
    char err[768]; /* why the last requeue failed */
};

static bool reply_ok(amqp_connection_state_t st, char *err, size_t size, const char *what) {
    return chorus__amqp_reply_error(st, 0, amqp_get_rpc_reply(st), what, err, size) == CHORUS_OK;
}

chorus_dlq_t *chorus_dlq_open(const char *url, const char *ns, const char *service,
                              char *errstr, size_t size) {
    chorus__url_t u[CHORUS__MAX_URLS];
    chorus__names_t names;
    int nurls = chorus__url_parse_list(url, u, CHORUS__MAX_URLS, errstr, size);
    if (nurls < 1)
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
    /* The participants' way: every broker of the list in turn, the
     * timeouts of the configuration (amqp.*.timeout.ms), no heartbeat. */
    chorus_conf_t *conf = chorus_conf_new();
    if (!conf) {
        free(q);
        return NULL;
    }
    chorus__amqp_opts_t o;
    chorus__amqp_opts_from_conf(conf, "chorus-dlq", &o);
    o.heartbeat_s = 0;
    chorus_err_t rc = CHORUS_ERR_CONNECT;
    for (int i = 0; i < nurls; i++) {
        char where[300], why[512];
        chorus__url_describe(&u[i], where, sizeof(where));
        if ((rc = chorus__amqp_login(&u[i], &o, &q->st, why, sizeof(why))) == CHORUS_OK)
            break;
        chorus__errstr(errstr, size, "cannot connect to the broker %s: %s", where, why);
        if (q->st)
            amqp_destroy_connection(q->st);
        q->st = NULL;
    }
    chorus_conf_destroy(conf);
    if (rc) {
        free(q);
        return NULL;
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

const char *chorus_dlq_last_error(const chorus_dlq_t *q) { return q->err; }

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
        /* not amqp_read_message(): its clone refuses an empty header name */
        if (chorus__read_message(q->st, CH_GET, &dl->msg, 10000) != AMQP_STATUS_OK)
            return CHORUS_ERR_CONN_CLOSED;
        q->n++;
        chorus_error_t *perr = NULL;
        if (chorus_envelope_parse(dl->msg.body.bytes, dl->msg.body.len, NULL, &dl->env, &perr))
            dl->env_error = chorus__strdup(chorus_error_string(perr));
        chorus_error_destroy(perr);
    }
    return CHORUS_OK;
}

static const amqp_table_t *headers(const chorus_dead_letter_t *dl) {
    return dl->msg.properties._flags & AMQP_BASIC_HEADERS_FLAG ? &dl->msg.properties.headers : NULL;
}

/* ---- the strings the accessors hand out ------------------------------------ */

/* AMQP strings are not NUL-terminated, so each is copied once, on first
 * use; *found says whether it was made before (its value may be NULL). */
static struct dl_str *cache_find(const chorus_dead_letter_t *dl, str_kind_t kind,
                                 const char *key) {
    for (int i = 0; i < dl->nstrs; i++)
        if (dl->strs[i].kind == kind && strcmp(dl->strs[i].key, key) == 0)
            return &dl->strs[i];
    return NULL;
}

/* Takes @p value (malloc'd, may be NULL for "absent"). */
static struct dl_str *cache_put(const chorus_dead_letter_t *dl, str_kind_t kind, const char *key,
                                char *value, bool base64) {
    chorus_dead_letter_t *m = (chorus_dead_letter_t *)dl;
    struct dl_str *n = realloc(m->strs, sizeof(*n) * (size_t)(m->nstrs + 1));
    char *k = strdup(key);
    if (!n || !k) {
        if (n)
            m->strs = n;
        free(k);
        free(value);
        return NULL;
    }
    m->strs = n;
    n[m->nstrs] = (struct dl_str){.kind = kind, .key = k, .value = value, .base64 = base64};
    return &n[m->nstrs++];
}

static const amqp_field_value_t *header(const chorus_dead_letter_t *dl, const char *key) {
    amqp_table_entry_t *e = chorus__table_find(headers(dl), key);
    return e ? &e->value : NULL;
}

static const amqp_field_value_t *table_get(const amqp_table_t *t, const char *key) {
    amqp_table_entry_t *e = chorus__table_find(t, key);
    return e ? &e->value : NULL;
}

/* The bytes of a string-like value (S or x). */
static bool str_of(const amqp_field_value_t *v, amqp_bytes_t *out) {
    if (!v || (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES))
        return false;
    *out = v->value.bytes;
    return true;
}

static bool bytes_eq(amqp_bytes_t b, const char *s) {
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.bytes, s, b.len) == 0);
}

const char *chorus_dead_letter_header(const chorus_dead_letter_t *dl, const char *key) {
    const amqp_field_value_t *v = header(dl, key);
    struct dl_str *c = cache_find(dl, STR_HEADER, key);
    if (c)
        return c->value;
    if (!v || v->kind != AMQP_FIELD_KIND_UTF8 ||
        (v->value.bytes.len && memchr(v->value.bytes.bytes, '\0', v->value.bytes.len)))
        return NULL; /* a C string cannot carry a NUL byte */
    char *s = malloc(v->value.bytes.len + 1);
    if (!s)
        return NULL;
    if (v->value.bytes.len)
        memcpy(s, v->value.bytes.bytes, v->value.bytes.len);
    s[v->value.bytes.len] = '\0';
    c = cache_put(dl, STR_HEADER, key, s, false);
    return c ? c->value : NULL;
}

long long chorus_dead_letter_header_int(const chorus_dead_letter_t *dl, const char *key,
                                        long long dflt) {
    return chorus__table_int(headers(dl), key, dflt);
}

/* A property as text, or "base64:..." when it is not; "" when absent. */
static const struct dl_str *prop(const chorus_dead_letter_t *dl, amqp_flags_t flag,
                                 amqp_bytes_t b, const char *key) {
    struct dl_str *c = cache_find(dl, STR_PROP, key);
    bool b64 = false;
    if (!c)
        c = cache_put(dl, STR_PROP, key,
                      (dl->msg.properties._flags & flag) ? chorus__text_or_base64(b, &b64)
                                                         : chorus__strdup(""),
                      b64);
    return c && c->value ? c : NULL;
}

const char *chorus_dead_letter_event_id(const chorus_dead_letter_t *dl) {
    const struct dl_str *c;
    if (dl->env)
        return chorus_envelope_event_id(dl->env);
    c = prop(dl, AMQP_BASIC_MESSAGE_ID_FLAG, dl->msg.properties.message_id, "message_id");
    return c ? c->value : "";
}

const char *chorus_dead_letter_event_type(const chorus_dead_letter_t *dl) {
    const struct dl_str *c;
    if (dl->env)
        return chorus_envelope_event_type(dl->env);
    c = prop(dl, AMQP_BASIC_TYPE_FLAG, dl->msg.properties.type, "type");
    return c ? c->value : "";
}

/* ---- fault fields -------------------------------------------------------------- */

/* How the message came here: chorus' own dead-lettering names its reason
 * in x-chorus-fault-reason; without it, the broker dead-lettered it and
 * x-death[0] (RabbitMQ puts the latest death first) says where from. */
typedef struct {
    bool broker;
    const amqp_table_t *death; /* x-death[0], when it is a table */
    amqp_bytes_t reason;       /* the broker's reason */
} origin_t;

static origin_t origin(const chorus_dead_letter_t *dl) {
    origin_t o = {0};
    amqp_bytes_t r;
    const amqp_field_value_t *xd = header(dl, "x-death");
    if (str_of(header(dl, CHORUS__H_REASON), &r))
        return o;
    if (xd && xd->kind == AMQP_FIELD_KIND_ARRAY && xd->value.array.num_entries > 0 &&
        xd->value.array.entries[0].kind == AMQP_FIELD_KIND_TABLE)
        o.death = &xd->value.array.entries[0].value.table;
    o.broker = (o.death && str_of(table_get(o.death, "reason"), &o.reason)) ||
               str_of(header(dl, "x-last-death-reason"), &o.reason) ||
               str_of(header(dl, "x-first-death-reason"), &o.reason);
    return o;
}

static char *derived_queue(const chorus_dead_letter_t *dl, const origin_t *o) {
    amqp_bytes_t b;
    bool b64;
    if ((o->death && str_of(table_get(o->death, "queue"), &b)) ||
        str_of(header(dl, "x-last-death-queue"), &b) ||
        str_of(header(dl, "x-first-death-queue"), &b))
        return chorus__text_or_base64(b, &b64);
    return NULL;
}

static char *derived(const chorus_dead_letter_t *dl, const char *field, bool *b64) {
    origin_t o = origin(dl);
    amqp_bytes_t b;
    char buf[600];
    if (!o.broker)
        return NULL;
    if (strcmp(field, "reason") == 0) {
        if (bytes_eq(o.reason, "delivery_limit"))
            return chorus__strdup("delivery-limit");
        if (bytes_eq(o.reason, "rejected"))
            return chorus__strdup("unreadable");
        char *r = chorus__text_or_base64(o.reason, b64);
        if (r)
            snprintf(buf, sizeof(buf), "broker-%s", r);
        free(r);
        return r ? chorus__strdup(buf) : NULL;
    }
    if (strcmp(field, "original_queue") == 0)
        return derived_queue(dl, &o);
    if (strcmp(field, "original_routing_key") == 0) {
        const amqp_field_value_t *rks = o.death ? table_get(o.death, "routing-keys") : NULL;
        if (rks && rks->kind == AMQP_FIELD_KIND_ARRAY && rks->value.array.num_entries > 0 &&
            str_of(&rks->value.array.entries[0], &b))
            return chorus__text_or_base64(b, b64);
        return NULL;
    }
    if (strcmp(field, "time") == 0) {
        const amqp_field_value_t *t = o.death ? table_get(o.death, "time") : NULL;
        if (!t || t->kind != AMQP_FIELD_KIND_TIMESTAMP)
            return NULL;
        if (t->value.u64 > (uint64_t)(CHORUS__TS_MAX_MS / 1000)) {
            snprintf(buf, sizeof(buf), "%" PRIu64 " (seconds since 1970: after the year 9999)",
                     t->value.u64);
        } else {
            chorus_format_timestamp((int64_t)t->value.u64 * 1000, buf);
        }
        return chorus__strdup(buf);
    }
    if (strcmp(field, "error") == 0) {
        char *q = derived_queue(dl, &o), *r = chorus__text_or_base64(o.reason, b64);
        const char *from = q ? q : "its queue";
        if (bytes_eq(o.reason, "delivery_limit"))
            snprintf(buf, sizeof(buf), "the broker dead-lettered it from %s: delivered as often "
                     "as the queue's x-delivery-limit allows, never settled", from);
        else if (bytes_eq(o.reason, "rejected"))
            snprintf(buf, sizeof(buf), "the broker dead-lettered it from %s: chorus rejected it "
                     "unread (a body over its size limit, or headers it cannot decode)", from);
        else
            snprintf(buf, sizeof(buf), "the broker dead-lettered it from %s (x-death reason "
                     "\"%s\")", from, r ? r : "?");
        free(q);
        free(r);
        return chorus__strdup(buf);
    }
    return NULL;
}

static const struct {
    const char *field, *header;
} FAULT_FIELDS[] = {
    {"reason", CHORUS__H_REASON},
    {"error", CHORUS__H_ERROR},
    {"original_queue", CHORUS__H_ORIG_Q},
    {"original_routing_key", CHORUS__H_ORIG_RK},
    {"time", CHORUS__H_TIME},
    {"fault_service", CHORUS__H_SERVICE},
    {"dropped_headers", H_DROPPED},
};

static const struct dl_str *fault(const chorus_dead_letter_t *dl, const char *field) {
    size_t i = 0, nf = sizeof(FAULT_FIELDS) / sizeof(FAULT_FIELDS[0]);
    struct dl_str *c = cache_find(dl, STR_FAULT, field);
    amqp_bytes_t b;
    bool b64 = false;
    if (c)
        return c;
    while (i < nf && strcmp(FAULT_FIELDS[i].field, field) != 0)
        i++;
    if (i == nf)
        return NULL;
    char *v = str_of(header(dl, FAULT_FIELDS[i].header), &b) ? chorus__text_or_base64(b, &b64)
                                                              : derived(dl, field, &b64);
    return cache_put(dl, STR_FAULT, field, v, b64);
}

const char *chorus_dead_letter_fault(const chorus_dead_letter_t *dl, const char *field) {
    const struct dl_str *c = fault(dl, field);
    return c ? c->value : NULL;
}

/* ---- the report: chorus_dead_letter_object() ------------------------------- */

static bool add(cJSON *o, const char *k, cJSON *v) {
    if (v && cJSON_AddItemToObject(o, k, v))
        return true;
    cJSON_Delete(v);
    return false;
}

static cJSON *str_or_null(const char *s) { return s ? cJSON_CreateString(s) : cJSON_CreateNull(); }

static void note(cJSON *notes, const char *fmt, ...) CHORUS_PRINTF(2, 3);
static void note(cJSON *notes, const char *fmt, ...) {
    char msg[900];
    size_t bad;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!chorus__json_text_ok(msg, strlen(msg), &bad))
        msg[bad] = '\0';
    cJSON_AddItemToArray(notes, cJSON_CreateString(msg));
}

static cJSON *fault_node(const chorus_dead_letter_t *dl, const char *field, cJSON *notes) {
    const struct dl_str *c = fault(dl, field);
    if (c && c->value && c->base64)
        note(notes, "%s: not UTF-8 text: shown as base64:...", field);
    return str_or_null(c ? c->value : NULL);
}

static cJSON *id_node(const chorus_dead_letter_t *dl, const char *field, const char *prop_name,
                      const char *v, cJSON *notes) {
    const struct dl_str *c = dl->env ? NULL : cache_find(dl, STR_PROP, prop_name);
    if (c && c->base64)
        note(notes, "%s: the %s property is not UTF-8 text: shown as base64:...", field,
             prop_name);
    return cJSON_CreateString(v);
}

/* A count header (attempts, requeues): its plain value; 0 when absent. */
static cJSON *count_node(const chorus_dead_letter_t *dl, const char *key, cJSON *notes) {
    const amqp_field_value_t *v = header(dl, key);
    char path[80];
    snprintf(path, sizeof(path), "headers[\"%s\"]", key);
    return v ? chorus__value_to_plain(v, path, notes) : cJSON_CreateNumber(0);
}

/* The body: the envelope as a tree, else the raw text, else base64. */
static bool add_body(cJSON *o, const chorus_dead_letter_t *dl, cJSON *notes) {
    amqp_bytes_t body = dl->msg.body;
    cJSON *env = NULL;
    if (dl->env) {
        chorus__json_limits_t lim = {.max_depth = CHORUS__JSON_MAX_DEPTH};
        chorus_error_t *err = NULL;
        if (chorus__json_parse(body.bytes, body.len, &lim, &env, NULL, &err))
            note(notes, "envelope: decoded, but cannot be shown as JSON (%s): shown as body",
                 chorus_error_string(err));
        chorus_error_destroy(err);
    } else {
        note(notes, "body: not an envelope (%s): shown raw",
             dl->env_error ? dl->env_error : "out of memory");
    }
    if (env)
        return add(o, "envelope", env);
    if (!add(o, "envelope", cJSON_CreateNull()))
        return false;
    if (chorus__bytes_are_text(body)) {
        char *s = malloc(body.len + 1);
        if (!s)
            return false;
        if (body.len)
            memcpy(s, body.bytes, body.len);
        s[body.len] = '\0';
        bool ok = add(o, "body", cJSON_CreateString(s));
        free(s);
        return ok;
    }
    char *b = chorus__base64(body.bytes, body.len);
    note(notes, "body: %zu bytes that are not UTF-8 text (an invalid byte, a NUL, a surrogate "
                "or a noncharacter): shown as body_base64", body.len);
    bool ok = b && add(o, "body", cJSON_CreateNull()) && add(o, "body_base64", cJSON_CreateString(b));
    free(b);
    return ok;
}

static cJSON *x_death(const chorus_dead_letter_t *dl, cJSON *notes) {
    cJSON *out = cJSON_CreateArray();
    const amqp_field_value_t *e = header(dl, "x-death");
    if (!out || !e)
        return out;
    if (e->kind != AMQP_FIELD_KIND_ARRAY) {
        note(notes, "x_death: the x-death header is no array (kind '%c'): see headers", e->kind);
        return out;
    }
    for (int i = 0; i < e->value.array.num_entries; i++) {
        const amqp_field_value_t *v = &e->value.array.entries[i];
        char path[40];
        snprintf(path, sizeof(path), "x_death[%d]", i);
        if (v->kind != AMQP_FIELD_KIND_TABLE) {
            note(notes, "x_death: x-death[%d] is no table (kind '%c'): see headers", i, v->kind);
            continue;
        }
        /* the same values are in headers, with their notes */
        cJSON *t = chorus__table_to_plain(&v->value.table, path, NULL);
        if (!t || !cJSON_AddItemToArray(out, t)) {
            cJSON_Delete(t);
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

/* All headers but the broker's count of this queue's deliveries, which
 * grows with every browse. */
static cJSON *all_headers(const chorus_dead_letter_t *dl, cJSON *notes) {
    const amqp_table_t *h = headers(dl);
    amqp_table_t t = {0};
    if (h && h->num_entries) {
        t.entries = malloc(sizeof(*t.entries) * (size_t)h->num_entries);
        if (!t.entries)
            return NULL;
        for (int i = 0; i < h->num_entries; i++)
            if (!bytes_eq(h->entries[i].key, H_DELIVERY_COUNT))
                t.entries[t.num_entries++] = h->entries[i];
    }
    cJSON *j = chorus__table_to_plain(&t, "headers", notes);
    free(t.entries);
    return j;
}

cJSON *chorus_dead_letter_object(const chorus_dead_letter_t *dl) {
    cJSON *o = cJSON_CreateObject(), *notes = cJSON_CreateArray();
    origin_t from = origin(dl);
    bool ok = o && notes;
    ok = ok && add(o, "event_id", id_node(dl, "event_id", "message_id",
                                          chorus_dead_letter_event_id(dl), notes));
    ok = ok && add(o, "event_type", id_node(dl, "event_type", "type",
                                            chorus_dead_letter_event_type(dl), notes));
    ok = ok && add(o, "reason", fault_node(dl, "reason", notes));
    ok = ok && add(o, "error", fault_node(dl, "error", notes));
    ok = ok && add(o, "original_queue", fault_node(dl, "original_queue", notes));
    ok = ok && add(o, "original_routing_key", fault_node(dl, "original_routing_key", notes));
    ok = ok && add(o, "attempts", count_node(dl, CHORUS__H_ATTEMPTS, notes));
    ok = ok && add(o, "time", fault_node(dl, "time", notes));
    ok = ok && add(o, "fault_service", fault_node(dl, "fault_service", notes));
    ok = ok && add(o, "requeues", count_node(dl, H_REQUEUES, notes));
    if (ok && header(dl, H_DROPPED))
        ok = add(o, "dropped_headers", fault_node(dl, "dropped_headers", notes));
    if (ok && from.broker)
        note(notes, "reason, error, original queue and routing key and time come from x-death: "
                    "the broker dead-lettered this message itself (it has no %s)",
             CHORUS__H_REASON);
    ok = ok && add_body(o, dl, notes);
    ok = ok && add(o, "x_death", x_death(dl, notes));
    ok = ok && add(o, "headers", all_headers(dl, notes));
    if (ok && add(o, "notes", notes))
        return o;
    if (!ok)
        cJSON_Delete(notes);
    cJSON_Delete(o);
    return NULL;
}

char *chorus_dead_letter_json(const chorus_dead_letter_t *dl) {
    cJSON *o = chorus_dead_letter_object(dl);
    char *s = o ? chorus__json_print(o, 0, NULL, NULL) : NULL;
    cJSON_Delete(o);
    return s;
}

/* The original routing key, as fault reports it, but the bytes. */
static bool original_rk(const chorus_dead_letter_t *dl, amqp_bytes_t *out) {
    origin_t o = origin(dl);
    const amqp_field_value_t *rks = o.death ? table_get(o.death, "routing-keys") : NULL;
    if (str_of(header(dl, CHORUS__H_ORIG_RK), out))
        return true;
    return o.broker && rks && rks->kind == AMQP_FIELD_KIND_ARRAY &&
           rks->value.array.num_entries > 0 && str_of(&rks->value.array.entries[0], out);
}

char *chorus_dead_letter_export(const chorus_dead_letter_t *dl) {
    amqp_bytes_t rk;
    char why[256];
    bool has_rk = original_rk(dl, &rk);
    return chorus__export_line(&dl->msg.properties, dl->msg.body, has_rk ? &rk : NULL, why,
                               sizeof(why));
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
            if (chorus__read_message(q->st, CH_PUB, &m, 10000) == AMQP_STATUS_OK)
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

/* The requeue count the copy carries: one more than now, refused where
 * that cannot be said exactly. */
static bool next_requeue_count(const amqp_table_t *h, int64_t *out, char *err, size_t size) {
    const amqp_field_value_t *v = table_get(h, H_REQUEUES);
    int64_t now = 0;
    if (!v) {
        *out = 1;
        return true;
    }
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8: now = v->value.i8; break;
    case AMQP_FIELD_KIND_U8: now = v->value.u8; break;
    case AMQP_FIELD_KIND_I16: now = v->value.i16; break;
    case AMQP_FIELD_KIND_U16: now = v->value.u16; break;
    case AMQP_FIELD_KIND_I32: now = v->value.i32; break;
    case AMQP_FIELD_KIND_U32: now = v->value.u32; break;
    case AMQP_FIELD_KIND_I64: now = v->value.i64; break;
    case AMQP_FIELD_KIND_U64:
        if (v->value.u64 > (uint64_t)INT64_MAX)
            goto at_max;
        now = (int64_t)v->value.u64;
        break;
    default:
        chorus__errstr(err, size, "%s is not an integer (AMQP kind '%c'): it cannot be "
                       "incremented; fix or remove it first", H_REQUEUES, v->kind);
        return false;
    }
    if (now == INT64_MAX)
        goto at_max;
    *out = now + 1;
    return true;
at_max:
    chorus__errstr(err, size, "%s is already at its largest (%" PRId64 " or more): it cannot "
                   "be incremented", H_REQUEUES, INT64_MAX);
    return false;
}

static bool travels(amqp_bytes_t key) {
    /* the broker's own count of this queue's deliveries does not travel;
     * the attempt and the requeue count are set anew */
    return !bytes_eq(key, H_DELIVERY_COUNT) && !bytes_eq(key, CHORUS__H_ATTEMPT) &&
           !bytes_eq(key, H_REQUEUES);
}

chorus_err_t chorus_dlq_requeue(chorus_dlq_t *q, size_t i) {
    q->err[0] = '\0';
    if (i >= q->n || q->items[i].leave) {
        chorus__errstr(q->err, sizeof(q->err), "no such message held, or it left already");
        return CHORUS_ERR_INVALID_ARG;
    }
    chorus_dead_letter_t *dl = &q->items[i];
    const amqp_table_t *h = headers(dl);
    int64_t count;
    if (!next_requeue_count(h, &count, q->err, sizeof(q->err)))
        return CHORUS_ERR_INVALID_ARG;
    /* Always the DLQ's own service queue: a service's DLQ holds only that
     * service's dead letters (its own dead-letter exchange), and a header
     * naming another queue may have come from the producer. */
    amqp_bytes_t dest = amqp_cstring_bytes(q->service_queue);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t p = dl->msg.properties;
    int n = h ? h->num_entries : 0, k = 0;
    amqp_table_entry_t *e = amqp_pool_alloc(&pool, sizeof(*e) * (size_t)(n + 2));
    chorus_err_t rc = CHORUS_ERR_NOMEM;
    char why[512];
    if (!e)
        goto done;
    for (int j = 0; j < n; j++)
        if (travels(h->entries[j].key))
            e[k++] = h->entries[j];
    e[k].key = amqp_cstring_bytes(H_REQUEUES);
    e[k].value.kind = AMQP_FIELD_KIND_I64;
    e[k++].value.value.i64 = count;
    e[k].key = amqp_cstring_bytes(CHORUS__H_ATTEMPT);
    e[k].value.kind = AMQP_FIELD_KIND_I64;
    e[k++].value.value.i64 = 1;
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers = (amqp_table_t){.num_entries = k, .entries = e};
    if (!chorus__props_fit(&p, amqp_get_frame_max(q->st), why, sizeof(why))) {
        chorus__errstr(q->err, sizeof(q->err), "cannot be sent back: %s", why);
        rc = CHORUS_ERR_TOO_LARGE;
        goto done;
    }
    rc = publish_confirmed(q, amqp_empty_bytes, dest, &p, dl->msg.body);
    if (rc)
        chorus__errstr(q->err, sizeof(q->err), "publishing to %.*s: %s", (int)dest.len,
                       (const char *)dest.bytes, chorus_strerror(rc));
done:
    empty_amqp_pool(&pool);
    if (!rc)
        dl->leave = true;
    else if (!q->err[0])
        chorus__errstr(q->err, sizeof(q->err), "%s", chorus_strerror(rc));
    return rc;
}

chorus_err_t chorus_dlq_remove(chorus_dlq_t *q, size_t i) {
    if (i >= q->n)
        return CHORUS_ERR_INVALID_ARG;
    q->items[i].leave = true;
    return CHORUS_OK;
}

chorus_err_t chorus_dlq_import(chorus_dlq_t *q, const char *line, char *errstr, size_t size) {
    amqp_pool_t pool;
    amqp_basic_properties_t p;
    amqp_bytes_t body;
    char why[768];
    chorus_err_t rc = CHORUS_OK;
    init_amqp_pool(&pool, 4096);
    if (!chorus__import_line(line, strlen(line), &p, &body, &pool, why, sizeof(why))) {
        chorus__errstr(errstr, size, "not a line of 'dlq export': %s", why);
        rc = CHORUS_ERR_PARSE;
    } else if (!chorus__props_fit(&p, amqp_get_frame_max(q->st), why, sizeof(why))) {
        chorus__errstr(errstr, size, "cannot be published: %s", why);
        rc = CHORUS_ERR_TOO_LARGE;
    } else if ((rc = publish_confirmed(q, amqp_empty_bytes, amqp_cstring_bytes(q->queue), &p,
                                       body)) != CHORUS_OK) {
        chorus__errstr(errstr, size, "publishing into %s: %s", q->queue, chorus_strerror(rc));
    }
    empty_amqp_pool(&pool);
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
        free(dl->env_error);
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
