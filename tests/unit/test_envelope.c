/*
 * test_envelope.c - the event contract: envelopes, UUIDv7, timestamps.
 *
 * Every parse goes through parse_bytes(), which copies the input into a
 * heap block of exactly its length (no terminating NUL), so ASan/valgrind
 * catch any read past the end.  Invalid envelopes are made by editing one
 * field of a known-good one (variant()), so each test fails for the one
 * reason it names; the error message must name the field.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chorus/chorus.h"
#include "chorus/chorus_json.h"
#include "envelope_int.h"

#define EID "0190f5e2-7c1a-7b3d-8e4f-1a2b3c4d5e6f"
#define AID "6f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f"
#define CID "0190f5e2-0000-7000-8000-000000000001"
#define CAU "0190f5e2-0000-7000-8000-000000000002"
#define UID "0190f5e2-0000-7000-8000-000000000003"
#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static const char base_json[] =
    "{\"event_id\":\"" EID "\",\"event_type\":\"OrderPlaced\","
    "\"aggregate_id\":\"" AID "\",\"version\":3,\"schema_version\":2,"
    "\"timestamp\":\"2026-03-14T10:00:00.123Z\","
    "\"data\":{\"order_id\":\"" AID "\",\"items\":[1,2],\"total\":4999},"
    "\"metadata\":{\"correlation_id\":\"" CID "\",\"causation_id\":\"" CAU "\","
    "\"user_id\":\"" UID "\",\"traceparent\":\"" TP "\",\"tenant\":\"acme\"}}";

static char last_msg[512];

/* Parses exactly @p len bytes from a block of that size; returns the code,
 * keeps the error message in last_msg, hands the envelope out or frees it. */
static chorus_err_t parse_lim(const void *buf, size_t len,
                              const chorus_envelope_limits_t *lim,
                              chorus_envelope_t **out) {
    char *copy = len ? malloc(len) : NULL;
    if (len)
        memcpy(copy, buf, len);
    chorus_envelope_t *env = NULL;
    chorus_error_t *err = NULL;
    chorus_err_t rc = chorus_envelope_parse(copy, len, lim, &env, &err);
    free(copy);
    snprintf(last_msg, sizeof(last_msg), "%s", err ? chorus_error_string(err) : "");
    if (rc) {
        assert_non_null(err);
        assert_int_equal(chorus_error_code(err), rc);
        assert_null(env);
    } else {
        assert_null(err);
        assert_non_null(env);
    }
    chorus_error_destroy(err);
    if (out)
        *out = env;
    else
        chorus_envelope_destroy(env);
    return rc;
}

static chorus_err_t parse_bytes(const void *buf, size_t len,
                                chorus_envelope_t **out) {
    return parse_lim(buf, len, NULL, out);
}

static chorus_err_t parse_str(const char *s, chorus_envelope_t **out) {
    return parse_bytes(s, strlen(s), out);
}

/* base_json with @p path ("version" or "metadata.user_id") replaced by the
 * JSON text @p raw, or removed when @p raw is NULL.  Caller frees. */
static char *variant(const char *path, const char *raw) {
    cJSON *root = cJSON_Parse(base_json);
    assert_non_null(root);
    cJSON *obj = root;
    const char *key = path;
    const char *dot = strchr(path, '.');
    if (dot) {
        char head[64];
        snprintf(head, sizeof(head), "%.*s", (int)(dot - path), path);
        obj = cJSON_GetObjectItemCaseSensitive(root, head);
        key = dot + 1;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    if (raw) {
        /* raw, so numbers are printed exactly as given (cJSON would print
         * 9007199254740991 as 9.00719925474099e+15) */
        assert_non_null(cJSON_AddRawToObject(obj, key, raw));
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* ------------------------------------------------------------ round trip */

static void assert_same(const chorus_envelope_t *a, const chorus_envelope_t *b) {
    assert_string_equal(chorus_envelope_event_id(a), chorus_envelope_event_id(b));
    assert_string_equal(chorus_envelope_event_type(a),
                        chorus_envelope_event_type(b));
    assert_string_equal(chorus_envelope_aggregate_id(a),
                        chorus_envelope_aggregate_id(b));
    assert_int_equal(chorus_envelope_version(a), chorus_envelope_version(b));
    assert_int_equal(chorus_envelope_schema_version(a),
                     chorus_envelope_schema_version(b));
    assert_string_equal(chorus_envelope_timestamp(a), chorus_envelope_timestamp(b));
    assert_int_equal(chorus_envelope_timestamp_ms(a),
                     chorus_envelope_timestamp_ms(b));
    assert_string_equal(chorus_envelope_data_json(a), chorus_envelope_data_json(b));
    assert_true(cJSON_Compare(chorus__envelope_metadata(a),
                              chorus__envelope_metadata(b), 1));
}

static void test_roundtrip_built(void **state) {
    (void)state;
    chorus_error_t *err = NULL;
    chorus_envelope_t *env = chorus_envelope_new(
        "OrderPlaced", AID, 7, "{\"total\":4999,\"items\":[\"a\",\"\\u00e9\"]}",
        &err);
    assert_non_null(env);
    assert_null(err);
    assert_int_equal(chorus_envelope_set_correlation_id(env, CID), CHORUS_OK);
    assert_int_equal(chorus_envelope_set_causation_id(env, CAU), CHORUS_OK);
    assert_int_equal(chorus_envelope_set_user_id(env, UID), CHORUS_OK);
    assert_int_equal(chorus_envelope_set_traceparent(env, TP), CHORUS_OK);
    assert_int_equal(chorus_envelope_set_schema_version(env, 4), CHORUS_OK);
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, 1773482400123),
                     CHORUS_OK);

    char *text = NULL;
    size_t len = 0;
    assert_int_equal(chorus_envelope_serialize(env, &text, &len), CHORUS_OK);
    assert_int_equal(len, strlen(text));
    chorus_envelope_t *back = NULL;
    assert_int_equal(parse_bytes(text, len, &back), CHORUS_OK);

    assert_same(env, back);
    assert_string_equal(chorus_envelope_event_type(back), "OrderPlaced");
    assert_string_equal(chorus_envelope_aggregate_id(back), AID);
    assert_int_equal(chorus_envelope_version(back), 7);
    assert_int_equal(chorus_envelope_schema_version(back), 4);
    assert_string_equal(chorus_envelope_timestamp(back), "2026-03-14T10:00:00.123Z");
    assert_int_equal(chorus_envelope_timestamp_ms(back), 1773482400123);
    assert_string_equal(chorus_envelope_data_json(back),
                        "{\"total\":4999,\"items\":[\"a\",\"\xc3\xa9\"]}");
    assert_string_equal(chorus_envelope_correlation_id(back), CID);
    assert_string_equal(chorus_envelope_causation_id(back), CAU);
    assert_string_equal(chorus_envelope_user_id(back), UID);
    assert_string_equal(chorus_envelope_traceparent(back), TP);

    chorus_envelope_t *copy = chorus_envelope_dup(back);
    assert_non_null(copy);
    assert_same(back, copy);

    free(text);
    chorus_envelope_destroy(env);
    chorus_envelope_destroy(back);
    chorus_envelope_destroy(copy);
}

static void test_roundtrip_parsed(void **state) {
    (void)state;
    chorus_envelope_t *env = NULL;
    assert_int_equal(parse_str(base_json, &env), CHORUS_OK);
    assert_string_equal(chorus_envelope_event_id(env), EID);
    assert_string_equal(chorus_envelope_event_type(env), "OrderPlaced");
    assert_string_equal(chorus_envelope_aggregate_id(env), AID);
    assert_int_equal(chorus_envelope_version(env), 3);
    assert_int_equal(chorus_envelope_schema_version(env), 2);
    assert_string_equal(chorus_envelope_timestamp(env), "2026-03-14T10:00:00.123Z");
    assert_string_equal(chorus_envelope_data_json(env),
                        "{\"order_id\":\"" AID "\",\"items\":[1,2],\"total\":4999}");
    assert_string_equal(chorus_envelope_traceparent(env), TP);

    char *text = NULL;
    assert_int_equal(chorus_envelope_serialize(env, &text, NULL), CHORUS_OK);
    /* every field, unknown metadata keys included, survives */
    cJSON *a = cJSON_Parse(base_json), *b = cJSON_Parse(text);
    assert_true(cJSON_Compare(a, b, 1));
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(text);
    chorus_envelope_destroy(env);
}

static void test_optional_fields_absent(void **state) {
    (void)state;
    chorus_envelope_t *env = NULL;
    char *s = variant("schema_version", NULL);
    assert_int_equal(parse_str(s, &env), CHORUS_OK);
    assert_int_equal(chorus_envelope_schema_version(env), 1);
    chorus_envelope_destroy(env);
    free(s);

    assert_int_equal(parse_str("{\"event_id\":\"" EID "\",\"event_type\":\"A\","
                               "\"aggregate_id\":\"" AID "\",\"version\":1,"
                               "\"timestamp\":\"2026-03-14T10:00:00.000Z\","
                               "\"data\":{},\"metadata\":{},\"extra\":[1]}",
                               &env),
                     CHORUS_OK);
    assert_null(chorus_envelope_correlation_id(env));
    assert_null(chorus_envelope_causation_id(env));
    assert_null(chorus_envelope_user_id(env));
    assert_null(chorus_envelope_traceparent(env));
    chorus_envelope_destroy(env);
}

static void test_normalization(void **state) {
    (void)state;
    chorus_envelope_t *env = NULL;
    char *s = variant("timestamp", "\"2026-03-14T11:30:00.5+01:30\"");
    assert_int_equal(parse_str(s, &env), CHORUS_OK);
    assert_string_equal(chorus_envelope_timestamp(env), "2026-03-14T10:00:00.500Z");
    chorus_envelope_destroy(env);
    free(s);

    s = variant("event_id", "\"0190F5E2-7C1A-7B3D-8E4F-1A2B3C4D5E6F\"");
    assert_int_equal(parse_str(s, &env), CHORUS_OK);
    assert_string_equal(chorus_envelope_event_id(env), EID);
    chorus_envelope_destroy(env);
    free(s);

    s = variant("metadata.correlation_id", "\"0190F5E2-0000-7000-8000-00000000000A\"");
    assert_int_equal(parse_str(s, &env), CHORUS_OK);
    assert_string_equal(chorus_envelope_correlation_id(env),
                        "0190f5e2-0000-7000-8000-00000000000a");
    chorus_envelope_destroy(env);
    free(s);

    /* 1.0 is an integer for JSON Schema, and so for chorus */
    s = variant("version", "1.0");
    assert_int_equal(parse_str(s, &env), CHORUS_OK);
    assert_int_equal(chorus_envelope_version(env), 1);
    chorus_envelope_destroy(env);
    free(s);

    s = variant("version", "9007199254740991");
    assert_int_equal(parse_str(s, &env), CHORUS_OK);
    assert_int_equal(chorus_envelope_version(env), INT64_C(9007199254740991));
    char *text = NULL;
    assert_int_equal(chorus_envelope_serialize(env, &text, NULL), CHORUS_OK);
    assert_non_null(strstr(text, "\"version\":9007199254740991,"));
    free(text);
    chorus_envelope_destroy(env);
    free(s);
}

/* ------------------------------------------------------ schema violations */

static const char *const required[] = {"event_id", "event_type", "aggregate_id",
                                       "version", "timestamp", "data",
                                       "metadata"};

static void test_missing_required(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(required) / sizeof(*required); i++) {
        char *s = variant(required[i], NULL);
        assert_int_equal(parse_str(s, NULL), CHORUS_ERR_SCHEMA);
        char want[96];
        snprintf(want, sizeof(want), "missing required field '%s'", required[i]);
        if (!strstr(last_msg, want))
            fail_msg("'%s' not in '%s'", want, last_msg);
        free(s);
    }
}

struct bad_case {
    const char *path, *raw;
};

static const struct bad_case bad_cases[] = {
    {"event_id", "42"},
    {"event_id", "null"},
    {"event_id", "\"not-a-uuid\""},
    {"event_id", "\"0190f5e2-7c1a-7b3d-8e4f-1a2b3c4d5e6\""},
    {"event_id", "\"0190f5e2-7c1a-7b3d-8e4f-1a2b3c4d5e6f0\""},
    {"event_id", "\"0190f5e2x7c1a-7b3d-8e4f-1a2b3c4d5e6f\""},
    {"event_id", "\"0190f5e2-7c1a-7b3d-8e4f-1a2b3c4d5e6g\""},
    {"event_type", "7"},
    {"event_type", "\"\""},
    {"event_type", "\"orderPlaced\""},
    {"event_type", "\"Order_Placed\""},
    {"event_type", "\"Order Placed\""},
    {"event_type", "\"Ord\\u00e9r\""},
    {"event_type", "[\"OrderPlaced\"]"},
    {"aggregate_id", "1"},
    {"aggregate_id", "\"xyz\""},
    {"aggregate_id", "{}"},
    {"version", "\"1\""},
    {"version", "0"},
    {"version", "-1"},
    {"version", "1.5"},
    {"version", "true"},
    {"version", "null"},
    {"version", "1e300"},
    {"version", "9007199254740992e0"},
    {"timestamp", "\"9999-12-31T23:59:59.999-23:59\""},
    {"timestamp", "\"0000-12-31T23:59:59.999Z\""},
    {"timestamp", "\"10000-01-01T00:00:00.000Z\""},
    {"schema_version", "0"},
    {"schema_version", "\"1\""},
    {"schema_version", "1.5"},
    {"schema_version", "null"},
    {"schema_version", "2147483648"},
    {"timestamp", "1773482400000"},
    {"timestamp", "\"yesterday\""},
    {"timestamp", "\"2026-13-01T00:00:00.000Z\""},
    {"timestamp", "\"2026-02-30T00:00:00.000Z\""},
    {"timestamp", "\"2026-03-14T10:00:00.000\""},
    {"timestamp", "\"2026-03-14 10:00:00.000Z\""},
    {"data", "[]"},
    {"data", "\"{}\""},
    {"data", "null"},
    {"data", "1"},
    {"metadata", "[]"},
    {"metadata", "\"x\""},
    {"metadata", "5"},
    {"metadata", "null"},
    {"metadata.correlation_id", "5"},
    {"metadata.correlation_id", "\"nope\""},
    {"metadata.correlation_id", "null"},
    {"metadata.causation_id", "\"nope\""},
    {"metadata.user_id", "true"},
    {"metadata.traceparent", "\"00-abc\""},
    {"metadata.traceparent", "5"},
    {"metadata.traceparent",
     "\"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\""},
    {"metadata.traceparent",
     "\"00-00000000000000000000000000000000-00f067aa0ba902b7-01\""},
    {"metadata.traceparent",
     "\"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\""},
};

static void test_wrong_types(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(*bad_cases); i++) {
        const struct bad_case *c = &bad_cases[i];
        char *s = variant(c->path, c->raw);
        chorus_err_t rc = parse_str(s, NULL);
        if (rc != CHORUS_ERR_SCHEMA)
            fail_msg("%s=%s: got %s (%s)", c->path, c->raw, chorus_err_name(rc),
                     last_msg);
        char want[96];
        snprintf(want, sizeof(want), "field '%s' must be", c->path);
        if (!strstr(last_msg, want))
            fail_msg("%s=%s: '%s' not in '%s'", c->path, c->raw, want, last_msg);
        free(s);
    }
    /* the message says what is expected, too */
    char *s = variant("version", "0");
    parse_str(s, NULL);
    assert_string_equal(last_msg, "field 'version' must be an integer >= 1");
    free(s);
}

static void test_duplicate_field(void **state) {
    (void)state;
    char buf[2048];
    /* a second "version" appended after the data: readers that take the last
     * one would see 999, chorus would see 3 -- so it is refused */
    snprintf(buf, sizeof(buf), "%.*s,\"version\":999}",
             (int)strlen(base_json) - 1, base_json);
    assert_int_equal(parse_str(buf, NULL), CHORUS_ERR_NOT_IJSON);
    assert_non_null(strstr(last_msg, "duplicate member name \"version\""));

    snprintf(buf, sizeof(buf), "%.*s,\"correlation_id\":\"" CID "\"}}",
             (int)strlen(base_json) - 2, base_json);
    assert_int_equal(parse_str(buf, NULL), CHORUS_ERR_NOT_IJSON);
    assert_non_null(strstr(last_msg, "metadata: duplicate member name \"correlation_id\""));

    /* inside data, at any depth: the inventory defect (cJSON read qty 1,
     * PostgreSQL's jsonb stored -5) */
    char *v = variant("data", "{\"items\":[{\"sku\":\"SKU-B\",\"qty\":1,\"qty\":-5}]}");
    assert_int_equal(parse_str(v, NULL), CHORUS_ERR_NOT_IJSON);
    assert_non_null(strstr(last_msg, "data.items[0]: duplicate member name \"qty\""));
    free(v);
    /* the same name spelled with an escape is the same name */
    v = variant("data", "{\"qty\":1,\"q\\u0074y\":2}");
    assert_int_equal(parse_str(v, NULL), CHORUS_ERR_NOT_IJSON);
    free(v);
    /* names differing in case are different names */
    v = variant("data", "{\"qty\":1,\"QTY\":2}");
    assert_int_equal(parse_str(v, NULL), CHORUS_OK);
    free(v);
}

static void test_not_an_object(void **state) {
    (void)state;
    const char *cases[] = {"[]", "42", "\"x\"", "null", "[{\"event_id\":1}]"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        assert_int_equal(parse_str(cases[i], NULL), CHORUS_ERR_SCHEMA);
        assert_non_null(strstr(last_msg, "must be a JSON object"));
    }
}

/* ---------------------------------------------------------- hostile bytes */

static void test_too_large(void **state) {
    (void)state;
    size_t n = strlen(base_json);
    chorus_envelope_limits_t lim = {n, 32};
    assert_int_equal(parse_lim(base_json, n, &lim, NULL), CHORUS_OK);
    lim.max_bytes = n - 1;
    assert_int_equal(parse_lim(base_json, n, &lim, NULL), CHORUS_ERR_TOO_LARGE);

    /* the default limit, 1 MiB, with invalid content: size is checked first */
    size_t big = ((size_t)1 << 20) + 1;
    char *huge = malloc(big);
    memset(huge, 0xFF, big);
    assert_int_equal(parse_bytes(huge, big, NULL), CHORUS_ERR_TOO_LARGE);
    free(huge);
    chorus_envelope_limits_t d = chorus_envelope_limits_default();
    assert_int_equal(d.max_bytes, (size_t)1 << 20);
    assert_int_equal(d.max_depth, 32);
}

/* base_json's data replaced by @p levels nested arrays (plus the envelope's
 * own level: total depth levels + 1). */
static char *nested(int levels) {
    size_t cap = (size_t)levels * 2 + 1024;
    char *s = malloc(cap), *p = s;
    p += sprintf(p, "{\"event_id\":\"" EID "\",\"event_type\":\"A\","
                    "\"aggregate_id\":\"" AID "\",\"version\":1,"
                    "\"timestamp\":\"2026-03-14T10:00:00.000Z\","
                    "\"metadata\":{},\"data\":{\"x\":");
    for (int i = 0; i < levels - 1; i++)
        *p++ = '[';
    for (int i = 0; i < levels - 1; i++)
        *p++ = ']';
    strcpy(p, "}}");
    return s;
}

static void test_too_deep(void **state) {
    (void)state;
    char *s = nested(31); /* depth 32: the limit */
    assert_int_equal(parse_str(s, NULL), CHORUS_OK);
    free(s);
    s = nested(32);
    assert_int_equal(parse_str(s, NULL), CHORUS_ERR_TOO_DEEP);
    free(s);
    /* far beyond cJSON's own limit: refused before any recursion */
    s = nested(500000);
    assert_int_equal(parse_str(s, NULL), CHORUS_ERR_TOO_DEEP);
    free(s);
    size_t n = 300000;
    char *opens = malloc(n);
    memset(opens, '[', n);
    assert_int_equal(parse_bytes(opens, n, NULL), CHORUS_ERR_TOO_DEEP);
    free(opens);

    chorus_envelope_limits_t lim = {1 << 20, 2};
    assert_int_equal(parse_lim(base_json, strlen(base_json), &lim, NULL),
                     CHORUS_ERR_TOO_DEEP);
    lim.max_depth = 3;
    assert_int_equal(parse_lim(base_json, strlen(base_json), &lim, NULL),
                     CHORUS_OK);
}

static void test_depth_scan_skips_strings(void **state) {
    (void)state;
    char body[600];
    char brackets[201];
    memset(brackets, '[', 200);
    brackets[200] = '\0';
    /* brackets inside strings, and an escaped quote that must not end one */
    snprintf(body, sizeof(body), "{\"s\":\"%s\",\"t\":\"\\\"{{{{\\\\\",\"u\":\"]]]\"}",
             brackets);
    char *s = variant("data", body);
    assert_int_equal(parse_str(s, NULL), CHORUS_OK);
    free(s);
}

static void test_bad_utf8(void **state) {
    (void)state;
    static const struct {
        const char *bytes;
        const char *why;
    } cases[] = {
        {"\xc0\x80", "overlong NUL"},
        {"\xc1\xbf", "overlong 2-byte"},
        {"\xe0\x80\xaf", "overlong 3-byte"},
        {"\xf0\x80\x80\xaf", "overlong 4-byte"},
        {"\xed\xa0\x80", "high surrogate"},
        {"\xed\xbf\xbf", "low surrogate"},
        {"\xe2\x82", "truncated 3-byte"},
        {"\xf0\x9f\x98", "truncated 4-byte"},
        {"\xc3", "truncated 2-byte"},
        {"\x80", "lone continuation"},
        {"\xf4\x90\x80\x80", "above U+10FFFF"},
        {"\xf5\x80\x80\x80", "F5 lead"},
        {"\xf8\x88\x80\x80\x80", "5-byte form"},
        {"\xfe", "FE"},
        {"\xff", "FF"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        char raw[64];
        snprintf(raw, sizeof(raw), "{\"k\":\"a%sb\"}", cases[i].bytes);
        /* variant() would need cJSON to accept it; splice by hand */
        char buf[2048];
        const char *at = strstr(base_json, "\"data\":") + 7;
        const char *end = strstr(at, ",\"metadata\"");
        snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - base_json), base_json,
                 raw, end);
        if (parse_str(buf, NULL) != CHORUS_ERR_BAD_UTF8)
            fail_msg("%s accepted", cases[i].why);
        assert_non_null(strstr(last_msg, "UTF-8"));
    }
    /* truncated sequence as the very last byte of the buffer */
    char tail[] = "{\"a\":1}\xe2";
    assert_int_equal(parse_bytes(tail, sizeof(tail) - 1, NULL), CHORUS_ERR_BAD_UTF8);

    /* the largest code point of each length is fine */
    char *s = variant("data", "{\"k\":\"\x7f\xdf\xbf\xef\xbf\xbd\xf4\x8f\xbf\xbd"
                              "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}");
    assert_int_equal(parse_str(s, NULL), CHORUS_OK);
    free(s);
    /* noncharacters (U+FFFF, U+10FFFF, U+FDD0) are not I-JSON */
    const char *nonchars[] = {"\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", "\xef\xb7\x90"};
    for (size_t i = 0; i < sizeof(nonchars) / sizeof(*nonchars); i++) {
        char data[64];
        snprintf(data, sizeof(data), "{\"k\":\"a%sb\"}", nonchars[i]);
        s = variant("data", data);
        assert_int_equal(parse_str(s, NULL), CHORUS_ERR_NOT_IJSON);
        assert_non_null(strstr(last_msg, "noncharacter"));
        free(s);
    }
}

static void test_trailing_garbage(void **state) {
    (void)state;
    char buf[2048];
    const char *tails[] = {"x", "{}", " 1", "]", "\n,"};
    for (size_t i = 0; i < sizeof(tails) / sizeof(*tails); i++) {
        snprintf(buf, sizeof(buf), "%s%s", base_json, tails[i]);
        assert_int_equal(parse_str(buf, NULL), CHORUS_ERR_PARSE);
        assert_non_null(strstr(last_msg, "trailing"));
    }
    snprintf(buf, sizeof(buf), " \t\r\n%s \t\r\n", base_json);
    assert_int_equal(parse_str(buf, NULL), CHORUS_OK);
}

static void test_empty_and_malformed(void **state) {
    (void)state;
    assert_int_equal(parse_bytes("", 0, NULL), CHORUS_ERR_PARSE);
    assert_non_null(strstr(last_msg, "empty"));
    chorus_envelope_t *env = (chorus_envelope_t *)1;
    chorus_error_t *err = NULL;
    assert_int_equal(chorus_envelope_parse(NULL, 0, NULL, &env, &err),
                     CHORUS_ERR_PARSE);
    assert_null(env);
    chorus_error_destroy(err);
    assert_int_equal(chorus_envelope_parse(NULL, 5, NULL, &env, NULL),
                     CHORUS_ERR_INVALID_ARG);

    const char *bad[] = {"   ", "{", "{\"a\":}", "{\"a\" 1}", "{'a':1}",
                         "{\"a\":\"unterminated}", "nul", "{\"a\":01}", "{\"a\":+1}",
                         "{\"a\":.5}", "{\"a\":1.}", "{\"a\":1e}", "{\"a\":NaN}",
                         "{\"a\":[1,]}", "{\"a\":1,}", "{\"a\":\"\\x41\"}",
                         "{\"a\":\"tab\there\"}", "/**/{}", "{\"a\":tru}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (parse_str(bad[i], NULL) != CHORUS_ERR_PARSE)
            fail_msg("'%s' not rejected as PARSE (%s)", bad[i], last_msg);
    /* every prefix of a valid envelope is malformed, and read within bounds */
    for (size_t n = 1; n < strlen(base_json); n++)
        assert_int_not_equal(parse_bytes(base_json, n, NULL), CHORUS_OK);
}

static void test_nul_bytes(void **state) {
    (void)state;
    size_t n = strlen(base_json);
    char *buf = malloc(n + 1);
    memcpy(buf, base_json, n + 1);
    assert_int_equal(parse_bytes(buf, n + 1, NULL), CHORUS_ERR_PARSE);
    assert_non_null(strstr(last_msg, "NUL"));
    char *p = strstr(buf, "acme");
    *p = '\0';
    assert_int_equal(parse_bytes(buf, n, NULL), CHORUS_ERR_PARSE);
    assert_non_null(strstr(last_msg, "NUL"));
    free(buf);
}

/* -------------------------------------------------------- building */

static void expect_new_fails(const char *type, const char *agg, int64_t v,
                             const char *data, chorus_err_t code,
                             const char *field) {
    chorus_error_t *err = NULL;
    assert_null(chorus_envelope_new(type, agg, v, data, &err));
    assert_non_null(err);
    assert_int_equal(chorus_error_code(err), code);
    if (!strstr(chorus_error_string(err), field))
        fail_msg("'%s' not in '%s'", field, chorus_error_string(err));
    chorus_error_destroy(err);
}

static void test_new_validates(void **state) {
    (void)state;
    const int INV = CHORUS_ERR_INVALID_ARG;
    expect_new_fails(NULL, AID, 1, NULL, INV, "'event_type'");
    expect_new_fails("", AID, 1, NULL, INV, "'event_type'");
    expect_new_fails("orderPlaced", AID, 1, NULL, INV, "'event_type'");
    expect_new_fails("Order-Placed", AID, 1, NULL, INV, "'event_type'");
    expect_new_fails("OrderPlaced", "x", 1, NULL, INV, "'aggregate_id'");
    expect_new_fails("OrderPlaced", NULL, 1, NULL, INV, "'aggregate_id'");
    expect_new_fails("OrderPlaced", AID, 0, NULL, INV, "'version'");
    expect_new_fails("OrderPlaced", AID, -5, NULL, INV, "'version'");
    expect_new_fails("OrderPlaced", AID, 1, "[1]", INV, "'data'");
    expect_new_fails("OrderPlaced", AID, 1, "{bad", CHORUS_ERR_PARSE, "'data'");
    expect_new_fails("OrderPlaced", AID, 1, "{} x", CHORUS_ERR_PARSE, "'data'");
    expect_new_fails("OrderPlaced", AID, 1, "{\"a\":\"\xff\"}",
                     CHORUS_ERR_BAD_UTF8, "'data'");
    char deep[100] = "{\"a\":";
    for (int i = 0; i < 31; i++)
        strcat(deep, "[");
    for (int i = 0; i < 31; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    expect_new_fails("OrderPlaced", AID, 1, deep, CHORUS_ERR_TOO_DEEP, "'data'");
    chorus_envelope_new("X", "x", 1, NULL, NULL); /* errp may be NULL */

    char longest[130];
    memset(longest, 'A', 128);
    longest[128] = '\0';
    chorus_envelope_t *env = chorus_envelope_new(longest, AID, 1, NULL, NULL);
    assert_non_null(env);
    assert_string_equal(chorus_envelope_data_json(env), "{}");
    assert_int_equal(chorus_envelope_schema_version(env), 1);
    assert_true(chorus_uuid_valid(chorus_envelope_event_id(env)));
    int64_t now = chorus_now_ms();
    assert_true(now - chorus_envelope_timestamp_ms(env) < 5000);
    chorus_envelope_destroy(env);
    longest[128] = 'A';
    longest[129] = '\0';
    expect_new_fails(longest, AID, 1, NULL, INV, "'event_type'");
}

static void test_new_json(void **state) {
    (void)state;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddNumberToObject(d, "total", 12);
    chorus_envelope_t *env = chorus_envelope_new_json("PaymentSucceeded", AID, 2,
                                                      d, NULL);
    assert_non_null(env);
    assert_ptr_equal(chorus_envelope_data(env), d);
    assert_string_equal(chorus_envelope_data_json(env), "{\"total\":12}");
    chorus_envelope_destroy(env);

    chorus_error_t *err = NULL;
    assert_null(chorus_envelope_new_json("PaymentSucceeded", AID, 2,
                                         cJSON_CreateArray(), &err));
    assert_int_equal(chorus_error_code(err), CHORUS_ERR_INVALID_ARG);
    chorus_error_destroy(err);
    /* taken even when another argument is wrong (valgrind/ASan: no leak) */
    assert_null(chorus_envelope_new_json("bad", AID, 2, cJSON_CreateObject(), NULL));
    env = chorus_envelope_new_json("A", AID, 1, NULL, NULL);
    assert_string_equal(chorus_envelope_data_json(env), "{}");
    chorus_envelope_destroy(env);
}

static void test_setters(void **state) {
    (void)state;
    chorus_envelope_t *env = chorus_envelope_new("A", AID, 1, "{\"a\":1}", NULL);
    assert_string_equal(chorus_envelope_data_json(env), "{\"a\":1}");
    assert_int_equal(chorus_envelope_set_data_json(env, "{\"b\":2}"), CHORUS_OK);
    assert_string_equal(chorus_envelope_data_json(env), "{\"b\":2}");
    assert_int_equal(chorus_envelope_set_data_json(env, "[2]"),
                     CHORUS_ERR_INVALID_ARG);
    assert_int_equal(chorus_envelope_set_data_json(env, "{"), CHORUS_ERR_PARSE);
    assert_string_equal(chorus_envelope_data_json(env), "{\"b\":2}");

    assert_int_equal(chorus_envelope_set_event_id(env, "nope"),
                     CHORUS_ERR_INVALID_ARG);
    assert_int_equal(chorus_envelope_set_event_id(env, EID), CHORUS_OK);
    assert_string_equal(chorus_envelope_event_id(env), EID);

    assert_int_equal(chorus_envelope_set_correlation_id(env, "nope"),
                     CHORUS_ERR_INVALID_ARG);
    assert_null(chorus_envelope_correlation_id(env));
    assert_int_equal(chorus_envelope_set_correlation_id(env, CID), CHORUS_OK);
    assert_int_equal(chorus_envelope_set_correlation_id(env, CAU), CHORUS_OK);
    assert_string_equal(chorus_envelope_correlation_id(env), CAU);
    assert_int_equal(chorus_envelope_set_correlation_id(env, NULL), CHORUS_OK);
    assert_null(chorus_envelope_correlation_id(env));
    assert_int_equal(chorus_envelope_set_traceparent(env, "00-zz"),
                     CHORUS_ERR_INVALID_ARG);

    assert_int_equal(chorus_envelope_set_schema_version(env, 0),
                     CHORUS_ERR_INVALID_ARG);
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, -1), CHORUS_OK);
    assert_string_equal(chorus_envelope_timestamp(env), "1969-12-31T23:59:59.999Z");
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, INT64_C(-62135596800000)), CHORUS_OK);
    assert_string_equal(chorus_envelope_timestamp(env), "0001-01-01T00:00:00.000Z");
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, INT64_C(-62135596800001)),
                     CHORUS_ERR_INVALID_ARG);
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, INT64_C(253402300799999)), CHORUS_OK);
    assert_string_equal(chorus_envelope_timestamp(env), "9999-12-31T23:59:59.999Z");
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, INT64_C(253402300800000)),
                     CHORUS_ERR_INVALID_ARG);
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, INT64_MAX),
                     CHORUS_ERR_INVALID_ARG);
    assert_int_equal(chorus_envelope_set_timestamp_ms(env, 0), CHORUS_OK);
    assert_string_equal(chorus_envelope_timestamp(env), "1970-01-01T00:00:00.000Z");

    assert_int_equal(chorus__envelope_take_data(env, cJSON_CreateString("x")),
                     CHORUS_ERR_INVALID_ARG);
    cJSON *d = cJSON_CreateObject();
    cJSON_AddTrueToObject(d, "up");
    assert_int_equal(chorus__envelope_take_data(env, d), CHORUS_OK);
    assert_string_equal(chorus_envelope_data_json(env), "{\"up\":true}");
    chorus_envelope_destroy(env);
    chorus_envelope_destroy(NULL);
    assert_null(chorus_envelope_dup(NULL));
}

static void test_from_parts(void **state) {
    (void)state;
    chorus_error_t *err = NULL;
    chorus_envelope_t *env = chorus__envelope_from_parts(
        EID, "OrderPlaced", AID, 3, 2, 1773482400123, "{\"total\":1}",
        "{\"correlation_id\":\"" CID "\",\"x\":1}", &err);
    assert_non_null(env);
    chorus_envelope_t *parsed = NULL;
    char *meta = chorus__envelope_metadata_json(env);
    assert_string_equal(meta, "{\"correlation_id\":\"" CID "\",\"x\":1}");
    free(meta);
    assert_int_equal(parse_str(base_json, &parsed), CHORUS_OK);
    assert_string_equal(chorus_envelope_event_id(env), EID);
    assert_string_equal(chorus_envelope_timestamp(env),
                        chorus_envelope_timestamp(parsed));
    assert_int_equal(chorus_envelope_schema_version(env), 2);
    chorus_envelope_destroy(parsed);
    chorus_envelope_destroy(env);

    assert_null(chorus__envelope_from_parts(EID, "A", AID, 1, 1, 0, NULL,
                                            "{\"user_id\":\"bad\"}", &err));
    assert_non_null(strstr(chorus_error_string(err), "'metadata.user_id'"));
    chorus_error_destroy(err);
    assert_null(chorus__envelope_from_parts(EID, "A", AID, 1, 1, 0, NULL, "[]",
                                            &err));
    chorus_error_destroy(err);
    assert_null(chorus__envelope_from_parts("x", "A", AID, 1, 1, 0, NULL, NULL,
                                            NULL));
}

/* ---------------------------------------------------------------- UUIDv7 */

static int hexval(char c) {
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static void test_uuid_v7_layout(void **state) {
    (void)state;
    for (int i = 0; i < 200; i++) {
        char u[37];
        int64_t before = chorus_now_ms();
        chorus_uuid_v7(u);
        assert_int_equal(strlen(u), 36);
        assert_true(chorus_uuid_valid(u));
        assert_int_equal(u[14], '7');                 /* version */
        assert_int_equal(hexval(u[19]) & 0xC, 0x8);   /* variant 10xx */
        for (int k = 0; k < 36; k++)                  /* lowercase */
            assert_false(u[k] >= 'A' && u[k] <= 'F');
        char ts[13];
        memcpy(ts, u, 8);
        memcpy(ts + 8, u + 9, 4);
        ts[12] = '\0';
        int64_t ms = strtoll(ts, NULL, 16);
        assert_true(ms >= before && ms - before < 2000);
    }
}

static void test_uuid_v7_monotonic(void **state) {
    (void)state;
    char prev[37], cur[37];
    chorus_uuid_v7(prev);
    for (int i = 0; i < 1000; i++) {
        chorus_uuid_v7(cur);
        assert_true(chorus_uuid_valid(cur));
        if (strcmp(prev, cur) >= 0)
            fail_msg("not increasing: %s then %s", prev, cur);
        memcpy(prev, cur, sizeof(cur));
    }
    /* many more than fit one millisecond's counter: still increasing */
    for (int i = 0; i < 20000; i++) {
        chorus_uuid_v7(cur);
        if (strcmp(prev, cur) >= 0)
            fail_msg("not increasing: %s then %s", prev, cur);
        memcpy(prev, cur, sizeof(cur));
    }
}

#define THREADS 4
#define PER_THREAD 2000
static char thread_ids[THREADS][PER_THREAD][37];

static void *uuid_worker(void *arg) {
    char (*ids)[37] = arg;
    for (int i = 0; i < PER_THREAD; i++)
        chorus_uuid_v7(ids[i]);
    return NULL;
}

static int cmp_id(const void *a, const void *b) { return strcmp(a, b); }

static void test_uuid_v7_threads(void **state) {
    (void)state;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, uuid_worker, thread_ids[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        for (int k = 1; k < PER_THREAD; k++)
            assert_true(strcmp(thread_ids[i][k - 1], thread_ids[i][k]) < 0);
    qsort(thread_ids, THREADS * PER_THREAD, 37, cmp_id);
    char *all = &thread_ids[0][0][0];
    for (int i = 1; i < THREADS * PER_THREAD; i++)
        assert_true(strcmp(all + (i - 1) * 37, all + i * 37) < 0); /* unique */
}

static void test_uuid_valid(void **state) {
    (void)state;
    assert_true(chorus_uuid_valid(EID));
    assert_true(chorus_uuid_valid("00000000-0000-0000-0000-000000000000"));
    assert_true(chorus_uuid_valid("6F1E2D3C-4B5A-4968-8776-5A4B3C2D1E0F"));
    assert_false(chorus_uuid_valid(NULL));
    assert_false(chorus_uuid_valid(""));
    assert_false(chorus_uuid_valid("6f1e2d3c4b5a496887765a4b3c2d1e0f"));
    assert_false(chorus_uuid_valid("{6f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f}"));
    assert_false(chorus_uuid_valid("6f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0"));
    assert_false(chorus_uuid_valid("6f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f "));
    assert_false(chorus_uuid_valid("6f1e2d3c-4b5a-4968-8776_5a4b3c2d1e0f"));
    assert_false(chorus_uuid_valid("6f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0g"));
}

/* ------------------------------------------------------------- timestamps */

static void test_timestamp_roundtrip(void **state) {
    (void)state;
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {951782400000, "2000-02-29T00:00:00.000Z"},
        {1709251199999, "2024-02-29T23:59:59.999Z"},
        {1773482400123, "2026-03-14T10:00:00.123Z"},
        {4102444800000, "2100-01-01T00:00:00.000Z"},
        {253402300799999, "9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        char out[25];
        chorus_format_timestamp(cases[i].ms, out);
        assert_string_equal(out, cases[i].text);
        assert_int_equal(chorus_parse_timestamp(out), cases[i].ms);
    }
    int64_t now = chorus_now_ms();
    char out[25];
    chorus_format_timestamp(now, out);
    assert_int_equal(chorus_parse_timestamp(out), now);
    for (int64_t ms = 0; ms < INT64_C(253402300799999); ms += INT64_C(86400000) * 397 + 12345) {
        chorus_format_timestamp(ms, out);
        assert_int_equal(chorus_parse_timestamp(out), ms);
    }
}

static void test_timestamp_offsets(void **state) {
    (void)state;
    const int64_t t = 1773482400000; /* 2026-03-14T10:00:00Z */
    assert_int_equal(chorus_parse_timestamp("2026-03-14T10:00:00Z"), t);
    assert_int_equal(chorus_parse_timestamp("2026-03-14t10:00:00z"), t);
    assert_int_equal(chorus_parse_timestamp("2026-03-14T12:00:00+02:00"), t);
    assert_int_equal(chorus_parse_timestamp("2026-03-14T04:30:00-05:30"), t);
    assert_int_equal(chorus_parse_timestamp("2026-03-14T10:00:00-00:00"), t);
    assert_int_equal(chorus_parse_timestamp("2026-03-15T09:59:00+23:59"), t);
    assert_int_equal(chorus_parse_timestamp("2026-03-13T23:00:00.000-11:00"), t);
    assert_int_equal(chorus_parse_timestamp("2026-03-14T10:00:00.1Z"), t + 100);
    assert_int_equal(chorus_parse_timestamp("2026-03-14T10:00:00.12Z"), t + 120);
    assert_int_equal(chorus_parse_timestamp("2026-03-14T10:00:00.123456789Z"),
                     t + 123);
    assert_int_equal(chorus_parse_timestamp("2026-03-14T10:00:00.9999+00:00"),
                     t + 999);
}

static void test_timestamp_invalid(void **state) {
    (void)state;
    const char *bad[] = {
        "", "2026", "2026-03-14", "2026-03-14T10:00Z",
        "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z",
        "2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z", "2026-01-32T00:00:00Z",
        "2026-03-14T24:00:00Z", "2026-03-14T10:60:00Z", "2026-03-14T10:00:60Z",
        "2026-03-14T10:00:00", "2026-03-14T10:00:00.Z", "2026-03-14T10:00:00.000",
        "2026-03-14 10:00:00Z", "2026-3-14T10:00:00Z", "26-03-14T10:00:00Z",
        "2026-03-14T10:00:00+2:00", "2026-03-14T10:00:00+24:00",
        "2026-03-14T10:00:00+02:60", "2026-03-14T10:00:00+0200",
        "2026-03-14T10:00:00ZZ", "2026-03-14T10:00:00Z ", " 2026-03-14T10:00:00Z",
        "2026-03-14T10:00:00.000Zjunk", "+2026-03-14T10:00:00Z",
        "1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00+00:01",
        "2026/03/14T10:00:00Z", "2026-03-14T1a:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (chorus_parse_timestamp(bad[i]) != -1)
            fail_msg("accepted '%s'", bad[i]);
    assert_int_equal(chorus_parse_timestamp(NULL), -1);
    assert_int_equal(chorus_parse_timestamp("2024-02-29T00:00:00Z"), 1709164800000);
    assert_int_equal(chorus_parse_timestamp("2000-02-29T00:00:00Z"), 951782400000);
}

/* ------------------------------------------------- the committed schema */

static cJSON *load_schema(void) {
    const char *root = getenv("CHORUS_SOURCE_ROOT");
    if (!root)
        fail_msg("CHORUS_SOURCE_ROOT is not set");
    char path[4096];
    snprintf(path, sizeof(path), "%s/lib/schema/envelope.schema.json", root);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    static char text[65536];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    cJSON *schema = cJSON_Parse(text);
    assert_non_null(schema);
    return schema;
}

/* Matches @p s against a JSON Schema (ECMA-262) pattern, after translating
 * the one construct POSIX ERE lacks here, \d. */
static int pattern_matches(const char *pattern, const char *s) {
    char ere[512], *o = ere;
    for (const char *p = pattern; *p && o < ere + sizeof(ere) - 8; p++) {
        if (p[0] == '\\' && p[1] == 'd') {
            o += sprintf(o, "[0-9]");
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    regex_t re;
    assert_int_equal(regcomp(&re, ere, REG_EXTENDED | REG_NOSUB), 0);
    int ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

static const char *prop_pattern(const cJSON *props, const char *name) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(props, name);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(p, "$ref");
    return ref ? NULL : cJSON_GetStringValue(
                            cJSON_GetObjectItemCaseSensitive(p, "pattern"));
}

static void check_against_schema(const cJSON *schema, const char *text) {
    cJSON *env = cJSON_Parse(text);
    assert_non_null(env);
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(schema, "required");
    assert_true(cJSON_GetArraySize(req) >= 7);
    const cJSON *k;
    cJSON_ArrayForEach(k, req) {
        if (!cJSON_HasObjectItem(env, k->valuestring))
            fail_msg("'%s' (required by the schema) missing in %s",
                     k->valuestring, text);
    }
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
    const char *uuid_pat = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(schema, "$defs"), "uuid"),
        "pattern"));
    assert_non_null(uuid_pat);
    const char *ts = cJSON_GetStringValue(cJSON_GetObjectItem(env, "timestamp"));
    assert_true(pattern_matches(prop_pattern(props, "timestamp"), ts));
    assert_true(pattern_matches(prop_pattern(props, "event_type"),
                                cJSON_GetStringValue(cJSON_GetObjectItem(env, "event_type"))));
    assert_true(pattern_matches(uuid_pat,
                                cJSON_GetStringValue(cJSON_GetObjectItem(env, "event_id"))));
    assert_true(pattern_matches(uuid_pat,
                                cJSON_GetStringValue(cJSON_GetObjectItem(env, "aggregate_id"))));
    const cJSON *v = cJSON_GetObjectItem(env, "version");
    assert_true(cJSON_IsNumber(v) && v->valuedouble >= 1);
    const cJSON *sv = cJSON_GetObjectItem(env, "schema_version");
    assert_true(cJSON_IsNumber(sv) && sv->valuedouble >= 1);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(env, "data")));
    const cJSON *meta = cJSON_GetObjectItem(env, "metadata");
    assert_true(cJSON_IsObject(meta));
    const cJSON *mprops = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(props, "metadata"), "properties");
    const char *tp = cJSON_GetStringValue(cJSON_GetObjectItem(meta, "traceparent"));
    if (tp)
        assert_true(pattern_matches(prop_pattern(mprops, "traceparent"), tp));
    const char *ids[] = {"correlation_id", "causation_id", "user_id"};
    for (int i = 0; i < 3; i++) {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(meta, ids[i]));
        if (id)
            assert_true(pattern_matches(uuid_pat, id));
    }
    cJSON_Delete(env);
}

static void test_schema_matches_output(void **state) {
    (void)state;
    cJSON *schema = load_schema();
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(schema, "$schema")),
                        "https://json-schema.org/draft/2020-12/schema");
    /* the schema requires exactly what the parser requires */
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(schema, "required");
    assert_int_equal(cJSON_GetArraySize(req), sizeof(required) / sizeof(*required));
    for (size_t i = 0; i < sizeof(required) / sizeof(*required); i++)
        assert_string_equal(cJSON_GetArrayItem(req, (int)i)->valuestring, required[i]);
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
    const char *tsp = prop_pattern(props, "timestamp");
    assert_false(pattern_matches(tsp, "2026-03-14T10:00:00Z"));
    assert_false(pattern_matches(tsp, "2026-03-14T10:00:00.000+00:00"));

    /* envelopes as built, as set up by a handler, and as re-emitted */
    chorus_envelope_t *envs[3];
    envs[0] = chorus_envelope_new("OrderPlaced", AID, 1, NULL, NULL);
    envs[1] = chorus_envelope_new("PaymentSucceeded", AID, 12, "{\"x\":[1]}", NULL);
    chorus_envelope_set_correlation_id(envs[1], CID);
    chorus_envelope_set_causation_id(envs[1], CAU);
    chorus_envelope_set_user_id(envs[1], UID);
    chorus_envelope_set_traceparent(envs[1], TP);
    chorus_envelope_set_timestamp_ms(envs[1], 0);
    char *s = variant("timestamp", "\"2026-03-14T11:30:00.5+01:30\"");
    assert_int_equal(parse_str(s, &envs[2]), CHORUS_OK);
    free(s);
    for (int i = 0; i < 3; i++) {
        char *text = NULL;
        assert_int_equal(chorus_envelope_serialize(envs[i], &text, NULL), CHORUS_OK);
        check_against_schema(schema, text);
        free(text);
        chorus_envelope_destroy(envs[i]);
    }
    cJSON_Delete(schema);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_built),
        cmocka_unit_test(test_roundtrip_parsed),
        cmocka_unit_test(test_optional_fields_absent),
        cmocka_unit_test(test_normalization),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_duplicate_field),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_too_deep),
        cmocka_unit_test(test_depth_scan_skips_strings),
        cmocka_unit_test(test_bad_utf8),
        cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_empty_and_malformed),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_new_validates),
        cmocka_unit_test(test_new_json),
        cmocka_unit_test(test_setters),
        cmocka_unit_test(test_from_parts),
        cmocka_unit_test(test_uuid_v7_layout),
        cmocka_unit_test(test_uuid_v7_monotonic),
        cmocka_unit_test(test_uuid_v7_threads),
        cmocka_unit_test(test_uuid_valid),
        cmocka_unit_test(test_timestamp_roundtrip),
        cmocka_unit_test(test_timestamp_offsets),
        cmocka_unit_test(test_timestamp_invalid),
        cmocka_unit_test(test_schema_matches_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
