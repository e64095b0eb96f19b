/*
 * Round trip through the real broker: a producer publishes an envelope with
 * every field set; a consumer's handler sees it intact and emits a follow-up
 * event; a raw tap queue shows both messages with their AMQP properties.
 */
#include "testlib.h"
#include "chorus/chorus_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

typedef struct {
    int received;
    int reports_ok;
    chorus_envelope_t *seen;
    int attempt;
} ctx_t;

static chorus_outcome_t on_placed(chorus_t *ch, chorus_delivery_t *d,
                                  const chorus_envelope_t *env, void *opaque) {
    (void)ch;
    ctx_t *c = opaque;
    c->received++;
    c->seen = chorus_envelope_dup(env);
    c->attempt = chorus_delivery_attempt(d);
    chorus_envelope_t *out = chorus_envelope_new("PaymentSucceeded",
        chorus_envelope_aggregate_id(env), 1, "{\"amount\":4999}", NULL);
    assert_non_null(out);
    assert_int_equal(chorus_emit(d, out), CHORUS_OK);
    return CHORUS_HANDLED;
}

static void on_report(chorus_t *ch, const chorus_envelope_t *env, chorus_err_t res,
                      void *msg_opaque, void *opaque) {
    (void)ch; (void)env;
    ctx_t *c = opaque;
    assert_ptr_equal(msg_opaque, (void *)0x1234);
    if (res == CHORUS_OK)
        c->reports_ok++;
}

static bool got_it(void *arg) {
    ctx_t *c = arg;
    return c->received == 1 && c->reports_ok == 1;
}

static void str_prop(const amqp_bytes_t *b, const char *want) {
    assert_int_equal(b->len, strlen(want));
    assert_memory_equal(b->bytes, want, b->len);
}

static void roundtrip(void **state) {
    (void)state;
    ctx_t ctx = {0};
    chorus_conf_t *pc = it_conf("order");
    chorus_conf_set_dr_cb(pc, on_report, &ctx);
    chorus_t *prod = it_start(pc);
    chorus_conf_t *cc = it_conf("payment");
    char err[256];
    chorus_t *cons = chorus_new(cc, err, sizeof(err));
    assert_non_null(cons);
    assert_int_equal(chorus_register(cons, "OrderPlaced", on_placed, &ctx), CHORUS_OK);
    /* the event below is of schema version 2: this handler reads it */
    assert_int_equal(chorus_register_schema_version(cons, "OrderPlaced", 2), CHORUS_OK);
    assert_int_equal(chorus_start(cons), CHORUS_OK);

    it_raw_t *raw = it_raw_open();
    char tap[200];
    snprintf(tap, sizeof(tap), "%s.payment.tap", it_ns());
    it_raw_tap(raw, tap);

    const char *data = "{\"order_id\":\"0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e\","
                       "\"customer_id\":\"0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0f\","
                       "\"items\":[{\"sku\":\"A-1\",\"qty\":2,\"note\":\"caf\xc3\xa9\"}],"
                       "\"total\":4999}";
    chorus_envelope_t *env = chorus_envelope_new("OrderPlaced",
        "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", 3, data, NULL);
    assert_non_null(env);
    chorus_envelope_set_correlation_id(env, "0190f7d2-1c2a-7b3c-8d4e-000000000001");
    chorus_envelope_set_causation_id(env, "0190f7d2-1c2a-7b3c-8d4e-000000000002");
    chorus_envelope_set_user_id(env, "0190f7d2-1c2a-7b3c-8d4e-000000000003");
    chorus_envelope_set_traceparent(env, TP);
    chorus_envelope_set_schema_version(env, 2);
    chorus_envelope_t *orig = chorus_envelope_dup(env);
    assert_int_equal(chorus_publish(prod, env, (void *)0x1234), CHORUS_OK);

    chorus_t *both[] = {prod, cons};
    assert_true(it_poll_until(both, 2, 15000, got_it, &ctx));
    assert_int_equal(chorus_flush(cons, 5000), CHORUS_OK);

    /* every envelope field intact */
    const chorus_envelope_t *s = ctx.seen;
    assert_string_equal(chorus_envelope_event_id(s), chorus_envelope_event_id(orig));
    assert_string_equal(chorus_envelope_event_type(s), "OrderPlaced");
    assert_string_equal(chorus_envelope_aggregate_id(s), chorus_envelope_aggregate_id(orig));
    assert_int_equal(chorus_envelope_version(s), 3);
    assert_int_equal(chorus_envelope_schema_version(s), 2);
    assert_string_equal(chorus_envelope_timestamp(s), chorus_envelope_timestamp(orig));
    assert_string_equal(chorus_envelope_data_json(s), chorus_envelope_data_json(orig));
    assert_string_equal(chorus_envelope_correlation_id(s), "0190f7d2-1c2a-7b3c-8d4e-000000000001");
    assert_string_equal(chorus_envelope_causation_id(s), "0190f7d2-1c2a-7b3c-8d4e-000000000002");
    assert_string_equal(chorus_envelope_user_id(s), "0190f7d2-1c2a-7b3c-8d4e-000000000003");
    assert_string_equal(chorus_envelope_traceparent(s), TP);
    assert_int_equal(ctx.attempt, 1);

    /* the tap saw the original and the emitted event, with properties */
    amqp_message_t m;
    assert_true(it_raw_get(raw, tap, &m, 5000));
    str_prop(&m.properties.message_id, chorus_envelope_event_id(orig));
    str_prop(&m.properties.correlation_id, "0190f7d2-1c2a-7b3c-8d4e-000000000001");
    str_prop(&m.properties.type, "OrderPlaced");
    str_prop(&m.properties.content_type, "application/json");
    str_prop(&m.properties.app_id, "order");
    assert_int_equal(m.properties.delivery_mode, 2);
    assert_int_equal((int64_t)m.properties.timestamp,
                     chorus_envelope_timestamp_ms(orig) / 1000);
    char *tp = it_header_str(&m, "traceparent");
    assert_non_null(tp);
    assert_string_equal(tp, TP);
    free(tp);
    amqp_destroy_message(&m);

    assert_true(it_raw_get(raw, tap, &m, 5000));
    chorus_envelope_t *follow = NULL;
    assert_int_equal(chorus_envelope_parse(m.body.bytes, m.body.len, NULL, &follow, NULL),
                     CHORUS_OK);
    assert_string_equal(chorus_envelope_event_type(follow), "PaymentSucceeded");
    /* chorus filled correlation (the flow's) and causation (the cause's id) */
    assert_string_equal(chorus_envelope_correlation_id(follow),
                        "0190f7d2-1c2a-7b3c-8d4e-000000000001");
    assert_string_equal(chorus_envelope_causation_id(follow), chorus_envelope_event_id(orig));
    assert_string_equal(chorus_envelope_traceparent(follow), TP);
    str_prop(&m.properties.app_id, "payment");
    str_prop(&m.properties.type, "PaymentSucceeded");
    str_prop(&m.properties.message_id, chorus_envelope_event_id(follow));
    chorus_envelope_destroy(follow);
    amqp_destroy_message(&m);

    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.handled, 1);
    assert_int_equal(st.published, 1);
    chorus_stats(prod, &st);
    assert_int_equal(st.published, 1);
    /* the consumer's queue is empty: the delivery was acked */
    assert_int_equal(it_raw_count(raw, chorus_queue_name(cons)), 0);

    chorus_envelope_destroy(orig);
    chorus_envelope_destroy(ctx.seen);
    it_raw_close(raw);
    chorus_destroy(prod);
    chorus_destroy(cons);
    const char *svcs[] = {"order", "payment"};
    it_cleanup(svcs, 2);
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {cmocka_unit_test(roundtrip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
