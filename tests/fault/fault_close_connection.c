/*
 * The broker forcibly closes both participants' connections
 * (`rabbitmqctl close_connection`) in the middle of 1000 events: all 1000
 * are handled and confirmed, none lost, nothing dead-lettered.
 */
#include "stream.h"

static void close_them(void) {
    int n = it_close_connections(it_ns());
    fprintf(stderr, "closed %d connections\n", n);
    assert_true(n >= 2);
}

static void close_mid_stream(void **state) {
    (void)state;
    run_stream(1000, 300, close_them, NULL);
}

int main(void) {
    it_amqp_url();
    const struct CMUnitTest tests[] = {cmocka_unit_test(close_mid_stream)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
