/*
 * amqp_json.c - AMQP headers and properties as JSON (see amqp_json.h).
 *
 * An AMQP table is an ordered list of (name, value) entries; a name is up
 * to 255 arbitrary bytes and may repeat, a value is one of 18 kinds, some
 * with no JSON counterpart (64-bit integers, NaN payloads, decimals,
 * bytes).  JSON objects are unordered maps of UTF-8 names to doubles and
 * strings.  So:
 *
 *   typed (export/import)                 plain (show)
 *   [{"name": n, "value": {"S": "x"}}]    {"n": "x"}       (repeats: "n (2)")
 *   {"name_base64": ...}                  "base64:..." name     + note
 *   {"l": 5} | {"l": "9223372036854775807"}  5 | "9223...807"   + note
 *   {"T": 1700000000}                     "2023-11-14T22:13:20.000Z"
 *                                         (outside 0001..9999: seconds + note)
 *   {"d": 0.5} | {"d": {"bits": "0x7ff8000000000001"}}   0.5 | "NaN" + note
 *   {"D": {"scale": 2, "value": 12345}}   "123.45"              + note
 *   {"S": "text"} | {"S": {"base64": ...}}  "text" | base64    + note
 *   {"x": base64}                         base64                + note
 *   {"A": [...]}, {"F": [entries]}        [...], {...}  (deeper than 32
 *                                         levels: base64 of the encoding)
 *
 * The typed form nests three JSON levels per table level; when a table
 * would nest deeper than the JSON printer follows, the export line carries
 * the table's exact AMQP encoding instead (headers_amqp_base64), which
 * import checks before rabbitmq-c decodes it.  Numbers are exact both
 * ways: the printer writes every double so that it reads back the same,
 * import refuses what does not fit its kind, and 64-bit integers beyond
 * 2^53 - 1 travel as decimal strings.
 */
#include "amqp_json.h"
#include "json_int.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAFE_INT INT64_C(9007199254740991) /* 2^53 - 1 */
#define TS_MAX_S INT64_C(253402300799)      /* 9999-12-31T23:59:59Z */
#define CHORUS__STR2(x) #x
#define CHORUS__STR(x) CHORUS__STR2(x)

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

static int b64val(char ch) {
    unsigned char c = (unsigned char)ch;
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes @p n characters into @p out (room for n / 4 * 3 bytes): padded,
 * '=' only at the end, and the bits the padding drops zero, so that every
 * byte string has exactly one accepted text. */
static bool b64_decode(const char *s, size_t n, unsigned char *out, size_t *outlen) {
    size_t o = 0;
    if (n % 4)
        return false;
    for (size_t i = 0; i < n; i += 4) {
        bool last = i + 4 == n;
        bool p2 = last && s[i + 2] == '=', p3 = last && s[i + 3] == '=';
        int a = b64val(s[i]), b = b64val(s[i + 1]);
        int c = p2 ? 0 : b64val(s[i + 2]), d = p3 ? 0 : b64val(s[i + 3]);
        if (a < 0 || b < 0 || c < 0 || d < 0 || (p2 && !p3) || (p2 && (b & 15)) ||
            (!p2 && p3 && (c & 3)))
            return false;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        out[o++] = (unsigned char)(v >> 16);
        if (!p2)
            out[o++] = (unsigned char)(v >> 8);
        if (!p3)
            out[o++] = (unsigned char)v;
    }
    *outlen = o;
    return true;
}

bool chorus__unbase64(const char *s, amqp_bytes_t *out) {
    size_t n = strlen(s);
    unsigned char *buf = malloc(n / 4 * 3 + 1);
    out->len = 0;
    out->bytes = NULL;
    if (!buf || !b64_decode(s, n, buf, &out->len)) {
        free(buf);
        return false;
    }
    out->bytes = buf;
    return true;
}

/* The same, into @p pool. */
static bool unbase64_pool(const char *s, amqp_pool_t *pool, amqp_bytes_t *out) {
    size_t n = strlen(s);
    *out = amqp_empty_bytes;
    if (n == 0)
        return true;
    amqp_pool_alloc_bytes(pool, n / 4 * 3, out);
    return out->bytes && b64_decode(s, n, out->bytes, &out->len);
}

/* ---- text -------------------------------------------------------------- */

bool chorus__bytes_are_text(amqp_bytes_t b) {
    size_t bad;
    return b.len == 0 || chorus__json_text_ok(b.bytes, b.len, &bad);
}

static char *dup_bytes(amqp_bytes_t b) {
    char *s = malloc(b.len + 1);
    if (s) {
        if (b.len)
            memcpy(s, b.bytes, b.len);
        s[b.len] = '\0';
    }
    return s;
}

char *chorus__text_or_base64(amqp_bytes_t b, bool *was_base64) {
    *was_base64 = !chorus__bytes_are_text(b);
    if (!*was_base64)
        return dup_bytes(b);
    char *enc = chorus__base64(b.bytes, b.len);
    char *s = enc ? malloc(strlen(enc) + 8) : NULL;
    if (s)
        sprintf(s, "base64:%s", enc);
    free(enc);
    return s;
}

/* Cuts @p s before its first byte that is not valid text (snprintf may
 * have cut a UTF-8 sequence short), so that it is a valid JSON string. */
static void trim_text(char *s) {
    size_t bad;
    if (!chorus__json_text_ok(s, strlen(s), &bad))
        s[bad] = '\0';
}

/* A number (integers within 2^53 - 1) or a decimal string. */
static cJSON *i64_node(int64_t v) {
    char s[24];
    if (v >= -SAFE_INT && v <= SAFE_INT)
        return cJSON_CreateNumber((double)v);
    snprintf(s, sizeof(s), "%" PRId64, v);
    return cJSON_CreateString(s);
}

static cJSON *u64_node(uint64_t v) {
    char s[24];
    if (v <= (uint64_t)SAFE_INT)
        return cJSON_CreateNumber((double)v);
    snprintf(s, sizeof(s), "%" PRIu64, v);
    return cJSON_CreateString(s);
}

/* ---- where a value is, for notes and errors ------------------------------ */

typedef struct {
    char buf[400];
    size_t len;
} path_t;

static void path_init(path_t *p, const char *root) {
    snprintf(p->buf, sizeof(p->buf), "%s", root ? root : "");
    p->len = strlen(p->buf);
}

static void path_add(path_t *p, const char *fmt, const char *a, int alen) {
    if (p->len < sizeof(p->buf) - 1) {
        snprintf(p->buf + p->len, sizeof(p->buf) - p->len, fmt, alen, a);
        p->len += strlen(p->buf + p->len);
    }
}

/* Appends ["name"] (text, at most 60 bytes of it, cut between characters)
 * or [base64:...]; returns the length to go back to. */
static size_t path_name(path_t *p, amqp_bytes_t name) {
    size_t old = p->len;
    if (chorus__bytes_are_text(name)) {
        size_t n = name.len;
        if (n > 60)
            for (n = 60; n > 0 && (((const unsigned char *)name.bytes)[n] & 0xC0) == 0x80; n--)
                ;
        path_add(p, n < name.len ? "[\"%.*s...\"]" : "[\"%.*s\"]", name.bytes, (int)n);
    } else {
        char *b = chorus__base64(name.bytes, name.len);
        path_add(p, b && strlen(b) > 40 ? "[base64:%.*s...]" : "[base64:%.*s]", b ? b : "",
                 40);
        free(b);
    }
    return old;
}

static size_t path_index(path_t *p, int i) {
    size_t old = p->len;
    char s[16];
    snprintf(s, sizeof(s), "%d", i);
    path_add(p, "[%.*s]", s, (int)strlen(s));
    return old;
}

static void path_back(path_t *p, size_t old) {
    p->len = old;
    p->buf[old] = '\0';
}

/* ---- the AMQP encoding ------------------------------------------------- */

bool chorus__table_encode(const amqp_table_t *t, amqp_bytes_t *out) {
    amqp_table_t copy = *t; /* amqp_encode_table takes a non-const table */
    *out = amqp_empty_bytes;
    for (size_t cap = 4096; cap <= ((size_t)1 << 31); cap *= 2) {
        void *buf = malloc(cap);
        size_t off = 0;
        if (!buf)
            return false;
        int rc = amqp_encode_table((amqp_bytes_t){.len = cap, .bytes = buf}, &copy, &off);
        if (rc == AMQP_STATUS_OK) {
            out->bytes = buf;
            out->len = off;
            return true;
        }
        free(buf);
        /* too small a buffer shows as either; anything else is final */
        if (rc != AMQP_STATUS_TABLE_TOO_BIG && rc != AMQP_STATUS_BAD_AMQP_DATA)
            return false;
    }
    return false;
}

/* A field value's encoding (kind byte, then the value): encoded as the one
 * entry of a table with an empty name, whose first 5 bytes (table length,
 * name length) are then dropped. */
static bool value_encode(const amqp_field_value_t *v, amqp_bytes_t *out) {
    amqp_table_entry_t e = {.key = amqp_empty_bytes, .value = *v};
    amqp_table_t t = {.num_entries = 1, .entries = &e};
    if (!chorus__table_encode(&t, out))
        return false;
    memmove(out->bytes, (char *)out->bytes + 5, out->len - 5);
    out->len -= 5;
    return true;
}

static uint32_t get32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

typedef struct {
    size_t end; /* offset just past the container */
    bool table; /* entries have names */
} scan_frame_t;

static bool scan_push(scan_frame_t **st, int *depth, int *cap, size_t end, bool table) {
    if (*depth == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        scan_frame_t *ns = realloc(*st, sizeof(**st) * (size_t)ncap);
        if (!ns)
            return false;
        *st = ns;
        *cap = ncap;
    }
    (*st)[(*depth)++] = (scan_frame_t){.end = end, .table = table};
    return true;
}

/* Walks the encoding with an explicit stack (no recursion on hostile
 * input): every table and array must end exactly where its length says,
 * so that what rabbitmq-c decodes encodes again to the same bytes. */
static bool scan_table(const unsigned char *b, size_t len, char *why, size_t n) {
    scan_frame_t *st = NULL;
    int depth = 0, cap = 0;
    size_t off = 4;
    const char *bad = NULL;
    if (len < 4 || (uint64_t)get32(b) + 4 != len) {
        chorus__errstr(why, n, "the AMQP encoding is not one table (%zu bytes)", len);
        return false;
    }
    if (!scan_push(&st, &depth, &cap, len, true))
        bad = "out of memory";
    while (!bad && depth > 0) {
        scan_frame_t f = st[depth - 1];
        if (off == f.end) {
            depth--;
            continue;
        }
        size_t room = f.end - off, need = 0;
        if (f.table) {
            size_t k = b[off];
            if (room < k + 2) {
                bad = "a name or its value runs past its table";
                break;
            }
            off += 1 + k;
            room -= 1 + k;
        }
        unsigned char kind = b[off++];
        room--;
        switch (kind) {
        case 't':
            need = 1;
            if (room >= 1 && b[off] > 1)
                bad = "a boolean that is neither 0 nor 1";
            break;
        case 'b': case 'B': need = 1; break;
        case 's': case 'u': need = 2; break;
        case 'I': case 'i': case 'f': need = 4; break;
        case 'l': case 'L': case 'd': case 'T': need = 8; break;
        case 'D': need = 5; break;
        case 'V': need = 0; break;
        case 'S': case 'x': case 'A': case 'F':
            if (room < 4) {
                bad = "a length runs past its container";
                break;
            }
            need = 4 + (size_t)get32(b + off);
            if (need > room || kind == 'S' || kind == 'x')
                break;
            if (depth > CHORUS__AMQP_DECODE_MAX_DEPTH) {
                bad = "nesting deeper than " CHORUS__STR(CHORUS__AMQP_DECODE_MAX_DEPTH) " levels";
                break;
            }
            if (!scan_push(&st, &depth, &cap, off + need, kind == 'F')) {
                bad = "out of memory";
                break;
            }
            off += 4;
            continue;
        default:
            off--;
            bad = "a value of unknown kind";
            break;
        }
        if (!bad && need > room)
            bad = "a value runs past its container";
        if (!bad)
            off += need;
    }
    free(st);
    if (bad)
        chorus__errstr(why, n, "the AMQP encoding is malformed at byte %zu: %s", off, bad);
    return !bad;
}

bool chorus__table_decode(amqp_bytes_t enc, amqp_table_t *out, amqp_pool_t *pool, char *why,
                          size_t n) {
    size_t off = 0;
    out->num_entries = 0;
    out->entries = NULL;
    if (!scan_table(enc.bytes, enc.len, why, n))
        return false;
    int rc = amqp_decode_table(enc, pool, out, &off);
    if (rc != AMQP_STATUS_OK || off != enc.len) {
        chorus__errstr(why, n, "rabbitmq-c cannot decode the AMQP encoding: %s",
                       rc ? amqp_error_string2(rc) : "bytes left over");
        return false;
    }
    return true;
}

/* ---- plain ------------------------------------------------------------- */

typedef struct {
    path_t path;
    cJSON *notes; /* NULL: nobody reads them */
} plain_t;

static void note(plain_t *c, const char *fmt, ...) CHORUS_PRINTF(2, 3);
static void note(plain_t *c, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    if (!c->notes)
        return;
    int k = snprintf(msg, sizeof(msg), "%s: ", c->path.buf);
    va_start(ap, fmt);
    if (k > 0 && (size_t)k < sizeof(msg))
        vsnprintf(msg + k, sizeof(msg) - (size_t)k, fmt, ap);
    va_end(ap);
    trim_text(msg);
    cJSON_AddItemToArray(c->notes, cJSON_CreateString(msg));
}

static cJSON *string_node(amqp_bytes_t b) {
    char *s = dup_bytes(b);
    cJSON *j = s ? cJSON_CreateString(s) : NULL;
    free(s);
    return j;
}

static cJSON *base64_node(amqp_bytes_t b) {
    char *s = chorus__base64(b.bytes, b.len);
    cJSON *j = s ? cJSON_CreateString(s) : NULL;
    free(s);
    return j;
}

/* The exact decimal text of an AMQP decimal: @p value / 10^scale. */
static void decimal_text(uint8_t scale, uint32_t value, char out[300]) {
    char digits[16];
    int nd = snprintf(digits, sizeof(digits), "%" PRIu32, value);
    if (scale == 0) {
        memcpy(out, digits, (size_t)nd + 1);
    } else if (nd > scale) {
        memcpy(out, digits, (size_t)(nd - scale));
        out[nd - scale] = '.';
        memcpy(out + nd - scale + 1, digits + nd - scale, (size_t)scale + 1);
    } else {
        size_t o = 0;
        out[o++] = '0';
        out[o++] = '.';
        for (int i = nd; i < scale; i++)
            out[o++] = '0';
        memcpy(out + o, digits, (size_t)nd + 1);
    }
}

static cJSON *plain_float(plain_t *c, double d, char kind, uint64_t bits) {
    if (isfinite(d))
        return cJSON_CreateNumber(d);
    const char *s = isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity";
    note(c, "%s (kind '%c', bits 0x%0*" PRIx64 ") is no JSON number: shown as a string", s,
         kind, kind == 'f' ? 8 : 16, bits);
    return cJSON_CreateString(s);
}

static cJSON *plain_value(plain_t *c, const amqp_field_value_t *v, int depth);

static cJSON *plain_deep(plain_t *c, const amqp_field_value_t *v) {
    amqp_bytes_t enc;
    if (!value_encode(v, &enc))
        return NULL;
    cJSON *j = base64_node(enc);
    free(enc.bytes);
    note(c, "nested deeper than %d levels: shown as base64 of its AMQP encoding (kind '%c', "
            "then the value)", CHORUS__PLAIN_MAX_DEPTH, v->kind);
    return j;
}

/* Open addressing over the names an object already has, so that a table
 * of many repeated names costs O(n), not O(n^2).  next[i] is where the
 * search for a free "name (k)" resumes for the name in slot i: every k
 * below it is taken, and names are never removed. */
typedef struct {
    const char **slot;
    int *next;
    size_t mask;
} nameset_t;

static size_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return (size_t)h;
}

static bool nameset_init(nameset_t *s, int n) {
    size_t cap = 16;
    while (cap < 2 * (size_t)n + 2)
        cap *= 2;
    s->slot = calloc(cap, sizeof(*s->slot));
    s->next = calloc(cap, sizeof(*s->next));
    s->mask = cap - 1;
    if (!s->slot || !s->next) {
        free(s->slot);
        free(s->next);
        return false;
    }
    return true;
}

/* True when @p k was there already (*at: its slot); else adds it
 * (borrowed) when @p add. */
static bool nameset_put(nameset_t *s, const char *k, bool add, size_t *at) {
    size_t i = name_hash(k) & s->mask;
    for (; s->slot[i]; i = (i + 1) & s->mask)
        if (strcmp(s->slot[i], k) == 0) {
            if (at)
                *at = i;
            return true;
        }
    if (add)
        s->slot[i] = k;
    return false;
}

static cJSON *plain_table(plain_t *c, const amqp_table_t *t, int depth) {
    cJSON *o = cJSON_CreateObject();
    nameset_t names;
    int n = t ? t->num_entries : 0;
    if (!o || !nameset_init(&names, n)) {
        cJSON_Delete(o);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        size_t back = path_name(&c->path, e->key);
        bool b64;
        char *key = chorus__text_or_base64(e->key, &b64), *uniq = NULL;
        if (key && b64)
            note(c, "the name is not UTF-8 text: shown as \"%.60s%s\"", key,
                 strlen(key) > 60 ? "..." : "");
        size_t at;
        if (key && nameset_put(&names, key, false, &at)) {
            uniq = malloc(strlen(key) + 16);
            for (int k = names.next[at] > 2 ? names.next[at] : 2; uniq; k++) {
                sprintf(uniq, "%s (%d)", key, k);
                if (!nameset_put(&names, uniq, false, NULL)) {
                    names.next[at] = k + 1;
                    break;
                }
            }
            if (uniq)
                note(c, "a repeated name (AMQP tables may repeat one): this entry is shown "
                        "as \"%.80s\"", uniq);
        }
        cJSON *v = key ? plain_value(c, &e->value, depth + 1) : NULL;
        const char *use = uniq ? uniq : key;
        bool added = v && use && cJSON_AddItemToObject(o, use, v);
        free(key);
        free(uniq);
        path_back(&c->path, back);
        if (!added) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            o = NULL;
            break;
        }
        nameset_put(&names, v->string, true, NULL);
    }
    free(names.slot);
    free(names.next);
    return o;
}

static cJSON *plain_value(plain_t *c, const amqp_field_value_t *v, int depth) {
    char text[300];
    uint64_t bits = 0;
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: return cJSON_CreateBool(v->value.boolean != 0);
    case AMQP_FIELD_KIND_I8: return cJSON_CreateNumber(v->value.i8);
    case AMQP_FIELD_KIND_U8: return cJSON_CreateNumber(v->value.u8);
    case AMQP_FIELD_KIND_I16: return cJSON_CreateNumber(v->value.i16);
    case AMQP_FIELD_KIND_U16: return cJSON_CreateNumber(v->value.u16);
    case AMQP_FIELD_KIND_I32: return cJSON_CreateNumber(v->value.i32);
    case AMQP_FIELD_KIND_U32: return cJSON_CreateNumber(v->value.u32);
    case AMQP_FIELD_KIND_I64:
        if (v->value.i64 < -SAFE_INT || v->value.i64 > SAFE_INT)
            note(c, "%" PRId64 " is beyond 2^53 - 1: shown as a decimal string", v->value.i64);
        return i64_node(v->value.i64);
    case AMQP_FIELD_KIND_U64:
        if (v->value.u64 > (uint64_t)SAFE_INT)
            note(c, "%" PRIu64 " is beyond 2^53 - 1: shown as a decimal string", v->value.u64);
        return u64_node(v->value.u64);
    case AMQP_FIELD_KIND_TIMESTAMP:
        if (v->value.u64 <= (uint64_t)TS_MAX_S) {
            chorus_format_timestamp((int64_t)v->value.u64 * 1000, text);
            return cJSON_CreateString(text);
        }
        note(c, "timestamp %" PRIu64 " is after the year 9999: shown as seconds since 1970%s",
             v->value.u64, v->value.u64 > (uint64_t)SAFE_INT ? " (a decimal string)" : "");
        return u64_node(v->value.u64);
    case AMQP_FIELD_KIND_F32: {
        uint32_t b32;
        memcpy(&b32, &v->value.f32, sizeof(b32));
        return plain_float(c, v->value.f32, 'f', b32);
    }
    case AMQP_FIELD_KIND_F64:
        memcpy(&bits, &v->value.f64, sizeof(bits));
        return plain_float(c, v->value.f64, 'd', bits);
    case AMQP_FIELD_KIND_DECIMAL:
        decimal_text(v->value.decimal.decimals, v->value.decimal.value, text);
        note(c, "an AMQP decimal (scale %u, value %" PRIu32 "): shown as exact text",
             v->value.decimal.decimals, v->value.decimal.value);
        return cJSON_CreateString(text);
    case AMQP_FIELD_KIND_UTF8:
        if (chorus__bytes_are_text(v->value.bytes))
            return string_node(v->value.bytes);
        note(c, "a string of %zu bytes that is not UTF-8 text (an invalid byte, a NUL, a "
                "surrogate or a noncharacter): shown as base64", v->value.bytes.len);
        return base64_node(v->value.bytes);
    case AMQP_FIELD_KIND_BYTES:
        note(c, "bytes (kind 'x', %zu of them): shown as base64", v->value.bytes.len);
        return base64_node(v->value.bytes);
    case AMQP_FIELD_KIND_VOID: return cJSON_CreateNull();
    case AMQP_FIELD_KIND_TABLE:
        return depth > CHORUS__PLAIN_MAX_DEPTH ? plain_deep(c, v)
                                               : plain_table(c, &v->value.table, depth);
    case AMQP_FIELD_KIND_ARRAY: {
        if (depth > CHORUS__PLAIN_MAX_DEPTH)
            return plain_deep(c, v);
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; a && i < v->value.array.num_entries; i++) {
            size_t back = path_index(&c->path, i);
            cJSON *x = plain_value(c, &v->value.array.entries[i], depth + 1);
            path_back(&c->path, back);
            if (!x || !cJSON_AddItemToArray(a, x)) {
                cJSON_Delete(x);
                cJSON_Delete(a);
                a = NULL;
            }
        }
        return a;
    }
    default:
        note(c, "a value of unknown kind 0x%02x: shown as null", v->kind);
        return cJSON_CreateNull();
    }
}

cJSON *chorus__table_to_plain(const amqp_table_t *t, const char *path, cJSON *notes) {
    plain_t c = {.notes = notes};
    path_init(&c.path, path);
    return plain_table(&c, t, 0);
}

cJSON *chorus__value_to_plain(const amqp_field_value_t *v, const char *path, cJSON *notes) {
    plain_t c = {.notes = notes};
    path_init(&c.path, path);
    return plain_value(&c, v, 0);
}

/* ---- typed: out ---------------------------------------------------------- */

typedef struct {
    bool too_deep;
    char *why;
    size_t n;
} typed_t;

/* A JSON container at nesting @p depth would be too deep to parse again. */
static bool room(typed_t *c, int depth) {
    if (depth > CHORUS__JSON_MAX_DEPTH)
        c->too_deep = true;
    return !c->too_deep;
}

static cJSON *member1(const char *name, cJSON *v) {
    cJSON *o = v ? cJSON_CreateObject() : NULL;
    if (!o || !cJSON_AddItemToObject(o, name, v)) {
        cJSON_Delete(o);
        cJSON_Delete(v);
        return NULL;
    }
    return o;
}

/* Text as a string; anything else {"base64": ...} (a container at @p depth). */
static cJSON *text_or_b64_node(typed_t *c, amqp_bytes_t b, int depth) {
    if (chorus__bytes_are_text(b))
        return string_node(b);
    return room(c, depth) ? member1("base64", base64_node(b)) : NULL;
}

static cJSON *bits_node(typed_t *c, uint64_t bits, int digits, int depth) {
    char s[24];
    snprintf(s, sizeof(s), "0x%0*" PRIx64, digits, bits);
    return room(c, depth) ? member1("bits", cJSON_CreateString(s)) : NULL;
}

static cJSON *typed_table(typed_t *c, const amqp_table_t *t, int depth);

/* {"<kind>": value}, the object at nesting @p depth. */
static cJSON *typed_value(typed_t *c, const amqp_field_value_t *v, int depth) {
    cJSON *x = NULL;
    uint64_t bits = 0;
    if (!room(c, depth))
        return NULL;
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN: x = cJSON_CreateBool(v->value.boolean != 0); break;
    case AMQP_FIELD_KIND_I8: x = cJSON_CreateNumber(v->value.i8); break;
    case AMQP_FIELD_KIND_U8: x = cJSON_CreateNumber(v->value.u8); break;
    case AMQP_FIELD_KIND_I16: x = cJSON_CreateNumber(v->value.i16); break;
    case AMQP_FIELD_KIND_U16: x = cJSON_CreateNumber(v->value.u16); break;
    case AMQP_FIELD_KIND_I32: x = cJSON_CreateNumber(v->value.i32); break;
    case AMQP_FIELD_KIND_U32: x = cJSON_CreateNumber(v->value.u32); break;
    case AMQP_FIELD_KIND_I64: x = i64_node(v->value.i64); break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: x = u64_node(v->value.u64); break;
    case AMQP_FIELD_KIND_F32: {
        uint32_t b32;
        memcpy(&b32, &v->value.f32, sizeof(b32));
        x = isfinite(v->value.f32) ? cJSON_CreateNumber(v->value.f32)
                                   : bits_node(c, b32, 8, depth + 1);
        break;
    }
    case AMQP_FIELD_KIND_F64:
        memcpy(&bits, &v->value.f64, sizeof(bits));
        x = isfinite(v->value.f64) ? cJSON_CreateNumber(v->value.f64)
                                   : bits_node(c, bits, 16, depth + 1);
        break;
    case AMQP_FIELD_KIND_DECIMAL:
        if (room(c, depth + 1) && (x = cJSON_CreateObject()) != NULL &&
            (!cJSON_AddNumberToObject(x, "scale", v->value.decimal.decimals) ||
             !cJSON_AddNumberToObject(x, "value", v->value.decimal.value))) {
            cJSON_Delete(x);
            x = NULL;
        }
        break;
    case AMQP_FIELD_KIND_UTF8: x = text_or_b64_node(c, v->value.bytes, depth + 1); break;
    case AMQP_FIELD_KIND_BYTES: x = base64_node(v->value.bytes); break;
    case AMQP_FIELD_KIND_VOID: x = cJSON_CreateNull(); break;
    case AMQP_FIELD_KIND_TABLE: x = typed_table(c, &v->value.table, depth + 1); break;
    case AMQP_FIELD_KIND_ARRAY:
        x = room(c, depth + 1) ? cJSON_CreateArray() : NULL;
        for (int i = 0; x && i < v->value.array.num_entries; i++) {
            cJSON *e = typed_value(c, &v->value.array.entries[i], depth + 2);
            if (!e || !cJSON_AddItemToArray(x, e)) {
                cJSON_Delete(e);
                cJSON_Delete(x);
                x = NULL;
            }
        }
        break;
    default:
        chorus__errstr(c->why, c->n, "a header value of unknown kind 0x%02x", v->kind);
        return NULL;
    }
    char k[2] = {(char)v->kind, '\0'};
    return member1(k, x);
}

/* {"name": ..., "value": ...}, the object at nesting @p depth. */
static cJSON *typed_entry(typed_t *c, const amqp_table_entry_t *te, int depth) {
    bool text = chorus__bytes_are_text(te->key);
    cJSON *e = room(c, depth) ? cJSON_CreateObject() : NULL;
    if (!e)
        return NULL;
    cJSON *name = text ? string_node(te->key) : base64_node(te->key);
    if (!name || !cJSON_AddItemToObject(e, text ? "name" : "name_base64", name)) {
        cJSON_Delete(name);
        cJSON_Delete(e);
        return NULL;
    }
    cJSON *v = typed_value(c, &te->value, depth + 1);
    if (!v || !cJSON_AddItemToObject(e, "value", v)) {
        cJSON_Delete(v);
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

/* The entry array at nesting @p depth. */
static cJSON *typed_table(typed_t *c, const amqp_table_t *t, int depth) {
    cJSON *a = room(c, depth) ? cJSON_CreateArray() : NULL;
    for (int i = 0; a && t && i < t->num_entries; i++) {
        cJSON *e = typed_entry(c, &t->entries[i], depth + 1);
        if (!e || !cJSON_AddItemToArray(a, e)) {
            cJSON_Delete(e);
            cJSON_Delete(a);
            a = NULL;
        }
    }
    return a;
}

cJSON *chorus__table_to_typed(const amqp_table_t *t, int depth, bool *too_deep, char *why,
                              size_t n) {
    typed_t c = {.why = why, .n = n};
    if (why && n)
        why[0] = '\0';
    cJSON *a = typed_table(&c, t, depth);
    *too_deep = c.too_deep;
    if (!a && !c.too_deep && why && n && !why[0])
        chorus__errstr(why, n, "out of memory");
    return a;
}

/* ---- typed: in ----------------------------------------------------------- */

typedef struct {
    amqp_pool_t *pool;
    path_t path;
    bool object_form; /* format 1: tables are {"name": value} */
    char *why;
    size_t n;
} from_t;

static bool bad(from_t *c, const char *fmt, ...) CHORUS_PRINTF(2, 3);
static bool bad(from_t *c, const char *fmt, ...) {
    va_list ap;
    if (!c->why || !c->n)
        return false;
    int k = snprintf(c->why, c->n, "%s%s", c->path.buf, c->path.len ? ": " : "");
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < c->n)
        vsnprintf(c->why + k, c->n - (size_t)k, fmt, ap);
    va_end(ap);
    return false;
}

static const char *jtype(const cJSON *x) {
    switch (x ? x->type & 0xFF : 0) {
    case cJSON_False:
    case cJSON_True: return "a boolean";
    case cJSON_NULL: return "null";
    case cJSON_Number: return "a number";
    case cJSON_String: return "a string";
    case cJSON_Array: return "an array";
    case cJSON_Object: return "an object";
    default: return "nothing";
    }
}

static bool pool_copy(from_t *c, const void *s, size_t len, amqp_bytes_t *out) {
    *out = amqp_empty_bytes;
    if (len == 0)
        return true;
    amqp_pool_alloc_bytes(c->pool, len, out);
    if (!out->bytes)
        return bad(c, "out of memory");
    memcpy(out->bytes, s, len);
    return true;
}

/* How a number is named in errors: {"b": 1000} for a header value of kind
 * @p kind, else "priority 1e10". */
static void shown(char *out, size_t n, char kind, const char *desc, const char *num) {
    if (kind)
        snprintf(out, n, "{\"%c\": %s}", kind, num);
    else
        snprintf(out, n, "%s %s", desc, num);
}

static bool out_of_range(from_t *c, char kind, const char *desc, const char *num,
                         const char *range) {
    char sh[128];
    shown(sh, sizeof(sh), kind, desc, num);
    return kind ? bad(c, "%s is out of range for %s (%s)", sh, desc, range)
                : bad(c, "%s is out of range (%s)", sh, range);
}

/* An integer JSON number within lo..hi (both within 2^53 - 1).  @p kind:
 * the AMQP kind of a header value, or 0 for a property named @p desc. */
static bool int_in(from_t *c, const cJSON *x, char kind, const char *desc, int64_t lo,
                   int64_t hi, int64_t *out) {
    char num[48], sh[128], range[48];
    if (!cJSON_IsNumber(x))
        return kind ? bad(c, "{\"%c\": ...} takes a JSON integer (%s), not %s", kind, desc,
                          jtype(x))
                    : bad(c, "%s takes a JSON integer, not %s", desc, jtype(x));
    double d = x->valuedouble;
    if (!chorus__json_number(d, num, sizeof(num)))
        snprintf(num, sizeof(num), "%s", isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
    shown(sh, sizeof(sh), kind, desc, num);
    if (!isfinite(d) || d != trunc(d))
        return bad(c, "%s is not an integer", sh);
    snprintf(range, sizeof(range), "%" PRId64 "..%" PRId64, lo, hi);
    if (d < (double)lo || d > (double)hi)
        return out_of_range(c, kind, desc, num, range);
    *out = (int64_t)d;
    return true;
}

/* Strict decimal: an optional '-', then "0" or digits not starting with 0
 * ("-0" is not one either). */
static bool parse_decimal(const char *s, bool *neg, uint64_t *mag, bool *overflow) {
    *neg = *s == '-';
    *mag = 0;
    *overflow = false;
    s += *neg;
    if (!*s || (*s == '0' && (s[1] || *neg)))
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned dg = (unsigned)(*s - '0');
        if (*mag > (UINT64_MAX - dg) / 10)
            *overflow = true;
        else if (!*overflow)
            *mag = *mag * 10 + dg;
    }
    return true;
}

/* A 64-bit integer: a JSON integer within 2^53 - 1, or a decimal string. */
static bool int64_in(from_t *c, const cJSON *x, char kind, const char *desc, bool is_signed,
                     int64_t *i, uint64_t *u) {
    const char *range = is_signed ? "-9223372036854775808..9223372036854775807"
                                  : "0..18446744073709551615";
    char num[64], sh[128];
    if (cJSON_IsString(x)) {
        bool neg, over;
        uint64_t mag;
        snprintf(num, sizeof(num), "\"%.40s%s\"", x->valuestring,
                 strlen(x->valuestring) > 40 ? "..." : "");
        trim_text(num);
        shown(sh, sizeof(sh), kind, desc, num);
        if (!parse_decimal(x->valuestring, &neg, &mag, &over))
            return bad(c, "%s is not a decimal integer (an optional '-', then digits without "
                          "a leading zero)", sh);
        if (over || (!is_signed && neg) ||
            (is_signed && mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)))
            return out_of_range(c, kind, desc, num, range);
        if (is_signed)
            *i = !neg ? (int64_t)mag : mag > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)mag;
        else
            *u = mag;
        return true;
    }
    if (!cJSON_IsNumber(x))
        return kind ? bad(c, "{\"%c\": ...} takes a JSON integer or a decimal string (%s), "
                             "not %s", kind, desc, jtype(x))
                    : bad(c, "%s takes a JSON integer or a decimal string, not %s", desc,
                          jtype(x));
    double d = x->valuedouble;
    if (!chorus__json_number(d, num, sizeof(num)))
        snprintf(num, sizeof(num), "%s", isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
    shown(sh, sizeof(sh), kind, desc, num);
    if (!isfinite(d) || d != trunc(d))
        return bad(c, "%s is not an integer", sh);
    if (!is_signed && d < 0)
        return out_of_range(c, kind, desc, num, range);
    if (fabs(d) > (double)SAFE_INT)
        return bad(c, "%s: beyond 2^53 - 1 a JSON number is not exact; write the integer as "
                      "a decimal string", sh);
    if (is_signed)
        *i = (int64_t)d;
    else
        *u = (uint64_t)d;
    return true;
}

static int hexval(char ch) {
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* {"bits": "0x" and @p digits hex digits}: the exact bits of a float. */
static bool bits_in(from_t *c, const cJSON *x, char kind, int digits, uint64_t *out) {
    const cJSON *b = cJSON_IsObject(x) ? x->child : NULL;
    const char *s = b && !b->next && strcmp(b->string, "bits") == 0 && cJSON_IsString(b)
                        ? b->valuestring
                        : NULL;
    bool ok = s && s[0] == '0' && s[1] == 'x' && strlen(s) == (size_t)digits + 2;
    *out = 0;
    for (int i = 0; ok && i < digits; i++) {
        int h = hexval(s[2 + i]);
        ok = h >= 0;
        *out = *out << 4 | (uint64_t)(ok ? h : 0);
    }
    return ok || bad(c, "{\"%c\": ...} takes a finite JSON number or {\"bits\": \"0x\" and %d "
                        "hex digits}, not %s", kind, digits,
                     cJSON_IsNumber(x) ? "a number that is not finite" : "this");
}

static bool only_members(from_t *c, const cJSON *o, const char *what, const char *const *names) {
    for (const cJSON *m = o->child; m; m = m->next) {
        bool known = false;
        for (int i = 0; names[i] && !known; i++)
            known = strcmp(m->string, names[i]) == 0;
        if (!known)
            return bad(c, "%s has no member \"%.*s\"", what, chorus__text_cut(m->string, 40),
                       m->string);
    }
    return true;
}

/* The kinds whose values are JSON integers within 2^53 - 1. */
static const struct {
    char kind;
    const char *desc;
    int64_t lo, hi;
} SMALL_INTS[] = {
    {'b', "a signed 8-bit integer", INT8_MIN, INT8_MAX},
    {'B', "an unsigned 8-bit integer", 0, UINT8_MAX},
    {'s', "a signed 16-bit integer", INT16_MIN, INT16_MAX},
    {'u', "an unsigned 16-bit integer", 0, UINT16_MAX},
    {'I', "a signed 32-bit integer", INT32_MIN, INT32_MAX},
    {'i', "an unsigned 32-bit integer", 0, UINT32_MAX},
};

static void set_small(amqp_field_value_t *v, int64_t i) {
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8: v->value.i8 = (int8_t)i; break;
    case AMQP_FIELD_KIND_U8: v->value.u8 = (uint8_t)i; break;
    case AMQP_FIELD_KIND_I16: v->value.i16 = (int16_t)i; break;
    case AMQP_FIELD_KIND_U16: v->value.u16 = (uint16_t)i; break;
    case AMQP_FIELD_KIND_I32: v->value.i32 = (int32_t)i; break;
    default: v->value.u32 = (uint32_t)i; break;
    }
}

static bool f32_in(from_t *c, const cJSON *x, float *out) {
    uint64_t bits;
    if (cJSON_IsNumber(x) && isfinite(x->valuedouble)) {
        double d = x->valuedouble;
        char num[48], near[48];
        chorus__json_number(d, num, sizeof(num));
        if (fabs(d) > FLT_MAX) /* converting it would be undefined */
            return bad(c, "{\"f\": %s} is beyond the range of a 32-bit float", num);
        float f = (float)d;
        if ((double)f != d) {
            chorus__json_number(f, near, sizeof(near));
            return bad(c, "{\"f\": %s} is not exactly a 32-bit float (the nearest is %s)", num,
                       near);
        }
        *out = f;
        return true;
    }
    if (!bits_in(c, x, 'f', 8, &bits))
        return false;
    uint32_t b32 = (uint32_t)bits;
    memcpy(out, &b32, sizeof(b32));
    return true;
}

static bool decimal_in(from_t *c, const cJSON *x, amqp_decimal_t *out) {
    static const char *const names[] = {"scale", "value", NULL};
    int64_t i;
    if (!cJSON_IsObject(x))
        return bad(c, "{\"D\": ...} takes {\"scale\": 0..255, \"value\": 0..4294967295}, "
                      "not %s", jtype(x));
    if (!only_members(c, x, "{\"D\": ...}", names) ||
        !int_in(c, cJSON_GetObjectItemCaseSensitive(x, "scale"), 0, "the decimal's scale", 0,
                UINT8_MAX, &i))
        return false;
    out->decimals = (uint8_t)i;
    if (!int_in(c, cJSON_GetObjectItemCaseSensitive(x, "value"), 0, "the decimal's value", 0,
                UINT32_MAX, &i))
        return false;
    out->value = (uint32_t)i;
    return true;
}

static bool table_in(from_t *c, const cJSON *j, amqp_table_t *out);

static bool value_in(from_t *c, const cJSON *j, amqp_field_value_t *v) {
    const cJSON *x = cJSON_IsObject(j) ? j->child : NULL;
    int64_t i = 0;
    uint64_t u = 0;
    if (!x || x->next || strlen(x->string) != 1)
        return bad(c, "a typed value is an object of one member named by its AMQP kind (one "
                      "of t b B s u I i l L T f d D S x A F V), e.g. {\"S\": \"text\"}; not %s",
                   !x ? (cJSON_IsObject(j) ? "an empty object" : jtype(j))
                      : x->next ? "an object of several members" : "this one");
    char k = x->string[0];
    v->kind = (uint8_t)k;
    for (size_t s = 0; s < sizeof(SMALL_INTS) / sizeof(SMALL_INTS[0]); s++)
        if (SMALL_INTS[s].kind == k) {
            if (!int_in(c, x, k, SMALL_INTS[s].desc, SMALL_INTS[s].lo, SMALL_INTS[s].hi, &i))
                return false;
            set_small(v, i);
            return true;
        }
    switch (k) {
    case 't':
        v->value.boolean = cJSON_IsTrue(x);
        return cJSON_IsBool(x) || bad(c, "{\"t\": ...} takes true or false, not %s", jtype(x));
    case 'l': return int64_in(c, x, k, "a signed 64-bit integer", true, &v->value.i64, &u);
    case 'L': return int64_in(c, x, k, "an unsigned 64-bit integer", false, &i, &v->value.u64);
    case 'T':
        return int64_in(c, x, k, "a timestamp (unsigned 64-bit seconds)", false, &i,
                        &v->value.u64);
    case 'f': return f32_in(c, x, &v->value.f32);
    case 'd':
        if (cJSON_IsNumber(x) && isfinite(x->valuedouble)) {
            v->value.f64 = x->valuedouble;
            return true;
        }
        if (!bits_in(c, x, 'd', 16, &u))
            return false;
        memcpy(&v->value.f64, &u, sizeof(u));
        return true;
    case 'D': return decimal_in(c, x, &v->value.decimal);
    case 'S':
        if (cJSON_IsString(x))
            return pool_copy(c, x->valuestring, strlen(x->valuestring), &v->value.bytes);
        if (cJSON_IsObject(x) && x->child && !x->child->next &&
            strcmp(x->child->string, "base64") == 0 && cJSON_IsString(x->child))
            return unbase64_pool(x->child->valuestring, c->pool, &v->value.bytes) ||
                   bad(c, "{\"S\": {\"base64\": ...}} is not base64 (RFC 4648, padded)");
        return bad(c, "{\"S\": ...} takes a string or {\"base64\": ...}, not %s", jtype(x));
    case 'x':
        if (!cJSON_IsString(x))
            return bad(c, "{\"x\": ...} takes a base64 string, not %s", jtype(x));
        return unbase64_pool(x->valuestring, c->pool, &v->value.bytes) ||
               bad(c, "{\"x\": ...} is not base64 (RFC 4648, padded)");
    case 'V': return cJSON_IsNull(x) || bad(c, "{\"V\": ...} takes null, not %s", jtype(x));
    case 'A': {
        int n = cJSON_GetArraySize(x), e = 0;
        if (!cJSON_IsArray(x))
            return bad(c, "{\"A\": ...} takes an array, not %s", jtype(x));
        v->value.array.num_entries = 0;
        v->value.array.entries = NULL;
        if (n && !(v->value.array.entries =
                       amqp_pool_alloc(c->pool, sizeof(amqp_field_value_t) * (size_t)n)))
            return bad(c, "out of memory");
        for (const cJSON *el = x->child; el; el = el->next, e++) {
            size_t back = path_index(&c->path, e);
            if (!value_in(c, el, &v->value.array.entries[e]))
                return false;
            path_back(&c->path, back);
        }
        v->value.array.num_entries = e;
        return true;
    }
    case 'F': return table_in(c, x, &v->value.table);
    default:
        return bad(c, "\"%s\" is no AMQP kind (one of t b B s u I i l L T f d D S x A F V)",
                   x->string);
    }
}

static bool name_in(from_t *c, const cJSON *e, amqp_bytes_t *key) {
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
    const cJSON *nb = cJSON_GetObjectItemCaseSensitive(e, "name_base64");
    const cJSON *x = nm ? nm : nb;
    if ((nm != NULL) == (nb != NULL))
        return bad(c, "an entry has exactly one of \"name\" and \"name_base64\"");
    if (!cJSON_IsString(x))
        return bad(c, "\"%s\" takes a string, not %s", x->string, jtype(x));
    if (nm ? !pool_copy(c, nm->valuestring, strlen(nm->valuestring), key)
           : !unbase64_pool(nb->valuestring, c->pool, key))
        return nm ? false : bad(c, "\"name_base64\" is not base64 (RFC 4648, padded)");
    if (key->len > 255)
        return bad(c, "the header name is %zu bytes; AMQP carries at most 255", key->len);
    return true;
}

static bool table_in(from_t *c, const cJSON *j, amqp_table_t *out) {
    static const char *const names[] = {"name", "name_base64", "value", NULL};
    int n = cJSON_GetArraySize(j), k = 0;
    out->num_entries = 0;
    out->entries = NULL;
    if (c->object_form ? !cJSON_IsObject(j) : !cJSON_IsArray(j))
        return c->object_form
                   ? bad(c, "a table (format 1) is an object of typed values, not %s", jtype(j))
                   : bad(c, "a table is an array of {\"name\": ..., \"value\": ...}, not %s",
                         jtype(j));
    if (n && !(out->entries = amqp_pool_alloc(c->pool, sizeof(amqp_table_entry_t) * (size_t)n)))
        return bad(c, "out of memory");
    for (const cJSON *e = j->child; e; e = e->next, k++) {
        amqp_table_entry_t *te = &out->entries[k];
        const cJSON *val = e;
        size_t back = path_index(&c->path, k);
        if (c->object_form) {
            if (!pool_copy(c, e->string, strlen(e->string), &te->key))
                return false;
            if (te->key.len > 255)
                return bad(c, "the header name is %zu bytes; AMQP carries at most 255",
                           te->key.len);
        } else {
            if (!cJSON_IsObject(e))
                return bad(c, "an entry is {\"name\": ..., \"value\": ...}, not %s", jtype(e));
            if (!only_members(c, e, "an entry", names) || !name_in(c, e, &te->key))
                return false;
            if (!(val = cJSON_GetObjectItemCaseSensitive(e, "value")))
                return bad(c, "the entry has no \"value\"");
        }
        path_back(&c->path, back);
        back = path_name(&c->path, te->key);
        if (!value_in(c, val, &te->value))
            return false;
        path_back(&c->path, back);
    }
    out->num_entries = k;
    return true;
}

bool chorus__table_from_typed(const cJSON *j, bool object_form, const char *path,
                              amqp_table_t *out, amqp_pool_t *pool, char *why, size_t n) {
    from_t c = {.pool = pool, .object_form = object_form, .why = why, .n = n};
    path_init(&c.path, path);
    return table_in(&c, j, out);
}

/* ---- properties -------------------------------------------------------- */

static const struct {
    const char *name;
    amqp_flags_t flag;
    size_t off;
} SHORT_PROPS[] = {
#define P(f, flag) {#f, flag, offsetof(amqp_basic_properties_t, f)}
    P(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG),
    P(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG),
    P(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG),
    P(reply_to, AMQP_BASIC_REPLY_TO_FLAG),
    P(expiration, AMQP_BASIC_EXPIRATION_FLAG),
    P(message_id, AMQP_BASIC_MESSAGE_ID_FLAG),
    P(type, AMQP_BASIC_TYPE_FLAG),
    P(user_id, AMQP_BASIC_USER_ID_FLAG),
    P(app_id, AMQP_BASIC_APP_ID_FLAG),
    P(cluster_id, AMQP_BASIC_CLUSTER_ID_FLAG),
#undef P
};
#define NSHORT (sizeof(SHORT_PROPS) / sizeof(SHORT_PROPS[0]))

static amqp_bytes_t *short_prop(amqp_basic_properties_t *p, size_t i) {
    return (amqp_bytes_t *)(void *)((char *)p + SHORT_PROPS[i].off);
}

/* A short string as export writes it: text, or {"base64": ...}. */
static cJSON *short_node(amqp_bytes_t b) {
    typed_t c = {0};
    return text_or_b64_node(&c, b, 0);
}

static bool add(cJSON *o, const char *name, cJSON *v) {
    if (v && cJSON_AddItemToObject(o, name, v))
        return true;
    cJSON_Delete(v);
    return false;
}

cJSON *chorus__props_to_json(const amqp_basic_properties_t *p) {
    amqp_basic_properties_t copy = *p;
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    for (size_t i = 0; ok && i < NSHORT; i++)
        if (p->_flags & SHORT_PROPS[i].flag)
            ok = add(o, SHORT_PROPS[i].name, short_node(*short_prop(&copy, i)));
    if (ok && (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG))
        ok = add(o, "delivery_mode", cJSON_CreateNumber(p->delivery_mode));
    if (ok && (p->_flags & AMQP_BASIC_PRIORITY_FLAG))
        ok = add(o, "priority", cJSON_CreateNumber(p->priority));
    if (ok && (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG))
        ok = add(o, "timestamp", u64_node(p->timestamp));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static bool short_in(from_t *c, const cJSON *x, const char *name, amqp_bytes_t *out) {
    if (cJSON_IsString(x)) {
        if (!pool_copy(c, x->valuestring, strlen(x->valuestring), out))
            return false;
    } else if (cJSON_IsObject(x) && x->child && !x->child->next &&
               strcmp(x->child->string, "base64") == 0 && cJSON_IsString(x->child)) {
        if (!unbase64_pool(x->child->valuestring, c->pool, out))
            return bad(c, "%s: {\"base64\": ...} is not base64 (RFC 4648, padded)", name);
    } else {
        return bad(c, "%s takes a string or {\"base64\": ...}, not %s", name, jtype(x));
    }
    if (out->len > 255)
        return bad(c, "%s is %zu bytes; AMQP carries at most 255", name, out->len);
    return true;
}

static bool props_in(from_t *c, const cJSON *j, amqp_basic_properties_t *p) {
    int64_t i;
    if (!cJSON_IsObject(j))
        return bad(c, "the properties are an object, not %s", jtype(j));
    for (const cJSON *m = j->child; m; m = m->next) {
        size_t k = 0;
        while (k < NSHORT && strcmp(SHORT_PROPS[k].name, m->string) != 0)
            k++;
        char name[64];
        snprintf(name, sizeof(name), "properties.%.40s", m->string);
        if (k < NSHORT) {
            if (!short_in(c, m, name, short_prop(p, k)))
                return false;
            p->_flags |= SHORT_PROPS[k].flag;
        } else if (strcmp(m->string, "delivery_mode") == 0) {
            if (!int_in(c, m, 0, name, 0, UINT8_MAX, &i))
                return false;
            p->delivery_mode = (uint8_t)i;
            p->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
        } else if (strcmp(m->string, "priority") == 0) {
            if (!int_in(c, m, 0, name, 0, UINT8_MAX, &i))
                return false;
            p->priority = (uint8_t)i;
            p->_flags |= AMQP_BASIC_PRIORITY_FLAG;
        } else if (strcmp(m->string, "timestamp") == 0) {
            if (!int64_in(c, m, 0, name, false, &i, &p->timestamp))
                return false;
            p->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
        } else {
            return bad(c, "no property is named \"%.*s\"", chorus__text_cut(m->string, 40),
                       m->string);
        }
    }
    return true;
}

bool chorus__props_from_json(const cJSON *j, amqp_basic_properties_t *p, amqp_pool_t *pool,
                             char *why, size_t n) {
    from_t c = {.pool = pool, .why = why, .n = n};
    path_init(&c.path, "");
    return props_in(&c, j, p);
}

/* ---- export lines ------------------------------------------------------ */

#define DELIVERY_COUNT "x-delivery-count"

static bool is_delivery_count(amqp_bytes_t k) {
    return k.len == strlen(DELIVERY_COUNT) && memcmp(k.bytes, DELIVERY_COUNT, k.len) == 0;
}

/* @p t without x-delivery-count (a shallow copy from @p pool). */
static bool without_delivery_count(const amqp_table_t *t, amqp_table_t *out, amqp_pool_t *pool) {
    out->num_entries = 0;
    out->entries = t->num_entries
                       ? amqp_pool_alloc(pool, sizeof(amqp_table_entry_t) * (size_t)t->num_entries)
                       : NULL;
    if (t->num_entries && !out->entries)
        return false;
    for (int i = 0; i < t->num_entries; i++)
        if (!is_delivery_count(t->entries[i].key))
            out->entries[out->num_entries++] = t->entries[i];
    return true;
}

char *chorus__export_line(const amqp_basic_properties_t *p, amqp_bytes_t body,
                          const amqp_bytes_t *routing_key, char *why, size_t n) {
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    cJSON *o = cJSON_CreateObject();
    char *line = NULL;
    chorus__errstr(why, n, "out of memory");
    bool ok = o && add(o, "format", cJSON_CreateNumber(CHORUS__EXPORT_FORMAT)) &&
              add(o, "routing_key", routing_key ? short_node(*routing_key) : cJSON_CreateNull()) &&
              add(o, "properties", chorus__props_to_json(p));
    if (ok && (p->_flags & AMQP_BASIC_HEADERS_FLAG)) {
        amqp_table_t h;
        bool deep = false;
        cJSON *typed = NULL;
        ok = without_delivery_count(&p->headers, &h, &pool);
        /* root object, then the headers array: nesting 2 */
        if (ok && (typed = chorus__table_to_typed(&h, 2, &deep, why, n)) != NULL) {
            ok = add(o, "headers", typed);
        } else if (ok && deep) {
            amqp_bytes_t enc;
            ok = chorus__table_encode(&h, &enc);
            if (ok) {
                ok = add(o, "headers_amqp_base64", base64_node(enc));
                free(enc.bytes);
            }
            if (!ok)
                chorus__errstr(why, n, "the headers cannot be encoded (out of memory?)");
        } else {
            ok = false;
        }
    }
    if (ok)
        ok = add(o, "body_base64", base64_node(body));
    if (ok) {
        chorus_error_t *err = NULL;
        line = chorus__json_print(o, 0, NULL, &err);
        if (!line)
            chorus__errstr(why, n, "%s", chorus_error_string(err));
        chorus_error_destroy(err);
    }
    cJSON_Delete(o);
    empty_amqp_pool(&pool);
    return line;
}

static const char *const LINE_MEMBERS[] = {"format", "routing_key", "properties", "headers",
                                           "headers_amqp_base64", "body_base64", NULL};

static bool line_in(from_t *c, const cJSON *j, amqp_basic_properties_t *p, amqp_bytes_t *body) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "format");
    const cJSON *rk = cJSON_GetObjectItemCaseSensitive(j, "routing_key");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "properties");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "headers");
    const cJSON *hb = cJSON_GetObjectItemCaseSensitive(j, "headers_amqp_base64");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "body_base64");
    amqp_bytes_t ignored;
    int64_t format = 1;
    if (!cJSON_IsObject(j))
        return bad(c, "a line of 'dlq export' is a JSON object, not %s", jtype(j));
    if (!only_members(c, j, "a line of 'dlq export'", LINE_MEMBERS))
        return false;
    if (f && !int_in(c, f, 0, "format", 1, CHORUS__EXPORT_FORMAT, &format))
        return false;
    if (rk && !cJSON_IsNull(rk) && !short_in(c, rk, "routing_key", &ignored))
        return false;
    if (!pr)
        return bad(c, "the line has no \"properties\"");
    if (!b)
        return bad(c, "the line has no \"body_base64\"");
    if (h && hb)
        return bad(c, "the line has both \"headers\" and \"headers_amqp_base64\"");
    if (hb && format < 2)
        return bad(c, "\"headers_amqp_base64\" needs \"format\": 2");
    if (!props_in(c, pr, p))
        return false;
    path_init(&c->path, "headers");
    c->object_form = format < 2;
    if (h && !table_in(c, h, &p->headers))
        return false;
    if (hb) {
        amqp_bytes_t enc;
        if (!cJSON_IsString(hb))
            return bad(c, "headers_amqp_base64 takes a string, not %s", jtype(hb));
        if (!unbase64_pool(hb->valuestring, c->pool, &enc))
            return bad(c, "headers_amqp_base64 is not base64 (RFC 4648, padded)");
        char why[300];
        if (!chorus__table_decode(enc, &p->headers, c->pool, why, sizeof(why)))
            return bad(c, "headers_amqp_base64: %s", why);
    }
    if (h || hb) {
        amqp_table_t all = p->headers;
        p->_flags |= AMQP_BASIC_HEADERS_FLAG;
        p->headers.num_entries = 0; /* the broker's count does not travel */
        for (int i = 0; i < all.num_entries; i++)
            if (!is_delivery_count(all.entries[i].key))
                p->headers.entries[p->headers.num_entries++] = all.entries[i];
    }
    path_init(&c->path, "body_base64");
    if (!cJSON_IsString(b))
        return bad(c, "takes a string, not %s", jtype(b));
    if (!unbase64_pool(b->valuestring, c->pool, body))
        return bad(c, "not base64 (RFC 4648, padded)");
    return true;
}

bool chorus__import_line(const char *line, size_t len, amqp_basic_properties_t *p,
                         amqp_bytes_t *body, amqp_pool_t *pool, char *why, size_t n) {
    chorus__json_limits_t lim = {.max_depth = CHORUS__JSON_MAX_DEPTH};
    chorus_error_t *err = NULL;
    cJSON *j = NULL;
    memset(p, 0, sizeof(*p));
    *body = amqp_empty_bytes;
    if (chorus__json_parse(line, len, &lim, &j, NULL, &err) != CHORUS_OK) {
        chorus__errstr(why, n, "not JSON as chorus reads it (I-JSON): %s",
                       chorus_error_string(err));
        chorus_error_destroy(err);
        return false;
    }
    from_t c = {.pool = pool, .why = why, .n = n};
    path_init(&c.path, "");
    bool ok = line_in(&c, j, p, body);
    cJSON_Delete(j);
    return ok;
}
