/*
 * Two instances' batches that would lock in a circle, against the real
 * RabbitMQ and PostgreSQL.  Instance A gets the batch [lock r1, lock r2],
 * instance B [lock r2, lock r1]; a gate holds each first delivery until
 * both have taken their first row, so each second delivery wants the row
 * the other batch holds.  Without a bound on the second delivery's wait
 * that is a deadlock PostgreSQL detects after deadlock_timeout (1 s) and
 * breaks by killing one; with store.lock.wait.ms the waits run out, each
 * prefix commits and the second delivery runs in a transaction of its
 * own.  Asserted: all four handled, pg_stat_database.deadlocks unchanged,
 * at least one split.
 */
#include "durable.h"

#include <pthread.h>
#include <time.h>

typedef struct {
    chorus_t *ch;
    volatile bool stop;
} inst_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int at_gate;

/* The first two deliveries that ask wait here for each other (3 s at most). */
static void gate(void) {
    pthread_mutex_lock(&mu);
    if (at_gate >= 2) {
        pthread_mutex_unlock(&mu);
        return;
    }
    at_gate++;
    pthread_cond_broadcast(&cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 3;
    while (at_gate < 2 && pthread_cond_timedwait(&cv, &mu, &until) == 0)
        ;
    pthread_mutex_unlock(&mu);
}

static chorus_outcome_t take(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                             void *opaque) {
    (void)ch;
    (void)opaque;
    const cJSON *data = chorus_envelope_data(env);
    const cJSON *row = cJSON_GetObjectItemCaseSensitive(data, "row");
    if (!cJSON_IsString(row))
        return CHORUS_REJECT;
    const char *p[] = {row->valuestring};
    chorus_tx_t *tx = chorus_delivery_tx(d);
    if (chorus_tx_exec(tx, "UPDATE hot SET n = n + 1 WHERE id = $1", 1, p, NULL))
        return CHORUS_RETRY_LATER;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(data, "gate")))
        gate();
    return CHORUS_HANDLED;
}

static void *run(void *arg) {
    inst_t *in = arg;
    while (!in->stop)
        chorus_poll(in->ch, 20);
    return NULL;
}

static chorus_t *instance(inst_t *in) {
    chorus_conf_t *c = dur_conf("hotrows");
    char err[256];
    if (chorus_conf_set(c, "topology.prefetch", "2", err, sizeof(err)) ||
        chorus_conf_set(c, "consume.batch.max", "2", err, sizeof(err)))
        fail_msg("%s", err);
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "Take", take, in), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    return ch;
}

static void publish(it_raw_t *raw, const char *row, bool gated) {
    char ex[200], data[64];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    snprintf(data, sizeof(data), "{\"row\":\"%s\",\"gate\":%s}", row, gated ? "true" : "false");
    chorus_envelope_t *e =
        chorus_envelope_new("Take", "0190f7d2-0000-7000-8000-0000000000aa", 1, data, NULL);
    char *body;
    size_t len;
    assert_int_equal(chorus_envelope_serialize(e, &body, &len), CHORUS_OK);
    it_raw_publish(raw, ex, "warehouse.Take", body, len, NULL);
    free(body);
    chorus_envelope_destroy(e);
}

/* Until the queue has handed out everything (to the prefetch of whoever
 * consumes), 5 s at most. */
static void delivered(it_raw_t *raw, const char *queue) {
    for (int i = 0; i < 100 && it_raw_count(raw, queue) > 0; i++) {
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(it_raw_count(raw, queue), 0);
}

static long deadlocks(void) {
    char *v = it_pg_value("SELECT deadlocks FROM pg_stat_database "
                          "WHERE datname = current_database()", 0, NULL);
    long n = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return n;
}

static void crossed_batches_never_deadlock(void **state) {
    (void)state;
    inst_t a = {0}, b = {0};
    a.ch = instance(&a);
    dur_sql("hotrows", "CREATE TABLE IF NOT EXISTS %s.hot (id text PRIMARY KEY, n int)");
    dur_sql("hotrows", "INSERT INTO %s.hot VALUES ('r1', 0), ('r2', 0)");
    it_raw_t *raw = it_raw_open();
    /* A alone consumes: it takes [r1, r2] (prefetch 2), unpolled yet */
    publish(raw, "r1", true);
    publish(raw, "r2", false);
    delivered(raw, chorus_queue_name(a.ch));
    b.ch = instance(&b);
    publish(raw, "r2", true);
    publish(raw, "r1", false);
    delivered(raw, chorus_queue_name(b.ch));
    long d0 = deadlocks();
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run, &a);
    pthread_create(&tb, NULL, run, &b);
    time_t t0 = time(NULL);
    for (;;) {
        chorus_stats_t sa, sb;
        chorus_stats(a.ch, &sa);
        chorus_stats(b.ch, &sb);
        if (sa.handled + sb.handled >= 4 || time(NULL) - t0 > 15)
            break;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    a.stop = b.stop = true;
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    long d1 = deadlocks();
    chorus_stats_t sa, sb;
    chorus_stats(a.ch, &sa);
    chorus_stats(b.ch, &sb);
    uint64_t spa = 0, spb = 0;
    chorus_stat_get(a.ch, "splits", &spa);
    chorus_stat_get(b.ch, "splits", &spb);
    fprintf(stderr, "handled %llu + %llu, splits %llu + %llu, conflicts %llu + %llu, "
            "deadlocks detected %ld\n", (unsigned long long)sa.handled,
            (unsigned long long)sb.handled, (unsigned long long)spa, (unsigned long long)spb,
            (unsigned long long)sa.conflicts, (unsigned long long)sb.conflicts, d1 - d0);
    assert_int_equal(sa.handled + sb.handled, 4);
    assert_int_equal(dur_count("hotrows", "hot", "n = 2"), 2);
    assert_int_equal(d1 - d0, 0);
    assert_true(spa + spb >= 1);
    assert_int_equal(sa.retried + sb.retried, 0);
    it_raw_close(raw);
    chorus_destroy(a.ch);
    chorus_destroy(b.ch);
}

static int teardown(void **state) {
    (void)state;
    const char *svcs[] = {"hotrows"};
    it_cleanup(svcs, 1);
    it_pg_drop_schema(dur_schema("hotrows"));
    return 0;
}

int main(void) {
    it_amqp_url();
    it_pg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crossed_batches_never_deadlock),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
