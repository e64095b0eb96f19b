/*
 * PostgreSQL is restarted (scripts/env restart postgres, in a background
 * thread while the participants keep polling) in the middle of a stream of
 * 1000 events to a durable consumer: 1000 effects, no duplicates, an empty
 * DLQ.  The consumer pauses while the database is away (batches in flight
 * are returned to the broker, not acked, not dead-lettered) and resumes
 * when it is back.
 */
#include "../integration/durable.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define N 1000

static atomic_bool restarted;
static int restart_status = -1;

static void *restart_main(void *arg) {
    (void)arg;
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "'%s/scripts/env' restart postgres >&2",
             getenv("CHORUS_SOURCE_ROOT"));
    restart_status = system(cmd);
    atomic_store(&restarted, true);
    return NULL;
}

static chorus_outcome_t effect(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                               void *opaque) {
    (void)ch; (void)opaque;
    const char *p[] = {chorus_envelope_event_id(env)};
    return chorus_tx_exec(chorus_delivery_tx(d), "INSERT INTO effects (event_id) VALUES ($1)", 1,
                          p, NULL) == CHORUS_OK ? CHORUS_HANDLED : CHORUS_RETRY_LATER;
}

static long count_now(const char *what) {
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT %s FROM %s.effects", what, dur_schema("payment"));
    it_pg_close(); /* the restart broke the old connection */
    char *v = it_pg_value(sql, 0, NULL);
    long n = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return n;
}

static void restart_mid_stream(void **state) {
    (void)state;
    const char *ctl = getenv("CHORUS_CTL");
    if (!ctl || !*ctl) {
        fprintf(stderr, "skipped: the servers are not ours to restart\n");
        skip();
    }
    chorus_t *prod = it_start(it_conf("order"));
    char err[256];
    chorus_t *cons = chorus_new(dur_conf("payment"), err, sizeof(err));
    assert_non_null(cons);
    assert_int_equal(chorus_register(cons, "OrderPlaced", effect, NULL), CHORUS_OK);
    assert_int_equal(chorus_start(cons), CHORUS_OK);
    dur_sql("payment", "CREATE TABLE IF NOT EXISTS %s.effects (event_id uuid)");

    pthread_t th;
    bool injected = false;
    int published = 0;
    time_t t0 = time(NULL);
    chorus_stats_t st = {0};
    while (time(NULL) - t0 < 120) {
        while (published < N && chorus_outq_len(prod) < 200) {
            chorus_envelope_t *e = chorus_envelope_new("OrderPlaced",
                "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", published + 1, "{}", NULL);
            assert_int_equal(chorus_publish(prod, e, NULL), CHORUS_OK);
            if (++published % 50 == 0)
                break;
        }
        chorus_poll(prod, 5);
        chorus_poll(cons, 20);
        chorus_stats(cons, &st);
        if (!injected && st.handled >= 300) {
            fprintf(stderr, "restarting PostgreSQL after %llu handled\n",
                    (unsigned long long)st.handled);
            assert_int_equal(pthread_create(&th, NULL, restart_main, NULL), 0);
            injected = true;
        }
        if (injected && atomic_load(&restarted) && published == N && chorus_outq_len(prod) == 0 &&
            st.handled + st.duplicates >= N) {
            it_raw_t *raw = it_raw_open();
            int left = it_raw_count(raw, chorus_queue_name(cons));
            it_raw_close(raw);
            if (left == 0)
                break;
        }
    }
    assert_true(injected);
    pthread_join(th, NULL);
    assert_int_equal(restart_status, 0);
    fprintf(stderr, "handled %llu, duplicates %llu, retried %llu, dead-lettered %llu\n",
            (unsigned long long)st.handled, (unsigned long long)st.duplicates,
            (unsigned long long)st.retried, (unsigned long long)st.dead_lettered);
    assert_int_equal(count_now("count(*)"), N);
    assert_int_equal(count_now("count(DISTINCT event_id)"), N);
    assert_int_equal(st.dead_lettered, 0);
    it_raw_t *raw = it_raw_open();
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(cons)), 0);
    it_raw_close(raw);
    chorus_destroy(prod);
    chorus_destroy(cons);
    const char *svcs[] = {"order", "payment"};
    it_cleanup(svcs, 2);
    it_pg_drop_schema(dur_schema("payment"));
}

int main(void) {
    it_amqp_url();
    it_pg();
    const struct CMUnitTest tests[] = {cmocka_unit_test(restart_mid_stream)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
