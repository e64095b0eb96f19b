/*
 * test_amqp_props.c - what a content header can carry (lib/src/amqp_props.c):
 * the sizes computed here must be the bytes rabbitmq-c writes, or a copy
 * that "fits" would still break the connection.
 */
#include "cm.h"

#include <stdlib.h>
#include <string.h>

#include "amqp_props_int.h"

/* The size rabbitmq-c's own encoder gives, or 0 when it refuses. */
static size_t encoded(amqp_table_t *t) {
    static char buf[1 << 20];
    size_t off = 0;
    amqp_bytes_t b = {sizeof(buf), buf};
    return amqp_encode_table(b, t, &off) == AMQP_STATUS_OK ? off : 0;
}

static amqp_field_value_t v_str(const char *s) {
    return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(s)};
}

static void sizes_match_rabbitmq_c(void **state) {
    (void)state;
    amqp_field_value_t arr[3] = {v_str("a"), {.kind = AMQP_FIELD_KIND_I64, .value.i64 = -1},
                                 {.kind = AMQP_FIELD_KIND_VOID}};
    amqp_table_entry_t inner[2] = {
        {.key = amqp_cstring_bytes("d"), .value = {.kind = AMQP_FIELD_KIND_DECIMAL}},
        {.key = amqp_cstring_bytes("f"), .value = {.kind = AMQP_FIELD_KIND_F32}},
    };
    amqp_table_entry_t e[] = {
        {.key = amqp_cstring_bytes("t"), .value = {.kind = AMQP_FIELD_KIND_BOOLEAN}},
        {.key = amqp_cstring_bytes("b"), .value = {.kind = AMQP_FIELD_KIND_I8}},
        {.key = amqp_cstring_bytes("B"), .value = {.kind = AMQP_FIELD_KIND_U8}},
        {.key = amqp_cstring_bytes("s"), .value = {.kind = AMQP_FIELD_KIND_I16}},
        {.key = amqp_cstring_bytes("u"), .value = {.kind = AMQP_FIELD_KIND_U16}},
        {.key = amqp_cstring_bytes("I"), .value = {.kind = AMQP_FIELD_KIND_I32}},
        {.key = amqp_cstring_bytes("i"), .value = {.kind = AMQP_FIELD_KIND_U32}},
        {.key = amqp_cstring_bytes("l"), .value = {.kind = AMQP_FIELD_KIND_I64}},
        {.key = amqp_cstring_bytes("L"), .value = {.kind = AMQP_FIELD_KIND_U64}},
        {.key = amqp_cstring_bytes("dd"), .value = {.kind = AMQP_FIELD_KIND_F64}},
        {.key = amqp_cstring_bytes("T"), .value = {.kind = AMQP_FIELD_KIND_TIMESTAMP}},
        {.key = amqp_cstring_bytes("S"), .value = v_str("hello")},
        {.key = amqp_cstring_bytes("x"), .value = {.kind = AMQP_FIELD_KIND_BYTES,
                                                   .value.bytes = {3, "\0\1\2"}}},
        {.key = amqp_cstring_bytes("A"), .value = {.kind = AMQP_FIELD_KIND_ARRAY,
                                                   .value.array = {3, arr}}},
        {.key = amqp_cstring_bytes("F"), .value = {.kind = AMQP_FIELD_KIND_TABLE,
                                                   .value.table = {2, inner}}},
        {.key = amqp_cstring_bytes(""), .value = {.kind = AMQP_FIELD_KIND_VOID}},
    };
    amqp_table_t t = {sizeof(e) / sizeof(e[0]), e};
    size_t mine;
    assert_true(chorus__table_size(&t, 1, &mine, NULL, 0));
    assert_int_equal(mine, encoded(&t));
    /* one entry at a time too */
    for (size_t i = 0; i < sizeof(e) / sizeof(e[0]); i++) {
        amqp_table_t one = {1, &e[i]};
        assert_true(chorus__table_size(&one, 1, &mine, NULL, 0));
        assert_int_equal(mine, encoded(&one));
    }
}

static void refusals(void **state) {
    (void)state;
    char name[300], why[256];
    memset(name, 'k', sizeof(name));
    amqp_table_entry_t e = {.key = {256, name}, .value = v_str("v")};
    amqp_table_t t = {1, &e};
    size_t sz;
    /* rabbitmq-c would write a length byte of 0 here: a corrupt table */
    assert_false(chorus__table_size(&t, 1, &sz, why, sizeof(why)));
    assert_non_null(strstr(why, "header name is longer than 255 bytes"));
    e.key.len = 255;
    assert_true(chorus__table_size(&t, 1, &sz, why, sizeof(why)));
    e.value.kind = 'Z';
    assert_false(chorus__table_size(&t, 1, &sz, why, sizeof(why)));
    assert_non_null(strstr(why, "unknown kind"));

    amqp_basic_properties_t p = {._flags = AMQP_BASIC_MESSAGE_ID_FLAG,
                                 .message_id = {256, name}};
    assert_false(chorus__props_size(&p, &sz, why, sizeof(why)));
    assert_non_null(strstr(why, "property message_id is longer than 255 bytes"));

    /* nesting beyond the bound */
    amqp_table_entry_t *lv = calloc(100, sizeof(*lv));
    for (int i = 0; i < 100; i++) {
        lv[i].key = amqp_cstring_bytes("n");
        lv[i].value.kind = i == 99 ? AMQP_FIELD_KIND_VOID : AMQP_FIELD_KIND_TABLE;
        if (i < 99)
            lv[i].value.value.table = (amqp_table_t){1, &lv[i + 1]};
    }
    amqp_table_t deep = {1, lv};
    assert_false(chorus__table_size(&deep, 1, &sz, why, sizeof(why)));
    assert_non_null(strstr(why, "nest deeper"));
    free(lv);
}

/* The frame bound: properties fit when they leave room for the frame's
 * own 20 bytes; one byte more does not. */
static void fit_boundary(void **state) {
    (void)state;
    static char big[140000];
    memset(big, 'v', sizeof(big));
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("k"),
                            .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = {0, big}}};
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_HEADERS_FLAG, .headers = {1, &e}};
    /* flags 2 + table length 4 + key 1+1 + kind 1 + string length 4 = 13 */
    e.value.value.bytes.len = 131072 - 20 - 13;
    char why[256];
    assert_true(chorus__props_fit(&p, 131072, why, sizeof(why)));
    e.value.value.bytes.len++;
    assert_false(chorus__props_fit(&p, 131072, why, sizeof(why)));
    assert_non_null(strstr(why, "a frame of 131072 carries 131052"));
}

static void clone_is_deep(void **state) {
    (void)state;
    amqp_pool_t pool;
    init_amqp_pool(&pool, 1024);
    char key[] = "x-k", val[] = "value", id[] = "msg-1";
    amqp_table_entry_t e = {.key = amqp_cstring_bytes(key), .value = v_str(val)};
    amqp_basic_properties_t src = {._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                                             AMQP_BASIC_PRIORITY_FLAG,
                                   .headers = {1, &e}, .message_id = amqp_cstring_bytes(id),
                                   .priority = 7};
    amqp_basic_properties_t dst;
    assert_true(chorus__props_clone(&src, &dst, &pool));
    memset(val, '!', 5);
    memset(id, '!', 5);
    assert_memory_equal(dst.headers.entries[0].value.value.bytes.bytes, "value", 5);
    assert_memory_equal(dst.message_id.bytes, "msg-1", 5);
    assert_int_equal(dst.priority, 7);
    empty_amqp_pool(&pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_match_rabbitmq_c),
        cmocka_unit_test(refusals),
        cmocka_unit_test(fit_boundary),
        cmocka_unit_test(clone_is_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
