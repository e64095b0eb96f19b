/*
 * saga_decl.c - a saga's declaration: loaded, checked, and turned into what
 * each participant needs (its handlers, its bindings, its permissions) and
 * into a picture.
 *
 * A saga here is a choreography: no coordinator, each service reacts to
 * events.  The declaration (sagas/<name>.json, format in sagas/README.md)
 * names, per step, the service, what starts it (a command for the first
 * step, an event for the others), the event it emits on success, the
 * failures it may emit and its compensation (the events that make it undo,
 * the event it emits when it has).  chorus refuses the declaration rather
 * than run a saga that can get stuck:
 *
 *   - a step before the pivot without compensation, a step after it that
 *     can fail or compensate (nothing could undo the pivot);
 *   - a compensation that can run around the pivot (one that may follow
 *     anything but failures, the pivot's acceptance of a cancellation, or
 *     other compensations), a pivot with a deadline but no "cancellation";
 *   - an event consumed but produced by nobody (a handler that never runs,
 *     a step that never starts);
 *   - a failure handled by nobody (the saga would stop half done);
 *   - a terminal event produced by nobody, a deadline owner taking no part.
 *
 * From the checked declaration it derives, per service:
 *
 *   consumes(S) = triggers of S's steps + compensation "on" of S's steps
 *               + S's "refuses_after" + completion "on" (if S completes)
 *               + every produced event (if S is an observer)
 *   bindings(S) = { "P.E" : E in consumes(S), P produces E }
 *
 *   order --OrderPlaced--> payment --PaymentSucceeded--> inventory --> ...
 *     ^                      |
 *     +----PaymentFailed-----+     routing key of that edge: "payment.PaymentFailed",
 *                                  so order's queue binds exactly that key.
 *
 * Invariants: once chorus_saga_parse() returns a saga, every check above
 * holds; all strings are borrowed from the kept cJSON tree, except the
 * bindings, which the roles own.  Consumes and bindings lists are sorted and
 * unique.  No I/O happens here except reading the file in chorus_saga_load()
 * and writing DOT to the caller's FILE.
 */
#include "common_int.h"
#include "json_int.h"
#include "saga_int.h"
#include "schema_int.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * String lists (borrowed strings unless said otherwise)
 * --------------------------------------------------------------------- */
typedef struct {
    const char **v;
    size_t n, cap;
} strs_t;

static const char *const no_strings[1] = {NULL};

static bool strs_push(strs_t *l, const char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        const char **v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return false;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return true;
}

static bool strs_has(const strs_t *l, const char *s) {
    for (size_t i = 0; s && i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts and drops duplicates; @p owned lists free the dropped strings. */
static void strs_sort_unique(strs_t *l, bool owned) {
    if (l->n == 0)
        return;
    qsort(l->v, l->n, sizeof(*l->v), cmp_str);
    size_t w = 1;
    for (size_t r = 1; r < l->n; r++) {
        if (strcmp(l->v[r], l->v[w - 1]) != 0)
            l->v[w++] = l->v[r];
        else if (owned)
            free((void *)l->v[r]);
    }
    l->n = w;
}

static void strs_free(strs_t *l, bool owned) {
    for (size_t i = 0; owned && i < l->n; i++)
        free((void *)l->v[i]);
    free(l->v);
    *l = (strs_t){0};
}

/* ------------------------------------------------------------------------
 * The declaration, decoded
 * --------------------------------------------------------------------- */
typedef struct {
    const char *name, *service, *trigger, *command, *emits;
    strs_t failures;
    bool has_comp;
    strs_t comp_on;
    const char *comp_emits;
    strs_t refuses_after;
    char label[160]; /* "step 'reserve-stock' (inventory)", for messages */
} step_t;

typedef struct { /* one (service, event) production */
    const char *service, *event;
} prod_t;

typedef struct { /* what "events" says of one event type */
    const char *event;
    int schema_version; /* 0: not said */
    int newer;          /* -1: not said, 0: dead-letter, 1: retry */
    const cJSON *schema; /* the JSON Schema of its data, or NULL */
    chorus__schema_t *compiled;
} evinfo_t;

typedef struct { /* one service's derived role */
    const char *service;
    strs_t consumes;
    strs_t bindings; /* owned "P.E" strings */
} role_t;

struct chorus_saga_s {
    cJSON *root; /* owns every borrowed string below */
    const char *name, *ns;
    int64_t deadline_ms;
    const char *deadline_owner, *deadline_emits;
    /* "cancellation": who may ask, and the pivot's two answers */
    const char *cancel_by, *cancel_request, *cancel_accepted, *cancel_refused, *pivot_name;
    int pivot; /* index of the step that cannot be compensated, -1: none */
    step_t *steps;
    size_t nsteps;
    const char *completion_service, *completion_emits;
    strs_t completion_on;
    strs_t terminal, observers;
    prod_t *prods;
    size_t nprods;
    strs_t services, events; /* events: everything produced, sorted */
    role_t *roles;           /* parallel to services */
    evinfo_t *evinfo;        /* the "events" object, in its order */
    size_t nevinfo;
};

/* Where a refusal goes: the file (or the caller's name) and the buffer. */
typedef struct {
    const char *file;
    char *err;
    size_t errsz;
} ctx_t;

static bool refuse(ctx_t *c, const char *fmt, ...) CHORUS_PRINTF(2, 3);
static bool refuse(ctx_t *c, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    chorus__errstr(c->err, c->errsz, "%s: %s", c->file, msg);
    return false;
}

static bool oom(ctx_t *c) {
    return refuse(c, "out of memory");
}

/* ------------------------------------------------------------------------
 * Field decoding: each refusal says which field of what
 * --------------------------------------------------------------------- */
typedef enum { K_TEXT, K_NAME, K_EVENT, K_COMMAND } kind_t;

/* Service, saga and namespace names: what "topology.namespace" accepts,
 * so they are safe in queue names and routing keys (no '.'). */
static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

/* PascalCase: an upper-case letter first, letters and digits only, and
 * not all capitals (ORDER_PLACED and ORDERPLACED are refused). */
static bool pascal_case(const char *s) {
    if (!isupper((unsigned char)*s) || strlen(s) > 128)
        return false;
    bool lower = false;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s))
            return false;
        lower |= islower((unsigned char)*s) != 0;
    }
    return lower;
}

static bool kind_ok(ctx_t *c, const char *at, const char *key, const char *v, kind_t k) {
    const char *sep = *at ? ": " : "";
    switch (k) {
    case K_TEXT:
        if (*v)
            return true;
        return refuse(c, "%s%sfield \"%s\" must not be empty", at, sep, key);
    case K_NAME:
        if (valid_name(v))
            return true;
        return refuse(c, "%s%sfield \"%s\": '%s' must be 1-64 characters of a-z, 0-9, '-', '_'",
                      at, sep, key, v);
    case K_EVENT:
        if (pascal_case(v))
            return true;
        return refuse(c, "%s%sfield \"%s\": '%s' is not an event name (events are PascalCase "
                      "facts, such as OrderPlaced)", at, sep, key, v);
    case K_COMMAND:
        if (pascal_case(v))
            return true;
        return refuse(c, "%s%sfield \"%s\": '%s' is not a command name (commands are "
                      "PascalCase, such as PlaceOrder)", at, sep, key, v);
    }
    return false;
}

/* A string field; absent is fine unless @p required (then *out is NULL). */
static bool get_str(ctx_t *c, const cJSON *obj, const char *key, const char *at, bool required,
                    kind_t k, const char **out) {
    const char *sep = *at ? ": " : "";
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!f)
        return required ? refuse(c, "%s%sfield \"%s\" is missing", at, sep, key) : true;
    if (!cJSON_IsString(f))
        return refuse(c, "%s%sfield \"%s\" must be a string", at, sep, key);
    if (!kind_ok(c, at, key, f->valuestring, k))
        return false;
    *out = f->valuestring;
    return true;
}

/* An array of strings, at least @p min of them when present. */
static bool get_strs(ctx_t *c, const cJSON *obj, const char *key, const char *at, bool required,
                     size_t min, kind_t k, strs_t *out) {
    const char *sep = *at ? ": " : "";
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, key), *e;
    if (!f)
        return required ? refuse(c, "%s%sfield \"%s\" is missing", at, sep, key) : true;
    if (!cJSON_IsArray(f))
        return refuse(c, "%s%sfield \"%s\" must be an array of names", at, sep, key);
    cJSON_ArrayForEach(e, f) {
        if (!cJSON_IsString(e))
            return refuse(c, "%s%sfield \"%s\" must hold only strings", at, sep, key);
        if (!kind_ok(c, at, key, e->valuestring, k))
            return false;
        if (!strs_push(out, e->valuestring))
            return oom(c);
    }
    if (out->n < min)
        return refuse(c, "%s%sfield \"%s\" must name at least %zu", at, sep, key, min);
    return true;
}

/* An object field; *out is NULL when absent and not required. */
static bool get_obj(ctx_t *c, const cJSON *obj, const char *key, const char *at, bool required,
                    const cJSON **out) {
    const char *sep = *at ? ": " : "";
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = f;
    if (!f)
        return required ? refuse(c, "%s%sfield \"%s\" is missing", at, sep, key) : true;
    if (!cJSON_IsObject(f))
        return refuse(c, "%s%sfield \"%s\" must be an object", at, sep, key);
    return true;
}

/* Refuses fields not in @p known (a typo like "compensations" would
 * otherwise read as "no compensation" and fail later, less clearly). */
static bool known_fields(ctx_t *c, const cJSON *obj, const char *at, const char *const *known) {
    const cJSON *f;
    cJSON_ArrayForEach(f, obj) {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, f->string) == 0;
        if (!ok)
            return refuse(c, "%s%sunknown field \"%s\"", at, *at ? ": " : "", f->string);
    }
    return true;
}

static bool decode_comp(ctx_t *c, const cJSON *js, step_t *st) {
    static const char *const known[] = {"on", "emits", NULL};
    const cJSON *comp;
    char at[200];
    if (!get_obj(c, js, "compensation", st->label, false, &comp))
        return false;
    if (!comp)
        return true;
    st->has_comp = true;
    snprintf(at, sizeof(at), "%s: compensation", st->label);
    return known_fields(c, comp, at, known) &&
           get_strs(c, comp, "on", at, true, 1, K_EVENT, &st->comp_on) &&
           get_str(c, comp, "emits", at, true, K_EVENT, &st->comp_emits);
}

/* Name and service first: every later message names the step by them. */
static bool decode_step_id(ctx_t *c, const cJSON *js, size_t i, step_t *st) {
    snprintf(st->label, sizeof(st->label), "step #%zu", i + 1);
    if (!cJSON_IsObject(js))
        return refuse(c, "%s must be an object", st->label);
    if (!get_str(c, js, "name", st->label, true, K_TEXT, &st->name))
        return false;
    snprintf(st->label, sizeof(st->label), "step '%.*s'", chorus__text_cut(st->name, 100),
             st->name);
    if (!get_str(c, js, "service", st->label, true, K_NAME, &st->service))
        return false;
    snprintf(st->label, sizeof(st->label), "step '%.*s' (%s)", chorus__text_cut(st->name, 100),
             st->name, st->service);
    return true;
}

static bool decode_step(ctx_t *c, const cJSON *js, size_t i, step_t *st) {
    static const char *const known[] = {"name",     "service",  "description",
                                        "trigger",  "command",  "emits",
                                        "failures", "compensation", "refuses_after", NULL};
    if (!decode_step_id(c, js, i, st) || !known_fields(c, js, st->label, known) ||
        !get_str(c, js, "trigger", st->label, false, K_EVENT, &st->trigger) ||
        !get_str(c, js, "command", st->label, false, K_COMMAND, &st->command))
        return false;
    if (!st->trigger == !st->command)
        return refuse(c, "%s needs exactly one of \"trigger\" (an event) and \"command\"",
                      st->label);
    return get_str(c, js, "emits", st->label, true, K_EVENT, &st->emits) &&
           get_strs(c, js, "failures", st->label, true, 0, K_EVENT, &st->failures) &&
           decode_comp(c, js, st) &&
           get_strs(c, js, "refuses_after", st->label, false, 0, K_EVENT, &st->refuses_after);
}

static bool decode_steps(ctx_t *c, chorus_saga_t *s) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(s->root, "steps");
    if (!arr)
        return refuse(c, "field \"steps\" is missing");
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1)
        return refuse(c, "field \"steps\" must be an array of at least one step");
    s->nsteps = (size_t)cJSON_GetArraySize(arr);
    s->steps = calloc(s->nsteps, sizeof(*s->steps));
    if (!s->steps)
        return oom(c);
    size_t i = 0;
    const cJSON *js;
    cJSON_ArrayForEach(js, arr) {
        if (!decode_step(c, js, i, &s->steps[i]))
            return false;
        i++;
    }
    return true;
}

static bool decode_deadline(ctx_t *c, chorus_saga_t *s) {
    static const char *const known[] = {"ms", "owner", "emits", NULL};
    const cJSON *d;
    if (!get_obj(c, s->root, "deadline", "", false, &d))
        return false;
    if (!d)
        return true;
    if (!known_fields(c, d, "deadline", known))
        return false;
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(d, "ms");
    if (!ms)
        return refuse(c, "deadline: field \"ms\" is missing");
    if (!cJSON_IsNumber(ms) || ms->valuedouble < 1 || ms->valuedouble > 1e12 ||
        ms->valuedouble != (double)(int64_t)ms->valuedouble)
        return refuse(c, "deadline: field \"ms\" must be a whole number of milliseconds > 0");
    s->deadline_ms = (int64_t)ms->valuedouble;
    return get_str(c, d, "owner", "deadline", true, K_NAME, &s->deadline_owner) &&
           get_str(c, d, "emits", "deadline", true, K_EVENT, &s->deadline_emits);
}

static bool distinct_answers(ctx_t *c, const chorus_saga_t *s) {
    const char *names[] = {s->cancel_request, s->cancel_accepted, s->cancel_refused};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = i + 1; j < 3; j++)
            if (strcmp(names[i], names[j]) == 0)
                return refuse(c, "cancellation: '%s' is named twice; the request, \"accepted\" "
                              "and \"refused\" are three different events", names[i]);
    return true;
}

/* "cancellation": {"requested_by", "request", "pivot", "accepted",
 * "refused"}: the request goes to the pivot alone, which answers. */
static bool decode_cancellation(ctx_t *c, chorus_saga_t *s) {
    static const char *const known[] = {"requested_by", "request", "pivot", "accepted",
                                        "refused", "description", NULL};
    const cJSON *d;
    const char *desc;
    if (!get_obj(c, s->root, "cancellation", "", false, &d))
        return false;
    if (!d)
        return true;
    return known_fields(c, d, "cancellation", known) &&
           get_str(c, d, "requested_by", "cancellation", true, K_NAME, &s->cancel_by) &&
           get_str(c, d, "request", "cancellation", true, K_EVENT, &s->cancel_request) &&
           get_str(c, d, "pivot", "cancellation", true, K_TEXT, &s->pivot_name) &&
           get_str(c, d, "accepted", "cancellation", true, K_EVENT, &s->cancel_accepted) &&
           get_str(c, d, "refused", "cancellation", true, K_EVENT, &s->cancel_refused) &&
           get_str(c, d, "description", "cancellation", false, K_TEXT, &desc) &&
           distinct_answers(c, s);
}

static bool decode_completion(ctx_t *c, chorus_saga_t *s) {
    static const char *const known[] = {"service", "on", "emits", NULL};
    const cJSON *d;
    if (!get_obj(c, s->root, "completion", "", false, &d))
        return false;
    if (!d)
        return true;
    return known_fields(c, d, "completion", known) &&
           get_str(c, d, "service", "completion", true, K_NAME, &s->completion_service) &&
           get_strs(c, d, "on", "completion", true, 1, K_EVENT, &s->completion_on) &&
           get_str(c, d, "emits", "completion", true, K_EVENT, &s->completion_emits);
}

/* "events": {"<Type>": {"schema_version": N, "newer_schema": "retry"}}:
 * per event type, the newest schema version the saga's participants know
 * and what a consumer does with one newer than it knows.  Checked against
 * the produced events later (check_events). */
static bool decode_events(ctx_t *c, chorus_saga_t *s) {
    static const char *const known[] = {"schema_version", "newer_schema", "schema",
                                        "description", NULL};
    const cJSON *evs, *e;
    if (!get_obj(c, s->root, "events", "", false, &evs))
        return false;
    if (!evs)
        return true;
    s->evinfo = calloc((size_t)cJSON_GetArraySize(evs) + 1, sizeof(*s->evinfo));
    if (!s->evinfo)
        return oom(c);
    cJSON_ArrayForEach(e, evs) {
        char at[200];
        snprintf(at, sizeof(at), "events: '%.100s'", e->string);
        if (!kind_ok(c, "events", e->string, e->string, K_EVENT))
            return false;
        if (!cJSON_IsObject(e))
            return refuse(c, "%s must be an object", at);
        if (!known_fields(c, e, at, known))
            return false;
        evinfo_t *ev = &s->evinfo[s->nevinfo++];
        ev->event = e->string;
        ev->newer = -1;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "schema_version");
        if (v && (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 2147483647.0 ||
                  v->valuedouble != (double)(int)v->valuedouble))
            return refuse(c, "%s: field \"schema_version\" must be a whole number >= 1", at);
        ev->schema_version = v ? (int)v->valuedouble : 0;
        const char *newer;
        if (!get_str(c, e, "newer_schema", at, false, K_TEXT, &newer))
            return false;
        if (newer && strcmp(newer, "dead-letter") != 0 && strcmp(newer, "retry") != 0)
            return refuse(c, "%s: field \"newer_schema\" must be \"dead-letter\" or \"retry\"", at);
        if (newer)
            ev->newer = strcmp(newer, "retry") == 0;
        if (!get_obj(c, e, "schema", at, false, &ev->schema))
            return false;
        char why[400];
        if (ev->schema && !(ev->compiled = chorus__schema_compile(ev->schema, why, sizeof(why))))
            return refuse(c, "%s: schema: %s", at, why);
    }
    return true;
}

static bool decode(ctx_t *c, chorus_saga_t *s) {
    static const char *const known[] = {"saga",     "description", "namespace", "deadline",
                                        "cancellation", "steps", "completion", "terminal",
                                        "observers", "events", NULL};
    const char *desc;
    if (!cJSON_IsObject(s->root))
        return refuse(c, "the declaration must be a JSON object");
    if (!known_fields(c, s->root, "", known) ||
        !get_str(c, s->root, "saga", "", true, K_NAME, &s->name) ||
        !get_str(c, s->root, "description", "", false, K_TEXT, &desc) ||
        !get_str(c, s->root, "namespace", "", false, K_NAME, &s->ns))
        return false;
    if (!s->ns)
        s->ns = "chorus";
    return decode_deadline(c, s) && decode_cancellation(c, s) && decode_steps(c, s) &&
           decode_completion(c, s) &&
           get_strs(c, s->root, "terminal", "", true, 1, K_EVENT, &s->terminal) &&
           get_strs(c, s->root, "observers", "", false, 0, K_NAME, &s->observers) &&
           decode_events(c, s);
}

/* ------------------------------------------------------------------------
 * Producers and services
 * --------------------------------------------------------------------- */
static bool add_prod(chorus_saga_t *s, const char *service, const char *event) {
    if (!service || !event)
        return true;
    prod_t *p = realloc(s->prods, (s->nprods + 1) * sizeof(*p));
    if (!p)
        return false;
    s->prods = p;
    s->prods[s->nprods++] = (prod_t){service, event};
    return strs_has(&s->events, event) || strs_push(&s->events, event);
}

static bool build_producers(ctx_t *c, chorus_saga_t *s) {
    bool ok = true;
    for (size_t i = 0; ok && i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        ok = add_prod(s, st->service, st->emits) && add_prod(s, st->service, st->comp_emits);
        for (size_t j = 0; ok && j < st->failures.n; j++)
            ok = add_prod(s, st->service, st->failures.v[j]);
    }
    ok = ok && add_prod(s, s->completion_service, s->completion_emits) &&
         add_prod(s, s->deadline_owner, s->deadline_emits) &&
         add_prod(s, s->cancel_by, s->cancel_request);
    if (ok && s->pivot >= 0 && s->cancel_request) {
        const char *svc = s->steps[s->pivot].service;
        ok = add_prod(s, svc, s->cancel_accepted) && add_prod(s, svc, s->cancel_refused);
    }
    if (!ok)
        return oom(c);
    strs_sort_unique(&s->events, false);
    return true;
}

static bool add_service(strs_t *l, const char *name) {
    /* "events" and "unrouted" are refused by check_saga_level() */
    return !name || strs_has(l, name) || strs_push(l, name);
}

/* In order of first appearance: steps, completion, observers last. */
static bool build_services(ctx_t *c, chorus_saga_t *s) {
    bool ok = true;
    for (size_t i = 0; ok && i < s->nsteps; i++)
        ok = add_service(&s->services, s->steps[i].service);
    ok = ok && add_service(&s->services, s->completion_service);
    for (size_t i = 0; ok && i < s->observers.n; i++)
        ok = add_service(&s->services, s->observers.v[i]);
    return ok ? true : oom(c);
}

static bool produced(const chorus_saga_t *s, const char *event) {
    return strs_has(&s->events, event);
}

static bool is_failure(const chorus_saga_t *s, const char *event) {
    for (size_t i = 0; i < s->nsteps; i++)
        if (strs_has(&s->steps[i].failures, event))
            return true;
    return false;
}

/* ------------------------------------------------------------------------
 * Checks
 * --------------------------------------------------------------------- */
/* The pivot: the step named by "cancellation", else the first step that
 * has no compensation.  Resolved before anything is derived. */
static bool find_pivot(ctx_t *c, chorus_saga_t *s) {
    s->pivot = -1;
    for (size_t i = 0; i < s->nsteps && s->pivot < 0; i++) {
        if (s->pivot_name ? strcmp(s->steps[i].name, s->pivot_name) == 0
                          : !s->steps[i].has_comp)
            s->pivot = (int)i;
    }
    if (s->pivot_name && s->pivot < 0)
        return refuse(c, "cancellation: field \"pivot\": no step is named '%.*s'",
                      chorus__text_cut(s->pivot_name, 100), s->pivot_name);
    return true;
}

/*
 * The compensatable / pivot / retriable split: every step before the
 * pivot can be undone, the pivot cannot, and the steps after it cannot
 * fail (they are retried until they succeed), since nothing could undo
 * the pivot if one of them did.
 */
static bool check_pivot(ctx_t *c, const chorus_saga_t *s) {
    if (s->pivot < 0)
        return true;
    const step_t *pv = &s->steps[s->pivot];
    if (pv->has_comp)
        return refuse(c, "cancellation: the pivot %s has a compensation; the pivot is the step "
                      "that cannot be undone", pv->label);
    for (size_t i = 0; i < (size_t)s->pivot; i++)
        if (!s->steps[i].has_comp)
            return refuse(c, "%s has no compensation, but it comes before the pivot %s; only "
                          "the pivot may lack one (the steps after it may not fail)",
                          s->steps[i].label, pv->label);
    for (size_t i = (size_t)s->pivot + 1; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        if (st->has_comp || st->failures.n)
            return refuse(c, "%s comes after %s, which has no compensation (the pivot), so it "
                          "must be retriable: no failures and no compensation (nothing could "
                          "undo the pivot if it failed)", st->label, pv->label);
    }
    return true;
}

static bool check_steps(ctx_t *c, const chorus_saga_t *s) {
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->steps[j].name, st->name) == 0)
                return refuse(c, "%s: duplicate step name '%s' (also step #%zu)", st->label,
                              st->name, j + 1);
        if (i == 0 && !st->command)
            return refuse(c, "%s is the first step, so a command starts it, not the event '%s'",
                          st->label, st->trigger);
        if (i > 0 && st->command)
            return refuse(c, "%s is started by the command '%s', but only the first step is; "
                          "later steps react to an event (\"trigger\")", st->label, st->command);
    }
    return check_pivot(c, s);
}

static bool consumed_ok(ctx_t *c, const chorus_saga_t *s, const char *at, const char *what,
                        const char *event) {
    if (produced(s, event))
        return true;
    return refuse(c, "%s: event '%s' (%s) is consumed but produced by nobody", at, event, what);
}

static bool check_consumed_list(ctx_t *c, const chorus_saga_t *s, const char *at,
                                const char *what, const strs_t *l) {
    for (size_t i = 0; i < l->n; i++)
        if (!consumed_ok(c, s, at, what, l->v[i]))
            return false;
    return true;
}

static bool check_consumed(ctx_t *c, const chorus_saga_t *s) {
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        if ((st->trigger && !consumed_ok(c, s, st->label, "trigger", st->trigger)) ||
            !check_consumed_list(c, s, st->label, "compensation \"on\"", &st->comp_on) ||
            !check_consumed_list(c, s, st->label, "refuses_after", &st->refuses_after))
            return false;
    }
    char at[120];
    snprintf(at, sizeof(at), "completion (%s)", s->completion_service ? s->completion_service : "");
    return check_consumed_list(c, s, at, "completion \"on\"", &s->completion_on);
}

static bool handled(const chorus_saga_t *s, const char *event) {
    for (size_t i = 0; i < s->nsteps; i++)
        if (strs_has(&s->steps[i].comp_on, event))
            return true;
    return strs_has(&s->completion_on, event);
}

static bool check_failures(ctx_t *c, const chorus_saga_t *s) {
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        for (size_t j = 0; j < st->failures.n; j++)
            if (!handled(s, st->failures.v[j]))
                return refuse(c, "%s: failure '%s' is handled by nobody (no compensation or "
                              "completion lists it in \"on\")", st->label, st->failures.v[j]);
    }
    return true;
}

/* A name used as a command must not also be an event anywhere. */
static bool check_commands(ctx_t *c, const chorus_saga_t *s) {
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        bool clash = st->command && produced(s, st->command);
        for (size_t j = 0; st->command && !clash && j < s->nsteps; j++)
            clash = (s->steps[j].trigger && strcmp(s->steps[j].trigger, st->command) == 0) ||
                    strs_has(&s->steps[j].comp_on, st->command) ||
                    strs_has(&s->steps[j].refuses_after, st->command);
        clash = clash || (st->command && (strs_has(&s->completion_on, st->command) ||
                                          strs_has(&s->terminal, st->command)));
        if (clash)
            return refuse(c, "%s: '%s' is its command and also an event; a command asks, an "
                          "event states what happened", st->label, st->command);
    }
    return true;
}

/* Every event "events" describes is one the saga produces. */
static bool check_events(ctx_t *c, const chorus_saga_t *s) {
    for (size_t i = 0; i < s->nevinfo; i++)
        if (!produced(s, s->evinfo[i].event))
            return refuse(c, "events: '%s' is not an event of the saga (nobody produces it)",
                          s->evinfo[i].event);
    return true;
}

static bool check_saga_level(ctx_t *c, const chorus_saga_t *s) {
    for (size_t i = 0; i < s->services.n; i++)
        if (strcmp(s->services.v[i], "events") == 0 || strcmp(s->services.v[i], "unrouted") == 0)
            return refuse(c, "service '%s': the name is reserved (the shared exchange and queue "
                          "<namespace>.events and <namespace>.unrouted would collide)",
                          s->services.v[i]);
    for (size_t i = 0; i < s->terminal.n; i++)
        if (!produced(s, s->terminal.v[i]))
            return refuse(c, "terminal event '%s' is produced by nobody", s->terminal.v[i]);
    if (s->deadline_owner && !strs_has(&s->services, s->deadline_owner))
        return refuse(c, "deadline: owner '%s' is not a service of saga '%s'", s->deadline_owner,
                      s->name);
    /* the timer is armed with the first event, in the transaction emitting it */
    if (s->deadline_owner && strcmp(s->deadline_owner, s->steps[0].service) != 0)
        return refuse(c, "deadline: owner '%s' must be '%s', the service of the first step: it "
                      "arms the deadline's timer with the saga's first event", s->deadline_owner,
                      s->steps[0].service);
    return true;
}

/* ------------------------------------------------------------------------
 * Cancellation and the pivot
 *
 * A compensation before the pivot may start only from something that
 * implies the pivot did not run and never will: a failure of a step up to
 * the pivot (a step that failed emits no success, so nothing after it
 * starts), the pivot's acceptance of a cancellation, or the compensation
 * of another step before the pivot (by induction).  Anything else -- the
 * deadline, a success, the completion, the request itself -- can arrive
 * while the pivot runs, and would compensate around it.
 * --------------------------------------------------------------------- */

/* What produces @p event without implying that the pivot did not run;
 * NULL when every production of it is safe. */
static const char *unsafe_origin(const chorus_saga_t *s, const char *event, char *buf,
                                 size_t n) {
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        if (strcmp(st->emits, event) == 0) {
            snprintf(buf, n, "the success of %s", st->label);
            return buf;
        }
        if (i > (size_t)s->pivot && strs_has(&st->failures, event)) {
            snprintf(buf, n, "a failure of %s, after the pivot", st->label);
            return buf;
        }
        if (i >= (size_t)s->pivot && st->comp_emits && strcmp(st->comp_emits, event) == 0) {
            snprintf(buf, n, "the compensation of %s", st->label);
            return buf;
        }
    }
    if (s->cancel_request && strcmp(s->cancel_request, event) == 0)
        return "a cancellation request (which the pivot may refuse)";
    if (s->deadline_emits && strcmp(s->deadline_emits, event) == 0)
        return "the deadline (whether or not the pivot ran)";
    if (s->completion_emits && strcmp(s->completion_emits, event) == 0)
        return "the completion";
    if (s->cancel_refused && strcmp(s->cancel_refused, event) == 0)
        return "the pivot's refusal of a cancellation";
    return NULL;
}

static bool check_around_pivot(ctx_t *c, const chorus_saga_t *s) {
    const step_t *pv = &s->steps[s->pivot];
    for (size_t i = 0; i < (size_t)s->pivot; i++) {
        const step_t *st = &s->steps[i];
        for (size_t j = 0; j < st->comp_on.n; j++) {
            char buf[256];
            const char *why = unsafe_origin(s, st->comp_on.v[j], buf, sizeof(buf));
            if (why)
                return refuse(c, "%s: its compensation on '%s' can undo it around the pivot %s: "
                              "'%s' comes from %s.  Before the pivot, a compensation may follow "
                              "only failures, other compensations, or the pivot's \"accepted\" "
                              "answer to a cancellation (sagas/README.md, \"Cancellation\")",
                              st->label, st->comp_on.v[j], pv->label, st->comp_on.v[j], why);
        }
    }
    return true;
}

static bool compensates_on(const chorus_saga_t *s, const char *event) {
    for (size_t i = 0; i < s->nsteps; i++)
        if (strs_has(&s->steps[i].comp_on, event))
            return true;
    return false;
}

static bool check_cancellation(ctx_t *c, const chorus_saga_t *s) {
    if (s->pivot >= 0 && !check_around_pivot(c, s))
        return false;
    if (s->pivot >= 0 && s->deadline_ms && !s->cancel_request)
        return refuse(c, "deadline: %s cannot be compensated (it is the saga's pivot), so a "
                      "deadline must ask it rather than end the saga: declare \"cancellation\" "
                      "with it as \"pivot\" and the deadline emitting the request "
                      "(sagas/README.md, \"Cancellation\")", s->steps[s->pivot].label);
    if (!s->cancel_request)
        return true;
    const step_t *pv = &s->steps[s->pivot];
    if (!strs_has(&s->services, s->cancel_by))
        return refuse(c, "cancellation: \"requested_by\" '%s' is not a service of saga '%s'",
                      s->cancel_by, s->name);
    if (s->deadline_ms && (strcmp(s->deadline_emits, s->cancel_request) != 0 ||
                           strcmp(s->deadline_owner, s->cancel_by) != 0))
        return refuse(c, "deadline: with a \"cancellation\" declared, the deadline asks the pivot: "
                      "its owner must be '%s' (\"requested_by\") and it must emit '%s'",
                      s->cancel_by, s->cancel_request);
    for (size_t k = 0; k < s->nprods; k++) {
        const prod_t *p = &s->prods[k];
        bool req = strcmp(p->event, s->cancel_request) == 0;
        bool ans = strcmp(p->event, s->cancel_accepted) == 0 ||
                   strcmp(p->event, s->cancel_refused) == 0;
        if ((req && strcmp(p->service, s->cancel_by) != 0) ||
            (ans && strcmp(p->service, pv->service) != 0))
            return refuse(c, "cancellation: '%s' must be emitted only by %s, but '%s' emits it "
                          "too", p->event, req ? s->cancel_by : pv->service, p->service);
    }
    int uses = 0;
    for (size_t i = 0; i < s->nsteps; i++)
        uses += (s->steps[i].trigger && strcmp(s->steps[i].trigger, s->cancel_request) == 0) ||
                strs_has(&s->steps[i].comp_on, s->cancel_request) ||
                strs_has(&s->steps[i].refuses_after, s->cancel_request);
    if (uses || strs_has(&s->completion_on, s->cancel_request))
        return refuse(c, "cancellation: the request '%s' is for the pivot %s alone (chorus "
                      "answers it there); no step or completion may list it", s->cancel_request,
                      pv->label);
    if (s->pivot > 0 && !compensates_on(s, s->cancel_accepted))
        return refuse(c, "cancellation: no compensation lists \"accepted\" '%s' in \"on\", so an "
                      "accepted cancellation would undo nothing", s->cancel_accepted);
    return true;
}

/* One meaning per event and service: the library guards a step by what
 * the event is to it (its trigger, its undo, a reason to refuse). */
static bool check_guard_roles(ctx_t *c, const chorus_saga_t *s) {
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *a = &s->steps[i];
        for (size_t j = 0; j < s->nsteps; j++) {
            const step_t *b = &s->steps[j];
            if (strcmp(a->service, b->service) != 0)
                continue;
            const strs_t *lists[] = {&b->comp_on, &b->refuses_after};
            for (size_t k = 0; k < 2; k++)
                for (size_t m = 0; m < lists[k]->n; m++) {
                    const char *e = lists[k]->v[m];
                    bool clash = (a->trigger && strcmp(a->trigger, e) == 0) ||
                                 (i < j && (strs_has(&a->comp_on, e) ||
                                            strs_has(&a->refuses_after, e))) ||
                                 (i == j && k == 1 && strs_has(&a->comp_on, e));
                    if (clash)
                        return refuse(c, "service '%s': event '%s' means two things to it (in %s "
                                      "and in %s); an event has one role per service",
                                      a->service, e, a->label, b->label);
                }
            if (i < j && a->trigger && b->trigger && strcmp(a->trigger, b->trigger) == 0)
                return refuse(c, "service '%s': %s and %s are both started by '%s'; an event "
                              "has one role per service", a->service, a->label, b->label,
                              a->trigger);
        }
        /* the completion's events reach its handler unguarded */
        if (s->completion_service && strcmp(s->completion_service, a->service) == 0) {
            const strs_t *lists[] = {&a->comp_on, &a->refuses_after};
            for (size_t k = 0; k < 2; k++)
                for (size_t m = 0; m < lists[k]->n; m++)
                    if (strs_has(&s->completion_on, lists[k]->v[m]))
                        return refuse(c, "service '%s': event '%s' means two things to it (in %s "
                                      "and in the completion); an event has one role per service",
                                      a->service, lists[k]->v[m], a->label);
            if (a->trigger && strs_has(&s->completion_on, a->trigger))
                return refuse(c, "service '%s': event '%s' means two things to it (in %s and in "
                              "the completion); an event has one role per service", a->service,
                              a->trigger, a->label);
        }
        /* an observer hears everything: its steps' events would mean two things */
        if (strs_has(&s->observers, a->service))
            return refuse(c, "service '%s' is an observer, so it cannot also take %s; give the "
                          "step another service", a->service, a->label);
        /* at the pivot or after it, nothing may stop a step: the pivot answers a
         * cancellation itself, and the steps after it must run */
        if (s->pivot >= 0 && i >= (size_t)s->pivot && a->refuses_after.n)
            return refuse(c, "%s: \"refuses_after\" is for steps before the pivot; %s",
                          a->label, (int)i == s->pivot
                              ? "the pivot refuses only by answering a cancellation request"
                              : "a step after the pivot must run (it is retried until it does)");
    }
    return true;
}

/* The events chorus writes itself ({"reason": ...}) must pass the schemas
 * the declaration gives them, or every cancellation would be dead-lettered. */
static bool check_library_events(ctx_t *c, const chorus_saga_t *s) {
    static const char *const reasons[] = {
        "deadline passed", "cancellation requested", "the deadline passed before the pivot ran",
        "the pivot already ran; the saga completes"};
    const char *events[] = {s->cancel_request, s->cancel_accepted, s->cancel_refused};
    for (size_t i = 0; s->cancel_request && i < 3; i++) {
        const chorus__schema_t *schema = chorus__saga_data_schema(s, events[i]);
        for (size_t k = 0; schema && k < sizeof(reasons) / sizeof(*reasons); k++) {
            cJSON *data = cJSON_CreateObject();
            if (!data || !cJSON_AddStringToObject(data, "reason", reasons[k])) {
                cJSON_Delete(data);
                return oom(c);
            }
            char why[300];
            bool ok = chorus__schema_validate(schema, data, "data", why, sizeof(why));
            cJSON_Delete(data);
            if (!ok)
                return refuse(c, "events: '%s': schema: chorus writes this event itself with data "
                              "{\"reason\": \"%s\"}, which it refuses (%s)", events[i],
                              reasons[k], why);
        }
    }
    return true;
}

/* ------------------------------------------------------------------------
 * Roles: what each service consumes, and the keys its queue binds
 * --------------------------------------------------------------------- */
static bool push_all(strs_t *to, const strs_t *from) {
    for (size_t i = 0; i < from->n; i++)
        if (!strs_push(to, from->v[i]))
            return false;
    return true;
}

static bool collect_consumes(const chorus_saga_t *s, role_t *r) {
    bool ok = true;
    for (size_t i = 0; ok && i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        if (strcmp(st->service, r->service) != 0)
            continue;
        ok = (!st->trigger || strs_push(&r->consumes, st->trigger)) &&
             push_all(&r->consumes, &st->comp_on) && push_all(&r->consumes, &st->refuses_after);
    }
    if (ok && s->completion_service && strcmp(s->completion_service, r->service) == 0)
        ok = push_all(&r->consumes, &s->completion_on);
    if (ok && s->cancel_request && strcmp(s->steps[s->pivot].service, r->service) == 0)
        ok = strs_push(&r->consumes, s->cancel_request);
    if (ok && strs_has(&s->observers, r->service))
        ok = push_all(&r->consumes, &s->events);
    strs_sort_unique(&r->consumes, false);
    return ok;
}

static bool collect_bindings(const chorus_saga_t *s, role_t *r) {
    for (size_t i = 0; i < r->consumes.n; i++) {
        for (size_t j = 0; j < s->nprods; j++) {
            if (strcmp(s->prods[j].event, r->consumes.v[i]) != 0)
                continue;
            size_t n = strlen(s->prods[j].service) + strlen(s->prods[j].event) + 2;
            char *key = malloc(n);
            if (!key)
                return false;
            snprintf(key, n, "%s.%s", s->prods[j].service, s->prods[j].event);
            if (!strs_push(&r->bindings, key)) {
                free(key);
                return false;
            }
        }
    }
    strs_sort_unique(&r->bindings, true);
    return true;
}

static bool derive_roles(ctx_t *c, chorus_saga_t *s) {
    s->roles = calloc(s->services.n, sizeof(*s->roles));
    if (!s->roles)
        return oom(c);
    for (size_t i = 0; i < s->services.n; i++) {
        s->roles[i].service = s->services.v[i];
        if (!collect_consumes(s, &s->roles[i]) || !collect_bindings(s, &s->roles[i]))
            return oom(c);
    }
    return true;
}

static const role_t *find_role(const chorus_saga_t *s, const char *service) {
    for (size_t i = 0; s && service && i < s->services.n; i++)
        if (strcmp(s->services.v[i], service) == 0)
            return &s->roles[i];
    return NULL;
}

/* ------------------------------------------------------------------------
 * Loading
 * --------------------------------------------------------------------- */
static bool parse_json(ctx_t *c, const char *json, chorus_saga_t *s) {
    /* The declaration is read with the same I-JSON rules as events: a
     * step or field given twice is refused, not silently resolved. */
    chorus__json_limits_t lim = {.max_depth = 64};
    chorus_error_t *err = NULL;
    size_t off = 0;
    chorus_err_t rc = chorus__json_parse_at(json, strlen(json), &lim, &s->root, NULL, &off, &err);
    if (!rc)
        return true;
    if (rc == CHORUS_ERR_NOMEM) {
        chorus_error_destroy(err);
        return oom(c);
    }
    int line = 1, col = 1;
    for (const char *p = json; p < json + off && *p; p++, col++)
        if (*p == '\n')
            line++, col = 0;
    bool ok = refuse(c, "malformed JSON at line %d, column %d: %s", line, col,
                     chorus_error_string(err));
    chorus_error_destroy(err);
    return ok;
}

chorus_saga_t *chorus_saga_parse(const char *json, const char *name, char *errstr,
                                 size_t errstr_size) {
    ctx_t c = {name ? name : "saga declaration", errstr, errstr_size};
    chorus_saga_t *s = calloc(1, sizeof(*s));
    if (!s) {
        oom(&c);
        return NULL;
    }
    if (!json) {
        refuse(&c, "no declaration text");
        goto fail;
    }
    if (!parse_json(&c, json, s) || !decode(&c, s) || !find_pivot(&c, s) ||
        !build_producers(&c, s) ||
        !build_services(&c, s) || !check_steps(&c, s) || !check_commands(&c, s) ||
        !check_consumed(&c, s) || !check_failures(&c, s) || !check_saga_level(&c, s) ||
        !check_events(&c, s) || !check_cancellation(&c, s) || !check_guard_roles(&c, s) ||
        !check_library_events(&c, s) ||
        !derive_roles(&c, s))
        goto fail;
    return s;
fail:
    chorus_saga_destroy(s);
    return NULL;
}

static char *read_file(const char *path, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f)
        goto fail;
    for (;;) {
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (!nb)
                goto fail;
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    buf[len] = '\0';
    return buf;
fail:
    chorus__errstr(errstr, errstr_size, "%s: cannot read: %s", path, strerror(errno));
    if (f)
        fclose(f);
    free(buf);
    return NULL;
}

chorus_saga_t *chorus_saga_load(const char *path, char *errstr, size_t errstr_size) {
    if (!path || !*path) {
        chorus__errstr(errstr, errstr_size, "saga declaration: no file given");
        return NULL;
    }
    char *text = read_file(path, errstr, errstr_size);
    if (!text)
        return NULL;
    chorus_saga_t *s = chorus_saga_parse(text, path, errstr, errstr_size);
    free(text);
    return s;
}

void chorus_saga_destroy(chorus_saga_t *s) {
    if (!s)
        return;
    for (size_t i = 0; s->steps && i < s->nsteps; i++) {
        strs_free(&s->steps[i].failures, false);
        strs_free(&s->steps[i].comp_on, false);
        strs_free(&s->steps[i].refuses_after, false);
    }
    for (size_t i = 0; s->roles && i < s->services.n; i++) {
        strs_free(&s->roles[i].consumes, false);
        strs_free(&s->roles[i].bindings, true);
    }
    free(s->roles);
    free(s->steps);
    free(s->prods);
    for (size_t i = 0; s->evinfo && i < s->nevinfo; i++)
        chorus__schema_free(s->evinfo[i].compiled);
    free(s->evinfo);
    strs_free(&s->completion_on, false);
    strs_free(&s->terminal, false);
    strs_free(&s->observers, false);
    strs_free(&s->services, false);
    strs_free(&s->events, false);
    cJSON_Delete(s->root);
    free(s);
}

/* ------------------------------------------------------------------------
 * Accessors
 * --------------------------------------------------------------------- */
const char *chorus_saga_name(const chorus_saga_t *s) {
    return s ? s->name : NULL;
}

int64_t chorus_saga_deadline_ms(const chorus_saga_t *s) {
    return s ? s->deadline_ms : 0;
}

const char *chorus_saga_deadline_owner(const chorus_saga_t *s) {
    return s ? s->deadline_owner : NULL;
}

int chorus_saga_is_terminal(const chorus_saga_t *s, const char *event_type) {
    return s && strs_has(&s->terminal, event_type);
}

static size_t give(const strs_t *l, const char *const **out) {
    if (out)
        *out = l && l->n ? l->v : no_strings;
    return l ? l->n : 0;
}

size_t chorus_saga_consumes(const chorus_saga_t *s, const char *service,
                           const char *const **typesp) {
    const role_t *r = find_role(s, service);
    return give(r ? &r->consumes : NULL, typesp);
}

size_t chorus_saga_bindings(const chorus_saga_t *s, const char *service,
                           const char *const **keysp) {
    const role_t *r = find_role(s, service);
    return give(r ? &r->bindings : NULL, keysp);
}

size_t chorus_saga_services(const chorus_saga_t *s, const char *const **namesp) {
    return give(s ? &s->services : NULL, namesp);
}

bool chorus__saga_produces(const chorus_saga_t *s, const char *service, const char *event) {
    for (size_t i = 0; s && i < s->nprods; i++)
        if (strcmp(s->prods[i].service, service) == 0 && strcmp(s->prods[i].event, event) == 0)
            return true;
    return false;
}

size_t chorus__saga_producers(const chorus_saga_t *s, const char *event, const char **out,
                              size_t max) {
    size_t n = 0;
    for (size_t i = 0; s && i < s->nprods; i++) {
        if (strcmp(s->prods[i].event, event) != 0)
            continue;
        bool seen = false; /* a service may produce one event in two places */
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(s->prods[j].event, event) == 0 &&
                   strcmp(s->prods[j].service, s->prods[i].service) == 0;
        if (!seen) {
            if (n < max)
                out[n] = s->prods[i].service;
            n++;
        }
    }
    return n;
}

/* ---- the roles of events, for the library's guards and for monitors ---- */

size_t chorus_saga_step_count(const chorus_saga_t *s) {
    return s ? s->nsteps : 0;
}

const char *chorus_saga_step_name(const chorus_saga_t *s, size_t i) {
    return s && i < s->nsteps ? s->steps[i].name : NULL;
}

const char *chorus_saga_step_service(const chorus_saga_t *s, size_t i) {
    return s && i < s->nsteps ? s->steps[i].service : NULL;
}

int chorus_saga_pivot(const chorus_saga_t *s) {
    return s ? s->pivot : -1;
}

const char *chorus_saga_completion_event(const chorus_saga_t *s) {
    return s ? s->completion_emits : NULL;
}

const char *chorus_saga_cancellation_event(const chorus_saga_t *s, chorus_saga_event_kind_t k) {
    if (!s)
        return NULL;
    switch (k) {
    case CHORUS_SAGA_CANCEL_REQUEST: return s->cancel_request;
    case CHORUS_SAGA_CANCEL_ACCEPTED: return s->cancel_accepted;
    case CHORUS_SAGA_CANCEL_REFUSED: return s->cancel_refused;
    default: return NULL;
    }
}

chorus_saga_event_kind_t chorus_saga_event_kind(const chorus_saga_t *s, const char *event,
                                                int *stepp) {
    if (stepp)
        *stepp = -1;
    if (!s || !event)
        return CHORUS_SAGA_EVENT_UNKNOWN;
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        chorus_saga_event_kind_t k =
            strcmp(st->emits, event) == 0                             ? CHORUS_SAGA_STEP_DONE
            : strs_has(&st->failures, event)                          ? CHORUS_SAGA_STEP_FAILED
            : st->comp_emits && strcmp(st->comp_emits, event) == 0    ? CHORUS_SAGA_STEP_COMPENSATED
                                                                      : CHORUS_SAGA_EVENT_UNKNOWN;
        if (k != CHORUS_SAGA_EVENT_UNKNOWN) {
            if (stepp)
                *stepp = (int)i;
            return k;
        }
    }
    if (s->cancel_request && strcmp(s->cancel_request, event) == 0)
        return CHORUS_SAGA_CANCEL_REQUEST;
    if (s->cancel_accepted && strcmp(s->cancel_accepted, event) == 0) {
        if (stepp)
            *stepp = s->pivot;
        return CHORUS_SAGA_CANCEL_ACCEPTED;
    }
    if (s->cancel_refused && strcmp(s->cancel_refused, event) == 0) {
        if (stepp)
            *stepp = s->pivot;
        return CHORUS_SAGA_CANCEL_REFUSED;
    }
    if (s->completion_emits && strcmp(s->completion_emits, event) == 0)
        return CHORUS_SAGA_COMPLETED;
    if (s->deadline_emits && strcmp(s->deadline_emits, event) == 0)
        return CHORUS_SAGA_DEADLINE;
    return CHORUS_SAGA_EVENT_UNKNOWN;
}

chorus__guard_t chorus__saga_guard(const chorus_saga_t *s, const char *service, const char *event,
                                   size_t *step) {
    for (size_t i = 0; s && i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        if (strcmp(st->service, service) != 0)
            continue;
        *step = i;
        if (st->trigger && strcmp(st->trigger, event) == 0)
            return CHORUS__GUARD_ACTION;
        if (strs_has(&st->comp_on, event))
            return CHORUS__GUARD_UNDO;
        if (strs_has(&st->refuses_after, event))
            return CHORUS__GUARD_REFUSE_AFTER;
    }
    if (s && s->cancel_request && strcmp(s->cancel_request, event) == 0 &&
        strcmp(s->steps[s->pivot].service, service) == 0) {
        *step = (size_t)s->pivot;
        return CHORUS__GUARD_REQUEST;
    }
    return CHORUS__GUARD_NONE;
}

chorus__emit_t chorus__saga_emit_role(const chorus_saga_t *s, const char *service,
                                      const char *event, size_t *step) {
    for (size_t i = 0; s && i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        if (strcmp(st->service, service) != 0)
            continue;
        *step = i;
        if (strcmp(st->emits, event) == 0)
            return CHORUS__EMIT_SUCCESS;
        if (strs_has(&st->failures, event))
            return CHORUS__EMIT_FAILURE;
        if (st->comp_emits && strcmp(st->comp_emits, event) == 0)
            return CHORUS__EMIT_UNDONE;
    }
    return CHORUS__EMIT_OTHER;
}

const char *chorus__saga_deadline_event(const chorus_saga_t *s) {
    return s ? s->deadline_emits : NULL;
}

/* Events the library handles itself at @p service (the pivot's requests,
 * "refuses_after"): a handler there is optional. */
bool chorus__saga_library_handled(const chorus_saga_t *s, const char *service, const char *event) {
    if (strs_has(&s->observers, service) ||
        (s->completion_service && strcmp(s->completion_service, service) == 0 &&
         strs_has(&s->completion_on, event)))
        return false;
    size_t step;
    chorus__guard_t g = chorus__saga_guard(s, service, event, &step);
    return g == CHORUS__GUARD_REQUEST || g == CHORUS__GUARD_REFUSE_AFTER;
}

static const evinfo_t *evinfo(const chorus_saga_t *s, const char *event) {
    for (size_t i = 0; s && i < s->nevinfo; i++)
        if (strcmp(s->evinfo[i].event, event) == 0)
            return &s->evinfo[i];
    return NULL;
}

int chorus__saga_schema_version(const chorus_saga_t *s, const char *event) {
    const evinfo_t *e = evinfo(s, event);
    return e ? e->schema_version : 0;
}

int chorus__saga_newer_policy(const chorus_saga_t *s, const char *event) {
    const evinfo_t *e = evinfo(s, event);
    return e ? e->newer : -1;
}

const chorus__schema_t *chorus__saga_data_schema(const chorus_saga_t *s, const char *event) {
    const evinfo_t *e = evinfo(s, event);
    return e ? e->compiled : NULL;
}

/* ------------------------------------------------------------------------
 * Handlers against the role
 * --------------------------------------------------------------------- */
/* A growing message in a caller buffer; truncation is not an error. */
typedef struct {
    char *buf;
    size_t size, len;
} msg_t;

static void msg_add(msg_t *m, const char *fmt, ...) CHORUS_PRINTF(2, 3);
static void msg_add(msg_t *m, const char *fmt, ...) {
    if (!m->buf || m->len + 1 >= m->size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->buf + m->len, m->size - m->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        m->len += (size_t)n < m->size - m->len ? (size_t)n : m->size - m->len - 1;
}

/* Why @p service consumes @p event: "trigger of step 'x'", ... */
static void msg_origin(msg_t *m, const chorus_saga_t *s, const char *service, const char *event) {
    const char *sep = "";
    for (size_t i = 0; i < s->nsteps; i++) {
        const step_t *st = &s->steps[i];
        if (strcmp(st->service, service) != 0)
            continue;
        if (st->trigger && strcmp(st->trigger, event) == 0)
            msg_add(m, "%strigger of step '%s'", sep, st->name), sep = ", ";
        if (strs_has(&st->comp_on, event))
            msg_add(m, "%scompensation of step '%s'", sep, st->name), sep = ", ";
        if (strs_has(&st->refuses_after, event))
            msg_add(m, "%srefuses_after of step '%s'", sep, st->name), sep = ", ";
    }
    if (s->cancel_request && strcmp(s->cancel_request, event) == 0 &&
        strcmp(s->steps[s->pivot].service, service) == 0)
        msg_add(m, "%scancellation request to the pivot", sep), sep = ", ";
    if (s->completion_service && strcmp(s->completion_service, service) == 0 &&
        strs_has(&s->completion_on, event))
        msg_add(m, "%scompletion of the saga", sep), sep = ", ";
    if (strs_has(&s->observers, service))
        msg_add(m, "%sobserver of every event", sep);
}

static bool registered(const char *const *types, size_t n, const char *event) {
    for (size_t i = 0; i < n; i++)
        if (types[i] && strcmp(types[i], event) == 0)
            return true;
    return false;
}

static size_t add_missing(msg_t *m, const chorus_saga_t *s, const role_t *r,
                          const char *const *types, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < r->consumes.n; i++) {
        const char *e = r->consumes.v[i];
        if (registered(types, n, e) || chorus__saga_library_handled(s, r->service, e))
            continue;
        msg_add(m, "%s%s (", count++ ? ", " : "has no handler for ", e);
        msg_origin(m, s, r->service, e);
        msg_add(m, ")");
    }
    return count;
}

static size_t add_extra(msg_t *m, const role_t *r, const char *const *types, size_t n,
                        bool after) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!types[i] || strs_has(&r->consumes, types[i]) || registered(types, i, types[i]))
            continue;
        msg_add(m, "%s%s", count++ ? ", " : after ? "; and handlers it never receives: "
                                                  : "has handlers it never receives: ",
                types[i]);
    }
    return count;
}

chorus_err_t chorus_saga_check_handlers(const chorus_saga_t *s, const char *service,
                                        const char *const *types, size_t ntypes, char *errstr,
                                        size_t errstr_size) {
    if (!s || !service || (ntypes && !types)) {
        chorus__errstr(errstr, errstr_size, "chorus_saga_check_handlers: invalid argument");
        return CHORUS_ERR_INVALID_ARG;
    }
    const role_t *r = find_role(s, service);
    if (!r) {
        chorus__errstr(errstr, errstr_size, "service '%s' takes no part in saga '%s'", service,
                       s->name);
        return CHORUS_ERR_INVALID_CONF;
    }
    char scratch[1];
    msg_t m = {errstr && errstr_size ? errstr : scratch, errstr && errstr_size ? errstr_size : 1, 0};
    m.buf[0] = '\0';
    msg_add(&m, "saga '%s': service '%s' ", s->name, service);
    size_t missing = add_missing(&m, s, r, types, ntypes);
    size_t extra = add_extra(&m, r, types, ntypes, missing > 0);
    if (missing || extra)
        return CHORUS_ERR_INVALID_CONF;
    m.buf[0] = '\0';
    return CHORUS_OK;
}

/* ------------------------------------------------------------------------
 * Permissions
 * --------------------------------------------------------------------- */
/* Copies @p s with regular-expression metacharacters escaped. */
static bool regex_quote(char *out, size_t size, const char *s) {
    size_t n = 0;
    for (; *s; s++) {
        bool meta = strchr(".^$|()[]{}*+?\\", *s) != NULL;
        if (n + (meta ? 2 : 1) >= size)
            return false;
        if (meta)
            out[n++] = '\\';
        out[n++] = *s;
    }
    out[n] = '\0';
    return true;
}

static bool fits(char *out, size_t size, const char *fmt, ...) CHORUS_PRINTF(3, 4);
static bool fits(char *out, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < size;
}

chorus_err_t chorus_saga_permissions(const chorus_saga_t *s, const char *service, const char *ns,
                                     char *configure, char *write, char *read, char *topic_write,
                                     size_t size) {
    if (!s || !service || !configure || !write || !read || !topic_write || size == 0)
        return CHORUS_ERR_INVALID_ARG;
    if (!find_role(s, service))
        return CHORUS_ERR_NOT_FOUND;
    char n[160], v[160];
    if (!regex_quote(n, sizeof(n), ns && *ns ? ns : s->ns) || !regex_quote(v, sizeof(v), service))
        return CHORUS_ERR_INVALID_ARG;
    /* Its own queues and exchanges (<ns>.<svc>, <ns>.<svc>.*: retry and
     * dead-letter exchanges included), the shared events exchange and its
     * alternate.  No amq.default: nothing chorus sends goes through the
     * default exchange, which would reach any queue by name. */
    bool ok =
        fits(configure, size, "^(%s\\.%s(\\..+)?|%s\\.events|%s\\.events\\.unrouted|"
             "%s\\.unrouted)$", n, v, n, n, n) &&
        /* creating an exchange with an alternate exchange needs write on it */
        fits(write, size, "^(%s\\.%s(\\..+)?|%s\\.events|%s\\.events\\.unrouted|"
             "%s\\.unrouted)$", n, v, n, n, n) &&
        fits(read, size, "^(%s\\.%s(\\..+)?|%s\\.events|%s\\.events\\.unrouted)$", n, v,
             n, n) &&
        fits(topic_write, size, "^%s\\.", v);
    return ok ? CHORUS_OK : CHORUS_ERR_INVALID_ARG;
}

/* ------------------------------------------------------------------------
 * The picture (Graphviz DOT)
 *
 *   bold black     the happy path (a step's success starts the next one)
 *   red            a failure, and who reacts to it
 *   dashed orange  compensations (and cancellations heard by participants)
 *   dotted blue    the deadline
 *   double line    an event that ends the saga (terminal)
 * --------------------------------------------------------------------- */
typedef enum { E_HAPPY, E_FAILURE, E_COMP } edge_kind_t;

static const char *edge_style(edge_kind_t k, bool terminal) {
    static const char *const plain[] = {
        "style=bold, color=black, fontcolor=black",
        "style=bold, color=red, fontcolor=red",
        "style=dashed, color=darkorange, fontcolor=darkorange3",
    };
    static const char *const doubled[] = {
        "style=bold, color=\"black:invis:black\", fontcolor=black",
        "style=bold, color=\"red:invis:red\", fontcolor=red",
        "style=dashed, color=\"darkorange:invis:darkorange\", fontcolor=darkorange3",
    };
    return terminal ? doubled[k] : plain[k];
}

static bool is_trigger(const chorus_saga_t *s, const char *consumer, const char *event) {
    for (size_t i = 0; i < s->nsteps; i++)
        if (s->steps[i].trigger && strcmp(s->steps[i].service, consumer) == 0 &&
            strcmp(s->steps[i].trigger, event) == 0)
            return true;
    return false;
}

/* How @p consumer takes @p event: as the next step of the happy path, as a
 * reaction to a failure, or as part of undoing. */
static edge_kind_t edge_kind(const chorus_saga_t *s, const char *consumer, const char *event) {
    if (is_failure(s, event))
        return E_FAILURE;
    if (is_trigger(s, consumer, event))
        return E_HAPPY;
    if (s->completion_service && strcmp(s->completion_service, consumer) == 0 &&
        strs_has(&s->completion_on, event))
        return E_HAPPY;
    return E_COMP;
}

/* Production kind, for edges into terminal nodes. */
static edge_kind_t prod_kind(const chorus_saga_t *s, const prod_t *p) {
    if (is_failure(s, p->event))
        return E_FAILURE;
    for (size_t i = 0; i < s->nsteps; i++)
        if (s->steps[i].comp_emits && strcmp(s->steps[i].comp_emits, p->event) == 0)
            return E_COMP;
    if (s->deadline_emits && strcmp(s->deadline_emits, p->event) == 0)
        return E_COMP;
    return E_HAPPY;
}

static bool observer_only(const chorus_saga_t *s, const char *service) {
    if (!strs_has(&s->observers, service))
        return false;
    for (size_t i = 0; i < s->nsteps; i++)
        if (strcmp(s->steps[i].service, service) == 0)
            return false;
    return !s->completion_service || strcmp(s->completion_service, service) != 0;
}

static void dot_nodes(const chorus_saga_t *s, FILE *f) {
    for (size_t i = 0; i < s->services.n; i++)
        fprintf(f, "  \"%s\" [shape=box, style=\"rounded,filled\", fillcolor=\"%s\"];\n",
                s->services.v[i], observer_only(s, s->services.v[i]) ? "gray95" : "lightyellow");
    for (size_t i = 0; i < s->nsteps; i++)
        if (s->steps[i].command)
            fprintf(f, "  \"cmd:%s\" [shape=cds, style=filled, fillcolor=palegreen, "
                    "label=\"%s\\n(command)\"];\n  \"cmd:%s\" -> \"%s\" [style=bold, label=\"%s\"];\n",
                    s->steps[i].command, s->steps[i].command, s->steps[i].command,
                    s->steps[i].service, s->steps[i].command);
    for (size_t i = 0; i < s->terminal.n; i++)
        fprintf(f, "  \"end:%s\" [shape=doubleoctagon, style=filled, fillcolor=%s, "
                "label=\"%s\\n(terminal)\"];\n", s->terminal.v[i],
                is_failure(s, s->terminal.v[i]) ? "mistyrose" : "lightcyan", s->terminal.v[i]);
}

static void dot_deadline(const chorus_saga_t *s, FILE *f) {
    if (!s->deadline_owner)
        return;
    fprintf(f, "  \"deadline\" [shape=ellipse, style=dotted, color=blue, fontcolor=blue, "
            "label=\"deadline\\n%lld ms\"];\n", (long long)s->deadline_ms);
    fprintf(f, "  \"deadline\" -> \"%s\" [style=dotted, color=blue, fontcolor=blue, "
            "label=\"not terminal by then:\\nemit %s\"];\n", s->deadline_owner, s->deadline_emits);
}

static bool prod_seen(const chorus_saga_t *s, size_t k) {
    for (size_t i = 0; i < k; i++)
        if (strcmp(s->prods[i].service, s->prods[k].service) == 0 &&
            strcmp(s->prods[i].event, s->prods[k].event) == 0)
            return true;
    return false;
}

/* One edge per (producer, event, consumer). */
static void dot_flows(const chorus_saga_t *s, FILE *f) {
    for (size_t i = 0; i < s->services.n; i++) {
        const role_t *r = &s->roles[i];
        if (observer_only(s, r->service))
            continue;
        for (size_t j = 0; j < r->consumes.n; j++)
            for (size_t k = 0; k < s->nprods; k++) {
                const prod_t *p = &s->prods[k];
                if (strcmp(p->event, r->consumes.v[j]) != 0 || prod_seen(s, k))
                    continue;
                /* only step-to-step edges rank the nodes, so the happy path
                 * reads top to bottom and the way back bends beside it */
                fprintf(f, "  \"%s\" -> \"%s\" [label=\"%s\", %s%s];\n", p->service, r->service,
                        p->event, edge_style(edge_kind(s, r->service, p->event),
                                             strs_has(&s->terminal, p->event)),
                        is_trigger(s, r->service, p->event) ? "" : ", constraint=false");
            }
    }
}

static void dot_terminal_edges(const chorus_saga_t *s, FILE *f) {
    fprintf(f, "  { rank=sink;");
    for (size_t i = 0; i < s->terminal.n; i++)
        fprintf(f, " \"end:%s\";", s->terminal.v[i]);
    fprintf(f, " }\n");
    for (size_t k = 0; k < s->nprods; k++) {
        const prod_t *p = &s->prods[k];
        if (!strs_has(&s->terminal, p->event) || prod_seen(s, k))
            continue;
        fprintf(f, "  \"%s\" -> \"end:%s\" [label=\"%s\", %s];\n", p->service, p->event, p->event,
                edge_style(prod_kind(s, p), true));
    }
}

/* Observers hear every event: one note each instead of an edge per event. */
static void dot_observers(const chorus_saga_t *s, FILE *f) {
    for (size_t i = 0; i < s->observers.n; i++)
        if (observer_only(s, s->observers.v[i]))
            fprintf(f, "  \"%s\" [label=\"%s\\n(observes all %zu events)\"];\n",
                    s->observers.v[i], s->observers.v[i], s->events.n);
}

void chorus_saga_write_dot(const chorus_saga_t *s, void *out) {
    FILE *f = out;
    if (!s || !f)
        return;
    fprintf(f, "digraph \"%s\" {\n  rankdir=LR; nodesep=0.5; ranksep=1.1;\n", s->name);
    fprintf(f, "  labelloc=t; fontname=Helvetica; fontsize=16;\n"
            "  label=\"saga %s: bold = happy path, red = failure, dashed orange = "
            "compensation, dotted blue = deadline, double line = terminal event\";\n", s->name);
    fprintf(f, "  node [fontname=Helvetica]; edge [fontname=Helvetica, fontsize=11];\n");
    dot_nodes(s, f);
    dot_deadline(s, f);
    dot_flows(s, f);
    dot_terminal_edges(s, f);
    dot_observers(s, f);
    fprintf(f, "}\n");
}

const char *chorus__saga_namespace(const chorus_saga_t *saga) { return saga->ns; }
