/*
 * Poison messages go to the DLQ at once, with fault headers, while the
 * consumer keeps handling good messages: malformed JSON, a missing field,
 * a wrong type, an event type without handler, and a handler's reject.
 */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int good;
    int rejected_calls;
} ctx_t;

static chorus_outcome_t on_event(chorus_t *ch, chorus_delivery_t *d,
                                 const chorus_envelope_t *env, void *opaque) {
    (void)ch;
    ctx_t *c = opaque;
    if (strstr(chorus_envelope_data_json(env), "\"poison\":true")) {
        c->rejected_calls++;
        chorus_delivery_set_error(d, "card number is not valid");
        return CHORUS_REJECT;
    }
    c->good++;
    return CHORUS_HANDLED;
}

static bool two_good(void *arg) { return ((ctx_t *)arg)->good == 2; }

static char *envelope(const char *type, const char *data) {
    return it_envelope_text(type, "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", data);
}

typedef struct {
    const char *reason;
    const char *error_part;
    const char *rk;
} want_t;

static void poison(void **state) {
    (void)state;
    ctx_t ctx = {0};
    chorus_conf_t *cc = it_conf("inventory");
    char err[256];
    chorus_t *cons = chorus_new(cc, err, sizeof(err));
    assert_non_null(cons);
    assert_int_equal(chorus_register(cons, "PaymentSucceeded", on_event, &ctx), CHORUS_OK);
    assert_int_equal(chorus_start(cons), CHORUS_OK);

    it_raw_t *raw = it_raw_open();
    char ex[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());

    char *good = envelope("PaymentSucceeded", "{\"n\":1}");
    char *rejected = envelope("PaymentSucceeded", "{\"poison\":true}");
    char *unknown = envelope("PaymentSucceeded", "{}");
    /* an event type nobody handles, published to a key the queue is bound to */
    char *p = strstr(unknown, "PaymentSucceeded");
    memcpy(p, "PaymentSucceedeX", 16);
    char *missing = envelope("PaymentSucceeded", "{}");
    p = strstr(missing, "\"aggregate_id\"");
    memcpy(p, "\"aggregate_xx\"", 14);
    const char *badjson = "{\"event_id\": \"not closed";
    const char *badtype = "{\"event_id\":\"0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e\","
                          "\"event_type\":\"PaymentSucceeded\",\"aggregate_id\":"
                          "\"0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e\",\"version\":\"one\","
                          "\"timestamp\":\"2026-03-14T10:00:00.000Z\",\"data\":{},\"metadata\":{}}";

    const char *rk = "payment.PaymentSucceeded";
    it_raw_publish(raw, ex, rk, badjson, strlen(badjson), NULL);
    it_raw_publish(raw, ex, rk, missing, strlen(missing), NULL);
    it_raw_publish(raw, ex, rk, good, strlen(good), NULL);
    it_raw_publish(raw, ex, rk, badtype, strlen(badtype), NULL);
    it_raw_publish(raw, ex, rk, unknown, strlen(unknown), NULL);
    it_raw_publish(raw, ex, rk, rejected, strlen(rejected), NULL);
    it_raw_publish(raw, ex, rk, good, strlen(good), NULL);

    chorus_t *one[] = {cons};
    assert_true(it_poll_until(one, 1, 15000, two_good, &ctx));
    /* the batch under way settles: its copies confirmed, its deliveries acked */
    assert_int_equal(chorus_flush(cons, 5000), CHORUS_OK);
    assert_int_equal(ctx.rejected_calls, 1);

    static const want_t want[] = {
        {"malformed", "", "payment.PaymentSucceeded"},
        {"malformed", "aggregate_id", "payment.PaymentSucceeded"},
        {"malformed", "version", "payment.PaymentSucceeded"},
        {"no-handler", "PaymentSucceedeX", "payment.PaymentSucceeded"},
        {"rejected", "card number is not valid", "payment.PaymentSucceeded"},
    };
    const char *dlq = chorus_dlq_name(cons);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        amqp_message_t m;
        if (!it_raw_get(raw, dlq, &m, 5000))
            fail_msg("DLQ message %zu (%s) missing", i, want[i].reason);
        char *reason = it_header_str(&m, "x-chorus-fault-reason");
        char *error = it_header_str(&m, "x-chorus-fault-error");
        char *oq = it_header_str(&m, "x-chorus-original-queue");
        char *ork = it_header_str(&m, "x-chorus-original-routing-key");
        char *svc = it_header_str(&m, "x-chorus-fault-service");
        char *when = it_header_str(&m, "x-chorus-fault-time");
        assert_non_null(reason);
        assert_string_equal(reason, want[i].reason);
        assert_non_null(error);
        if (!strstr(error, want[i].error_part))
            fail_msg("error '%s' does not mention '%s'", error, want[i].error_part);
        assert_true(strlen(error) > 0);
        assert_string_equal(oq, chorus_queue_name(cons));
        assert_string_equal(ork, want[i].rk);
        assert_string_equal(svc, "inventory");
        assert_non_null(when);
        assert_true(chorus_parse_timestamp(when) > 0);
        assert_int_equal(it_header_int(&m, "x-chorus-fault-attempts", -1), 1);
        assert_int_equal(m.properties.delivery_mode, 2);
        free(reason); free(error); free(oq); free(ork); free(svc); free(when);
        amqp_destroy_message(&m);
    }
    assert_int_equal(it_raw_count(raw, dlq), 0);
    assert_int_equal(it_raw_count(raw, chorus_queue_name(cons)), 0);
    chorus_stats_t st;
    chorus_stats(cons, &st);
    assert_int_equal(st.dead_lettered, 5);
    assert_int_equal(st.handled, 2);

    free(good); free(rejected); free(unknown); free(missing);
    it_raw_close(raw);
    chorus_destroy(cons);
    const char *svcs[] = {"inventory"};
    it_cleanup(svcs, 1);
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {cmocka_unit_test(poison)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
