/* AMQP headers as JSON.  The typed form (dlq export / import) must give back
 * exactly the table it came from -- value for value, kind for kind, bit for
 * bit, in order, repeated names included -- through JSON text as a file
 * carries it, or refuse with an error that names the header and the
 * problem.  The plain form (dlq show) must show everything, saying where it
 * shows a value other than as itself. */
#include "cm.h"
#include "amqp_json.h"
#include "json_int.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- building tables --------------------------------------------------- */

#define BYTES(lit) ((amqp_bytes_t){.len = sizeof(lit) - 1, .bytes = (void *)(lit)})
#define ENTRY(k, v) ((amqp_table_entry_t){.key = BYTES(k), .value = (v)})
#define FV(kind_, field, x) ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_##kind_, .value.field = (x)})
#define STR(lit) FV(UTF8, bytes, BYTES(lit))

static amqp_field_value_t f32_bits(uint32_t bits) {
    amqp_field_value_t v = {.kind = AMQP_FIELD_KIND_F32};
    memcpy(&v.value.f32, &bits, sizeof(bits));
    return v;
}

static amqp_field_value_t f64_bits(uint64_t bits) {
    amqp_field_value_t v = {.kind = AMQP_FIELD_KIND_F64};
    memcpy(&v.value.f64, &bits, sizeof(bits));
    return v;
}

static amqp_field_value_t f32v(float f) { return FV(F32, f32, f); }
static amqp_field_value_t f64v(double d) { return FV(F64, f64, d); }

/* ---- comparing tables ---------------------------------------------------- */

static void assert_value_equal(const amqp_field_value_t *a, const amqp_field_value_t *b);

static void assert_table_equal(const amqp_table_t *a, const amqp_table_t *b) {
    assert_int_equal(a->num_entries, b->num_entries);
    for (int i = 0; i < a->num_entries; i++) {
        assert_int_equal(a->entries[i].key.len, b->entries[i].key.len);
        if (a->entries[i].key.len)
            assert_memory_equal(a->entries[i].key.bytes, b->entries[i].key.bytes,
                                a->entries[i].key.len);
        assert_value_equal(&a->entries[i].value, &b->entries[i].value);
    }
}

static void assert_value_equal(const amqp_field_value_t *a, const amqp_field_value_t *b) {
    assert_int_equal(a->kind, b->kind);
    switch (a->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        assert_int_equal(a->value.bytes.len, b->value.bytes.len);
        if (a->value.bytes.len)
            assert_memory_equal(a->value.bytes.bytes, b->value.bytes.bytes, a->value.bytes.len);
        break;
    case AMQP_FIELD_KIND_TABLE: assert_table_equal(&a->value.table, &b->value.table); break;
    case AMQP_FIELD_KIND_ARRAY:
        assert_int_equal(a->value.array.num_entries, b->value.array.num_entries);
        for (int i = 0; i < a->value.array.num_entries; i++)
            assert_value_equal(&a->value.array.entries[i], &b->value.array.entries[i]);
        break;
    case AMQP_FIELD_KIND_BOOLEAN: assert_int_equal(!!a->value.boolean, !!b->value.boolean); break;
    case AMQP_FIELD_KIND_I8: assert_int_equal(a->value.i8, b->value.i8); break;
    case AMQP_FIELD_KIND_U8: assert_int_equal(a->value.u8, b->value.u8); break;
    case AMQP_FIELD_KIND_I16: assert_int_equal(a->value.i16, b->value.i16); break;
    case AMQP_FIELD_KIND_U16: assert_int_equal(a->value.u16, b->value.u16); break;
    case AMQP_FIELD_KIND_I32: assert_int_equal(a->value.i32, b->value.i32); break;
    case AMQP_FIELD_KIND_U32: assert_int_equal(a->value.u32, b->value.u32); break;
    case AMQP_FIELD_KIND_I64: assert_true(a->value.i64 == b->value.i64); break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: assert_true(a->value.u64 == b->value.u64); break;
    case AMQP_FIELD_KIND_F32: /* bits, so NaN payloads and -0 count */
        assert_memory_equal(&a->value.f32, &b->value.f32, sizeof(float));
        break;
    case AMQP_FIELD_KIND_F64: assert_memory_equal(&a->value.f64, &b->value.f64, sizeof(double)); break;
    case AMQP_FIELD_KIND_DECIMAL:
        assert_int_equal(a->value.decimal.decimals, b->value.decimal.decimals);
        assert_int_equal(a->value.decimal.value, b->value.decimal.value);
        break;
    case AMQP_FIELD_KIND_VOID: break;
    default: fail_msg("unexpected kind %c", a->kind);
    }
}

/* The encodings rabbitmq-c would send are byte for byte the same. */
static void assert_same_encoding(const amqp_table_t *a, const amqp_table_t *b) {
    amqp_bytes_t ea, eb;
    assert_true(chorus__table_encode(a, &ea));
    assert_true(chorus__table_encode(b, &eb));
    assert_int_equal(ea.len, eb.len);
    assert_memory_equal(ea.bytes, eb.bytes, ea.len);
    free(ea.bytes);
    free(eb.bytes);
}

/* Export line -> text -> strict parse -> import; returns the line. */
static char *round_trip(const amqp_table_t *t, bool want_encoded, amqp_pool_t *pool,
                        amqp_table_t *back) {
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_HEADERS_FLAG, .headers = *t}, q;
    amqp_bytes_t body = BYTES("b\0dy"), body2;
    char why[600] = "";
    char *line = chorus__export_line(&p, body, NULL, why, sizeof(why));
    if (!line)
        fail_msg("export: %s", why);
    assert_true(strstr(line, "\"format\":2") != NULL);
    assert_int_equal(strstr(line, "\"headers_amqp_base64\"") != NULL, want_encoded);
    if (!chorus__import_line(line, strlen(line), &q, &body2, pool, why, sizeof(why)))
        fail_msg("import: %s\nline: %.300s", why, line);
    assert_true(q._flags & AMQP_BASIC_HEADERS_FLAG);
    assert_int_equal(body2.len, 4);
    assert_memory_equal(body2.bytes, "b\0dy", 4);
    *back = q.headers;
    return line;
}

static void check_round_trip(const amqp_table_t *t) {
    amqp_pool_t pool;
    amqp_table_t back;
    init_amqp_pool(&pool, 4096);
    free(round_trip(t, false, &pool, &back));
    assert_table_equal(t, &back);
    assert_same_encoding(t, &back);
    empty_amqp_pool(&pool);
}

/* ---- round trips ----------------------------------------------------------- */

static void integers_exact(void **state) {
    (void)state;
    amqp_table_entry_t e[] = {
        ENTRY("i64 min", FV(I64, i64, INT64_MIN)),
        ENTRY("i64 max", FV(I64, i64, INT64_MAX)),
        ENTRY("2^53+1", FV(I64, i64, INT64_C(9007199254740993))),
        ENTRY("-(2^53+1)", FV(I64, i64, -INT64_C(9007199254740993))),
        ENTRY("2^53-1", FV(I64, i64, INT64_C(9007199254740991))),
        ENTRY("u64 max", FV(U64, u64, UINT64_MAX)),
        ENTRY("u64 2^53", FV(U64, u64, UINT64_C(9007199254740992))),
        ENTRY("ts max", FV(TIMESTAMP, u64, UINT64_MAX)),
        ENTRY("ts 10000", FV(TIMESTAMP, u64, UINT64_C(253402300800))),
        ENTRY("ts 0", FV(TIMESTAMP, u64, 0)),
        ENTRY("b", FV(I8, i8, INT8_MIN)),
        ENTRY("B", FV(U8, u8, UINT8_MAX)),
        ENTRY("s", FV(I16, i16, INT16_MIN)),
        ENTRY("u", FV(U16, u16, UINT16_MAX)),
        ENTRY("I", FV(I32, i32, INT32_MIN)),
        ENTRY("i", FV(U32, u32, UINT32_MAX)),
        ENTRY("t", FV(BOOLEAN, boolean, 1)),
        ENTRY("f", FV(BOOLEAN, boolean, 0)),
        ENTRY("V", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_VOID})),
    };
    amqp_table_t t = {(int)(sizeof(e) / sizeof(e[0])), e};
    check_round_trip(&t);
}

static void floats_exact(void **state) {
    (void)state;
    amqp_table_entry_t e[] = {
        ENTRY("0.30000000000000004", f64v(0.30000000000000004)),
        ENTRY("d max", f64v(DBL_MAX)),
        ENTRY("d subnormal", f64v(4.9406564584124654e-324)),
        ENTRY("d -0", f64v(-0.0)),
        ENTRY("d NaN payload", f64_bits(UINT64_C(0x7ff8000000000001))),
        ENTRY("d signalling NaN", f64_bits(UINT64_C(0xfff0000000000001))),
        ENTRY("d +inf", f64v(INFINITY)),
        ENTRY("d -inf", f64v(-INFINITY)),
        ENTRY("f max", f32v(FLT_MAX)),
        ENTRY("f -max", f32v(-FLT_MAX)),
        ENTRY("f min normal", f32v(FLT_MIN)),
        ENTRY("f subnormal", f32_bits(1)),
        ENTRY("f 0.1", f32v(0.1f)),
        ENTRY("f 16777217-ish", f32v(16777216.0f)),
        ENTRY("f -0", f32v(-0.0f)),
        ENTRY("f NaN payload", f32_bits(0x7fc00001)),
        ENTRY("f negative NaN", f32_bits(0xffbfffff)),
        ENTRY("f -inf", f32_bits(0xff800000)),
        ENTRY("D 0", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL, .value.decimal = {0, 0}})),
        ENTRY("D max", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL,
                                             .value.decimal = {255, UINT32_MAX}})),
        ENTRY("D 123.45", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL,
                                                .value.decimal = {2, 12345}})),
    };
    amqp_table_t t = {(int)(sizeof(e) / sizeof(e[0])), e};
    check_round_trip(&t);
}

static void bytes_and_names_exact(void **state) {
    (void)state;
    char n255[256], n256[257];
    memset(n255, 'n', 255);
    memset(n256, 'm', 256);
    amqp_table_entry_t e[] = {
        ENTRY("nul \0 in the name", STR("text")),
        ENTRY("\xff\xfe not UTF-8", STR("v")),
        ENTRY("surrogate \xed\xa0\x80", STR("v")),
        ENTRY("", STR("")),
        ENTRY("nul in value", STR("a\0b")),
        ENTRY("invalid UTF-8", STR("\xc3\x28")),
        ENTRY("noncharacter", STR("\xef\xbf\xbf")),
        ENTRY("caf\xc3\xa9 \"q\" \\ \n", STR("caf\xc3\xa9 \"q\" \\ \t\x01")),
        ENTRY("bytes", FV(BYTES, bytes, BYTES("\0\1\2\xff"))),
        ENTRY("empty bytes", FV(BYTES, bytes, amqp_empty_bytes)),
        ENTRY("dup", STR("first")),
        ENTRY("dup", FV(I64, i64, 2)),
        ENTRY("dup", STR("third")),
        {.key = {255, n255}, .value = STR("255-byte name")},
    };
    amqp_table_t t = {(int)(sizeof(e) / sizeof(e[0])), e};
    check_round_trip(&t);

    /* a 256-byte name is exported (it is what the table says) but AMQP
     * cannot carry it: import refuses it, naming the length */
    amqp_table_entry_t e2[] = {{.key = {256, n256}, .value = STR("x")}};
    amqp_table_t t2 = {1, e2};
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_HEADERS_FLAG, .headers = t2}, q;
    char why[600];
    amqp_bytes_t body;
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    char *line = chorus__export_line(&p, amqp_empty_bytes, NULL, why, sizeof(why));
    assert_non_null(line);
    assert_false(chorus__import_line(line, strlen(line), &q, &body, &pool, why, sizeof(why)));
    assert_string_equal(why, "headers[0]: the header name is 256 bytes; AMQP carries at most 255");
    free(line);
    empty_amqp_pool(&pool);
}

static void nested_exact(void **state) {
    (void)state;
    amqp_field_value_t keys[2] = {STR("chorus.payment"), STR("other")};
    amqp_table_entry_t death[4] = {
        ENTRY("count", FV(I64, i64, 2)),
        ENTRY("reason", STR("expired")),
        ENTRY("time", FV(TIMESTAMP, u64, 1700000000)),
        ENTRY("routing-keys", FV(ARRAY, array, ((amqp_array_t){2, keys}))),
    };
    amqp_field_value_t deaths[3] = {FV(TABLE, table, ((amqp_table_t){4, death})),
                                    FV(ARRAY, array, ((amqp_array_t){0, NULL})),
                                    FV(TABLE, table, ((amqp_table_t){0, NULL}))};
    amqp_table_entry_t e[] = {
        ENTRY("x-death", FV(ARRAY, array, ((amqp_array_t){3, deaths}))),
        ENTRY("empty table", FV(TABLE, table, ((amqp_table_t){0, NULL}))),
        ENTRY("x-chorus-fault-reason", STR("rejected")),
    };
    amqp_table_t t = {(int)(sizeof(e) / sizeof(e[0])), e};
    check_round_trip(&t);
}

/* @p levels tables, each the one entry of the one before; from @p pool. */
static amqp_table_t deep_table(int levels, amqp_pool_t *pool) {
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(levels + 1));
    for (int i = 0; i < levels; i++) {
        e[i].key = i % 2 ? BYTES("a") : BYTES("\0");
        e[i].value.kind = i % 3 ? AMQP_FIELD_KIND_TABLE : AMQP_FIELD_KIND_ARRAY;
        if (e[i].value.kind == AMQP_FIELD_KIND_TABLE) {
            e[i].value.value.table = (amqp_table_t){1, &e[i + 1]};
        } else {
            /* an array of one table holding the next entry */
            amqp_field_value_t *v = amqp_pool_alloc(pool, sizeof(*v));
            v->kind = AMQP_FIELD_KIND_TABLE;
            v->value.table = (amqp_table_t){1, &e[i + 1]};
            e[i].value.value.array = (amqp_array_t){1, v};
        }
    }
    e[levels] = ENTRY("leaf", FV(I64, i64, INT64_MAX));
    return (amqp_table_t){1, e};
}

static void deep_nesting_goes_encoded(void **state) {
    (void)state;
    amqp_pool_t pool;
    amqp_table_t back;
    init_amqp_pool(&pool, 65536);
    /* shallow enough for the typed form */
    amqp_table_t t = deep_table(200, &pool);
    free(round_trip(&t, false, &pool, &back));
    assert_same_encoding(&t, &back);
    /* 2000 levels: the typed form would nest beyond what the JSON printer
     * and parser follow, so the line carries the exact AMQP encoding */
    t = deep_table(2000, &pool);
    char *line = round_trip(&t, true, &pool, &back);
    assert_null(strstr(line, "\"headers\":"));
    assert_same_encoding(&t, &back);
    assert_table_equal(&t, &back);
    free(line);
    empty_amqp_pool(&pool);
}

static void delivery_count_never_travels(void **state) {
    (void)state;
    amqp_pool_t pool;
    amqp_table_t back;
    amqp_table_entry_t e[] = {ENTRY("x-delivery-count", FV(I64, i64, 3)), ENTRY("k", STR("v"))};
    amqp_table_t t = {2, e}, want = {1, &e[1]};
    init_amqp_pool(&pool, 4096);
    char *line = round_trip(&t, false, &pool, &back);
    assert_null(strstr(line, "x-delivery-count"));
    assert_table_equal(&want, &back);
    free(line);
    empty_amqp_pool(&pool);
}

/* ---- what import refuses ------------------------------------------------- */

static void assert_refused(const char *line, const char *want) {
    amqp_pool_t pool;
    amqp_basic_properties_t p;
    amqp_bytes_t body;
    char why[800] = "";
    init_amqp_pool(&pool, 4096);
    if (chorus__import_line(line, strlen(line), &p, &body, &pool, why, sizeof(why)))
        fail_msg("accepted: %s", line);
    if (!strstr(why, want))
        fail_msg("refusing %s\n  said: %s\n  want: %s", line, why, want);
    empty_amqp_pool(&pool);
}

#define HDR(v) \
    "{\"format\":2,\"properties\":{},\"headers\":[{\"name\":\"k\",\"value\":" v "}],\"body_base64\":\"\"}"
#define PROPS(v) "{\"format\":2,\"properties\":{" v "},\"body_base64\":\"\"}"

static void refusals(void **state) {
    (void)state;
    assert_refused(HDR("{\"b\":1000}"),
                   "headers[\"k\"]: {\"b\": 1000} is out of range for a signed 8-bit integer "
                   "(-128..127)");
    assert_refused(HDR("{\"B\":-1}"), "{\"B\": -1} is out of range for an unsigned 8-bit integer");
    assert_refused(HDR("{\"u\":65536}"), "out of range for an unsigned 16-bit integer (0..65535)");
    assert_refused(HDR("{\"i\":4294967296}"), "out of range for an unsigned 32-bit integer");
    assert_refused(HDR("{\"T\":-1}"),
                   "headers[\"k\"]: {\"T\": -1} is out of range for a timestamp (unsigned 64-bit "
                   "seconds) (0..18446744073709551615)");
    assert_refused(HDR("{\"d\":1e400}"), "number overflows the range of a double");
    assert_refused(HDR("{\"d\":-1e400}"), "overflows");
    assert_refused(PROPS("\"priority\":1e10"),
                   "properties.priority 10000000000 is out of range (0..255)");
    assert_refused(PROPS("\"delivery_mode\":256"), "properties.delivery_mode 256 is out of range (0..255)");
    assert_refused(PROPS("\"delivery_mode\":\"2\""), "delivery_mode takes a JSON integer, not a string");
    assert_refused(PROPS("\"timestamp\":\"18446744073709551616\""), "out of range");
    assert_refused(PROPS("\"timestamp\":-5"), "timestamp -5 is out of range");
    assert_refused(PROPS("\"colour\":\"red\""), "no property is named \"colour\"");
    /* fractions, strings and the like where integers belong */
    assert_refused(HDR("{\"I\":1.5}"), "{\"I\": 1.5} is not an integer");
    assert_refused(HDR("{\"l\":4.5}"), "{\"l\": 4.5} is not an integer");
    assert_refused(HDR("{\"s\":0.5}"), "is not an integer");
    assert_refused(HDR("{\"I\":\"5\"}"), "{\"I\": ...} takes a JSON integer (a signed 32-bit integer), not a string");
    assert_refused(HDR("{\"b\":true}"), "takes a JSON integer");
    assert_refused(HDR("{\"l\":[1]}"), "takes a JSON integer or a decimal string");
    /* 64-bit integers: decimal strings, strictly, and exact numbers only */
    assert_refused(HDR("{\"l\":\"9223372036854775808\"}"), "out of range for a signed 64-bit");
    assert_refused(HDR("{\"l\":\"-9223372036854775809\"}"), "out of range");
    assert_refused(HDR("{\"L\":\"18446744073709551616\"}"), "out of range");
    assert_refused(HDR("{\"L\":\"99999999999999999999999\"}"), "out of range");
    assert_refused(HDR("{\"L\":\"-1\"}"), "out of range for an unsigned 64-bit integer");
    assert_refused(HDR("{\"l\":\"007\"}"), "is not a decimal integer");
    assert_refused(HDR("{\"l\":\"-0\"}"), "is not a decimal integer");
    assert_refused(HDR("{\"l\":\"+1\"}"), "is not a decimal integer");
    assert_refused(HDR("{\"l\":\"1e3\"}"), "is not a decimal integer");
    assert_refused(HDR("{\"l\":\"\"}"), "is not a decimal integer");
    assert_refused(HDR("{\"l\":1e17}"), "beyond 2^53 - 1 a JSON number is not exact");
    assert_refused(HDR("{\"l\":9007199254740993}"), "beyond +-(2^53 - 1)");
    /* floats: exactly a float, or its bits */
    assert_refused(HDR("{\"f\":0.1}"), "{\"f\": 0.1} is not exactly a 32-bit float (the nearest is "
                                       "0.10000000149011612)");
    assert_refused(HDR("{\"f\":1e39}"), "{\"f\": 1e+39} is beyond the range of a 32-bit float");
    assert_refused(HDR("{\"f\":{\"bits\":\"0x7fc0000\"}}"), "8 hex digits");
    assert_refused(HDR("{\"d\":{\"bits\":\"0x7ff800000000000g\"}}"), "16 hex digits");
    assert_refused(HDR("{\"d\":{\"bits\":\"0x7ff8000000000000\",\"x\":1}}"), "16 hex digits");
    assert_refused(HDR("{\"d\":\"NaN\"}"), "takes a finite JSON number or {\"bits\"");
    /* the other kinds */
    assert_refused(HDR("{\"D\":{\"scale\":256,\"value\":1}}"), "the decimal's scale 256 is out of range (0..255)");
    assert_refused(HDR("{\"D\":{\"scale\":1,\"value\":4294967296}}"), "out of range");
    assert_refused(HDR("{\"D\":{\"scale\":1}}"), "the decimal's value takes a JSON integer");
    assert_refused(HDR("{\"D\":{\"scale\":1,\"value\":1,\"sign\":1}}"), "has no member \"sign\"");
    assert_refused(HDR("{\"S\":1}"), "{\"S\": ...} takes a string or {\"base64\": ...}, not a number");
    assert_refused(HDR("{\"S\":{\"base64\":\"Zh==\"}}"), "is not base64");
    assert_refused(HDR("{\"x\":\"Zm9\"}"), "{\"x\": ...} is not base64");
    assert_refused(HDR("{\"t\":1}"), "{\"t\": ...} takes true or false, not a number");
    assert_refused(HDR("{\"V\":0}"), "{\"V\": ...} takes null");
    assert_refused(HDR("{\"A\":{}}"), "{\"A\": ...} takes an array");
    assert_refused(HDR("{\"F\":{}}"), "a table is an array");
    assert_refused(HDR("{\"Q\":1}"), "headers[\"k\"]: \"Q\" is no AMQP kind");
    assert_refused(HDR("{\"S\":\"a\",\"I\":1}"), "an object of several members");
    assert_refused(HDR("{}"), "an empty object");
    assert_refused(HDR("\"text\""), "a typed value is an object of one member");
    /* nested: the error says where */
    assert_refused(HDR("{\"F\":[{\"name\":\"inner\",\"value\":{\"A\":[{\"b\":1},{\"b\":300}]}}]}"),
                   "headers[\"k\"][\"inner\"][1]: {\"b\": 300} is out of range");
    /* entries and lines */
    assert_refused("{\"format\":2,\"properties\":{},\"headers\":[{\"name\":\"k\",\"value\":{\"V\":null},"
                   "\"x\":1}],\"body_base64\":\"\"}", "headers[0]: an entry has no member \"x\"");
    assert_refused("{\"format\":2,\"properties\":{},\"headers\":[{\"name\":\"k\",\"name_base64\":\"aw==\","
                   "\"value\":{\"V\":null}}],\"body_base64\":\"\"}", "exactly one of \"name\" and");
    assert_refused("{\"format\":2,\"properties\":{},\"headers\":[{\"name\":\"k\"}],\"body_base64\":\"\"}",
                   "the entry has no \"value\"");
    assert_refused("{\"format\":2,\"properties\":{},\"headers\":{\"k\":{\"V\":null}},\"body_base64\":\"\"}",
                   "a table is an array");
    assert_refused("{\"format\":2,\"properties\":{},\"body_base64\":\"\",\"extra\":1}",
                   "a line of 'dlq export' has no member \"extra\"");
    assert_refused("{\"format\":3,\"properties\":{},\"body_base64\":\"\"}", "format 3 is out of range (1..2)");
    assert_refused("{\"format\":2,\"properties\":{}}", "no \"body_base64\"");
    assert_refused("{\"format\":2,\"body_base64\":\"\"}", "no \"properties\"");
    assert_refused("{\"format\":2,\"properties\":{},\"body_base64\":\"a\"}", "body_base64: not base64");
    assert_refused("{\"format\":2,\"properties\":{},\"body_base64\":\"\",\"body_base64\":\"\"}",
                   "duplicate member name");
    assert_refused("{\"format\":2,\"properties\":{},\"headers_amqp_base64\":\"AAAABQE=\",\"body_base64\":\"\"}",
                   "the AMQP encoding is not one table");
    assert_refused("{\"properties\":{},\"headers_amqp_base64\":\"AAAAAA==\",\"body_base64\":\"\"}",
                   "needs \"format\": 2");
    char long_prop[400];
    snprintf(long_prop, sizeof(long_prop), PROPS("\"content_type\":\"%0256d\""), 0);
    assert_refused(long_prop, "properties.content_type is 256 bytes; AMQP carries at most 255");
}

/* Names quoted in refusals are cut, at 40 bytes, between characters, so
 * that `dlq import` says why in UTF-8 text (tests/fuzz/fuzz_amqp_json
 * found both cut inside "é"). */
static void refusals_cut_names_between_characters(void **state) {
    (void)state;
    const char *lines[] = {
        "{\"format\":2,\"properties\":{},\"body_base64\":\"\","
        "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9\":1}",
        "{\"format\":2,\"properties\":{\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xc3\xa9\":1},"
        "\"body_base64\":\"\"}",
    };
    for (int i = 0; i < 2; i++) {
        amqp_pool_t pool;
        amqp_basic_properties_t p;
        amqp_bytes_t body;
        char why[800] = "";
        init_amqp_pool(&pool, 4096);
        assert_false(chorus__import_line(lines[i], strlen(lines[i]), &p, &body, &pool, why,
                                         sizeof(why)));
        if (!chorus__json_text_ok(why, strlen(why), NULL))
            fail_msg("not UTF-8 text: %s", why);
        assert_non_null(strstr(why, "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\""));
        empty_amqp_pool(&pool);
    }
}

static void encoded_headers_checked(void **state) {
    (void)state;
    amqp_pool_t pool;
    amqp_table_t t;
    char why[300];
    init_amqp_pool(&pool, 4096);
    /* {"k": true}: 4-byte length, name, kind, value */
    unsigned char ok[] = {0, 0, 0, 4, 1, 'k', 't', 1};
    assert_true(chorus__table_decode((amqp_bytes_t){sizeof(ok), ok}, &t, &pool, why, sizeof(why)));
    assert_int_equal(t.num_entries, 1);
    unsigned char boolean2[] = {0, 0, 0, 4, 1, 'k', 't', 2};
    assert_false(chorus__table_decode((amqp_bytes_t){sizeof(boolean2), boolean2}, &t, &pool, why,
                                      sizeof(why)));
    assert_non_null(strstr(why, "a boolean that is neither 0 nor 1"));
    unsigned char trailing[] = {0, 0, 0, 4, 1, 'k', 't', 1, 0};
    assert_false(chorus__table_decode((amqp_bytes_t){sizeof(trailing), trailing}, &t, &pool, why,
                                      sizeof(why)));
    /* an inner table whose length runs past the outer one */
    unsigned char overrun[] = {0, 0, 0, 10, 1, 'k', 'F', 0, 0, 0, 9, 1, 'j', 'V'};
    assert_false(chorus__table_decode((amqp_bytes_t){sizeof(overrun), overrun}, &t, &pool, why,
                                      sizeof(why)));
    assert_non_null(strstr(why, "runs past its container"));
    unsigned char unknown[] = {0, 0, 0, 3, 1, 'k', 'Q'};
    assert_false(chorus__table_decode((amqp_bytes_t){sizeof(unknown), unknown}, &t, &pool, why,
                                      sizeof(why)));
    assert_non_null(strstr(why, "unknown kind"));
    empty_amqp_pool(&pool);
}

static void format_1_lines_still_read(void **state) {
    (void)state;
    const char *line =
        "{\"routing_key\":\"order.OrderPlaced\",\"properties\":{\"delivery_mode\":2,"
        "\"content_type\":\"application/json\",\"timestamp\":1700000000},\"headers\":"
        "{\"x-chorus-fault-reason\":{\"S\":\"rejected\"},\"x-delivery-count\":{\"l\":4},"
        "\"x-death\":{\"A\":[{\"F\":{\"count\":{\"l\":1},\"time\":{\"T\":1700000000}}}]}},"
        "\"body_base64\":\"aGk=\"}\n";
    amqp_pool_t pool;
    amqp_basic_properties_t p;
    amqp_bytes_t body;
    char why[400];
    init_amqp_pool(&pool, 4096);
    if (!chorus__import_line(line, strlen(line), &p, &body, &pool, why, sizeof(why)))
        fail_msg("%s", why);
    assert_int_equal(p.headers.num_entries, 2); /* x-delivery-count is dropped */
    assert_int_equal(p.headers.entries[1].value.kind, AMQP_FIELD_KIND_ARRAY);
    assert_int_equal(p.headers.entries[1].value.value.array.entries[0].value.table.entries[1].value.kind,
                     AMQP_FIELD_KIND_TIMESTAMP);
    assert_int_equal(p.delivery_mode, 2);
    assert_true(p.timestamp == 1700000000);
    assert_int_equal(body.len, 2);
    /* the same checks apply */
    assert_refused("{\"properties\":{},\"headers\":{\"k\":{\"b\":1000}},\"body_base64\":\"\"}",
                   "headers[\"k\"]: {\"b\": 1000} is out of range");
    empty_amqp_pool(&pool);
}

/* ---- properties ------------------------------------------------------------ */

static void properties_exact(void **state) {
    (void)state;
    char n255[255];
    memset(n255, 'p', sizeof(n255));
    amqp_basic_properties_t p = {0}, q = {0};
    p._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
               AMQP_BASIC_APP_ID_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.message_id = BYTES("id\0with nul");
    p.type = BYTES("\xff\xfe");
    p.correlation_id = (amqp_bytes_t){sizeof(n255), n255};
    p.app_id = amqp_empty_bytes;
    p.content_type = BYTES("application/json");
    p.delivery_mode = 255;
    p.priority = 0;
    p.timestamp = UINT64_MAX;
    cJSON *j = chorus__props_to_json(&p);
    char *text = chorus__json_print(j, 0, NULL, NULL);
    assert_non_null(text);
    cJSON_Delete(j);
    assert_non_null(strstr(text, "\"timestamp\":\"18446744073709551615\""));
    assert_non_null(strstr(text, "\"type\":{\"base64\":\"//4=\"}"));
    cJSON *back = NULL;
    assert_int_equal(chorus__json_parse(text, strlen(text), NULL, &back, NULL, NULL), CHORUS_OK);
    amqp_pool_t pool;
    char why[300];
    init_amqp_pool(&pool, 512);
    if (!chorus__props_from_json(back, &q, &pool, why, sizeof(why)))
        fail_msg("%s", why);
    assert_int_equal(q._flags, p._flags);
    assert_int_equal(q.message_id.len, 11);
    assert_memory_equal(q.message_id.bytes, "id\0with nul", 11);
    assert_int_equal(q.type.len, 2);
    assert_memory_equal(q.type.bytes, "\xff\xfe", 2);
    assert_int_equal(q.correlation_id.len, 255);
    assert_int_equal(q.app_id.len, 0);
    assert_int_equal(q.delivery_mode, 255);
    assert_int_equal(q.priority, 0);
    assert_true(q.timestamp == UINT64_MAX);
    empty_amqp_pool(&pool);
    cJSON_Delete(back);
    free(text);
}

/* ---- the plain form ---------------------------------------------------------- */

static bool has_note(const cJSON *notes, const char *part) {
    const cJSON *n;
    cJSON_ArrayForEach(n, notes) if (strstr(n->valuestring, part)) return true;
    return false;
}

static void plain_form(void **state) {
    (void)state;
    amqp_table_entry_t e[] = {
        ENTRY("when", FV(TIMESTAMP, u64, 0)),
        ENTRY("last", FV(TIMESTAMP, u64, UINT64_C(253402300799))),
        ENTRY("year 10000", FV(TIMESTAMP, u64, UINT64_C(253402300800))),
        ENTRY("ts max", FV(TIMESTAMP, u64, UINT64_MAX)),
        ENTRY("ts 2^62", FV(TIMESTAMP, u64, UINT64_C(4611686018427387904))),
        ENTRY("n", FV(I64, i64, 3)),
        ENTRY("max", FV(I64, i64, INT64_MAX)),
        ENTRY("safe", FV(I64, i64, INT64_C(9007199254740991))),
        ENTRY("nan", f64v(NAN)),
        ENTRY("-inf", f32v(-INFINITY)),
        ENTRY("-0", f64v(-0.0)),
        ENTRY("dec", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL, .value.decimal = {2, 12345}})),
        ENTRY("small dec", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL, .value.decimal = {5, 7}})),
        ENTRY("bin", FV(BYTES, bytes, BYTES("\0\1"))),
        ENTRY("bad text", STR("a\0b")),
        ENTRY("\xff", STR("name not text")),
        ENTRY("dup", STR("1")),
        ENTRY("dup (2)", STR("2")),
        ENTRY("dup", STR("3")),
    };
    amqp_table_t t = {(int)(sizeof(e) / sizeof(e[0])), e};
    cJSON *notes = cJSON_CreateArray();
    cJSON *j = chorus__table_to_plain(&t, "headers", notes);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "when")->valuestring, "1970-01-01T00:00:00.000Z");
    assert_string_equal(cJSON_GetObjectItem(j, "last")->valuestring, "9999-12-31T23:59:59.000Z");
    /* beyond the year 9999: the number of seconds, and a note (no "* 1000"
     * overflow, no clamped date) */
    assert_true(cJSON_GetObjectItem(j, "year 10000")->valuedouble == 253402300800.0);
    assert_true(has_note(notes, "headers[\"year 10000\"]: timestamp 253402300800 is after the year 9999"));
    assert_string_equal(cJSON_GetObjectItem(j, "ts max")->valuestring, "18446744073709551615");
    assert_string_equal(cJSON_GetObjectItem(j, "ts 2^62")->valuestring, "4611686018427387904");
    assert_true(has_note(notes, "headers[\"ts 2^62\"]: timestamp 4611686018427387904 is after the "
                                "year 9999: shown as seconds since 1970 (a decimal string)"));
    assert_int_equal((int)cJSON_GetObjectItem(j, "n")->valuedouble, 3);
    assert_string_equal(cJSON_GetObjectItem(j, "max")->valuestring, "9223372036854775807");
    assert_true(has_note(notes, "headers[\"max\"]: 9223372036854775807 is beyond 2^53 - 1: shown as a decimal string"));
    assert_true(cJSON_GetObjectItem(j, "safe")->valuedouble == 9007199254740991.0);
    assert_string_equal(cJSON_GetObjectItem(j, "nan")->valuestring, "NaN");
    assert_true(has_note(notes, "headers[\"nan\"]: NaN (kind 'd', bits 0x7ff8000000000000)"));
    assert_string_equal(cJSON_GetObjectItem(j, "-inf")->valuestring, "-Infinity");
    assert_true(signbit(cJSON_GetObjectItem(j, "-0")->valuedouble));
    assert_string_equal(cJSON_GetObjectItem(j, "dec")->valuestring, "123.45");
    assert_string_equal(cJSON_GetObjectItem(j, "small dec")->valuestring, "0.00007");
    assert_string_equal(cJSON_GetObjectItem(j, "bin")->valuestring, "AAE=");
    assert_true(has_note(notes, "headers[\"bin\"]: bytes (kind 'x', 2 of them): shown as base64"));
    assert_string_equal(cJSON_GetObjectItem(j, "bad text")->valuestring, "YQBi");
    assert_string_equal(cJSON_GetObjectItem(j, "base64:/w==")->valuestring, "name not text");
    assert_string_equal(cJSON_GetObjectItem(j, "dup")->valuestring, "1");
    assert_string_equal(cJSON_GetObjectItem(j, "dup (2)")->valuestring, "2");
    assert_string_equal(cJSON_GetObjectItem(j, "dup (3)")->valuestring, "3");
    assert_true(has_note(notes, "a repeated name"));
    /* and all of it prints as I-JSON */
    char *text = chorus__json_print(j, 0, NULL, NULL);
    assert_non_null(text);
    free(text);
    text = chorus__json_print(notes, 0, NULL, NULL);
    assert_non_null(text);
    free(text);
    cJSON_Delete(j);
    cJSON_Delete(notes);
}

static void plain_deep_nesting(void **state) {
    (void)state;
    amqp_pool_t pool;
    init_amqp_pool(&pool, 65536);
    amqp_table_t t = deep_table(1500, &pool);
    cJSON *notes = cJSON_CreateArray();
    cJSON *j = chorus__table_to_plain(&t, "headers", notes);
    assert_non_null(j);
    assert_true(has_note(notes, "nested deeper than 32 levels: shown as base64 of its AMQP encoding"));
    char *text = chorus__json_print(j, 0, NULL, NULL);
    assert_non_null(text);
    /* the base64 there is the exact encoding of the rest */
    const cJSON *v = j;
    int levels = 0;
    while (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        v = v->child;
        levels++;
    }
    assert_true(cJSON_IsString(v));
    assert_in_range(levels, 30, 36);
    amqp_bytes_t enc;
    assert_true(chorus__unbase64(v->valuestring, &enc));
    assert_true(enc.len > 1000 * 6);
    free(enc.bytes);
    free(text);
    cJSON_Delete(j);
    cJSON_Delete(notes);
    empty_amqp_pool(&pool);
}

/* A frame's worth of one repeated name (a 128 KiB header holds 65536
 * entries "" -> void): each repeat gets the next free "(n)" without trying
 * every number below it again, so `dlq show` of such a message is not
 * quadratic (found by tests/fuzz/fuzz_amqp_json: it took minutes).  Literal
 * names in the way are still skipped. */
static void plain_many_repeated_names(void **state) {
    (void)state;
    int n = 65536;
    amqp_table_entry_t *e = calloc((size_t)n + 2, sizeof(*e));
    assert_non_null(e);
    for (int i = 0; i < n; i++)
        e[i] = ENTRY("", FV(VOID, u8, 0));
    e[1] = ENTRY(" (3)", STR("literal")); /* takes the name the third "" would get */
    e[n] = ENTRY(" (3)", STR("repeat of a literal"));
    amqp_table_t t = {n + 1, e};
    clock_t t0 = clock();
    cJSON *j = chorus__table_to_plain(&t, "headers", NULL);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(j), n + 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, " (2)")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, " (3)")->valuestring, "literal");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, " (4)")));
    /* 65535 entries named "": "", " (2)", " (4)" .. " (65536)" */
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, " (65536)")));
    assert_null(cJSON_GetObjectItemCaseSensitive(j, " (65537)"));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, " (3) (2)")->valuestring,
                        "repeat of a literal");
    char *text = chorus__json_print(j, 0, NULL, NULL);
    assert_non_null(text); /* and every name is unique */
    free(text);
    assert_true(secs < 5); /* 2 * 10^9 tries of "(k)" took minutes */
    cJSON_Delete(j);
    free(e);
}

static void base64(void **state) {
    (void)state;
    const char *cases[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *b = chorus__base64(cases[i], strlen(cases[i]));
        assert_string_equal(b, want[i]);
        amqp_bytes_t back;
        assert_true(chorus__unbase64(b, &back));
        assert_int_equal(back.len, strlen(cases[i]));
        if (back.len)
            assert_memory_equal(back.bytes, cases[i], back.len);
        free(back.bytes);
        free(b);
    }
    amqp_bytes_t x;
    assert_false(chorus__unbase64("Zm9", &x));
    assert_false(chorus__unbase64("Z=9v", &x));
    assert_false(chorus__unbase64("Zm!v", &x));
    assert_false(chorus__unbase64("Zh==", &x)); /* not canonical: "f" is Zg== */
    assert_false(chorus__unbase64("Zm9=", &x));
    assert_false(chorus__unbase64("Zg==Zg==", &x));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(integers_exact),
        cmocka_unit_test(floats_exact),
        cmocka_unit_test(bytes_and_names_exact),
        cmocka_unit_test(nested_exact),
        cmocka_unit_test(deep_nesting_goes_encoded),
        cmocka_unit_test(delivery_count_never_travels),
        cmocka_unit_test(refusals),
        cmocka_unit_test(refusals_cut_names_between_characters),
        cmocka_unit_test(encoded_headers_checked),
        cmocka_unit_test(format_1_lines_still_read),
        cmocka_unit_test(properties_exact),
        cmocka_unit_test(plain_form),
        cmocka_unit_test(plain_deep_nesting),
        cmocka_unit_test(plain_many_repeated_names),
        cmocka_unit_test(base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
