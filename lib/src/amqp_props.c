/*
 * amqp_props.c - sizes and limits of AMQP content headers (see
 * amqp_props_int.h for why they are checked before sending).
 *
 * The sizes follow the AMQP 0-9-1 encoding rabbitmq-c 0.11 writes
 * (amqp_encode_properties, amqp_encode_table): a short string is a length
 * byte and its bytes, a table a 4-byte length and its entries (name as a
 * short string, one kind byte, the value), an array a 4-byte length and
 * its values.
 */
#include "amqp_props_int.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>

static bool refuse(char *why, size_t n, const char *what, size_t len) {
    if (why && n)
        snprintf(why, n, "%s (%zu bytes)", what, len);
    return false;
}

static bool too_deep(char *why, size_t n) {
    if (why && n)
        snprintf(why, n, "headers nest deeper than %d levels", CHORUS__HEADERS_MAX_DEPTH);
    return false;
}

bool chorus__field_size(const amqp_field_value_t *v, int depth, size_t *out, char *why,
                        size_t n) {
    size_t sz = 1; /* the kind byte */
    if (depth > CHORUS__HEADERS_MAX_DEPTH)
        return too_deep(why, n);
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
    case AMQP_FIELD_KIND_I8:
    case AMQP_FIELD_KIND_U8: sz += 1; break;
    case AMQP_FIELD_KIND_I16:
    case AMQP_FIELD_KIND_U16: sz += 2; break;
    case AMQP_FIELD_KIND_I32:
    case AMQP_FIELD_KIND_U32:
    case AMQP_FIELD_KIND_F32: sz += 4; break;
    case AMQP_FIELD_KIND_I64:
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_F64:
    case AMQP_FIELD_KIND_TIMESTAMP: sz += 8; break;
    case AMQP_FIELD_KIND_DECIMAL: sz += 5; break;
    case AMQP_FIELD_KIND_VOID: break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        if (v->value.bytes.len > UINT32_MAX)
            return refuse(why, n, "a header value is longer than 4 GiB", v->value.bytes.len);
        sz += 4 + v->value.bytes.len;
        break;
    case AMQP_FIELD_KIND_TABLE: {
        size_t t;
        if (!chorus__table_size(&v->value.table, depth + 1, &t, why, n))
            return false;
        sz += t;
        break;
    }
    case AMQP_FIELD_KIND_ARRAY: {
        sz += 4;
        for (int i = 0; i < v->value.array.num_entries; i++) {
            size_t e;
            if (!chorus__field_size(&v->value.array.entries[i], depth + 1, &e, why, n))
                return false;
            sz += e;
        }
        break;
    }
    default:
        if (why && n)
            snprintf(why, n, "a header value of unknown kind 0x%02x", v->kind);
        return false;
    }
    *out = sz;
    return true;
}

bool chorus__table_size(const amqp_table_t *t, int depth, size_t *out, char *why, size_t n) {
    size_t sz = 4;
    if (depth > CHORUS__HEADERS_MAX_DEPTH)
        return too_deep(why, n);
    for (int i = 0; t && i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        size_t v;
        if (e->key.len > 255)
            return refuse(why, n, "a header name is longer than 255 bytes", e->key.len);
        if (!chorus__field_size(&e->value, depth, &v, why, n))
            return false;
        sz += 1 + e->key.len + v;
    }
    *out = sz;
    return true;
}

bool chorus__props_size(const amqp_basic_properties_t *p, size_t *out, char *why, size_t n) {
    size_t sz = 2; /* the flags: basic has 14 properties, one flag word */
    const struct {
        amqp_flags_t flag;
        const amqp_bytes_t *b;
        const char *name;
    } shorts[] = {
        {AMQP_BASIC_CONTENT_TYPE_FLAG, &p->content_type, "content_type"},
        {AMQP_BASIC_CONTENT_ENCODING_FLAG, &p->content_encoding, "content_encoding"},
        {AMQP_BASIC_CORRELATION_ID_FLAG, &p->correlation_id, "correlation_id"},
        {AMQP_BASIC_REPLY_TO_FLAG, &p->reply_to, "reply_to"},
        {AMQP_BASIC_EXPIRATION_FLAG, &p->expiration, "expiration"},
        {AMQP_BASIC_MESSAGE_ID_FLAG, &p->message_id, "message_id"},
        {AMQP_BASIC_TYPE_FLAG, &p->type, "type"},
        {AMQP_BASIC_USER_ID_FLAG, &p->user_id, "user_id"},
        {AMQP_BASIC_APP_ID_FLAG, &p->app_id, "app_id"},
        {AMQP_BASIC_CLUSTER_ID_FLAG, &p->cluster_id, "cluster_id"},
    };
    for (size_t i = 0; i < sizeof(shorts) / sizeof(shorts[0]); i++) {
        if (!(p->_flags & shorts[i].flag))
            continue;
        if (shorts[i].b->len > 255) {
            if (why && n)
                snprintf(why, n, "property %s is longer than 255 bytes (%zu)", shorts[i].name,
                         shorts[i].b->len);
            return false;
        }
        sz += 1 + shorts[i].b->len;
    }
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        sz += 1;
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
        sz += 1;
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        sz += 8;
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
        size_t t;
        if (!chorus__table_size(&p->headers, 1, &t, why, n))
            return false;
        sz += t;
    }
    *out = sz;
    return true;
}

bool chorus__props_fit(const amqp_basic_properties_t *p, int frame_max, char *why, size_t n) {
    size_t sz;
    if (!chorus__props_size(p, &sz, why, n))
        return false;
    size_t room = frame_max > CHORUS__HEADER_FRAME_OVERHEAD
                      ? (size_t)frame_max - CHORUS__HEADER_FRAME_OVERHEAD
                      : 0;
    if (sz > room) {
        if (why && n)
            snprintf(why, n, "properties and headers take %zu bytes; a frame of %d carries %zu",
                     sz, frame_max, room);
        return false;
    }
    return true;
}

static bool clone_bytes(amqp_pool_t *pool, amqp_bytes_t src, amqp_bytes_t *dst) {
    if (src.len == 0) {
        *dst = amqp_empty_bytes;
        return true;
    }
    amqp_pool_alloc_bytes(pool, src.len, dst);
    if (!dst->bytes)
        return false;
    memcpy(dst->bytes, src.bytes, src.len);
    return true;
}

static bool clone_value(const amqp_field_value_t *src, amqp_field_value_t *dst,
                        amqp_pool_t *pool);

/* rabbitmq-c's amqp_table_clone() refuses an empty header name, which
 * AMQP allows and RabbitMQ delivers: a message carrying one must not be
 * impossible to copy.  (Recursive: a table the decoder produced is at most
 * a frame deep, about 19,000 levels of seven bytes.) */
static bool clone_table(const amqp_table_t *src, amqp_table_t *dst, amqp_pool_t *pool) {
    *dst = amqp_empty_table;
    if (src->num_entries <= 0)
        return true;
    dst->entries = amqp_pool_alloc(pool, sizeof(*dst->entries) * (size_t)src->num_entries);
    if (!dst->entries)
        return false;
    for (int i = 0; i < src->num_entries; i++)
        if (!clone_bytes(pool, src->entries[i].key, &dst->entries[i].key) ||
            !clone_value(&src->entries[i].value, &dst->entries[i].value, pool))
            return false;
    dst->num_entries = src->num_entries;
    return true;
}

static bool clone_value(const amqp_field_value_t *src, amqp_field_value_t *dst,
                        amqp_pool_t *pool) {
    *dst = *src;
    switch (src->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return clone_bytes(pool, src->value.bytes, &dst->value.bytes);
    case AMQP_FIELD_KIND_TABLE:
        return clone_table(&src->value.table, &dst->value.table, pool);
    case AMQP_FIELD_KIND_ARRAY: {
        const amqp_array_t *a = &src->value.array;
        dst->value.array = (amqp_array_t){0, NULL};
        if (a->num_entries <= 0)
            return true;
        dst->value.array.entries = amqp_pool_alloc(pool, sizeof(*a->entries) * (size_t)a->num_entries);
        if (!dst->value.array.entries)
            return false;
        for (int i = 0; i < a->num_entries; i++)
            if (!clone_value(&a->entries[i], &dst->value.array.entries[i], pool))
                return false;
        dst->value.array.num_entries = a->num_entries;
        return true;
    }
    default:
        return true; /* scalars */
    }
}

/* The 14 property flags of the basic class: a bit beyond them would make
 * rabbitmq-c write a second flag word the sizes here do not count. */
#define BASIC_FLAGS_MASK ((amqp_flags_t)0xFFFC)

bool chorus__props_clone(const amqp_basic_properties_t *src, amqp_basic_properties_t *dst,
                         amqp_pool_t *pool) {
    *dst = *src; /* scalars; byte fields re-pointed below */
    dst->_flags &= BASIC_FLAGS_MASK;
#define CLONE(field, flag)                                                            \
    if ((src->_flags & (flag)) && !clone_bytes(pool, src->field, &dst->field))        \
        return false;
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
    dst->headers = amqp_empty_table;
    return !(src->_flags & AMQP_BASIC_HEADERS_FLAG) || clone_table(&src->headers, &dst->headers, pool);
}

int chorus__read_message(amqp_connection_state_t st, amqp_channel_t channel,
                         amqp_message_t *out, int timeout_ms) {
    memset(out, 0, sizeof(*out));
    amqp_frame_t f;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int s = amqp_simple_wait_frame_noblock(st, &f, &tv);
    if (s != AMQP_STATUS_OK)
        return s;
    if (f.channel != channel || f.frame_type != AMQP_FRAME_HEADER)
        return AMQP_STATUS_UNEXPECTED_STATE;
    init_amqp_pool(&out->pool, 4096);
    uint64_t size = f.payload.properties.body_size;
    if (!chorus__props_clone(f.payload.properties.decoded, &out->properties, &out->pool) ||
        size > SIZE_MAX || (size && !(out->body = amqp_bytes_malloc((size_t)size)).bytes)) {
        amqp_destroy_message(out);
        return AMQP_STATUS_NO_MEMORY;
    }
    for (uint64_t got = 0; got < size;) {
        s = amqp_simple_wait_frame_noblock(st, &f, &tv);
        if (s == AMQP_STATUS_OK && (f.channel != channel || f.frame_type != AMQP_FRAME_BODY ||
                                    f.payload.body_fragment.len > size - got))
            s = AMQP_STATUS_BAD_AMQP_DATA;
        if (s != AMQP_STATUS_OK) {
            amqp_destroy_message(out);
            return s;
        }
        if (f.payload.body_fragment.len)
            memcpy((char *)out->body.bytes + got, f.payload.body_fragment.bytes,
                   f.payload.body_fragment.len);
        got += f.payload.body_fragment.len;
    }
    return AMQP_STATUS_OK;
}
