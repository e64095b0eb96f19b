/*
 * fuzz_amqp_json.c - AMQP headers <-> JSON (amqp_json.c), the path of
 * `dlq show`, `dlq export` and `dlq import` (scripts/dlq).
 *
 * Two modes, told apart by the first byte that is not JSON white space:
 *
 *   '{'   an export line, as `dlq import` reads it (mode "line");
 *   else  an AMQP-encoded field table, as a broker delivers headers (mode
 *         "table").  No table is lost to the line mode: one whose 4-byte
 *         length began with '{' or a white-space byte would be over
 *         150 MB long.
 *
 * Table mode.  The bytes go through chorus__table_decode(), the module's
 * own check before rabbitmq-c's decoder (which recurses and must not be
 * fed what it cannot handle), never to amqp_decode_table() directly.
 * When they decode:
 *   - amqp_encode_table() of the result is the input, byte for byte, and
 *     chorus__table_size() (when it does not refuse the depth) is its size;
 *   - the plain form (show) is built and prints as I-JSON, with its notes;
 *   - the typed form (export) is built, or refused only as too deep;
 *     printed, parsed by the I-JSON parser, imported: the encoding is the
 *     input again;
 *   - a whole export line with those headers imports to the same headers
 *     (x-delivery-count, which never travels, left out), properties and
 *     body, and the sizes chorus__props_size() computes are what
 *     rabbitmq-c encodes.
 *   The typed and line paths may refuse with a reason; they may never
 *   give back other bytes.
 *
 * Line mode.  Whatever chorus__import_line() accepts exports again; that
 * line imports to the same message (properties as rabbitmq-c encodes
 * them, body) and exports to the same bytes; chorus__props_fit() either
 * accepts it or says why, consistently with chorus__props_size().
 */
#include "fuzz_common.h"

#include "amqp_json.h"
#include "amqp_props_int.h"
#include "json_int.h"

#include <amqp_framing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WHY 1024
#define FRAME_MAX 131072

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

static void same_bytes(amqp_bytes_t a, amqp_bytes_t b, const char *what) {
    if (a.len != b.len || (a.len && memcmp(a.bytes, b.bytes, a.len) != 0))
        fuzz_fail("%s: %zu bytes, expected %zu (or the bytes differ)", what, a.len, b.len);
}

static amqp_bytes_t encode(const amqp_table_t *t, const char *what) {
    amqp_bytes_t e;
    if (!chorus__table_encode(t, &e))
        fuzz_fail("%s: chorus__table_encode fails", what);
    return e;
}

/* The property list as rabbitmq-c writes it into a content header (a
 * malloc'd copy); len 0 when rabbitmq-c refuses. */
static amqp_bytes_t encode_props(const amqp_basic_properties_t *p, size_t room) {
    amqp_basic_properties_t copy = *p;
    amqp_bytes_t buf = {.len = room, .bytes = malloc(room)};
    FUZZ_CHECK(buf.bytes != NULL);
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, &copy, buf);
    buf.len = n > 0 ? (size_t)n : 0;
    return buf;
}

static cJSON *parse_ijson(const char *s, size_t len, const char *what) {
    chorus__json_limits_t lim = {.max_depth = CHORUS__JSON_MAX_DEPTH};
    chorus_error_t *err = NULL;
    cJSON *j = NULL;
    if (chorus__json_parse(s, len, &lim, &j, NULL, &err) != CHORUS_OK)
        fuzz_fail("%s: what chorus printed does not parse: %s", what, chorus_error_string(err));
    return j;
}

static char *print_json(const cJSON *j, const char *what) {
    chorus_error_t *err = NULL;
    char *s = chorus__json_print(j, 0, NULL, &err);
    if (!s)
        fuzz_fail("%s: does not print: %s", what, chorus_error_string(err));
    return s;
}

/* The sizes chorus computes before a publish are what rabbitmq-c writes. */
static void check_sizes(const amqp_basic_properties_t *p, size_t room) {
    size_t sz;
    char why[WHY] = "";
    bool sized = chorus__props_size(p, &sz, why, sizeof(why));
    char fwhy[WHY] = "";
    bool fit = chorus__props_fit(p, FRAME_MAX, fwhy, sizeof(fwhy));
    if (!sized) {
        FUZZ_CHECK(fuzz_text_message_ok(why, sizeof(why)) && !fit);
        FUZZ_CHECK(strstr(why, "deeper") != NULL);
        return;
    }
    FUZZ_CHECK(fit == (sz + CHORUS__HEADER_FRAME_OVERHEAD <= FRAME_MAX));
    if (!fit)
        FUZZ_CHECK(fuzz_text_message_ok(fwhy, sizeof(fwhy)));
    amqp_bytes_t e = encode_props(p, room);
    if (e.len != sz)
        fuzz_fail("chorus__props_size says %zu bytes, rabbitmq-c writes %zu", sz, e.len);
    free(e.bytes);
}

/* ---- table mode ------------------------------------------------------------ */

static void check_plain(const amqp_table_t *t) {
    cJSON *notes = cJSON_CreateArray();
    FUZZ_CHECK(notes != NULL);
    cJSON *plain = chorus__table_to_plain(t, "headers", notes);
    FUZZ_CHECK(plain != NULL && cJSON_IsObject(plain));
    FUZZ_CHECK(cJSON_GetArraySize(plain) == t->num_entries);
    char *s = print_json(plain, "the plain form");
    cJSON_Delete(parse_ijson(s, strlen(s), "the plain form"));
    free(s);
    const cJSON *n;
    cJSON_ArrayForEach(n, notes) FUZZ_CHECK(cJSON_IsString(n) && n->valuestring[0]);
    s = print_json(notes, "the notes");
    free(s);
    cJSON_Delete(plain);
    cJSON_Delete(notes);
}

static void check_typed(const amqp_table_t *t, amqp_bytes_t orig, amqp_pool_t *pool) {
    char why[WHY] = "";
    bool deep = false;
    cJSON *typed = chorus__table_to_typed(t, 1, &deep, why, sizeof(why));
    if (!typed) {
        if (!deep)
            fuzz_fail("the typed form of a decoded table fails: %s", why);
        return;
    }
    char *s = print_json(typed, "the typed form");
    cJSON *back = parse_ijson(s, strlen(s), "the typed form");
    amqp_table_t t2;
    if (!chorus__table_from_typed(back, false, "headers", &t2, pool, why, sizeof(why)))
        fuzz_fail("the typed form chorus wrote does not import: %s\n%.300s", why, s);
    amqp_bytes_t e = encode(&t2, "typed");
    same_bytes(e, orig, "typed form -> table -> encoding");
    free(e.bytes);
    cJSON_Delete(back);
    free(s);
    cJSON_Delete(typed);
}

static bool is_delivery_count(amqp_bytes_t k) {
    return k.len == 16 && memcmp(k.bytes, "x-delivery-count", 16) == 0;
}

static void check_line(const amqp_table_t *t, amqp_pool_t *pool, size_t room) {
    static const char body_bytes[] = "{\"b\":\0\xff}";
    amqp_bytes_t body = {.len = sizeof(body_bytes) - 1, .bytes = (void *)body_bytes};
    amqp_bytes_t rk = amqp_cstring_bytes("payment.PaymentFailed");
    amqp_basic_properties_t p = {
        ._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG |
                  AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG,
        .content_type = amqp_cstring_bytes("application/json"),
        .delivery_mode = 2,
        .message_id = amqp_cstring_bytes("0190f5e2-7c1a-7b3d-8e4f-1a2b3c4d5e6f"),
        .headers = *t};
    check_sizes(&p, room);

    char why[WHY] = "";
    char *line = chorus__export_line(&p, body, &rk, why, sizeof(why));
    if (!line)
        fuzz_fail("export of decoded headers fails: %s", why);
    amqp_basic_properties_t q;
    amqp_bytes_t body2;
    if (!chorus__import_line(line, strlen(line), &q, &body2, pool, why, sizeof(why)))
        fuzz_fail("the line chorus exported does not import: %s\n%.300s", why, line);
    same_bytes(body2, body, "line: body");

    /* the headers come back, less x-delivery-count */
    amqp_table_t want = {.num_entries = 0,
                         .entries = amqp_pool_alloc(pool, sizeof(amqp_table_entry_t) *
                                                              (size_t)(t->num_entries + 1))};
    FUZZ_CHECK(want.entries != NULL);
    for (int i = 0; i < t->num_entries; i++)
        if (!is_delivery_count(t->entries[i].key))
            want.entries[want.num_entries++] = t->entries[i];
    p.headers = want;
    amqp_bytes_t a = encode_props(&p, room), b = encode_props(&q, room);
    FUZZ_CHECK(a.len > 0);
    same_bytes(b, a, "line: properties and headers");
    free(a.bytes);
    free(b.bytes);
    free(line);
}

static void table_mode(const uint8_t *data, size_t size) {
    amqp_bytes_t enc = {.len = size, .bytes = fuzz_exact_copy(data, size)};
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t t;
    char why[WHY] = "";
    if (!chorus__table_decode(enc, &t, &pool, why, sizeof(why))) {
        FUZZ_CHECK(fuzz_text_message_ok(why, sizeof(why)));
        goto done;
    }
    amqp_bytes_t again = encode(&t, "decoded");
    same_bytes(again, enc, "decode -> encode");
    free(again.bytes);

    size_t sz;
    char swhy[WHY] = "";
    if (chorus__table_size(&t, 1, &sz, swhy, sizeof(swhy)))
        FUZZ_CHECK(sz == size);
    else
        FUZZ_CHECK(strstr(swhy, "deeper") != NULL);

    size_t room = 2 * size + 4096;
    check_plain(&t);
    check_typed(&t, enc, &pool);
    check_line(&t, &pool, room);
done:
    empty_amqp_pool(&pool);
    free(enc.bytes);
}

/* ---- line mode ------------------------------------------------------------- */

static void line_mode(const uint8_t *data, size_t size) {
    char *buf = fuzz_exact_copy(data, size);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_basic_properties_t p, p2, p3;
    amqp_bytes_t body, body2, body3;
    char why[WHY] = "";
    size_t room = 4 * size + 4096;
    if (!chorus__import_line(buf, size, &p, &body, &pool, why, sizeof(why))) {
        FUZZ_CHECK(fuzz_text_message_ok(why, sizeof(why)));
        goto done;
    }
    check_sizes(&p, room);

    char *line2 = chorus__export_line(&p, body, NULL, why, sizeof(why));
    if (!line2)
        fuzz_fail("what was imported does not export: %s", why);
    if (!chorus__import_line(line2, strlen(line2), &p2, &body2, &pool, why, sizeof(why)))
        fuzz_fail("the line chorus exported does not import: %s\n%.300s", why, line2);
    same_bytes(body2, body, "re-import: body");
    amqp_bytes_t a = encode_props(&p, room), b = encode_props(&p2, room);
    same_bytes(b, a, "re-import: properties and headers");
    free(a.bytes);
    free(b.bytes);

    char *line3 = chorus__export_line(&p2, body2, NULL, why, sizeof(why));
    if (!line3)
        fuzz_fail("the re-imported message does not export: %s", why);
    if (strcmp(line2, line3) != 0)
        fuzz_fail("export -> import -> export differs:\n  %.300s\n  %.300s", line2, line3);
    FUZZ_CHECK(chorus__import_line(line3, strlen(line3), &p3, &body3, &pool, why, sizeof(why)));
    free(line3);
    free(line2);
done:
    empty_amqp_pool(&pool);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
        i++;
    if (i < size && data[i] == '{')
        line_mode(data, size);
    else
        table_mode(data, size);
    return 0;
}
