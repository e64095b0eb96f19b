/*
 * A publish the broker refuses does not loop: while the retry publish of a
 * delivery is refused (a policy makes the retry queues hold nothing and
 * reject-publish, as a quorum queue without a leader refuses during a node
 * loss), the delivery is given back after a doubling delay instead of at
 * once -- a few attempts in 3 s, where an immediate return would run
 * through the delivery limit (20) into the DLQ within a second.  Once the
 * policy is gone it retries as usual and ends "retries-exhausted".
 *
 * Classic queues: RabbitMQ 3.10's quorum queues ignore a max-length of 0;
 * this process's namespace is its own, so the type is free.
 */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int calls, redelivered_first;
} ctx_t;

static chorus_outcome_t on_event(chorus_t *ch, chorus_delivery_t *d,
                                 const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)env;
    ctx_t *c = opaque;
    if (chorus_delivery_attempt(d) == 1)
        c->redelivered_first++;
    c->calls++;
    chorus_delivery_set_error(d, "carrier unavailable");
    return CHORUS_RETRY_LATER;
}

static chorus_conf_t *classic(const char *svc) {
    char err[256];
    chorus_conf_t *c = it_conf(svc);
    assert_int_equal(chorus_conf_set(c, "topology.queue.type", "classic", err, sizeof(err)),
                     CHORUS_CONF_OK);
    return c;
}

static void refused_retry(void **state) {
    (void)state;
    ctx_t ctx = {0};
    char out[2048], policy[128], err[256];
    snprintf(policy, sizeof(policy), "%s-refuse-retries", it_ns());
    chorus_t *prod = it_start(classic("inventory"));
    chorus_t *cons = chorus_new(classic("refusal"), err, sizeof(err));
    assert_non_null(cons);
    assert_int_equal(chorus_register(cons, "InventoryReserved", on_event, &ctx), CHORUS_OK);
    assert_int_equal(chorus_start(cons), CHORUS_OK);
    if (it_ctl(out, sizeof(out),
               "set_policy --apply-to queues %s '^%s\\.refusal\\.retry\\.' "
               "'{\"max-length\":0,\"overflow\":\"reject-publish\"}'",
               policy, it_ns()) != 0)
        fail_msg("set_policy: %s", out);
    chorus_poll(cons, 1000); /* the policy reaches the queues */
    chorus_envelope_t *e = chorus_envelope_new("InventoryReserved",
        "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", 1, "{\"sku\":\"A-1\"}", NULL);
    assert_int_equal(chorus_publish(prod, e, NULL), CHORUS_OK);
    assert_int_equal(chorus_flush(prod, 5000), CHORUS_OK);
    int64_t t0 = chorus_now_ms();
    while (chorus_now_ms() - t0 < 3000)
        chorus_poll(cons, 100);
    int during = ctx.calls, first = ctx.redelivered_first;
    it_raw_t *raw = it_raw_open();
    int dead = it_raw_count(raw, chorus_dlq_name(cons));
    it_ctl(out, sizeof(out), "clear_policy %s", policy);
    fprintf(stderr, "%d attempts in 3 s while the retry publish was refused\n", during);
    assert_int_equal(dead, 0);
    assert_true(during >= 2 && during <= 7);
    assert_int_equal(first, during); /* given back, not retried: attempt 1 each time */

    /* the broker accepts again: the usual retries, then retries-exhausted */
    t0 = chorus_now_ms();
    while (it_raw_count(raw, chorus_dlq_name(cons)) == 0 && chorus_now_ms() - t0 < 15000)
        chorus_poll(cons, 200);
    amqp_message_t m;
    assert_true(it_raw_get(raw, chorus_dlq_name(cons), &m, 1000));
    char *reason = it_header_str(&m, "x-chorus-fault-reason");
    assert_string_equal(reason, "retries-exhausted");
    free(reason);
    amqp_destroy_message(&m);
    it_raw_close(raw);
    chorus_destroy(prod);
    chorus_destroy(cons);
}

static int teardown(void **state) {
    (void)state;
    const char *svcs[] = {"inventory", "refusal"};
    it_cleanup(svcs, 2);
    return 0;
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(refused_retry, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
