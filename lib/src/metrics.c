/*
 * metrics.c - the participant's metrics and health endpoint (metrics.listen).
 *
 *   poll thread                              libmicrohttpd's thread
 *   -----------                              ----------------------
 *   handlers: chorus__hist_observe()         GET /metrics  -> format(snap)
 *   (plain stores into ch->hist)             GET /healthz  -> 200
 *   end of chorus_poll():                    GET /readyz   -> 200, or 503
 *     chorus__metrics_sample()                                 and why not
 *       every N ms: queue depths (passive
 *       queue.declare on channel 4), outbox
 *       backlog and age (SQL, store.pg)
 *       lock; snap = counters + samples; unlock ---> lock; copy snap; unlock
 *
 * Why a snapshot under a mutex rather than atomics: every counter and
 * histogram is written by the poll thread alone, with plain stores, so the
 * hot path pays nothing; the copy (a few hundred bytes) is made once per
 * poll, and the HTTP thread never reads chorus_t.  The sampled figures need
 * the AMQP connection and the transaction connection, neither of which may
 * be used by two threads (rabbitmq-c and libpq connections are not thread
 * safe), so they are taken by the poll loop between batches, when no
 * transaction is open, and never by the HTTP thread.
 *
 * /readyz is 503 when the snapshot is older than STALE_MS too: a poll loop
 * that stopped polling is not consuming, whatever its last copy said.
 */
#include "chorus_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CH_METRICS 4          /* the AMQP channel of the passive declares */
#define STALE_MS 15000

static const double BOUNDS[CHORUS__NHIST][CHORUS__HIST_BUCKETS] = {
    /* handler: 100 us .. 10 s */
    {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
     5, 10},
    /* propagation: the envelope's timestamp has ms resolution; 1 ms .. 5 min */
    {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
};

void chorus__hist_observe(chorus__hist_t *h, chorus__hist_kind_t kind, uint64_t ns) {
    double s = (double)ns / 1e9;
    int i = 0;
    while (i < CHORUS__HIST_BUCKETS && s > BOUNDS[kind][i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_ns += ns;
}

/* ---- the exposition format (pure) ---------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} buf_t;

static void put(buf_t *b, const char *fmt, ...) CHORUS_PRINTF(2, 3);
static void put(buf_t *b, const char *fmt, ...) {
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

bool chorus__metrics_escape(const char *in, char *out, size_t size) {
    size_t o = 0;
    for (; *in; in++) {
        const char *e = *in == '\\' ? "\\\\" : *in == '"' ? "\\\"" : *in == '\n' ? "\\n" : NULL;
        size_t n = e ? 2 : 1;
        if (o + n >= size)
            return false;
        if (e)
            memcpy(out + o, e, 2);
        else
            out[o] = *in;
        o += n;
    }
    if (o >= size)
        return false;
    out[o] = '\0';
    return true;
}

static void gauge(buf_t *b, const char *name, const char *help, const char *lbl, int64_t v) {
    if (v < 0)
        return; /* not sampled (yet): absent rather than a wrong 0 */
    put(b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %lld\n", name, help, name, name, lbl,
        (long long)v);
}

static void histogram(buf_t *b, const char *name, const char *help, const char *lbl,
                      const chorus__hist_t *h, chorus__hist_kind_t kind) {
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < CHORUS__HIST_BUCKETS; i++) {
        cum += h->bucket[i];
        put(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, lbl, BOUNDS[kind][i],
            (unsigned long long)cum);
    }
    cum += h->bucket[CHORUS__HIST_BUCKETS];
    put(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lbl, (unsigned long long)cum);
    put(b, "%s_sum{%s} %.9f\n%s_count{%s} %llu\n", name, lbl, (double)h->sum_ns / 1e9, name,
        lbl, (unsigned long long)h->count);
}

char *chorus__metrics_format(const chorus__metrics_snap_t *s, const char *service, size_t *len) {
    char esc[2 * 64 + 1], lbl[sizeof(esc) + 16];
    if (!chorus__metrics_escape(service, esc, sizeof(esc)))
        esc[0] = '\0';
    snprintf(lbl, sizeof(lbl), "service=\"%s\"", esc);
    buf_t b = {.p = malloc(8192), .cap = 8192};
    if (!b.p)
        return NULL;
    for (size_t i = 0; i < s->nstats; i++) {
        const char *n = chorus_stat_name(i);
        put(&b, "# HELP chorus_%s_total %s\n# TYPE chorus_%s_total counter\nchorus_%s_total{%s} %llu\n",
            n, chorus_stat_help(i), n, n, lbl, (unsigned long long)s->stats[i]);
    }
    histogram(&b, "chorus_handler_duration_seconds", "time in the handler per delivery", lbl,
              &s->hist[CHORUS__HIST_HANDLER], CHORUS__HIST_HANDLER);
    histogram(&b, "chorus_propagation_delay_seconds",
              "handling time minus the event's timestamp (envelope)", lbl,
              &s->hist[CHORUS__HIST_PROPAGATION], CHORUS__HIST_PROPAGATION);
    gauge(&b, "chorus_queue_messages_ready", "messages ready in the service's queue (consumer lag)",
          lbl, s->queue_ready);
    gauge(&b, "chorus_dlq_messages_ready", "messages in the service's dead-letter queue", lbl,
          s->dlq_ready);
    gauge(&b, "chorus_outbox_backlog", "outbox rows not yet published", lbl, s->outbox_backlog);
    if (s->outbox_oldest_ms >= 0)
        put(&b, "# HELP chorus_outbox_oldest_age_seconds age of the oldest unpublished outbox row "
                "(0: none)\n# TYPE chorus_outbox_oldest_age_seconds gauge\n"
                "chorus_outbox_oldest_age_seconds{%s} %.3f\n",
            lbl, (double)s->outbox_oldest_ms / 1000.0);
    gauge(&b, "chorus_publish_blocked", "1 while the broker blocks publishing (connection.blocked)",
          lbl, s->blocked);
    gauge(&b, "chorus_broker_up", "1 while the broker connection is up", lbl, s->broker_up);
    if (s->store_enabled)
        gauge(&b, "chorus_store_up", "1 while PostgreSQL is reachable", lbl, s->store_up);
    gauge(&b, "chorus_consuming", "1 while the participant consumes its queue", lbl, s->consuming);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

const char *chorus__metrics_unready(const chorus__metrics_snap_t *s, int64_t now_ms) {
    if (s->stopping)
        return "stopping";
    if (!s->taken_ms || now_ms - s->taken_ms > STALE_MS)
        return "the poll loop is not polling";
    if (!s->broker_up)
        return "broker connection down";
    if (s->store_enabled && !s->store_up)
        return "PostgreSQL unreachable";
    if (!s->consuming)
        return "not consuming";
    return "";
}

/* ---- the endpoint --------------------------------------------------------- */

struct chorus__metrics_s {
    struct MHD_Daemon *d;
    pthread_mutex_t lock;
    chorus__metrics_snap_t snap;    /* under lock */
    char service[65];
    /* poll thread only */
    int64_t next_sample_ms;
    int64_t queue_ready, dlq_ready, outbox_backlog, outbox_oldest_ms;
    bool chan_open;
    uint64_t chan_conn;             /* ch->stats.reconnects when it was opened */
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_len, void **req) {
    (void)version, (void)data, (void)data_len, (void)req;
    struct chorus__metrics_s *m = cls;
    static const char text[] = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, "GET only\n", 9,
                     MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/healthz") == 0)
        return reply(c, MHD_HTTP_OK, text, "ok\n", 3, MHD_RESPMEM_PERSISTENT);
    chorus__metrics_snap_t s;
    pthread_mutex_lock(&m->lock);
    s = m->snap;
    pthread_mutex_unlock(&m->lock);
    if (strcmp(url, "/readyz") == 0) {
        const char *why = chorus__metrics_unready(&s, chorus__mono_ms());
        if (!*why)
            return reply(c, MHD_HTTP_OK, text, "ready\n", 6, MHD_RESPMEM_PERSISTENT);
        char body[128];
        int n = snprintf(body, sizeof(body), "not ready: %s\n", why);
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, text, body, (size_t)n,
                     MHD_RESPMEM_MUST_COPY);
    }
    if (strcmp(url, "/metrics") == 0) {
        size_t len;
        char *body = chorus__metrics_format(&s, m->service, &len);
        if (!body)
            return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, "out of memory\n", 14,
                         MHD_RESPMEM_PERSISTENT);
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                     MHD_RESPMEM_MUST_FREE);
    }
    return reply(c, MHD_HTTP_NOT_FOUND, text, "not found (/metrics, /healthz, /readyz)\n", 40,
                 MHD_RESPMEM_PERSISTENT);
}

/* "127.0.0.1:9464" or "[::1]:9464" into @p ss; false when it is not one. */
static bool parse_listen(const char *v, struct sockaddr_storage *ss, socklen_t *sl) {
    char host[64];
    const char *colon;
    if (v[0] == '[') {
        const char *end = strchr(v, ']');
        if (!end || end[1] != ':' || (size_t)(end - v - 1) >= sizeof(host))
            return false;
        memcpy(host, v + 1, (size_t)(end - v - 1));
        host[end - v - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(v, ':');
        if (!colon || (size_t)(colon - v) >= sizeof(host))
            return false;
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
    }
    char *e;
    errno = 0;
    long port = strtol(colon + 1, &e, 10);
    if (errno || e == colon + 1 || *e || port < 1 || port > 65535)
        return false;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *sl = sizeof(*a4);
        return true;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *sl = sizeof(*a6);
        return true;
    }
    return false;
}

static bool is_loopback(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

int chorus__metrics_start(chorus_t *ch, char *err, size_t size) {
    const char *v = chorus__conf_str(ch->conf, "metrics.listen");
    if (!*v || ch->metrics)
        return CHORUS_OK;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (!parse_listen(v, &ss, &sl)) {
        snprintf(err, size, "metrics.listen '%s': not HOST:PORT with a numeric address "
                            "(e.g. 127.0.0.1:9464 or [::1]:9464)", v);
        return CHORUS_ERR_INVALID_CONF;
    }
    if (!is_loopback(&ss) && strcmp(chorus__conf_str(ch->conf, "metrics.listen.remote"), "true")) {
        snprintf(err, size, "metrics.listen '%s': not a loopback address (the endpoint has no "
                            "authentication; set metrics.listen.remote=true to allow it)", v);
        return CHORUS_ERR_INVALID_CONF;
    }
    struct chorus__metrics_s *m = calloc(1, sizeof(*m));
    if (!m)
        return CHORUS_ERR_NOMEM;
    pthread_mutex_init(&m->lock, NULL);
    snprintf(m->service, sizeof(m->service), "%s", ch->service);
    m->queue_ready = m->dlq_ready = m->outbox_backlog = m->outbox_oldest_ms = -1;
    m->snap.queue_ready = m->snap.dlq_ready = m->snap.outbox_backlog = -1;
    m->snap.outbox_oldest_ms = -1;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    errno = 0;
    m->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 16u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!m->d) {
        snprintf(err, size, "metrics.listen '%s': cannot listen there (%s)", v,
                 errno ? strerror(errno) : "libmicrohttpd refused");
        pthread_mutex_destroy(&m->lock);
        free(m);
        return CHORUS_ERR_INVALID_CONF;
    }
    ch->metrics = m;
    chorus__log(ch, CHORUS_LOG_INFO, "metrics on http://%s/metrics", v);
    return CHORUS_OK;
}

void chorus__metrics_stop(chorus_t *ch) {
    struct chorus__metrics_s *m = ch->metrics;
    if (!m)
        return;
    MHD_stop_daemon(m->d);
    pthread_mutex_destroy(&m->lock);
    free(m);
    ch->metrics = NULL;
}

/* Messages ready in @p queue by a passive queue.declare on a channel of
 * its own (the broker answers at once; a declare that fails closes only
 * that channel); -1 when unknown. */
static int64_t queue_depth(chorus_t *ch, struct chorus__metrics_s *m, const char *queue) {
    if (m->chan_open && m->chan_conn != ch->stats.reconnects)
        m->chan_open = false; /* a new connection since */
    if (!m->chan_open) {
        if (!amqp_channel_open(ch->st, CH_METRICS) ||
            amqp_get_rpc_reply(ch->st).reply_type != AMQP_RESPONSE_NORMAL)
            return -1;
        m->chan_open = true;
        m->chan_conn = ch->stats.reconnects;
    }
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(ch->st, CH_METRICS, amqp_cstring_bytes(queue),
                                                     1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(ch->st);
    if (ok && r.reply_type == AMQP_RESPONSE_NORMAL)
        return ok->message_count;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t cok = {0};
        amqp_send_method(ch->st, CH_METRICS, AMQP_CHANNEL_CLOSE_OK_METHOD, &cok);
    }
    m->chan_open = false;
    return -1;
}

static void sample_store(chorus_t *ch, struct chorus__metrics_s *m) {
    if (!ch->store.enabled || !ch->store.up) {
        m->outbox_backlog = m->outbox_oldest_ms = -1;
        return;
    }
    if (ch->inflight || chorus__sql_queued(&ch->store.sql))
        return; /* a batch under way: the last figures stand until the next sample */
    PGresult *r = NULL;
    chorus__sql_err_t e = {0};
    if (chorus__sql_exec(&ch->store.sql,
                         "SELECT count(*), coalesce((extract(epoch FROM now() - min(created_at))"
                         " * 1000)::bigint, 0) FROM outbox WHERE published_at IS NULL",
                         0, NULL, &r, &e) == CHORUS_OK &&
        r && PQntuples(r) == 1) {
        m->outbox_backlog = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        m->outbox_oldest_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    }
    PQclear(r);
}

void chorus__metrics_sample(chorus_t *ch) {
    struct chorus__metrics_s *m = ch->metrics;
    if (!m)
        return;
    int64_t now = chorus__mono_ms();
    if (now >= m->next_sample_ms) {
        m->next_sample_ms = now + chorus__conf_int(ch->conf, "metrics.sample.interval.ms");
        /* Blocked (connection.blocked): the broker reads nothing of this
         * connection, so a declare would wait out amqp.rpc.timeout.ms and
         * rabbitmq-c drop the connection; the last depths stand. */
        if (ch->link == &chorus__amqp_link && !ch->blocked) {
            m->queue_ready = m->dlq_ready = -1;
            chorus__lock(ch);
            if (chorus__up(ch))
                m->queue_ready = queue_depth(ch, m, ch->topo.names.queue);
            if (chorus__up(ch) && m->queue_ready >= 0)
                m->dlq_ready = queue_depth(ch, m, ch->topo.names.dlq);
            chorus__unlock(ch);
        }
        sample_store(ch, m);
    }
    size_t n = chorus_stat_count();
    if (n > CHORUS__METRICS_MAX_STATS)
        n = CHORUS__METRICS_MAX_STATS;
    pthread_mutex_lock(&m->lock);
    chorus__metrics_snap_t *s = &m->snap;
    s->nstats = n;
    for (size_t i = 0; i < n; i++)
        s->stats[i] = chorus_stat_value(ch, i);
    memcpy(s->hist, ch->hist, sizeof(s->hist));
    s->queue_ready = m->queue_ready;
    s->dlq_ready = m->dlq_ready;
    s->outbox_backlog = m->outbox_backlog;
    s->outbox_oldest_ms = m->outbox_oldest_ms;
    s->broker_up = chorus__up(ch);
    s->store_enabled = ch->store.enabled;
    s->store_up = ch->store.up;
    /* a participant with no handler (a publisher) has nothing to consume */
    s->consuming = ch->nhandlers == 0 || (ch->consuming && !(ch->store.enabled && ch->store.paused));
    s->blocked = ch->blocked;
    s->stopping = ch->stop;
    s->taken_ms = now;
    pthread_mutex_unlock(&m->lock);
}
