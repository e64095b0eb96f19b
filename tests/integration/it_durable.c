/*
 * Durable participants against the real RabbitMQ and PostgreSQL:
 *  - one event delivered 5 times: one effect, one outbox row, 4 duplicates;
 *  - a handler that asks to retry twice, then succeeds: one effect, made at
 *    attempt 3 (rolled back twice), attempts counted;
 *  - a v1 event from the broker reaches the handler as v2 (upcaster);
 *  - two instances appending to one aggregate at the same version at the
 *    same time: one wins, the other's handler runs again and appends the
 *    next version.
 */
#include "durable.h"

#include <pthread.h>
#include <time.h>

static const char *AGG = "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e";

/* ---- effects and duplicates -------------------------------------------- */

typedef struct {
    int calls;
    int retry_until; /* ask to retry while attempt < this */
} charge_t;

static chorus_outcome_t charge(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                               void *opaque) {
    (void)ch;
    charge_t *c = opaque;
    c->calls++;
    char attempt[16];
    snprintf(attempt, sizeof(attempt), "%d", chorus_delivery_attempt(d));
    const char *p[] = {chorus_envelope_event_id(env), attempt};
    chorus_tx_t *tx = chorus_delivery_tx(d);
    assert_non_null(tx);
    if (chorus_tx_exec(tx, "INSERT INTO charges (event_id, attempt) VALUES ($1, $2)", 2, p,
                       NULL) != CHORUS_OK)
        return CHORUS_RETRY_LATER;
    chorus_envelope_t *ok = chorus_envelope_new("PaymentSucceeded",
                                                chorus_envelope_aggregate_id(env), 1, "{}", NULL);
    assert_int_equal(chorus_emit(d, ok), CHORUS_OK);
    if (chorus_delivery_attempt(d) < c->retry_until) {
        chorus_delivery_set_error(d, "bank unavailable");
        return CHORUS_RETRY_LATER; /* the insert and the outbox row are undone */
    }
    return CHORUS_HANDLED;
}

static chorus_t *payment(charge_t *c) {
    char err[256];
    chorus_t *ch = chorus_new(dur_conf("payment"), err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "OrderPlaced", charge, c), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    dur_sql("payment", "CREATE TABLE IF NOT EXISTS %s.charges (event_id uuid, attempt int)");
    dur_sql("payment", "TRUNCATE %s.charges");
    dur_sql("payment", "TRUNCATE %s.outbox");
    dur_sql("payment", "TRUNCATE %s.inbox");
    return ch;
}

typedef struct {
    chorus_t *ch;
    uint64_t want;
} seen_t;

static bool settled(void *arg) {
    seen_t *s = arg;
    chorus_stats_t st;
    chorus_stats(s->ch, &st);
    return st.handled + st.duplicates >= s->want;
}

static char *order_placed(const char *data, int schema_version) {
    chorus_envelope_t *e = chorus_envelope_new("OrderPlaced", AGG, 1, data, NULL);
    chorus_envelope_set_schema_version(e, schema_version);
    char *out;
    size_t len;
    assert_int_equal(chorus_envelope_serialize(e, &out, &len), CHORUS_OK);
    chorus_envelope_destroy(e);
    return out;
}

static void five_deliveries_one_effect(void **state) {
    (void)state;
    charge_t c = {0};
    chorus_t *ch = payment(&c);
    char *body = order_placed("{\"total\":4999}", 1);
    it_raw_t *raw = it_raw_open();
    char ex[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    for (int i = 0; i < 5; i++)
        it_raw_publish(raw, ex, "order.OrderPlaced", body, strlen(body), NULL);
    seen_t s = {ch, 5};
    chorus_t *one[] = {ch};
    assert_true(it_poll_until(one, 1, 15000, settled, &s));
    chorus_stats_t st;
    chorus_stats(ch, &st);
    assert_int_equal(c.calls, 1);
    assert_int_equal(st.handled, 1);
    assert_int_equal(st.duplicates, 4);
    assert_int_equal(dur_count("payment", "charges", NULL), 1);
    assert_int_equal(dur_count("payment", "outbox", NULL), 1);
    assert_int_equal(dur_count("payment", "outbox", "published_at IS NOT NULL"), 1);
    assert_int_equal(dur_count("payment", "inbox", NULL), 1);
    assert_int_equal(st.published, 1);
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(ch)), 0);
    free(body);
    it_raw_close(raw);
    chorus_destroy(ch);
}

static void retry_twice_then_succeed(void **state) {
    (void)state;
    charge_t c = {.retry_until = 3};
    chorus_t *ch = payment(&c);
    char *body = order_placed("{\"total\":100}", 1);
    it_raw_t *raw = it_raw_open();
    char ex[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    it_raw_publish(raw, ex, "order.OrderPlaced", body, strlen(body), NULL);
    seen_t s = {ch, 1};
    chorus_t *one[] = {ch};
    assert_true(it_poll_until(one, 1, 15000, settled, &s));
    chorus_stats_t st;
    chorus_stats(ch, &st);
    assert_int_equal(c.calls, 3);
    assert_int_equal(st.retried, 2);
    assert_int_equal(st.handled, 1);
    /* one effect, the one of attempt 3; the two rolled back left nothing */
    assert_int_equal(dur_count("payment", "charges", NULL), 1);
    assert_int_equal(dur_count("payment", "charges", "attempt = 3"), 1);
    assert_int_equal(dur_count("payment", "outbox", NULL), 1);
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(ch)), 0);
    free(body);
    it_raw_close(raw);
    chorus_destroy(ch);
}

/* ---- upcasting from the broker ------------------------------------------ */

static chorus_err_t total_to_cents(cJSON *data, int from, void *opaque) {
    (void)opaque;
    assert_int_equal(from, 1);
    cJSON *total = cJSON_DetachItemFromObject(data, "total");
    if (!cJSON_IsNumber(total)) {
        cJSON_Delete(total);
        return CHORUS_ERR_SCHEMA;
    }
    cJSON_AddNumberToObject(data, "total_cents", total->valuedouble);
    cJSON_AddStringToObject(data, "currency", "EUR");
    cJSON_Delete(total);
    return CHORUS_OK;
}

typedef struct {
    int schema_version;
    char data[256];
    int calls;
} seen_data_t;

static chorus_outcome_t record(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                               void *opaque) {
    (void)ch; (void)d;
    seen_data_t *s = opaque;
    s->calls++;
    s->schema_version = chorus_envelope_schema_version(env);
    snprintf(s->data, sizeof(s->data), "%s", chorus_envelope_data_json(env));
    return CHORUS_HANDLED;
}

static bool one_call(void *arg) { return ((seen_data_t *)arg)->calls >= 1; }

static void upcast_from_broker(void **state) {
    (void)state;
    seen_data_t s = {0};
    char err[256];
    chorus_t *ch = chorus_new(dur_conf("shipping"), err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "OrderPlaced", record, &s), CHORUS_OK);
    assert_int_equal(chorus_register_upcaster(ch, "OrderPlaced", 1, total_to_cents, NULL),
                     CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    char *body = order_placed("{\"total\":4999}", 1);
    it_raw_t *raw = it_raw_open();
    char ex[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    it_raw_publish(raw, ex, "order.OrderPlaced", body, strlen(body), NULL);
    chorus_t *one[] = {ch};
    assert_true(it_poll_until(one, 1, 15000, one_call, &s));
    assert_int_equal(s.schema_version, 2);
    assert_non_null(strstr(s.data, "\"total_cents\":4999"));
    assert_non_null(strstr(s.data, "\"currency\":\"EUR\""));
    assert_null(strstr(s.data, "\"total\":"));
    free(body);
    it_raw_close(raw);
    chorus_destroy(ch);
}

/* ---- concurrent appends -------------------------------------------------- */

typedef struct {
    int64_t count;
} counter_t;

static chorus_err_t counter_apply(void *state, const chorus_envelope_t *ev, void *opaque) {
    (void)ev; (void)opaque;
    ((counter_t *)state)->count++;
    return CHORUS_OK;
}

static const chorus_aggregate_type_t COUNTER = {.name = "Counter", .apply = counter_apply};

/* Both handlers load version 0 before either appends. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int at_gate;

static void wait_at_gate(void) {
    pthread_mutex_lock(&gate_mu);
    at_gate++;
    pthread_cond_broadcast(&gate_cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (at_gate < 2 && pthread_cond_timedwait(&gate_cv, &gate_mu, &until) == 0)
        ;
    pthread_mutex_unlock(&gate_mu);
}

typedef struct {
    chorus_t *ch;
    int calls;
    bool waited;
    bool stop;
    int64_t loaded[4];
} worker_t;

static chorus_outcome_t bump(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                             void *opaque) {
    (void)ch;
    worker_t *w = opaque;
    chorus_tx_t *tx = chorus_delivery_tx(d);
    counter_t st = {0};
    int64_t v = -1;
    if (chorus_es_load(tx, &COUNTER, chorus_envelope_aggregate_id(env), &st, &v, -1))
        return CHORUS_RETRY_LATER;
    if (w->calls < 4)
        w->loaded[w->calls] = v;
    w->calls++;
    if (!w->waited) {
        w->waited = true;
        wait_at_gate();
    }
    chorus_envelope_t *e = chorus_envelope_new("Bumped", chorus_envelope_aggregate_id(env), 1,
                                               "{}", NULL);
    chorus_es_append(tx, &COUNTER, &st, v, e);
    return CHORUS_HANDLED; /* on a conflict chorus runs us again anyway */
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    while (!w->stop)
        chorus_poll(w->ch, 20);
    return NULL;
}

static chorus_t *inventory(worker_t *w) {
    chorus_conf_t *c = dur_conf("inventory");
    char err[256];
    chorus_conf_set(c, "topology.prefetch", "1", err, sizeof(err));
    chorus_conf_set(c, "consume.batch.max", "1", err, sizeof(err));
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "StockCounted", bump, w), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    return ch;
}

static void concurrent_appends(void **state) {
    (void)state;
    worker_t a = {0}, b = {0};
    a.ch = inventory(&a);
    b.ch = inventory(&b);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, worker_main, &a);
    pthread_create(&tb, NULL, worker_main, &b);
    it_raw_t *raw = it_raw_open();
    char ex[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    for (int i = 0; i < 2; i++) {
        chorus_envelope_t *e = chorus_envelope_new("StockCounted", AGG, 1, "{}", NULL);
        char *body;
        size_t len;
        chorus_envelope_serialize(e, &body, &len);
        it_raw_publish(raw, ex, "warehouse.StockCounted", body, len, NULL);
        free(body);
        chorus_envelope_destroy(e);
    }
    time_t t0 = time(NULL);
    for (;;) {
        chorus_stats_t sa, sb;
        chorus_stats(a.ch, &sa);
        chorus_stats(b.ch, &sb);
        if (sa.handled + sb.handled >= 2 || time(NULL) - t0 > 20)
            break;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    a.stop = b.stop = true;
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    chorus_stats_t sa, sb;
    chorus_stats(a.ch, &sa);
    chorus_stats(b.ch, &sb);
    fprintf(stderr, "a: %d calls (loaded %lld, %lld), b: %d calls (loaded %lld, %lld)\n",
            a.calls, (long long)a.loaded[0], (long long)a.loaded[1], b.calls,
            (long long)b.loaded[0], (long long)b.loaded[1]);
    assert_int_equal(sa.handled + sb.handled, 2);
    /* exactly one conflict, and the loser ran again on the new version */
    assert_int_equal(sa.conflicts + sb.conflicts, 1);
    assert_int_equal(a.calls + b.calls, 3);
    worker_t *loser = a.calls == 2 ? &a : &b;
    assert_int_equal(loser->loaded[0], 0);
    assert_int_equal(loser->loaded[1], 1);
    assert_int_equal(dur_count("inventory", "events", NULL), 2);
    assert_int_equal(dur_count("inventory", "events", "version IN (1, 2)"), 2);
    assert_int_equal(it_raw_count(raw, chorus_dlq_name(a.ch)), 0);
    it_raw_close(raw);
    chorus_destroy(a.ch);
    chorus_destroy(b.ch);
}

static int teardown(void **state) {
    (void)state;
    const char *svcs[] = {"payment", "shipping", "inventory"};
    it_cleanup(svcs, 3);
    for (int i = 0; i < 3; i++)
        it_pg_drop_schema(dur_schema(svcs[i]));
    return 0;
}

int main(void) {
    it_amqp_url();
    it_pg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(five_deliveries_one_effect),
        cmocka_unit_test(retry_twice_then_succeed),
        cmocka_unit_test(upcast_from_broker),
        cmocka_unit_test(concurrent_appends),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
