/*
 * TLS against the real servers (scripts/env makes the CA and certificates,
 * RabbitMQ's amqps:// listener and PostgreSQL's ssl = on):
 *  - amqps:// with the local CA: an event goes from a producer presenting
 *    the client certificate to a consumer on a list mixing amqps:// and
 *    amqp://; rabbitmqctl shows both connections as TLS and the producer's
 *    certificate subject;
 *  - a certificate not naming amqp.tls.server.name, and one from a CA
 *    chorus was not told to trust, are refused with CHORUS_ERR_TLS and
 *    chorus_last_error() saying which (and verify.hostname / verify.peer
 *    off let them through);
 *  - a TLS file that cannot be read is named in the error;
 *  - a broker that accepts TCP and never answers the TLS handshake fails
 *    within amqp.connect.timeout.ms;
 *  - chorus-dlq's connection (a default configuration: the CA from
 *    CHORUS_AMQP_TLS_CA_FILE) reaches the amqps:// listener;
 *  - a durable participant's store over TLS (store.conninfo with
 *    sslmode=verify-full): pg_stat_ssl shows its backend encrypted.
 * Skipped (77) without CHORUS_AMQPS_URL and CHORUS_TLS_DIR, failed then if
 * CHORUS_REQUIRE_SERVERS=1.
 */
#include "durable.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *amqps_url, *tls_dir;

static const char *tls_file(const char *name) {
    static char buf[8][512];
    static int next;
    char *s = buf[next++ % 8];
    snprintf(s, 512, "%s/%s", tls_dir, name);
    return s;
}

static void set(chorus_conf_t *c, const char *k, const char *v) {
    char err[256];
    if (chorus_conf_set(c, k, v, err, sizeof(err)) != CHORUS_CONF_OK)
        fail_msg("conf %s=%s: %s", k, v, err);
}

/* A participant on @p url with the local CA; failures fail at once. */
static chorus_conf_t *tls_conf(const char *service, const char *url) {
    chorus_conf_t *c = it_conf(service);
    set(c, "amqp.url", url);
    set(c, "amqp.tls.ca.file", tls_file("ca.pem"));
    set(c, "amqp.start.timeout.ms", "0");
    return c;
}

typedef struct {
    int received;
} ctx_t;

static chorus_outcome_t on_placed(chorus_t *ch, chorus_delivery_t *d,
                                  const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)d, (void)env;
    ((ctx_t *)opaque)->received++;
    return CHORUS_HANDLED;
}

static bool got_one(void *arg) { return ((ctx_t *)arg)->received == 1; }

/* The rabbitmqctl line of the connection whose client properties hold @p name. */
static bool connection_line(const char *name, char *line, size_t size) {
    static char list[65536];
    if (it_ctl(list, sizeof(list),
               "list_connections -q --no-table-headers ssl peer_cert_subject client_properties") != 0)
        fail_msg("list_connections failed: %s", list);
    for (char *l = strtok(list, "\n"); l; l = strtok(NULL, "\n"))
        if (strstr(l, name)) {
            snprintf(line, size, "%s", l);
            return true;
        }
    return false;
}

static void good_certificate(void **state) {
    (void)state;
    ctx_t ctx = {0};
    chorus_conf_t *pc = tls_conf("order", amqps_url);
    set(pc, "amqp.tls.cert.file", tls_file("client.pem"));
    set(pc, "amqp.tls.key.file", tls_file("client.key"));
    chorus_t *prod = it_start(pc);
    /* amqps:// first, so the consumer is on TLS although amqp:// follows */
    char list[2048];
    snprintf(list, sizeof(list), "%s, %s", amqps_url, it_amqp_url());
    chorus_conf_t *cc = tls_conf("payment", list);
    char err[512];
    chorus_t *cons = chorus_new(cc, err, sizeof(err));
    assert_non_null(cons);
    assert_int_equal(chorus_register(cons, "OrderPlaced", on_placed, &ctx), CHORUS_OK);
    assert_int_equal(chorus_start(cons), CHORUS_OK);

    chorus_envelope_t *env = chorus_envelope_new("OrderPlaced",
        "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e", 1, "{\"total\":4999}", NULL);
    assert_non_null(env);
    assert_int_equal(chorus_publish(prod, env, NULL), CHORUS_OK);
    chorus_t *both[] = {prod, cons};
    assert_true(it_poll_until(both, 2, 15000, got_one, &ctx));
    assert_int_equal(chorus_flush(prod, 5000), CHORUS_OK);

    char name[200], line[4096];
    snprintf(name, sizeof(name), "%s.order", it_ns());
    assert_true(connection_line(name, line, sizeof(line)));
    if (strncmp(line, "true\t", 5) != 0 || !strstr(line, "CN=chorus-client"))
        fail_msg("the producer's connection is not TLS with the client certificate: %s", line);
    snprintf(name, sizeof(name), "%s.payment", it_ns());
    assert_true(connection_line(name, line, sizeof(line)));
    if (strncmp(line, "true\t", 5) != 0 || strstr(line, "CN=chorus-client"))
        fail_msg("the consumer's connection is not TLS without a certificate: %s", line);
    chorus_destroy(prod);
    chorus_destroy(cons);
    static const char *const svcs[] = {"order", "payment"};
    it_cleanup(svcs, 2);
}

/* chorus_start() fails with CHORUS_ERR_TLS and a last error holding every
 * one of @p says (NULL-terminated). */
static void refused(chorus_conf_t *c, const char *const *says) {
    char err[512];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_equal(chorus_start(ch), CHORUS_ERR_TLS);
    const char *why = chorus_last_error(ch);
    for (const char *const *s = says; *s; s++)
        if (!strstr(why, *s))
            fail_msg("last error '%s' does not say '%s'", why, *s);
    assert_null(strstr(why, "socket error"));
    chorus_destroy(ch);
}

static void accepted(chorus_conf_t *c) {
    chorus_t *ch = it_start(c);
    chorus_destroy(ch);
}

static void wrong_server_name(void **state) {
    (void)state;
    chorus_conf_t *c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.server.name", "some-other-host");
    refused(c, (const char *const[]){"TLS handshake failed", "hostname mismatch",
                                     "some-other-host", "(TLS)", NULL});
    c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.server.name", "some-other-host");
    set(c, "amqp.tls.verify.hostname", "off");
    accepted(c);
    /* "localhost" is one of the certificate's names, as 127.0.0.1 is */
    c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.server.name", "localhost");
    accepted(c);
}

static void unknown_ca(void **state) {
    (void)state;
    chorus_conf_t *c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.ca.file", tls_file("unknown-ca.pem"));
    /* RabbitMQ sends its CA with the chain: OpenSSL finds it self-signed
     * and not trusted */
    refused(c, (const char *const[]){"TLS handshake failed", "certificate verify failed",
                                     "self-signed certificate in certificate chain",
                                     "unknown-ca.pem", NULL});
    c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.ca.file", tls_file("unknown-ca.pem"));
    set(c, "amqp.tls.verify.peer", "off");
    accepted(c);
    static const char *const svcs[] = {"order"};
    it_cleanup(svcs, 1);
}

static void bad_files(void **state) {
    (void)state;
    chorus_conf_t *c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.ca.file", tls_file("no-such.pem"));
    refused(c, (const char *const[]){"amqp.tls.ca.file", "no-such.pem",
                                     "No such file or directory", NULL});
    c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.cert.file", tls_file("client.pem"));
    refused(c, (const char *const[]){"amqp.tls.key.file", NULL});
    c = tls_conf("order", amqps_url);
    set(c, "amqp.tls.cert.file", tls_file("client.pem"));
    set(c, "amqp.tls.key.file", tls_file("server.key"));
    refused(c, (const char *const[]){"is not the key of", NULL});
}

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* The kernel completes the TCP handshake of a listener that never
 * accepts: the TLS handshake gets no answer and must time out. */
static void silent_broker(void **state) {
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char url[128];
    snprintf(url, sizeof(url), "amqps://u:p@127.0.0.1:%d/", ntohs(a.sin_port));
    chorus_conf_t *c = tls_conf("order", url);
    set(c, "amqp.connect.timeout.ms", "300");
    char err[512];
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    long t0 = now_ms();
    assert_int_equal(chorus_start(ch), CHORUS_ERR_TIMEOUT);
    long took = now_ms() - t0;
    if (took < 250 || took > 3000)
        fail_msg("the handshake gave up after %ld ms (amqp.connect.timeout.ms 300)", took);
    assert_non_null(strstr(chorus_last_error(ch), "TLS handshake"));
    chorus_destroy(ch);
    close(fd);
}

static void dlq_tool(void **state) {
    (void)state;
    char err[512];
    chorus_destroy(it_start(it_conf("order"))); /* its DLQ */
    setenv("CHORUS_AMQP_TLS_CA_FILE", tls_file("unknown-ca.pem"), 1);
    chorus_dlq_t *q = chorus_dlq_open(amqps_url, it_ns(), "order", err, sizeof(err));
    assert_null(q);
    if (!strstr(err, "certificate verify failed"))
        fail_msg("chorus_dlq_open: '%s' does not say 'certificate verify failed'", err);
    setenv("CHORUS_AMQP_TLS_CA_FILE", tls_file("ca.pem"), 1);
    q = chorus_dlq_open(amqps_url, it_ns(), "order", err, sizeof(err));
    if (!q)
        fail_msg("chorus_dlq_open over amqps://: %s", err);
    assert_int_equal(chorus_dlq_fetch(q, 0), CHORUS_OK);
    chorus_dlq_close(q);
    unsetenv("CHORUS_AMQP_TLS_CA_FILE");
    static const char *const svcs[] = {"order"};
    it_cleanup(svcs, 1);
}

static void store_over_tls(void **state) {
    (void)state;
    const char *port = getenv("PGPORT"), *db = getenv("PGDATABASE");
    char ci[1024];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%s dbname=%s sslmode=verify-full sslrootcert=%s",
             port ? port : "5432", db ? db : "postgres", tls_file("ca.pem"));
    chorus_conf_t *c = dur_conf("tlsstore");
    set(c, "store.conninfo", ci);
    chorus_t *ch = it_start(c);
    /* chorus names its store connections after the service */
    char *ssl = it_pg_value("SELECT string_agg(s.ssl::text || ' ' || s.version, ',') "
                            "FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                            "WHERE a.application_name = 'tlsstore'", 0, NULL);
    if (!ssl || strncmp(ssl, "true TLS", 8) != 0 || strstr(ssl, "false"))
        fail_msg("the participant's store connections are not TLS: %s", ssl ? ssl : "(none)");
    free(ssl);
    chorus_destroy(ch);
    /* the CA is checked: one that signed nothing of the server's is refused */
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%s dbname=%s sslmode=verify-full sslrootcert=%s",
             port ? port : "5432", db ? db : "postgres", tls_file("unknown-ca.pem"));
    c = dur_conf("tlsstore");
    set(c, "store.conninfo", ci);
    set(c, "amqp.start.timeout.ms", "0");
    char err[512];
    ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    assert_int_not_equal(chorus_start(ch), CHORUS_OK);
    if (!strstr(chorus_last_error(ch), "certificate verify failed"))
        fail_msg("last error '%s' does not say 'certificate verify failed'", chorus_last_error(ch));
    chorus_destroy(ch);
    it_pg_drop_schema(dur_schema("tlsstore"));
    static const char *const svcs[] = {"tlsstore"};
    it_cleanup(svcs, 1);
    it_pg_close();
}

int main(void) {
    amqps_url = getenv("CHORUS_AMQPS_URL");
    tls_dir = getenv("CHORUS_TLS_DIR");
    if (!amqps_url || !*amqps_url || !tls_dir || !*tls_dir) {
        const char *req = getenv("CHORUS_REQUIRE_SERVERS");
        if (req && strcmp(req, "1") == 0) {
            fprintf(stderr, "CHORUS_AMQPS_URL / CHORUS_TLS_DIR are not set but servers are "
                            "required (scripts/env up writes them)\n");
            return 1;
        }
        fprintf(stderr, "skipped: CHORUS_AMQPS_URL / CHORUS_TLS_DIR are not set\n");
        return 77;
    }
    (void)it_amqp_url();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_certificate), cmocka_unit_test(wrong_server_name),
        cmocka_unit_test(unknown_ca),       cmocka_unit_test(bad_files),
        cmocka_unit_test(silent_broker),    cmocka_unit_test(dlq_tool),
        cmocka_unit_test(store_over_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
