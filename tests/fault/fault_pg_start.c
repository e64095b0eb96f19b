/*
 * A durable participant started while PostgreSQL is down waits for it, as
 * it waits for the broker (store.start.timeout.ms):
 *
 *   waits       PostgreSQL stopped, started again 2 s after chorus_start
 *               began: chorus_start succeeds, having waited
 *   gives up    PostgreSQL stopped, store.start.timeout.ms = 1500: it fails
 *               after about that long, with an error naming PostgreSQL
 *   refused     PostgreSQL up, a wrong password: an answer, not an outage,
 *               so it fails at once however long the timeout
 *
 * PostgreSQL is stopped and started with scripts/env (the servers must be
 * ours: CHORUS_CTL set), and is running again whatever happens.
 */
#include "../integration/durable.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

static int pg_cmd(const char *what) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "'%s/scripts/env' %s postgres >&2", getenv("CHORUS_SOURCE_ROOT"),
             what);
    return system(cmd);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool ours(void) {
    const char *ctl = getenv("CHORUS_CTL");
    if (ctl && *ctl)
        return true;
    fprintf(stderr, "skipped: the servers are not ours to stop\n");
    return false;
}

static chorus_conf_t *conf_with(const char *service, const char *key, const char *value) {
    chorus_conf_t *c = dur_conf(service);
    char err[256];
    if (chorus_conf_set(c, key, value, err, sizeof(err)))
        fail_msg("%s", err);
    return c;
}

static void *start_later(void *arg) {
    (void)arg;
    sleep(2);
    pg_cmd("up");
    return NULL;
}

static void waits(void **state) {
    (void)state;
    if (!ours())
        skip();
    assert_int_equal(pg_cmd("down"), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, start_later, NULL), 0);
    char err[256];
    chorus_t *ch = chorus_new(conf_with("payment", "store.start.timeout.ms", "60000"), err,
                              sizeof(err));
    assert_non_null(ch);
    double t0 = now_s();
    chorus_err_t rc = chorus_start(ch);
    double took = now_s() - t0;
    pthread_join(t, NULL);
    if (rc)
        fail_msg("chorus_start: %s", chorus_last_error(ch));
    fprintf(stderr, "chorus_start waited %.1f s for PostgreSQL\n", took);
    assert_true(took >= 1.5);
    chorus_destroy(ch);
}

static void gives_up(void **state) {
    (void)state;
    if (!ours())
        skip();
    assert_int_equal(pg_cmd("down"), 0);
    char err[256];
    chorus_t *ch = chorus_new(conf_with("payment", "store.start.timeout.ms", "1500"), err,
                              sizeof(err));
    assert_non_null(ch);
    double t0 = now_s();
    chorus_err_t rc = chorus_start(ch);
    double took = now_s() - t0;
    const char *why = chorus_last_error(ch);
    fprintf(stderr, "gave up after %.1f s: %s\n", took, why);
    char saved[512];
    snprintf(saved, sizeof(saved), "%s", why);
    chorus_destroy(ch);
    assert_int_equal(pg_cmd("up"), 0);
    assert_int_equal(rc, CHORUS_ERR_DB);
    assert_non_null(strstr(saved, "PostgreSQL"));
    assert_true(took >= 1.4 && took < 15);
}

static void refused(void **state) {
    (void)state;
    char ci[512];
    snprintf(ci, sizeof(ci), "password=surely-not-%d", (int)getpid());
    char err[256];
    chorus_t *ch = chorus_new(conf_with("payment", "store.conninfo", ci), err, sizeof(err));
    assert_non_null(ch);
    double t0 = now_s();
    chorus_err_t rc = chorus_start(ch);
    double took = now_s() - t0;
    fprintf(stderr, "refused after %.1f s: %s\n", took, chorus_last_error(ch));
    assert_int_equal(rc, CHORUS_ERR_DB);
    assert_non_null(strstr(chorus_last_error(ch), "password"));
    assert_true(took < 5); /* the default timeout is 15 s */
    chorus_destroy(ch);
}

static int teardown(void **state) {
    (void)state;
    if (ours())
        pg_cmd("up"); /* whatever failed, leave PostgreSQL running */
    return 0;
}

int main(void) {
    it_amqp_url();
    it_pg();
    it_pg_close();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(waits, teardown),
        cmocka_unit_test_teardown(gives_up, teardown),
        cmocka_unit_test_teardown(refused, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
