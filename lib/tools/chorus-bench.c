/*
 * chorus-bench: throughput of one hop (consume, publish what it causes with
 * confirms, ack), through chorus and through a plain rabbitmq-c loop doing
 * the same work, in the same run, against the same broker.
 *
 *   raw     basic.consume (prefetch P) -> for the deliveries waiting:
 *           basic.publish each -> wait for the confirms -> one multiple ack
 *   chorus  a participant whose handler emits one event per delivery
 *           (store none), and, with --durable, the same with PostgreSQL
 *           (inbox + outbox in one transaction per batch)
 *
 * The messages are published into the input queue before the clock starts;
 * the clock stops when every output message is confirmed and every input
 * acked.  Usage: chorus-bench [-n COUNT] [--durable]   (CHORUS_AMQP_URL, PG*)
 *
 *   --memory  the peak resident memory of a participant (a child process,
 *             default limits) fed worst-case messages: JSON of small
 *             numbers that decodes to ~40x its size, the same just under
 *             message.max.decoded.bytes, 1 MiB strings, ~130 KB headers.
 *             CHORUS_BENCH_CONF="key=value;..." changes the participant's
 *             configuration (e.g. the bounds lifted, for comparison).
 */
#include "chorus/chorus.h"
#include "chorus/chorus_pg.h"
#include "proc_cpu.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- CPU of this process and of the servers (--cpu NAME=PID[+]) ------ */

#define MAX_WATCH 8
static struct {
    char name[32];
    int pid;
    bool tree;
} watch[MAX_WATCH];
static int nwatch;

typedef struct {
    double self, other[MAX_WATCH];
} cpu_snap_t;

static void snap(cpu_snap_t *c) {
    c->self = proc_cpu((int)getpid(), false);
    for (int i = 0; i < nwatch; i++)
        c->other[i] = proc_cpu(watch[i].pid, watch[i].tree);
}

/* "NAME=PID" or "NAME=PID+" (with its descendants). */
static bool add_watch(const char *arg) {
    if (nwatch == MAX_WATCH || !proc_watch_parse(arg, watch[nwatch].name, sizeof(watch[0].name),
                                                 &watch[nwatch].pid, &watch[nwatch].tree))
        return false;
    nwatch++;
    return true;
}

static void print_rss(const long rss[2], long n) {
    printf("      resident memory: %.1f MiB after %ld messages, %.1f MiB after %ld\n",
           (double)rss[0] / 1024, n / 10, (double)rss[1] / 1024, n);
}

static void print_cpu(const cpu_snap_t c[2], long n) {
    printf("      CPU per message: this process %.1f us", (c[1].self - c[0].self) * 1e6 / (double)n);
    for (int i = 0; i < nwatch; i++)
        if (c[0].other[i] >= 0 && c[1].other[i] >= 0)
            printf(", %s %.1f us", watch[i].name, (c[1].other[i] - c[0].other[i]) * 1e6 / (double)n);
    printf("\n");
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static char body[512];
static size_t body_len;
static size_t id_at; /* where the event_id sits in body */

/* Every message is a different event: a new event_id in place. */
static void new_event_id(void) {
    char id[37];
    chorus_uuid_v7(id);
    memcpy(body + id_at, id, 36);
}

static void make_body(void) {
    chorus_envelope_t *e = chorus_envelope_new("BenchPing", "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e",
                                               1, "{\"payload\":\"0123456789abcdef\"}", NULL);
    char *s;
    chorus_envelope_serialize(e, &s, &body_len);
    memcpy(body, s, body_len);
    id_at = (size_t)(strstr(body, chorus_envelope_event_id(e)) - body);
    free(s);
    chorus_envelope_destroy(e);
}

/* ---- the raw loop --------------------------------------------------------- */

static amqp_connection_state_t raw_connect(void) {
    const char *url = getenv("CHORUS_AMQP_URL");
    struct amqp_connection_info ci;
    char *copy = strdup(url);
    char *comma = strpbrk(copy, ", ");
    if (comma)
        *comma = '\0';
    if (amqp_parse_url(copy, &ci)) {
        fprintf(stderr, "bench: bad CHORUS_AMQP_URL\n");
        exit(2);
    }
    amqp_connection_state_t st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(st);
    if (amqp_socket_open(s, ci.host, ci.port) ||
        amqp_login(st, ci.vhost && *ci.vhost ? ci.vhost : "/", 0, 131072, 0,
                   AMQP_SASL_METHOD_PLAIN, ci.user, ci.password).reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "bench: cannot reach the broker\n");
        exit(1);
    }
    free(copy);
    amqp_channel_open(st, 1);
    amqp_confirm_select(st, 1);
    return st;
}

static void raw_queue(amqp_connection_state_t st, const char *q) {
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("x-queue-type"),
                            .value = {.kind = AMQP_FIELD_KIND_UTF8,
                                      .value.bytes = amqp_cstring_bytes("quorum")}};
    amqp_queue_delete(st, 1, amqp_cstring_bytes(q), 0, 0);
    amqp_queue_declare(st, 1, amqp_cstring_bytes(q), 0, 1, 0, 0, (amqp_table_t){1, &e});
}

/* Publishes n messages to q, waiting for confirms in windows of 500; @p seq
 * counts the channel's publishes so far (confirm tags go on from there). */
static void raw_fill(amqp_connection_state_t st, const char *q, long n, uint64_t *seq) {
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
    amqp_bytes_t b = {body_len, body};
    uint64_t end = *seq + (uint64_t)n, sent = *seq, acked = *seq;
    while (acked < end) {
        while (sent < end && sent - acked < 500) {
            new_event_id();
            amqp_basic_publish(st, 1, amqp_empty_bytes, amqp_cstring_bytes(q), 0, 0, &p, b);
            sent++;
        }
        amqp_frame_t f;
        if (amqp_simple_wait_frame(st, &f) == AMQP_STATUS_OK && f.frame_type == AMQP_FRAME_METHOD &&
            f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            acked = a->multiple ? a->delivery_tag : acked + 1;
        }
        amqp_maybe_release_buffers(st);
    }
    *seq = end;
}

/* Two connections, so deliveries and confirms never share one frame
 * stream: the consumer's carries deliveries, the publisher's confirms. */
static double raw_hop(long n, cpu_snap_t cpu[2]) {
    amqp_connection_state_t in = raw_connect(), out = raw_connect();
    raw_queue(in, "bench.raw.in");
    raw_queue(in, "bench.raw.out");
    uint64_t fill_seq = 0;
    raw_fill(out, "bench.raw.in", n, &fill_seq);
    amqp_basic_qos(in, 1, 0, 100, 0);
    amqp_basic_consume(in, 1, amqp_cstring_bytes("bench.raw.in"), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
    double t0 = now_s();
    long done = 0;
    /* the fill used the same channel: its confirm tags go on from there */
    uint64_t pub_seq = fill_seq, confirmed = fill_seq;
    snap(&cpu[0]);
    while (done < n) {
        uint64_t last_tag = 0;
        int batch = 0;
        struct timeval zero = {0, 0};
        do { /* the deliveries already waiting, at least one */
            amqp_envelope_t env;
            amqp_rpc_reply_t r = amqp_consume_message(in, &env, batch ? &zero : NULL, 0);
            if (r.reply_type != AMQP_RESPONSE_NORMAL)
                break;
            amqp_basic_publish(out, 1, amqp_empty_bytes, amqp_cstring_bytes("bench.raw.out"), 0,
                               0, &p, env.message.body);
            pub_seq++;
            last_tag = env.delivery_tag;
            amqp_destroy_envelope(&env);
            batch++;
        } while (batch < 64);
        while (confirmed < pub_seq) {
            amqp_frame_t f;
            if (amqp_simple_wait_frame(out, &f) != AMQP_STATUS_OK)
                break;
            if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                amqp_basic_ack_t *a = f.payload.method.decoded;
                confirmed = a->multiple ? a->delivery_tag : confirmed + 1;
            }
        }
        amqp_basic_ack(in, 1, last_tag, 1);
        done += batch;
        amqp_maybe_release_buffers(in);
        amqp_maybe_release_buffers(out);
    }
    double secs = now_s() - t0;
    snap(&cpu[1]);
    amqp_queue_delete(out, 1, amqp_cstring_bytes("bench.raw.in"), 0, 0);
    amqp_queue_delete(out, 1, amqp_cstring_bytes("bench.raw.out"), 0, 0);
    amqp_connection_close(in, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(in);
    amqp_connection_close(out, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(out);
    return secs;
}

/* ---- through chorus ------------------------------------------------------- */

static long handled;
static double durable_rt, durable_st, durable_batch;

static chorus_outcome_t pong(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                             void *opaque) {
    (void)ch;
    (void)opaque;
    handled++;
    chorus_envelope_t *e = chorus_envelope_new("BenchPong", chorus_envelope_aggregate_id(env), 1,
                                               "{\"ok\":true}", NULL);
    return chorus_emit(d, e) == CHORUS_OK ? CHORUS_HANDLED : CHORUS_RETRY_LATER;
}

static chorus_t *participant(bool durable, bool handles) {
    char err[512];
    chorus_conf_t *c = chorus_conf_new();
    chorus_conf_set(c, "service.name", durable ? "benchdurable" : "bench", err, sizeof(err));
    chorus_conf_set(c, "topology.namespace", "bench", err, sizeof(err));
    chorus_conf_set(c, "log.level", "warning", err, sizeof(err));
    if (durable) {
        chorus_conf_set(c, "store.type", "postgres", err, sizeof(err));
        chorus_conf_set(c, "store.schema", "bench_durable", err, sizeof(err));
    }
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    if (!ch || (handles && chorus_register(ch, "BenchPing", pong, NULL)) || chorus_start(ch)) {
        fprintf(stderr, "bench: cannot start the participant%s%s\n", ch ? "" : ": ",
                ch ? "" : err);
        exit(1);
    }
    return ch;
}

/* --soak: the queue is fed while the participant consumes (at most
 * SOAK_AHEAD waiting), so a million messages never sit in the broker. */
static bool soak;
#define SOAK_AHEAD 20000
#define SOAK_CHUNK 2000

/* rss: this process' resident kB after a tenth of the messages and at the end. */
static double chorus_hop(long n, bool durable, cpu_snap_t cpu[2], long rss[2]) {
    /* A participant without handlers declares the queue but does not
     * consume: the queue is filled first, then the clock runs. */
    chorus_t *declarer = participant(durable, false);
    amqp_connection_state_t st = raw_connect();
    char q[256];
    snprintf(q, sizeof(q), "%s", chorus_queue_name(declarer));
    amqp_queue_purge(st, 1, amqp_cstring_bytes(q));
    long sent = soak ? 0 : n;
    uint64_t fill_seq = 0;
    if (!soak)
        raw_fill(st, q, n, &fill_seq);
    /* What the participant emits goes to a queue bound to it, as the raw
     * loop's go to bench.raw.out (not to the namespace's unrouted queue). */
    raw_queue(st, "bench.pong");
    amqp_queue_bind(st, 1, amqp_cstring_bytes("bench.pong"), amqp_cstring_bytes("bench.events"),
                    amqp_cstring_bytes(durable ? "benchdurable.BenchPong" : "bench.BenchPong"),
                    amqp_empty_table);
    chorus_destroy(declarer);

    handled = 0;
    chorus_t *ch = participant(durable, true);
    double t0 = now_s();
    snap(&cpu[0]);
    chorus_stats_t s;
    long rss_tenth = -1;
    uint64_t done = 0, purged = 0;
    do {
        if (sent < n && sent - (long)done < SOAK_AHEAD) {
            long k = n - sent < SOAK_CHUNK ? n - sent : SOAK_CHUNK;
            raw_fill(st, q, k, &fill_seq);
            sent += k;
        }
        chorus_poll(ch, 10);
        chorus_stats(ch, &s);
        done = s.handled + s.duplicates;
        if (rss_tenth < 0 && done >= (uint64_t)n / 10)
            rss_tenth = proc_vm_kb((int)getpid(), "VmRSS");
        if (soak && done - purged >= 100000) { /* what it emitted: nobody reads it */
            amqp_queue_purge(st, 1, amqp_cstring_bytes("bench.pong"));
            purged = done;
        }
    } while (done < (uint64_t)n);
    chorus_flush(ch, 10000);
    double secs = now_s() - t0;
    snap(&cpu[1]);
    rss[0] = rss_tenth;
    rss[1] = proc_vm_kb((int)getpid(), "VmRSS");
    if (durable) {
        uint64_t rt = 0, st = 0, tx = 0, b = 0;
        chorus_stat_get(ch, "sql_round_trips", &rt);
        chorus_stat_get(ch, "sql_statements", &st);
        chorus_stat_get(ch, "transactions", &tx);
        chorus_stat_get(ch, "batches", &b);
        durable_rt = (double)rt / (double)n;
        durable_st = (double)st / (double)n;
        durable_batch = b ? (double)n / (double)b : 0;
        (void)tx;
    }
    chorus_destroy(ch);
    amqp_queue_delete(st, 1, amqp_cstring_bytes("bench.pong"), 0, 0);
    amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(st);
    return secs;
}

/* ---- memory under hostile input -------------------------------------- */

static long mem_total;

static chorus_outcome_t swallow(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                void *opaque) {
    (void)ch, (void)d, (void)env, (void)opaque;
    return CHORUS_HANDLED;
}

/* An envelope whose data is {"a":[1,1,...]} of about @p text bytes, or
 * {"s":"xxx..."} when @p string. */
static char *worst_envelope(size_t text, bool string, size_t *len) {
    char *data = malloc(text + 32);
    size_t o = (size_t)sprintf(data, string ? "{\"s\":\"" : "{\"a\":[1");
    while (o < text)
        if (string)
            data[o++] = 'x';
        else
            data[o++] = ',', data[o++] = '1';
    strcpy(data + o, string ? "\"}" : "]}");
    chorus_envelope_t *e = chorus_envelope_new("BenchPing", "0190f7d2-1c2a-7b3c-8d4e-5f6a7b8c9d0e",
                                               1, data, NULL);
    free(data);
    char *out = NULL;
    if (!e || chorus_envelope_serialize(e, &out, len)) {
        fprintf(stderr, "bench: cannot build a worst-case envelope\n");
        exit(1);
    }
    chorus_envelope_destroy(e);
    return out;
}

static void publish_n(amqp_connection_state_t st, const char *q, const char *b, size_t len, int n,
                      const amqp_table_t *headers) {
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
    if (headers) {
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers = *headers;
    }
    for (int i = 0; i < n; i++) {
        amqp_basic_publish(st, 1, amqp_empty_bytes, amqp_cstring_bytes(q), 0, 0, &p,
                           (amqp_bytes_t){len, (void *)b});
        amqp_frame_t f;
        amqp_simple_wait_frame(st, &f); /* the confirm: one at a time, these are big */
        amqp_maybe_release_buffers(st);
    }
    mem_total += n;
}

/* Runs the participant in a child until every message is settled; its
 * peak resident set in MB. */
static long child_peak_mb(long expect) {
    pid_t pid = fork();
    if (pid == 0) {
        char err[256];
        chorus_conf_t *c = chorus_conf_new();
        chorus_conf_set(c, "service.name", "benchmem", err, sizeof(err));
        chorus_conf_set(c, "topology.namespace", "bench", err, sizeof(err));
        chorus_conf_set(c, "log.level", "err", err, sizeof(err));
        /* CHORUS_BENCH_CONF="key=value;...": other limits, for comparison */
        char *extra = getenv("CHORUS_BENCH_CONF") ? strdup(getenv("CHORUS_BENCH_CONF")) : NULL;
        for (char *kv = extra ? strtok(extra, ";") : NULL; kv; kv = strtok(NULL, ";")) {
            char *eq = strchr(kv, '=');
            if (!eq)
                _exit(2);
            *eq = '\0';
            if (chorus_conf_set(c, kv, eq + 1, err, sizeof(err)) != CHORUS_CONF_OK) {
                fprintf(stderr, "bench: CHORUS_BENCH_CONF: %s\n", err);
                _exit(2);
            }
        }
        free(extra);
        chorus_t *ch = chorus_new(c, err, sizeof(err));
        if (!ch || chorus_register(ch, "BenchPing", swallow, NULL) || chorus_start(ch))
            _exit(1);
        chorus_stats_t s;
        double until = now_s() + 300;
        do {
            chorus_poll(ch, 50);
            chorus_stats(ch, &s);
        } while ((long)(s.handled + s.dead_lettered) < expect && now_s() < until);
        chorus_flush(ch, 10000);
        chorus_destroy(ch);
        _exit((long)(s.handled + s.dead_lettered) >= expect ? 0 : 3);
    }
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench: the participant did not settle every message\n");
        exit(1);
    }
    return ru.ru_maxrss / 1024;
}

static int memory_bench(int n) {
    chorus_t *declarer = NULL;
    {
        char err[256];
        chorus_conf_t *c = chorus_conf_new();
        chorus_conf_set(c, "service.name", "benchmem", err, sizeof(err));
        chorus_conf_set(c, "topology.namespace", "bench", err, sizeof(err));
        declarer = chorus_new(c, err, sizeof(err));
        if (!declarer || chorus_start(declarer)) {
            fprintf(stderr, "bench: cannot declare the participant's queue\n");
            return 1;
        }
    }
    char q[256];
    snprintf(q, sizeof(q), "%s", chorus_queue_name(declarer));
    amqp_connection_state_t st = raw_connect();
    amqp_queue_purge(st, 1, amqp_cstring_bytes(q));
    chorus_destroy(declarer);

    printf("peak resident memory of a participant (default limits: message.max.bytes 1 MiB,\n"
           "message.max.decoded.bytes 16 MiB, consume.batch.max.decoded.bytes 64 MiB,\n"
           "prefetch 100, batch 64), %d messages of each kind:\n", n);
    char tiny[] = "x";
    publish_n(st, q, tiny, 1, 1, NULL);
    long idle = child_peak_mb(1);
    printf("  one small malformed message      %5ld MB\n", idle);
    size_t len;
    char *numbers = worst_envelope((1u << 20) - 600, false, &len); /* decodes to ~42 MB */
    if (len > (1u << 20)) {
        fprintf(stderr, "bench: the worst-case envelope is over 1 MiB\n");
        return 1;
    }
    publish_n(st, q, numbers, len, n, NULL);
    printf("  1 MiB of small numbers (~42 MB decoded: refused)   %5ld MB\n",
           child_peak_mb(n));
    free(numbers);
    char *near = worst_envelope(390000, false, &len); /* ~15.6 MB decoded: accepted */
    publish_n(st, q, near, len, n, NULL);
    printf("  390 KB of small numbers (~15.6 MB decoded)         %5ld MB\n", child_peak_mb(n));
    free(near);
    char *str = worst_envelope((1u << 20) - 600, true, &len);
    publish_n(st, q, str, len, n, NULL);
    printf("  1 MiB strings                                     %5ld MB\n", child_peak_mb(n));
    free(str);
    static char big[130900];
    memset(big, 'h', sizeof(big));
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("x-huge"),
                            .value = {.kind = AMQP_FIELD_KIND_UTF8,
                                      .value.bytes = {sizeof(big), big}}};
    amqp_table_t h = {1, &e};
    publish_n(st, q, tiny, 1, n, &h);
    printf("  130 KB of headers, garbage body                   %5ld MB\n", child_peak_mb(n));
    amqp_queue_purge(st, 1, amqp_cstring_bytes("bench.benchmem.dlq"));
    amqp_connection_close(st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(st);
    return 0;
}

int main(int argc, char **argv) {
    long n = 20000;
    bool durable = false, memory = false;
    static const struct option lo[] = {{"durable", no_argument, NULL, 'd'},
                                       {"memory", no_argument, NULL, 'm'},
                                       {"cpu", required_argument, NULL, 'c'},
                                       {"soak", no_argument, NULL, 's'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        char *end;
        if (c == 'n' && (n = strtol(optarg, &end, 10)) >= 100 && n <= 1000000 && !*end)
            continue;
        if (c == 'd') {
            durable = true;
            continue;
        }
        if (c == 'm') {
            memory = true;
            continue;
        }
        if (c == 'c' && add_watch(optarg))
            continue;
        if (c == 's') {
            soak = true;
            continue;
        }
        fprintf(c == 'h' ? stdout : stderr,
                "usage: chorus-bench [-n COUNT (100..1000000, default 20000)] [--durable] [--soak]\n"
                "                    [--cpu NAME=PID[+]]...  (a process whose CPU per message\n"
                "                    to report; PID+ with its descendants)\n"
                "       chorus-bench --memory [-n COUNT (default 100 of each kind)]\n");
        return c == 'h' ? 0 : 2;
    }
    if (!getenv("CHORUS_AMQP_URL")) {
        fprintf(stderr, "bench: CHORUS_AMQP_URL is not set\n");
        return 2;
    }
    if (memory)
        return memory_bench(n == 20000 ? 100 : (int)n);
    make_body();
    cpu_snap_t cpu_raw[2], cpu_ch[2], cpu_du[2];
    long rss_ch[2], rss_du[2];
    if (soak) { /* memory over a long run, no ceiling to compare with */
        double secs = chorus_hop(n, durable, cpu_ch, rss_ch);
        printf("soak: %ld messages through a %s participant, fed while it consumes:\n"
               "  %8.0f msg/s  (%.2f s)\n", n, durable ? "durable" : "plain", n / secs, secs);
        print_cpu(cpu_ch, n);
        print_rss(rss_ch, n);
        return 0;
    }
    double raw = raw_hop(n, cpu_raw);
    double ch = chorus_hop(n, false, cpu_ch, rss_ch);
    printf("one hop (consume, publish with confirms, ack), %ld messages, quorum queues:\n", n);
    printf("  raw rabbitmq-c loop   %8.0f msg/s  (%.2f s)\n", n / raw, raw);
    print_cpu(cpu_raw, n);
    printf("  chorus                %8.0f msg/s  (%.2f s)   %.2f of the raw loop\n", n / ch, ch,
           raw / ch);
    print_cpu(cpu_ch, n);
    print_rss(rss_ch, n);
    if (durable) {
        double du = chorus_hop(n, true, cpu_du, rss_du);
        printf("  chorus + PostgreSQL   %8.0f msg/s  (%.2f s)   %.2f of the raw loop "
               "(inbox + outbox per batch)\n", n / du, du, raw / du);
        print_cpu(cpu_du, n);
        print_rss(rss_du, n);
        printf("  PostgreSQL per delivery: %.2f round trips, %.2f statements "
               "(%.1f deliveries per batch)\n", durable_rt, durable_st, durable_batch);
    }
    return 0;
}
