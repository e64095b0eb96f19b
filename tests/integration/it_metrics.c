/*
 * The metrics endpoint (metrics.listen) and flow control, against the real
 * RabbitMQ and PostgreSQL:
 *  - a durable participant handles 20 events: /metrics (scraped over a
 *    plain socket) counts 20 handled, its histograms count 20 deliveries
 *    with cumulative, monotone buckets, the outbox backlog and the queue
 *    depth are there; /healthz 200; /readyz 200, then 503 once the broker
 *    closed the connection;
 *  - bad metrics.listen values and a port in use stop chorus_start();
 *  - the broker's memory alarm (connection.blocked): the participant says
 *    it is blocked, nothing it publishes reaches the exchange meanwhile, and
 *    every event goes out once the alarm is cleared (the watermark is
 *    always restored, also when an assertion fails).
 */
#include "durable.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PORT_SCRAPE 19101
#define PORT_BUSY 19102
#define PORT_BLOCK 19103

static const char *AGG = "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e";

/* GET @p path on 127.0.0.1:@p port; the status, the body in @p body. */
static int http_get(int port, const char *path, char *body, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    static char resp[1 << 20];
    size_t got = 0;
    ssize_t r;
    while (got + 1 < sizeof(resp) && (r = read(fd, resp + got, sizeof(resp) - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = '\0';
    int status = 0;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, size, "%s", b ? b + 4 : "");
    return status;
}

/* The value of the sample line that starts with @p prefix; -1 when absent. */
static double sample(const char *text, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, prefix, n) == 0 && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    return -1;
}

static int calls; /* handler runs */

static chorus_outcome_t charge(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                               void *opaque) {
    (void)ch, (void)opaque;
    calls++;
    chorus_envelope_t *ok = chorus_envelope_new("PaymentSucceeded",
                                                chorus_envelope_aggregate_id(env), 1, "{}", NULL);
    assert_int_equal(chorus_emit(d, ok), CHORUS_OK);
    return CHORUS_HANDLED;
}

static chorus_conf_t *conf(int port) {
    chorus_conf_t *c = dur_conf("payment");
    char err[256], listen[64], name[128];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(name, sizeof(name), "%s-metrics-test", it_ns());
    if (chorus_conf_set(c, "metrics.listen", listen, err, sizeof(err)) ||
        chorus_conf_set(c, "metrics.sample.interval.ms", "100", err, sizeof(err)) ||
        chorus_conf_set(c, "amqp.connection.name", name, err, sizeof(err)) ||
        /* a lost connection stays lost long enough to be seen */
        chorus_conf_set(c, "amqp.reconnect.backoff.initial.ms", "5000", err, sizeof(err)))
        fail_msg("%s", err);
    return c;
}

static chorus_t *payment(int port, int batch) {
    char err[256];
    chorus_conf_t *c = conf(port);
    if (batch) {
        char b[16];
        snprintf(b, sizeof(b), "%d", batch);
        chorus_conf_set(c, "consume.batch.max", b, err, sizeof(err));
    }
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "OrderPlaced", charge, NULL), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_OK);
    dur_sql("payment", "TRUNCATE %s.outbox");
    dur_sql("payment", "TRUNCATE %s.inbox");
    return ch;
}

static void publish_orders(int n) {
    it_raw_t *raw = it_raw_open();
    char ex[200];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    for (int i = 0; i < n; i++) {
        chorus_envelope_t *e = chorus_envelope_new("OrderPlaced", AGG, 1, "{}", NULL);
        char *body;
        size_t len;
        assert_int_equal(chorus_envelope_serialize(e, &body, &len), CHORUS_OK);
        it_raw_publish(raw, ex, "order.OrderPlaced", body, len, NULL);
        free(body);
        chorus_envelope_destroy(e);
    }
    it_raw_close(raw);
}

typedef struct {
    chorus_t *ch;
    uint64_t want;
} seen_t;

static bool handled(void *arg) {
    seen_t *s = arg;
    uint64_t v = 0;
    chorus_stat_get(s->ch, "handled", &v);
    return v >= s->want;
}

static void poll_ms(chorus_t *ch, int ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        chorus_poll(ch, 20);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

static char text[1 << 20];

static void scrape_counts_and_health(void **state) {
    (void)state;
    chorus_t *ch = payment(PORT_SCRAPE, 0);
    char body[4096];
    assert_int_equal(http_get(PORT_SCRAPE, "/healthz", body, sizeof(body)), 200);
    publish_orders(20);
    seen_t s = {ch, 20};
    chorus_t *one[] = {ch};
    assert_true(it_poll_until(one, 1, 15000, handled, &s));
    poll_ms(ch, 300); /* a sample after the last batch */

    assert_int_equal(http_get(PORT_SCRAPE, "/metrics", text, sizeof(text)), 200);
    assert_non_null(strstr(text, "# TYPE chorus_handled_total counter"));
    assert_true(sample(text, "chorus_handled_total{service=\"payment\"}") == 20);
    assert_true(sample(text, "chorus_published_total{service=\"payment\"}") == 20);
    /* every counter of the by-name list, the later ones too */
    for (size_t i = 0; i < chorus_stat_count(); i++) {
        char p[128];
        snprintf(p, sizeof(p), "chorus_%s_total{service=\"payment\"}", chorus_stat_name(i));
        assert_true(sample(text, p) >= 0);
    }
    const char *hists[] = {"chorus_handler_duration_seconds", "chorus_propagation_delay_seconds"};
    for (int h = 0; h < 2; h++) {
        char p[160];
        snprintf(p, sizeof(p), "%s_count{service=\"payment\"}", hists[h]);
        assert_true(sample(text, p) == 20);
        snprintf(p, sizeof(p), "%s_bucket{service=\"payment\",le=\"+Inf\"}", hists[h]);
        assert_true(sample(text, p) == 20);
        /* cumulative: never decreasing, down the lines in order */
        double last = 0;
        int buckets = 0;
        snprintf(p, sizeof(p), "%s_bucket{", hists[h]);
        for (const char *l = strstr(text, p); l; l = strstr(l + 1, p)) {
            double v = strtod(strchr(l, '}') + 2, NULL);
            assert_true(v >= last);
            last = v;
            buckets++;
        }
        assert_int_equal(buckets, 17);
    }
    assert_true(sample(text, "chorus_outbox_backlog{service=\"payment\"}") == 0);
    assert_true(sample(text, "chorus_outbox_oldest_age_seconds{service=\"payment\"}") == 0);
    assert_true(sample(text, "chorus_queue_messages_ready{service=\"payment\"}") == 0);
    assert_true(sample(text, "chorus_dlq_messages_ready{service=\"payment\"}") >= 0);
    assert_true(sample(text, "chorus_publish_blocked{service=\"payment\"}") == 0);
    if (getenv("IT_METRICS_DUMP"))
        fputs(text, stderr);

    assert_int_equal(http_get(PORT_SCRAPE, "/readyz", body, sizeof(body)), 200);
    char name[128];
    snprintf(name, sizeof(name), "%s-metrics-test", it_ns());
    assert_true(it_close_connections(name) >= 1);
    poll_ms(ch, 500); /* the loss is seen; the reconnect waits 5 s */
    assert_int_equal(http_get(PORT_SCRAPE, "/readyz", body, sizeof(body)), 503);
    assert_non_null(strstr(body, "broker connection down"));
    assert_int_equal(http_get(PORT_SCRAPE, "/healthz", body, sizeof(body)), 200);
    assert_int_equal(http_get(PORT_SCRAPE, "/metrics", text, sizeof(text)), 200);
    assert_true(sample(text, "chorus_broker_up{service=\"payment\"}") == 0);
    chorus_destroy(ch);
    /* gone with the handle */
    assert_int_equal(http_get(PORT_SCRAPE, "/healthz", body, sizeof(body)), -1);
}

static void start_fails(const char *listen, const char *want) {
    chorus_conf_t *c = conf(PORT_SCRAPE);
    char err[256];
    assert_int_equal(chorus_conf_set(c, "metrics.listen", listen, err, sizeof(err)), CHORUS_CONF_OK);
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_register(ch, "OrderPlaced", charge, NULL), CHORUS_OK);
    assert_int_equal(chorus_start(ch), CHORUS_ERR_INVALID_CONF);
    fprintf(stderr, "metrics.listen=%s: %s\n", listen, chorus_last_error(ch));
    assert_non_null(strstr(chorus_last_error(ch), want));
    chorus_destroy(ch);
}

static void bad_listen_stops_start(void **state) {
    (void)state;
    start_fails("nonsense", "not HOST:PORT");
    start_fails("127.0.0.1:0", "not HOST:PORT");
    start_fails("127.0.0.1:70000", "not HOST:PORT");
    start_fails("192.0.2.1:19150", "not a loopback address");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT_BUSY)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 1), 0);
    char busy[32];
    snprintf(busy, sizeof(busy), "127.0.0.1:%d", PORT_BUSY);
    start_fails(busy, "cannot listen there");
    close(fd);
}

/* ---- flow control ---------------------------------------------------------- */

static bool watermark_lowered;

static void restore_watermark(void) {
    if (watermark_lowered && it_ctl(NULL, 0, "set_vm_memory_high_watermark 0.4") == 0)
        watermark_lowered = false;
}

static int tap_count(it_raw_t *raw, const char *tap) {
    int n = 0;
    amqp_message_t m;
    while (it_raw_get(raw, tap, &m, 0)) {
        amqp_destroy_message(&m);
        n++;
    }
    return n;
}

static void blocked_publishes_wait(void **state) {
    (void)state;
    chorus_t *ch = payment(PORT_BLOCK, 1); /* a delivery a batch */
    it_raw_t *raw = it_raw_open();
    char tap[200];
    snprintf(tap, sizeof(tap), "%s.payment.tap", it_ns());
    it_raw_tap(raw, tap);
    tap_count(raw, tap);
    publish_orders(10); /* before the alarm: the test's own publisher is not blocked */
    watermark_lowered = true;
    char out[1024];
    assert_int_equal(it_ctl(out, sizeof(out), "set_vm_memory_high_watermark 0.0000001"), 0);
    /* the alarm is raised at the broker's next memory check */
    struct timespec d = {2, 0};
    nanosleep(&d, NULL);
    assert_int_equal(tap_count(raw, tap), 10); /* the OrderPlaced themselves */

    calls = 0;
    uint64_t periods = 0, handled_n = 0;
    /* the broker blocks the connection at its first publish under the alarm */
    for (int i = 0; i < 8 && !periods; i++) {
        poll_ms(ch, 1000);
        chorus_stat_get(ch, "blocked_periods", &periods);
    }
    poll_ms(ch, 1000); /* blocked for a while: still nothing goes out */
    chorus_stat_get(ch, "handled", &handled_n);
    assert_int_equal(http_get(PORT_BLOCK, "/metrics", text, sizeof(text)), 200);
    fprintf(stderr, "blocked: periods %llu, handled %llu\n", (unsigned long long)periods,
            (unsigned long long)handled_n);
    assert_true(periods >= 1);
    assert_true(sample(text, "chorus_publish_blocked{service=\"payment\"}") == 1);
    assert_true(sample(text, "chorus_blocked_periods_total{service=\"payment\"}") >= 1);
    assert_int_equal(tap_count(raw, tap), 0); /* nothing reached the exchange */
    assert_true(handled_n < 10);
    fprintf(stderr, "handler runs before and while blocked: %d\n", calls);

    restore_watermark();
    assert_false(watermark_lowered);
    seen_t s = {ch, 10};
    chorus_t *one[] = {ch};
    assert_true(it_poll_until(one, 1, 20000, handled, &s));
    poll_ms(ch, 300);
    assert_int_equal(tap_count(raw, tap), 10);
    assert_int_equal(dur_count("payment", "outbox", "published_at IS NULL"), 0);
    uint64_t blocked_ms = 0;
    chorus_stat_get(ch, "blocked_ms", &blocked_ms);
    assert_true(blocked_ms >= 1000);
    assert_int_equal(http_get(PORT_BLOCK, "/metrics", text, sizeof(text)), 200);
    assert_true(sample(text, "chorus_publish_blocked{service=\"payment\"}") == 0);
    it_raw_close(raw);
    chorus_destroy(ch);
}

static int teardown(void **state) {
    (void)state;
    restore_watermark();
    const char *svcs[] = {"payment"};
    it_cleanup(svcs, 1);
    it_pg_drop_schema(dur_schema("payment"));
    return 0;
}

int main(void) {
    it_amqp_url();
    it_pg();
    atexit(restore_watermark); /* a failed assertion ends the test early */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(scrape_counts_and_health, teardown),
        cmocka_unit_test_teardown(bad_listen_stops_start, teardown),
        cmocka_unit_test_teardown(blocked_publishes_wait, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
