/*
 * envelope.c - the event contract: build, serialize, parse, validate.
 *
 * An envelope is the JSON object every chorus event travels in
 * (lib/schema/envelope.schema.json, docs in DESIGN.md "The event contract"):
 *
 *   { "event_id": uuid, "event_type": "OrderPlaced", "aggregate_id": uuid,
 *     "version": 3, "schema_version": 1, "timestamp": "...T10:00:00.000Z",
 *     "data": {...}, "metadata": { "correlation_id": uuid, ... } }
 *
 * Decoding is defensive, because a consumer must survive any bytes a broker
 * hands it.  chorus_envelope_parse() rejects, in this order:
 *
 *   bytes --size--> --UTF-8, no NUL--> I-JSON parser (json.c) --fields--> env
 *          TOO_LARGE      BAD_UTF8/PARSE   PARSE, NOT_IJSON,        SCHEMA
 *                                          TOO_DEEP, TOO_LARGE
 *
 * The parser is iterative (no recursion on hostile nesting), accepts only
 * I-JSON -- no duplicate member names at any depth, no "\u0000", no lone
 * surrogates or noncharacters, no unescaped control characters, integers
 * within +-(2^53 - 1), at most 17 significant digits -- and counts the
 * memory the decoded tree takes against a bound, because a megabyte of
 * small numbers decodes to forty.  Anything after the value is an error.
 * The field checks name the offending field in the error message
 * ("field 'version' must be an integer >= 1").  Because no member name can
 * appear twice, every reader -- this one, a handler walking the cJSON
 * tree, PostgreSQL's jsonb -- sees the same value for every field, and
 * because data is re-printed by the exact printer of json.c, what is
 * stored is what was validated.
 *
 * What is kept: the seven contract fields, schema_version (optional, default
 * 1) and the whole metadata object, unknown keys included, so metadata round
 * trips.  Unknown top-level fields are accepted and dropped (the contract
 * lets producers add optional fields; this version has no use for them).
 * UUIDs are stored lowercase; a timestamp may come with any RFC 3339 offset
 * and precision and is kept as milliseconds, so the re-serialized form is
 * always the canonical "YYYY-MM-DDTHH:MM:SS.mmmZ"; its instant must lie in
 * the years 0001..9999 (UTC), the years that form can spell.  Integer
 * fields are limited to 2^53-1 (exact in every JSON reader).  Inside data,
 * numbers are doubles: the parser refuses integers beyond 2^53 - 1, so ids
 * belong in strings.  A limit field of 0 (or a NULL limits pointer) means
 * the default; the decoded size is bounded by 16 times max_bytes unless the
 * participant's "message.max.decoded.bytes" says otherwise.
 *
 * Invariants of struct chorus_envelope_s are listed in envelope_int.h; every
 * constructor and setter here keeps them, and a failed setter leaves the
 * envelope unchanged.  chorus_envelope_data_json() fills a cache lazily
 * through a const pointer, so a const envelope is still one thread's at a
 * time (as chorus.h says of all envelopes).
 */
#include "envelope_int.h"
#include "json_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The data object is one level below the envelope, so data built locally
 * must fit in one level less for default consumers to accept the event. */
#define DEFAULT_MAX_BYTES ((size_t)1 << 20)
#define DEFAULT_MAX_DEPTH 32
#define DATA_MAX_DEPTH (DEFAULT_MAX_DEPTH - 1)

chorus_envelope_limits_t chorus_envelope_limits_default(void) {
    chorus_envelope_limits_t l = {DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH};
    return l;
}

/* ------------------------------------------------------------ validators */

int chorus__event_type_valid(const char *s) {
    if (!s || !(s[0] >= 'A' && s[0] <= 'Z'))
        return 0;
    for (size_t n = 1; s[n]; n++) {
        char c = s[n];
        int alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9');
        if (n >= CHORUS__EVENT_TYPE_MAX || !alnum)
            return 0;
    }
    return 1;
}

static int lower_hex_run(const char *s, int n, int *all_zero) {
    *all_zero = 1;
    for (int i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
        if (s[i] != '0')
            *all_zero = 0;
    }
    return 1;
}

int chorus__traceparent_valid(const char *s) {
    int z0, z1, z2, z3;
    if (!s || strlen(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
        return 0;
    if (!lower_hex_run(s, 2, &z0) || !lower_hex_run(s + 3, 32, &z1) ||
        !lower_hex_run(s + 36, 16, &z2) || !lower_hex_run(s + 53, 2, &z3))
        return 0;
    return strncmp(s, "ff", 2) != 0 && !z1 && !z2;
}

/* Length of the UTF-8 sequence led by @p c and the allowed range of its
 * second byte (RFC 3629 section 4, which excludes overlongs, surrogates
 * and code points above U+10FFFF); 0 for a byte that cannot lead. */
static int utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c == 0xE0)
        *lo = 0xA0;
    else if (c == 0xED)
        *hi = 0x9F;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c == 0xF0)
        *lo = 0x90;
    else if (c == 0xF4)
        *hi = 0x8F;
    return c >= 0xF0 && c <= 0xF4 ? 4 : 0;
}

int chorus__utf8_valid(const char *buf, size_t len, size_t *bad_off, int *nul) {
    const unsigned char *p = (const unsigned char *)buf;
    size_t i = 0;
    while (i < len) {
        unsigned char lo, hi;
        int n = p[i] < 0x80 ? 1 : utf8_lead(p[i], &lo, &hi);
        int ok = n > 0 && p[i] != 0 && len - i >= (size_t)n;
        if (ok && n > 1)
            ok = p[i + 1] >= lo && p[i + 1] <= hi;
        for (size_t k = 2; ok && k < (size_t)n; k++)
            ok = p[i + k] >= 0x80 && p[i + k] <= 0xBF;
        if (!ok) {
            if (bad_off)
                *bad_off = i;
            if (nul)
                *nul = p[i] == 0;
            return 0;
        }
        i += (size_t)n;
    }
    return 1;
}

/* ASCII only: tolower() would depend on the locale. */
static char ascii_lower(char c) {
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Copies a valid UUID into @p out, lowercased. */
static void uuid_copy(char out[37], const char *s) {
    for (int i = 0; i < 36; i++)
        out[i] = ascii_lower(s[i]);
    out[36] = '\0';
}

static void lowercase(char *s) {
    for (; *s; s++)
        *s = ascii_lower(*s);
}

/* ------------------------------------------------------ metadata checks */

static const char *const meta_uuid_keys[] = {"correlation_id", "causation_id",
                                             "user_id"};

/* The single item called @p name in @p obj (or NULL); SCHEMA if twice. */
static chorus_err_t get_unique(const cJSON *obj, const char *name,
                               const char *prefix, const cJSON **itemp,
                               chorus_error_t **errp) {
    const cJSON *found = NULL;
    *itemp = NULL;
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (!it->string || strcmp(it->string, name) != 0)
            continue;
        if (found)
            return chorus__error_set(errp, CHORUS_ERR_SCHEMA,
                                     "duplicate field '%s%s'", prefix, name);
        found = it;
    }
    *itemp = found;
    return CHORUS_OK;
}

/* Checks the known keys of a metadata object and lowercases its UUIDs. */
static chorus_err_t check_metadata(cJSON *meta, chorus_error_t **errp) {
    const cJSON *it = NULL;
    chorus_err_t rc;
    for (size_t i = 0; i < sizeof(meta_uuid_keys) / sizeof(*meta_uuid_keys);
         i++) {
        const char *key = meta_uuid_keys[i];
        if ((rc = get_unique(meta, key, "metadata.", &it, errp)))
            return rc;
        if (it && !(cJSON_IsString(it) && chorus_uuid_valid(it->valuestring)))
            return chorus__error_set(errp, CHORUS_ERR_SCHEMA,
                                     "field 'metadata.%s' must be a UUID string",
                                     key);
        if (it)
            lowercase(it->valuestring);
    }
    if ((rc = get_unique(meta, "traceparent", "metadata.", &it, errp)))
        return rc;
    if (it && !(cJSON_IsString(it) && chorus__traceparent_valid(it->valuestring)))
        return chorus__error_set(errp, CHORUS_ERR_SCHEMA,
                                 "field 'metadata.traceparent' must be a W3C "
                                 "traceparent string");
    /* The saga instance's deadline: when it passes, the pivot refuses to
     * run and the deadline owner asks for a cancellation. */
    int64_t ms;
    if ((rc = get_unique(meta, "deadline", "metadata.", &it, errp)))
        return rc;
    if (it && !(cJSON_IsString(it) && chorus_timestamp_parse(it->valuestring, &ms) == CHORUS_OK))
        return chorus__error_set(errp, CHORUS_ERR_SCHEMA,
                                 "field 'metadata.deadline' must be an RFC 3339 timestamp");
    return CHORUS_OK;
}

/* ---------------------------------------------------------- lifecycle */

void chorus_envelope_destroy(chorus_envelope_t *env) {
    if (!env)
        return;
    free(env->event_type);
    cJSON_Delete(env->data);
    cJSON_Delete(env->metadata);
    free(env->data_json);
    free(env);
}

chorus_envelope_t *chorus_envelope_dup(const chorus_envelope_t *env) {
    if (!env)
        return NULL;
    chorus_envelope_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    *d = *env;
    d->event_type = chorus__strdup(env->event_type);
    d->data = cJSON_Duplicate(env->data, 1);
    d->metadata = cJSON_Duplicate(env->metadata, 1);
    d->data_json = chorus__strdup(env->data_json);
    if (!d->event_type || !d->data || !d->metadata ||
        (env->data_json && !d->data_json)) {
        chorus_envelope_destroy(d);
        return NULL;
    }
    return d;
}

/* Data built locally must be an object that a default consumer accepts:
 * I-JSON (the printer refuses what is not) within the nesting limit.  The
 * exact text is kept as the envelope's data_json. */
static chorus_err_t check_local_data(const cJSON *data, char **textp, chorus_error_t **errp) {
    if (!cJSON_IsObject(data))
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                                 "field 'data' must be a JSON object");
    chorus_error_t *perr = NULL;
    size_t len;
    char *text = chorus__json_print(data, 0, &len, &perr);
    if (!text) {
        chorus_err_t rc = chorus__error_set(errp, chorus_error_code(perr), "field 'data': %s",
                                            chorus_error_string(perr));
        chorus_error_destroy(perr);
        return rc;
    }
    /* What a default consumer would count: the data object one level down. */
    cJSON *back = NULL;
    chorus__json_limits_t lim = {.max_depth = DATA_MAX_DEPTH};
    chorus_err_t rc = chorus__json_parse(text, len, &lim, &back, NULL, &perr);
    cJSON_Delete(back);
    if (rc) {
        chorus__error_set(errp, rc, "field 'data': %s", chorus_error_string(perr));
        chorus_error_destroy(perr);
        free(text);
        return rc;
    }
    *textp = text;
    return CHORUS_OK;
}

/* Parses @p json (NULL: "{}") as a local data object; *out on success. */
static chorus_err_t parse_local_data(const char *json, cJSON **out,
                                     chorus_error_t **errp) {
    if (!json)
        json = "{}";
    cJSON *d = NULL;
    chorus_error_t *perr = NULL;
    chorus__json_limits_t lim = {.max_depth = DATA_MAX_DEPTH};
    chorus_err_t rc = chorus__json_parse(json, strlen(json), &lim, &d, NULL, &perr);
    if (rc) {
        chorus__error_set(errp, rc, "field 'data': %s", chorus_error_string(perr));
        chorus_error_destroy(perr);
        return rc;
    }
    if (!cJSON_IsObject(d)) {
        cJSON_Delete(d);
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                                 "field 'data' must be a JSON object");
    }
    *out = d;
    return CHORUS_OK;
}

static chorus_err_t parse_local_metadata(const char *json, cJSON **out,
                                         chorus_error_t **errp) {
    cJSON *m = NULL;
    chorus_error_t *perr = NULL;
    chorus_err_t rc = chorus__json_parse(json, strlen(json), NULL, &m, NULL, &perr);
    if (rc) {
        chorus__error_set(errp, rc, "field 'metadata': %s", chorus_error_string(perr));
        chorus_error_destroy(perr);
        return rc;
    }
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(m);
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                                 "field 'metadata' must be a JSON object");
    }
    rc = check_metadata(m, errp);
    if (rc)
        cJSON_Delete(m);
    else
        *out = m;
    return rc;
}

static chorus_err_t check_args(const char *event_type, const char *aggregate_id,
                               int64_t version, chorus_error_t **errp) {
    if (!chorus__event_type_valid(event_type))
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                                 "field 'event_type' must be PascalCase "
                                 "([A-Z][A-Za-z0-9]*, at most %d characters)",
                                 CHORUS__EVENT_TYPE_MAX);
    if (!chorus_uuid_valid(aggregate_id))
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                                 "field 'aggregate_id' must be a UUID");
    if (version < 1 || version > CHORUS__MAX_SAFE_INT)
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                                 "field 'version' must be an integer >= 1");
    return CHORUS_OK;
}

/* The one constructor: takes @p data and @p meta (NULL: {}), even on
 * failure; the arguments must already be valid. */
static chorus_envelope_t *env_make(const char *event_type,
                                   const char *aggregate_id, int64_t version,
                                   cJSON *data, cJSON *meta,
                                   chorus_error_t **errp) {
    chorus_envelope_t *env = calloc(1, sizeof(*env));
    if (env) {
        env->event_type = chorus__strdup(event_type);
        env->data = data;
        env->metadata = meta ? meta : cJSON_CreateObject();
    }
    if (!env || !env->event_type || !env->metadata) {
        if (env) {
            chorus_envelope_destroy(env);
        } else {
            cJSON_Delete(data);
            cJSON_Delete(meta);
        }
        chorus__error_set(errp, CHORUS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    chorus_uuid_v7(env->event_id);
    uuid_copy(env->aggregate_id, aggregate_id);
    env->version = version;
    env->schema_version = 1;
    env->ts_ms = chorus_now_ms();
    chorus_format_timestamp(env->ts_ms, env->timestamp);
    return env;
}

chorus_envelope_t *chorus_envelope_new_json(const char *event_type,
                                            const char *aggregate_id,
                                            int64_t version, cJSON *data,
                                            chorus_error_t **errp) {
    if (!data && !(data = cJSON_CreateObject())) {
        chorus__error_set(errp, CHORUS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    char *text = NULL;
    if (check_args(event_type, aggregate_id, version, errp) ||
        check_local_data(data, &text, errp)) {
        cJSON_Delete(data);
        return NULL;
    }
    chorus_envelope_t *env = env_make(event_type, aggregate_id, version, data, NULL, errp);
    if (env)
        env->data_json = text;
    else
        free(text);
    return env;
}

chorus_envelope_t *chorus_envelope_new(const char *event_type,
                                       const char *aggregate_id,
                                       int64_t version, const char *data_json,
                                       chorus_error_t **errp) {
    cJSON *data = NULL;
    if (check_args(event_type, aggregate_id, version, errp) ||
        parse_local_data(data_json, &data, errp))
        return NULL;
    return env_make(event_type, aggregate_id, version, data, NULL, errp);
}

chorus_envelope_t *chorus__envelope_from_parts(
    const char *event_id, const char *event_type, const char *aggregate_id,
    int64_t version, int schema_version, int64_t ts_ms, const char *data_json,
    const char *metadata_json, chorus_error_t **errp) {
    cJSON *data = NULL, *meta = NULL;
    if (check_args(event_type, aggregate_id, version, errp))
        return NULL;
    if (!chorus_uuid_valid(event_id) || schema_version < 1 || ts_ms < CHORUS__TS_MIN_MS ||
        ts_ms > CHORUS__TS_MAX_MS) {
        chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                          "event_id, schema_version or timestamp is invalid");
        return NULL;
    }
    if (parse_local_data(data_json, &data, errp))
        return NULL;
    if (metadata_json && parse_local_metadata(metadata_json, &meta, errp)) {
        cJSON_Delete(data);
        return NULL;
    }
    chorus_envelope_t *env =
        env_make(event_type, aggregate_id, version, data, meta, errp);
    if (env) {
        uuid_copy(env->event_id, event_id);
        env->schema_version = schema_version;
        chorus_envelope_set_timestamp_ms(env, ts_ms);
    }
    return env;
}

/* ------------------------------------------------------------- parsing */

/* Size and encoding, checked before the parser runs (which checks them
 * again inside strings, where it matters for the code). */
static chorus_err_t check_bytes(const char *buf, size_t len,
                                const chorus_envelope_limits_t *lim,
                                chorus_error_t **errp) {
    size_t off;
    int nul;
    if (len == 0)
        return chorus__error_set(errp, CHORUS_ERR_PARSE, "empty input");
    if (len > lim->max_bytes)
        return chorus__error_set(errp, CHORUS_ERR_TOO_LARGE,
                                 "message of %zu bytes exceeds the limit of %zu",
                                 len, lim->max_bytes);
    if (!chorus__utf8_valid(buf, len, &off, &nul))
        return nul ? chorus__error_set(errp, CHORUS_ERR_PARSE,
                                       "NUL byte at offset %zu", off)
                   : chorus__error_set(errp, CHORUS_ERR_BAD_UTF8,
                                       "invalid UTF-8 at offset %zu", off);
    return CHORUS_OK;
}

static chorus_err_t need(const cJSON *root, const char *name,
                         const cJSON **itemp, chorus_error_t **errp) {
    chorus_err_t rc = get_unique(root, name, "", itemp, errp);
    if (!rc && !*itemp)
        rc = chorus__error_set(errp, CHORUS_ERR_SCHEMA,
                               "missing required field '%s'", name);
    return rc;
}

/* A JSON number that is an integer in [lo, hi]; 1.0 counts, 1.5 does not. */
static int int_in_range(const cJSON *it, double lo, double hi, int64_t *out) {
    if (!cJSON_IsNumber(it))
        return 0;
    double d = it->valuedouble;
    if (!(d >= lo && d <= hi) || (double)(int64_t)d != d)
        return 0;
    *out = (int64_t)d;
    return 1;
}

static chorus_err_t bad(chorus_error_t **errp, const char *field,
                        const char *what) {
    return chorus__error_set(errp, CHORUS_ERR_SCHEMA, "field '%s' must be %s",
                             field, what);
}

/* The identity fields: event_id, event_type, aggregate_id, version. */
static chorus_err_t read_ids(const cJSON *root, chorus_envelope_t *env,
                             chorus_error_t **errp) {
    const cJSON *it = NULL;
    chorus_err_t rc;
    if ((rc = need(root, "event_id", &it, errp)))
        return rc;
    if (!cJSON_IsString(it) || !chorus_uuid_valid(it->valuestring))
        return bad(errp, "event_id", "a UUID string");
    uuid_copy(env->event_id, it->valuestring);
    if ((rc = need(root, "event_type", &it, errp)))
        return rc;
    if (!cJSON_IsString(it) || !chorus__event_type_valid(it->valuestring))
        return bad(errp, "event_type",
                   "a PascalCase string of at most 128 characters");
    if (!(env->event_type = chorus__strdup(it->valuestring)))
        return chorus__error_set(errp, CHORUS_ERR_NOMEM, "out of memory");
    if ((rc = need(root, "aggregate_id", &it, errp)))
        return rc;
    if (!cJSON_IsString(it) || !chorus_uuid_valid(it->valuestring))
        return bad(errp, "aggregate_id", "a UUID string");
    uuid_copy(env->aggregate_id, it->valuestring);
    if ((rc = need(root, "version", &it, errp)))
        return rc;
    if (!int_in_range(it, 1, (double)CHORUS__MAX_SAFE_INT, &env->version))
        return bad(errp, "version", "an integer >= 1");
    return CHORUS_OK;
}

/* timestamp, data, metadata and the optional schema_version; detaches
 * data and metadata from @p root into @p env. */
static chorus_err_t read_body(cJSON *root, chorus_envelope_t *env,
                              chorus_error_t **errp) {
    const cJSON *it = NULL;
    chorus_err_t rc;
    if ((rc = need(root, "timestamp", &it, errp)))
        return rc;
    if (!cJSON_IsString(it) || !chorus__timestamp_parse(it->valuestring, &env->ts_ms))
        return bad(errp, "timestamp",
                   "an RFC 3339 timestamp string naming an instant in the years 0001..9999 (UTC)");
    chorus_format_timestamp(env->ts_ms, env->timestamp);
    if ((rc = get_unique(root, "schema_version", "", &it, errp)))
        return rc;
    int64_t sv = 1;
    if (it && !int_in_range(it, 1, 2147483647.0, &sv))
        return bad(errp, "schema_version", "an integer >= 1");
    env->schema_version = (int)sv;
    if ((rc = need(root, "data", &it, errp)))
        return rc;
    if (!cJSON_IsObject(it))
        return bad(errp, "data", "an object");
    if ((rc = need(root, "metadata", &it, errp)))
        return rc;
    if (!cJSON_IsObject(it))
        return bad(errp, "metadata", "an object");
    if ((rc = check_metadata((cJSON *)it, errp)))
        return rc;
    env->data = cJSON_DetachItemFromObjectCaseSensitive(root, "data");
    env->metadata = cJSON_DetachItemFromObjectCaseSensitive(root, "metadata");
    return CHORUS_OK;
}

chorus_err_t chorus__envelope_parse(const char *buf, size_t len,
                                   const chorus_envelope_limits_t *lim, size_t max_decoded,
                                   chorus_envelope_t **envp, chorus_error_t **errp) {
    chorus_envelope_limits_t l = chorus_envelope_limits_default();
    if (lim && lim->max_bytes > 0)
        l.max_bytes = lim->max_bytes;
    if (lim && lim->max_depth > 0)
        l.max_depth = lim->max_depth;
    if (!envp || (!buf && len > 0))
        return chorus__error_set(errp, CHORUS_ERR_INVALID_ARG,
                                 "chorus_envelope_parse: NULL argument");
    *envp = NULL;
    cJSON *root = NULL;
    size_t decoded = 0;
    chorus__json_limits_t jl = {.max_depth = l.max_depth,
                                .max_decoded = max_decoded ? max_decoded : 16 * l.max_bytes};
    chorus_err_t rc = check_bytes(buf, len, &l, errp);
    if (rc || (rc = chorus__json_parse(buf, len, &jl, &root, &decoded, errp)))
        return rc;
    chorus_envelope_t *env = calloc(1, sizeof(*env));
    if (!env)
        rc = chorus__error_set(errp, CHORUS_ERR_NOMEM, "out of memory");
    else if (!cJSON_IsObject(root))
        rc = chorus__error_set(errp, CHORUS_ERR_SCHEMA,
                               "the envelope must be a JSON object");
    else if (!(rc = read_ids(root, env, errp)))
        rc = read_body(root, env, errp);
    cJSON_Delete(root);
    if (rc) {
        chorus_envelope_destroy(env);
        return rc;
    }
    env->decoded = decoded;
    *envp = env;
    return CHORUS_OK;
}

chorus_err_t chorus_envelope_parse(const char *buf, size_t len,
                                   const chorus_envelope_limits_t *lim,
                                   chorus_envelope_t **envp,
                                   chorus_error_t **errp) {
    return chorus__envelope_parse(buf, len, lim, 0, envp, errp);
}

size_t chorus__envelope_decoded(const chorus_envelope_t *env) {
    return env->decoded ? env->decoded : chorus__json_decoded_size(env->data);
}

/* ------------------------------------------------------------ serialize */

chorus_err_t chorus_envelope_serialize(const chorus_envelope_t *env, char **out,
                                       size_t *lenp) {
    if (!env || !out)
        return CHORUS_ERR_INVALID_ARG;
    *out = NULL;
    cJSON *o = cJSON_CreateObject();
    /* data and metadata are added as references: printed, never freed.
     * Both integer fields are below 2^53, so they print as integers. */
    int ok = o && cJSON_AddStringToObject(o, "event_id", env->event_id) &&
             cJSON_AddStringToObject(o, "event_type", env->event_type) &&
             cJSON_AddStringToObject(o, "aggregate_id", env->aggregate_id) &&
             cJSON_AddNumberToObject(o, "version", (double)env->version) &&
             cJSON_AddNumberToObject(o, "schema_version", env->schema_version) &&
             cJSON_AddStringToObject(o, "timestamp", env->timestamp) &&
             cJSON_AddItemReferenceToObject(o, "data", env->data) &&
             cJSON_AddItemReferenceToObject(o, "metadata", env->metadata);
    chorus_error_t *perr = NULL;
    char *text = ok ? chorus__json_print(o, 0, lenp, &perr) : NULL;
    chorus_err_t rc = text ? CHORUS_OK : perr ? chorus_error_code(perr) : CHORUS_ERR_NOMEM;
    chorus_error_destroy(perr);
    cJSON_Delete(o);
    *out = text;
    return rc;
}

/* ------------------------------------------------------------ accessors */

const char *chorus_envelope_event_id(const chorus_envelope_t *env) {
    return env ? env->event_id : NULL;
}

const char *chorus_envelope_event_type(const chorus_envelope_t *env) {
    return env ? env->event_type : NULL;
}

const char *chorus_envelope_aggregate_id(const chorus_envelope_t *env) {
    return env ? env->aggregate_id : NULL;
}

int64_t chorus_envelope_version(const chorus_envelope_t *env) {
    return env ? env->version : 0;
}

int chorus_envelope_schema_version(const chorus_envelope_t *env) {
    return env ? env->schema_version : 0;
}

const char *chorus_envelope_timestamp(const chorus_envelope_t *env) {
    return env ? env->timestamp : NULL;
}

int64_t chorus_envelope_timestamp_ms(const chorus_envelope_t *env) {
    return env ? env->ts_ms : 0;
}

/* NULL only when out of memory; the text lives until data changes. */
const char *chorus_envelope_data_json(const chorus_envelope_t *env) {
    if (!env)
        return NULL;
    if (!env->data_json)
        ((chorus_envelope_t *)env)->data_json = chorus__json_print(env->data, 0, NULL, NULL);
    return env->data_json;
}

const cJSON *chorus_envelope_data(const chorus_envelope_t *env) {
    return env ? env->data : NULL;
}

const cJSON *chorus__envelope_metadata(const chorus_envelope_t *env) {
    return env->metadata;
}

char *chorus__envelope_metadata_json(const chorus_envelope_t *env) {
    return chorus__json_print(env->metadata, 0, NULL, NULL);
}

static const char *meta_get(const chorus_envelope_t *env, const char *key) {
    if (!env)
        return NULL;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(env->metadata, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

const char *chorus_envelope_correlation_id(const chorus_envelope_t *env) {
    return meta_get(env, "correlation_id");
}

const char *chorus_envelope_causation_id(const chorus_envelope_t *env) {
    return meta_get(env, "causation_id");
}

const char *chorus_envelope_user_id(const chorus_envelope_t *env) {
    return meta_get(env, "user_id");
}

const char *chorus_envelope_traceparent(const chorus_envelope_t *env) {
    return meta_get(env, "traceparent");
}

int64_t chorus_envelope_deadline_ms(const chorus_envelope_t *env) {
    const char *s = meta_get(env, "deadline");
    int64_t ms;
    return s && chorus_timestamp_parse(s, &ms) == CHORUS_OK ? ms : 0;
}

/* -------------------------------------------------------------- setters */

chorus_err_t chorus_envelope_set_event_id(chorus_envelope_t *env,
                                          const char *uuid) {
    if (!env || !chorus_uuid_valid(uuid))
        return CHORUS_ERR_INVALID_ARG;
    uuid_copy(env->event_id, uuid);
    return CHORUS_OK;
}

chorus_err_t chorus_envelope_set_timestamp_ms(chorus_envelope_t *env,
                                              int64_t ms) {
    if (!env || ms < CHORUS__TS_MIN_MS || ms > CHORUS__TS_MAX_MS)
        return CHORUS_ERR_INVALID_ARG;
    env->ts_ms = ms;
    chorus_format_timestamp(ms, env->timestamp);
    return CHORUS_OK;
}

chorus_err_t chorus_envelope_set_schema_version(chorus_envelope_t *env, int v) {
    if (!env || v < 1)
        return CHORUS_ERR_INVALID_ARG;
    env->schema_version = v;
    return CHORUS_OK;
}

chorus_err_t chorus__envelope_take_data(chorus_envelope_t *env, cJSON *data) {
    if (!env || !cJSON_IsObject(data)) {
        cJSON_Delete(data);
        return CHORUS_ERR_INVALID_ARG;
    }
    cJSON_Delete(env->data);
    env->data = data;
    env->decoded = 0;
    free(env->data_json);
    env->data_json = NULL;
    return CHORUS_OK;
}

chorus_err_t chorus_envelope_set_data_json(chorus_envelope_t *env,
                                           const char *json) {
    cJSON *data = NULL;
    if (!env)
        return CHORUS_ERR_INVALID_ARG;
    chorus_err_t rc = parse_local_data(json, &data, NULL);
    return rc ? rc : chorus__envelope_take_data(env, data);
}

/* Sets (or with NULL removes) a metadata string already validated. */
static chorus_err_t meta_set(chorus_envelope_t *env, const char *key,
                             const char *value) {
    if (!value) {
        cJSON_DeleteItemFromObjectCaseSensitive(env->metadata, key);
        return CHORUS_OK;
    }
    cJSON *s = cJSON_CreateString(value);
    if (!s)
        return CHORUS_ERR_NOMEM;
    if (cJSON_GetObjectItemCaseSensitive(env->metadata, key))
        return cJSON_ReplaceItemInObjectCaseSensitive(env->metadata, key, s)
                   ? CHORUS_OK
                   : (cJSON_Delete(s), CHORUS_ERR_NOMEM);
    return cJSON_AddItemToObject(env->metadata, key, s)
               ? CHORUS_OK
               : (cJSON_Delete(s), CHORUS_ERR_NOMEM);
}

static chorus_err_t meta_set_uuid(chorus_envelope_t *env, const char *key,
                                  const char *uuid) {
    char lower[37];
    if (!env || (uuid && !chorus_uuid_valid(uuid)))
        return CHORUS_ERR_INVALID_ARG;
    if (uuid)
        uuid_copy(lower, uuid);
    return meta_set(env, key, uuid ? lower : NULL);
}

chorus_err_t chorus_envelope_set_correlation_id(chorus_envelope_t *env,
                                                const char *uuid) {
    return meta_set_uuid(env, "correlation_id", uuid);
}

chorus_err_t chorus_envelope_set_causation_id(chorus_envelope_t *env,
                                              const char *uuid) {
    return meta_set_uuid(env, "causation_id", uuid);
}

chorus_err_t chorus_envelope_set_user_id(chorus_envelope_t *env,
                                         const char *uuid) {
    return meta_set_uuid(env, "user_id", uuid);
}

chorus_err_t chorus_envelope_set_traceparent(chorus_envelope_t *env,
                                             const char *tp) {
    if (!env || (tp && !chorus__traceparent_valid(tp)))
        return CHORUS_ERR_INVALID_ARG;
    return meta_set(env, "traceparent", tp);
}

chorus_err_t chorus_envelope_set_deadline_ms(chorus_envelope_t *env, int64_t ms) {
    if (!env || (ms && (ms < CHORUS__TS_MIN_MS || ms > CHORUS__TS_MAX_MS)))
        return CHORUS_ERR_INVALID_ARG;
    if (!ms)
        return meta_set(env, "deadline", NULL);
    char ts[25];
    chorus_format_timestamp(ms, ts);
    return meta_set(env, "deadline", ts);
}
