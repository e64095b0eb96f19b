/* The retry schedule: which delay each attempt waits, when it ends. */
#include "cm.h"
#include "retry_int.h"

static void schedule_default(void **state) {
    (void)state;
    chorus_conf_t *conf = chorus_conf_new();
    chorus__retry_schedule_t s;
    chorus__retry_schedule_from_conf(conf, &s);
    assert_int_equal(s.ndelays, 3);
    assert_int_equal(s.delays_ms[0], 1000);
    assert_int_equal(s.delays_ms[2], 30000);
    assert_int_equal(s.max_attempts, 4);
    chorus__retry_decision_t d = chorus__retry_decide(&s, 1);
    assert_false(d.dead_letter);
    assert_int_equal(d.delay_index, 0);
    assert_int_equal(d.delay_ms, 1000);
    assert_int_equal(d.next_attempt, 2);
    d = chorus__retry_decide(&s, 3);
    assert_false(d.dead_letter);
    assert_int_equal(d.delay_ms, 30000);
    assert_int_equal(d.next_attempt, 4);
    assert_true(chorus__retry_decide(&s, 4).dead_letter);
    assert_true(chorus__retry_decide(&s, 99).dead_letter);
    chorus_conf_destroy(conf);
}

static void last_delay_repeats(void **state) {
    (void)state;
    chorus__retry_schedule_t s = {.delays_ms = {100, 200}, .ndelays = 2, .max_attempts = 6};
    long want[] = {100, 200, 200, 200, 200};
    for (int a = 1; a <= 5; a++) {
        chorus__retry_decision_t d = chorus__retry_decide(&s, a);
        assert_false(d.dead_letter);
        assert_int_equal(d.delay_ms, want[a - 1]);
    }
    assert_true(chorus__retry_decide(&s, 6).dead_letter);
}

static void no_delays_means_no_retries(void **state) {
    (void)state;
    chorus__retry_schedule_t s = {.ndelays = 0, .max_attempts = 5};
    assert_true(chorus__retry_decide(&s, 1).dead_letter);
    chorus__retry_schedule_t one = {.delays_ms = {50}, .ndelays = 1, .max_attempts = 1};
    assert_true(chorus__retry_decide(&one, 1).dead_letter);
}

static void parse_delays(void **state) {
    (void)state;
    long d[CHORUS__MAX_DELAYS];
    assert_int_equal(chorus__parse_delays("1s, 500ms,2000", d, CHORUS__MAX_DELAYS), 3);
    assert_int_equal(d[0], 1000);
    assert_int_equal(d[1], 500);
    assert_int_equal(d[2], 2000);
    assert_int_equal(chorus__parse_delays("", d, CHORUS__MAX_DELAYS), 0);
    assert_int_equal(chorus__parse_delays("1h", d, CHORUS__MAX_DELAYS), -1);
    assert_int_equal(chorus__parse_delays("-5", d, CHORUS__MAX_DELAYS), -1);
    assert_int_equal(chorus__parse_delays("1,2,3", d, 2), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(schedule_default),
        cmocka_unit_test(last_delay_repeats),
        cmocka_unit_test(no_delays_means_no_retries),
        cmocka_unit_test(parse_delays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
