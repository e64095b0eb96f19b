/*
 * The metrics exposition formatter (metrics.c), no servers: label values
 * escaped, histogram buckets cumulative, every counter by name, gauges
 * absent until sampled, and why /readyz says not ready.
 */
#include "chorus_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static void escapes_label_values(void **state) {
    (void)state;
    char out[64];
    assert_true(chorus__metrics_escape("a\"b\\c\nd", out, sizeof(out)));
    assert_string_equal(out, "a\\\"b\\\\c\\nd");
    assert_false(chorus__metrics_escape("\"\"\"", out, 6)); /* needs 7 with the NUL */
    assert_true(chorus__metrics_escape("\"\"\"", out, 7));
    chorus__metrics_snap_t s = {.queue_ready = -1, .dlq_ready = -1, .outbox_backlog = -1,
                                .outbox_oldest_ms = -1};
    size_t len;
    char *t = chorus__metrics_format(&s, "pay\"ment", &len);
    assert_non_null(t);
    assert_non_null(strstr(t, "chorus_broker_up{service=\"pay\\\"ment\"} 0\n"));
    free(t);
}

static void buckets_are_cumulative(void **state) {
    (void)state;
    chorus__metrics_snap_t s = {.queue_ready = 3, .dlq_ready = -1, .outbox_backlog = 7,
                                .outbox_oldest_ms = 1500};
    chorus__hist_t *h = &s.hist[CHORUS__HIST_HANDLER];
    chorus__hist_observe(h, CHORUS__HIST_HANDLER, 50000);        /* 50 us: first bucket */
    chorus__hist_observe(h, CHORUS__HIST_HANDLER, 100000);       /* exactly 0.0001: le */
    chorus__hist_observe(h, CHORUS__HIST_HANDLER, 3000000);      /* 3 ms: le 0.005 */
    chorus__hist_observe(h, CHORUS__HIST_HANDLER, 60000000000u); /* 60 s: +Inf only */
    assert_int_equal(h->count, 4);
    size_t len;
    char *t = chorus__metrics_format(&s, "svc", &len);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    const char *want[] = {
        "# TYPE chorus_handler_duration_seconds histogram\n",
        "chorus_handler_duration_seconds_bucket{service=\"svc\",le=\"0.0001\"} 2\n",
        "chorus_handler_duration_seconds_bucket{service=\"svc\",le=\"0.0025\"} 2\n",
        "chorus_handler_duration_seconds_bucket{service=\"svc\",le=\"0.005\"} 3\n",
        "chorus_handler_duration_seconds_bucket{service=\"svc\",le=\"10\"} 3\n",
        "chorus_handler_duration_seconds_bucket{service=\"svc\",le=\"+Inf\"} 4\n",
        "chorus_handler_duration_seconds_sum{service=\"svc\"} 60.003150000\n",
        "chorus_handler_duration_seconds_count{service=\"svc\"} 4\n",
        "chorus_propagation_delay_seconds_bucket{service=\"svc\",le=\"+Inf\"} 0\n",
        "chorus_queue_messages_ready{service=\"svc\"} 3\n",
        "chorus_outbox_backlog{service=\"svc\"} 7\n",
        "chorus_outbox_oldest_age_seconds{service=\"svc\"} 1.500\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(t, want[i]))
            fail_msg("missing: %s\nin:\n%s", want[i], t);
    /* not sampled: absent, not a misleading 0 */
    assert_null(strstr(t, "chorus_dlq_messages_ready{"));
    /* the le="0.005" line comes after le="0.0025": buckets in order */
    assert_true(strstr(t, "le=\"0.005\"") > strstr(t, "le=\"0.0025\""));
    free(t);
}

static void every_counter_by_name(void **state) {
    (void)state;
    chorus__metrics_snap_t s = {.nstats = chorus_stat_count(), .queue_ready = -1, .dlq_ready = -1,
                                .outbox_backlog = -1, .outbox_oldest_ms = -1};
    for (size_t i = 0; i < s.nstats; i++)
        s.stats[i] = 100 + i;
    size_t len;
    char *t = chorus__metrics_format(&s, "svc", &len);
    for (size_t i = 0; i < s.nstats; i++) {
        char line[160];
        snprintf(line, sizeof(line), "# TYPE chorus_%s_total counter\nchorus_%s_total{service=\"svc\"} %zu\n",
                 chorus_stat_name(i), chorus_stat_name(i), 100 + i);
        if (!strstr(t, line))
            fail_msg("missing: %s", line);
    }
    assert_non_null(strstr(t, "chorus_blocked_periods_total{"));
    free(t);
}

static void readiness(void **state) {
    (void)state;
    chorus__metrics_snap_t s = {.broker_up = true, .consuming = true, .taken_ms = 1000};
    assert_string_equal(chorus__metrics_unready(&s, 2000), "");
    assert_string_equal(chorus__metrics_unready(&s, 1000 + 60000), "the poll loop is not polling");
    s.store_enabled = true;
    assert_string_equal(chorus__metrics_unready(&s, 2000), "PostgreSQL unreachable");
    s.store_up = true;
    s.broker_up = false;
    assert_string_equal(chorus__metrics_unready(&s, 2000), "broker connection down");
    s.broker_up = true;
    s.consuming = false;
    assert_string_equal(chorus__metrics_unready(&s, 2000), "not consuming");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_label_values),
        cmocka_unit_test(buckets_are_cumulative),
        cmocka_unit_test(every_counter_by_name),
        cmocka_unit_test(readiness),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
