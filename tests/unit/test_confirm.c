/* The confirm tracker: every publish is reported exactly once, whatever
 * order and grouping the broker's acks and nacks come in. */
#include "cm.h"
#include "confirm_int.h"

#include <string.h>

typedef struct {
    int acked[2048];
    int nacked[2048];
    int order[2048];
    int n;
} seen_t;

static void settle(void *item, chorus__confirm_result_t res, void *opaque) {
    seen_t *s = opaque;
    int id = (int)(intptr_t)item;
    if (res == CHORUS__CONFIRM_ACK)
        s->acked[id]++;
    else
        s->nacked[id]++;
    s->order[s->n++] = id;
}

static void add_n(chorus__confirms_t *c, int n) {
    for (int i = 1; i <= n; i++)
        assert_int_equal(chorus__confirms_add(c, (void *)(intptr_t)i), (uint64_t)i);
}

static void in_order_single(void **state) {
    (void)state;
    chorus__confirms_t c;
    seen_t s = {0};
    chorus__confirms_init(&c);
    add_n(&c, 3);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(chorus__confirms_settle(&c, (uint64_t)i, false,
                                                 CHORUS__CONFIRM_ACK, settle, &s), 1);
    assert_int_equal(s.n, 3);
    assert_int_equal(chorus__confirms_pending(&c), 0);
    chorus__confirms_free(&c);
}

static void multiple(void **state) {
    (void)state;
    chorus__confirms_t c;
    seen_t s = {0};
    chorus__confirms_init(&c);
    add_n(&c, 10);
    assert_int_equal(chorus__confirms_settle(&c, 6, true, CHORUS__CONFIRM_ACK, settle, &s), 6);
    for (int i = 1; i <= 6; i++)
        assert_int_equal(s.acked[i], 1);
    assert_int_equal(s.acked[7], 0);
    assert_int_equal(chorus__confirms_pending(&c), 4);
    /* tag 0 with multiple: everything so far */
    assert_int_equal(chorus__confirms_settle(&c, 0, true, CHORUS__CONFIRM_ACK, settle, &s), 4);
    assert_int_equal(chorus__confirms_pending(&c), 0);
    chorus__confirms_free(&c);
}

static void out_of_order(void **state) {
    (void)state;
    chorus__confirms_t c;
    seen_t s = {0};
    chorus__confirms_init(&c);
    add_n(&c, 9);
    /* quorum queues: 7 alone, then 3 alone, then "up to 9" */
    assert_int_equal(chorus__confirms_settle(&c, 7, false, CHORUS__CONFIRM_ACK, settle, &s), 1);
    assert_int_equal(chorus__confirms_settle(&c, 3, false, CHORUS__CONFIRM_ACK, settle, &s), 1);
    assert_ptr_equal(chorus__confirms_get(&c, 7), NULL);
    assert_ptr_equal(chorus__confirms_get(&c, 8), (void *)(intptr_t)8);
    assert_int_equal(chorus__confirms_settle(&c, 9, true, CHORUS__CONFIRM_ACK, settle, &s), 7);
    for (int i = 1; i <= 9; i++)
        assert_int_equal(s.acked[i], 1); /* exactly once each */
    /* a late duplicate of an already settled tag is harmless */
    assert_int_equal(chorus__confirms_settle(&c, 7, false, CHORUS__CONFIRM_ACK, settle, &s), 0);
    assert_int_equal(s.n, 9);
    chorus__confirms_free(&c);
}

static void nack_mixed(void **state) {
    (void)state;
    chorus__confirms_t c;
    seen_t s = {0};
    chorus__confirms_init(&c);
    add_n(&c, 5);
    assert_int_equal(chorus__confirms_settle(&c, 2, false, CHORUS__CONFIRM_NACK, settle, &s), 1);
    assert_int_equal(chorus__confirms_settle(&c, 4, true, CHORUS__CONFIRM_ACK, settle, &s), 3);
    assert_int_equal(chorus__confirms_settle(&c, 5, true, CHORUS__CONFIRM_NACK, settle, &s), 1);
    assert_int_equal(s.nacked[2], 1);
    assert_int_equal(s.acked[2], 0);
    assert_int_equal(s.acked[1] + s.acked[3] + s.acked[4], 3);
    assert_int_equal(s.nacked[5], 1);
    chorus__confirms_free(&c);
}

static void unknown_tag(void **state) {
    (void)state;
    chorus__confirms_t c;
    seen_t s = {0};
    chorus__confirms_init(&c);
    add_n(&c, 2);
    assert_int_equal(chorus__confirms_settle(&c, 3, false, CHORUS__CONFIRM_ACK, settle, &s), -1);
    assert_int_equal(chorus__confirms_settle(&c, 0, false, CHORUS__CONFIRM_ACK, settle, &s), -1);
    assert_int_equal(s.n, 0);
    chorus__confirms_free(&c);
}

static int reset_seen[64], reset_n;
static void on_reset(void *item, void *opaque) {
    (void)opaque;
    reset_seen[reset_n++] = (int)(intptr_t)item;
}

static void reset_returns_unsettled_in_order(void **state) {
    (void)state;
    chorus__confirms_t c;
    seen_t s = {0};
    chorus__confirms_init(&c);
    add_n(&c, 6);
    chorus__confirms_settle(&c, 2, false, CHORUS__CONFIRM_ACK, settle, &s);
    chorus__confirms_settle(&c, 5, false, CHORUS__CONFIRM_ACK, settle, &s);
    reset_n = 0;
    chorus__confirms_reset(&c, on_reset, NULL);
    assert_int_equal(reset_n, 4);
    int want[] = {1, 3, 4, 6};
    for (int i = 0; i < 4; i++)
        assert_int_equal(reset_seen[i], want[i]);
    /* numbering restarts with the new channel */
    assert_int_equal(chorus__confirms_add(&c, (void *)1), 1);
    chorus__confirms_free(&c);
}

/* Many publishes, acks in a shuffled mix of single and multiple: the ring
 * wraps and grows, and still every item is reported once. */
static void wraparound_stress(void **state) {
    (void)state;
    chorus__confirms_t c;
    static seen_t s;
    memset(&s, 0, sizeof(s));
    chorus__confirms_init(&c);
    uint32_t x = 12345;
    int issued = 0;
    uint64_t acked_upto = 0;
    while (issued < 2000) {
        int burst = 1 + (int)((x = x * 1103515245 + 12345) >> 16) % 50;
        for (int i = 0; i < burst && issued < 2000; i++)
            chorus__confirms_add(&c, (void *)(intptr_t)++issued);
        uint64_t top = (uint64_t)issued;
        /* a few singles out of order, then a multiple to somewhere */
        for (int k = 0; k < 3; k++) {
            uint64_t t = acked_upto + 1 + ((x = x * 1103515245 + 12345) >> 16) % (top - acked_upto);
            chorus__confirms_settle(&c, t, false, CHORUS__CONFIRM_ACK, settle, &s);
        }
        uint64_t m = acked_upto + ((x = x * 1103515245 + 12345) >> 16) % (top - acked_upto + 1);
        if (m > acked_upto) {
            chorus__confirms_settle(&c, m, true, CHORUS__CONFIRM_ACK, settle, &s);
            acked_upto = m;
        }
    }
    chorus__confirms_settle(&c, (uint64_t)issued, true, CHORUS__CONFIRM_ACK, settle, &s);
    for (int i = 1; i <= 2000; i++)
        assert_int_equal(s.acked[i], 1);
    assert_int_equal(s.n, 2000);
    assert_int_equal(chorus__confirms_pending(&c), 0);
    assert_int_equal(c.count, 0);
    chorus__confirms_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(in_order_single),
        cmocka_unit_test(multiple),
        cmocka_unit_test(out_of_order),
        cmocka_unit_test(nack_mixed),
        cmocka_unit_test(unknown_tag),
        cmocka_unit_test(reset_returns_unsettled_in_order),
        cmocka_unit_test(wraparound_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
