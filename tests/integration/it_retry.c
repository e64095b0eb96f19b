/*
 * Delayed retries through the TTL queues (200 ms, 400 ms; 3 attempts):
 *  - a handler that always asks to retry sees attempts 1, 2, 3, each after
 *    at least its delay, then the message is in the DLQ with reason
 *    "retries-exhausted" and its attempt count;
 *  - a handler that asks twice and then succeeds handles it once, at
 *    attempt 3, and nothing reaches the DLQ.
 */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int attempts[16];
    int64_t at_ms[16];
    int calls;
    int succeed_at; /* 0: never */
    int handled;
} ctx_t;

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static chorus_outcome_t on_event(chorus_t *ch, chorus_delivery_t *d,
                                 const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)env;
    ctx_t *c = opaque;
    if (c->calls < 16) {
        c->attempts[c->calls] = chorus_delivery_attempt(d);
        c->at_ms[c->calls] = now_ms();
    }
    c->calls++;
    if (c->succeed_at && chorus_delivery_attempt(d) == c->succeed_at) {
        c->handled++;
        return CHORUS_HANDLED;
    }
    chorus_delivery_set_error(d, "warehouse API timed out (attempt %d)",
                              chorus_delivery_attempt(d));
    return CHORUS_RETRY_LATER;
}

static bool three_calls(void *arg) { return ((ctx_t *)arg)->calls >= 3; }

static chorus_t *consumer(const char *svc, ctx_t *ctx) {
    char err[256];
    chorus_conf_t *c = it_conf(svc);
    /* the production default: RabbitMQ's at-least-once dead-lettering */
    assert_int_equal(chorus_conf_set(c, "topology.retry.strategy", "at-least-once", err,
                                     sizeof(err)), CHORUS_CONF_OK);
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "InventoryReserved", on_event, ctx), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    return ch;
}

static void publish_one(chorus_t *prod) {
    chorus_envelope_t *e = chorus_envelope_new("InventoryReserved",
        "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", 1, "{\"sku\":\"A-1\"}", NULL);
    assert_int_equal(chorus_publish(prod, e, NULL), CHORUS_OK);
    assert_int_equal(chorus_flush(prod, 5000), CHORUS_OK);
}

static void exhausted(void **state) {
    (void)state;
    ctx_t ctx = {0};
    chorus_t *prod = it_start(it_conf("inventory"));
    chorus_t *cons = consumer("shipping", &ctx);
    publish_one(prod);
    chorus_t *one[] = {cons};
    assert_true(it_poll_until(one, 1, 15000, three_calls, &ctx));

    it_raw_t *raw = it_raw_open();
    amqp_message_t m;
    assert_true(it_raw_get(raw, chorus_dlq_name(cons), &m, 5000));
    for (int i = 0; i < 3; i++)
        assert_int_equal(ctx.attempts[i], i + 1);
    /* each retry waited at least its queue's TTL */
    assert_true(ctx.at_ms[1] - ctx.at_ms[0] >= 190);
    assert_true(ctx.at_ms[2] - ctx.at_ms[1] >= 390);
    char *reason = it_header_str(&m, "x-chorus-fault-reason");
    char *error = it_header_str(&m, "x-chorus-fault-error");
    char *ork = it_header_str(&m, "x-chorus-original-routing-key");
    assert_string_equal(reason, "retries-exhausted");
    assert_non_null(strstr(error, "attempt 3"));
    assert_string_equal(ork, "inventory.InventoryReserved");
    assert_int_equal(it_header_int(&m, "x-chorus-fault-attempts", -1), 3);
    assert_int_equal(it_header_int(&m, "x-chorus-attempt", -1), 3);
    free(reason); free(error); free(ork);
    amqp_destroy_message(&m);

    /* no fourth attempt comes */
    chorus_poll(cons, 800);
    assert_int_equal(ctx.calls, 3);
    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.retried, 2);
    assert_int_equal(st.dead_lettered, 1);
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(cons)), 0);
    it_raw_close(raw);
    chorus_destroy(prod);
    chorus_destroy(cons);
}

static void succeeds_on_third(void **state) {
    (void)state;
    ctx_t ctx = {.succeed_at = 3};
    chorus_t *prod = it_start(it_conf("inventory"));
    chorus_t *cons = consumer("billing", &ctx);
    publish_one(prod);
    chorus_t *one[] = {cons};
    assert_true(it_poll_until(one, 1, 15000, three_calls, &ctx));
    chorus_poll(cons, 800);
    assert_int_equal(ctx.calls, 3);
    assert_int_equal(ctx.handled, 1);
    it_raw_t *raw = it_raw_open();
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(cons)), 0);
    assert_int_equal(it_raw_count(raw, chorus_queue_name(cons)), 0);
    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.retried, 2);
    assert_int_equal(st.handled, 1);
    assert_int_equal(st.dead_lettered, 0);
    it_raw_close(raw);
    chorus_destroy(prod);
    chorus_destroy(cons);
}

static int teardown(void **state) {
    (void)state;
    const char *svcs[] = {"inventory", "shipping", "billing"};
    it_cleanup(svcs, 3);
    return 0;
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exhausted),
        cmocka_unit_test(succeeds_on_third),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
