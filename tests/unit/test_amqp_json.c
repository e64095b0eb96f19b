/* AMQP headers as JSON: the typed form gives back exactly the table it
 * came from (what dlq export/import relies on); base64 and properties. */
#include "cm.h"
#include "amqp_json.h"

#include <stdlib.h>
#include <string.h>

static amqp_table_entry_t entry(const char *k, amqp_field_value_t v) {
    return (amqp_table_entry_t){.key = amqp_cstring_bytes(k), .value = v};
}

static void assert_value_equal(const amqp_field_value_t *a, const amqp_field_value_t *b);

static void assert_table_equal(const amqp_table_t *a, const amqp_table_t *b) {
    assert_int_equal(a->num_entries, b->num_entries);
    for (int i = 0; i < a->num_entries; i++) {
        assert_int_equal(a->entries[i].key.len, b->entries[i].key.len);
        assert_memory_equal(a->entries[i].key.bytes, b->entries[i].key.bytes, a->entries[i].key.len);
        assert_value_equal(&a->entries[i].value, &b->entries[i].value);
    }
}

static void assert_value_equal(const amqp_field_value_t *a, const amqp_field_value_t *b) {
    assert_int_equal(a->kind, b->kind);
    switch (a->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        assert_int_equal(a->value.bytes.len, b->value.bytes.len);
        assert_memory_equal(a->value.bytes.bytes, b->value.bytes.bytes, a->value.bytes.len);
        break;
    case AMQP_FIELD_KIND_TABLE: assert_table_equal(&a->value.table, &b->value.table); break;
    case AMQP_FIELD_KIND_ARRAY:
        assert_int_equal(a->value.array.num_entries, b->value.array.num_entries);
        for (int i = 0; i < a->value.array.num_entries; i++)
            assert_value_equal(&a->value.array.entries[i], &b->value.array.entries[i]);
        break;
    case AMQP_FIELD_KIND_I64: assert_int_equal(a->value.i64, b->value.i64); break;
    case AMQP_FIELD_KIND_I32: assert_int_equal(a->value.i32, b->value.i32); break;
    case AMQP_FIELD_KIND_TIMESTAMP: assert_int_equal(a->value.u64, b->value.u64); break;
    case AMQP_FIELD_KIND_BOOLEAN: assert_int_equal(a->value.boolean, b->value.boolean); break;
    case AMQP_FIELD_KIND_F64: assert_true(a->value.f64 == b->value.f64); break;
    case AMQP_FIELD_KIND_U8: assert_int_equal(a->value.u8, b->value.u8); break;
    default: break;
    }
}

static void typed_round_trip(void **state) {
    (void)state;
    /* an x-death entry as RabbitMQ writes it, and chorus' fault headers */
    amqp_field_value_t keys[1] = {{.kind = AMQP_FIELD_KIND_UTF8,
                                   .value.bytes = amqp_cstring_bytes("chorus.payment")}};
    amqp_table_entry_t death[4] = {
        entry("count", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = 2}),
        entry("reason", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8,
                                             .value.bytes = amqp_cstring_bytes("expired")}),
        entry("time", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP,
                                           .value.u64 = 1700000000}),
        entry("routing-keys", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_ARRAY,
                                                   .value.array = {1, keys}}),
    };
    amqp_field_value_t deaths[1] = {{.kind = AMQP_FIELD_KIND_TABLE,
                                     .value.table = {4, death}}};
    unsigned char raw[] = {0, 1, 2, 255};
    amqp_table_entry_t e[] = {
        entry("x-chorus-fault-reason", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8,
                                   .value.bytes = amqp_cstring_bytes("caf\xc3\xa9 \"q\"")}),
        entry("x-chorus-attempt", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = -7}),
        entry("i32", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I32, .value.i32 = 123456}),
        entry("flag", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}),
        entry("ratio", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_F64, .value.f64 = 0.25}),
        entry("u8", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_U8, .value.u8 = 200}),
        entry("raw", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_BYTES,
                                          .value.bytes = {sizeof(raw), raw}}),
        entry("x-death", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_ARRAY,
                                              .value.array = {1, deaths}}),
    };
    amqp_table_t t = {.num_entries = (int)(sizeof(e) / sizeof(e[0])), .entries = e};
    cJSON *j = chorus__table_to_typed(&t);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    cJSON *back = cJSON_Parse(text); /* through text, as a file would carry it */
    amqp_pool_t pool;
    init_amqp_pool(&pool, 1024);
    amqp_table_t t2;
    assert_true(chorus__table_from_typed(back, &t2, &pool));
    assert_table_equal(&t, &t2);
    /* malformed typed JSON is refused */
    cJSON *badj = cJSON_Parse("{\"k\":{\"Q\":1}}");
    assert_false(chorus__table_from_typed(badj, &t2, &pool));
    cJSON_Delete(badj);
    badj = cJSON_Parse("{\"k\":{\"S\":1}}");
    assert_false(chorus__table_from_typed(badj, &t2, &pool));
    cJSON_Delete(badj);
    empty_amqp_pool(&pool);
    cJSON_Delete(back);
    free(text);
}

static void plain_form(void **state) {
    (void)state;
    amqp_table_entry_t e[] = {
        entry("when", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 0}),
        entry("n", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = 3}),
    };
    amqp_table_t t = {.num_entries = 2, .entries = e};
    cJSON *j = chorus__table_to_plain(&t);
    assert_string_equal(cJSON_GetObjectItem(j, "when")->valuestring, "1970-01-01T00:00:00.000Z");
    assert_int_equal((int)cJSON_GetObjectItem(j, "n")->valuedouble, 3);
    cJSON_Delete(j);
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
        assert_memory_equal(back.bytes, cases[i], back.len);
        free(back.bytes);
        free(b);
    }
    amqp_bytes_t x;
    assert_false(chorus__unbase64("Zm9", &x));
    assert_false(chorus__unbase64("Z=9v", &x));
    assert_false(chorus__unbase64("Zm!v", &x));
}

static void properties(void **state) {
    (void)state;
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_TIMESTAMP_FLAG;
    p.message_id = amqp_cstring_bytes("id-1");
    p.type = amqp_cstring_bytes("OrderPlaced");
    p.delivery_mode = 2;
    p.timestamp = 1700000000;
    cJSON *j = chorus__props_to_json(&p);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 512);
    amqp_basic_properties_t q = {0};
    assert_true(chorus__props_from_json(j, &q, &pool));
    assert_int_equal(q._flags, p._flags);
    assert_int_equal(q.message_id.len, 4);
    assert_memory_equal(q.type.bytes, "OrderPlaced", 11);
    assert_int_equal(q.delivery_mode, 2);
    assert_int_equal(q.timestamp, 1700000000);
    empty_amqp_pool(&pool);
    cJSON_Delete(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(typed_round_trip), cmocka_unit_test(plain_form),
        cmocka_unit_test(base64), cmocka_unit_test(properties)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
