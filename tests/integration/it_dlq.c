/*
 * The DLQ tooling on the real broker, with dead letters put straight into
 * a service's DLQ: one whose headers nest 1500 levels deep (deeper than any
 * JSON parser here follows), one the broker dead-lettered itself (x-death,
 * no chorus fault headers), one with every kind of header value AMQP and
 * RabbitMQ carry, and plain ones.
 *
 *   - chorus_dlq_fetch + chorus_dead_letter_json return every one of them;
 *   - `chorus-dlq show` (text and --json) prints every one, the deep one
 *     with a note; `list` derives the broker's reasons from x-death;
 *   - export, drain the DLQ, import: the same AMQP header encodings byte for
 *     byte, the same bodies and properties, in order; the deep one is
 *     refused with a clear error (chorus never sends headers nested deeper
 *     than 64 levels) and the others are imported all the same;
 *   - requeue refuses a requeue count at INT64_MAX or not an integer, and a
 *     copy that would not fit the frame, and leaves those messages put.
 */
#include "testlib.h"

#include "amqp_json.h"
#include "amqp_props_int.h"
#include "json_int.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERVICE "dlqsvc"
#define BYTES(lit) ((amqp_bytes_t){.len = sizeof(lit) - 1, .bytes = (void *)(lit)})
#define ENTRY(k, v) ((amqp_table_entry_t){.key = BYTES(k), .value = (v)})
#define FV(kind_, field, x) ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_##kind_, .value.field = (x)})
#define STR(lit) FV(UTF8, bytes, BYTES(lit))

static char dlq_name[256], svc_queue[256], tool[4096], outdir[256];

/* ---- publishing with any properties -------------------------------------- */

static void publish(it_raw_t *r, const char *queue, amqp_basic_properties_t *p, amqp_bytes_t body) {
    if (amqp_basic_publish(r->st, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, p, body))
        fail_msg("raw publish failed");
    amqp_frame_t f;
    struct timeval tv = {.tv_sec = 10};
    if (amqp_simple_wait_frame_noblock(r->st, &f, &tv) != AMQP_STATUS_OK ||
        f.frame_type != AMQP_FRAME_METHOD || f.payload.method.id != AMQP_BASIC_ACK_METHOD)
        fail_msg("raw publish was not confirmed");
    amqp_maybe_release_buffers(r->st);
}

static amqp_basic_properties_t props_with(amqp_table_t *h) {
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.content_type = amqp_cstring_bytes("application/json");
    if (h) {
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers = *h;
    }
    return p;
}

/* ---- running the tool --------------------------------------------------------- */

/* Runs `chorus-dlq ARGS` in the test's namespace; stdout into *out
 * (malloc'd), stderr into outdir/err; returns the exit status. */
static int run_tool(char **out, const char *stdin_file, const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof(cmd), "CHORUS_NAMESPACE='%s' '%s' %s <%s 2>'%s/err'", it_ns(), tool, args,
             stdin_file ? stdin_file : "/dev/null", outdir);
    FILE *p = popen(cmd, "r");
    if (!p)
        fail_msg("cannot run %s", cmd);
    size_t n = 0, cap = 65536;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 4096)
            buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *tool_stderr(void) {
    char path[300];
    snprintf(path, sizeof(path), "%s/err", outdir);
    FILE *f = fopen(path, "r");
    static char buf[16384];
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    return buf;
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static cJSON *parse(const char *text) {
    chorus__json_limits_t lim = {.max_depth = CHORUS__JSON_MAX_DEPTH};
    cJSON *j = NULL;
    chorus_error_t *err = NULL;
    if (chorus__json_parse(text, strlen(text), &lim, &j, NULL, &err))
        fail_msg("not JSON: %s\n%.400s", chorus_error_string(err), text);
    return j;
}

/* ---- what goes into the DLQ ------------------------------------------------ */

typedef struct {
    amqp_basic_properties_t p;
    amqp_bytes_t body;
} msg_t;

/* @p levels tables, each the one entry of the one before. */
static amqp_table_t deep_table(int levels, amqp_pool_t *pool) {
    amqp_table_entry_t *e = amqp_pool_alloc(pool, sizeof(*e) * (size_t)(levels + 1));
    for (int i = 0; i < levels; i++) {
        e[i].key = amqp_cstring_bytes("d");
        e[i].value.kind = AMQP_FIELD_KIND_TABLE;
        e[i].value.value.table = (amqp_table_t){1, &e[i + 1]};
    }
    e[levels] = ENTRY("bottom", STR("reached"));
    return (amqp_table_t){1, e};
}

enum { M_PLAIN, M_DEEP, M_KINDS, M_BROKER_LIMIT, M_BROKER_REJECTED, M_BINARY, NMSG };

static char *envelope(const char *id, amqp_pool_t *pool) {
    char *s = amqp_pool_alloc(pool, 600);
    snprintf(s, 600,
             "{\"event_id\":\"%s\",\"event_type\":\"OrderPlaced\",\"aggregate_id\":"
             "\"0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e\",\"version\":1,\"schema_version\":1,"
             "\"timestamp\":\"2026-03-14T10:00:00.000Z\",\"data\":{\"n\":9007199254740991},"
             "\"metadata\":{}}",
             id);
    return s;
}

static void build(msg_t *m, amqp_pool_t *pool) {
    static amqp_table_entry_t deep_e[3], kinds[24], broker1[3], broker2[2], bin_e[2];
    static amqp_field_value_t rks[1], deaths1[1], deaths2[1], arr[3];
    static amqp_table_entry_t death1[6], death2[4], inner[2];
    static amqp_table_entry_t fault[8];
    static char n255[255];
    fault[0] = ENTRY("x-chorus-fault-reason", STR("rejected"));
    fault[1] = ENTRY("x-chorus-fault-error", STR("card number is not valid"));
    fault[2] = ENTRY("x-chorus-original-queue", FV(UTF8, bytes, amqp_cstring_bytes(svc_queue)));
    fault[3] = ENTRY("x-chorus-original-routing-key", STR("order.OrderPlaced"));
    fault[4] = ENTRY("x-chorus-fault-time", STR("2026-03-14T10:00:01.000Z"));
    fault[5] = ENTRY("x-chorus-fault-service", STR(SERVICE));
    fault[6] = ENTRY("x-chorus-fault-attempts", FV(I64, i64, 1));
    fault[7] = ENTRY("x-chorus-dropped-headers", STR("x-big (and 2 more)"));
    amqp_table_t fault_t = {8, fault};

    m[M_PLAIN].p = props_with(&fault_t);
    m[M_PLAIN].body = amqp_cstring_bytes(envelope("0190f7d2-0000-7000-8000-000000000001", pool));

    deep_e[0] = ENTRY("x-chorus-fault-reason", STR("malformed"));
    deep_e[1] = ENTRY("x-deep", FV(TABLE, table, deep_table(1500, pool)));
    deep_e[2] = ENTRY("x-chorus-original-queue", FV(UTF8, bytes, amqp_cstring_bytes(svc_queue)));
    amqp_table_t dt = {3, deep_e};
    m[M_DEEP].p = props_with(&dt);
    m[M_DEEP].body = amqp_cstring_bytes("deep headers, not an envelope");

    /* every kind RabbitMQ carries, the edges of each, and the names and
     * strings JSON cannot hold as they are */
    memset(n255, 'n', sizeof(n255));
    arr[0] = FV(I32, i32, -1);
    arr[1] = STR("");
    arr[2] = FV(TABLE, table, ((amqp_table_t){0, NULL}));
    inner[0] = ENTRY("x", FV(BYTES, bytes, BYTES("\0\xff")));
    inner[1] = ENTRY("y", FV(ARRAY, array, ((amqp_array_t){3, arr})));
    int k = 0;
    kinds[k++] = ENTRY("x-chorus-fault-reason", STR("no-handler"));
    kinds[k++] = ENTRY("l max", FV(I64, i64, INT64_MAX));
    kinds[k++] = ENTRY("l min", FV(I64, i64, INT64_MIN));
    kinds[k++] = ENTRY("l 2^53+1", FV(I64, i64, INT64_C(9007199254740993)));
    kinds[k++] = ENTRY("L max", FV(U64, u64, UINT64_MAX));
    kinds[k++] = ENTRY("T far", FV(TIMESTAMP, u64, UINT64_C(253402300800)));
    kinds[k++] = ENTRY("d", FV(F64, f64, 0.30000000000000004));
    kinds[k++] = ENTRY("d -0", FV(F64, f64, -0.0));
    kinds[k++] = ENTRY("f", FV(F32, f32, 0.1f));
    kinds[k++] = ENTRY("D", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_DECIMAL,
                                                  .value.decimal = {3, 4294967295u}}));
    kinds[k++] = ENTRY("b", FV(I8, i8, INT8_MIN));
    kinds[k++] = ENTRY("B", FV(U8, u8, UINT8_MAX));
    kinds[k++] = ENTRY("s", FV(I16, i16, INT16_MIN));
    kinds[k++] = ENTRY("u", FV(U16, u16, UINT16_MAX));
    kinds[k++] = ENTRY("i", FV(U32, u32, UINT32_MAX));
    kinds[k++] = ENTRY("t", FV(BOOLEAN, boolean, 1));
    kinds[k++] = ENTRY("V", ((amqp_field_value_t){.kind = AMQP_FIELD_KIND_VOID}));
    kinds[k++] = ENTRY("nul\0name", STR("nul\0value"));
    kinds[k++] = ENTRY("\xff\xfe", STR("\xc3\x28 not UTF-8"));
    kinds[k++] = ENTRY("dup", STR("one"));
    kinds[k++] = ENTRY("dup", FV(I64, i64, 2));
    kinds[k++] = ENTRY("F", FV(TABLE, table, ((amqp_table_t){2, inner})));
    kinds[k++] = (amqp_table_entry_t){.key = {255, n255}, .value = STR("255-byte name")};
    amqp_table_t kt = {k, kinds};
    m[M_KINDS].p = props_with(&kt);
    m[M_KINDS].p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG |
                           AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_PRIORITY_FLAG |
                           AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_EXPIRATION_FLAG;
    m[M_KINDS].p.message_id = BYTES("id\xff\xfe");
    m[M_KINDS].p.type = amqp_cstring_bytes("Weird");
    m[M_KINDS].p.timestamp = UINT64_MAX;
    m[M_KINDS].p.priority = 9;
    m[M_KINDS].p.correlation_id = amqp_cstring_bytes("c\xc3\xa9");
    m[M_KINDS].p.expiration = amqp_cstring_bytes("86400000");
    m[M_KINDS].body = amqp_cstring_bytes(envelope("0190f7d2-0000-7000-8000-000000000003", pool));

    /* dead-lettered by the broker: a quorum queue's delivery limit ... */
    rks[0] = STR("order.OrderPlaced");
    death1[0] = ENTRY("count", FV(I64, i64, 1));
    death1[1] = ENTRY("reason", STR("delivery_limit"));
    death1[2] = ENTRY("queue", FV(UTF8, bytes, amqp_cstring_bytes(svc_queue)));
    death1[3] = ENTRY("time", FV(TIMESTAMP, u64, 1700000000));
    death1[4] = ENTRY("exchange", STR("events"));
    death1[5] = ENTRY("routing-keys", FV(ARRAY, array, ((amqp_array_t){1, rks})));
    deaths1[0] = FV(TABLE, table, ((amqp_table_t){6, death1}));
    broker1[0] = ENTRY("x-death", FV(ARRAY, array, ((amqp_array_t){1, deaths1})));
    broker1[1] = ENTRY("x-first-death-reason", STR("delivery_limit"));
    broker1[2] = ENTRY("x-first-death-queue", FV(UTF8, bytes, amqp_cstring_bytes(svc_queue)));
    amqp_table_t b1 = {3, broker1};
    m[M_BROKER_LIMIT].p = props_with(&b1);
    m[M_BROKER_LIMIT].body = amqp_cstring_bytes(envelope("0190f7d2-0000-7000-8000-000000000004", pool));

    /* ... and what chorus rejected unread */
    death2[0] = ENTRY("count", FV(I64, i64, 1));
    death2[1] = ENTRY("reason", STR("rejected"));
    death2[2] = ENTRY("queue", FV(UTF8, bytes, amqp_cstring_bytes(svc_queue)));
    death2[3] = ENTRY("time", FV(TIMESTAMP, u64, 1700000001));
    deaths2[0] = FV(TABLE, table, ((amqp_table_t){4, death2}));
    broker2[0] = ENTRY("x-death", FV(ARRAY, array, ((amqp_array_t){1, deaths2})));
    broker2[1] = ENTRY("x-first-death-reason", STR("rejected"));
    amqp_table_t b2 = {2, broker2};
    m[M_BROKER_REJECTED].p = props_with(&b2);
    m[M_BROKER_REJECTED].body = BYTES("\0\1 too big to read");

    bin_e[0] = ENTRY("x-chorus-fault-reason", STR("malformed"));
    bin_e[1] = ENTRY("x-chorus-fault-error", STR("not JSON"));
    amqp_table_t bt = {2, bin_e};
    m[M_BINARY].p = props_with(&bt);
    m[M_BINARY].p._flags &= ~(amqp_flags_t)AMQP_BASIC_CONTENT_TYPE_FLAG;
    m[M_BINARY].body = BYTES("line one\nline two\xff\xfe\x00 end");
}

/* ---- comparing what comes out ---------------------------------------------- */

typedef struct {
    amqp_bytes_t headers; /* amqp_encode_table of the headers */
    amqp_message_t m;
} got_t;

static void drain(it_raw_t *raw, got_t *out, int n) {
    for (int i = 0; i < n; i++) {
        if (!it_raw_get(raw, dlq_name, &out[i].m, 5000))
            fail_msg("message %d of %d is not in the DLQ", i + 1, n);
        assert_true(out[i].m.properties._flags & AMQP_BASIC_HEADERS_FLAG);
        assert_true(chorus__table_encode(&out[i].m.properties.headers, &out[i].headers));
    }
    amqp_message_t extra;
    assert_false(it_raw_get(raw, dlq_name, &extra, 200));
}

static void assert_same_bytes(amqp_bytes_t a, amqp_bytes_t b) {
    assert_int_equal(a.len, b.len);
    if (a.len)
        assert_memory_equal(a.bytes, b.bytes, a.len);
}

static void assert_same_message(const got_t *a, const got_t *b) {
    const amqp_basic_properties_t *p = &a->m.properties, *q = &b->m.properties;
    assert_same_bytes(a->headers, b->headers);
    assert_same_bytes(a->m.body, b->m.body);
    assert_int_equal(p->_flags, q->_flags);
#define SAME(f, flag) if (p->_flags & (flag)) assert_same_bytes(p->f, q->f)
    SAME(content_type, AMQP_BASIC_CONTENT_TYPE_FLAG);
    SAME(content_encoding, AMQP_BASIC_CONTENT_ENCODING_FLAG);
    SAME(correlation_id, AMQP_BASIC_CORRELATION_ID_FLAG);
    SAME(reply_to, AMQP_BASIC_REPLY_TO_FLAG);
    SAME(expiration, AMQP_BASIC_EXPIRATION_FLAG);
    SAME(message_id, AMQP_BASIC_MESSAGE_ID_FLAG);
    SAME(type, AMQP_BASIC_TYPE_FLAG);
    SAME(user_id, AMQP_BASIC_USER_ID_FLAG);
    SAME(app_id, AMQP_BASIC_APP_ID_FLAG);
    SAME(cluster_id, AMQP_BASIC_CLUSTER_ID_FLAG);
#undef SAME
    assert_int_equal(p->delivery_mode, q->delivery_mode);
    assert_int_equal(p->priority, q->priority);
    assert_true(p->timestamp == q->timestamp);
}

static const cJSON *note_with(const cJSON *msg, const char *part) {
    const cJSON *n;
    cJSON_ArrayForEach(n, cJSON_GetObjectItem(msg, "notes")) if (strstr(n->valuestring, part)) return n;
    return NULL;
}

static const char *str_of(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- the test ---------------------------------------------------------------- */

static void nothing_left_out(void **state) {
    (void)state;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    snprintf(tool, sizeof(tool), "%s/../lib/tools/chorus-dlq", dirname(exe));
    if (access(tool, X_OK) != 0)
        fail_msg("%s is missing (build it)", tool);
    snprintf(outdir, sizeof(outdir), "/tmp/it_dlq.%ld", (long)getpid());
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", outdir);
    assert_int_equal(system(cmd), 0);

    /* the topology, as chorus declares it */
    chorus_t *ch = it_start(it_conf(SERVICE));
    snprintf(dlq_name, sizeof(dlq_name), "%s", chorus_dlq_name(ch));
    snprintf(svc_queue, sizeof(svc_queue), "%s", chorus_queue_name(ch));
    chorus_destroy(ch);

    amqp_pool_t pool;
    init_amqp_pool(&pool, 65536);
    msg_t m[NMSG];
    build(m, &pool);
    it_raw_t *raw = it_raw_open();
    for (int i = 0; i < NMSG; i++)
        publish(raw, dlq_name, &m[i].p, m[i].body);
    assert_int_equal(it_raw_count(raw, dlq_name), NMSG);

    /* the library hands back every one, as JSON */
    char err[512];
    chorus_dlq_t *q = chorus_dlq_open(it_amqp_url(), it_ns(), SERVICE, err, sizeof(err));
    if (!q)
        fail_msg("%s", err);
    assert_int_equal(chorus_dlq_fetch(q, 0), CHORUS_OK);
    assert_int_equal(chorus_dlq_count(q), NMSG);
    for (size_t i = 0; i < NMSG; i++) {
        const chorus_dead_letter_t *dl = chorus_dlq_at(q, i);
        char *j = chorus_dead_letter_json(dl);
        if (!j)
            fail_msg("message %zu has no JSON", i + 1);
        cJSON *o = parse(j);
        if (i == M_DEEP) {
            assert_string_equal(str_of(o, "reason"), "malformed");
            assert_string_equal(str_of(o, "body"), "deep headers, not an envelope");
            assert_non_null(note_with(o, "headers[\"x-deep\"]"));
            assert_non_null(note_with(o, "nested deeper than 32 levels: shown as base64"));
        } else if (i == M_BROKER_LIMIT) {
            assert_string_equal(str_of(o, "reason"), "delivery-limit");
            assert_string_equal(str_of(o, "original_queue"), svc_queue);
            assert_string_equal(str_of(o, "original_routing_key"), "order.OrderPlaced");
            assert_string_equal(str_of(o, "time"), "2023-11-14T22:13:20.000Z");
            assert_non_null(strstr(str_of(o, "error"), "x-delivery-limit"));
            assert_non_null(note_with(o, "the broker dead-lettered this message itself"));
            assert_string_equal(chorus_dead_letter_fault(dl, "reason"), "delivery-limit");
        } else if (i == M_BROKER_REJECTED) {
            assert_string_equal(str_of(o, "reason"), "unreadable");
            assert_non_null(strstr(str_of(o, "error"), "rejected it unread"));
            assert_string_equal(str_of(o, "body_base64"), "AAEgdG9vIGJpZyB0byByZWFk");
        } else if (i == M_KINDS) {
            const cJSON *h = cJSON_GetObjectItem(o, "headers");
            assert_string_equal(str_of(h, "l max"), "9223372036854775807");
            assert_string_equal(str_of(h, "dup"), "one");
            assert_true(cJSON_GetObjectItem(h, "dup (2)")->valuedouble == 2);
            assert_non_null(note_with(o, "timestamp 253402300800 is after the year 9999"));
            assert_non_null(note_with(o, "not UTF-8 text"));
            assert_true(cJSON_IsObject(cJSON_GetObjectItem(o, "envelope")));
        } else if (i == M_PLAIN) {
            assert_string_equal(str_of(o, "dropped_headers"), "x-big (and 2 more)");
            assert_string_equal(str_of(o, "reason"), "rejected");
            assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "envelope"),
                                                                "data"), "n")->valuedouble ==
                        9007199254740991.0);
        }
        cJSON_Delete(o);
        free(j);
    }
    chorus_dlq_close(q);

    /* the tool shows every one, the deep one with its note */
    char *out;
    assert_int_equal(run_tool(&out, NULL, "show " SERVICE), 0);
    assert_int_equal(count_of(out, "--- #"), NMSG);
    assert_non_null(strstr(out, "--- #2  event"));
    assert_non_null(strstr(out, "body (not an envelope): deep headers, not an envelope"));
    assert_non_null(strstr(out, "nested deeper than 32 levels: shown as base64"));
    assert_non_null(strstr(out, "reason                delivery-limit"));
    assert_non_null(strstr(out, "dropped_headers       x-big (and 2 more)"));
    free(out);
    assert_int_equal(run_tool(&out, NULL, "--json show " SERVICE), 0);
    cJSON *shown = parse(out);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(shown, "messages")), NMSG);
    cJSON_Delete(shown);
    free(out);
    assert_int_equal(run_tool(&out, NULL, "--json list " SERVICE), 0);
    assert_non_null(strstr(out, "\"reason\":\"delivery-limit\""));
    assert_non_null(strstr(out, "\"reason\":\"unreadable\""));
    assert_non_null(strstr(out, "\"total\":6"));
    free(out);
    assert_int_equal(run_tool(&out, NULL, "--json show " SERVICE " --id 0190f7d2-0000-7000-8000-000000000004"), 0);
    assert_non_null(strstr(out, "\"position\":4}"));
    assert_non_null(strstr(out, "\"reason\":\"delivery-limit\""));
    free(out);

    /* export; drain the DLQ (what it held, exactly); import; the same again */
    char file[300];
    snprintf(file, sizeof(file), "%s/export.jsonl", outdir);
    assert_int_equal(run_tool(&out, NULL, "export " SERVICE), 0);
    assert_int_equal(count_of(out, "\n"), NMSG);
    assert_int_equal(count_of(out, "\"headers_amqp_base64\""), 1);
    FILE *f = fopen(file, "w");
    fputs(out, f);
    fclose(f);
    free(out);
    got_t before[NMSG], after[NMSG];
    drain(raw, before, NMSG);
    /* the deep one's line carries the exact encoding of its headers */
    char *line = NULL;
    size_t lcap = 0;
    f = fopen(file, "r");
    for (int i = 0; i <= M_DEEP; i++)
        assert_true(getline(&line, &lcap, f) > 0);
    fclose(f);
    cJSON *deep = parse(line);
    amqp_bytes_t enc;
    assert_true(chorus__unbase64(str_of(deep, "headers_amqp_base64"), &enc));
    assert_same_bytes(enc, before[M_DEEP].headers);
    free(enc.bytes);
    cJSON_Delete(deep);
    free(line);
    assert_int_equal(run_tool(&out, file, "import " SERVICE), 1);
    assert_non_null(strstr(out, "imported 5 dead letters"));
    free(out);
    const char *e = tool_stderr();
    if (!strstr(e, "line 2: cannot be published: headers nest deeper than 64 levels"))
        fail_msg("import said: %s", e);
    drain(raw, after, NMSG - 1);
    for (int i = 0, k = 0; i < NMSG; i++) {
        if (i == M_DEEP)
            continue;
        assert_same_message(&before[i], &after[k++]);
    }
    for (int i = 0; i < NMSG; i++) {
        free(before[i].headers.bytes);
        amqp_destroy_message(&before[i].m);
        if (i < NMSG - 1) {
            free(after[i].headers.bytes);
            amqp_destroy_message(&after[i].m);
        }
    }

    /* requeue: refused where the count cannot go up or the copy would not fit */
    amqp_table_entry_t at_max[] = {ENTRY("x-chorus-requeue-count", FV(I64, i64, INT64_MAX))};
    amqp_table_entry_t not_int[] = {ENTRY("x-chorus-requeue-count", STR("3"))};
    amqp_table_entry_t fine[] = {ENTRY("x-chorus-requeue-count", FV(I32, i32, 5)),
                                 ENTRY("x-chorus-original-queue",
                                       FV(UTF8, bytes, amqp_cstring_bytes(svc_queue)))};
    size_t room = 131072 - CHORUS__HEADER_FRAME_OVERHEAD, sz;
    static char big[131072];
    memset(big, 'z', sizeof(big));
    amqp_table_entry_t huge[] = {ENTRY("x-big", FV(UTF8, bytes, ((amqp_bytes_t){0, big})))};
    amqp_table_t tables[] = {{1, at_max}, {1, not_int}, {1, huge}, {2, fine}};
    amqp_basic_properties_t hp = props_with(&tables[2]);
    assert_true(chorus__props_size(&hp, &sz, err, sizeof(err)));
    huge[0].value.value.bytes.len = room - sz - 30; /* fits; the copy, 58 bytes more, does not */
    for (int i = 0; i < 4; i++) {
        amqp_basic_properties_t p = props_with(&tables[i]);
        publish(raw, dlq_name, &p, amqp_cstring_bytes("requeue me"));
    }
    q = chorus_dlq_open(it_amqp_url(), it_ns(), SERVICE, err, sizeof(err));
    assert_non_null(q);
    assert_int_equal(chorus_dlq_fetch(q, 0), CHORUS_OK);
    assert_int_equal(chorus_dlq_count(q), 4);
    assert_int_equal(chorus_dlq_requeue(q, 0), CHORUS_ERR_INVALID_ARG);
    assert_non_null(strstr(chorus_dlq_last_error(q),
                           "x-chorus-requeue-count is already at its largest"));
    assert_int_equal(chorus_dlq_requeue(q, 1), CHORUS_ERR_INVALID_ARG);
    assert_non_null(strstr(chorus_dlq_last_error(q), "is not an integer (AMQP kind 'S')"));
    assert_int_equal(chorus_dlq_requeue(q, 2), CHORUS_ERR_TOO_LARGE);
    if (!strstr(chorus_dlq_last_error(q), "a frame of 131072 carries 131052"))
        fail_msg("requeue said: %s", chorus_dlq_last_error(q));
    assert_int_equal(chorus_dlq_requeue(q, 3), CHORUS_OK);
    assert_string_equal(chorus_dlq_last_error(q), "");
    assert_int_equal(chorus_dlq_finish(q), CHORUS_OK);
    chorus_dlq_close(q);
    assert_int_equal(it_raw_count(raw, dlq_name), 3); /* the refused ones stayed */
    amqp_message_t back;
    assert_true(it_raw_get(raw, svc_queue, &back, 5000));
    assert_int_equal(it_header_int(&back, "x-chorus-requeue-count", -1), 6);
    assert_int_equal(it_header_int(&back, "x-chorus-attempt", -1), 1);
    amqp_destroy_message(&back);
    /* filters see the derived reasons too */
    assert_int_equal(run_tool(&out, file, "--json import " SERVICE), 1);
    assert_string_equal(out, "{\"imported\":5,\"refused\":1}\n");
    free(out);
    assert_int_equal(run_tool(&out, NULL, "--json purge " SERVICE " --reason unreadable --yes"), 0);
    assert_non_null(strstr(out, "\"matched\":1,\"purged\":1,\"remaining\":7"));
    free(out);

    /* what it_cleanup does not know of */
    char name[300];
    snprintf(name, sizeof(name), "%s.%s.dlx", it_ns(), SERVICE);
    amqp_exchange_delete(raw->st, 1, amqp_cstring_bytes(name), 0);
    snprintf(name, sizeof(name), "%s.%s.retry", it_ns(), SERVICE);
    amqp_exchange_delete(raw->st, 1, amqp_cstring_bytes(name), 0);
    it_raw_close(raw);
    empty_amqp_pool(&pool);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", outdir);
    assert_int_equal(system(cmd), 0);
    const char *svcs[] = {SERVICE};
    it_cleanup(svcs, 1);
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {cmocka_unit_test(nothing_left_out)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
