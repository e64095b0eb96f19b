/* Topology plan: names and arguments, as two services would declare them. */
#include "cm.h"
#include "topology_int.h"

#include <stdlib.h>
#include <string.h>

static const chorus__topo_op_t *find(const chorus__topology_t *t, chorus__op_kind_t k,
                                     const char *name, const char *key) {
    for (int i = 0; i < t->nops; i++)
        if (t->ops[i].kind == k && strcmp(t->ops[i].name, name) == 0 &&
            (!key || strcmp(t->ops[i].key, key) == 0))
            return &t->ops[i];
    return NULL;
}

static chorus__retry_schedule_t sched = {.delays_ms = {1000, 5000, 30000},
                                         .ndelays = 3, .max_attempts = 4};

static void build(chorus__topology_t *t, bool quorum) {
    static const char *const keys[] = {"*.OrderPlaced", "order.OrderCancelled"};
    chorus__topology_spec_t spec = {.service = "payment", .ns = "chorus", .quorum = quorum,
                                    .prefetch = 50, .bindings = keys, .nbindings = 2,
                                    .retry = &sched};
    assert_int_equal(chorus__topology_build(&spec, t), CHORUS_OK);
}

static void names(void **state) {
    (void)state;
    chorus__topology_t t;
    build(&t, true);
    assert_string_equal(t.names.exchange, "chorus.events");
    assert_string_equal(t.names.unrouted_exchange, "chorus.events.unrouted");
    assert_string_equal(t.names.unrouted_queue, "chorus.unrouted");
    assert_string_equal(t.names.dlx, "chorus.payment.dlx");
    assert_string_equal(t.names.retry_exchange, "chorus.payment.retry");
    assert_string_equal(t.names.queue, "chorus.payment");
    assert_string_equal(t.names.dlq, "chorus.payment.dlq");
    assert_int_equal(t.names.nretry, 3);
    assert_string_equal(t.names.retry[0], "chorus.payment.retry.1000");
    assert_string_equal(t.names.retry[2], "chorus.payment.retry.30000");
    chorus__topology_free(&t);
}

static void exchanges(void **state) {
    (void)state;
    chorus__topology_t t;
    build(&t, true);
    const chorus__topo_op_t *ex = find(&t, CHORUS__OP_EXCHANGE, "chorus.events", NULL);
    assert_non_null(ex);
    assert_string_equal(ex->type, "topic");
    const chorus__arg_t *ae = chorus__op_arg(ex, "alternate-exchange");
    assert_non_null(ae);
    assert_string_equal(ae->s, "chorus.events.unrouted");
    ex = find(&t, CHORUS__OP_EXCHANGE, "chorus.events.unrouted", NULL);
    assert_non_null(ex);
    assert_string_equal(ex->type, "fanout");
    /* the service's own exchanges: nothing goes through amq.default */
    ex = find(&t, CHORUS__OP_EXCHANGE, "chorus.payment.dlx", NULL);
    assert_non_null(ex);
    assert_string_equal(ex->type, "direct");
    ex = find(&t, CHORUS__OP_EXCHANGE, "chorus.payment.retry", NULL);
    assert_non_null(ex);
    assert_string_equal(ex->type, "direct");
    for (int i = 0; i < t.nops; i++)
        assert_true(t.ops[i].kind != CHORUS__OP_EXCHANGE || strcmp(t.ops[i].name, "") != 0);
    /* the alternate exchange is declared before the exchange naming it */
    int ae_at = -1, ev_at = -1;
    for (int i = 0; i < t.nops; i++) {
        if (strcmp(t.ops[i].name, "chorus.events.unrouted") == 0 && ae_at < 0) ae_at = i;
        if (strcmp(t.ops[i].name, "chorus.events") == 0) ev_at = i;
    }
    assert_true(ae_at < ev_at);
    chorus__topology_free(&t);
}

static void queues_and_bindings(void **state) {
    (void)state;
    chorus__topology_t t;
    build(&t, true);
    const chorus__topo_op_t *q = find(&t, CHORUS__OP_QUEUE, "chorus.payment", NULL);
    assert_non_null(q);
    assert_string_equal(chorus__op_arg(q, "x-queue-type")->s, "quorum");
    /* the backstop: the broker dead-letters what keeps coming back */
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-exchange")->s, "chorus.payment.dlx");
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-routing-key")->s, "payment");
    const chorus__arg_t *lim = chorus__op_arg(q, "x-delivery-limit");
    assert_true(lim && lim->is_int && lim->i == 20);
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-strategy")->s, "at-least-once");
    assert_string_equal(chorus__op_arg(q, "x-overflow")->s, "reject-publish");
    assert_non_null(find(&t, CHORUS__OP_BIND, "chorus.payment", "*.OrderPlaced"));
    assert_non_null(find(&t, CHORUS__OP_BIND, "chorus.payment", "order.OrderCancelled"));
    /* the DLQ stays classic even when the service queue is quorum */
    q = find(&t, CHORUS__OP_QUEUE, "chorus.payment.dlq", NULL);
    assert_non_null(q);
    assert_string_equal(chorus__op_arg(q, "x-queue-type")->s, "classic");
    const chorus__topo_op_t *b = find(&t, CHORUS__OP_BIND, "chorus.payment.dlq", "payment");
    assert_non_null(b);
    assert_string_equal(b->source, "chorus.payment.dlx");
    /* retry queues and the counted redelivery go through the retry exchange */
    b = find(&t, CHORUS__OP_BIND, "chorus.payment.retry.5000", "chorus.payment.retry.5000");
    assert_non_null(b);
    assert_string_equal(b->source, "chorus.payment.retry");
    b = find(&t, CHORUS__OP_BIND, "chorus.payment", "chorus.payment");
    assert_non_null(b);
    assert_string_equal(b->source, "chorus.payment.retry");
    b = find(&t, CHORUS__OP_BIND, "chorus.unrouted", "");
    assert_non_null(b);
    assert_string_equal(b->source, "chorus.events.unrouted");
    chorus__topology_free(&t);
}

static void retry_queue_arguments(void **state) {
    (void)state;
    chorus__topology_t t;
    build(&t, true);
    const chorus__topo_op_t *q = find(&t, CHORUS__OP_QUEUE, "chorus.payment.retry.5000", NULL);
    assert_non_null(q);
    const chorus__arg_t *a = chorus__op_arg(q, "x-message-ttl");
    assert_true(a && a->is_int && a->i == 5000);
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-exchange")->s, "chorus.payment.retry");
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-routing-key")->s, "chorus.payment");
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-strategy")->s, "at-least-once");
    assert_string_equal(chorus__op_arg(q, "x-overflow")->s, "reject-publish");
    chorus__topology_free(&t);
}

static void retry_at_most_once(void **state) {
    (void)state;
    chorus__topology_t t;
    chorus__topology_spec_t spec = {.service = "payment", .ns = "chorus", .quorum = true,
                                    .prefetch = 1, .retry = &sched, .retry_at_most_once = true};
    assert_int_equal(chorus__topology_build(&spec, &t), CHORUS_OK);
    const chorus__topo_op_t *q = find(&t, CHORUS__OP_QUEUE, "chorus.payment.retry.1000", NULL);
    assert_string_equal(chorus__op_arg(q, "x-queue-type")->s, "quorum");
    assert_null(chorus__op_arg(q, "x-dead-letter-strategy"));
    assert_null(chorus__op_arg(q, "x-overflow"));
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-routing-key")->s, "chorus.payment");
    chorus__topology_free(&t);
}

static void classic(void **state) {
    (void)state;
    chorus__topology_t t;
    build(&t, false);
    const chorus__topo_op_t *q = find(&t, CHORUS__OP_QUEUE, "chorus.payment", NULL);
    assert_string_equal(chorus__op_arg(q, "x-queue-type")->s, "classic");
    /* a classic queue has no delivery limit: chorus counts (consumer.c) */
    assert_null(chorus__op_arg(q, "x-delivery-limit"));
    assert_string_equal(chorus__op_arg(q, "x-dead-letter-exchange")->s, "chorus.payment.dlx");
    q = find(&t, CHORUS__OP_QUEUE, "chorus.payment.retry.1000", NULL);
    assert_null(chorus__op_arg(q, "x-dead-letter-strategy"));
    chorus__topology_free(&t);
}

/* consume.single.active: the service queue alone gets the boolean
 * argument (the retry queues and the DLQ have one consumer or none). */
static void single_active(void **state) {
    (void)state;
    chorus__topology_t t;
    build(&t, true);
    const chorus__topo_op_t *q = find(&t, CHORUS__OP_QUEUE, "chorus.payment", NULL);
    assert_null(chorus__op_arg(q, "x-single-active-consumer"));
    chorus__topology_free(&t);
    chorus__topology_spec_t spec = {.service = "payment", .ns = "chorus", .quorum = true,
                                    .prefetch = 1, .retry = &sched, .single_active = true};
    assert_int_equal(chorus__topology_build(&spec, &t), CHORUS_OK);
    q = find(&t, CHORUS__OP_QUEUE, "chorus.payment", NULL);
    const chorus__arg_t *a = chorus__op_arg(q, "x-single-active-consumer");
    assert_true(a && a->is_bool && a->i == 1);
    assert_null(chorus__op_arg(find(&t, CHORUS__OP_QUEUE, "chorus.payment.retry.1000", NULL),
                               "x-single-active-consumer"));
    assert_null(chorus__op_arg(find(&t, CHORUS__OP_QUEUE, "chorus.payment.dlq", NULL),
                               "x-single-active-consumer"));
    /* exported for a definitions import with the same JSON types the
     * declaration sends: a boolean, a number, a string */
    char *json = chorus__topology_definitions(&t, "/");
    assert_non_null(json);
    assert_non_null(strstr(json, "\"x-single-active-consumer\":true"));
    assert_non_null(strstr(json, "\"x-delivery-limit\":20"));
    assert_non_null(strstr(json, "\"x-queue-type\":\"quorum\""));
    free(json);
    chorus__topology_free(&t);
}

/* Two services declare the shared objects with identical arguments. */
static void shared_objects_agree(void **state) {
    (void)state;
    chorus__topology_t a, b;
    build(&a, true);
    chorus__topology_spec_t spec = {.service = "order", .ns = "chorus", .quorum = true,
                                    .prefetch = 10, .bindings = NULL, .nbindings = 0,
                                    .retry = &sched};
    assert_int_equal(chorus__topology_build(&spec, &b), CHORUS_OK);
    const char *shared[] = {"chorus.events", "chorus.events.unrouted", "chorus.unrouted"};
    for (int i = 0; i < 3; i++) {
        const chorus__topo_op_t *x = NULL, *y = NULL;
        for (int k = 0; k < a.nops; k++)
            if (a.ops[k].kind != CHORUS__OP_BIND && strcmp(a.ops[k].name, shared[i]) == 0) x = &a.ops[k];
        for (int k = 0; k < b.nops; k++)
            if (b.ops[k].kind != CHORUS__OP_BIND && strcmp(b.ops[k].name, shared[i]) == 0) y = &b.ops[k];
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(x->nargs, y->nargs);
        assert_memory_equal(x->args, y->args, sizeof(x->args[0]) * (size_t)x->nargs);
        assert_string_equal(x->type, y->type);
    }
    chorus__topology_free(&a);
    chorus__topology_free(&b);
}

static void too_long(void **state) {
    (void)state;
    char ns[300];
    memset(ns, 'n', sizeof(ns) - 1);
    ns[sizeof(ns) - 1] = '\0';
    chorus__names_t n;
    assert_int_equal(chorus__names_build(ns, "svc", &sched, &n), CHORUS_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names),
        cmocka_unit_test(exchanges),
        cmocka_unit_test(queues_and_bindings),
        cmocka_unit_test(retry_queue_arguments),
        cmocka_unit_test(retry_at_most_once),
        cmocka_unit_test(classic),
        cmocka_unit_test(single_active),
        cmocka_unit_test(shared_objects_agree),
        cmocka_unit_test(too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
