/*
 * A participant killed with SIGKILL in the middle of a delivery's life,
 * with the kill placed exactly by debug.crash.point in a child process:
 *
 *  - after COMMIT, before publishing: the effect and the outbox row are
 *    committed, nothing is published or acked.  A new instance's relay
 *    publishes the row at start-up; the redelivered event is a duplicate
 *    (inbox); the downstream consumer applies the event exactly once.
 *  - before COMMIT: PostgreSQL rolls the transaction back; the event is
 *    redelivered to the new instance and has one effect.
 */
#include "../integration/durable.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static chorus_outcome_t charge(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                               void *opaque) {
    (void)ch; (void)opaque;
    const char *p[] = {chorus_envelope_event_id(env)};
    if (chorus_tx_exec(chorus_delivery_tx(d), "INSERT INTO charges (event_id) VALUES ($1)", 1,
                       p, NULL))
        return CHORUS_RETRY_LATER;
    chorus_envelope_t *ok = chorus_envelope_new("PaymentSucceeded",
                                                chorus_envelope_aggregate_id(env), 1, "{}", NULL);
    return chorus_emit(d, ok) == CHORUS_OK ? CHORUS_HANDLED : CHORUS_RETRY_LATER;
}

static chorus_outcome_t seen(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                             void *opaque) {
    (void)ch; (void)opaque;
    const char *p[] = {chorus_envelope_event_id(env)};
    return chorus_tx_exec(chorus_delivery_tx(d), "INSERT INTO paid (event_id) VALUES ($1)", 1,
                          p, NULL) == CHORUS_OK ? CHORUS_HANDLED : CHORUS_RETRY_LATER;
}

static chorus_t *start(const char *svc, const char *type, chorus_handler_fn *fn,
                       const char *crash) {
    chorus_conf_t *c = dur_conf(svc);
    char err[256];
    if (crash)
        chorus_conf_set(c, "debug.crash.point", crash, err, sizeof(err));
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    if (!ch || chorus_register(ch, type, fn, NULL) || chorus_start(ch))
        return NULL;
    return ch;
}

/* Runs the payment participant in a child that must die by SIGKILL. */
static void crash_child(const char *point) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        chorus_t *ch = start("payment", "OrderPlaced", charge, point);
        if (!ch)
            _exit(2);
        time_t t0 = time(NULL);
        while (time(NULL) - t0 < 20)
            chorus_poll(ch, 50);
        _exit(3); /* the crash point was never reached */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("the child did not die at %s (status 0x%x)", point, status);
}

static void publish_order(void) {
    chorus_envelope_t *e = chorus_envelope_new("OrderPlaced",
        "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", 1, "{\"total\":100}", NULL);
    char *body;
    size_t len;
    chorus_envelope_serialize(e, &body, &len);
    chorus_envelope_destroy(e);
    it_raw_t *raw = it_raw_open();
    char ex[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    it_raw_publish(raw, ex, "order.OrderPlaced", body, len, NULL);
    it_raw_close(raw);
    free(body);
}

/* Declares everything (queues, schemas, tables) once, then stops. */
static void prepare(void) {
    chorus_t *p = start("payment", "OrderPlaced", charge, NULL);
    chorus_t *o = start("order", "PaymentSucceeded", seen, NULL);
    assert_non_null(p);
    assert_non_null(o);
    chorus_destroy(p);
    chorus_destroy(o);
    dur_sql("payment", "CREATE TABLE IF NOT EXISTS %s.charges (event_id uuid)");
    dur_sql("order", "CREATE TABLE IF NOT EXISTS %s.paid (event_id uuid)");
    dur_sql("payment", "TRUNCATE %s.charges");
    dur_sql("payment", "TRUNCATE %s.outbox");
    dur_sql("payment", "TRUNCATE %s.inbox");
    dur_sql("order", "TRUNCATE %s.paid");
}

typedef struct {
    chorus_t *order;
} down_t;

static bool order_paid(void *arg) {
    chorus_stats_t st;
    chorus_stats(((down_t *)arg)->order, &st);
    return st.handled >= 1;
}

/* The restarted payment instance and the downstream order service. */
static void recover(chorus_stats_t *pst) {
    chorus_t *p = start("payment", "OrderPlaced", charge, NULL);
    chorus_t *o = start("order", "PaymentSucceeded", seen, NULL);
    assert_non_null(p);
    assert_non_null(o);
    down_t dn = {o};
    chorus_t *both[] = {p, o};
    assert_true(it_poll_until(both, 2, 20000, order_paid, &dn));
    /* a little longer: any duplicate would show up now */
    for (int i = 0; i < 20; i++) {
        chorus_poll(p, 25);
        chorus_poll(o, 25);
    }
    chorus_stats(p, pst);
    it_raw_t *raw = it_raw_open();
    assert_int_equal(it_raw_count(raw, chorus_queue_name(p)), 0);
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(p)), 0);
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(o)), 0);
    it_raw_close(raw);
    chorus_destroy(p);
    chorus_destroy(o);
}

static void killed_after_commit(void **state) {
    (void)state;
    prepare();
    publish_order();
    crash_child("after-commit");
    /* committed, not published */
    assert_int_equal(dur_count("payment", "charges", NULL), 1);
    assert_int_equal(dur_count("payment", "outbox", "published_at IS NULL"), 1);
    chorus_stats_t st;
    recover(&st);
    assert_int_equal(st.relayed, 1);    /* the relay published the row */
    assert_int_equal(st.duplicates, 1); /* the redelivery found the inbox row */
    assert_int_equal(st.handled, 0);
    assert_int_equal(dur_count("payment", "charges", NULL), 1);
    assert_int_equal(dur_count("payment", "outbox", NULL), 1);
    assert_int_equal(dur_count("payment", "outbox", "published_at IS NOT NULL"), 1);
    assert_int_equal(dur_count("order", "paid", NULL), 1);
}

static void killed_before_commit(void **state) {
    (void)state;
    prepare();
    publish_order();
    crash_child("before-commit");
    assert_int_equal(dur_count("payment", "charges", NULL), 0);
    assert_int_equal(dur_count("payment", "outbox", NULL), 0);
    chorus_stats_t st;
    recover(&st);
    assert_int_equal(st.handled, 1);
    assert_int_equal(st.duplicates, 0);
    assert_int_equal(dur_count("payment", "charges", NULL), 1);
    assert_int_equal(dur_count("payment", "outbox", "published_at IS NOT NULL"), 1);
    assert_int_equal(dur_count("order", "paid", NULL), 1);
}

static int teardown(void **state) {
    (void)state;
    const char *svcs[] = {"payment", "order"};
    it_cleanup(svcs, 2);
    it_pg_drop_schema(dur_schema("payment"));
    it_pg_drop_schema(dur_schema("order"));
    return 0;
}

int main(void) {
    it_amqp_url();
    it_pg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_after_commit),
        cmocka_unit_test(killed_before_commit),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
