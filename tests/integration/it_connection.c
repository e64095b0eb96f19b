/*
 * The connection's behaviour against the real broker: several URLs tried in
 * order, refused credentials, heartbeats that keep going while a handler
 * blocks, channel errors recovered without losing the connection, and a
 * declaration that disagrees with an existing queue refused clearly.
 */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static char logbuf[65536];
static void capture(int level, const char *service, const char *line, void *opaque) {
    (void)level; (void)opaque;
    size_t n = strlen(logbuf);
    snprintf(logbuf + n, sizeof(logbuf) - n, "%s: %s\n", service, line);
}

static void set(chorus_conf_t *c, const char *k, const char *v) {
    char err[256];
    if (chorus_conf_set(c, k, v, err, sizeof(err)) != CHORUS_CONF_OK)
        fail_msg("%s", err);
}

/* ---- URLs --------------------------------------------------------------- */

static void hosts_tried_in_order(void **state) {
    (void)state;
    chorus_conf_t *c = it_conf("order");
    char urls[1200];
    snprintf(urls, sizeof(urls), "amqp://nobody:nothing@127.0.0.1:1/, %s", it_amqp_url());
    set(c, "amqp.url", urls);
    set(c, "log.level", "info");
    logbuf[0] = '\0';
    chorus_conf_set_log_cb(c, capture, NULL);
    chorus_t *ch = it_start(c);
    assert_non_null(strstr(logbuf, "broker 127.0.0.1:1/"));
    assert_non_null(strstr(logbuf, "connected to 127.0.0.1"));
    assert_null(strstr(logbuf, "nothing")); /* no password in logs */
    chorus_destroy(ch);
}

static void credentials_refused(void **state) {
    (void)state;
    chorus_conf_t *c = it_conf("order");
    char url[1200];
    /* the real broker, a wrong password */
    const char *real = it_amqp_url();
    const char *at = strrchr(real, '@');
    assert_non_null(at);
    snprintf(url, sizeof(url), "amqp://chorus_admin:wrong-secret%s", at);
    set(c, "amqp.url", url);
    logbuf[0] = '\0';
    chorus_conf_set_log_cb(c, capture, NULL);
    char err[256];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    time_t t0 = time(NULL);
    assert_int_equal(chorus_start(ch), CHORUS_ERR_AUTH);
    assert_true(time(NULL) - t0 < 10);
    assert_null(strstr(logbuf, "wrong-secret"));
    chorus_destroy(ch);
}

/* A peer that accepts TCP but never speaks AMQP: the handshake times out
 * within the configured bound instead of hanging. */
static void silent_peer_times_out(void **state) {
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    chorus_conf_t *c = it_conf("order");
    char url[128];
    snprintf(url, sizeof(url), "amqp://u:p@127.0.0.1:%d/", ntohs(a.sin_port));
    set(c, "amqp.url", url);
    set(c, "amqp.handshake.timeout.ms", "700");
    set(c, "amqp.rpc.timeout.ms", "700");
    set(c, "amqp.start.timeout.ms", "0"); /* one attempt: the bound of one handshake */
    char err[256];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    chorus_err_t rc = chorus_start(ch);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_int_not_equal(rc, CHORUS_OK);
    if (ms > 5000)
        fail_msg("handshake against a silent peer took %ld ms", ms);
    chorus_destroy(ch);
    close(fd);
}

/* A broker that is not there (yet) is tried again until the start timeout,
 * then chorus_start() gives up with a connect error. */
static void start_waits_then_gives_up(void **state) {
    (void)state;
    chorus_conf_t *c = it_conf("order");
    set(c, "amqp.url", "amqp://u:p@127.0.0.1:1/");
    set(c, "amqp.start.timeout.ms", "800");
    logbuf[0] = '\0';
    chorus_conf_set_log_cb(c, capture, NULL);
    char err[256];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(chorus_start(ch), CHORUS_ERR_CONNECT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 700);   /* it kept trying */
    assert_true(ms < 5000);   /* and stopped */
    assert_non_null(strstr(logbuf, "broker not ready"));
    chorus_destroy(ch);
}

/* ---- heartbeats ------------------------------------------------------- */

typedef struct {
    int calls;
    unsigned sleep_s;
} slow_t;

static chorus_outcome_t slow_handler(chorus_t *ch, chorus_delivery_t *d,
                                     const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)d; (void)env;
    slow_t *s = opaque;
    if (s->calls++ == 0)
        sleep(s->sleep_s); /* far longer than two heartbeat intervals */
    return CHORUS_HANDLED;
}

static bool two_calls(void *arg) { return ((slow_t *)arg)->calls >= 2; }

static void heartbeats_during_long_handler(void **state) {
    (void)state;
    slow_t s = {.sleep_s = 5};
    chorus_conf_t *c = it_conf("shipping");
    set(c, "amqp.heartbeat.s", "1");
    char err[256];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "SlowThing", slow_handler, &s), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    for (int i = 0; i < 2; i++) {
        chorus_envelope_t *e = chorus_envelope_new("SlowThing",
            "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", i + 1, "{}", NULL);
        assert_int_equal(chorus_publish(ch, e, NULL), CHORUS_OK);
    }
    assert_int_equal(chorus_flush(ch, 15000), CHORUS_OK);
    chorus_t *one[] = {ch};
    assert_true(it_poll_until(one, 1, 20000, two_calls, &s));
    chorus_poll(ch, 500);
    chorus_stats_t st;
    chorus_stats(ch, &st);
    /* the broker never dropped us, and each event was handled once */
    assert_int_equal(st.reconnects, 0);
    assert_int_equal(s.calls, 2);
    assert_int_equal(st.handled, 2);
    chorus_destroy(ch);
}

/* ---- channel errors ---------------------------------------------------- */

typedef struct {
    int ok, failed, handled, calls;
} pub_t;

static void on_report(chorus_t *ch, const chorus_envelope_t *env, chorus_err_t res,
                      void *mo, void *opaque) {
    (void)ch; (void)env; (void)mo;
    pub_t *p = opaque;
    if (res == CHORUS_OK) p->ok++; else p->failed++;
}

static chorus_outcome_t count_handler(chorus_t *ch, chorus_delivery_t *d,
                                      const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)env;
    pub_t *p = opaque;
    p->calls++;
    if (chorus_delivery_attempt(d) == 1 && strstr(chorus_envelope_data_json(env), "retry"))
        return CHORUS_RETRY_LATER;
    p->handled++;
    return CHORUS_HANDLED;
}

static bool handled_two(void *arg) { return ((pub_t *)arg)->handled >= 2; }

static void publish(chorus_t *ch, const char *data) {
    chorus_envelope_t *e = chorus_envelope_new("Ping", "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e",
                                               1, data, NULL);
    assert_int_equal(chorus_publish(ch, e, NULL), CHORUS_OK);
}

static void deleted_exchange_and_retry_queue(void **state) {
    (void)state;
    pub_t p = {0};
    chorus_conf_t *c = it_conf("inventory");
    chorus_conf_set_dr_cb(c, on_report, &p);
    char err[256];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "Ping", count_handler, &p), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);

    it_raw_t *raw = it_raw_open();
    char name[300];
    /* 404 on the publish channel: the exchange is gone */
    snprintf(name, sizeof(name), "%s.events", it_ns());
    amqp_exchange_delete(raw->st, 1, amqp_cstring_bytes(name), 0);
    publish(ch, "{\"n\":1}");
    assert_int_equal(chorus_flush(ch, 10000), CHORUS_OK);
    assert_int_equal(p.ok, 1);
    assert_int_equal(p.failed, 0);

    /* basic.return for the retry publish: the retry queue is gone */
    snprintf(name, sizeof(name), "%s.inventory.retry.200", it_ns());
    amqp_queue_delete(raw->st, 1, amqp_cstring_bytes(name), 0, 0);
    it_raw_close(raw);
    publish(ch, "{\"retry\":true}");
    chorus_t *one[] = {ch};
    assert_true(it_poll_until(one, 1, 20000, handled_two, &p));
    chorus_stats_t st;
    chorus_stats(ch, &st);
    assert_int_equal(st.reconnects, 0);     /* the connection survived */
    assert_true(st.returned >= 1);          /* the retry publish came back */
    assert_true(st.retried >= 1);           /* and then went through */
    assert_int_equal(p.handled, 2);
    chorus_destroy(ch);
}

static void inequivalent_queue_refused(void **state) {
    (void)state;
    it_raw_t *raw = it_raw_open();
    char q[300];
    snprintf(q, sizeof(q), "%s.billing", it_ns());
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("x-max-length"),
                            .value = {.kind = AMQP_FIELD_KIND_I32, .value = {.i32 = 5}}};
    amqp_table_t args = {.num_entries = 1, .entries = &e};
    amqp_queue_declare(raw->st, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, args);
    assert_int_equal(amqp_get_rpc_reply(raw->st).reply_type, AMQP_RESPONSE_NORMAL);
    it_raw_close(raw);

    chorus_conf_t *c = it_conf("billing");
    logbuf[0] = '\0';
    chorus_conf_set_log_cb(c, capture, NULL);
    char err[256];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "Ping", count_handler, NULL), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_ERR_PRECONDITION);
    assert_non_null(strstr(logbuf, q));
    assert_non_null(strstr(logbuf, "PRECONDITION_FAILED"));
    chorus_destroy(ch);
}

static int teardown(void **state) {
    (void)state;
    const char *svcs[] = {"order", "shipping", "inventory", "billing"};
    it_cleanup(svcs, 4);
    return 0;
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hosts_tried_in_order),
        cmocka_unit_test(credentials_refused),
        cmocka_unit_test(silent_peer_times_out),
        cmocka_unit_test(start_waits_then_gives_up),
        cmocka_unit_test(heartbeats_during_long_handler),
        cmocka_unit_test(deleted_exchange_and_retry_queue),
        cmocka_unit_test(inequivalent_queue_refused),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
