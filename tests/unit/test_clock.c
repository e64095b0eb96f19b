/*
 * The simulated clock: time moves only when told, and event ids, their
 * timestamps and backoff jitter come from the seed, so one seed gives one
 * sequence and another seed another; the system's clock is back after.
 */
#include "common_int.h"
#include "backoff_int.h"
#include "chorus/chorus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define EPOCH 1767225600000LL /* 2026-01-01T00:00:00Z */

static void ids(uint64_t seed, char out[5][37]) {
    chorus__sim_clock_t c;
    chorus__sim_clock_init(&c, seed, EPOCH);
    chorus__clock_use(&c.clock);
    for (int i = 0; i < 5; i++) {
        chorus_uuid_v7(out[i]);
        chorus__sim_clock_advance(&c, 3);
    }
    chorus__clock_use(NULL);
}

static void same_seed_same_ids(void **state) {
    (void)state;
    char a[5][37], b[5][37], c[5][37];
    ids(42, a);
    ids(42, b);
    ids(43, c);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(a[i], b[i]);
        assert_true(chorus_uuid_valid(a[i]));
        assert_string_not_equal(a[i], c[i]);
        if (i)
            assert_true(strcmp(a[i - 1], a[i]) < 0); /* still sorted by time */
    }
    /* the time in the id is the simulated one: 2026-01-01T00:00:01Z, then +3 ms */
    assert_int_equal(strncmp(a[0], "019b76da-abe8", 13), 0);
    assert_int_equal(strncmp(a[1], "019b76da-abeb", 13), 0);
}

static void time_moves_only_when_told(void **state) {
    (void)state;
    chorus__sim_clock_t c;
    chorus__sim_clock_init(&c, 7, EPOCH);
    chorus__clock_use(&c.clock);
    assert_int_equal(chorus_now_ms(), EPOCH + 1000);
    int64_t m0 = chorus__mono_ms();
    assert_int_equal(chorus__mono_ms(), m0);
    chorus__sim_clock_advance(&c, 250);
    assert_int_equal(chorus__mono_ms(), m0 + 250);
    assert_int_equal(chorus_now_ms(), EPOCH + 1250);
    chorus__sim_clock_advance(&c, -5); /* never back */
    assert_int_equal(chorus__mono_ms(), m0 + 250);
    chorus_envelope_t *e = chorus_envelope_new("Noted", "0190f7d2-1c2a-7b3c-8d4e-000000000001", 1,
                                               "{}", NULL);
    assert_non_null(e);
    assert_int_equal(chorus_envelope_timestamp_ms(e), EPOCH + 1250);
    chorus_envelope_destroy(e);
    chorus__clock_use(NULL);
    assert_true(chorus_now_ms() > EPOCH + 1250); /* the system's again */
}

static void jitter_from_the_seed(void **state) {
    (void)state;
    long first[2];
    for (int run = 0; run < 2; run++) {
        chorus__sim_clock_t c;
        chorus__sim_clock_init(&c, 99, EPOCH);
        chorus__clock_use(&c.clock);
        chorus__backoff_t b;
        chorus__backoff_init(&b, 1000, 60000);
        first[run] = chorus__backoff_failed(&b, 0);
        chorus__clock_use(NULL);
    }
    assert_int_equal(first[0], first[1]);
    assert_true(first[0] >= 500 && first[0] <= 1000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_seed_same_ids),
        cmocka_unit_test(time_moves_only_when_told),
        cmocka_unit_test(jitter_from_the_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
