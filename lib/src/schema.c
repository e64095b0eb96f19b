/*
 * schema.c - JSON Schema, the subset of schema_int.h: compiled once when a
 * saga declaration is loaded, then checked against the data of each event.
 *
 * Compiling checks every keyword and turns the schema into an array of
 * nodes, one per schema or subschema, that refer to each other by index:
 *
 *   nodes[0]               the schema itself
 *   nodes[1 .. ndefs]      the members of its $defs, in order; reserved
 *                          before anything is compiled, so that a $ref
 *                          resolves to an index at once, whether the
 *                          definition it names comes before or after it
 *   nodes[ndefs + 1 ..]    properties, additionalProperties, items, as met
 *
 * A node has at most one $ref, and every $ref names a $defs member, so
 * the $refs form a functional graph over the nodes: one walk over it finds
 * any loop (a -> b -> a, which would validate forever without looking at
 * anything), and compiling refuses it.  Validation follows a node's $ref
 * chain with a loop and recurses only into members and elements, at most
 * CHORUS__SCHEMA_MAX_INSTANCE_DEPTH deep, so a recursive schema (a tree)
 * works and nothing can run away.
 *
 *   validate_at(node, x)  --for node, node.ref, node.ref.ref ...-->  check_node
 *   check_node            type, const, enum, then by x's type:
 *                         numbers: bounds; strings: lengths, format;
 *                         arrays: counts, then items[i] --> validate_at
 *                         objects: required, then members --> validate_at
 *
 * The compiled schema owns a copy of the schema document (checked first
 * not to nest deeper than CHORUS__SCHEMA_MAX_DEPTH, so copying it and
 * comparing with its const values is bounded recursion); nodes borrow
 * names, const and enum values, and required lists from that copy.
 *
 * Messages say where and what: a path (".name" for identifier-like names,
 * ["..."] JSON-escaped and cut for others, [N] for elements) and, for a
 * failing keyword, everything its node asks of that type ("must be an
 * integer >= 1 and <= 1000"), so one message is enough to fix the data.
 * Paths are cut whole parts at a time and messages between characters:
 * they end up in logs and dead-letter headers, and must stay UTF-8 text.
 */
#include "schema_int.h"

#include "json_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_SIZE 320
#define NAME_SHOWN 96   /* bytes a quoted name may take */
#define VALUE_SHOWN 120 /* bytes of a const or enum shown in a message */
#define MAX_SAFE_INT 9007199254740991.0

/* The type bits, in the order of TYPE_NAMES. */
enum { T_NULL = 1, T_BOOLEAN = 2, T_OBJECT = 4, T_ARRAY = 8, T_NUMBER = 16, T_INTEGER = 32,
       T_STRING = 64 };
static const char *const TYPE_NAMES[] = {"null",   "boolean", "object", "array",
                                         "number", "integer", "string"};
#define NTYPES 7

enum { F_NONE, F_UUID, F_DATE_TIME };

/* The bounds, in the order of their keywords (K_MIN_ITEMS ...). */
enum { B_MIN_ITEMS, B_MAX_ITEMS, B_MIN_LENGTH, B_MAX_LENGTH, B_MINIMUM, B_MAXIMUM, B_EXCL_MIN,
       B_EXCL_MAX, NBOUNDS };
#define HAS(n, b) (((n)->has >> (b)) & 1u)

typedef struct {
    const char *name;
    int node;
} prop_t;

typedef struct {
    bool never;     /* the schema false */
    unsigned types; /* T_* bits; 0: any type */
    unsigned has;   /* 1 << B_*: which bounds it has */
    double bound[NBOUNDS];
    int format;
    const cJSON *const_value, *enum_values;
    char *const_shown, *enum_shown; /* as JSON, cut, for messages */
    prop_t *props;                  /* sorted by name */
    size_t nprops;
    const cJSON *required;          /* an array of strings */
    int additional, items, ref;     /* node indices; -1: none */
} node_t;

struct chorus__schema_s {
    cJSON *doc; /* the copy the nodes borrow from */
    node_t *nodes;
    int nnodes, cap;
};

/* ---- paths and messages ------------------------------------------------ */

typedef struct {
    char buf[PATH_SIZE];
    size_t len;
    size_t elided; /* the length where a part did not fit, or SIZE_MAX */
} path_t;

/* Drops a character that snprintf() cut in the middle at the end of @p s. */
static void trim_partial(char *s) {
    size_t n = strlen(s), j;
    if (n == 0)
        return;
    for (j = n - 1; j > 0 && n - j < 4 && ((unsigned char)s[j] & 0xC0) == 0x80; j--)
        ;
    unsigned char lead = (unsigned char)s[j];
    size_t need = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    if (j + need > n)
        s[j] = '\0';
}

/* The length of the well-formed character (no noncharacter) at @p s, or 0. */
static size_t char_len(const char *s) {
    unsigned char c = (unsigned char)s[0];
    size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if (!s[i])
            return 0;
    return n && chorus__json_text_ok(s, n, NULL) ? n : 0;
}

/* @p s as a JSON string literal into @p out (at least 16 bytes): escaped,
 * bytes that are not text as \ufffd, cut after whole characters with
 * "..." when it does not fit. */
static void quote(char *out, size_t size, const char *s) {
    size_t o = 0;
    out[o++] = '"';
    while (*s) {
        char piece[8];
        size_t n = char_len(s), pn;
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            pn = (size_t)snprintf(piece, sizeof(piece), "\\%c", c);
        else if (n == 1 && c < 0x20)
            pn = (size_t)snprintf(piece, sizeof(piece), "\\u%04x", c);
        else if (n == 0)
            pn = (size_t)snprintf(piece, sizeof(piece), "\\ufffd");
        else
            memcpy(piece, s, pn = n);
        if (o + pn + 5 > size) { /* room for ...", NUL */
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(out + o, piece, pn);
        o += pn;
        s += n ? n : 1;
    }
    out[o++] = '"';
    out[o] = '\0';
}

static bool identifier(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$' ||
              (n > 0 && c >= '0' && c <= '9')))
            return false;
    }
    return n > 0 && n <= 64;
}

static void path_init(path_t *p, const char *root) {
    snprintf(p->buf, sizeof(p->buf) / 2, "%s", root);
    trim_partial(p->buf);
    p->len = strlen(p->buf);
    p->elided = SIZE_MAX;
}

/* Appends a part; returns the length to give path_pop() after it. */
static size_t path_push(path_t *p, const char *part) {
    size_t saved = p->len, n = strlen(part);
    if (p->elided != SIZE_MAX)
        return saved;
    if (saved + n + 4 > sizeof(p->buf)) { /* keep room for "..." */
        memcpy(p->buf + saved, "...", 4);
        p->len += 3;
        p->elided = saved;
        return saved;
    }
    memcpy(p->buf + saved, part, n + 1);
    p->len += n;
    return saved;
}

static size_t path_name(path_t *p, const char *name) {
    char part[NAME_SHOWN + 4];
    if (identifier(name)) {
        snprintf(part, sizeof(part), "%s%s", p->len ? "." : "", name);
    } else {
        part[0] = '[';
        quote(part + 1, sizeof(part) - 2, name);
        strcat(part, "]");
    }
    return path_push(p, part);
}

static size_t path_index(path_t *p, size_t i) {
    char part[32];
    snprintf(part, sizeof(part), "[%zu]", i);
    return path_push(p, part);
}

static void path_pop(path_t *p, size_t saved) {
    if (saved <= p->elided)
        p->elided = SIZE_MAX;
    p->len = saved;
    p->buf[saved] = '\0';
}

/* "<path>: <problem>", or the problem alone at an empty path, into err. */
static void report(char *err, size_t size, const path_t *p, const char *fmt, va_list ap) {
    char problem[512];
    if (!err || size == 0)
        return;
    vsnprintf(problem, sizeof(problem), fmt, ap);
    trim_partial(problem);
    snprintf(err, size, "%s%s%s", p->buf, p->len ? ": " : "", problem);
    trim_partial(err);
}

static const cJSON *find_member(const cJSON *obj, const char *name) {
    for (const cJSON *m = obj->child; m; m = m->next)
        if (m->string && strcmp(m->string, name) == 0)
            return m;
    return NULL;
}

/* ---- the compiler ------------------------------------------------------- */

typedef enum {
    K_TYPE, K_PROPERTIES, K_REQUIRED, K_ADDITIONAL_PROPERTIES, K_ITEMS,
    K_MIN_ITEMS, K_MAX_ITEMS, K_MIN_LENGTH, K_MAX_LENGTH,
    K_MINIMUM, K_MAXIMUM, K_EXCLUSIVE_MINIMUM, K_EXCLUSIVE_MAXIMUM,
    K_ENUM, K_CONST, K_FORMAT, K_DEFS, K_REF,
    K_SCHEMA, K_ID, K_COMMENT, K_TITLE, K_DESCRIPTION, K_EXAMPLES, K_DEFAULT,
    K_COUNT
} keyword_t;

_Static_assert(K_EXCLUSIVE_MAXIMUM - K_MIN_ITEMS == B_EXCL_MAX, "bounds in keyword order");

static const char *const KEYWORDS[K_COUNT] = {
    "type", "properties", "required", "additionalProperties", "items",
    "minItems", "maxItems", "minLength", "maxLength",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "enum", "const", "format", "$defs", "$ref",
    "$schema", "$id", "$comment", "title", "description", "examples", "default"};

#define DRAFT_2020_12 "https://json-schema.org/draft/2020-12/schema"
static const char REF_PREFIX[] = "#/$defs/";

typedef struct {
    chorus__schema_t *s;
    const cJSON *defs; /* the top-level $defs (an object), or NULL */
    int defs_base;     /* the node of its first member */
    path_t path;
    char *err;
    size_t errsize;
} compiler_t;

#define N(c, i) ((c)->s->nodes[i])

static bool refuse(compiler_t *c, const char *fmt, ...) CHORUS_PRINTF(2, 3);

static bool refuse(compiler_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report(c->err, c->errsize, &c->path, fmt, ap);
    va_end(ap);
    return false;
}

static int new_node(compiler_t *c) {
    chorus__schema_t *s = c->s;
    if (s->nnodes == s->cap) {
        int ncap = s->cap ? s->cap * 2 : 16;
        node_t *n = realloc(s->nodes, (size_t)ncap * sizeof(*n));
        if (!n) {
            refuse(c, "out of memory");
            return -1;
        }
        s->nodes = n;
        s->cap = ncap;
    }
    s->nodes[s->nnodes] = (node_t){.additional = -1, .items = -1, .ref = -1};
    return s->nnodes++;
}

static bool depth_ok(const cJSON *v, int left) {
    if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
        return true;
    if (left == 0)
        return false;
    for (const cJSON *c = v->child; c; c = c->next)
        if (!depth_ok(c, left - 1))
            return false;
    return true;
}

static bool compile_schema(compiler_t *c, const cJSON *j, int idx, int depth);

/* A subschema in a new node: its index, or -1 (refused). */
static int compile_sub(compiler_t *c, const cJSON *j, int depth) {
    int idx = new_node(c);
    return idx >= 0 && compile_schema(c, j, idx, depth + 1) ? idx : -1;
}

static bool type_bit(const cJSON *j, unsigned *bit) {
    for (int i = 0; cJSON_IsString(j) && j->valuestring && i < NTYPES; i++)
        if (strcmp(j->valuestring, TYPE_NAMES[i]) == 0) {
            *bit = 1u << i;
            return true;
        }
    return false;
}

#define TYPE_LIST "\"null\", \"boolean\", \"object\", \"array\", \"number\", \"integer\" or \"string\""

static bool compile_type(compiler_t *c, int idx, const cJSON *j) {
    unsigned bit, types = 0;
    if (cJSON_IsString(j)) {
        if (!type_bit(j, &bit))
            return refuse(c, "must be " TYPE_LIST ", or an array of them");
        N(c, idx).types = bit;
        return true;
    }
    if (!cJSON_IsArray(j) || !j->child)
        return refuse(c, "must be a type name or a non-empty array of them");
    size_t i = 0;
    for (const cJSON *e = j->child; e; e = e->next, i++) {
        size_t saved = path_index(&c->path, i);
        if (!type_bit(e, &bit))
            return refuse(c, "must be " TYPE_LIST);
        if (types & bit)
            return refuse(c, "\"%s\" is listed twice", e->valuestring);
        types |= bit;
        path_pop(&c->path, saved);
    }
    N(c, idx).types = types;
    return true;
}

static int cmp_props(const void *a, const void *b) {
    return strcmp(((const prop_t *)a)->name, ((const prop_t *)b)->name);
}

static bool compile_properties(compiler_t *c, int idx, const cJSON *j, int depth) {
    if (!cJSON_IsObject(j))
        return refuse(c, "must be an object of schemas");
    size_t n = 0, k = 0;
    for (const cJSON *m = j->child; m; m = m->next)
        n++;
    prop_t *props = n ? calloc(n, sizeof(*props)) : NULL;
    if (n && !props)
        return refuse(c, "out of memory");
    N(c, idx).props = props; /* freed with the node whatever happens */
    for (const cJSON *m = j->child; m; m = m->next, k++) {
        if (!m->string)
            return refuse(c, "a member has no name");
        size_t saved = path_name(&c->path, m->string);
        int sub = compile_sub(c, m, depth);
        if (sub < 0)
            return false;
        path_pop(&c->path, saved);
        props[k] = (prop_t){.name = m->string, .node = sub};
        N(c, idx).nprops = k + 1;
    }
    if (n > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(props, n, sizeof(*props), cmp_props);
    for (k = 1; k < n; k++)
        if (strcmp(props[k - 1].name, props[k].name) == 0) {
            char q[NAME_SHOWN];
            quote(q, sizeof(q), props[k].name);
            return refuse(c, "member %s appears twice", q);
        }
    return true;
}

static bool compile_required(compiler_t *c, int idx, const cJSON *j) {
    if (!cJSON_IsArray(j))
        return refuse(c, "must be an array of member names");
    size_t i = 0;
    for (const cJSON *e = j->child; e; e = e->next, i++) {
        size_t saved = path_index(&c->path, i);
        if (!cJSON_IsString(e) || !e->valuestring)
            return refuse(c, "must be a string");
        for (const cJSON *f = j->child; f != e; f = f->next)
            if (strcmp(f->valuestring, e->valuestring) == 0)
                return refuse(c, "is listed twice");
        path_pop(&c->path, saved);
    }
    N(c, idx).required = j;
    return true;
}

/* minItems ... exclusiveMaximum: counts are non-negative integers. */
static bool compile_bound(compiler_t *c, int idx, keyword_t k, const cJSON *j) {
    int b = (int)k - K_MIN_ITEMS;
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (b <= B_MAX_LENGTH && !(d >= 0 && d <= MAX_SAFE_INT && d == floor(d)))
        return refuse(c, "must be a non-negative integer");
    if (!isfinite(d))
        return refuse(c, "must be a number%s",
                      cJSON_IsBool(j) && b >= B_EXCL_MIN
                          ? " (in 2020-12 the bound itself; the boolean form is draft 4)"
                          : "");
    N(c, idx).bound[b] = d;
    N(c, idx).has |= 1u << b;
    return true;
}

/* The const or the enum as JSON for messages, cut between characters. */
static bool show(compiler_t *c, const cJSON *j, char **out) {
    size_t len;
    char *text = chorus__json_print(j, 0, &len, NULL);
    if (!text)
        return refuse(c, "must be I-JSON (text strings, finite numbers, unique member names)");
    if (len > VALUE_SHOWN)
        strcpy(text + chorus__text_cut(text, VALUE_SHOWN - 3), "...");
    *out = text;
    return true;
}

static bool compile_format(compiler_t *c, int idx, const cJSON *j) {
    const char *f = cJSON_IsString(j) ? j->valuestring : NULL;
    char q[NAME_SHOWN];
    if (!f)
        return refuse(c, "must be \"uuid\" or \"date-time\"");
    if (strcmp(f, "uuid") == 0 || strcmp(f, "date-time") == 0) {
        N(c, idx).format = f[0] == 'u' ? F_UUID : F_DATE_TIME;
        return true;
    }
    quote(q, sizeof(q), f);
    return refuse(c, "%s is not supported (only \"uuid\" and \"date-time\")", q);
}

/* "#/$defs/NAME" -> the node of the top-level $defs member NAME. */
static bool compile_ref(compiler_t *c, int idx, const cJSON *j) {
    const char *ref = cJSON_IsString(j) ? j->valuestring : NULL;
    char q[NAME_SHOWN];
    if (!ref || strncmp(ref, REF_PREFIX, strlen(REF_PREFIX)) != 0)
        return refuse(c, "must be \"#/$defs/NAME\" (only references to the top-level $defs)");
    quote(q, sizeof(q), ref);
    const char *p = ref + strlen(REF_PREFIX);
    char *name = malloc(strlen(p) + 1);
    size_t n = 0;
    if (!name)
        return refuse(c, "out of memory");
    for (; *p; p++) {
        if (*p == '/' || *p == '%' || (*p == '~' && p[1] != '0' && p[1] != '1')) {
            free(name);
            return refuse(c, "%s: %s", q,
                          *p == '/'   ? "must name a member of $defs, not a place inside one"
                          : *p == '%' ? "percent-encoding is not supported"
                                      : "'~' must be escaped as \"~0\"");
        }
        name[n++] = *p == '~' ? (*++p == '0' ? '~' : '/') : *p;
    }
    name[n] = '\0';
    int k = 0;
    const cJSON *m = c->defs ? c->defs->child : NULL;
    for (; m && (!m->string || strcmp(m->string, name) != 0); m = m->next)
        k++;
    free(name);
    if (!m)
        return refuse(c, "%s names no member of the top-level $defs", q);
    N(c, idx).ref = c->defs_base + k;
    return true;
}

static bool compile_defs(compiler_t *c, const cJSON *j, int depth) {
    if (depth > 0)
        return refuse(c, "only at the top of the schema");
    if (!cJSON_IsObject(j))
        return refuse(c, "must be an object of schemas");
    int k = 0;
    for (const cJSON *m = j->child; m; m = m->next, k++) {
        if (!m->string)
            return refuse(c, "a member has no name");
        size_t saved = path_name(&c->path, m->string);
        if (!compile_schema(c, m, c->defs_base + k, depth + 1))
            return false;
        path_pop(&c->path, saved);
    }
    return true;
}

static bool compile_keyword(compiler_t *c, int idx, keyword_t k, const cJSON *j, int depth) {
    int sub;
    switch (k) {
    case K_TYPE: return compile_type(c, idx, j);
    case K_PROPERTIES: return compile_properties(c, idx, j, depth);
    case K_REQUIRED: return compile_required(c, idx, j);
    case K_ADDITIONAL_PROPERTIES:
    case K_ITEMS:
        if (k == K_ITEMS && cJSON_IsArray(j))
            return refuse(c, "must be one schema (the array form is 2020-12's prefixItems, "
                             "which is not supported)");
        if ((sub = compile_sub(c, j, depth)) < 0)
            return false;
        *(k == K_ITEMS ? &N(c, idx).items : &N(c, idx).additional) = sub;
        return true;
    case K_ENUM:
        if (!cJSON_IsArray(j) || !j->child)
            return refuse(c, "must be a non-empty array");
        N(c, idx).enum_values = j;
        return show(c, j, &N(c, idx).enum_shown);
    case K_CONST:
        N(c, idx).const_value = j;
        return show(c, j, &N(c, idx).const_shown);
    case K_FORMAT: return compile_format(c, idx, j);
    case K_DEFS: return compile_defs(c, j, depth);
    case K_REF: return compile_ref(c, idx, j);
    case K_SCHEMA:
        if (depth > 0)
            return refuse(c, "only at the top of the schema");
        if (!cJSON_IsString(j) || !j->valuestring ||
            (strcmp(j->valuestring, DRAFT_2020_12) != 0 &&
             strcmp(j->valuestring, DRAFT_2020_12 "#") != 0))
            return refuse(c, "must be \"%s\" (the draft this validator implements)", DRAFT_2020_12);
        return true;
    case K_ID:
        if (depth > 0)
            return refuse(c, "only at the top of the schema (a nested $id starts another document)");
        return cJSON_IsString(j) || refuse(c, "must be a string");
    case K_COMMENT:
    case K_TITLE:
    case K_DESCRIPTION: return cJSON_IsString(j) || refuse(c, "must be a string");
    case K_EXAMPLES: return cJSON_IsArray(j) || refuse(c, "must be an array");
    case K_DEFAULT: return true;
    default: return compile_bound(c, idx, k, j);
    }
}

static bool compile_schema(compiler_t *c, const cJSON *j, int idx, int depth) {
    if (cJSON_IsBool(j)) {
        N(c, idx).never = cJSON_IsFalse(j);
        return true;
    }
    if (!cJSON_IsObject(j))
        return refuse(c, "must be a schema (an object, true or false)");
    unsigned long seen = 0;
    for (const cJSON *m = j->child; m; m = m->next) {
        int k = 0;
        while (k < K_COUNT && (!m->string || strcmp(m->string, KEYWORDS[k]) != 0))
            k++;
        size_t saved = path_name(&c->path, m->string ? m->string : "");
        if (k == K_COUNT)
            return refuse(c, "unknown keyword (not in chorus' subset of JSON Schema 2020-12)");
        if (seen & (1ul << k))
            return refuse(c, "keyword appears twice");
        seen |= 1ul << k;
        if (!compile_keyword(c, idx, (keyword_t)k, m, depth))
            return false;
        path_pop(&c->path, saved);
    }
    return true;
}

/* The name of the $defs member compiled into node @p idx. */
static const char *def_name(const compiler_t *c, int idx) {
    const cJSON *m = c->defs->child;
    for (int k = c->defs_base; k < idx; k++)
        m = m->next;
    return m->string;
}

static bool refuse_cycle(compiler_t *c, int start) {
    char chain[400], q[40];
    size_t o = 0;
    int hops = 0, i = start;
    do { /* at most 6 names of at most 40 bytes: the chain fits */
        quote(q, sizeof(q), def_name(c, i));
        o += (size_t)snprintf(chain + o, sizeof(chain) - o, "%s%s", hops ? " -> " : "", q);
        i = N(c, i).ref;
    } while (i != start && ++hops < 6);
    quote(q, sizeof(q), def_name(c, start));
    snprintf(chain + o, sizeof(chain) - o, " -> %s%s", i == start ? "" : "... -> ", q);
    path_init(&c->path, "$defs");
    path_name(&c->path, def_name(c, start));
    path_name(&c->path, "$ref");
    return refuse(c, "$ref cycle %s never reaches a schema to check", chain);
}

/* Refuses a loop of $refs: one walk over the graph (each node has at most
 * one outgoing $ref). */
static bool no_ref_cycle(compiler_t *c) {
    int n = c->s->nnodes;
    unsigned char *state = calloc((size_t)n, 1); /* 0 new, 1 on this walk, 2 done */
    bool ok = state != NULL || refuse(c, "out of memory");
    for (int i = 0; ok && i < n; i++) {
        int j = i;
        while (j >= 0 && state[j] == 0) {
            state[j] = 1;
            j = N(c, j).ref;
        }
        if (j >= 0 && state[j] == 1)
            ok = refuse_cycle(c, j);
        for (j = i; j >= 0 && state[j] == 1; j = N(c, j).ref)
            state[j] = 2;
    }
    free(state);
    return ok;
}

chorus__schema_t *chorus__schema_compile(const cJSON *schema, char *err, size_t errsize) {
    compiler_t c = {.err = err, .errsize = errsize};
    path_init(&c.path, "");
    if (err && errsize)
        err[0] = '\0';
    if (!schema) {
        refuse(&c, "no schema");
        return NULL;
    }
    if (!depth_ok(schema, CHORUS__SCHEMA_MAX_DEPTH)) {
        refuse(&c, "the schema nests deeper than %d levels", CHORUS__SCHEMA_MAX_DEPTH);
        return NULL;
    }
    chorus__schema_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->doc = cJSON_Duplicate(schema, true))) {
        refuse(&c, "out of memory");
        free(s);
        return NULL;
    }
    c.s = s;
    bool ok = new_node(&c) == 0;
    const cJSON *defs = cJSON_IsObject(s->doc) ? find_member(s->doc, "$defs") : NULL;
    if (ok && cJSON_IsObject(defs)) {
        c.defs = defs;
        c.defs_base = s->nnodes;
        for (const cJSON *m = defs->child; ok && m; m = m->next)
            ok = new_node(&c) >= 0;
    }
    if (!ok || !compile_schema(&c, s->doc, 0, 0) || !no_ref_cycle(&c)) {
        chorus__schema_free(s);
        return NULL;
    }
    return s;
}

void chorus__schema_free(chorus__schema_t *s) {
    if (!s)
        return;
    for (int i = 0; i < s->nnodes; i++) {
        free(s->nodes[i].props);
        free(s->nodes[i].const_shown);
        free(s->nodes[i].enum_shown);
    }
    free(s->nodes);
    cJSON_Delete(s->doc);
    free(s);
}

/* ---- the validator ------------------------------------------------------ */

typedef struct {
    const chorus__schema_t *s;
    path_t path;
    char *err;
    size_t errsize;
} validator_t;

static bool invalid(validator_t *v, const char *fmt, ...) CHORUS_PRINTF(2, 3);

static bool invalid(validator_t *v, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report(v->err, v->errsize, &v->path, fmt, ap);
    va_end(ap);
    return false;
}

/* The T_* bits of @p x (both number bits for an integral number), or 0
 * when it is no JSON value (raw, invalid, not finite, a NULL string). */
static unsigned kind_of(const cJSON *x) {
    switch (x->type & 0xFF) {
    case cJSON_NULL: return T_NULL;
    case cJSON_False:
    case cJSON_True: return T_BOOLEAN;
    case cJSON_Number:
        if (!isfinite(x->valuedouble))
            return 0;
        return x->valuedouble == floor(x->valuedouble) ? T_NUMBER | T_INTEGER : T_NUMBER;
    case cJSON_String: return x->valuestring ? T_STRING : 0;
    case cJSON_Array: return T_ARRAY;
    case cJSON_Object: return T_OBJECT;
    default: return 0;
    }
}

static const char *kind_name(unsigned kind) {
    switch (kind) {
    case T_NULL: return "null";
    case T_BOOLEAN: return "a boolean";
    case T_OBJECT: return "an object";
    case T_ARRAY: return "an array";
    case T_NUMBER: return "a number with a fractional part";
    case T_STRING: return "a string";
    default: return "a number";
    }
}

/* JSON equality; @p a is a const or enum value (so the recursion follows
 * at most CHORUS__SCHEMA_MAX_DEPTH levels). */
static bool json_equal(const cJSON *a, const cJSON *b, int depth) {
    int t = a->type & 0xFF;
    if (t != (b->type & 0xFF) || depth > CHORUS__SCHEMA_MAX_DEPTH)
        return false;
    switch (t) {
    case cJSON_Number: return a->valuedouble == b->valuedouble;
    case cJSON_String:
        return a->valuestring && b->valuestring && strcmp(a->valuestring, b->valuestring) == 0;
    case cJSON_Array:
        for (a = a->child, b = b->child; a && b; a = a->next, b = b->next)
            if (!json_equal(a, b, depth + 1))
                return false;
        return !a && !b;
    case cJSON_Object: {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next)
            ; /* as many members */
        if (x || y)
            return false;
        for (x = a->child; x; x = x->next)
            if (!x->string || !(y = find_member(b, x->string)) || !json_equal(x, y, depth + 1))
                return false;
        return true;
    }
    case cJSON_NULL:
    case cJSON_False:
    case cJSON_True: return true;
    default: return false;
    }
}

/* " of 1 to 64 characters", " of at most 100 items", or "": the counts
 * B_MIN_* @p b and B_MAX_* b + 1. */
static void describe_count(const node_t *n, int b, const char *unit, char *out, size_t size) {
    double min = n->bound[b], max = n->bound[b + 1];
    const char *s = HAS(n, b + 1) ? (max == 1 ? "" : "s") : (min == 1 ? "" : "s");
    if (HAS(n, b) && HAS(n, b + 1) && min == max)
        snprintf(out, size, " of exactly %.0f %s%s", min, unit, s);
    else if (HAS(n, b) && HAS(n, b + 1))
        snprintf(out, size, " of %.0f to %.0f %s%s", min, max, unit, s);
    else if (HAS(n, b) || HAS(n, b + 1))
        snprintf(out, size, " of at %s %.0f %s%s", HAS(n, b) ? "least" : "most",
                 HAS(n, b) ? min : max, unit, s);
    else
        out[0] = '\0';
}

/* What a value of type @p bit must be at @p n: "an integer >= 1 and <= 9",
 * "a string of 1 to 64 characters", "a UUID", "an array of at least 1 item". */
static void describe(const node_t *n, unsigned bit, char *out, size_t size) {
    static const char *const OP[] = {">=", "<=", ">", "<"}; /* B_MINIMUM ... */
    char count[96];
    switch (bit) {
    case T_NUMBER:
    case T_INTEGER: {
        bool integer = (n->types & T_INTEGER) && !(n->types & T_NUMBER);
        size_t o = (size_t)snprintf(out, size, "%s", integer ? "an integer" : "a number");
        for (int b = B_MINIMUM, k = 0; b < NBOUNDS && o < size; b++) {
            char num[32];
            if (HAS(n, b) && chorus__json_number(n->bound[b], num, sizeof(num)))
                o += (size_t)snprintf(out + o, size - o, "%s%s %s", k++ ? " and " : " ",
                                      OP[b - B_MINIMUM], num);
        }
        return;
    }
    case T_STRING:
        describe_count(n, B_MIN_LENGTH, "character", count, sizeof(count));
        snprintf(out, size, "%s%s",
                 n->format == F_UUID        ? "a UUID"
                 : n->format == F_DATE_TIME ? "an RFC 3339 date-time"
                                            : "a string",
                 count);
        return;
    case T_ARRAY:
        describe_count(n, B_MIN_ITEMS, "item", count, sizeof(count));
        snprintf(out, size, "an array%s", count);
        return;
    default: snprintf(out, size, "%s", kind_name(bit)); return;
    }
}

/* Every type @p n allows: "a string or null". */
static void describe_types(const node_t *n, char *out, size_t size) {
    unsigned types = n->types & T_NUMBER ? n->types & ~(unsigned)T_INTEGER : n->types;
    int count = 0, k = 0;
    for (unsigned t = types; t; t &= t - 1)
        count++;
    size_t o = 0;
    out[0] = '\0';
    for (unsigned bit = 1; bit <= T_STRING && o < size; bit <<= 1) {
        if (!(types & bit))
            continue;
        char one[192];
        describe(n, bit, one, sizeof(one));
        o += (size_t)snprintf(out + o, size - o, "%s%s",
                              k == 0 ? "" : k == count - 1 ? " or " : ", ", one);
        k++;
    }
}

static bool check_number(validator_t *v, const node_t *n, double d) {
    const double *b = n->bound;
    if ((HAS(n, B_MINIMUM) && d < b[B_MINIMUM]) || (HAS(n, B_MAXIMUM) && d > b[B_MAXIMUM]) ||
        (HAS(n, B_EXCL_MIN) && d <= b[B_EXCL_MIN]) || (HAS(n, B_EXCL_MAX) && d >= b[B_EXCL_MAX])) {
        char want[192];
        describe(n, T_NUMBER, want, sizeof(want));
        return invalid(v, "must be %s", want);
    }
    return true;
}

static bool check_string(validator_t *v, const node_t *n, const char *s) {
    double chars = 0;
    int64_t ms;
    for (const char *p = s; *p; p++)
        chars += ((unsigned char)*p & 0xC0) != 0x80; /* code points: lead bytes */
    if ((HAS(n, B_MIN_LENGTH) && chars < n->bound[B_MIN_LENGTH]) ||
        (HAS(n, B_MAX_LENGTH) && chars > n->bound[B_MAX_LENGTH])) {
        char want[192];
        describe(n, T_STRING, want, sizeof(want));
        return invalid(v, "must be %s", want);
    }
    if (n->format == F_UUID && !chorus_uuid_valid(s))
        return invalid(v, "must be a UUID (8-4-4-4-12 hex digits)");
    if (n->format == F_DATE_TIME && !chorus__timestamp_parse(s, &ms))
        return invalid(v, "must be an RFC 3339 date-time in the years 0001..9999, "
                          "e.g. 2024-05-01T12:00:00Z");
    return true;
}

static bool validate_at(validator_t *v, int idx, const cJSON *x, int depth);

static bool check_array(validator_t *v, const node_t *n, const cJSON *x, int depth) {
    double count = 0;
    for (const cJSON *e = x->child; e; e = e->next)
        count++;
    if ((HAS(n, B_MIN_ITEMS) && count < n->bound[B_MIN_ITEMS]) ||
        (HAS(n, B_MAX_ITEMS) && count > n->bound[B_MAX_ITEMS])) {
        char want[192];
        describe(n, T_ARRAY, want, sizeof(want));
        return invalid(v, "must be %s", want);
    }
    size_t i = 0;
    for (const cJSON *e = x->child; n->items >= 0 && e; e = e->next, i++) {
        size_t saved = path_index(&v->path, i);
        bool ok = validate_at(v, n->items, e, depth + 1);
        path_pop(&v->path, saved);
        if (!ok)
            return false;
    }
    return true;
}

static int cmp_name_prop(const void *key, const void *p) {
    return strcmp(key, ((const prop_t *)p)->name);
}

static bool check_object(validator_t *v, const node_t *n, const cJSON *x, int depth) {
    for (const cJSON *r = n->required ? n->required->child : NULL; r; r = r->next)
        if (!find_member(x, r->valuestring)) {
            char q[NAME_SHOWN];
            quote(q, sizeof(q), r->valuestring);
            return invalid(v, "required member %s is missing", q);
        }
    for (const cJSON *m = x->child; m; m = m->next) {
        if (!m->string)
            return invalid(v, "a member has no name");
        const prop_t *p = n->nprops ? bsearch(m->string, n->props, n->nprops, sizeof(*p),
                                              cmp_name_prop)
                                    : NULL;
        int sub = p ? p->node : n->additional;
        if (sub < 0)
            continue;
        size_t saved = path_name(&v->path, m->string);
        bool ok = !p && v->s->nodes[sub].never
                      ? invalid(v, "unexpected member (additionalProperties is false)")
                      : validate_at(v, sub, m, depth + 1);
        path_pop(&v->path, saved);
        if (!ok)
            return false;
    }
    return true;
}

static bool check_node(validator_t *v, const node_t *n, const cJSON *x, int depth) {
    if (n->never)
        return invalid(v, "no value is valid here (the schema is false)");
    unsigned kind = kind_of(x);
    if (!kind)
        return invalid(v, "is not a JSON value (a raw, invalid or non-finite cJSON node)");
    if (n->types && !(n->types & kind)) {
        char want[448];
        describe_types(n, want, sizeof(want));
        return invalid(v, "must be %s (is %s)", want, kind_name(kind));
    }
    if (n->const_value && !json_equal(n->const_value, x, 0))
        return invalid(v, "must equal %s (const)", n->const_shown);
    if (n->enum_values) {
        const cJSON *e = n->enum_values->child;
        while (e && !json_equal(e, x, 0))
            e = e->next;
        if (!e)
            return invalid(v, "must be one of %s (enum)", n->enum_shown);
    }
    if (kind & T_NUMBER)
        return check_number(v, n, x->valuedouble);
    if (kind == T_STRING)
        return check_string(v, n, x->valuestring);
    if (kind == T_ARRAY)
        return check_array(v, n, x, depth);
    if (kind == T_OBJECT)
        return check_object(v, n, x, depth);
    return true;
}

/* @p x against node @p idx and the chain of its $refs (loop-free: compiled
 * so); recursion only one level of @p x at a time. */
static bool validate_at(validator_t *v, int idx, const cJSON *x, int depth) {
    if (depth > CHORUS__SCHEMA_MAX_INSTANCE_DEPTH)
        return invalid(v, "nests deeper than %d levels", CHORUS__SCHEMA_MAX_INSTANCE_DEPTH);
    for (; idx >= 0; idx = v->s->nodes[idx].ref)
        if (!check_node(v, &v->s->nodes[idx], x, depth))
            return false;
    return true;
}

bool chorus__schema_validate(const chorus__schema_t *s, const cJSON *instance,
                             const char *root_name, char *err, size_t errsize) {
    validator_t v = {.s = s, .err = err, .errsize = errsize};
    path_init(&v.path, root_name ? root_name : "");
    if (err && errsize)
        err[0] = '\0';
    if (!s)
        return invalid(&v, "no schema");
    if (!instance)
        return invalid(&v, "is missing");
    return validate_at(&v, 0, instance, 0);
}
