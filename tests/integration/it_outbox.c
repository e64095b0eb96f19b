/*
 * The outbox relay:
 *  - a command-line style writer (a chorus_t that is never started) commits
 *    events to the outbox; a running instance's relay publishes them at
 *    once, woken by NOTIFY (the relay interval is set to a minute, so only
 *    the NOTIFY can explain a prompt publish), and within the chorus_poll()
 *    call that was waiting for frames when the NOTIFY came;
 *  - 1500 rows left behind for 3 aggregates, relayed by two instances
 *    polling in two threads at the same time: every row published exactly
 *    once, all marked published, and each aggregate's events leave in
 *    version order.
 */
#include "durable.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static const char *AGG[3] = {"0190f7d2-1c2a-7b3c-8d4e-000000000001",
                             "0190f7d2-1c2a-7b3c-8d4e-000000000002",
                             "0190f7d2-1c2a-7b3c-8d4e-000000000003"};

static chorus_t *instance(bool start) {
    chorus_conf_t *c = dur_conf("order");
    char err[256];
    chorus_conf_set(c, "store.relay.interval.ms", "60000", err, sizeof(err));
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    if (start)
        assert_int_equal(chorus_start(ch), CHORUS_OK);
    return ch;
}

static void write_rows(chorus_t *writer, int per_aggregate) {
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(writer, &tx), CHORUS_OK);
    for (int v = 1; v <= per_aggregate; v++)
        for (int a = 0; a < 3; a++) {
            chorus_envelope_t *e = chorus_envelope_new("OrderNoted", AGG[a], v, "{}", NULL);
            assert_int_equal(chorus_tx_emit(tx, e), CHORUS_OK);
        }
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
}

typedef struct {
    it_raw_t *raw;
    const char *tap;
    int got;
    int want;
    int64_t last_version[3];
    int out_of_order;
    it_idset_t ids;
} tap_t;

static bool drained(void *arg) {
    tap_t *t = arg;
    amqp_message_t m;
    while (t->got < t->want && it_raw_get(t->raw, t->tap, &m, 0)) {
        chorus_envelope_t *e = NULL;
        assert_int_equal(chorus_envelope_parse(m.body.bytes, m.body.len, NULL, &e, NULL),
                         CHORUS_OK);
        it_idset_add(&t->ids, chorus_envelope_event_id(e));
        for (int a = 0; a < 3; a++)
            if (strcmp(chorus_envelope_aggregate_id(e), AGG[a]) == 0) {
                if (chorus_envelope_version(e) != t->last_version[a] + 1)
                    t->out_of_order++;
                t->last_version[a] = chorus_envelope_version(e);
            }
        chorus_envelope_destroy(e);
        amqp_destroy_message(&m);
        t->got++;
    }
    return t->got >= t->want;
}

static void notify_wakes_the_relay(void **state) {
    (void)state;
    chorus_t *running = instance(true);
    dur_sql("order", "TRUNCATE %s.outbox");
    it_raw_t *raw = it_raw_open();
    char tap[200];
    snprintf(tap, sizeof(tap), "%s.order.tap", it_ns());
    it_raw_tap(raw, tap);
    /* the first relay pass after start-up has happened */
    for (int i = 0; i < 5; i++)
        chorus_poll(running, 20);

    chorus_t *writer = instance(false);
    write_rows(writer, 1);
    assert_int_equal(dur_count("order", "outbox", "published_at IS NULL"), 3);
    tap_t t = {.raw = raw, .tap = tap, .want = 3};
    chorus_t *one[] = {running};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_true(it_poll_until(one, 1, 10000, drained, &t));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    fprintf(stderr, "relayed 3 rows %ld ms after the commit\n", ms);
    assert_true(ms < 10000); /* well before the 60 s interval */
    assert_int_equal(dur_count("order", "outbox", "published_at IS NULL"), 0);
    chorus_stats_t st;
    chorus_stats(running, &st);
    assert_int_equal(st.relayed, 3);
    it_idset_free(&t.ids);
    it_raw_close(raw);
    chorus_destroy(writer);
    chorus_destroy(running);
}

static void *write_later(void *arg) {
    struct timespec d = {0, 200 * 1000000L};
    nanosleep(&d, NULL);
    chorus_t *writer = instance(false);
    write_rows(writer, 1);
    chorus_destroy(writer);
    (void)arg;
    return NULL;
}

/* A participant waiting in chorus_poll() for frames also waits for the
 * NOTIFY: rows a tool commits meanwhile are published within that call,
 * not after its timeout (a demo's `order place` went out up to 200 ms late,
 * the services' poll timeout). */
static void notify_cuts_the_wait_short(void **state) {
    (void)state;
    chorus_t *running = instance(true);
    dur_sql("order", "TRUNCATE %s.outbox");
    for (int i = 0; i < 5; i++)
        chorus_poll(running, 20);
    chorus_stats_t st;
    chorus_stats(running, &st);
    uint64_t before = st.relayed;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, write_later, NULL), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long ms = 0;
    do { /* one call, unless a heartbeat frame ends its wait first */
        assert_int_equal(chorus_poll(running, 4000), CHORUS_OK);
        chorus_stats(running, &st);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    } while (st.relayed - before < 3 && ms < 3000);
    pthread_join(th, NULL);
    fprintf(stderr, "relayed %llu rows within the wait, %ld ms after it began\n",
            (unsigned long long)(st.relayed - before), ms);
    assert_int_equal(st.relayed - before, 3);
    assert_true(ms < 3000); /* the wait was 4000 ms */
    chorus_destroy(running);
}

typedef struct {
    chorus_t *ch;
    atomic_bool *stop;
} relay_thread_t;

static void *relay_main(void *arg) {
    relay_thread_t *r = arg;
    while (!atomic_load(r->stop))
        chorus_poll(r->ch, 20);
    return NULL;
}

static bool tap_done(void *arg) { return drained(arg); }

static void two_relays_share_the_work(void **state) {
    (void)state;
    chorus_t *writer = instance(false);
    write_rows(writer, 500);
    chorus_destroy(writer);
    it_raw_t *raw = it_raw_open();
    char tap[200];
    snprintf(tap, sizeof(tap), "%s.order.tap", it_ns());
    it_raw_tap(raw, tap);
    while (it_raw_count(raw, tap) > 0) { /* leftovers of the previous test */
        amqp_message_t m;
        if (it_raw_get(raw, tap, &m, 0))
            amqp_destroy_message(&m);
    }
    chorus_t *a = instance(true);
    chorus_t *b = instance(true);
    atomic_bool stop = false;
    relay_thread_t ra = {a, &stop}, rb = {b, &stop};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, relay_main, &ra);
    pthread_create(&tb, NULL, relay_main, &rb);
    tap_t t = {.raw = raw, .tap = tap, .want = 1500};
    time_t t0 = time(NULL);
    while (!tap_done(&t) && time(NULL) - t0 < 30) {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    struct timespec settle = {0, 300 * 1000000}; /* a double publish would arrive now */
    nanosleep(&settle, NULL);
    atomic_store(&stop, true);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(t.got, 1500);
    assert_int_equal(it_raw_count(raw, tap), 0);
    assert_int_equal(t.ids.n, 1500);
    assert_int_equal(t.ids.dups, 0);
    assert_int_equal(t.out_of_order, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(t.last_version[i], 500);
    assert_int_equal(dur_count("order", "outbox", "published_at IS NULL"), 0);
    chorus_stats_t sa, sb;
    chorus_stats(a, &sa);
    chorus_stats(b, &sb);
    fprintf(stderr, "relayed: instance a %llu, instance b %llu\n",
            (unsigned long long)sa.relayed, (unsigned long long)sb.relayed);
    assert_int_equal(sa.relayed + sb.relayed, 1500);
    it_idset_free(&t.ids);
    it_raw_close(raw);
    chorus_destroy(a);
    chorus_destroy(b);
}

/* Published outbox rows older than the retention go with the inbox prune,
 * which an instance runs when it starts; unpublished rows stay. */
static void retention_prunes_published_rows(void **state) {
    (void)state;
    chorus_t *writer = instance(false);
    write_rows(writer, 2); /* 6 unpublished rows */
    chorus_destroy(writer);
    dur_sql("order", "UPDATE %s.outbox SET published_at = now() - interval '1000 hours'"
                     " WHERE published_at IS NOT NULL");
    long published_before = dur_count("order", "outbox", "published_at IS NOT NULL");
    assert_true(published_before > 0);
    assert_int_equal(dur_count("order", "outbox", "published_at IS NULL"), 6);
    chorus_t *ch = instance(true);
    chorus_poll(ch, 50); /* first relay pass: prune, then publish the 6 */
    chorus_destroy(ch);
    assert_int_equal(dur_count("order", "outbox", "published_at < now() - interval '999 hours'"), 0);
    assert_int_equal(dur_count("order", "outbox", NULL), 6); /* the 6, now published */
}

static int teardown(void **state) {
    (void)state;
    const char *svcs[] = {"order"};
    it_cleanup(svcs, 1);
    it_pg_drop_schema(dur_schema("order"));
    return 0;
}

int main(void) {
    it_amqp_url();
    it_pg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(notify_wakes_the_relay),
        cmocka_unit_test(notify_cuts_the_wait_short),
        cmocka_unit_test(two_relays_share_the_work),
        cmocka_unit_test(retention_prunes_published_rows),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
