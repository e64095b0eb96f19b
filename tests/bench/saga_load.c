/*
 * saga-load - the load generator and stopwatch of `scripts/bench --saga`.
 *
 * One process, no process per order: it places orders in a loop exactly
 * as `order place` does (services/order/cli.c: one transaction with the
 * idempotency key, the Order's event store append and its read model, and
 * the outbox row of OrderPlaced; the running order service's relay
 * publishes it, woken by NOTIFY), and it consumes the saga's terminal
 * events itself, to time each saga:
 *
 *   placed here ---- tx: idempotency key + es append + projection + outbox
 *        |                                        |
 *        |  OrderPlaced's timestamp (t0)          v  order's relay publishes
 *        |                              payment -> inventory -> shipping
 *        |                                        |        -> order
 *        v                                        v
 *   <ns>.benchload <-- "*.<terminal event>" --- events exchange     (t1)
 *
 *   latency = t1 (terminal event received here) - t0 (first event's timestamp)
 *
 * The terminal events come from the declaration (CHORUS_SAGA_FILE), as a
 * generic observer would find them: every event some service of the saga
 * consumes (its observers consume all) for which chorus_saga_is_terminal()
 * holds; the completion's event (chorus_saga_completion_event()) is a
 * success, any other terminal event a cancellation -- services/monitor's
 * rule.  Sagas are matched by correlation id: OrderPlaced's event id,
 * which every event of its saga carries.  The consumer is a plain chorus
 * participant without saga.file and store (it is not in the declaration
 * and needs no exactly-once effects); a terminal event seen twice counts
 * once.
 *
 *   capacity   --sagas N [--inflight M]: places N orders as fast as the
 *              system absorbs them, never more than M without their
 *              terminal event; reports sagas/s from the first placed to
 *              the last terminal.
 *   open loop  --rate R --duration S: R orders a second on a fixed
 *              schedule, whatever the completions do (if placing itself
 *              falls behind, the slip is reported).
 *
 * Both then wait at most --drain seconds for the missing terminal events,
 * poll the monitor's tables (saga_instances of schema <prefix>monitor,
 * over the admin connection of PG*) until they show as many sagas
 * terminal as arrived here, and print the latency percentiles, the
 * monitor's lag and the CPU time (user+sys, /proc/PID/stat) of each
 * process named by --cpu NAME=PID (NAME=PID+ adds its descendants and the
 * children it reaped), of this process, and of the PostgreSQL backends
 * logged in as the bench's roles (<prefix>*) or as this process' own, by
 * role.  The window runs from the first order placed until the monitor
 * caught up; the servers serve others too, so each process' use in the
 * IDLE_MS before, with the services running and no load, is shown beside.
 *
 * Orders: SKU-A x1 and SKU-B x1 (stock is the caller's to seed); one in
 * --decline-every (default 50) carries the card payment declines.
 * Everything is bounded: at most 100000 sagas, and each wait.
 */
#include "order.h"
#include "proc_cpu.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAGAS 100000
#define MAX_CPU 16
#define MAX_BACKENDS 256

typedef struct {
    char corr[37];
    int64_t placed_ms; /* OrderPlaced's timestamp */
    int64_t done_ms;   /* its terminal event received; 0 while open */
    bool completed;
} saga_t;

static struct {
    saga_t *sagas;
    long n, cap;        /* placed, room */
    int32_t *index;     /* open addressing over sagas, by corr; -1 empty */
    size_t mask;
    long completed, cancelled, duplicates, foreign;
    int64_t last_done_ms;
    const char *success; /* the completion's event, or NULL */
} g;

static double mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static size_t hash(const char *s) {
    size_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static void remember(const char *corr, int64_t placed_ms) {
    if (g.n == g.cap)
        return; /* never: one per order placed, at most cap */
    saga_t *s = &g.sagas[g.n];
    snprintf(s->corr, sizeof(s->corr), "%s", corr);
    s->placed_ms = placed_ms;
    size_t i = hash(corr) & g.mask;
    while (g.index[i] >= 0)
        i = (i + 1) & g.mask;
    g.index[i] = (int32_t)g.n++;
}

static saga_t *find(const char *corr) {
    for (size_t i = hash(corr) & g.mask; g.index[i] >= 0; i = (i + 1) & g.mask)
        if (strcmp(g.sagas[g.index[i]].corr, corr) == 0)
            return &g.sagas[g.index[i]];
    return NULL;
}

static long open_sagas(void) { return g.n - g.completed - g.cancelled; }

/* ------------------------------------------------------------- placing */

/* --hot-skus (0: SKU-A and SKU-B in every order). */
static long hot_skus;

/* OrderPlaced as services/order/cli.c order_placed() builds it, for the
 * order of number @p i. */
static chorus_envelope_t *order_placed(long i, long decline_every, char id[37]) {
    chorus_uuid_v7(id);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "order_id", id);
    cJSON_AddStringToObject(data, "customer_id", "0190f7d2-0000-7000-8000-00000000000a");
    cJSON *items = cJSON_AddArrayToObject(data, "items");
    /* --hot-skus K: two of K SKUs, in every pairing in turn, so orders
     * contend for stock rows in both orders of each pair (inventory locks
     * an order's rows sorted; two orders' batches are what may circle). */
    static const int PRICE[] = {1500, 2500};
    char skus[2][32];
    if (hot_skus >= 2) {
        long a = i % hot_skus, b = (a + 1 + (i / hot_skus) % (hot_skus - 1)) % hot_skus;
        snprintf(skus[0], sizeof(skus[0]), "SKU-H%ld", a);
        snprintf(skus[1], sizeof(skus[1]), "SKU-H%ld", b);
    } else {
        snprintf(skus[0], sizeof(skus[0]), "SKU-A");
        snprintf(skus[1], sizeof(skus[1]), "SKU-B");
    }
    for (size_t k = 0; k < 2; k++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "sku", skus[k]);
        cJSON_AddNumberToObject(it, "qty", 1);
        cJSON_AddNumberToObject(it, "price", PRICE[k]);
        cJSON_AddItemToArray(items, it);
    }
    cJSON_AddNumberToObject(data, "total", 4000);
    char address[64];
    snprintf(address, sizeof(address), "%ld Harbour Street, Leith", 1 + i);
    cJSON_AddStringToObject(data, "address", address);
    bool declined = decline_every > 0 && i % decline_every == decline_every - 1;
    cJSON_AddStringToObject(data, "card", declined ? "4000000000000002" : "4242424242424242");
    return chorus_envelope_new_json("OrderPlaced", id, 1, data, NULL);
}

/* One order, one transaction, as `order place` (cli.c place()).  The
 * correlation id is set to the event id -- what chorus takes when there is
 * none -- so the saga's key is known before the commit. */
static bool place(chorus_t *order, long i, long decline_every, const char *key_prefix) {
    char id[37], key[200], before[37];
    chorus_envelope_t *ev = order_placed(i, decline_every, id);
    if (!ev)
        return false;
    char corr[37];
    snprintf(corr, sizeof(corr), "%s", chorus_envelope_event_id(ev));
    chorus_envelope_set_correlation_id(ev, corr);
    int64_t ts = chorus_envelope_timestamp_ms(ev);
    snprintf(key, sizeof(key), "%s-%ld", key_prefix, i + 1);
    chorus_tx_t *tx;
    if (chorus_tx_begin(order, &tx)) {
        chorus_envelope_destroy(ev);
        return false;
    }
    order_state_t st = {0};
    chorus_err_t rc = chorus_tx_idempotent(tx, key, id, before, sizeof(before));
    if (rc) {
        chorus_envelope_destroy(ev);
        chorus_tx_rollback(tx);
        return false;
    }
    if (order_append(tx, &st, 0, ev)) { /* takes ev */
        chorus_tx_rollback(tx);
        return false;
    }
    if (chorus_tx_commit(tx) != CHORUS_OK)
        return false; /* an unknown outcome is not waited for either */
    remember(corr, ts);
    return true;
}

/* ------------------------------------------------------------ observing */

static chorus_outcome_t on_terminal(chorus_t *ch, chorus_delivery_t *d,
                                    const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)d, (void)opaque;
    const char *corr = chorus_envelope_correlation_id(env);
    saga_t *s = find(corr ? corr : chorus_envelope_event_id(env));
    if (!s) {
        g.foreign++;
        return CHORUS_HANDLED;
    }
    if (s->done_ms) {
        g.duplicates++;
        return CHORUS_HANDLED;
    }
    s->done_ms = chorus_now_ms();
    s->completed = g.success && strcmp(g.success, chorus_envelope_event_type(env)) == 0;
    s->completed ? g.completed++ : g.cancelled++;
    g.last_done_ms = s->done_ms;
    return CHORUS_HANDLED;
}

/* The terminal events of @p saga, registered on @p obs; how many. */
static size_t register_terminals(chorus_t *obs, const chorus_saga_t *saga) {
    const char *const *services, *const *types;
    size_t ns = chorus_saga_services(saga, &services), found = 0;
    const char *seen[64];
    for (size_t s = 0; s < ns; s++) {
        size_t nt = chorus_saga_consumes(saga, services[s], &types);
        for (size_t t = 0; t < nt; t++) {
            bool dup = false;
            for (size_t k = 0; k < found; k++)
                dup = dup || strcmp(seen[k], types[t]) == 0;
            if (dup || !chorus_saga_is_terminal(saga, types[t]) || found == 64)
                continue;
            seen[found++] = types[t];
            if (chorus_register(obs, types[t], on_terminal, NULL))
                return 0;
        }
    }
    return found;
}

static chorus_t *observer(void) {
    char err[512];
    const char *ns = getenv("CHORUS_NAMESPACE"), *url = getenv("CHORUS_AMQP_URL");
    chorus_conf_t *c = chorus_conf_new();
    bool ok = chorus_conf_set(c, "service.name", "benchload", err, sizeof(err)) == 0 &&
              chorus_conf_set(c, "log.level", "warning", err, sizeof(err)) == 0 &&
              (!ns || !*ns ||
               chorus_conf_set(c, "topology.namespace", ns, err, sizeof(err)) == 0) &&
              (!url || chorus_conf_set(c, "amqp.url", url, err, sizeof(err)) == 0);
    chorus_t *ch = ok ? chorus_new(c, err, sizeof(err)) : NULL;
    if (!ch) {
        fprintf(stderr, "saga-load: the observer: %s\n", err);
        chorus_conf_destroy(c);
    }
    return ch;
}

/* ------------------------------------------------------------ CPU time */

typedef struct {
    char name[32];
    int pid;
    bool tree;
    double at[3]; /* seconds of user+sys: before the idle time, at the start, at the end */
    long rss_kb[4]; /* VmRSS at the start, half the sagas terminal, the end; VmHWM at the end */
    bool gone;
} cpu_t;
enum { IDLE, START, END };
enum { RSS_START, RSS_MID, RSS_END, RSS_PEAK };
#define IDLE_MS 2000

/* The PostgreSQL backends of the bench: logged in as one of its roles
 * (<prefix>...) or serving this process' own connections. */
typedef struct {
    int pid;
    char role[64]; /* its login role, or "load generator (admin)" for our own */
    double start, end;
} backend_t;
static backend_t backends[MAX_BACKENDS];
static int nbackends;
static char own_backend[16]; /* the backend of this process' order handle */

static void sample_backends(PGconn *admin, const char *prefix, bool start) {
    const char *params[2] = {prefix, own_backend};
    PGresult *r = PQexecParams(admin,
                               "SELECT pid, CASE WHEN pid = pg_backend_pid()"
                               " THEN 'lag probe (admin)'"
                               " WHEN pid::text = $2 THEN 'load generator (' || usename || ')'"
                               " ELSE usename::text END"
                               " FROM pg_stat_activity WHERE"
                               " left(usename::text, length($1)) = $1 OR pid = pg_backend_pid()",
                               2, NULL, params, NULL, NULL, 0);
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        int pid = atoi(PQgetvalue(r, i, 0)), k = 0;
        while (k < nbackends && backends[k].pid != pid)
            k++;
        if (k == nbackends) {
            if (nbackends == MAX_BACKENDS)
                continue;
            backends[nbackends] = (backend_t){.pid = pid}; /* born in the window: from 0 */
            snprintf(backends[nbackends++].role, sizeof(backends[0].role), "%s",
                     PQgetvalue(r, i, 1));
        }
        double s;
        if ((s = proc_cpu(pid, false)) >= 0)
            *(start ? &backends[k].start : &backends[k].end) = s;
    }
    PQclear(r);
}

/* The resident memory of each process itself (not its descendants). */
static void sample_rss(cpu_t *cpu, int ncpu, int when) {
    for (int i = 0; i < ncpu; i++) {
        int pid = cpu[i].pid ? cpu[i].pid : (int)getpid();
        cpu[i].rss_kb[when] = proc_vm_kb(pid, "VmRSS");
        if (when == RSS_END)
            cpu[i].rss_kb[RSS_PEAK] = proc_vm_kb(pid, "VmHWM");
    }
}

/* pid 0: this process. */
static void sample_cpu(cpu_t *cpu, int ncpu, int when) {
    for (int i = 0; i < ncpu; i++) {
        double s = proc_cpu(cpu[i].pid ? cpu[i].pid : (int)getpid(), cpu[i].tree);
        cpu[i].gone = cpu[i].gone || s < 0;
        cpu[i].at[when] = s;
    }
}

/* ---------------------------------------------------------- the run */

typedef struct {
    /* options */
    long sagas, inflight, rate, duration, drain, decline_every;
    bool open_loop;
    long total;
    cpu_t cpu[MAX_CPU];
    int ncpu;
    /* results */
    long attempted, errors, monitor_seen;
    double t0, placed_at, window_s, max_slip;
    int64_t monitor_at; /* wall clock when the monitor showed them all; 0: never */
    bool mid_sampled;
} run_t;

/* Polls the observer; samples memory once half the sagas are terminal. */
static void observe(run_t *r, chorus_t *obs, int ms) {
    chorus_poll(obs, ms);
    if (!r->mid_sampled && (g.completed + g.cancelled) * 2 >= r->total) {
        r->mid_sampled = true;
        sample_rss(r->cpu, r->ncpu, RSS_MID);
    }
}

/* Places the orders: on the schedule (open loop) or as fast as at most
 * inflight are open (capacity); polls the observer in between. */
static void place_all(run_t *r, chorus_t *order, chorus_t *obs, const char *key_prefix) {
    double last_progress = r->t0;
    while (r->attempted < r->total) {
        double now = mono_ms();
        if (r->open_loop) {
            double due = r->t0 + (double)r->attempted * 1000.0 / (double)r->rate;
            if (now < due) {
                int wait = (int)(due - now);
                observe(r, obs, wait < 1 ? 0 : wait > 50 ? 50 : wait);
                continue;
            }
            if (now - due > r->max_slip)
                r->max_slip = now - due;
        } else if (open_sagas() >= r->inflight) {
            long before = g.completed + g.cancelled;
            observe(r, obs, 20);
            if (g.completed + g.cancelled > before)
                last_progress = mono_ms();
            else if (mono_ms() - last_progress > (double)r->drain * 1000) {
                fprintf(stderr, "saga-load: no saga ended for %ld s with %ld in flight;"
                                " placing no more\n", r->drain, open_sagas());
                return;
            }
            continue;
        }
        if (!place(order, r->attempted, r->decline_every, key_prefix))
            r->errors++;
        r->attempted++;
        last_progress = mono_ms();
        observe(r, obs, 0);
    }
}

/* --------------------------------------------------------------- report */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(const int64_t *v, long n, double p) {
    long i = (long)ceil(p * (double)n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void print_latency(void) {
    int64_t *lat = malloc(sizeof(int64_t) * (size_t)(g.n ? g.n : 1));
    long n = 0;
    for (long i = 0; i < g.n; i++)
        if (g.sagas[i].done_ms)
            lat[n++] = g.sagas[i].done_ms - g.sagas[i].placed_ms;
    qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
    if (n)
        printf("  latency      p50 %lld ms   p95 %lld ms   p99 %lld ms   max %lld ms"
               "   (OrderPlaced's timestamp -> terminal event received)\n",
               (long long)pct(lat, n, 0.50), (long long)pct(lat, n, 0.95),
               (long long)pct(lat, n, 0.99), (long long)lat[n - 1]);
    free(lat);
}

/* Polls the monitor's saga_instances until it shows at least as many
 * sagas terminal as arrived here, or @p until_ms (monotonic) passes. */
static void wait_monitor(run_t *r, PGconn *admin, const char *schema, double until_ms) {
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM %s.saga_instances WHERE state IN ('completed', 'cancelled')",
             schema);
    for (;;) {
        PGresult *res = PQexec(admin, sql);
        int64_t now = chorus_now_ms();
        r->monitor_seen = PQresultStatus(res) == PGRES_TUPLES_OK ? atol(PQgetvalue(res, 0, 0)) : -1;
        PQclear(res);
        if (r->monitor_seen >= g.completed + g.cancelled) {
            r->monitor_at = now;
            return;
        }
        if (mono_ms() > until_ms)
            return;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void print_cpu(const run_t *r) {
    printf("  cpu over the %.1f s window       user+sys s   %% of one core   (idle: %% in the"
           " %.0f s before)\n", r->window_s, IDLE_MS / 1000.0);
    double sum = 0, w = r->window_s;
    for (int i = 0; i < r->ncpu; i++) {
        const cpu_t *c = &r->cpu[i];
        if (c->gone) {
            printf("    %-28s     (gone)\n", c->name);
            continue;
        }
        double s = c->at[END] - c->at[START], idle = c->at[START] - c->at[IDLE];
        sum += s;
        printf("    %-28s %8.2f   %6.0f           (%3.0f)\n", c->name, s, 100 * s / w,
               100 * idle / (IDLE_MS / 1000.0));
    }
    double be = 0;
    for (int i = 0; i < nbackends; i++)
        be += backends[i].end > 0 ? backends[i].end - backends[i].start : 0;
    printf("    %-28s %8.2f   %6.0f   (%d backends, part of postgres above; by role:)\n",
           "pg backends of the bench", be, 100 * be / w, nbackends);
    for (int i = 0; i < nbackends; i++) { /* one line per role, in order of first appearance */
        bool first = true;
        for (int k = 0; first && k < i; k++)
            first = strcmp(backends[k].role, backends[i].role) != 0;
        if (!first)
            continue;
        double rs = 0;
        int n = 0;
        for (int k = i; k < nbackends; k++)
            if (strcmp(backends[k].role, backends[i].role) == 0)
                rs += backends[k].end > 0 ? backends[k].end - backends[k].start : 0, n++;
        printf("      %-26s %8.2f   %6.0f   (%d)\n", backends[i].role, rs, 100 * rs / w, n);
    }
    printf("    %-28s %8.2f   %6.0f   (%ld online cpus)\n", "sum", sum, 100 * sum / w,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("  resident memory, MiB (the process itself)  start    half    end   peak\n");
    for (int i = 0; i < r->ncpu; i++) {
        const cpu_t *c = &r->cpu[i];
        if (c->tree || c->gone)
            continue; /* the servers: whole process trees, shared */
        printf("    %-38s", c->name);
        for (int k = RSS_START; k <= RSS_PEAK; k++)
            printf(c->rss_kb[k] >= 0 ? " %6.1f" : "      -", (double)c->rss_kb[k] / 1024);
        printf("\n");
    }
}

static void report(const run_t *r, const char *monitor_schema) {
    long ended = g.completed + g.cancelled;
    char declined[48] = "none declined";
    if (r->decline_every)
        snprintf(declined, sizeof(declined), "1 in %ld declined", r->decline_every);
    if (r->open_loop)
        printf("open loop: %ld sagas/s for %ld s (%ld offered), %s\n", r->rate, r->duration,
               r->total, declined);
    else
        printf("capacity: %ld sagas, at most %ld in flight, %s\n", r->total, r->inflight,
               declined);
    printf("  sagas        placed %ld   completed %ld   cancelled %ld   unfinished %ld"
           " (drain %ld s)   placement errors %ld\n",
           g.n, g.completed, g.cancelled, g.n - ended, r->drain, r->errors);
    double placing_s = (r->placed_at - r->t0) / 1000;
    printf("  placing      %ld in %.2f s = %.0f/s (one connection, one transaction each)",
           r->attempted, placing_s, placing_s > 0 ? (double)r->attempted / placing_s : 0);
    if (r->open_loop)
        printf(", schedule slip max %.0f ms", r->max_slip);
    printf("\n");
    if (ended) {
        double span = (double)(g.last_done_ms - g.sagas[0].placed_ms) / 1000;
        printf("  throughput   %.1f sagas/s ended (first placed -> last terminal: %.2f s)\n",
               span > 0 ? (double)ended / span : 0, span);
        print_latency();
        if (r->monitor_at)
            printf("  monitor      %ld sagas terminal in %s.saga_instances %lld ms after the last"
                   " terminal event arrived here\n", r->monitor_seen, monitor_schema,
                   (long long)(r->monitor_at - g.last_done_ms));
        else
            printf("  monitor      only %ld of %ld sagas terminal in %s.saga_instances after"
                   " %ld s\n", r->monitor_seen, ended, monitor_schema, r->drain);
    }
    if (g.duplicates || g.foreign)
        printf("  (terminal events seen twice: %ld; of no saga placed here: %ld)\n", g.duplicates,
               g.foreign);
    print_cpu(r);
}

/* ----------------------------------------------------------------- main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: saga-load --sagas N [--inflight M]        capacity\n"
            "       saga-load --rate R --duration S           open loop\n"
            "       [--drain S] [--decline-every K] [--hot-skus H] [--cpu NAME=PID[+]]...\n"
            "N 1..%d (default 2000), M 1..10000 (default 1000), R 1..5000 sagas/s,\n"
            "S 1..600 s (R*S at most %d), drain 1..600 s (default 30), K 0..1000000 (0:\n"
            "none declined; default 50), H 0 or 2..1000 (two of SKU-H0..H<H-1> per order,\n"
            "seeded by the caller; 0, the default: SKU-A and SKU-B).  PID+ adds the process' descendants.  The\n"
            "environment as the order service's (CHORUS_SAGA_FILE, CHORUS_NAMESPACE,\n"
            "CHORUS_SCHEMA_PREFIX, CHORUS_PG_ORDER, CHORUS_AMQP_URL, PG* for the admin).\n",
            MAX_SAGAS, MAX_SAGAS);
}

/* "NAME=PID" or "NAME=PID+" into the next slot of r->cpu. */
static bool parse_cpu(run_t *r, const char *arg) {
    if (r->ncpu >= MAX_CPU - 1)
        return false;
    cpu_t *c = &r->cpu[r->ncpu];
    *c = (cpu_t){.rss_kb = {-1, -1, -1, -1}};
    if (!proc_watch_parse(arg, c->name, sizeof(c->name), &c->pid, &c->tree))
        return false;
    r->ncpu++;
    return true;
}

/* 0, or the exit code (usage printed). */
static int parse_args(run_t *r, int argc, char **argv) {
    static const struct option lo[] = {
        {"sagas", required_argument, NULL, 'n'},  {"inflight", required_argument, NULL, 'i'},
        {"rate", required_argument, NULL, 'r'},   {"duration", required_argument, NULL, 'd'},
        {"drain", required_argument, NULL, 'D'},  {"decline-every", required_argument, NULL, 'k'},
        {"hot-skus", required_argument, NULL, 'H'},
        {"cpu", required_argument, NULL, 'c'},    {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    *r = (run_t){.sagas = -1, .inflight = 1000, .drain = 30, .decline_every = 50};
    for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        bool ok;
        switch (c) {
        case 'n': ok = svc_parse_long(optarg, 1, MAX_SAGAS, &r->sagas); break;
        case 'i': ok = svc_parse_long(optarg, 1, 10000, &r->inflight); break;
        case 'r': ok = svc_parse_long(optarg, 1, 5000, &r->rate); break;
        case 'd': ok = svc_parse_long(optarg, 1, 600, &r->duration); break;
        case 'D': ok = svc_parse_long(optarg, 1, 600, &r->drain); break;
        case 'k': ok = svc_parse_long(optarg, 0, 1000000, &r->decline_every); break;
        case 'H': ok = svc_parse_long(optarg, 0, 1000, &hot_skus) && hot_skus != 1; break;
        case 'c': ok = parse_cpu(r, optarg); break;
        case 'h': usage(stdout); return -1;
        default: ok = false;
        }
        if (!ok) {
            for (size_t k = 0; c != '?' && lo[k].name; k++)
                if (lo[k].val == c)
                    fprintf(stderr, "saga-load: bad --%s '%s'\n", lo[k].name, optarg);
            usage(stderr);
            return 2;
        }
    }
    r->open_loop = r->rate > 0;
    if (optind < argc || r->open_loop != (r->duration > 0) || (r->open_loop && r->sagas > 0) ||
        (r->open_loop && r->rate * r->duration > MAX_SAGAS)) {
        fprintf(stderr, "saga-load: either --sagas N, or --rate R with --duration S"
                        " (R*S at most %d)\n", MAX_SAGAS);
        usage(stderr);
        return 2;
    }
    r->total = r->open_loop ? r->rate * r->duration : r->sagas > 0 ? r->sagas : 2000;
    r->cpu[r->ncpu++] = (cpu_t){.name = "load generator", .pid = 0, .rss_kb = {-1, -1, -1, -1}};
    return 0;
}

static bool alloc_sagas(long total) {
    g.cap = total;
    g.sagas = calloc((size_t)total, sizeof(saga_t));
    for (g.mask = 1; g.mask < (size_t)total * 2; g.mask <<= 1)
        ;
    g.index = malloc(sizeof(int32_t) * g.mask);
    if (!g.sagas || !g.index)
        return false;
    memset(g.index, 0xff, sizeof(int32_t) * g.mask); /* -1: empty */
    g.mask--;
    return true;
}

int main(int argc, char **argv) {
    run_t r;
    int code = parse_args(&r, argc, argv);
    if (code)
        return code < 0 ? 0 : code;
    char err[1024];
    const char *file = getenv("CHORUS_SAGA_FILE");
    chorus_saga_t *saga = chorus_saga_load(file && *file ? file : "sagas/order_fulfillment.json",
                                           err, sizeof(err));
    if (!saga || !alloc_sagas(r.total)) {
        fprintf(stderr, "saga-load: %s\n", saga ? "out of memory" : err);
        return 1;
    }
    g.success = chorus_saga_completion_event(saga);

    PGconn *admin = PQconnectdb(""); /* PG*: the admin, for the monitor and pg_stat_activity */
    chorus_t *order = svc_open("order"), *obs = observer();
    size_t nterminal = obs ? register_terminals(obs, saga) : 0;
    if (PQstatus(admin) != CONNECTION_OK || !order || !obs || nterminal == 0 ||
        order_prepare_tables(order) || chorus_start(obs)) {
        fprintf(stderr, "saga-load: cannot start (%s)\n",
                PQstatus(admin) != CONNECTION_OK ? PQerrorMessage(admin)
                : nterminal == 0                 ? "no terminal event, or cannot register"
                                                 : "the order handle or the observer");
        return 1;
    }
    chorus_tx_t *tx; /* which backend serves the order handle, for the CPU table */
    if (chorus_tx_begin(order, &tx) == CHORUS_OK) {
        snprintf(own_backend, sizeof(own_backend), "%d", PQbackendPID(chorus_tx_pg(tx)));
        chorus_tx_rollback(tx);
    }
    char key_prefix[37], monitor_schema[128];
    chorus_uuid_v7(key_prefix);
    snprintf(monitor_schema, sizeof(monitor_schema), "%s", svc_schema("monitor"));
    const char *prefix = getenv("CHORUS_SCHEMA_PREFIX") ? getenv("CHORUS_SCHEMA_PREFIX") : "";

    /* what each process uses with no load (the servers are shared): IDLE_MS first */
    sample_cpu(r.cpu, r.ncpu, IDLE);
    for (double idle_from = mono_ms(); mono_ms() - idle_from < IDLE_MS;)
        chorus_poll(obs, 50);
    sample_cpu(r.cpu, r.ncpu, START);
    sample_rss(r.cpu, r.ncpu, RSS_START);
    sample_backends(admin, prefix, true);
    r.t0 = mono_ms();
    place_all(&r, order, obs, key_prefix);
    r.placed_at = mono_ms();
    while (open_sagas() > 0 && mono_ms() - r.placed_at < (double)r.drain * 1000)
        observe(&r, obs, 50);
    wait_monitor(&r, admin, monitor_schema, mono_ms() + (double)r.drain * 1000);
    sample_cpu(r.cpu, r.ncpu, END);
    sample_rss(r.cpu, r.ncpu, RSS_END);
    sample_backends(admin, prefix, false);
    r.window_s = (mono_ms() - r.t0) / 1000;
    report(&r, monitor_schema);

    bool all = g.n == g.completed + g.cancelled && r.errors == 0;
    chorus_destroy(obs);
    chorus_destroy(order);
    PQfinish(admin);
    chorus_saga_destroy(saga);
    free(g.sagas);
    free(g.index);
    return all ? 0 : 3;
}
