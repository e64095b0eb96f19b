/*
 * fuzz_envelope.c - the envelope decoder, as a consumer runs it on every
 * delivery: chorus__envelope_parse() with the default limits, then the
 * participant's upcasters (chorus__upcast()).
 *
 * Invariants, for every input:
 *   refused   an error object with the same code and a message; no envelope
 *   accepted  the accessors give what envelope_int.h promises (UUIDs,
 *             PascalCase type, version 1..2^53-1, the canonical timestamp
 *             of timestamp_ms, data and metadata objects); it serializes;
 *             the text parses again and serializes to the same bytes; the
 *             event-store path (chorus__envelope_from_parts() from the
 *             parts) and chorus_envelope_dup() give the same bytes too; its
 *             data is data a producer may emit (chorus_envelope_new_json);
 *   upcast    the chain registered below runs, or fails only where an
 *             upcaster says so; the result holds the same invariants.
 *
 * The participant is made by chorus_new() with an amqp.url it never
 * connects to (chorus_new() does not connect).
 */
#include "fuzz_common.h"

#include "chorus/chorus_json.h"
#include "chorus/chorus_pg.h"
#include "envelope_int.h"
#include "json_int.h"
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static chorus_t *ch;

/* ---- the upcasters -------------------------------------------------------
 *
 *   OrderPlaced 1 -> 2   "qty" becomes "quantity" (unless it is there)
 *   OrderPlaced 2 -> 3   "total" (a number) becomes {"amount": .., "currency": "EUR"}
 *   PaymentFailed 1 -> 2 fails (CHORUS_ERR_SCHEMA): an event it cannot read
 */
static chorus_err_t order_v1(cJSON *data, int from, void *opaque) {
    (void)opaque;
    FUZZ_CHECK(from == 1 && cJSON_IsObject(data));
    cJSON *qty = cJSON_GetObjectItemCaseSensitive(data, "qty");
    if (qty && !cJSON_GetObjectItemCaseSensitive(data, "quantity")) {
        cJSON_DetachItemViaPointer(data, qty);
        cJSON_AddItemToObject(data, "quantity", qty);
    }
    return CHORUS_OK;
}

static chorus_err_t order_v2(cJSON *data, int from, void *opaque) {
    (void)opaque;
    FUZZ_CHECK(from == 2 && cJSON_IsObject(data));
    cJSON *total = cJSON_GetObjectItemCaseSensitive(data, "total");
    if (cJSON_IsNumber(total)) {
        cJSON *money = cJSON_CreateObject();
        if (!money)
            return CHORUS_ERR_NOMEM;
        cJSON_AddNumberToObject(money, "amount", total->valuedouble);
        cJSON_AddStringToObject(money, "currency", "EUR");
        if (!cJSON_ReplaceItemInObjectCaseSensitive(data, "total", money)) {
            cJSON_Delete(money);
            return CHORUS_ERR_NOMEM;
        }
    }
    return CHORUS_OK;
}

static chorus_err_t payment_failed_v1(cJSON *data, int from, void *opaque) {
    (void)data;
    (void)from;
    (void)opaque;
    return CHORUS_ERR_SCHEMA;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char err[512];
    chorus_conf_t *conf = chorus_conf_new();
    if (!conf || chorus_conf_set(conf, "service.name", "fuzz", err, sizeof(err)) ||
        chorus_conf_set(conf, "amqp.url", "amqp://u:p@127.0.0.1:1/", err, sizeof(err)))
        fuzz_fail("configuration: %s", err);
    if (!(ch = chorus_new(conf, err, sizeof(err))))
        fuzz_fail("chorus_new: %s", err);
    if (chorus_register_upcaster(ch, "OrderPlaced", 1, order_v1, NULL) ||
        chorus_register_upcaster(ch, "OrderPlaced", 2, order_v2, NULL) ||
        chorus_register_upcaster(ch, "PaymentFailed", 1, payment_failed_v1, NULL))
        fuzz_fail("chorus_register_upcaster failed");
    return 0;
}

/* ---- invariants ------------------------------------------------------------ */

static bool lower_uuid(const char *s) {
    if (!s || strlen(s) != 36 || !chorus_uuid_valid(s))
        return false;
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            return false;
    return true;
}

static void check_accessors(const chorus_envelope_t *env) {
    FUZZ_CHECK(lower_uuid(chorus_envelope_event_id(env)));
    FUZZ_CHECK(lower_uuid(chorus_envelope_aggregate_id(env)));
    FUZZ_CHECK(chorus__event_type_valid(chorus_envelope_event_type(env)));
    int64_t v = chorus_envelope_version(env);
    FUZZ_CHECK(v >= 1 && v <= CHORUS__MAX_SAFE_INT);
    FUZZ_CHECK(chorus_envelope_schema_version(env) >= 1);

    const char *ts = chorus_envelope_timestamp(env);
    int64_t ms = chorus_envelope_timestamp_ms(env), back = 0;
    char canon[25];
    FUZZ_CHECK(ms >= CHORUS__TS_MIN_MS && ms <= CHORUS__TS_MAX_MS);
    FUZZ_CHECK(ts && strlen(ts) == 24 && ts[23] == 'Z');
    FUZZ_CHECK(chorus_timestamp_parse(ts, &back) == CHORUS_OK && back == ms);
    chorus_format_timestamp(ms, canon);
    FUZZ_CHECK(strcmp(canon, ts) == 0);

    FUZZ_CHECK(cJSON_IsObject(chorus_envelope_data(env)));
    FUZZ_CHECK(cJSON_IsObject(chorus__envelope_metadata(env)));
    const char *u;
    if ((u = chorus_envelope_correlation_id(env)) != NULL)
        FUZZ_CHECK(lower_uuid(u));
    if ((u = chorus_envelope_causation_id(env)) != NULL)
        FUZZ_CHECK(lower_uuid(u));
    if ((u = chorus_envelope_user_id(env)) != NULL)
        FUZZ_CHECK(lower_uuid(u));
    if ((u = chorus_envelope_traceparent(env)) != NULL)
        FUZZ_CHECK(chorus__traceparent_valid(u));

    /* The data text is exact I-JSON of an object. */
    const char *dj = chorus_envelope_data_json(env);
    cJSON *d = NULL;
    if (!dj) {
        chorus_error_t *err = NULL;
        free(chorus__json_print(chorus_envelope_data(env), 0, NULL, &err));
        fuzz_fail("chorus_envelope_data_json: %s", chorus_error_string(err));
    }
    if (chorus__json_parse(dj, strlen(dj), &(chorus__json_limits_t){.max_depth = 1000}, &d, NULL,
                           NULL) != CHORUS_OK)
        fuzz_fail("data_json does not parse: %.200s", dj);
    FUZZ_CHECK(cJSON_IsObject(d));
    cJSON_Delete(d);
}

/* Serializes; fails the run when it cannot. */
static char *serialize(const chorus_envelope_t *env, size_t *len, const char *what) {
    char *text = NULL;
    chorus_err_t rc = chorus_envelope_serialize(env, &text, len);
    if (rc != CHORUS_OK || !text)
        fuzz_fail("%s: chorus_envelope_serialize: %s", what, chorus_err_name(rc));
    FUZZ_CHECK(strlen(text) == *len);
    return text;
}

/* Parses what chorus wrote: the same depth limit, no byte or memory
 * bound (the text may be longer than its input: "1e15" prints as
 * 1000000000000000, "schema_version" is added). */
static chorus_envelope_t *reparse(const char *text, size_t len, const char *what) {
    chorus_envelope_limits_t lim = {.max_bytes = (size_t)1 << 30, .max_depth = 0};
    chorus_envelope_t *env = NULL;
    chorus_error_t *err = NULL;
    if (chorus__envelope_parse(text, len, &lim, (size_t)1 << 34, &env, &err) != CHORUS_OK)
        fuzz_fail("%s: the serialized envelope does not parse again: %s\n%.400s", what,
                  chorus_error_string(err), text);
    return env;
}

static void same_text(const char *a, size_t alen, const char *b, size_t blen, const char *what) {
    if (alen != blen || memcmp(a, b, alen) != 0)
        fuzz_fail("%s: texts differ\n  %.400s\n  %.400s", what, a, b);
}

/* serialize -> parse -> serialize is a fixed point; returns the text. */
static char *round_trip(const chorus_envelope_t *env, size_t *lenp, const char *what) {
    size_t len, len2;
    char *text = serialize(env, &len, what);
    chorus_envelope_t *again = reparse(text, len, what);
    check_accessors(again);
    char *text2 = serialize(again, &len2, what);
    same_text(text, len, text2, len2, what);
    free(text2);
    chorus_envelope_destroy(again);
    *lenp = len;
    return text;
}

/* The event store keeps the parts; an envelope rebuilt from them is the
 * same envelope. */
static void check_parts(const chorus_envelope_t *env, const char *text, size_t len) {
    char *meta = chorus__envelope_metadata_json(env);
    chorus_error_t *err = NULL;
    FUZZ_CHECK(meta != NULL);
    chorus_envelope_t *p = chorus__envelope_from_parts(
        chorus_envelope_event_id(env), chorus_envelope_event_type(env),
        chorus_envelope_aggregate_id(env), chorus_envelope_version(env),
        chorus_envelope_schema_version(env), chorus_envelope_timestamp_ms(env),
        chorus_envelope_data_json(env), meta, &err);
    if (!p)
        fuzz_fail("chorus__envelope_from_parts refuses what was parsed: %s",
                  chorus_error_string(err));
    size_t plen;
    char *ptext = serialize(p, &plen, "from parts");
    same_text(text, len, ptext, plen, "from parts");
    free(ptext);
    chorus_envelope_destroy(p);
    free(meta);

    chorus_envelope_t *d = chorus_envelope_dup(env);
    FUZZ_CHECK(d != NULL);
    char *dtext = serialize(d, &plen, "dup");
    same_text(text, len, dtext, plen, "dup");
    free(dtext);
    chorus_envelope_destroy(d);
}

/* What a default consumer accepted, a producer may emit. */
static void check_emittable(const chorus_envelope_t *env) {
    chorus_error_t *err = NULL;
    cJSON *data = cJSON_Duplicate(chorus_envelope_data(env), 1);
    FUZZ_CHECK(data != NULL);
    chorus_envelope_t *n = chorus_envelope_new_json(chorus_envelope_event_type(env),
                                                    chorus_envelope_aggregate_id(env),
                                                    chorus_envelope_version(env), data, &err);
    if (!n)
        fuzz_fail("chorus_envelope_new_json refuses data a consumer accepted: %s",
                  chorus_error_string(err));
    if (strcmp(chorus_envelope_data_json(n), chorus_envelope_data_json(env)) != 0)
        fuzz_fail("data text differs after chorus_envelope_new_json");
    FUZZ_CHECK(chorus_envelope_set_data_json(n, chorus_envelope_data_json(env)) == CHORUS_OK);
    chorus_envelope_destroy(n);
}

static void check_upcast(const chorus_envelope_t *env) {
    chorus_envelope_t *u = chorus_envelope_dup(env);
    chorus_error_t *err = NULL;
    FUZZ_CHECK(u != NULL);
    const char *type = chorus_envelope_event_type(env);
    int sv = chorus_envelope_schema_version(env);
    chorus_err_t rc = chorus__upcast(ch, u, &err);
    bool order = strcmp(type, "OrderPlaced") == 0;
    bool poison = strcmp(type, "PaymentFailed") == 0 && sv == 1;
    if (poison) {
        FUZZ_CHECK(rc == CHORUS_ERR_SCHEMA && err && chorus_error_code(err) == rc);
        FUZZ_CHECK(fuzz_text_message_ok(chorus_error_string(err), 512));
    } else {
        if (rc != CHORUS_OK)
            fuzz_fail("chorus__upcast: %s", chorus_error_string(err));
        FUZZ_CHECK(chorus_envelope_schema_version(u) == (order && sv <= 2 ? 3 : sv));
        check_accessors(u);
        size_t len;
        free(round_trip(u, &len, "upcast"));
    }
    chorus_error_destroy(err);
    chorus_envelope_destroy(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = fuzz_exact_copy(data, size);
    chorus_envelope_t *env = NULL;
    chorus_error_t *err = NULL;
    chorus_err_t rc = chorus__envelope_parse(buf, size, NULL, 0, &env, &err);
    free(buf);
    if (rc != CHORUS_OK) {
        FUZZ_CHECK(env == NULL && err != NULL && chorus_error_code(err) == rc);
        FUZZ_CHECK(fuzz_text_message_ok(chorus_error_string(err), 512));
        chorus_error_destroy(err);
        return 0;
    }
    FUZZ_CHECK(env != NULL && err == NULL);
    check_accessors(env);
    size_t len;
    char *text = round_trip(env, &len, "parsed");
    check_parts(env, text, len);
    check_emittable(env);
    check_upcast(env);
    free(text);
    chorus_envelope_destroy(env);
    return 0;
}
