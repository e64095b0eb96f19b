/*
 * stream.h - the shared body of the fault tests: a producer publishes N
 * events while a consumer handles them; a fault is injected once the
 * consumer has handled `fault_after`; the test then requires every event
 * handled (duplicates allowed: delivery is at-least-once), every publish
 * reported confirmed exactly once, and nothing in the DLQ.
 */
#ifndef CHORUS_FAULT_STREAM_H
#define CHORUS_FAULT_STREAM_H

#include "testlib.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    it_idset_t seen;
    int confirmed, failed_reports;
    int handled_calls;
} stream_t;

static chorus_outcome_t stream_on_event(chorus_t *ch, chorus_delivery_t *d,
                                        const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)d;
    stream_t *s = opaque;
    s->handled_calls++;
    it_idset_add(&s->seen, chorus_envelope_event_id(env));
    return CHORUS_HANDLED;
}

static void stream_on_report(chorus_t *ch, const chorus_envelope_t *env, chorus_err_t res,
                             void *msg_opaque, void *opaque) {
    (void)ch; (void)env; (void)msg_opaque;
    stream_t *s = opaque;
    if (res == CHORUS_OK)
        s->confirmed++;
    else
        s->failed_reports++;
}

static int64_t stream_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Runs the stream; calls inject() once.  Returns the consumer's reconnects. */
static void run_stream(int n, int fault_after, void (*inject)(void), bool (*fault_done)(void)) {
    stream_t s = {0};
    chorus_conf_t *pc = it_conf("order");
    chorus_conf_set_dr_cb(pc, stream_on_report, &s);
    chorus_t *prod = it_start(pc);
    char err[256];
    chorus_t *cons = chorus_new(it_conf("payment"), err, sizeof(err));
    assert_non_null(cons);
    assert_int_equal(chorus_register(cons, "OrderPlaced", stream_on_event, &s), CHORUS_OK);
    assert_int_equal(chorus_start(cons), CHORUS_OK);

    int published = 0;
    bool injected = false;
    int64_t deadline = stream_now_ms() + 120000;
    while (stream_now_ms() < deadline) {
        /* After the fault, publish slowly (5 per pass, about 200 a second),
         * so events go out before, during and after a broker restart. */
        int budget = injected ? 5 : 50;
        while (published < n && budget-- > 0) {
            chorus_envelope_t *e = chorus_envelope_new("OrderPlaced",
                "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", published + 1, "{\"total\":100}", NULL);
            chorus_err_t rc = chorus_publish(prod, e, NULL);
            if (rc == CHORUS_ERR_QUEUE_FULL)
                break;
            assert_int_equal(rc, CHORUS_OK);
            published++;
        }
        chorus_poll(prod, 5);
        chorus_poll(cons, 20);
        if (!injected && s.seen.n >= fault_after) {
            fprintf(stderr, "injecting the fault after %d handled, %d published\n",
                    s.seen.n, published);
            inject();
            injected = true;
        }
        chorus_stats_t now;
        chorus_stats(cons, &now);
        if (published == n && s.seen.n == n && s.confirmed + s.failed_reports == n &&
            (!fault_done || fault_done()) && now.reconnects >= 1)
            break;
    }
    chorus_stats_t cst, pst;
    chorus_stats(cons, &cst);
    chorus_stats(prod, &pst);
    fprintf(stderr, "handled %d distinct (%d calls, %d duplicates), confirmed %d, "
            "consumer reconnects %llu, producer reconnects %llu\n",
            s.seen.n, s.handled_calls, s.seen.dups, s.confirmed,
            (unsigned long long)cst.reconnects, (unsigned long long)pst.reconnects);
    assert_true(injected);
    assert_int_equal(published, n);
    assert_int_equal(s.seen.n, n);
    assert_int_equal(s.confirmed, n);
    assert_int_equal(s.failed_reports, 0);
    assert_true(cst.reconnects >= 1);
    it_raw_t *raw = it_raw_open();
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(cons)), 0);
    it_raw_close(raw);
    it_idset_free(&s.seen);
    chorus_destroy(prod);
    chorus_destroy(cons);
    const char *svcs[] = {"order", "payment"};
    it_cleanup(svcs, 2);
}

#endif
