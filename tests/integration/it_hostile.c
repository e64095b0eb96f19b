/*
 * Hostile messages against a real broker: none may stall the queue, none
 * may be handled forever, none may take unbounded memory (issue 8).
 *
 *   stall_headers       garbage body with ~130 KB of headers: dead-lettered
 *                       (the copy drops the largest headers and says so),
 *                       the good messages behind it handled and acked, no
 *                       reconnect
 *   retry_copy_fits     the same for a retry copy
 *   oversized_body      a body over message.max.bytes: rejected unread to
 *                       the DLQ by the broker, never allocated
 *   crash_loop_quorum   a message that kills its consumer every time: after
 *   crash_loop_classic  consume.delivery.limit deliveries it is dead-lettered
 *                       ("delivery-limit"), for both queue types
 *   broker_backstop     a quorum queue dead-letters by itself what keeps
 *                       coming back unsettled (x-delivery-limit)
 *   batch_memory        envelopes that decode to ~14 MB each: a batch stops
 *                       at consume.batch.max.decoded.bytes
 *   newer_schema        a schema_version nobody here knows is never handled
 */
#include "testlib.h"
#include "chorus/chorus_pg.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define AGG "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e"

typedef struct {
    int good, calls, retried_seen, dropped_seen;
    int fail_first;   /* retry later on the first attempt */
} ctx_t;

static chorus_outcome_t on_event(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                 void *opaque) {
    (void)ch, (void)env;
    ctx_t *c = opaque;
    c->calls++;
    if (c->fail_first && chorus_delivery_attempt(d) == 1) {
        chorus_delivery_set_error(d, "try again");
        return CHORUS_RETRY_LATER;
    }
    if (chorus_delivery_attempt(d) > 1)
        c->retried_seen++;
    c->good++;
    return CHORUS_HANDLED;
}

static char *envelope(const char *type, const char *data) {
    return it_envelope_text(type, AGG, data);
}

static chorus_t *consumer(const char *service, ctx_t *ctx, const char *const *extra) {
    chorus_conf_t *c = it_conf(service);
    char err[256];
    for (; extra && *extra; extra += 2)
        if (chorus_conf_set(c, extra[0], extra[1], err, sizeof(err)) != CHORUS_CONF_OK)
            fail_msg("%s", err);
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "PaymentSucceeded", on_event, ctx), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    return ch;
}

typedef struct {
    ctx_t *ctx;
    it_raw_t *raw;
    const char *dlq;
    int want_good, want_dlq;
} wait_t;

static bool settled(void *arg) {
    wait_t *w = arg;
    return w->ctx->good >= w->want_good && it_raw_count(w->raw, w->dlq) >= w->want_dlq;
}

/* Headers of about @p total bytes: one big string and a few small ones. */
static amqp_table_t big_headers(amqp_table_entry_t *e, char *big, size_t total) {
    memset(big, 'h', total);
    e[0] = (amqp_table_entry_t){.key = amqp_cstring_bytes("x-small-a"),
                                .value = {.kind = AMQP_FIELD_KIND_UTF8,
                                          .value.bytes = amqp_cstring_bytes("kept")}};
    e[1] = (amqp_table_entry_t){.key = amqp_cstring_bytes("x-huge"),
                                .value = {.kind = AMQP_FIELD_KIND_UTF8,
                                          .value.bytes = {.len = total, .bytes = big}}};
    e[2] = (amqp_table_entry_t){.key = amqp_cstring_bytes("x-small-b"),
                                .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 42}};
    return (amqp_table_t){.num_entries = 3, .entries = e};
}

static void stall_headers(void **state) {
    (void)state;
    ctx_t ctx = {0};
    chorus_t *cons = consumer("inventory", &ctx, NULL);
    it_raw_t *raw = it_raw_open();
    char ex[200], dlq[200], q[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    snprintf(dlq, sizeof(dlq), "%s.inventory.dlq", it_ns());
    snprintf(q, sizeof(q), "%s.inventory", it_ns());

    static char big[131072];
    amqp_table_entry_t e[3];
    amqp_table_t h = big_headers(e, big, 130950); /* just fits the frame of 131072 */
    const char *garbage = "\x01\x02 not json at all";
    it_raw_publish(raw, ex, "payment.PaymentSucceeded", garbage, strlen(garbage), &h);
    for (int i = 0; i < 5; i++) {
        char *good = envelope("PaymentSucceeded", "{\"n\":1}");
        it_raw_publish(raw, ex, "payment.PaymentSucceeded", good, strlen(good), NULL);
        free(good);
    }
    wait_t w = {&ctx, raw, dlq, 5, 1};
    assert_true(it_poll_until(&cons, 1, 15000, settled, &w));
    assert_int_equal(chorus_flush(cons, 5000), CHORUS_OK);
    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.reconnects, 0);   /* one message's problem, not the connection's */
    assert_int_equal(st.dead_lettered, 1);
    assert_int_equal(st.handled, 5);
    chorus_destroy(cons);                 /* what was not acked would now be ready again */
    assert_int_equal(it_raw_count(raw, q), 0);

    amqp_message_t m;
    assert_true(it_raw_get(raw, dlq, &m, 2000));
    char *reason = it_header_str(&m, "x-chorus-fault-reason");
    char *dropped = it_header_str(&m, "x-chorus-dropped-headers");
    char *small = it_header_str(&m, "x-small-a");
    assert_non_null(reason);
    assert_string_equal(reason, "malformed");
    assert_non_null(dropped);
    assert_non_null(dropped);
    assert_string_equal(dropped, "x-huge");
    assert_non_null(small);
    assert_string_equal(small, "kept");   /* only what had to go went */
    assert_int_equal(it_header_int(&m, "x-small-b", 0), 42);
    assert_null(it_header_str(&m, "x-huge"));
    assert_int_equal(m.body.len, strlen(garbage)); /* the body is never cut */
    assert_memory_equal(m.body.bytes, garbage, strlen(garbage));
    free(reason);
    free(dropped);
    free(small);
    amqp_destroy_message(&m);
    it_raw_close(raw);
    const char *svc[] = {"inventory"};
    it_cleanup(svc, 1);
}

/* An empty header name is allowed by AMQP and delivered by RabbitMQ, but
 * rabbitmq-c's amqp_table_clone() refuses it: holding the delivery must
 * not fail (that was a reconnect loop, and on quorum queues the delivery
 * limit then took the good messages along). */
static void empty_header_name(void **state) {
    (void)state;
    ctx_t ctx = {0};
    chorus_t *cons = consumer("billing", &ctx, NULL);
    it_raw_t *raw = it_raw_open();
    char ex[200], dlq[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    snprintf(dlq, sizeof(dlq), "%s.billing.dlq", it_ns());
    amqp_table_entry_t inner = {.key = {0, ""}, .value = {.kind = AMQP_FIELD_KIND_I32,
                                                          .value.i32 = 2}};
    amqp_table_entry_t e[2] = {
        {.key = {0, ""}, .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 1}},
        {.key = amqp_cstring_bytes("nested"),
         .value = {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {1, &inner}}},
    };
    amqp_table_t h = {2, e};
    it_raw_publish(raw, ex, "payment.PaymentSucceeded", "garbage", 7, &h);
    char *good = envelope("PaymentSucceeded", "{\"n\":4}");
    it_raw_publish(raw, ex, "payment.PaymentSucceeded", good, strlen(good), &h);
    for (int i = 0; i < 3; i++)
        it_raw_publish(raw, ex, "payment.PaymentSucceeded", good, strlen(good), NULL);
    free(good);
    wait_t w = {&ctx, raw, dlq, 4, 1};
    assert_true(it_poll_until(&cons, 1, 15000, settled, &w));
    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.reconnects, 0);
    assert_int_equal(st.handled, 4); /* the good one with the empty name too */
    amqp_message_t m;
    assert_true(it_raw_get(raw, dlq, &m, 2000));
    assert_int_equal(it_header_int(&m, "", 0), 1); /* carried into the DLQ as it was */
    amqp_destroy_message(&m);
    chorus_destroy(cons);
    it_raw_close(raw);
    const char *svc[] = {"billing"};
    it_cleanup(svc, 1);
}

static void retry_copy_fits(void **state) {
    (void)state;
    ctx_t ctx = {.fail_first = 1};
    chorus_t *cons = consumer("shipping", &ctx, NULL);
    it_raw_t *raw = it_raw_open();
    char ex[200], dlq[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    snprintf(dlq, sizeof(dlq), "%s.shipping.dlq", it_ns());
    static char big[131072];
    amqp_table_entry_t e[3];
    amqp_table_t h = big_headers(e, big, 130950);
    char *ev = envelope("PaymentSucceeded", "{\"n\":2}");
    it_raw_publish(raw, ex, "payment.PaymentSucceeded", ev, strlen(ev), &h);
    free(ev);
    wait_t w = {&ctx, raw, dlq, 1, 0};
    assert_true(it_poll_until(&cons, 1, 15000, settled, &w));
    assert_int_equal(ctx.retried_seen, 1); /* attempt 2 arrived: the retry copy was sent */
    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.reconnects, 0);
    assert_int_equal(it_raw_count(raw, dlq), 0);
    chorus_destroy(cons);
    it_raw_close(raw);
    const char *svc[] = {"shipping"};
    it_cleanup(svc, 1);
}

static void oversized_body(void **state) {
    (void)state;
    ctx_t ctx = {0};
    const char *extra[] = {"message.max.bytes", "4096", NULL};
    chorus_t *cons = consumer("payment", &ctx, extra);
    it_raw_t *raw = it_raw_open();
    char ex[200], dlq[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    snprintf(dlq, sizeof(dlq), "%s.payment.dlq", it_ns());
    size_t n = 200000;
    char *body = malloc(n);
    memset(body, '7', n);
    it_raw_publish(raw, ex, "payment.PaymentSucceeded", body, n, NULL);
    char *good = envelope("PaymentSucceeded", "{\"n\":3}");
    it_raw_publish(raw, ex, "payment.PaymentSucceeded", good, strlen(good), NULL);
    free(good);
    wait_t w = {&ctx, raw, dlq, 1, 1};
    assert_true(it_poll_until(&cons, 1, 15000, settled, &w));
    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.reconnects, 0);
    amqp_message_t m;
    assert_true(it_raw_get(raw, dlq, &m, 2000));
    assert_int_equal(m.body.len, n); /* intact: the broker dead-lettered it */
    char *why = it_header_str(&m, "x-first-death-reason");
    assert_non_null(why);
    assert_string_equal(why, "rejected");
    free(why);
    amqp_destroy_message(&m);
    free(body);
    chorus_destroy(cons);
    it_raw_close(raw);
    const char *svc[] = {"payment"};
    it_cleanup(svc, 1);
}

/* ---- crash loops ------------------------------------------------------- */

static int crash_fd = -1;

static chorus_outcome_t on_crash(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                 void *opaque) {
    (void)ch, (void)d, (void)env, (void)opaque;
    if (write(crash_fd, "x", 1) != 1)
        _exit(3);
    raise(SIGKILL); /* the poison: it kills whoever handles it */
    return CHORUS_HANDLED;
}

static chorus_t *crash_consumer(const char *qtype) {
    chorus_conf_t *c = it_conf("crasher");
    char err[256];
    assert_int_equal(chorus_conf_set(c, "topology.queue.type", qtype, err, sizeof(err)), 0);
    assert_int_equal(chorus_conf_set(c, "consume.delivery.limit", "3", err, sizeof(err)), 0);
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "PaymentSucceeded", on_crash, NULL), CHORUS_OK);
    return ch;
}

static bool never(void *arg) {
    (void)arg;
    return false;
}

static void crash_loop(const char *qtype) {
    char q[200], dlq[200];
    snprintf(q, sizeof(q), "%s.crasher", it_ns());
    snprintf(dlq, sizeof(dlq), "%s.crasher.dlq", it_ns());
    chorus_t *setup = crash_consumer(qtype); /* declares the topology */
    assert_int_equal(chorus_start(setup), CHORUS_OK);
    chorus_destroy(setup);
    it_raw_t *raw = it_raw_open();
    char *ev = envelope("PaymentSucceeded", "{\"poison\":true}");
    it_raw_publish(raw, "", q, ev, strlen(ev), NULL);
    free(ev);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int runs = 0, children = 0;
    for (; children < 10 && it_raw_count(raw, dlq) == 0; children++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_fd = fds[1];
            chorus_t *ch = crash_consumer(qtype);
            if (chorus_start(ch) != CHORUS_OK)
                _exit(2);
            it_poll_until(&ch, 1, 3000, never, NULL); /* handle, die, or time out */
            chorus_destroy(ch);
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        for (int t = 0; t < 20 && it_raw_count(raw, dlq) == 0 && it_raw_count(raw, q) == 0; t++)
            usleep(100 * 1000); /* the broker requeues what the dead child held */
    }
    close(fds[1]);
    char buf[64];
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof(buf))) > 0)
        runs += (int)got;
    close(fds[0]);
    /* bounded: handled consume.delivery.limit times, then dead-lettered */
    assert_int_equal(runs, 3);
    assert_int_equal(it_raw_count(raw, dlq), 1);
    assert_int_equal(it_raw_count(raw, q), 0);
    amqp_message_t m;
    assert_true(it_raw_get(raw, dlq, &m, 2000));
    char *reason = it_header_str(&m, "x-chorus-fault-reason");
    assert_non_null(reason);
    assert_string_equal(reason, "delivery-limit");
    free(reason);
    amqp_destroy_message(&m);
    it_raw_close(raw);
    const char *svc[] = {"crasher"};
    it_cleanup(svc, 1);
}

static void crash_loop_quorum(void **state) {
    (void)state;
    crash_loop("quorum");
}

static void crash_loop_classic(void **state) {
    (void)state;
    crash_loop("classic");
}

/* A quorum queue dead-letters what keeps coming back even with no chorus
 * to read it (the case of a message rabbitmq-c cannot decode). */
static void broker_backstop(void **state) {
    (void)state;
    char q[200], dlq[200];
    snprintf(q, sizeof(q), "%s.crasher", it_ns());
    snprintf(dlq, sizeof(dlq), "%s.crasher.dlq", it_ns());
    chorus_t *setup = crash_consumer("quorum");
    assert_int_equal(chorus_start(setup), CHORUS_OK);
    chorus_destroy(setup);
    it_raw_t *raw = it_raw_open();
    it_raw_publish(raw, "", q, "opaque", 6, NULL);
    int returns = 0;
    for (; returns < 20; returns++) {
        amqp_rpc_reply_t r = amqp_basic_get(raw->st, 1, amqp_cstring_bytes(q), 0);
        assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
            if (it_raw_count(raw, dlq) == 1)
                break;
            usleep(50 * 1000);
            continue;
        }
        uint64_t tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
        amqp_message_t m;
        assert_int_equal(amqp_read_message(raw->st, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
        amqp_destroy_message(&m);
        assert_int_equal(amqp_basic_nack(raw->st, 1, tag, 0, 1), 0);
    }
    assert_true(returns <= 5); /* x-delivery-limit 3: four returns at most */
    assert_int_equal(it_raw_count(raw, dlq), 1);
    amqp_message_t m;
    assert_true(it_raw_get(raw, dlq, &m, 2000));
    char *why = it_header_str(&m, "x-first-death-reason");
    assert_non_null(why);
    assert_string_equal(why, "delivery_limit");
    free(why);
    amqp_destroy_message(&m);
    it_raw_close(raw);
    const char *svc[] = {"crasher"};
    it_cleanup(svc, 1);
}

/* ---- memory ------------------------------------------------------------ */

static long rss_peak_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void batch_memory(void **state) {
    (void)state;
    ctx_t ctx = {0};
    const char *extra[] = {"consume.batch.max.decoded.bytes", "4194304", NULL};
    chorus_t *cons = consumer("warehouse", &ctx, extra);
    it_raw_t *raw = it_raw_open();
    char ex[200], dlq[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    snprintf(dlq, sizeof(dlq), "%s.warehouse.dlq", it_ns());
    /* {"a":[1,1,...]}: 350 KB of text, about 14 MB decoded */
    size_t n = 350000, o = 0;
    char *data = malloc(n + 16);
    o += (size_t)sprintf(data, "{\"a\":[1");
    while (o < n)
        o += (size_t)sprintf(data + o, ",1");
    strcpy(data + o, "]}");
    char *ev = envelope("PaymentSucceeded", data);
    free(data);
    for (int i = 0; i < 40; i++)
        it_raw_publish(raw, ex, "payment.PaymentSucceeded", ev, strlen(ev), NULL);
    free(ev);
    long before = rss_peak_kb();
    wait_t w = {&ctx, raw, dlq, 40, 0};
    assert_true(it_poll_until(&cons, 1, 60000, settled, &w));
    long grew_mb = (rss_peak_kb() - before) / 1024;
    fprintf(stderr, "peak RSS grew by %ld MB for 40 envelopes of ~14 MB decoded each\n", grew_mb);
    /* one batch of 40 would hold ~560 MB at once; bounded, a few at most.
     * (Under a memory checker, freed memory is quarantined, not reused:
     * resident size says nothing there.) */
    if (!getenv("CHORUS_MEMCHECK"))
        assert_true(grew_mb < 150);
    assert_int_equal(it_raw_count(raw, dlq), 0);
    chorus_destroy(cons);
    it_raw_close(raw);
    const char *svc[] = {"warehouse"};
    it_cleanup(svc, 1);
}

/* ---- schema versions ----------------------------------------------------- */

static chorus_err_t up_1_to_2(cJSON *data, int from, void *opaque) {
    (void)from, (void)opaque;
    cJSON_AddTrueToObject(data, "upcast");
    return CHORUS_OK;
}

static void publish_version(it_raw_t *raw, int v) {
    chorus_envelope_t *e = chorus_envelope_new("PaymentSucceeded", AGG, 1, "{}", NULL);
    chorus_envelope_set_schema_version(e, v);
    char *out, ex[200];
    size_t len;
    chorus_envelope_serialize(e, &out, &len);
    chorus_envelope_destroy(e);
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    it_raw_publish(raw, ex, "payment.PaymentSucceeded", out, len, NULL);
    free(out);
}

static void newer_schema(void **state) {
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        ctx_t ctx = {0};
        const char *extra[] = {"consume.newer.schema", mode ? "retry" : "dead-letter", NULL};
        chorus_conf_t *c = it_conf("ledger");
        char err[256];
        assert_int_equal(chorus_conf_set(c, extra[0], extra[1], err, sizeof(err)), 0);
        chorus_t *cons = chorus_new(c, err, sizeof(err));
        assert_int_equal(chorus_register(cons, "PaymentSucceeded", on_event, &ctx), CHORUS_OK);
        assert_int_equal(chorus_register_upcaster(cons, "PaymentSucceeded", 1, up_1_to_2, NULL),
                         CHORUS_OK);
        assert_int_equal(chorus_start(cons), CHORUS_OK);
        it_raw_t *raw = it_raw_open();
        char dlq[200];
        snprintf(dlq, sizeof(dlq), "%s.ledger.dlq", it_ns());
        publish_version(raw, 1);  /* upcast to 2: handled */
        publish_version(raw, 2);  /* known: handled */
        publish_version(raw, 99); /* newer than anything here */
        wait_t w = {&ctx, raw, dlq, 2, 1};
        assert_true(it_poll_until(&cons, 1, 20000, settled, &w));
        assert_int_equal(ctx.calls, 2); /* the handler never saw version 99 */
        amqp_message_t m;
        assert_true(it_raw_get(raw, dlq, &m, 2000));
        char *reason = it_header_str(&m, "x-chorus-fault-reason");
        char *error = it_header_str(&m, "x-chorus-fault-error");
        assert_non_null(reason);
        assert_string_equal(reason, "unknown-schema-version");
        assert_non_null(strstr(error, "schema_version 99 of PaymentSucceeded is newer than 2"));
        /* retried first (3 attempts) when the policy says so */
        assert_int_equal(it_header_int(&m, "x-chorus-fault-attempts", 0), mode ? 3 : 1);
        free(reason);
        free(error);
        amqp_destroy_message(&m);
        chorus_destroy(cons);
        it_raw_close(raw);
        const char *svc[] = {"ledger"};
        it_cleanup(svc, 1);
    }
}

int main(void) {
    it_amqp_url();
    if (getenv("CMOCKA_FILTER")) /* one test: CMOCKA_FILTER=crash_loop_classic */
        cmocka_set_test_filter(getenv("CMOCKA_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stall_headers),
        cmocka_unit_test(empty_header_name),
        cmocka_unit_test(retry_copy_fits),
        cmocka_unit_test(oversized_body),
        cmocka_unit_test(crash_loop_quorum),
        cmocka_unit_test(crash_loop_classic),
        cmocka_unit_test(broker_backstop),
        cmocka_unit_test(batch_memory),
        cmocka_unit_test(newer_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
