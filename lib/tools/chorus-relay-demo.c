/*
 * chorus-relay-demo: two participants exchanging events end to end over the
 * real broker, the first thing scripts/demo shows until the saga services
 * exist.
 *
 *   order   --OrderPlaced-->       payment
 *   payment --PaymentSucceeded-->  order     (total <= limit)
 *   payment --PaymentFailed-->     order     (total >  limit)
 *
 * Usage: chorus-relay-demo [-n COUNT] [-l LIMIT]   (CHORUS_AMQP_URL set)
 */
#include "chorus/chorus.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char (*ids)[37];
    int n;
    int succeeded, failed, unknown;
    long limit;
} demo_t;

static chorus_t *stop_me[2];

static void on_signal(int sig) {
    (void)sig;
    chorus_stop(stop_me[0]);
    chorus_stop(stop_me[1]);
}

static chorus_outcome_t payment_on_order(chorus_t *ch, chorus_delivery_t *d,
                                         const chorus_envelope_t *env, void *opaque) {
    (void)ch;
    demo_t *demo = opaque;
    const char *data = chorus_envelope_data_json(env);
    const char *t = strstr(data, "\"total\":");
    long total = t ? strtol(t + 8, NULL, 10) : -1;
    if (total < 0) {
        chorus_delivery_set_error(d, "OrderPlaced without a total");
        return CHORUS_REJECT;
    }
    char out[64];
    snprintf(out, sizeof(out), "{\"amount\":%ld}", total);
    chorus_envelope_t *e = chorus_envelope_new(
        total <= demo->limit ? "PaymentSucceeded" : "PaymentFailed",
        chorus_envelope_aggregate_id(env), 1, out, NULL);
    return e && chorus_emit(d, e) == CHORUS_OK ? CHORUS_HANDLED : CHORUS_RETRY_LATER;
}

static bool ours(const demo_t *demo, const chorus_envelope_t *env) {
    const char *corr = chorus_envelope_correlation_id(env);
    for (int i = 0; corr && i < demo->n; i++)
        if (strcmp(demo->ids[i], corr) == 0)
            return true;
    return false;
}

static chorus_outcome_t order_on_payment(chorus_t *ch, chorus_delivery_t *d,
                                         const chorus_envelope_t *env, void *opaque) {
    (void)ch; (void)d;
    demo_t *demo = opaque;
    if (!ours(demo, env))
        demo->unknown++; /* left over from an earlier run: acknowledged */
    else if (strcmp(chorus_envelope_event_type(env), "PaymentSucceeded") == 0)
        demo->succeeded++;
    else
        demo->failed++;
    return CHORUS_HANDLED;
}

static chorus_t *participant(const char *service, char *err, size_t size) {
    chorus_conf_t *c = chorus_conf_new();
    if (chorus_conf_set(c, "service.name", service, err, size) ||
        chorus_conf_set(c, "topology.namespace", "chorusdemo", err, size)) {
        chorus_conf_destroy(c);
        return NULL;
    }
    chorus_t *ch = chorus_new(c, err, size);
    if (!ch)
        chorus_conf_destroy(c);
    return ch;
}

static void usage(FILE *f) {
    fprintf(f, "usage: chorus-relay-demo [-n COUNT] [-l LIMIT]\n"
               "  -n COUNT  orders to place (1-100000, default 200)\n"
               "  -l LIMIT  payments above LIMIT cents fail (default 50000)\n"
               "Reaches the broker through CHORUS_AMQP_URL.\n");
}

static bool parse_num(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    long n = 200, limit = 50000;
    int opt;
    while ((opt = getopt(argc, argv, "n:l:h")) != -1) {
        if (opt == 'n' && parse_num(optarg, 1, 100000, &n))
            continue;
        if (opt == 'l' && parse_num(optarg, 0, 1000000000, &limit))
            continue;
        usage(opt == 'h' ? stdout : stderr);
        return opt == 'h' ? 0 : 2;
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    demo_t demo = {.limit = limit, .ids = calloc((size_t)n, 37)};
    char err[512];
    chorus_t *order = participant("order", err, sizeof(err));
    chorus_t *payment = order ? participant("payment", err, sizeof(err)) : NULL;
    if (!order || !payment) {
        fprintf(stderr, "chorus-relay-demo: %s\n", err);
        return 1;
    }
    chorus_register(payment, "OrderPlaced", payment_on_order, &demo);
    chorus_register(order, "PaymentSucceeded", order_on_payment, &demo);
    chorus_register(order, "PaymentFailed", order_on_payment, &demo);
    chorus_err_t rc;
    if ((rc = chorus_start(order)) || (rc = chorus_start(payment))) {
        fprintf(stderr, "chorus-relay-demo: cannot start: %s\n", chorus_strerror(rc));
        return 1;
    }
    stop_me[0] = order;
    stop_me[1] = payment;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int placed = 0;
    long shown = -1;
    unsigned seed = (unsigned)time(NULL);
    while (demo.succeeded + demo.failed < n) {
        while (placed < n && chorus_outq_len(order) < 500) {
            long total = 1000 + (long)(rand_r(&seed) % 80000);
            char agg[37], data[96];
            chorus_uuid_v7(agg);
            snprintf(data, sizeof(data), "{\"order_id\":\"%s\",\"total\":%ld}", agg, total);
            chorus_envelope_t *e = chorus_envelope_new("OrderPlaced", agg, 1, data, NULL);
            snprintf(demo.ids[placed], 37, "%s", chorus_envelope_event_id(e));
            demo.n = ++placed;
            if (chorus_publish(order, e, NULL) != CHORUS_OK)
                break;
        }
        if (chorus_poll(order, 10) == CHORUS_ERR_STOPPED ||
            chorus_poll(payment, 10) == CHORUS_ERR_STOPPED)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms / 250 != shown || demo.succeeded + demo.failed == n) {
            shown = ms / 250;
            printf("\r  placed %5d/%ld   paid %5d   declined %5d", placed, n,
                   demo.succeeded, demo.failed);
            fflush(stdout);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    chorus_stats_t so, sp;
    chorus_stats(order, &so);
    chorus_stats(payment, &sp);
    printf("\n\n  orders placed        %d\n  payments succeeded   %d\n  payments declined    %d\n"
           "  events published     %llu (order) + %llu (payment), all confirmed\n"
           "  dead-lettered        %llu\n  time                 %.2f s (%.0f orders/s)\n",
           placed, demo.succeeded, demo.failed, (unsigned long long)so.published,
           (unsigned long long)sp.published,
           (unsigned long long)(so.dead_lettered + sp.dead_lettered), secs, placed / secs);
    if (demo.unknown)
        printf("  (%d replies from an earlier run were acknowledged and ignored)\n", demo.unknown);
    bool agree = demo.succeeded + demo.failed == n && so.published == (unsigned long long)n &&
                 sp.handled == (unsigned long long)n;
    printf("\n  verdict: %s\n", agree ? "every order got exactly one payment outcome"
                                     : "INCOMPLETE: some orders have no outcome");
    chorus_destroy(order);
    chorus_destroy(payment);
    free(demo.ids);
    return agree ? 0 : 1;
}
