/* URL parsing: defaults, escapes, IPv6, lists, and errors that name the
 * part at fault without echoing the password. */
#include "cm.h"
#include "url_int.h"

#include <string.h>

static void full_url(void **state) {
    (void)state;
    chorus__url_t u;
    char err[256];
    assert_int_equal(chorus__url_parse("amqp://alice:s3cret@broker.example:5673/orders",
                                       &u, err, sizeof(err)), CHORUS_OK);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.pass, "s3cret");
    assert_string_equal(u.host, "broker.example");
    assert_int_equal(u.port, 5673);
    assert_string_equal(u.vhost, "orders");
}

static void defaults(void **state) {
    (void)state;
    chorus__url_t u;
    assert_int_equal(chorus__url_parse("amqp://", &u, NULL, 0), CHORUS_OK);
    assert_string_equal(u.user, "guest");
    assert_string_equal(u.pass, "guest");
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 5672);
    assert_string_equal(u.vhost, "/");
    assert_int_equal(chorus__url_parse("amqp://h", &u, NULL, 0), CHORUS_OK);
    assert_string_equal(u.host, "h");
    assert_string_equal(u.vhost, "/");
    assert_int_equal(chorus__url_parse("amqp://h/", &u, NULL, 0), CHORUS_OK);
    assert_string_equal(u.vhost, "/");
}

static void escapes(void **state) {
    (void)state;
    chorus__url_t u;
    assert_int_equal(chorus__url_parse("amqp://us%40er:p%3Ass%2Fw@h:1/%2f", &u, NULL, 0),
                     CHORUS_OK);
    assert_string_equal(u.user, "us@er");
    assert_string_equal(u.pass, "p:ss/w");
    assert_string_equal(u.vhost, "/");
    assert_int_equal(chorus__url_parse("amqp://u:p@h/my%20vhost", &u, NULL, 0), CHORUS_OK);
    assert_string_equal(u.vhost, "my vhost");
    /* an '@' inside the password is allowed unescaped: the last '@' counts */
    assert_int_equal(chorus__url_parse("amqp://u:p@ss@h", &u, NULL, 0), CHORUS_OK);
    assert_string_equal(u.pass, "p@ss");
    assert_string_equal(u.host, "h");
}

static void ipv6(void **state) {
    (void)state;
    chorus__url_t u;
    assert_int_equal(chorus__url_parse("amqp://[::1]:5679/v", &u, NULL, 0), CHORUS_OK);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 5679);
    char d[300];
    chorus__url_describe(&u, d, sizeof(d));
    assert_string_equal(d, "[::1]:5679/v");
    assert_int_equal(chorus__url_parse("amqp://[::1", &u, NULL, 0), CHORUS_ERR_BAD_URL);
}

static void bad(void **state) {
    (void)state;
    chorus__url_t u;
    char err[256];
    static const struct { const char *url; const char *says; } cases[] = {
        {"http://h", "amqp://"},
        {"amqpss://h", "amqps://"},
        {"AMQPS://h", "amqps://"},
        {"amqps://u:pw@h:0", "port"},
        {"", "empty"},
        {"amqp://h:0", "port"},
        {"amqp://h:65536", "port"},
        {"amqp://h:12x", "port"},
        {"amqp://h:", "port"},
        {"amqp://u:pw@h/a/b", "vhost"},
        {"amqp://u:pw@h/%zz", "vhost"},
        {"amqp://u%2:pw@h", "user"},
        {"amqp://u:pw%4@h", "password"},
        {"amqp://h?x=1", "query"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_int_equal(chorus__url_parse(cases[i].url, &u, err, sizeof(err)),
                         CHORUS_ERR_BAD_URL);
        if (!strstr(err, cases[i].says))
            fail_msg("'%s': error '%s' does not mention '%s'", cases[i].url, err,
                     cases[i].says);
        assert_null(strstr(err, "pw"));
    }
}

/* amqps:// is the same URL over TLS: port 5671 unless one is given. */
static void tls(void **state) {
    (void)state;
    chorus__url_t u;
    char err[256], d[300];
    assert_int_equal(chorus__url_parse("amqps://alice:s3cret@broker.example/orders", &u, err,
                                       sizeof(err)), CHORUS_OK);
    assert_true(u.tls);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.pass, "s3cret");
    assert_string_equal(u.host, "broker.example");
    assert_int_equal(u.port, 5671);
    assert_string_equal(u.vhost, "orders");
    chorus__url_describe(&u, d, sizeof(d));
    assert_string_equal(d, "broker.example:5671/orders (TLS)");
    assert_int_equal(chorus__url_parse("amqps://[::1]:5681", &u, err, sizeof(err)), CHORUS_OK);
    assert_true(u.tls);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 5681);
    assert_int_equal(chorus__url_parse("amqps://", &u, err, sizeof(err)), CHORUS_OK);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 5671);
    assert_int_equal(chorus__url_parse("amqp://h", &u, err, sizeof(err)), CHORUS_OK);
    assert_false(u.tls);
    assert_int_equal(u.port, 5672);
    /* a list may mix both */
    chorus__url_t l[3];
    assert_int_equal(chorus__url_parse_list("amqps://a, amqp://b amqps://c:7", l, 3, err,
                                            sizeof(err)), 3);
    assert_true(l[0].tls);
    assert_int_equal(l[0].port, 5671);
    assert_false(l[1].tls);
    assert_int_equal(l[1].port, 5672);
    assert_true(l[2].tls);
    assert_int_equal(l[2].port, 7);
}

static void list(void **state) {
    (void)state;
    chorus__url_t u[4];
    char err[256];
    assert_int_equal(chorus__url_parse_list("amqp://a:1, amqp://b:2 amqp://c:3", u, 4,
                                            err, sizeof(err)), 3);
    assert_string_equal(u[0].host, "a");
    assert_string_equal(u[1].host, "b");
    assert_int_equal(u[2].port, 3);
    assert_int_equal(chorus__url_parse_list("  ", u, 4, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no AMQP URL"));
    assert_int_equal(chorus__url_parse_list("amqp://a,amqp://b,amqp://c", u, 2, err,
                                            sizeof(err)), -1);
    assert_int_equal(chorus__url_parse_list("amqp://a,ftp://b", u, 4, err, sizeof(err)), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_url), cmocka_unit_test(defaults),
        cmocka_unit_test(escapes),  cmocka_unit_test(ipv6),
        cmocka_unit_test(bad),      cmocka_unit_test(list),
        cmocka_unit_test(tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
