/*
 * An event no queue is bound to is not lost: the events exchange's
 * alternate exchange puts it in the unrouted queue, and the publisher's
 * delivery report says the broker took it.
 */
#include "testlib.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    int ok, failed;
} ctx_t;

static void on_report(chorus_t *ch, const chorus_envelope_t *env, chorus_err_t res,
                      void *msg_opaque, void *opaque) {
    (void)ch; (void)env; (void)msg_opaque;
    ctx_t *c = opaque;
    if (res == CHORUS_OK)
        c->ok++;
    else
        c->failed++;
}

static void unrouted(void **state) {
    (void)state;
    ctx_t ctx = {0};
    chorus_conf_t *c = it_conf("shipping");
    chorus_conf_set_dr_cb(c, on_report, &ctx);
    chorus_t *prod = it_start(c);
    chorus_envelope_t *e = chorus_envelope_new("ParcelLost",
        "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", 1, "{}", NULL);
    char id[37];
    strcpy(id, chorus_envelope_event_id(e));
    assert_int_equal(chorus_publish(prod, e, NULL), CHORUS_OK);
    assert_int_equal(chorus_flush(prod, 5000), CHORUS_OK);
    assert_int_equal(ctx.ok, 1);
    assert_int_equal(ctx.failed, 0);

    it_raw_t *raw = it_raw_open();
    char q[200];
    snprintf(q, sizeof(q), "%s.unrouted", it_ns());
    amqp_message_t m;
    assert_true(it_raw_get(raw, q, &m, 5000));
    assert_int_equal(m.properties.message_id.len, 36);
    assert_memory_equal(m.properties.message_id.bytes, id, 36);
    amqp_destroy_message(&m);
    assert_int_equal(it_raw_count(raw, q), 0);
    it_raw_close(raw);
    chorus_destroy(prod);
    const char *svcs[] = {"shipping"};
    it_cleanup(svcs, 1);
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {cmocka_unit_test(unrouted)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
