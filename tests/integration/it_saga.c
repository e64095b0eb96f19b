/*
 * The saga semantics libchorus derives from a declaration, against the real
 * RabbitMQ and PostgreSQL, on a two-step saga:
 *
 *   a: "one"  command Start -> Started,  compensation on Failed, Stopped -> Undone
 *   b: "two"  trigger Started -> Done | Failed        (the pivot)
 *   cancellation: a asks Stop; b answers Stopped (accepted) or Kept (refused)
 *
 *  - guards: an action runs once per saga instance; a compensation that came
 *    first makes the late action refused, never run; a compensation runs
 *    once, only after the step took effect, never after a failure;
 *  - the pivot: a request before it ran is accepted, after it refused; its
 *    trigger past metadata.deadline is refused and answered "accepted";
 *  - the deadline: the first event carries it, the owner's timer is armed
 *    with it and disarmed by a terminal event;
 *  - durable timers: fire once with two instances polling, not when
 *    cancelled or rolled back; one that cannot be emitted is marked failed
 *    and holds none of the others up; data breaking its schema is refused
 *    when armed;
 *  - declared data: a delivery breaking its schema is dead-lettered
 *    invalid-data naming the field; a handler emitting data that breaks its
 *    schema is dead-lettered invalid-emit and nothing of it is published.
 */
#include "durable.h"

#include <unistd.h>

static const char *AGG = "0190f7d2-5a5a-7b3c-8d4e-5f6a7b8c9d0e";
static char saga_path[256];

static void write_saga(void) {
    snprintf(saga_path, sizeof(saga_path), "/tmp/chorus-it-saga-%ld.json", (long)getpid());
    FILE *f = fopen(saga_path, "w");
    assert_non_null(f);
    fprintf(f,
        "{\"saga\": \"itsaga\", \"namespace\": \"%s\",\n"
        " \"deadline\": {\"ms\": 600000, \"owner\": \"a\", \"emits\": \"Stop\"},\n"
        " \"cancellation\": {\"requested_by\": \"a\", \"request\": \"Stop\", \"pivot\": \"two\",\n"
        "                   \"accepted\": \"Stopped\", \"refused\": \"Kept\"},\n"
        " \"steps\": [\n"
        "  {\"name\": \"one\", \"service\": \"a\", \"command\": \"Start\", \"emits\": \"Started\",\n"
        "   \"failures\": [], \"compensation\": {\"on\": [\"Failed\", \"Stopped\"], \"emits\": \"Undone\"}},\n"
        "  {\"name\": \"two\", \"service\": \"b\", \"trigger\": \"Started\", \"emits\": \"Done\",\n"
        "   \"failures\": [\"Failed\"]}],\n"
        " \"terminal\": [\"Done\", \"Undone\"],\n"
        " \"events\": {\n"
        "  \"Started\": {\"schema\": {\"type\": \"object\", \"required\": [\"n\"],\n"
        "     \"properties\": {\"n\": {\"type\": \"integer\", \"minimum\": 1}}}},\n"
        "  \"Done\": {\"schema\": {\"type\": \"object\", \"required\": [\"ok\"],\n"
        "     \"properties\": {\"ok\": {\"const\": true}}}}}}\n",
        it_ns());
    fclose(f);
}

static chorus_conf_t *saga_conf(const char *service) {
    chorus_conf_t *c = dur_conf(service);
    char err[256];
    /* one broker user for every participant here: no producer check */
    if (chorus_conf_set(c, "saga.file", saga_path, err, sizeof(err)) ||
        chorus_conf_set(c, "security.producer.check", "off", err, sizeof(err)) ||
        chorus_conf_set(c, "store.timer.interval.ms", "50", err, sizeof(err)))
        fail_msg("%s", err);
    return c;
}

/* ---- participant b: the pivot ------------------------------------------ */

static int done_calls;

static chorus_outcome_t on_started(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                   void *opaque) {
    (void)ch, (void)opaque;
    done_calls++;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(chorus_envelope_data(env), "n");
    /* n == 7 plays a buggy handler: its output breaks Done's schema */
    chorus_envelope_t *ev = chorus_envelope_new("Done", chorus_envelope_aggregate_id(env), 1,
                                                n->valuedouble == 7 ? "{\"ok\":false}"
                                                                    : "{\"ok\":true}", NULL);
    chorus_emit(d, ev);
    return CHORUS_HANDLED;
}

/* ---- participant a: the first step, its compensation ------------------- */

static int undo_calls;

static chorus_outcome_t on_undo(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                void *opaque) {
    (void)ch, (void)opaque;
    undo_calls++;
    chorus_emit(d, chorus_envelope_new("Undone", chorus_envelope_aggregate_id(env), 2, "{}", NULL));
    return CHORUS_HANDLED;
}

typedef struct {
    chorus_t *a, *a2, *b;
    it_raw_t *raw;
} fx_t;

static const char *const SERVICES[] = {"a", "b"};

static int setup(void **state) {
    write_saga();
    it_cleanup(SERVICES, 2);
    it_pg_drop_schema(dur_schema("a"));
    it_pg_drop_schema(dur_schema("b"));
    fx_t *fx = calloc(1, sizeof(*fx));
    char err[512];
    fx->b = chorus_new(saga_conf("b"), err, sizeof(err));
    if (!fx->b)
        fail_msg("%s", err);
    assert_int_equal(chorus_register(fx->b, "Started", on_started, NULL), CHORUS_OK);
    assert_int_equal(chorus_start(fx->b), CHORUS_OK);
    for (int i = 0; i < 2; i++) {
        chorus_t *a = chorus_new(saga_conf("a"), err, sizeof(err));
        if (!a)
            fail_msg("%s", err);
        assert_int_equal(chorus_register(a, "Failed", on_undo, NULL), CHORUS_OK);
        assert_int_equal(chorus_register(a, "Stopped", on_undo, NULL), CHORUS_OK);
        assert_int_equal(chorus_start(a), CHORUS_OK);
        *(i ? &fx->a2 : &fx->a) = a;
    }
    fx->raw = it_raw_open();
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fx_t *fx = *state;
    chorus_destroy(fx->a);
    chorus_destroy(fx->a2);
    chorus_destroy(fx->b);
    it_raw_close(fx->raw);
    it_cleanup(SERVICES, 2);
    it_pg_drop_schema(dur_schema("a"));
    it_pg_drop_schema(dur_schema("b"));
    unlink(saga_path);
    free(fx);
    return 0;
}

/* Publishes @p type as @p producer would, in saga instance @p corr, with
 * metadata.deadline @p deadline (NULL: none). */
static void send(fx_t *fx, const char *producer, const char *type, const char *corr,
                 const char *data, const char *deadline) {
    char id[37], body[1024], ts[25], rk[128], exchange[128];
    chorus_uuid_v7(id);
    chorus_format_timestamp(chorus_now_ms(), ts);
    snprintf(body, sizeof(body),
             "{\"event_id\":\"%s\",\"event_type\":\"%s\",\"aggregate_id\":\"%s\",\"version\":1,"
             "\"timestamp\":\"%s\",\"data\":%s,\"metadata\":{\"correlation_id\":\"%s\"%s%s%s}}",
             id, type, AGG, ts, data, corr, deadline ? ",\"deadline\":\"" : "",
             deadline ? deadline : "", deadline ? "\"" : "");
    snprintf(rk, sizeof(rk), "%s.%s", producer, type);
    snprintf(exchange, sizeof(exchange), "%s.events", it_ns());
    it_raw_publish(fx->raw, exchange, rk, body, strlen(body), NULL);
}

typedef struct {
    const char *service, *table, *where;
    long want;
} until_t;

static bool count_is(void *arg) {
    until_t *u = arg;
    return dur_count(u->service, u->table, u->where) == u->want;
}

static void wait_count(fx_t *fx, const char *service, const char *table, const char *where,
                       long want) {
    until_t u = {service, table, where, want};
    chorus_t *all[] = {fx->a, fx->a2, fx->b};
    if (!it_poll_until(all, 3, 10000, count_is, &u))
        fail_msg("%s.%s WHERE %s: %ld rows, want %ld", service, table, where ? where : "true",
                 dur_count(service, table, where), want);
}

/* Polls for a while and says nothing changed. */
static void settle(fx_t *fx, int ms) {
    chorus_t *all[] = {fx->a, fx->a2, fx->b};
    for (int64_t until = chorus_now_ms() + ms; chorus_now_ms() < until;)
        for (int i = 0; i < 3; i++)
            chorus_poll(all[i], 20);
}

static char *guard(const char *service, const char *corr, const char *step) {
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT state FROM %s.saga_guards WHERE correlation_id = $1 "
             "AND step = $2", dur_schema(service));
    const char *p[] = {corr, step};
    return it_pg_value(sql, 2, p);
}

static void expect_guard(const char *service, const char *corr, const char *step,
                         const char *want) {
    char *got = guard(service, corr, step);
    if (!got || strcmp(got, want) != 0)
        fail_msg("guard %s/%s of %s: '%s', want '%s'", service, step, corr, got ? got : "(none)",
                 want);
    free(got);
}

static void new_corr(char out[37]) { chorus_uuid_v7(out); }

/* ---- the tests ---------------------------------------------------------- */

static void action_runs_once(void **state) {
    fx_t *fx = *state;
    char c[37], where[128];
    new_corr(c);
    done_calls = 0;
    send(fx, "a", "Started", c, "{\"n\":1}", NULL);
    send(fx, "a", "Started", c, "{\"n\":1}", NULL); /* another event, same step of the same saga */
    snprintf(where, sizeof(where), "routing_key = 'b.Done'");
    wait_count(fx, "b", "inbox", NULL, 2);
    settle(fx, 200);
    assert_int_equal(done_calls, 1);
    assert_int_equal(dur_count("b", "outbox", where), 1);
    expect_guard("b", c, "two", "done");
    /* a cancellation after the pivot ran: refused, it completes */
    send(fx, "a", "Stop", c, "{\"reason\":\"asked\"}", NULL);
    wait_count(fx, "b", "outbox", "routing_key = 'b.Kept'", 1);
    expect_guard("b", c, "two", "kept");
    assert_int_equal(dur_count("b", "outbox", "routing_key = 'b.Stopped'"), 0);
}

static void cancellation_before_the_pivot(void **state) {
    fx_t *fx = *state;
    char c[37];
    new_corr(c);
    done_calls = 0;
    long stopped = dur_count("b", "outbox", "routing_key = 'b.Stopped'");
    send(fx, "a", "Stop", c, "{\"reason\":\"asked\"}", NULL);
    wait_count(fx, "b", "outbox", "routing_key = 'b.Stopped'", stopped + 1);
    expect_guard("b", c, "two", "cancelled");
    /* the trigger that the request overtook: refused, never run */
    send(fx, "a", "Started", c, "{\"n\":1}", NULL);
    for (int i = 0; i < 200; i++) {
        char *g = guard("b", c, "two");
        bool refused = g && strcmp(g, "refused") == 0;
        free(g);
        if (refused)
            break;
        settle(fx, 50);
    }
    expect_guard("b", c, "two", "refused");
    assert_int_equal(done_calls, 0);
    assert_int_equal(dur_count("b", "outbox", "routing_key = 'b.Stopped'"), stopped + 1);
}

static void pivot_refuses_past_the_deadline(void **state) {
    fx_t *fx = *state;
    char c[37], past[25];
    new_corr(c);
    done_calls = 0;
    chorus_format_timestamp(chorus_now_ms() - 1000, past);
    long stopped = dur_count("b", "outbox", "routing_key = 'b.Stopped'");
    send(fx, "a", "Started", c, "{\"n\":1}", past);
    wait_count(fx, "b", "outbox", "routing_key = 'b.Stopped'", stopped + 1);
    assert_int_equal(done_calls, 0);
    expect_guard("b", c, "two", "cancelled");
}

/* The first step by command: its deadline, its timer, its compensation. */
static void first_step_deadline_and_compensation(void **state) {
    fx_t *fx = *state;
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(fx->a, &tx), CHORUS_OK);
    chorus_envelope_t *ev = chorus_envelope_new("Started", AGG, 1, "{\"n\":2}", NULL);
    char id[37];
    snprintf(id, sizeof(id), "%s", chorus_envelope_event_id(ev));
    int64_t t0 = chorus_envelope_timestamp_ms(ev);
    assert_int_equal(chorus_tx_emit(tx, ev), CHORUS_OK);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    const char *c = id; /* a flow of its own: its correlation is its event id */
    expect_guard("a", c, "one", "done");
    /* the deadline went into the event, and a timer for it was armed */
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT (envelope::jsonb->'metadata'->>'deadline') FROM %s.outbox "
             "WHERE event_id = $1", dur_schema("a"));
    const char *p[] = {id};
    char *dl = it_pg_value(sql, 1, p);
    assert_non_null(dl);
    int64_t dl_ms = 0;
    assert_int_equal(chorus_timestamp_parse(dl, &dl_ms), CHORUS_OK);
    assert_int_equal(dl_ms, t0 + 600000);
    free(dl);
    char where[160];
    snprintf(where, sizeof(where), "key = 'saga-deadline:%s' AND state = 'pending'", c);
    assert_int_equal(dur_count("a", "timers", where), 1);
    /* b runs it and the saga would complete; instead, a failure of the pivot
     * came: a compensates once, its terminal event disarms the timer */
    undo_calls = 0;
    send(fx, "b", "Failed", c, "{}", NULL);
    send(fx, "b", "Failed", c, "{}", NULL);
    snprintf(where, sizeof(where), "key = 'saga-deadline:%s' AND state = 'cancelled'", c);
    wait_count(fx, "a", "timers", where, 1);
    settle(fx, 300);
    assert_int_equal(undo_calls, 1);
    expect_guard("a", c, "one", "compensated");
    /* a compensation for a step that never ran: nothing to undo, recorded */
    char c2[37];
    new_corr(c2);
    send(fx, "b", "Stopped", c2, "{\"reason\":\"asked\"}", NULL);
    for (int i = 0; i < 200; i++) {
        char *g = guard("a", c2, "one");
        free(g);
        if (g)
            break;
        settle(fx, 50);
    }
    expect_guard("a", c2, "one", "cancelled");
    assert_int_equal(undo_calls, 1);
}

static void timers_fire_once(void **state) {
    fx_t *fx = *state;
    chorus_tx_t *tx;
    char key[64], gone[80];
    snprintf(key, sizeof(key), "test-%ld", (long)chorus_now_ms());
    snprintf(gone, sizeof(gone), "%s-cancelled", key);
    assert_int_equal(chorus_tx_begin(fx->a, &tx), CHORUS_OK);
    assert_int_equal(chorus_timer_schedule(tx, key, chorus_now_ms() + 300,
                                           chorus_envelope_new("Stop", AGG, 1,
                                                               "{\"reason\":\"timer\"}", NULL)),
                     CHORUS_OK);
    assert_int_equal(chorus_timer_schedule(tx, gone, chorus_now_ms() + 300,
                                           chorus_envelope_new("Stop", AGG, 1,
                                                               "{\"reason\":\"gone\"}", NULL)),
                     CHORUS_OK);
    assert_int_equal(chorus_timer_cancel(tx, gone), CHORUS_OK);
    /* armed only if the transaction commits */
    chorus_tx_t *tx2;
    assert_int_equal(chorus_tx_begin(fx->a2, &tx2), CHORUS_OK);
    assert_int_equal(chorus_timer_schedule(tx2, "rolled-back", chorus_now_ms(),
                                           chorus_envelope_new("Stop", AGG, 1, "{}", NULL)),
                     CHORUS_OK);
    chorus_tx_rollback(tx2);
    /* a row that cannot be emitted, due first: it must not hold the others up */
    char sql[256];
    snprintf(sql, sizeof(sql), "INSERT INTO %s.timers (key, fire_at, envelope) VALUES "
             "('broken', now() - interval '1 s', 'not an envelope')", dur_schema("a"));
    it_pg_exec(sql, 0, NULL);
    /* data that breaks its declared schema is refused when armed */
    assert_int_equal(chorus_timer_schedule(tx, "bad-data", chorus_now_ms(),
                                           chorus_envelope_new("Started", AGG, 1, "{\"n\":0}",
                                                               NULL)),
                     CHORUS_ERR_SCHEMA);
    long before = dur_count("a", "outbox", "routing_key = 'a.Stop'");
    assert_int_equal(chorus_tx_commit(tx), CHORUS_OK);
    char where[128];
    snprintf(where, sizeof(where), "key = '%s' AND state = 'fired'", key);
    wait_count(fx, "a", "timers", where, 1); /* two instances poll: one fires it */
    settle(fx, 500);
    assert_int_equal(dur_count("a", "outbox", "routing_key = 'a.Stop'"), before + 1);
    snprintf(where, sizeof(where), "key = '%s' AND state = 'cancelled'", gone);
    assert_int_equal(dur_count("a", "timers", where), 1);
    assert_int_equal(dur_count("a", "timers", "key = 'rolled-back'"), 0);
    assert_int_equal(dur_count("a", "timers", "key = 'broken' AND state = 'failed'"), 1);
    assert_int_equal(dur_count("a", "timers", "key = 'bad-data'"), 0);
    assert_int_equal(chorus_timer_cancel(NULL, key), CHORUS_ERR_INVALID_ARG);
}

typedef struct {
    it_raw_t *raw;
    const char *queue;
} dlq_t;

static bool dlq_has_one(void *arg) {
    dlq_t *q = arg;
    return it_raw_count(q->raw, q->queue) >= 1;
}

static void declared_data(void **state) {
    fx_t *fx = *state;
    char c[37], dlq[128];
    snprintf(dlq, sizeof(dlq), "%s.b.dlq", it_ns());
    new_corr(c);
    done_calls = 0;
    send(fx, "a", "Started", c, "{\"n\":0}", NULL);
    amqp_message_t m;
    chorus_t *all[] = {fx->b};
    dlq_t q = {fx->raw, dlq};
    assert_true(it_poll_until(all, 1, 10000, dlq_has_one, &q));
    assert_true(it_raw_get(fx->raw, dlq, &m, 2000));
    char *reason = it_header_str(&m, "x-chorus-fault-reason");
    char *error = it_header_str(&m, "x-chorus-fault-error");
    assert_string_equal(reason, "invalid-data");
    if (!strstr(error, "data.n"))
        fail_msg("error '%s' does not name data.n", error);
    free(reason);
    free(error);
    amqp_destroy_message(&m);
    assert_int_equal(done_calls, 0);
    /* a handler whose output breaks Done's schema: nothing of it leaves */
    new_corr(c);
    long done = dur_count("b", "outbox", "routing_key = 'b.Done'");
    send(fx, "a", "Started", c, "{\"n\":7}", NULL);
    assert_true(it_poll_until(all, 1, 10000, dlq_has_one, &q));
    assert_true(it_raw_get(fx->raw, dlq, &m, 2000));
    reason = it_header_str(&m, "x-chorus-fault-reason");
    error = it_header_str(&m, "x-chorus-fault-error");
    assert_string_equal(reason, "invalid-emit");
    if (!strstr(error, "data.ok"))
        fail_msg("error '%s' does not name data.ok", error);
    free(reason);
    free(error);
    amqp_destroy_message(&m);
    assert_int_equal(dur_count("b", "outbox", "routing_key = 'b.Done'"), done);
    char *g = guard("b", c, "two");
    assert_null(g); /* rolled back with the delivery */
}

/* What is pruned at start-up, after how long: inbox rows and settled
 * timers after store.inbox.retention.hours (a week), saga guards after
 * store.saga.retention.hours (90 days), pending timers never. */
static void pruning(void **state) {
    (void)state;
    const char *sch = dur_schema("a");
    const char *stmts[] = {
        "INSERT INTO %s.saga_guards VALUES ('0190f7d2-0000-7000-8000-00000000a001', 'one', "
        "'done', now() - interval '10 days')",
        "INSERT INTO %s.saga_guards VALUES ('0190f7d2-0000-7000-8000-00000000a002', 'one', "
        "'done', now() - interval '100 days')",
        "INSERT INTO %s.inbox VALUES ('0190f7d2-0000-7000-8000-00000000a003', 'a', "
        "now() - interval '10 days')",
        "INSERT INTO %s.timers (key, fire_at, envelope, state, created_at) VALUES "
        "('old-fired', now(), '{}', 'fired', now() - interval '10 days'),"
        "('old-pending', now() + interval '1 day', '{}', 'pending', now() - interval '10 days')",
    };
    for (size_t i = 0; i < sizeof(stmts) / sizeof(*stmts); i++) {
        char sql[512];
        snprintf(sql, sizeof(sql), stmts[i], sch);
        it_pg_exec(sql, 0, NULL);
    }
    char err[256];
    chorus_t *a3 = chorus_new(saga_conf("a"), err, sizeof(err));
    assert_non_null(a3);
    assert_int_equal(chorus_register(a3, "Failed", on_undo, NULL), CHORUS_OK);
    assert_int_equal(chorus_register(a3, "Stopped", on_undo, NULL), CHORUS_OK);
    assert_int_equal(chorus_start(a3), CHORUS_OK);
    chorus_poll(a3, 50); /* the first poll prunes */
    chorus_destroy(a3);
    assert_int_equal(dur_count("a", "saga_guards",
                               "correlation_id = '0190f7d2-0000-7000-8000-00000000a001'"), 1);
    assert_int_equal(dur_count("a", "saga_guards",
                               "correlation_id = '0190f7d2-0000-7000-8000-00000000a002'"), 0);
    assert_int_equal(dur_count("a", "inbox", "event_id = '0190f7d2-0000-7000-8000-00000000a003'"),
                     0);
    assert_int_equal(dur_count("a", "timers", "key = 'old-fired'"), 0);
    assert_int_equal(dur_count("a", "timers", "key = 'old-pending'"), 1);
}

int main(void) {
    it_amqp_url();
    it_pg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(action_runs_once),
        cmocka_unit_test(cancellation_before_the_pivot),
        cmocka_unit_test(pivot_refuses_past_the_deadline),
        cmocka_unit_test(first_step_deadline_and_compensation),
        cmocka_unit_test(timers_fire_once),
        cmocka_unit_test(declared_data),
        cmocka_unit_test(pruning),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
