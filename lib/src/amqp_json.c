/*
 * amqp_json.c - AMQP headers and properties as JSON.
 *
 * Two forms.  The plain form is for reading (scripts/dlq show): a string is
 * a string, a timestamp an RFC 3339 string.  The typed form is for moving
 * messages (export/import): each value keeps its AMQP type letter
 * ({"l": 3} for a long, {"T": 1700000000} for a timestamp, {"F": {...}} for
 * a nested table), so a message exported and imported again carries
 * exactly the headers it had, x-death history included.
 */
#include "amqp_json.h"

#include <stdlib.h>
#include <string.h>

/* ---- base64 ---------------------------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *chorus__base64(const void *data, size_t len) {
    const unsigned char *in = data;
    char *out = malloc(4 * ((len + 2) / 3) + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        *o++ = B64[v >> 18 & 63];
        *o++ = B64[v >> 12 & 63];
        *o++ = i + 1 < len ? B64[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? B64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64val(char c) {
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

bool chorus__unbase64(const char *s, amqp_bytes_t *out) {
    size_t n = strlen(s);
    out->len = 0;
    out->bytes = NULL;
    if (n % 4)
        return false;
    unsigned char *buf = malloc(n / 4 * 3 + 1);
    if (!buf)
        return false;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int a = b64val(s[i]), b = b64val(s[i + 1]);
        int c = s[i + 2] == '=' ? 0 : b64val(s[i + 2]), d = s[i + 3] == '=' ? 0 : b64val(s[i + 3]);
        bool pad2 = s[i + 2] == '=', pad3 = s[i + 3] == '=';
        if (a < 0 || b < 0 || c < 0 || d < 0 || (pad2 && !pad3) || ((pad2 || pad3) && i + 4 != n)) {
            free(buf);
            return false;
        }
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        buf[o++] = (unsigned char)(v >> 16);
        if (!pad2)
            buf[o++] = (unsigned char)(v >> 8);
        if (!pad3)
            buf[o++] = (unsigned char)v;
    }
    out->bytes = buf;
    out->len = o;
    return true;
}

/* ---- plain ------------------------------------------------------------ */

static cJSON *bytes_str(amqp_bytes_t b) {
    char *s = strndup(b.bytes ? b.bytes : "", b.len);
    cJSON *j = cJSON_CreateString(s ? s : "");
    free(s);
    return j;
}

cJSON *chorus__value_to_plain(const amqp_field_value_t *v) {
    char ts[25];
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: return cJSON_CreateBool(v->value.boolean);
    case AMQP_FIELD_KIND_I8: return cJSON_CreateNumber(v->value.i8);
    case AMQP_FIELD_KIND_U8: return cJSON_CreateNumber(v->value.u8);
    case AMQP_FIELD_KIND_I16: return cJSON_CreateNumber(v->value.i16);
    case AMQP_FIELD_KIND_U16: return cJSON_CreateNumber(v->value.u16);
    case AMQP_FIELD_KIND_I32: return cJSON_CreateNumber(v->value.i32);
    case AMQP_FIELD_KIND_U32: return cJSON_CreateNumber(v->value.u32);
    case AMQP_FIELD_KIND_I64: return cJSON_CreateNumber((double)v->value.i64);
    case AMQP_FIELD_KIND_U64: return cJSON_CreateNumber((double)v->value.u64);
    case AMQP_FIELD_KIND_F32: return cJSON_CreateNumber(v->value.f32);
    case AMQP_FIELD_KIND_F64: return cJSON_CreateNumber(v->value.f64);
    case AMQP_FIELD_KIND_DECIMAL: return cJSON_CreateNumber(v->value.decimal.value);
    case AMQP_FIELD_KIND_UTF8: return bytes_str(v->value.bytes);
    case AMQP_FIELD_KIND_TIMESTAMP:
        chorus_format_timestamp((int64_t)v->value.u64 * 1000, ts);
        return cJSON_CreateString(ts);
    case AMQP_FIELD_KIND_TABLE: return chorus__table_to_plain(&v->value.table);
    case AMQP_FIELD_KIND_ARRAY: {
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; i < v->value.array.num_entries; i++)
            cJSON_AddItemToArray(a, chorus__value_to_plain(&v->value.array.entries[i]));
        return a;
    }
    case AMQP_FIELD_KIND_BYTES: {
        char *b = chorus__base64(v->value.bytes.bytes, v->value.bytes.len);
        cJSON *j = cJSON_CreateString(b ? b : "");
        free(b);
        return j;
    }
    default: return cJSON_CreateNull();
    }
}

cJSON *chorus__table_to_plain(const amqp_table_t *t) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; t && i < t->num_entries; i++) {
        char *k = strndup(t->entries[i].key.bytes, t->entries[i].key.len);
        if (k)
            cJSON_AddItemToObject(o, k, chorus__value_to_plain(&t->entries[i].value));
        free(k);
    }
    return o;
}

/* ---- typed ------------------------------------------------------------ */

static cJSON *typed(const char *letter, cJSON *v) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, letter, v);
    return o;
}

static cJSON *value_to_typed(const amqp_field_value_t *v) {
    char *b;
    cJSON *j;
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: return typed("t", cJSON_CreateBool(v->value.boolean));
    case AMQP_FIELD_KIND_I8: return typed("b", cJSON_CreateNumber(v->value.i8));
    case AMQP_FIELD_KIND_U8: return typed("B", cJSON_CreateNumber(v->value.u8));
    case AMQP_FIELD_KIND_I16: return typed("s", cJSON_CreateNumber(v->value.i16));
    case AMQP_FIELD_KIND_U16: return typed("u", cJSON_CreateNumber(v->value.u16));
    case AMQP_FIELD_KIND_I32: return typed("I", cJSON_CreateNumber(v->value.i32));
    case AMQP_FIELD_KIND_U32: return typed("i", cJSON_CreateNumber(v->value.u32));
    case AMQP_FIELD_KIND_I64: return typed("l", cJSON_CreateNumber((double)v->value.i64));
    case AMQP_FIELD_KIND_TIMESTAMP: return typed("T", cJSON_CreateNumber((double)v->value.u64));
    case AMQP_FIELD_KIND_F32: return typed("f", cJSON_CreateNumber(v->value.f32));
    case AMQP_FIELD_KIND_F64: return typed("d", cJSON_CreateNumber(v->value.f64));
    case AMQP_FIELD_KIND_VOID: return typed("V", cJSON_CreateNull());
    case AMQP_FIELD_KIND_UTF8: return typed("S", bytes_str(v->value.bytes));
    case AMQP_FIELD_KIND_BYTES:
        b = chorus__base64(v->value.bytes.bytes, v->value.bytes.len);
        j = typed("x", cJSON_CreateString(b ? b : ""));
        free(b);
        return j;
    case AMQP_FIELD_KIND_TABLE: return typed("F", chorus__table_to_typed(&v->value.table));
    case AMQP_FIELD_KIND_ARRAY: {
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; i < v->value.array.num_entries; i++)
            cJSON_AddItemToArray(a, value_to_typed(&v->value.array.entries[i]));
        return typed("A", a);
    }
    default: return typed("V", cJSON_CreateNull()); /* decimals, u64: not used by RabbitMQ */
    }
}

cJSON *chorus__table_to_typed(const amqp_table_t *t) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; t && i < t->num_entries; i++) {
        char *k = strndup(t->entries[i].key.bytes, t->entries[i].key.len);
        if (k)
            cJSON_AddItemToObject(o, k, value_to_typed(&t->entries[i].value));
        free(k);
    }
    return o;
}

static bool pool_bytes(amqp_pool_t *pool, const char *s, size_t n, amqp_bytes_t *out) {
    if (n == 0) {
        *out = amqp_empty_bytes;
        return true;
    }
    amqp_pool_alloc_bytes(pool, n, out);
    if (!out->bytes)
        return false;
    memcpy(out->bytes, s, n);
    return true;
}

static bool value_from_typed(const cJSON *j, amqp_field_value_t *v, amqp_pool_t *pool) {
    const cJSON *x = j ? j->child : NULL;
    if (!cJSON_IsObject(j) || !x || x->next || !x->string || strlen(x->string) != 1)
        return false;
    double d = x->valuedouble;
    switch (x->string[0]) {
    case 't': v->kind = AMQP_FIELD_KIND_BOOLEAN; v->value.boolean = cJSON_IsTrue(x); return cJSON_IsBool(x);
    case 'b': v->kind = AMQP_FIELD_KIND_I8; v->value.i8 = (int8_t)d; break;
    case 'B': v->kind = AMQP_FIELD_KIND_U8; v->value.u8 = (uint8_t)d; break;
    case 's': v->kind = AMQP_FIELD_KIND_I16; v->value.i16 = (int16_t)d; break;
    case 'u': v->kind = AMQP_FIELD_KIND_U16; v->value.u16 = (uint16_t)d; break;
    case 'I': v->kind = AMQP_FIELD_KIND_I32; v->value.i32 = (int32_t)d; break;
    case 'i': v->kind = AMQP_FIELD_KIND_U32; v->value.u32 = (uint32_t)d; break;
    case 'l': v->kind = AMQP_FIELD_KIND_I64; v->value.i64 = (int64_t)d; break;
    case 'T': v->kind = AMQP_FIELD_KIND_TIMESTAMP; v->value.u64 = (uint64_t)d; break;
    case 'f': v->kind = AMQP_FIELD_KIND_F32; v->value.f32 = (float)d; break;
    case 'd': v->kind = AMQP_FIELD_KIND_F64; v->value.f64 = d; break;
    case 'V': v->kind = AMQP_FIELD_KIND_VOID; return true;
    case 'S':
        v->kind = AMQP_FIELD_KIND_UTF8;
        return cJSON_IsString(x) &&
               pool_bytes(pool, x->valuestring, strlen(x->valuestring), &v->value.bytes);
    case 'x': {
        amqp_bytes_t raw;
        v->kind = AMQP_FIELD_KIND_BYTES;
        if (!cJSON_IsString(x) || !chorus__unbase64(x->valuestring, &raw))
            return false;
        bool ok = pool_bytes(pool, raw.bytes, raw.len, &v->value.bytes);
        free(raw.bytes);
        return ok;
    }
    case 'F':
        v->kind = AMQP_FIELD_KIND_TABLE;
        return chorus__table_from_typed(x, &v->value.table, pool);
    case 'A': {
        int n = cJSON_GetArraySize(x);
        v->kind = AMQP_FIELD_KIND_ARRAY;
        v->value.array.num_entries = n;
        v->value.array.entries = n ? amqp_pool_alloc(pool, sizeof(amqp_field_value_t) * (size_t)n)
                                   : NULL;
        if (!cJSON_IsArray(x) || (n && !v->value.array.entries))
            return false;
        int k = 0;
        for (const cJSON *e = x->child; e; e = e->next)
            if (!value_from_typed(e, &v->value.array.entries[k++], pool))
                return false;
        return true;
    }
    default: return false;
    }
    return cJSON_IsNumber(x);
}

bool chorus__table_from_typed(const cJSON *j, amqp_table_t *out, amqp_pool_t *pool) {
    int n = cJSON_GetArraySize(j);
    out->num_entries = 0;
    out->entries = NULL;
    if (!cJSON_IsObject(j))
        return false;
    if (n == 0)
        return true;
    out->entries = amqp_pool_alloc(pool, sizeof(amqp_table_entry_t) * (size_t)n);
    if (!out->entries)
        return false;
    for (const cJSON *e = j->child; e; e = e->next) {
        amqp_table_entry_t *t = &out->entries[out->num_entries];
        if (!pool_bytes(pool, e->string, strlen(e->string), &t->key) ||
            !value_from_typed(e, &t->value, pool))
            return false;
        out->num_entries++;
    }
    return true;
}

/* ---- properties -------------------------------------------------------- */

#define STR_PROPS(X)                                                                   \
    X(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG)                                      \
    X(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG)                              \
    X(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG)                                  \
    X(reply_to, AMQP_BASIC_REPLY_TO_FLAG)                                              \
    X(expiration, AMQP_BASIC_EXPIRATION_FLAG)                                          \
    X(message_id, AMQP_BASIC_MESSAGE_ID_FLAG)                                          \
    X(type, AMQP_BASIC_TYPE_FLAG)                                                      \
    X(user_id, AMQP_BASIC_USER_ID_FLAG)                                                \
    X(app_id, AMQP_BASIC_APP_ID_FLAG)                                                  \
    X(cluster_id, AMQP_BASIC_CLUSTER_ID_FLAG)

cJSON *chorus__props_to_json(const amqp_basic_properties_t *p) {
    cJSON *o = cJSON_CreateObject();
#define ADD_STR(f, flag)                                                                \
    if (p->_flags & (flag))                                                             \
        cJSON_AddItemToObject(o, #f, bytes_str(p->f));
    STR_PROPS(ADD_STR)
#undef ADD_STR
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        cJSON_AddNumberToObject(o, "delivery_mode", p->delivery_mode);
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
        cJSON_AddNumberToObject(o, "priority", p->priority);
    if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)
        cJSON_AddNumberToObject(o, "timestamp", (double)p->timestamp);
    return o;
}

bool chorus__props_from_json(const cJSON *j, amqp_basic_properties_t *p, amqp_pool_t *pool) {
    if (!cJSON_IsObject(j))
        return false;
    const cJSON *v;
#define GET_STR(f, flag)                                                                \
    if ((v = cJSON_GetObjectItemCaseSensitive(j, #f)) != NULL) {                       \
        if (!cJSON_IsString(v) ||                                                      \
            !pool_bytes(pool, v->valuestring, strlen(v->valuestring), &p->f))           \
            return false;                                                              \
        p->_flags |= (flag);                                                           \
    }
    STR_PROPS(GET_STR)
#undef GET_STR
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "delivery_mode")) != NULL) {
        p->delivery_mode = (uint8_t)v->valuedouble;
        p->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "priority")) != NULL) {
        p->priority = (uint8_t)v->valuedouble;
        p->_flags |= AMQP_BASIC_PRIORITY_FLAG;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "timestamp")) != NULL) {
        p->timestamp = (uint64_t)v->valuedouble;
        p->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    }
    return true;
}
