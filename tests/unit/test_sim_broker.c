/*
 * The simulation's in-memory broker against the topology chorus really
 * declares: routing (topic words, the alternate exchange), redeclaration,
 * take/ack/requeue order, the delivery limit, and the retry queues' way
 * back to the service queue when their TTL runs out on the simulated clock.
 */
#include "sim_broker_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const chorus__retry_schedule_t sched = {.delays_ms = {1000, 5000}, .ndelays = 2,
                                               .max_attempts = 3};
static const char *const keys[] = {"order.OrderPlaced", "*.OrderCancelled"};

static chorus__sim_broker_t *broker_of(chorus__topology_t *t, int limit, bool quorum) {
    chorus__topology_spec_t spec = {.service = "payment", .ns = "sim", .quorum = quorum,
                                    .prefetch = 10, .bindings = keys, .nbindings = 2,
                                    .retry = &sched, .delivery_limit = limit};
    assert_int_equal(chorus__topology_build(&spec, t), CHORUS_OK);
    chorus__sim_broker_t *b = chorus__sim_broker_new();
    char err[256];
    assert_int_equal(chorus__sim_declare(b, t, err, sizeof(err)), CHORUS_OK);
    return b;
}

static chorus__sim_broker_t *broker(chorus__topology_t *t, int limit) {
    return broker_of(t, limit, true);
}

static int publish(chorus__sim_broker_t *b, const char *ex, const char *key, const char *body) {
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_MESSAGE_ID_FLAG,
                                 .message_id = amqp_cstring_bytes(body)};
    return chorus__sim_publish(b, ex, key, &p, amqp_cstring_bytes(body));
}

static const char *body_of(const chorus__sim_delivery_t *d) {
    static char s[64];
    snprintf(s, sizeof(s), "%.*s", (int)d->message->body.len, (const char *)d->message->body.bytes);
    return s;
}

static void topic_words(void **state) {
    (void)state;
    static const struct {
        const char *pattern, *key;
        bool match;
    } cases[] = {
        {"order.OrderPlaced", "order.OrderPlaced", true},
        {"order.OrderPlaced", "order.OrderPlacedX", false},
        {"*.OrderCancelled", "order.OrderCancelled", true},
        {"*.OrderCancelled", "OrderCancelled", false},
        {"*.OrderCancelled", "a.b.OrderCancelled", false},
        {"#", "", true},
        {"#", "a.b.c", true},
        {"order.#", "order", true},
        {"order.#", "order.a.b", true},
        {"order.#", "orders.a", false},
        {"#.b", "b", true},
        {"#.b", "x.y.b", true},
        {"#.b", "x.b.y", false},
        {"a.*", "a", false},
        {"a.*.#.c", "a.x.c", true},
        {"a.*.#.c", "a.c", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (chorus__sim_topic_match(cases[i].pattern, cases[i].key) != cases[i].match)
            fail_msg("'%s' against '%s' should %s", cases[i].pattern, cases[i].key,
                     cases[i].match ? "match" : "not match");
    }
}

static void routes_as_declared(void **state) {
    (void)state;
    chorus__topology_t t;
    chorus__sim_broker_t *b = broker(&t, 20);
    char err[256];
    assert_int_equal(chorus__sim_declare(b, &t, err, sizeof(err)), CHORUS_OK); /* again: fine */
    assert_int_equal(publish(b, "sim.events", "order.OrderPlaced", "1"), 1);
    assert_int_equal(publish(b, "sim.events", "shipping.OrderCancelled", "2"), 1);
    assert_int_equal(chorus__sim_ready(b, "sim.payment"), 2);
    /* nobody binds it: the alternate exchange keeps it visible */
    assert_int_equal(publish(b, "sim.events", "order.OrderNoted", "3"), 1);
    assert_int_equal(chorus__sim_ready(b, "sim.unrouted"), 1);
    assert_int_equal(publish(b, "nowhere", "x", "4"), 0);
    /* a redeclaration with other arguments is refused, as by the broker */
    chorus__topology_t other;
    chorus__topology_spec_t spec = {.service = "payment", .ns = "sim", .quorum = true,
                                    .bindings = keys, .nbindings = 2, .retry = &sched,
                                    .delivery_limit = 7};
    assert_int_equal(chorus__topology_build(&spec, &other), CHORUS_OK);
    assert_int_equal(chorus__sim_declare(b, &other, err, sizeof(err)), CHORUS_ERR_PRECONDITION);
    assert_non_null(strstr(err, "sim.payment"));
    chorus__topology_free(&other);
    chorus__topology_free(&t);
    chorus__sim_broker_free(b);
}

/* A classic queue puts a returned message back at its place: the head. */
static void take_ack_requeue(void **state) {
    (void)state;
    chorus__topology_t t;
    chorus__sim_broker_t *b = broker_of(&t, 20, false);
    for (const char *s = "abc"; *s; s++) {
        char one[2] = {*s, 0};
        assert_int_equal(publish(b, "sim.events", "order.OrderPlaced", one), 1);
    }
    chorus__sim_delivery_t d1, d2, d3;
    assert_true(chorus__sim_take(b, "sim.payment", 1, &d2)); /* "b" first: reordered */
    assert_string_equal(body_of(&d2), "b");
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d1));
    assert_string_equal(body_of(&d1), "a");
    assert_false(d1.redelivered);
    assert_int_equal(chorus__sim_unacked(b, "sim.payment"), 2);
    assert_int_equal(chorus__sim_ack(b, d2.tag), CHORUS_OK);
    assert_int_equal(chorus__sim_ack(b, d2.tag), CHORUS_ERR_NOT_FOUND); /* once */
    assert_int_equal(chorus__sim_nack(b, d1.tag, true), CHORUS_OK);
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d3)); /* back at the head */
    assert_string_equal(body_of(&d3), "a");
    assert_true(d3.redelivered);
    assert_int_equal(d3.delivery_count, 1);
    /* the consumer goes: what it held comes back, oldest first */
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d1));
    assert_string_equal(body_of(&d1), "c");
    chorus__sim_lose(b, "sim.payment");
    assert_int_equal(chorus__sim_unacked(b, "sim.payment"), 0);
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d1));
    assert_string_equal(body_of(&d1), "a");
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d2));
    assert_string_equal(body_of(&d2), "c");
    /* rejected without requeue: dead-lettered to the DLQ */
    assert_int_equal(chorus__sim_nack(b, d2.tag, false), CHORUS_OK);
    assert_int_equal(chorus__sim_ready(b, "sim.payment.dlq"), 1);
    assert_true(chorus__sim_take(b, "sim.payment.dlq", 0, &d3));
    assert_string_equal(d3.death, "rejected");
    assert_string_equal(d3.exchange, "sim.payment.dlx");
    chorus__topology_free(&t);
    chorus__sim_broker_free(b);
}

static void delivery_limit(void **state) {
    (void)state;
    chorus__topology_t t;
    chorus__sim_broker_t *b = broker(&t, 2);
    assert_int_equal(publish(b, "sim.events", "order.OrderPlaced", "x"), 1);
    chorus__sim_delivery_t d;
    for (int i = 0; i < 3; i++) { /* delivered, returned twice: the limit; the third return */
        assert_true(chorus__sim_take(b, "sim.payment", 0, &d));
        assert_int_equal(d.delivery_count, i);
        chorus__sim_lose(b, "sim.payment");
    }
    assert_int_equal(chorus__sim_ready(b, "sim.payment"), 0);
    assert_true(chorus__sim_take(b, "sim.payment.dlq", 0, &d));
    assert_string_equal(d.death, "delivery_limit");
    chorus__topology_free(&t);
    chorus__sim_broker_free(b);
}

static void retry_comes_back_after_its_ttl(void **state) {
    (void)state;
    chorus__sim_clock_t c;
    chorus__sim_clock_init(&c, 1, 1767225600000LL);
    chorus__clock_use(&c.clock);
    chorus__topology_t t;
    chorus__sim_broker_t *b = broker(&t, 20);
    assert_int_equal(publish(b, "sim.payment.retry", "sim.payment.retry.5000", "r"), 1);
    assert_int_equal(chorus__sim_ready(b, "sim.payment.retry.5000"), 1);
    chorus__sim_clock_advance(&c, 4999);
    assert_int_equal(chorus__sim_tick(b), 0);
    chorus__sim_clock_advance(&c, 1);
    assert_int_equal(chorus__sim_tick(b), 1);
    assert_int_equal(chorus__sim_ready(b, "sim.payment.retry.5000"), 0);
    chorus__sim_delivery_t d;
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d));
    assert_string_equal(body_of(&d), "r");
    assert_string_equal(d.death, "expired");
    assert_string_equal(d.routing_key, "sim.payment");
    chorus__clock_use(NULL);
    chorus__topology_free(&t);
    chorus__sim_broker_free(b);
}

/* A quorum queue puts it behind what arrived meanwhile (as RabbitMQ 3.10
 * does; topology.c says why the DLQ is classic), one delivery more. */
static void quorum_requeue_behind(void **state) {
    (void)state;
    chorus__topology_t t;
    chorus__sim_broker_t *b = broker(&t, 20);
    assert_int_equal(publish(b, "sim.events", "order.OrderPlaced", "a"), 1);
    chorus__sim_delivery_t d;
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d));
    assert_int_equal(publish(b, "sim.events", "order.OrderPlaced", "b"), 1);
    assert_int_equal(chorus__sim_nack(b, d.tag, true), CHORUS_OK);
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d));
    assert_string_equal(body_of(&d), "b");
    assert_true(chorus__sim_take(b, "sim.payment", 0, &d));
    assert_string_equal(body_of(&d), "a");
    assert_true(d.redelivered);
    assert_int_equal(d.delivery_count, 1);
    chorus__topology_free(&t);
    chorus__sim_broker_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(topic_words),
        cmocka_unit_test(routes_as_declared),
        cmocka_unit_test(take_ack_requeue),
        cmocka_unit_test(quorum_requeue_behind),
        cmocka_unit_test(delivery_limit),
        cmocka_unit_test(retry_comes_back_after_its_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
