/*
 * json.c - I-JSON in, exact JSON out (see json_int.h for the contract).
 *
 * The parser is a loop over an explicit stack of open containers, so the
 * depth of the input costs heap, never C stack:
 *
 *   value:   '{' push object -> member name -> ':' -> value ...
 *            '[' push array  -> value ...
 *            string | number | true | false | null   attached to the top
 *   after:   ',' next member / element | '}' ']' pop | end of input
 *
 * Every node is attached to its parent the moment it is made, so on any
 * error deleting the root frees everything.  Member names are checked for
 * duplicates as they are added while an object is small (a linear scan
 * over at most SMALL_OBJECT siblings), and by sorting the names once when
 * a larger object closes, so a hostile object with many members costs
 * O(n log n), not O(n^2).
 *
 * The decoded size counts what the tree holds in memory (a cJSON node and
 * malloc's overhead per value, each string's bytes), because that, not the
 * length of the text, is what a message of small numbers multiplies: one
 * MiB of "1," is half a million nodes, about 40 MB.
 *
 * Numbers are read with strtod_l() in the "C" locale and printed in it,
 * so a process whose locale writes decimal commas still reads and writes
 * JSON.  Printing tries 15, 16, then 17 significant digits and keeps the
 * first that reads back as the same double; an integral value beyond
 * 2^53 - 1 is written with an exponent, so that the exact-integer rule of
 * the parser never refuses what the printer wrote.
 */
#include "json_int.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DEPTH 32
#define SMALL_OBJECT 16
#define NODE_COST (sizeof(cJSON) + 16)
#define STRING_COST(n) ((n) + 1 + 16)
#define MAX_NUMBER_TEXT 1100
#define MAX_SAFE_INT 9007199254740991.0

/* ---- the "C" locale ---------------------------------------------------- */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static locale_t the_c_locale(void) {
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale;
}

/* ---- UTF-8 --------------------------------------------------------------- */

static bool noncharacter(uint32_t cp) {
    return (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
}

/* Decodes one well-formed sequence (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF) at @p p; its length, or 0 when malformed. */
static int utf8_decode(const unsigned char *p, size_t n, uint32_t *cp) {
    unsigned char c = p[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < (size_t)len)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

static size_t utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool chorus__json_text_ok(const char *s, size_t len, size_t *bad) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int n = p[i] ? utf8_decode(p + i, len - i, &cp) : 0;
        if (n == 0 || noncharacter(cp)) {
            if (bad)
                *bad = i;
            return false;
        }
        i += (size_t)n;
    }
    return true;
}

/* ---- the parser ---------------------------------------------------------- */

typedef struct {
    cJSON *node;   /* the open container */
    cJSON *tail;   /* its last child */
    size_t count;  /* children so far */
    size_t start;  /* offset of its bracket */
} frame_t;

typedef struct {
    const char *buf;
    size_t len, pos;
    int max_depth;
    size_t max_decoded, decoded;
    frame_t *stack;
    int depth, cap;
    bool reading;             /* a value of the top container is being read */
    const char *pending_name; /* its member name (objects) */
    size_t err_off;           /* where the first error was found */
    chorus_error_t **errp;
} parser_t;

/* How many bytes of @p s, at most @p max, end on a character boundary:
 * error messages quote names, and must stay valid UTF-8. */
static int cut(const char *s, int max) {
    int n = 0;
    while (n < max && s[n])
        n++;
    if (s[n])
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    return n;
}

int chorus__text_cut(const char *s, int max) { return cut(s, max); }

/* "data.items[3]" for the place the parser is at; "" at the top. */
static void where(const parser_t *p, char *out, size_t size) {
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < p->depth && o + 1 < size; i++) {
        const frame_t *f = &p->stack[i];
        bool top = i == p->depth - 1;
        const char *name = NULL;
        size_t index = f->count ? f->count - 1 : 0;
        if (top && p->reading) {
            name = p->pending_name;
            index = f->count;
        } else if (f->tail) {
            name = f->tail->string;
        } else {
            break;
        }
        int n = cJSON_IsObject(f->node)
                    ? snprintf(out + o, size - o, "%s%.*s", o ? "." : "", name ? cut(name, 40) : 1,
                               name ? name : "?")
                    : snprintf(out + o, size - o, "[%zu]", index);
        if (n < 0 || (size_t)n >= size - o) {
            out[o] = '\0'; /* a part that does not fit is left out whole, not cut in a character */
            break;
        }
        o += (size_t)n;
    }
}

static chorus_err_t fail(parser_t *p, chorus_err_t code, size_t off, const char *fmt, ...)
    CHORUS_PRINTF(4, 5);

static chorus_err_t fail(parser_t *p, chorus_err_t code, size_t off, const char *fmt, ...) {
    char what[256], path[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    where(p, path, sizeof(path));
    p->err_off = off;
    return chorus__error_set(p->errp, code, "%s%s%s (offset %zu)", path, *path ? ": " : "",
                             what, off);
}

static void skip_ws(parser_t *p) {
    while (p->pos < p->len) {
        char c = p->buf[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static chorus_err_t charge(parser_t *p, size_t bytes) {
    p->decoded += bytes;
    if (p->max_decoded && p->decoded > p->max_decoded)
        return fail(p, CHORUS_ERR_TOO_LARGE, p->pos,
                    "decoded message exceeds the limit of %zu bytes", p->max_decoded);
    return CHORUS_OK;
}

static int hex4(const char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* One \u escape (or a surrogate pair of them) at p->buf[i] == '\\'; the
 * code point and the bytes it spans. */
static chorus_err_t unicode_escape(parser_t *p, size_t i, uint32_t *cp, size_t *span) {
    uint32_t hi, lo;
    if (p->len - i < 6 || !hex4(p->buf + i + 2, &hi))
        return fail(p, CHORUS_ERR_PARSE, i, "malformed \\u escape");
    *span = 6;
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return fail(p, CHORUS_ERR_NOT_IJSON, i, "lone low surrogate \\u%04X", (unsigned)hi);
    if (hi >= 0xD800 && hi <= 0xDBFF) {
        if (p->len - i < 12 || p->buf[i + 6] != '\\' || p->buf[i + 7] != 'u' ||
            !hex4(p->buf + i + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return fail(p, CHORUS_ERR_NOT_IJSON, i, "lone high surrogate \\u%04X", (unsigned)hi);
        hi = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        *span = 12;
    }
    if (hi == 0)
        return fail(p, CHORUS_ERR_NOT_IJSON, i, "\\u0000 is not allowed in a string");
    if (noncharacter(hi))
        return fail(p, CHORUS_ERR_NOT_IJSON, i, "noncharacter U+%04X", (unsigned)hi);
    *cp = hi;
    return CHORUS_OK;
}

/* A string at p->pos (its opening quote): checks it, then decodes it into
 * a cJSON_malloc'd buffer (*out).  Two passes: the first finds the end and
 * the decoded length and refuses anything malformed. */
static chorus_err_t parse_string(parser_t *p, char **out) {
    size_t start = p->pos + 1, i = start, n = 0;
    const unsigned char *u = (const unsigned char *)p->buf;
    chorus_err_t rc;
    for (;;) {
        if (i >= p->len)
            return fail(p, CHORUS_ERR_PARSE, p->pos, "unterminated string");
        unsigned char c = u[i];
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(p, CHORUS_ERR_PARSE, i,
                        "control character U+%04X in a string must be escaped", c);
        if (c == '\\') {
            if (i + 1 >= p->len)
                return fail(p, CHORUS_ERR_PARSE, i, "unterminated string");
            char e = p->buf[i + 1];
            if (e == 'u') {
                uint32_t cp;
                size_t span;
                char tmp[4];
                if ((rc = unicode_escape(p, i, &cp, &span)))
                    return rc;
                n += utf8_encode(cp, tmp);
                i += span;
            } else if (strchr("\"\\/bfnrt", e) && e) {
                n++;
                i += 2;
            } else {
                return fail(p, CHORUS_ERR_PARSE, i, "invalid escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
            }
            continue;
        }
        uint32_t cp;
        int len = utf8_decode(u + i, p->len - i, &cp);
        if (len == 0)
            return fail(p, CHORUS_ERR_BAD_UTF8, i, "invalid UTF-8 in a string");
        if (noncharacter(cp))
            return fail(p, CHORUS_ERR_NOT_IJSON, i, "noncharacter U+%04X", (unsigned)cp);
        n += (size_t)len;
        i += (size_t)len;
    }
    if ((rc = charge(p, STRING_COST(n))))
        return rc;
    char *s = cJSON_malloc(n + 1);
    if (!s)
        return fail(p, CHORUS_ERR_NOMEM, p->pos, "out of memory");
    size_t o = 0;
    for (size_t k = start; k < i;) {
        char c = p->buf[k];
        if (c != '\\') {
            s[o++] = c;
            k++;
            continue;
        }
        char e = p->buf[k + 1];
        if (e == 'u') {
            uint32_t cp;
            size_t span;
            unicode_escape(p, k, &cp, &span); /* checked in the first pass */
            o += utf8_encode(cp, s + o);
            k += span;
            continue;
        }
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        s[o++] = to[strchr(from, e) - from];
        k += 2;
    }
    s[o] = '\0';
    p->pos = i + 1;
    *out = s;
    return CHORUS_OK;
}

static size_t digits_at(const char *s, size_t i, size_t len) {
    size_t k = i;
    while (k < len && s[k] >= '0' && s[k] <= '9')
        k++;
    return k - i;
}

/* A number at p->pos, by the RFC 8259 grammar, then the exactness rules. */
static chorus_err_t parse_number(parser_t *p, double *out) {
    const char *s = p->buf;
    size_t i = p->pos, start = i;
    bool integer = true;
    if (s[i] == '-')
        i++;
    size_t ni = digits_at(s, i, p->len);
    if (ni == 0)
        return fail(p, CHORUS_ERR_PARSE, start, "malformed number");
    if (s[i] == '0' && ni > 1)
        return fail(p, CHORUS_ERR_PARSE, start, "number with a leading zero");
    size_t int_start = i;
    i += ni;
    size_t frac_start = i, nf = 0;
    if (i < p->len && s[i] == '.') {
        integer = false;
        frac_start = ++i;
        nf = digits_at(s, i, p->len);
        if (nf == 0)
            return fail(p, CHORUS_ERR_PARSE, start, "malformed number (no digit after '.')");
        i += nf;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        integer = false;
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t ne = digits_at(s, i, p->len);
        if (ne == 0)
            return fail(p, CHORUS_ERR_PARSE, start, "malformed number (no digit in the exponent)");
        i += ne;
    }
    size_t len = i - start;
    if (len > MAX_NUMBER_TEXT)
        return fail(p, CHORUS_ERR_NOT_IJSON, start, "number of %zu characters", len);
    bool nonzero = false;
    if (integer) {
        /* Exactly representable integers only: |n| <= 2^53 - 1. */
        if (ni > 16 || (ni == 16 && memcmp(s + int_start, "9007199254740991", 16) > 0))
            return fail(p, CHORUS_ERR_NOT_IJSON, start,
                        "integer %.*s%s is beyond +-(2^53 - 1), the exact range of a double",
                        (int)(len < 24 ? len : 24), s + start, len < 24 ? "" : "...");
    } else {
        /* Significant digits: from the first non-zero to the last non-zero
         * digit of the mantissa. */
        size_t first = SIZE_MAX, last = 0, pos = 0;
        for (size_t k = int_start; k < frac_start + nf; k++) {
            if (s[k] == '.')
                continue;
            if (s[k] != '0') {
                if (first == SIZE_MAX)
                    first = pos;
                last = pos;
            }
            pos++;
        }
        nonzero = first != SIZE_MAX;
        if (nonzero && last - first + 1 > 17)
            return fail(p, CHORUS_ERR_NOT_IJSON, start,
                        "number with %zu significant digits (a double holds 17)", last - first + 1);
    }
    char small[64], *text = len < sizeof(small) ? small : malloc(len + 1);
    if (!text)
        return fail(p, CHORUS_ERR_NOMEM, start, "out of memory");
    memcpy(text, s + start, len);
    text[len] = '\0';
    locale_t c = the_c_locale();
    double d = c ? strtod_l(text, NULL, c) : strtod(text, NULL);
    if (text != small)
        free(text);
    /* Subnormal results are exact doubles (strtod's ERANGE says nothing
     * more); infinity and a non-zero literal read as zero are not. */
    if (!isfinite(d) || (d == 0 && nonzero))
        return fail(p, CHORUS_ERR_NOT_IJSON, start, "number %s the range of a double",
                    d == 0 ? "underflows" : "overflows");
    p->pos = i;
    *out = d;
    return CHORUS_OK;
}

static chorus_err_t push(parser_t *p, cJSON *node) {
    if (p->depth >= p->max_depth)
        return fail(p, CHORUS_ERR_TOO_DEEP, p->pos, "nesting deeper than %d levels",
                    p->max_depth);
    if (p->depth == p->cap) {
        int ncap = p->cap ? p->cap * 2 : 16;
        frame_t *n = realloc(p->stack, (size_t)ncap * sizeof(*n));
        if (!n)
            return fail(p, CHORUS_ERR_NOMEM, p->pos, "out of memory");
        p->stack = n;
        p->cap = ncap;
    }
    p->stack[p->depth++] = (frame_t){.node = node, .start = p->pos};
    return CHORUS_OK;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Sorts the member names of a large object once: a duplicate is a pair of
 * neighbours.  Returns the duplicate name, or NULL. */
static const char *sorted_duplicate(const cJSON *obj, size_t n, bool *oom) {
    const cJSON **v = malloc(n * sizeof(*v));
    *oom = v == NULL;
    if (!v)
        return NULL;
    size_t k = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        v[k++] = c;
    qsort(v, k, sizeof(*v), cmp_names);
    const char *dup = NULL;
    for (size_t i = 1; i < k && !dup; i++)
        if (strcmp(v[i - 1]->string, v[i]->string) == 0)
            dup = v[i]->string;
    free(v);
    return dup;
}

/* Attaches @p node (with member name @p name, taken, for an object) to
 * the open container, or makes it the root. */
static chorus_err_t attach(parser_t *p, cJSON **root, cJSON *node, char *name, size_t name_off) {
    if (p->depth == 0) {
        *root = node;
        return CHORUS_OK;
    }
    frame_t *f = &p->stack[p->depth - 1];
    if (name) {
        node->string = name;
        if (f->count < SMALL_OBJECT)
            for (const cJSON *c = f->node->child; c; c = c->next)
                if (strcmp(c->string, name) == 0) {
                    /* name the object, not the member */
                    p->reading = false;
                    p->depth--;
                    chorus_err_t rc = fail(p, CHORUS_ERR_NOT_IJSON, name_off,
                                           "duplicate member name \"%.*s\"", cut(name, 60),
                                           name);
                    p->depth++;
                    cJSON_Delete(node);
                    return rc;
                }
    }
    if (f->tail) {
        f->tail->next = node;
        node->prev = f->tail;
    } else {
        f->node->child = node;
    }
    f->node->child->prev = node; /* cJSON keeps the last child in child->prev */
    f->tail = node;
    f->count++;
    return CHORUS_OK;
}

/* Closes the container on top of the stack. */
static chorus_err_t pop(parser_t *p) {
    frame_t *f = &p->stack[p->depth - 1];
    if (cJSON_IsObject(f->node) && f->count > SMALL_OBJECT) {
        bool oom;
        const char *dup = sorted_duplicate(f->node, f->count, &oom);
        if (oom)
            return fail(p, CHORUS_ERR_NOMEM, f->start, "out of memory");
        if (dup) {
            p->depth--; /* name the object, not its last member */
            chorus_err_t rc = fail(p, CHORUS_ERR_NOT_IJSON, f->start,
                                   "duplicate member name \"%.*s\"", cut(dup, 60), dup);
            p->depth++;
            return rc;
        }
    }
    p->depth--;
    return CHORUS_OK;
}

static chorus_err_t literal(parser_t *p, const char *word, cJSON *(*make)(void), cJSON **node) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->buf + p->pos, word, n) != 0)
        return fail(p, CHORUS_ERR_PARSE, p->pos, "unexpected character");
    *node = make();
    p->pos += n;
    return CHORUS_OK;
}

/* A member name and its ':' (p->pos at the name's quote). */
static chorus_err_t member_name(parser_t *p, char **name, size_t *off) {
    skip_ws(p);
    *off = p->pos;
    if (p->pos >= p->len || p->buf[p->pos] != '"')
        return fail(p, CHORUS_ERR_PARSE, p->pos, "expected a member name");
    chorus_err_t rc = parse_string(p, name);
    if (rc)
        return rc;
    skip_ws(p);
    if (p->pos >= p->len || p->buf[p->pos] != ':') {
        cJSON_free(*name);
        *name = NULL;
        return fail(p, CHORUS_ERR_PARSE, p->pos, "expected ':' after a member name");
    }
    p->pos++;
    return CHORUS_OK;
}

/* Reads one value at p->pos into *node (containers come back empty and
 * pushed). */
static chorus_err_t value(parser_t *p, cJSON **node, bool *opened) {
    *opened = false;
    *node = NULL;
    skip_ws(p);
    if (p->pos >= p->len)
        return fail(p, CHORUS_ERR_PARSE, p->pos, p->pos == 0 ? "empty input" : "unexpected end of input");
    chorus_err_t rc = charge(p, NODE_COST);
    if (rc)
        return rc;
    char c = p->buf[p->pos];
    switch (c) {
    case '{':
    case '[':
        *node = c == '{' ? cJSON_CreateObject() : cJSON_CreateArray();
        *opened = true;
        break;
    case '"': {
        char *s;
        if ((rc = parse_string(p, &s)))
            return rc;
        if ((*node = cJSON_CreateNull()) != NULL) {
            (*node)->type = cJSON_String;
            (*node)->valuestring = s;
        } else {
            cJSON_free(s);
        }
        break;
    }
    case 't': rc = literal(p, "true", cJSON_CreateTrue, node); break;
    case 'f': rc = literal(p, "false", cJSON_CreateFalse, node); break;
    case 'n': rc = literal(p, "null", cJSON_CreateNull, node); break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            double d = 0;
            if (!(rc = parse_number(p, &d)))
                *node = cJSON_CreateNumber(d);
        } else {
            return fail(p, CHORUS_ERR_PARSE, p->pos, "unexpected character");
        }
    }
    if (rc)
        return rc;
    if (!*node)
        return fail(p, CHORUS_ERR_NOMEM, p->pos, "out of memory");
    return CHORUS_OK;
}

chorus_err_t chorus__json_parse(const char *buf, size_t len, const chorus__json_limits_t *lim,
                                cJSON **out, size_t *decodedp, chorus_error_t **errp) {
    return chorus__json_parse_at(buf, len, lim, out, decodedp, NULL, errp);
}

chorus_err_t chorus__json_parse_at(const char *buf, size_t len, const chorus__json_limits_t *lim,
                                   cJSON **out, size_t *decodedp, size_t *erroffp,
                                   chorus_error_t **errp) {
    parser_t p = {.buf = buf, .len = buf ? len : 0, .errp = errp,
                  .max_depth = lim && lim->max_depth > 0 ? lim->max_depth : DEFAULT_DEPTH,
                  .max_decoded = lim ? lim->max_decoded : 0};
    cJSON *root = NULL;
    chorus_err_t rc = CHORUS_OK;
    char *name = NULL;
    size_t name_off = 0;
    *out = NULL;
    for (;;) {
        cJSON *node;
        bool opened;
        p.reading = true;
        p.pending_name = name;
        if ((rc = value(&p, &node, &opened)))
            break;
        rc = attach(&p, &root, node, name, name_off);
        name = NULL;
        p.reading = false;
        if (rc || (opened && (rc = push(&p, node))))
            break;
        if (opened)
            p.pos++; /* the bracket */
        /* After a value or an opening bracket: what comes next. */
        bool need_value = false, fresh = opened;
        while (!need_value && p.depth > 0) {
            frame_t *f = &p.stack[p.depth - 1];
            bool is_obj = cJSON_IsObject(f->node);
            skip_ws(&p);
            char c = p.pos < p.len ? p.buf[p.pos] : '\0';
            if (c == (is_obj ? '}' : ']') && p.pos < p.len) {
                p.pos++;
                fresh = false;
                if ((rc = pop(&p)))
                    break;
                continue;
            }
            if (!fresh) {
                if (c != ',' || p.pos >= p.len) {
                    rc = fail(&p, CHORUS_ERR_PARSE, p.pos,
                              p.pos >= p.len ? "unexpected end of input"
                              : is_obj       ? "expected ',' or '}'"
                                             : "expected ',' or ']'");
                    break;
                }
                p.pos++;
            }
            if (is_obj) {
                p.reading = true;
                p.pending_name = NULL;
                if ((rc = member_name(&p, &name, &name_off)))
                    break;
            }
            need_value = true;
        }
        if (rc || !need_value)
            break;
    }
    if (!rc) {
        skip_ws(&p);
        if (p.pos < p.len)
            rc = fail(&p, CHORUS_ERR_PARSE, p.pos, "trailing bytes after the JSON value");
    }
    cJSON_free(name);
    free(p.stack);
    if (rc) {
        cJSON_Delete(root);
        if (erroffp)
            *erroffp = p.err_off;
        return rc;
    }
    *out = root;
    if (decodedp)
        *decodedp = p.decoded;
    return CHORUS_OK;
}

/* ---- the printer --------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
    int flags;
    chorus_error_t **errp;
    chorus_err_t rc;
} sb_t;

static void sb_reserve(sb_t *b, size_t more) {
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + more + 1)
        ncap *= 2;
    char *n = realloc(b->buf, ncap);
    if (!n) {
        b->oom = true;
        return;
    }
    b->buf = n;
    b->cap = ncap;
}

static void sb_put(sb_t *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void sb_char(sb_t *b, char c) { sb_put(b, &c, 1); }

static bool bad(sb_t *b, chorus_err_t code, const char *fmt, const char *arg) {
    if (!b->rc)
        b->rc = chorus__error_set(b->errp, code, fmt, arg);
    return false;
}

bool chorus__json_number(double d, char *out, size_t size) {
    if (!isfinite(d) || size < 32)
        return false;
    if (d == 0) {
        snprintf(out, size, "%s", signbit(d) ? "-0" : "0");
        return true;
    }
    if (d == trunc(d) && fabs(d) <= MAX_SAFE_INT) {
        snprintf(out, size, "%lld", (long long)d);
        return true;
    }
    locale_t c = the_c_locale();
    locale_t old = c ? uselocale(c) : (locale_t)0;
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, d);
        if ((c ? strtod_l(out, NULL, c) : strtod(out, NULL)) == d)
            break;
    }
    if (c)
        uselocale(old);
    if (!strpbrk(out, ".eE")) {
        /* An integer literal beyond 2^53 - 1: the parser would refuse it,
         * so the same digits go with an exponent ("9.007199254740993e+15"). */
        char digits[32];
        const char *src = out[0] == '-' ? out + 1 : out;
        size_t n = strlen(src);
        memcpy(digits, src, n + 1);
        size_t keep = n;
        while (keep > 1 && digits[keep - 1] == '0')
            keep--;
        snprintf(out, size, "%s%c%s%.*se+%zu", d < 0 ? "-" : "", digits[0], keep > 1 ? "." : "",
                 (int)(keep - 1), digits + 1, n - 1);
    }
    return true;
}

static bool print_string(sb_t *b, const char *s) {
    size_t n = strlen(s), bad_at;
    if (!chorus__json_text_ok(s, n, &bad_at))
        return bad(b, CHORUS_ERR_BAD_UTF8, "a string is not valid UTF-8 text (%s)",
                   "invalid byte, surrogate or noncharacter");
    sb_reserve(b, n + 2);
    sb_char(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_put(b, s + run, i - run);
        run = i + 1;
        char esc[8];
        switch (c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sb_put(b, esc, 6);
        }
    }
    sb_put(b, s + run, n - run);
    sb_char(b, '"');
    return true;
}

static void indent(sb_t *b, int depth) {
    if (!(b->flags & CHORUS__JSON_PRETTY))
        return;
    sb_char(b, '\n');
    for (int i = 0; i < depth; i++)
        sb_put(b, "  ", 2);
}

static bool has_duplicate_name(sb_t *b, const cJSON *obj) {
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (!c->string)
            return !bad(b, CHORUS_ERR_INVALID_ARG, "an object member has no name%s", "");
        n++;
    }
    const char *dup = NULL;
    if (n <= SMALL_OBJECT) {
        for (const cJSON *c = obj->child; c && !dup; c = c->next)
            for (const cJSON *d = c->next; d && !dup; d = d->next)
                if (strcmp(c->string, d->string) == 0)
                    dup = c->string;
    } else {
        bool oom;
        dup = sorted_duplicate(obj, n, &oom);
        if (oom)
            return !bad(b, CHORUS_ERR_NOMEM, "out of memory%s", "");
    }
    if (dup && !b->rc)
        b->rc = chorus__error_set(b->errp, CHORUS_ERR_NOT_IJSON, "duplicate member name \"%.*s\"",
                                  cut(dup, 60), dup);
    return dup != NULL;
}

static bool print_value(sb_t *b, const cJSON *v, int depth) {
    char num[48];
    if (depth > CHORUS__JSON_MAX_DEPTH)
        return bad(b, CHORUS_ERR_TOO_DEEP, "nesting deeper than %s levels", "1000");
    switch (v->type & 0xFF) {
    case cJSON_False: sb_put(b, "false", 5); return true;
    case cJSON_True: sb_put(b, "true", 4); return true;
    case cJSON_NULL: sb_put(b, "null", 4); return true;
    case cJSON_Number:
        if (!chorus__json_number(v->valuedouble, num, sizeof(num)))
            return bad(b, CHORUS_ERR_NOT_IJSON, "a number is not finite (%s)", "NaN or infinity");
        sb_put(b, num, strlen(num));
        return true;
    case cJSON_String:
        return v->valuestring ? print_string(b, v->valuestring)
                              : bad(b, CHORUS_ERR_INVALID_ARG, "a string node has no text%s", "");
    case cJSON_Array:
    case cJSON_Object: {
        bool obj = (v->type & 0xFF) == cJSON_Object;
        if (obj && has_duplicate_name(b, v))
            return false;
        sb_char(b, obj ? '{' : '[');
        for (const cJSON *c = v->child; c; c = c->next) {
            indent(b, depth + 1);
            if (obj) {
                if (!print_string(b, c->string))
                    return false;
                sb_put(b, b->flags & CHORUS__JSON_PRETTY ? ": " : ":",
                       b->flags & CHORUS__JSON_PRETTY ? 2 : 1);
            }
            if (!print_value(b, c, depth + 1))
                return false;
            if (c->next)
                sb_char(b, ',');
        }
        if (v->child)
            indent(b, depth);
        sb_char(b, obj ? '}' : ']');
        return true;
    }
    case cJSON_Raw:
        return bad(b, CHORUS_ERR_INVALID_ARG, "raw JSON nodes (cJSON_Raw) are not allowed%s", "");
    default:
        return bad(b, CHORUS_ERR_INVALID_ARG, "an invalid JSON node%s", "");
    }
}

char *chorus__json_print(const cJSON *v, int flags, size_t *lenp, chorus_error_t **errp) {
    sb_t b = {.flags = flags, .errp = errp};
    if (!v) {
        chorus__error_set(errp, CHORUS_ERR_INVALID_ARG, "no JSON value");
        return NULL;
    }
    bool ok = print_value(&b, v, 0);
    sb_reserve(&b, 1);
    if (ok && b.oom)
        chorus__error_set(errp, CHORUS_ERR_NOMEM, "out of memory");
    if (!ok || b.oom) {
        free(b.buf);
        return NULL;
    }
    b.buf[b.len] = '\0';
    if (lenp)
        *lenp = b.len;
    return b.buf;
}

size_t chorus__json_decoded_size(const cJSON *v) {
    size_t n = 0;
    for (; v; v = v->next) {
        n += NODE_COST;
        if (v->string)
            n += STRING_COST(strlen(v->string));
        if (cJSON_IsString(v) && v->valuestring)
            n += STRING_COST(strlen(v->valuestring));
        if (v->child)
            n += chorus__json_decoded_size(v->child);
    }
    return n;
}

/* ---- the public face (chorus_json.h) ------------------------------------- */

char *chorus_json_print(const cJSON *v, chorus_error_t **errp) {
    return chorus__json_print(v, 0, NULL, errp);
}

chorus_err_t chorus_json_parse(const char *buf, size_t len, cJSON **out, chorus_error_t **errp) {
    if (!out)
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG, "chorus_json_parse: NULL out");
    return chorus__json_parse(buf, len, NULL, out, NULL, errp);
}
