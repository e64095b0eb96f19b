/*
 * sim.c - the deterministic simulation of a declared saga (chorus_sim.h).
 *
 * One process, one thread.  Every participant is a real chorus_t with its
 * real handlers and declaration; only its transport differs: sim_link
 * (a chorus__link_t) puts its publishes into the in-memory broker
 * (sim_broker.c) and hands it deliveries, confirms and losses through the
 * same hooks the AMQP connection uses.  Time is the simulated clock
 * (clock.c): timestamps, ids, timers, deadlines, retry delays, backoffs.
 * Its PostgreSQL work is real, in its service's schema.  Each service runs
 * as --instances participants sharing its queue and schema.
 *
 * A schedule (one seed):
 *
 *   make every participant (setup, chorus_start: declare, consume)
 *   faults phase   each step the scheduler, from the seed, either
 *                    begins the next saga            (chorus_sim_begin_fn)
 *                    gives an instance deliveries    (the head, or another
 *                                                     one: "reorder"; a
 *                                                     second copy first:
 *                                                     "duplicate")
 *                    polls an instance               (confirms, acks, relay,
 *                                                     timers)
 *                    lets time pass                  (a long pause: "delay")
 *                    injects a fault                 "crash" at before-commit,
 *                                                    after-commit, before-ack
 *                                                    or between deliveries;
 *                                                    "loss" (the broker drops
 *                                                    the connection: unacked
 *                                                    deliveries come again);
 *                                                    "relay" / "timer" (a
 *                                                    relay run, a look for
 *                                                    due timers, now);
 *                                                    "pg-restart" (every
 *                                                    session terminated)
 *                  a publish may be nacked ("nack"), and a participant's
 *                  clock may run ahead or behind ("skew": its timers fire
 *                  early or late against the others')
 *   settle phase   no more faults: crashed participants restart, every
 *                  delivery is handled in order, time passes until nothing
 *                  is left (queues, outboxes, timers) -- or "did not settle"
 *   invariants     the built-in ones (every saga terminal, once; no deadline
 *                  before its time; no pivot next to a compensated step; no
 *                  DLQ entry; each event's handler committed once per
 *                  service) and the declared SQL ones
 *
 * A crash is the participant's process dying at that instant: from then on
 * nothing it sends reaches the broker, its PostgreSQL backends are
 * terminated (an open transaction is rolled back by the server), and it is
 * destroyed; the broker requeues what it had not acked.  It restarts later
 * as a new chorus_t, as a restarted process would.
 *
 * Every fault is numbered in the order it is injected.  Shrinking runs the
 * seed again with fewer of them (the shortest failing prefix, then each
 * one left out in turn) and keeps what still fails.
 */
#include "chorus_int.h"
#include "saga_int.h"
#include "sim_broker_int.h"

#include <chorus/chorus_pg.h>
#include <chorus/chorus_sim.h>

#include <cJSON.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIM_MAX_PARTS 16 /* services */
#define SIM_MAX_INSTANCES 4
#define SIM_EPOCH_MS INT64_C(1767225600000) /* 2026-01-01T00:00:00Z: fixed, for replay */
#define SIM_MAX_FAULTS 4096

enum { F_REORDER, F_DUPLICATE, F_DELAY, F_CRASH, F_LOSS, F_RELAY, F_TIMER, F_SKEW, F_NACK,
       F_PGDOWN, F_KINDS };
static const char *const FAULT_NAMES[F_KINDS] = {"reorder", "duplicate", "delay", "crash",
                                                 "loss",    "relay",     "timer", "skew",
                                                 "nack",    "pg-restart"};

typedef struct {
    char corr[37];
    char *text;
} trace_line_t;

typedef struct {
    int kind, step;
    char what[128];
} fault_t;

typedef struct {
    char *name, *description, *sql;
} invariant_t;

/* One delivery taken from the broker, not yet handed to the consumer. */
typedef struct {
    uint64_t tag;
    bool redelivered;
    int count;
    char *routing_key;
    amqp_message_t msg;
} pending_t;

/* A confirm (and maybe a return) the participant is yet to read. */
typedef struct {
    uint64_t seq;
    bool nack;
    amqp_message_t *ret; /* mandatory and unroutable: returned first */
} confirm_t;

typedef struct sim_part_s {
    struct chorus_sim_s *sim;
    char service[65], user[256];
    char label[72];        /* service, or service#k for its k-th instance */
    int instance;          /* 0, 1, ...: instances of one service share queue and schema */
    bool quorum;           /* its queue's type (topology.queue.type) */
    chorus_sim_setup_fn *setup;
    void *opaque;
    chorus_t *ch;          /* NULL while down */
    bool up, dead;         /* link connected; crashed (takes no part) */
    int64_t restart_ms;    /* down: when it starts again (mono) */
    int64_t skew_ms;
    uint64_t pub_seq;
    confirm_t *confirms;
    size_t nconfirms, capconfirms;
    pending_t *pending;
    size_t npending, cappending;
    /* deliveries handed over and not settled: the channel's tag (from 1 on
     * each connection, as RabbitMQ numbers them) and the broker's */
    struct held_s {
        uint64_t tag, broker_tag;
    } *held;
    size_t nheld, capheld;
    uint64_t next_tag;
    const char *armed;     /* crash point armed by the scheduler */
    int64_t crash_delay_ms; /* and how long it stays down after it */
} sim_part_t;

/* Who handled what (the built-in "handled once" check). */
typedef struct {
    char key[104]; /* service '/' event id */
    int n;
} handled_t;

/* Per saga instance, what was published (the built-in checks). */
typedef struct {
    char corr[37], agg[37];
    char terminal[64], terminal2[64]; /* its terminal event, and another one */
    bool pivot_done, compensated, accepted;
} saga_seen_t;

struct chorus_sim_s {
    chorus_saga_t *saga;
    char saga_file[1024];
    chorus_conf_t *base; /* settings for every participant */
    struct {
        char service[65];
        chorus_sim_setup_fn *setup;
        void *opaque;
    } decl[SIM_MAX_PARTS];     /* chorus_sim_participant() */
    int ndecl, instances;
    sim_part_t parts[SIM_MAX_PARTS * SIM_MAX_INSTANCES]; /* every instance of each */
    int nparts;
    chorus_sim_begin_fn *begin;
    void *begin_opaque;
    int begin_part;
    invariant_t *inv;
    size_t ninv;
    char prefix[48];
    char mutation[32];
    bool verbose;
    PGconn *ctl;
    PGconn *pool[2 * SIM_MAX_PARTS + 4]; /* sessions kept between participants' lives */
    int npool;

    /* one schedule */
    chorus__sim_clock_t clock;  /* time, and the participants' random bits */
    chorus__sim_clock_t sched;  /* the scheduler's own choices */
    chorus__sim_broker_t *broker;
    int step;
    bool faulting;              /* the faults phase (not settling) */
    uint64_t activity;
    trace_line_t *trace;
    size_t ntrace, captrace;
    bool keep_trace;
    fault_t faults[SIM_MAX_FAULTS];
    int nfaults;                /* injected */
    int fault_seen;             /* numbered so far (injected or not) */
    int fault_limit;            /* only faults below it are injected */
    const bool *fault_off;      /* and not these */
    long fault_count[F_KINDS];
    handled_t *handled;
    size_t nhandled, caphandled;
    saga_seen_t *sagas;
    size_t nsagas, capsagas;
    char **violations;
    size_t nviolations;
    char failing_corr[37];
    char error[1024];           /* a set-up failure: not a violation */
};

/* ---- small helpers -------------------------------------------------------- */

static bool grow_array(void **v, size_t *cap, size_t need, size_t size) {
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(*v, n * size);
    if (!p)
        return false;
    *v = p;
    *cap = n;
    return true;
}

static uint64_t rnd(chorus_sim_t *s, uint64_t n) {
    return n ? chorus__sim_next(&s->sched) % n : 0;
}

static int64_t sim_now(chorus_sim_t *s) { return (int64_t)(s->clock.now_ns / 1000000u); }

static void trace(chorus_sim_t *s, const char *corr, const char *fmt, ...) CHORUS_PRINTF(3, 4);
static void trace(chorus_sim_t *s, const char *corr, const char *fmt, ...) {
    if (!s->keep_trace || !grow_array((void **)&s->trace, &s->captrace, s->ntrace + 1,
                                      sizeof(*s->trace)))
        return;
    char buf[600];
    int o = snprintf(buf, sizeof(buf), "#%-5d t=%7.3fs ", s->step, (double)(sim_now(s) - 1000) / 1000);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + o, sizeof(buf) - (size_t)o, fmt, ap);
    va_end(ap);
    trace_line_t *l = &s->trace[s->ntrace];
    snprintf(l->corr, sizeof(l->corr), "%s", corr ? corr : "");
    if ((l->text = strdup(buf)))
        s->ntrace++;
}

static void violation(chorus_sim_t *s, const char *corr, const char *fmt, ...) CHORUS_PRINTF(3, 4);
static void violation(chorus_sim_t *s, const char *corr, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char **v = realloc(s->violations, (s->nviolations + 1) * sizeof(*v));
    if (!v)
        return;
    s->violations = v;
    if ((v[s->nviolations] = strdup(buf)))
        s->nviolations++;
    if (!s->failing_corr[0] && corr && *corr)
        snprintf(s->failing_corr, sizeof(s->failing_corr), "%s", corr);
}

/* Numbers a fault; whether it is injected (shrinking leaves some out). */
static bool fault(chorus_sim_t *s, int kind, const char *fmt, ...) CHORUS_PRINTF(3, 4);
static bool fault(chorus_sim_t *s, int kind, const char *fmt, ...) {
    int n = s->fault_seen++;
    if (n >= s->fault_limit || (s->fault_off && n < SIM_MAX_FAULTS && s->fault_off[n]) ||
        s->nfaults >= SIM_MAX_FAULTS)
        return false;
    fault_t *f = &s->faults[s->nfaults++];
    f->kind = kind;
    f->step = s->step;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->what, sizeof(f->what), fmt, ap);
    va_end(ap);
    s->fault_count[kind]++;
    trace(s, NULL, "FAULT %d %s: %s", n, FAULT_NAMES[kind], f->what);
    return true;
}

static void bytes_str(amqp_bytes_t b, char *out, size_t n) {
    snprintf(out, n, "%.*s", (int)b.len, b.bytes ? (const char *)b.bytes : "");
}

/* The saga instance of a message: its correlation id (else its own id). */
static void msg_ids(const amqp_message_t *m, char corr[37], char type[64], char id[37]) {
    const amqp_basic_properties_t *p = &m->properties;
    bytes_str((p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) ? p->correlation_id : p->message_id,
              corr, 37);
    bytes_str((p->_flags & AMQP_BASIC_TYPE_FLAG) ? p->type : amqp_empty_bytes, type, 64);
    bytes_str((p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) ? p->message_id : amqp_empty_bytes, id,
              37);
}

static void with_skew(sim_part_t *p) { p->sim->clock.skew_ms = p->skew_ms; }
static void no_skew(chorus_sim_t *s) { s->clock.skew_ms = 0; }
/* The broker's own clock (no host's skew) for what it stamps, from here to
 * skew_back(): enqueue times, which its queues' TTL counts from. */
static int64_t broker_clock(chorus_sim_t *s) {
    int64_t k = s->clock.skew_ms;
    s->clock.skew_ms = 0;
    return k;
}
static void skew_back(chorus_sim_t *s, int64_t k) { s->clock.skew_ms = k; }

/* ---- what was published: the built-in checks' record ---------------------- */

static saga_seen_t *saga_of(chorus_sim_t *s, const char *corr) {
    for (size_t i = 0; i < s->nsagas; i++)
        if (strcmp(s->sagas[i].corr, corr) == 0)
            return &s->sagas[i];
    if (!grow_array((void **)&s->sagas, &s->capsagas, s->nsagas + 1, sizeof(*s->sagas)))
        return NULL;
    saga_seen_t *g = &s->sagas[s->nsagas++];
    memset(g, 0, sizeof(*g));
    snprintf(g->corr, sizeof(g->corr), "%s", corr);
    return g;
}

/* A deadline's timer must not fire before the deadline, by the clock of
 * the participant that fires it (the one chorus_now_ms() reads here). */
static void check_deadline(chorus_sim_t *s, const char *corr, const cJSON *j) {
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(data, "reason");
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(meta, "deadline");
    int64_t deadline;
    if (!cJSON_IsString(reason) || strcmp(reason->valuestring, "deadline passed") != 0 ||
        !cJSON_IsString(dl) || chorus_timestamp_parse(dl->valuestring, &deadline) != CHORUS_OK)
        return;
    int64_t now = chorus_now_ms();
    if (now < deadline)
        violation(s, corr, "deadline: saga %s: its deadline fired %lld ms before the deadline "
                  "(by the clock of the participant that fired it)", corr,
                  (long long)(deadline - now));
}

static void record_published(chorus_sim_t *s, const amqp_message_t *m) {
    char corr[37], type[64], id[37];
    msg_ids(m, corr, type, id);
    saga_seen_t *g = *corr ? saga_of(s, corr) : NULL;
    if (!g)
        return;
    const char *dl_event = chorus__saga_deadline_event(s->saga);
    bool deadline = dl_event && strcmp(type, dl_event) == 0;
    if (!g->agg[0] || deadline) {
        cJSON *j = cJSON_ParseWithLength(m->body.bytes, m->body.len);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "aggregate_id");
        if (!g->agg[0] && cJSON_IsString(a))
            snprintf(g->agg, sizeof(g->agg), "%s", a->valuestring);
        if (deadline)
            check_deadline(s, corr, j);
        cJSON_Delete(j);
    }
    int step = -1;
    switch (chorus_saga_event_kind(s->saga, type, &step)) {
    case CHORUS_SAGA_STEP_DONE:
        if (step >= 0 && step == chorus_saga_pivot(s->saga))
            g->pivot_done = true;
        break;
    case CHORUS_SAGA_STEP_COMPENSATED:
        g->compensated = true;
        break;
    case CHORUS_SAGA_CANCEL_ACCEPTED:
        g->accepted = true;
        break;
    default:
        break;
    }
    if (chorus_saga_is_terminal(s->saga, type)) {
        if (!g->terminal[0])
            snprintf(g->terminal, sizeof(g->terminal), "%s", type);
        else if (strcmp(g->terminal, type) != 0)
            snprintf(g->terminal2, sizeof(g->terminal2), "%s", type);
    }
}

/* ---- the link: a participant's transport ---------------------------------- */

static sim_part_t *part_of(const chorus_t *ch) { return ch->link_opaque; }

static bool link_up(const chorus_t *ch) {
    const sim_part_t *p = part_of(ch);
    return p->up && !p->dead;
}

static void pending_clear(pending_t *d) {
    free(d->routing_key);
    amqp_destroy_message(&d->msg);
}

static void confirms_clear(sim_part_t *p) {
    for (size_t i = 0; i < p->nconfirms; i++)
        if (p->confirms[i].ret) {
            amqp_destroy_message(p->confirms[i].ret);
            free(p->confirms[i].ret);
        }
    p->nconfirms = 0;
}

/* The broker's side of a closed channel: what was handed over and not
 * settled is requeued, in the order it came. */
static void give_back(sim_part_t *p) {
    for (size_t i = 0; i < p->npending; i++)
        pending_clear(&p->pending[i]);
    p->npending = 0;
    /* oldest first to a quorum queue's tail, newest first to a classic
     * one's head: either way they come back in the order they came */
    int64_t k = broker_clock(p->sim);
    for (size_t i = 0; i < p->nheld; i++)
        chorus__sim_nack(p->sim->broker, p->held[p->quorum ? i : p->nheld - 1 - i].broker_tag,
                         true);
    skew_back(p->sim, k);
    p->nheld = 0;
    confirms_clear(p);
}

static chorus_err_t link_open(chorus_t *ch) {
    sim_part_t *p = part_of(ch);
    if (p->dead)
        return CHORUS_ERR_CONN_CLOSED;
    chorus__lock(ch);
    p->up = true;
    p->pub_seq = 0;
    p->next_tag = 0; /* a new channel numbers its deliveries from 1 */
    snprintf(ch->conn_user, sizeof(ch->conn_user), "%s", p->user);
    char err[512];
    chorus_err_t rc = ch->hooks.ready(ch, 0, err, sizeof(err));
    if (rc) {
        chorus__fail(ch, NULL, "simulated broker: %s", err);
        p->up = false;
    } else {
        ch->hooks.reopened(ch, CHORUS__CH_PUBLISH);
        trace(p->sim, NULL, "%s connected", p->label);
    }
    chorus__unlock(ch);
    return rc;
}

static void link_close(chorus_t *ch) {
    sim_part_t *p = part_of(ch);
    if (p->up && !p->dead)
        give_back(p);
    p->up = false;
    ch->consuming = false;
}

static void link_lost(chorus_t *ch, const char *why) {
    sim_part_t *p = part_of(ch);
    if (!p->up)
        return;
    trace(p->sim, NULL, "%s connection lost: %s", p->label, why);
    if (!p->dead)
        give_back(p);
    p->up = false;
    ch->consuming = false;
    ch->hooks.reset(ch, 0);
    chorus__schedule_reconnect(ch);
}

/* The delivery's message as the consumer reads it: with x-delivery-count
 * once it came back (the quorum queue's header). */
static chorus_err_t hand_over(chorus_t *ch, pending_t *d) {
    amqp_basic_properties_t *pr = &d->msg.properties;
    if (part_of(ch)->quorum && d->count > 0) {
        size_t n = (pr->_flags & AMQP_BASIC_HEADERS_FLAG) ? (size_t)pr->headers.num_entries : 0;
        amqp_table_entry_t *e = amqp_pool_alloc(&d->msg.pool, (n + 1) * sizeof(*e));
        if (!e)
            return CHORUS_ERR_NOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (pr->headers.entries[i].key.len != strlen(CHORUS__H_DELIVERY_COUNT) ||
                memcmp(pr->headers.entries[i].key.bytes, CHORUS__H_DELIVERY_COUNT,
                       strlen(CHORUS__H_DELIVERY_COUNT)))
                e[k++] = pr->headers.entries[i];
        e[k].key = amqp_cstring_bytes(CHORUS__H_DELIVERY_COUNT);
        e[k].value.kind = AMQP_FIELD_KIND_I64;
        e[k].value.value.i64 = d->count;
        pr->headers = (amqp_table_t){.num_entries = (int)k + 1, .entries = e};
        pr->_flags |= AMQP_BASIC_HEADERS_FLAG;
    }
    amqp_message_t msg = d->msg;
    d->msg = (amqp_message_t){0};
    return ch->hooks.deliver(ch, d->tag, d->redelivered, d->routing_key, &msg);
}

static chorus_err_t link_dispatch(chorus_t *ch, int timeout_ms) {
    sim_part_t *p = part_of(ch);
    if (!link_up(ch))
        return CHORUS_ERR_CONN_CLOSED;
    if (p->nconfirms) { /* in the order the broker sent them */
        confirm_t c = p->confirms[0];
        memmove(p->confirms, p->confirms + 1, --p->nconfirms * sizeof(*p->confirms));
        if (c.ret) {
            ch->hooks.returned(ch, c.ret);
            amqp_destroy_message(c.ret);
            free(c.ret);
        }
        p->sim->activity++;
        ch->hooks.confirm(ch, c.seq, false, c.nack);
        return CHORUS_OK;
    }
    if (p->npending) {
        pending_t d = p->pending[0];
        memmove(p->pending, p->pending + 1, --p->npending * sizeof(*p->pending));
        p->sim->activity++;
        chorus_err_t rc = hand_over(ch, &d);
        pending_clear(&d);
        if (rc == CHORUS_ERR_NOMEM) {
            chorus__conn_lost(ch, "out of memory");
            return CHORUS_ERR_CONN_CLOSED;
        }
        return CHORUS_OK;
    }
    /* nothing to read: the wait takes its time, as a real one would */
    if (timeout_ms > 0)
        chorus__sim_clock_advance(&p->sim->clock, timeout_ms);
    return CHORUS_ERR_TIMEOUT;
}

static int link_fd(const chorus_t *ch) {
    (void)ch;
    return -1;
}

static bool link_buffered(const chorus_t *ch) {
    const sim_part_t *p = part_of(ch);
    return link_up(ch) && (p->nconfirms || p->npending);
}

static int link_frame_max(const chorus_t *ch) {
    (void)ch;
    return 131072;
}

static chorus_err_t link_declare(chorus_t *ch, char *err, size_t size) {
    return chorus__sim_declare(part_of(ch)->sim->broker, &ch->topo, err, size);
}

static chorus_err_t link_consume(chorus_t *ch, const char *tag, char *err, size_t size) {
    (void)ch, (void)tag, (void)err, (void)size;
    return CHORUS_OK; /* ch->consuming says so; the scheduler hands deliveries over */
}

static chorus_err_t link_cancel(chorus_t *ch, const char *tag, char *err, size_t size) {
    (void)ch, (void)tag, (void)err, (void)size;
    return CHORUS_OK;
}

static amqp_message_t *message_copy(const amqp_basic_properties_t *props, amqp_bytes_t body) {
    amqp_message_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    init_amqp_pool(&m->pool, 1024);
    m->body = amqp_bytes_malloc_dup(body);
    if ((body.len && !m->body.bytes) || !chorus__props_clone(props, &m->properties, &m->pool)) {
        amqp_destroy_message(m);
        free(m);
        return NULL;
    }
    return m;
}

static int link_publish(chorus_t *ch, const chorus__pub_t *pub) {
    sim_part_t *p = part_of(ch);
    chorus_sim_t *s = p->sim;
    if (p->dead)
        return AMQP_STATUS_OK; /* a dead process: nothing reaches the broker */
    char ex[CHORUS__NAME_MAX], rk[CHORUS__NAME_MAX];
    bytes_str(pub->exchange, ex, sizeof(ex));
    bytes_str(pub->routing_key, rk, sizeof(rk));
    amqp_message_t view = {.properties = pub->props, .body = pub->body};
    char corr[37], type[64], id[37];
    msg_ids(&view, corr, type, id);
    /* the broker could not take it (RabbitMQ nacks what it failed to
     * enqueue): nothing routed, a negative confirm */
    bool nack = s->faulting && rnd(s, 100) < 2;
    bool routed_anyway = rnd(s, 2) == 0; /* a nack does not say it was not enqueued */
    nack = nack && fault(s, F_NACK, "the broker nacks %s's publish of %s%s", p->label,
                         *type ? type : rk, routed_anyway ? " (after enqueuing it)" : "");
    int64_t k = broker_clock(s);
    int n = nack && !routed_anyway ? 0
                                   : chorus__sim_publish(s->broker, ex, rk, &pub->props, pub->body);
    skew_back(s, k);
    trace(s, corr, "%s publish %s %s -> %s (%d queue%s)", p->label, type, id, rk, n,
          n == 1 ? "" : "s");
    if (n > 0 && strcmp(ex, ch->topo.names.exchange) == 0)
        record_published(s, &view);
    if (!grow_array((void **)&p->confirms, &p->capconfirms, p->nconfirms + 1, sizeof(*p->confirms)))
        return AMQP_STATUS_NO_MEMORY;
    confirm_t *c = &p->confirms[p->nconfirms++];
    *c = (confirm_t){.seq = ++p->pub_seq, .nack = n < 0 || nack};
    if (n == 0 && pub->mandatory && !nack)
        c->ret = message_copy(&pub->props, pub->body);
    s->activity++;
    return AMQP_STATUS_OK;
}

/* The broker's tag of channel tag @p tag, no longer held; 0: not held. */
static uint64_t unhold(sim_part_t *p, uint64_t tag) {
    for (size_t i = 0; i < p->nheld; i++)
        if (p->held[i].tag == tag) {
            uint64_t b = p->held[i].broker_tag;
            memmove(p->held + i, p->held + i + 1, (--p->nheld - i) * sizeof(*p->held));
            return b;
        }
    return 0;
}

static bool holds(const sim_part_t *p, uint64_t tag) {
    for (size_t i = 0; i < p->nheld; i++)
        if (p->held[i].tag == tag)
            return true;
    return false;
}

/* RabbitMQ closes the channel on a tag it did not deliver on it (also
 * the tag of a multiple ack): PRECONDITION_FAILED. */
static int link_ack(chorus_t *ch, uint64_t tag, bool multiple) {
    sim_part_t *p = part_of(ch);
    if (p->dead)
        return AMQP_STATUS_OK;
    p->sim->activity++;
    if (!holds(p, tag)) {
        trace(p->sim, NULL, "%s ack of unknown tag %llu: channel closed", p->label,
              (unsigned long long)tag);
        return AMQP_STATUS_CONNECTION_CLOSED;
    }
    int64_t k = broker_clock(p->sim);
    for (size_t i = 0; i < p->nheld;) {
        if (p->held[i].tag == tag || (multiple && p->held[i].tag < tag)) {
            chorus__sim_ack(p->sim->broker, p->held[i].broker_tag);
            memmove(p->held + i, p->held + i + 1, (--p->nheld - i) * sizeof(*p->held));
        } else {
            i++;
        }
    }
    skew_back(p->sim, k);
    trace(p->sim, NULL, "%s ack %s%llu", p->label, multiple ? "up to " : "",
          (unsigned long long)tag);
    return AMQP_STATUS_OK;
}

static int link_nack(chorus_t *ch, uint64_t tag, bool requeue) {
    sim_part_t *p = part_of(ch);
    if (p->dead)
        return AMQP_STATUS_OK;
    p->sim->activity++;
    uint64_t b = unhold(p, tag);
    int64_t k = broker_clock(p->sim);
    bool ok = b && chorus__sim_nack(p->sim->broker, b, requeue) == CHORUS_OK;
    skew_back(p->sim, k);
    if (!ok)
        return AMQP_STATUS_CONNECTION_CLOSED;
    trace(p->sim, NULL, "%s nack %llu%s", p->label, (unsigned long long)tag,
          requeue ? " (requeued)" : " (dead-lettered)");
    return AMQP_STATUS_OK;
}

static void link_release(chorus_t *ch) { (void)ch; }

/* Its backends go with it: the server rolls back what was open. */
static void kill_backends(chorus_sim_t *s, chorus_t *ch, bool listen_too) {
    PGconn *conns[2] = {ch->store.pg, listen_too ? ch->store.listen : NULL};
    int pids[2] = {conns[0] ? PQbackendPID(conns[0]) : 0, conns[1] ? PQbackendPID(conns[1]) : 0};
    for (int i = 0; i < 2; i++) {
        if (pids[i] <= 0)
            continue;
        char pid[16];
        snprintf(pid, sizeof(pid), "%d", pids[i]);
        const char *v[] = {pid};
        PQclear(PQexecParams(s->ctl, "SELECT pg_terminate_backend($1::int)", 1, NULL, v, NULL,
                             NULL, 0));
        for (int k = 0; k < 2000; k++) { /* until it is gone (at most ~2 s) */
            PGresult *r = PQexecParams(s->ctl, "SELECT 1 FROM pg_stat_activity WHERE pid = $1::int",
                                       1, NULL, v, NULL, NULL, 0);
            bool gone = PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) == 0;
            PQclear(r);
            if (gone)
                break;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        /* and until its end reached this side -- the server's last
         * message and the close behind it (POLLRDHUP) -- so that what the
         * participant reads next is the same whatever the machine's load */
        struct pollfd fd = {.fd = PQsocket(conns[i]), .events = POLLRDHUP};
        for (int k = 0; fd.fd >= 0 && k < 200; k++)
            if (poll(&fd, 1, 10) > 0 && (fd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
                break;
    }
}

static void link_crash(chorus_t *ch, const char *point) {
    sim_part_t *p = part_of(ch);
    if (p->dead)
        return;
    p->dead = true;
    trace(p->sim, NULL, "%s CRASHED at %s", p->label, point);
    kill_backends(p->sim, ch, false);
}

static void link_handled(chorus_t *ch, const chorus_envelope_t *env) {
    sim_part_t *p = part_of(ch);
    chorus_sim_t *s = p->sim;
    char key[104];
    snprintf(key, sizeof(key), "%s/%s", p->service, chorus_envelope_event_id(env));
    const char *corr = chorus_envelope_correlation_id(env);
    trace(s, corr, "%s committed %s %s", p->label, chorus_envelope_event_type(env),
          chorus_envelope_event_id(env));
    for (size_t i = 0; i < s->nhandled; i++)
        if (strcmp(s->handled[i].key, key) == 0) {
            if (++s->handled[i].n == 2)
                violation(s, corr, "handled-once: %s committed the effects of %s %s twice",
                          p->label, chorus_envelope_event_type(env),
                          chorus_envelope_event_id(env));
            return;
        }
    if (!grow_array((void **)&s->handled, &s->caphandled, s->nhandled + 1, sizeof(*s->handled)))
        return;
    snprintf(s->handled[s->nhandled].key, sizeof(s->handled[0].key), "%s", key);
    s->handled[s->nhandled++].n = 1;
}

/*
 * A pool of PostgreSQL sessions: a participant's connection outlives it
 * when it ends cleanly (a crash terminates its backends, which are then
 * not kept), and the next one gets it back as a new session (DISCARD ALL:
 * no prepared statements, LISTEN, search_path or settings of the last).
 * Opening one costs far more than a schedule's every other statement.
 */
static PGconn *link_pg_take(chorus_t *ch) {
    chorus_sim_t *s = part_of(ch)->sim;
    while (s->npool > 0) {
        PGconn *pg = s->pool[--s->npool];
        PQsetnonblocking(pg, 0);
        PGresult *r = PQexec(pg, "DISCARD ALL");
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (ok)
            return pg;
        PQfinish(pg);
    }
    return NULL;
}

static void link_pg_give(chorus_t *ch, PGconn *pg) {
    chorus_sim_t *s = part_of(ch)->sim;
    if (!pg)
        return;
    int n = (int)(sizeof(s->pool) / sizeof(s->pool[0]));
    /* a crashed participant's connections were terminated, but for the
     * idle LISTEN one, which is as good as new */
    if (s->npool < n && PQstatus(pg) == CONNECTION_OK &&
        PQtransactionStatus(pg) == PQTRANS_IDLE && PQpipelineStatus(pg) == PQ_PIPELINE_OFF &&
        !PQisBusy(pg))
        s->pool[s->npool++] = pg;
    else
        PQfinish(pg);
}

static const chorus__link_t sim_link = {
    .name = "simulation",
    .up = link_up,
    .open = link_open,
    .close = link_close,
    .lost = link_lost,
    .dispatch = link_dispatch,
    .fd = link_fd,
    .buffered = link_buffered,
    .frame_max = link_frame_max,
    .declare = link_declare,
    .consume = link_consume,
    .cancel = link_cancel,
    .publish = link_publish,
    .ack = link_ack,
    .nack = link_nack,
    .release = link_release,
    .heartbeats = false,
    .crash = link_crash,
    .handled = link_handled,
    .pg_take = link_pg_take,
    .pg_give = link_pg_give,
};

/* ---- participants ------------------------------------------------------- */

static void on_log(int level, const char *service, const char *line, void *opaque) {
    chorus_sim_t *s = opaque;
    if (s->verbose)
        fprintf(stderr, "[%s] %s\n", service, line);
    if (level <= CHORUS_LOG_NOTICE)
        trace(s, NULL, "%s log: %s", service, line);
}

static bool part_make(sim_part_t *p) {
    chorus_sim_t *s = p->sim;
    char err[512], schema[128];
    chorus_conf_t *conf = chorus_conf_dup(s->base);
    snprintf(schema, sizeof(schema), "%s%s", s->prefix, p->service);
    if (!conf ||
        chorus_conf_set(conf, "service.name", p->service, err, sizeof(err)) != CHORUS_CONF_OK ||
        chorus_conf_set(conf, "store.schema", schema, err, sizeof(err)) != CHORUS_CONF_OK ||
        chorus_conf_set(conf, "debug.mutation", *s->mutation ? s->mutation : "none", err,
                        sizeof(err)) != CHORUS_CONF_OK) {
        snprintf(s->error, sizeof(s->error), "%s: %s", p->service, conf ? err : "out of memory");
        chorus_conf_destroy(conf);
        return false;
    }
    chorus_conf_set_log_cb(conf, on_log, s);
    with_skew(p);
    chorus_t *ch = chorus_new(conf, err, sizeof(err));
    if (!ch) {
        no_skew(s);
        snprintf(s->error, sizeof(s->error), "%s: %s", p->service, err);
        chorus_conf_destroy(conf);
        return false;
    }
    ch->link = &sim_link;
    ch->link_opaque = p;
    p->quorum = strcmp(chorus__conf_str(ch->conf, "topology.queue.type"), "quorum") == 0;
    p->dead = p->up = false;
    p->armed = NULL;
    p->ch = ch;
    chorus_err_t rc = p->setup ? p->setup(ch, p->opaque) : CHORUS_OK;
    if (!rc)
        rc = chorus_start(ch);
    no_skew(s);
    if (rc) {
        snprintf(s->error, sizeof(s->error), "%s: %s (%s)", p->service, chorus_strerror(rc),
                 chorus_last_error(ch));
        chorus_destroy(ch);
        p->ch = NULL;
        return false;
    }
    trace(s, NULL, "%s started", p->label);
    return true;
}

/* The process goes: crashed (nothing more is sent) or stopped. */
static void part_down(sim_part_t *p, int64_t restart_after_ms) {
    chorus_sim_t *s = p->sim;
    if (!p->ch)
        return;
    if (!p->dead) {
        p->dead = true;
        kill_backends(s, p->ch, false);
    }
    with_skew(p);
    chorus_destroy(p->ch);
    no_skew(s);
    p->ch = NULL;
    p->up = false;
    give_back(p); /* the broker noticed the connection go */
    p->restart_ms = sim_now(s) + restart_after_ms;
    trace(s, NULL, "%s down; restarts in %lld ms", p->label, (long long)restart_after_ms);
}

static void part_poll(sim_part_t *p) {
    if (!p->ch)
        return;
    with_skew(p);
    p->ch->crash_point = p->armed;
    chorus_poll(p->ch, 0);
    no_skew(p->sim);
    if (p->dead)
        part_down(p, p->crash_delay_ms);
}

/* Hands the @p index-th ready message of its queue over (and polls). */
static bool part_deliver(sim_part_t *p, size_t index) {
    chorus_sim_t *s = p->sim;
    chorus_t *ch = p->ch;
    if (!ch || !link_up(ch) || !ch->consuming || p->nheld >= (size_t)ch->topo.prefetch)
        return false;
    chorus__sim_delivery_t d;
    if (!chorus__sim_take(s->broker, ch->topo.names.queue, index, &d))
        return false;
    if (!grow_array((void **)&p->held, &p->capheld, p->nheld + 1, sizeof(*p->held)) ||
        !grow_array((void **)&p->pending, &p->cappending, p->npending + 1, sizeof(*p->pending))) {
        chorus__sim_nack(s->broker, d.tag, true);
        return false;
    }
    pending_t *pd = &p->pending[p->npending];
    memset(pd, 0, sizeof(*pd));
    amqp_message_t *m = message_copy(&d.message->properties, d.message->body);
    pd->routing_key = strdup(d.routing_key);
    if (!m || !pd->routing_key) {
        if (m) {
            amqp_destroy_message(m);
            free(m);
        }
        free(pd->routing_key);
        chorus__sim_nack(s->broker, d.tag, true);
        return false;
    }
    pd->msg = *m;
    free(m);
    pd->tag = ++p->next_tag;
    pd->redelivered = d.redelivered;
    pd->count = d.delivery_count;
    p->npending++;
    p->held[p->nheld++] = (struct held_s){pd->tag, d.tag};
    char corr[37], type[64], id[37];
    msg_ids(&pd->msg, corr, type, id);
    trace(s, corr, "%s deliver %s %s tag %llu%s%s", p->label, type, id,
          (unsigned long long)pd->tag, d.redelivered ? " redelivered" : "",
          index ? " (overtaking)" : "");
    return true;
}

/* ---- one schedule ------------------------------------------------------- */

static bool exec_ok(PGconn *c, const char *sql, char *err, size_t n) {
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, n, "%s", PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* "{service}" in @p sql: that participant's schema, quoted. */
static char *expand_schemas(chorus_sim_t *s, const char *sql) {
    size_t cap = strlen(sql) + 1;
    for (const char *q = sql; (q = strchr(q, '{')); q++)
        cap += sizeof(s->prefix) + 70;
    char *out = malloc(cap), *o = out;
    if (!out)
        return NULL;
    for (const char *q = sql; *q;) {
        bool done = false;
        for (int i = 0; *q == '{' && i < s->ndecl && !done; i++) {
            size_t n = strlen(s->decl[i].service);
            if (strncmp(q + 1, s->decl[i].service, n) == 0 && q[1 + n] == '}') {
                o += sprintf(o, "\"%s%s\"", s->prefix, s->decl[i].service);
                q += n + 2;
                done = true;
            }
        }
        if (!done)
            *o++ = *q++;
    }
    *o = '\0';
    return out;
}

/* Empties every participant's tables and restarts their sequences (a
 * fresh start for the seed; DELETE is much cheaper than TRUNCATE on tables
 * this small).  Its version table stays: the schema is migrated already. */
static bool reset_store(chorus_sim_t *s) {
    const char *sql =
        "DO $$ DECLARE r record; BEGIN"
        " FOR r IN SELECT schemaname AS n, tablename AS t FROM pg_tables WHERE schemaname LIKE '%s%%'"
        " AND tablename <> 'chorus_schema_version' LOOP"
        " EXECUTE format('DELETE FROM %%I.%%I', r.n, r.t); END LOOP;"
        " FOR r IN SELECT schemaname AS n, sequencename AS t FROM pg_sequences WHERE schemaname"
        " LIKE '%s%%' LOOP EXECUTE format('ALTER SEQUENCE %%I.%%I RESTART', r.n, r.t); END LOOP;"
        " END $$";
    char buf[2048];
    char like[sizeof(s->prefix) * 2];
    size_t k = 0;
    for (const char *c = s->prefix; *c && k + 2 < sizeof(like); c++) {
        if (*c == '_' || *c == '%' || *c == '\\')
            like[k++] = '\\';
        like[k++] = *c;
    }
    like[k] = '\0';
    snprintf(buf, sizeof(buf), sql, like, like);
    return exec_ok(s->ctl, buf, s->error, sizeof(s->error));
}

static void schedule_free(chorus_sim_t *s) {
    for (int i = 0; i < s->nparts; i++) {
        sim_part_t *p = &s->parts[i];
        if (p->ch) {
            /* no goodbye to the broker (it is dropped); the sessions go
             * back to the pool */
            p->up = false;
            with_skew(p);
            chorus_destroy(p->ch);
            no_skew(s);
            p->ch = NULL;
        }
        for (size_t k = 0; k < p->npending; k++)
            pending_clear(&p->pending[k]);
        p->npending = p->nheld = 0;
        confirms_clear(p);
    }
    chorus__sim_broker_free(s->broker);
    s->broker = NULL;
    chorus__clock_use(NULL);
}

static void results_free(chorus_sim_t *s) {
    for (size_t i = 0; i < s->ntrace; i++)
        free(s->trace[i].text);
    s->ntrace = 0;
    for (size_t i = 0; i < s->nviolations; i++)
        free(s->violations[i]);
    free(s->violations);
    s->violations = NULL;
    s->nviolations = 0;
    s->nhandled = s->nsagas = 0;
    s->failing_corr[0] = s->error[0] = '\0';
}

/* Messages still to be handled (every queue but the DLQs and unrouted). */
static size_t broker_work(chorus_sim_t *s) {
    size_t n = 0;
    for (size_t i = 0; i < chorus__sim_queue_count(s->broker); i++) {
        const char *q = chorus__sim_queue_name(s->broker, i);
        size_t len = strlen(q);
        bool dlq = len > 4 && strcmp(q + len - 4, ".dlq") == 0;
        bool unrouted = len >= 9 && strcmp(q + len - 9, ".unrouted") == 0;
        if (!dlq && !unrouted)
            n += chorus__sim_ready(s->broker, q) + chorus__sim_unacked(s->broker, q);
    }
    return n;
}

static bool part_busy(const sim_part_t *p) {
    const chorus_t *ch = p->ch;
    return p->npending || p->nconfirms || (ch && (ch->inflight || ch->backlog_head || ch->outq ||
                                                  ch->store.marks.n || !link_up(ch)));
}

/* Unpublished outbox rows and pending timers, in every schema. */
static long store_work(chorus_sim_t *s) {
    long n = 0;
    for (int i = 0; i < s->ndecl; i++) { /* a schema per service */
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT (SELECT count(*) FROM \"%s%s\".outbox WHERE published_at IS NULL) +"
                 " (SELECT count(*) FROM \"%s%s\".timers WHERE state = 'pending')",
                 s->prefix, s->decl[i].service, s->prefix, s->decl[i].service);
        PGresult *r = PQexec(s->ctl, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            n += strtol(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    return n;
}

static void restart_due(chorus_sim_t *s, bool now) {
    for (int i = 0; i < s->nparts; i++) {
        sim_part_t *p = &s->parts[i];
        if (p->ch || (!now && sim_now(s) < p->restart_ms))
            continue;
        if (now && sim_now(s) < p->restart_ms)
            chorus__sim_clock_advance(&s->clock, p->restart_ms - sim_now(s));
        if (!part_make(p))
            return;
    }
}

static void advance(chorus_sim_t *s, int64_t ms) {
    chorus__sim_clock_advance(&s->clock, ms);
    size_t n = chorus__sim_tick(s->broker);
    if (n)
        trace(s, NULL, "broker: %zu message%s expired (retry delay over)", n, n == 1 ? "" : "s");
}

static void begin_one(chorus_sim_t *s, int *begun) {
    sim_part_t *p = NULL;
    for (int i = 0; i < s->nparts && !p; i++)
        if (strcmp(s->parts[i].service, s->decl[s->begin_part].service) == 0 && s->parts[i].ch &&
            link_up(s->parts[i].ch))
            p = &s->parts[i];
    if (!p)
        return;
    with_skew(p);
    chorus_err_t rc = s->begin(p->ch, *begun, s->begin_opaque);
    no_skew(s);
    trace(s, NULL, "%s begins saga %d: %s", p->label, *begun, rc ? chorus_strerror(rc) : "ok");
    if (!rc)
        ++*begun;
}

static const char *const CRASH_POINTS[] = {"before-commit", "after-commit", "before-ack", "now"};

static void inject(chorus_sim_t *s) {
    sim_part_t *p = &s->parts[rnd(s, (uint64_t)s->nparts)];
    uint64_t kind = rnd(s, 12);
    if (!p->ch)
        return;
    if (kind < 5) {
        const char *point = CRASH_POINTS[rnd(s, 4)];
        int64_t after = 50 + (int64_t)rnd(s, 3000);
        if (!fault(s, F_CRASH, "%s at %s, restarting %lld ms later", p->label, point,
                   (long long)after))
            return;
        if (strcmp(point, "now") == 0) {
            trace(s, NULL, "%s CRASHED between deliveries", p->label);
            part_down(p, after);
        } else {
            p->armed = point;
            p->crash_delay_ms = after;
        }
    } else if (kind == 5 && rnd(s, 3) == 0) {
        if (!fault(s, F_PGDOWN, "PostgreSQL restarts: every session is terminated"))
            return;
        for (int i = 0; i < s->nparts; i++)
            if (s->parts[i].ch)
                kill_backends(s, s->parts[i].ch, true);
        while (s->npool > 0) /* idle ones too */
            PQfinish(s->pool[--s->npool]);
    } else if (kind < 8) {
        if (!link_up(p->ch) || !fault(s, F_LOSS, "the broker drops %s's connection (%zu unacked)",
                                      p->label, p->nheld))
            return;
        chorus__lock(p->ch);
        link_lost(p->ch, "the broker closed the connection");
        chorus__unlock(p->ch);
    } else if (kind < 10) {
        if (!fault(s, F_RELAY, "%s runs its outbox relay now", p->label))
            return;
        p->ch->store.relay_wanted = true;
        p->ch->store.next_relay_ms = 0;
        part_poll(p);
    } else {
        /* before its interval: what is due by its clock fires now */
        if (!fault(s, F_TIMER, "%s looks for due timers now", p->label))
            return;
        p->ch->store.next_timer_ms = 0;
        p->ch->store.next_timer_wall_ms = 0;
        part_poll(p);
    }
}

static void deliver_some(chorus_sim_t *s, sim_part_t *p, bool faults) {
    chorus_t *ch = p->ch;
    if (!ch)
        return;
    const char *q = ch->topo.names.queue;
    int n = 1 + (int)rnd(s, 3);
    for (int k = 0; k < n; k++) {
        size_t ready = chorus__sim_ready(s->broker, q);
        if (!ready)
            break;
        size_t index = 0;
        uint64_t dice = rnd(s, 100), pick = rnd(s, ready < 4 ? ready : 4);
        if (faults && dice < 4 && fault(s, F_DUPLICATE, "%s's queue gets a second copy of a message",
                                        p->label))
            chorus__sim_copy(s->broker, q, 0);
        else if (faults && dice >= 90 && pick > 0 &&
                 fault(s, F_REORDER, "%s takes message %zu of %zu first", p->label,
                       (size_t)pick + 1, ready))
            index = (size_t)pick;
        if (!part_deliver(p, index))
            break;
    }
    part_poll(p);
}

static void run_faults(chorus_sim_t *s, int nsagas) {
    int begun = 0;
    int min_steps = 60 * nsagas, max_steps = 400 * nsagas + 200;
    for (s->step = 0; s->step < max_steps && !s->error[0]; s->step++) {
        if (begun >= nsagas && s->step >= min_steps)
            break;
        restart_due(s, false);
        uint64_t r = rnd(s, 100);
        if (r < 10) {
            if (begun < nsagas)
                begin_one(s, &begun);
        } else if (r < 60) {
            deliver_some(s, &s->parts[rnd(s, (uint64_t)s->nparts)], true);
        } else if (r < 78) {
            part_poll(&s->parts[rnd(s, (uint64_t)s->nparts)]);
        } else if (r < 93) {
            int64_t ms = 1 + (int64_t)rnd(s, 60);
            int64_t long_ms = 300 + (int64_t)rnd(s, 9000);
            if (rnd(s, 100) < 15 && fault(s, F_DELAY, "%lld ms pass", (long long)long_ms))
                ms = long_ms;
            advance(s, ms);
        } else {
            inject(s);
        }
    }
    while (begun < nsagas && !s->error[0] && s->step < max_steps + 1000) {
        restart_due(s, true);
        begin_one(s, &begun);
        s->step++;
    }
}

static bool settle(chorus_sim_t *s) {
    for (int i = 0; i < s->nparts; i++)
        s->parts[i].armed = NULL;
    trace(s, NULL, "settling: no more faults");
    int idle = 0;
    for (int round = 0; round < 20000 && !s->error[0]; round++, s->step++) {
        restart_due(s, true);
        uint64_t before = s->activity;
        for (int i = 0; i < s->nparts; i++) {
            sim_part_t *p = &s->parts[i];
            if (p->ch)
                deliver_some(s, p, false);
            part_poll(p);
        }
        if (s->activity != before) {
            idle = 0;
            continue;
        }
        bool busy = broker_work(s) > 0;
        for (int i = 0; i < s->nparts && !busy; i++)
            busy = part_busy(&s->parts[i]);
        if (!busy && store_work(s) == 0)
            return true;
        if (++idle > 600) /* ten simulated minutes with nothing moving */
            break;
        advance(s, 1000);
    }
    return false;
}

static void check(chorus_sim_t *s, bool settled) {
    if (!settled) {
        violation(s, NULL, "settled: the run did not settle (%zu messages queued, %ld outbox rows "
                           "or timers pending)", broker_work(s), store_work(s));
    }
    for (size_t i = 0; i < s->nsagas; i++) {
        saga_seen_t *g = &s->sagas[i];
        if (!g->terminal[0])
            violation(s, g->corr, "terminal: saga %s (aggregate %s) never reached a terminal event",
                      g->corr, g->agg);
        if (g->terminal2[0])
            violation(s, g->corr, "terminal: saga %s ended twice, with %s and %s", g->corr,
                      g->terminal, g->terminal2);
        if (g->pivot_done && (g->compensated || g->accepted))
            violation(s, g->corr, "pivot: saga %s: the pivot step ran, and %s", g->corr,
                      g->accepted ? "its cancellation was accepted"
                                  : "a step was compensated");
    }
    chorus__retry_schedule_t retry;
    chorus__retry_schedule_from_conf(s->base, &retry);
    for (int i = 0; i < s->ndecl; i++) { /* a DLQ per service, named as chorus names it */
        chorus__names_t names;
        if (chorus__names_build(chorus__conf_str(s->base, "topology.namespace"),
                                s->decl[i].service, &retry, &names))
            continue;
        const char *dlq = names.dlq;
        for (size_t k = 0; k < chorus__sim_ready(s->broker, dlq); k++) {
            const amqp_message_t *m = chorus__sim_peek(s->broker, dlq, k);
            char corr[37], type[64], id[37], why[200] = "", err[300] = "";
            msg_ids(m, corr, type, id);
            const amqp_table_t *h =
                (m->properties._flags & AMQP_BASIC_HEADERS_FLAG) ? &m->properties.headers : NULL;
            const amqp_table_entry_t *r = chorus__table_find(h, CHORUS__H_REASON),
                                     *e = chorus__table_find(h, CHORUS__H_ERROR);
            if (r && (r->value.kind == AMQP_FIELD_KIND_UTF8 || r->value.kind == AMQP_FIELD_KIND_BYTES))
                bytes_str(r->value.value.bytes, why, sizeof(why));
            if (e && (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
                bytes_str(e->value.value.bytes, err, sizeof(err));
            violation(s, corr, "dlq: %s dead-lettered %s %s: %s%s%s", s->decl[i].service, type, id,
                      *why ? why : "rejected", *err ? ": " : "", err);
        }
    }
    for (size_t i = 0; i < s->ninv; i++) {
        char *sql = expand_schemas(s, s->inv[i].sql);
        PGresult *r = sql ? PQexec(s->ctl, sql) : NULL;
        free(sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(s->error, sizeof(s->error), "invariant '%s': %s", s->inv[i].name,
                     PQerrorMessage(s->ctl));
            PQclear(r);
            return;
        }
        for (int row = 0; row < PQntuples(r) && row < 5; row++) {
            char line[600] = "";
            size_t o = 0;
            for (int c = 0; c < PQnfields(r) && o + 2 < sizeof(line); c++)
                o += (size_t)snprintf(line + o, sizeof(line) - o, "%s%s=%s", c ? " " : "",
                                      PQfname(r, c), PQgetvalue(r, row, c));
            const char *key = PQgetvalue(r, row, 0), *corr = key;
            for (size_t g = 0; g < s->nsagas; g++)
                if (strcmp(s->sagas[g].agg, key) == 0)
                    corr = s->sagas[g].corr;
            violation(s, corr, "%s: %s (%s)", s->inv[i].name, s->inv[i].description, line);
        }
        PQclear(r);
    }
}

/* Runs seed @p seed with @p nsagas sagas; faults numbered from
 * fault_limit on, or in fault_off, are left out.  The number of
 * violations, or -1 on a set-up error (s->error). */
static int run_schedule(chorus_sim_t *s, uint64_t seed, int nsagas) {
    results_free(s);
    memset(s->fault_count, 0, sizeof(s->fault_count));
    s->nfaults = s->fault_seen = 0;
    s->activity = 0;
    s->step = 0;
    chorus__sim_clock_init(&s->clock, seed, SIM_EPOCH_MS);
    chorus__sim_clock_init(&s->sched, seed ^ UINT64_C(0x5eed5eed5eed5eed), 0);
    chorus__clock_use(&s->clock.clock);
    if (!reset_store(s) || !(s->broker = chorus__sim_broker_new())) {
        if (!s->error[0])
            snprintf(s->error, sizeof(s->error), "out of memory");
        schedule_free(s);
        return -1;
    }
    for (int i = 0; i < s->nparts; i++) {
        sim_part_t *p = &s->parts[i];
        p->skew_ms = 0;
        int64_t skew = (int64_t)rnd(s, 1001) - 500;
        if (rnd(s, 100) < 30 && fault(s, F_SKEW, "%s's clock runs %+lld ms %s", p->label,
                                      (long long)skew, skew >= 0 ? "ahead" : "behind"))
            p->skew_ms = skew;
        p->restart_ms = 0;
    }
    for (int i = 0; i < s->nparts && !s->error[0]; i++)
        part_make(&s->parts[i]);
    s->faulting = true;
    if (!s->error[0])
        run_faults(s, nsagas);
    s->faulting = false;
    bool settled = !s->error[0] && settle(s);
    if (!s->error[0])
        check(s, settled);
    schedule_free(s);
    return s->error[0] ? -1 : (int)s->nviolations;
}

/* ---- the public surface --------------------------------------------------- */

chorus_sim_t *chorus_sim_new(const char *saga_file, char *errstr, size_t errstr_size) {
    chorus_sim_t *s = calloc(1, sizeof(*s));
    if (!s || !saga_file) {
        free(s);
        chorus__errstr(errstr, errstr_size, saga_file ? "out of memory" : "saga_file is required");
        return NULL;
    }
    if (!(s->saga = chorus_saga_load(saga_file, errstr, errstr_size))) {
        free(s);
        return NULL;
    }
    snprintf(s->saga_file, sizeof(s->saga_file), "%s", saga_file);
    s->base = chorus_conf_new();
    char err[256];
    const char *pg = getenv("CHORUS_PG");
    if (!s->base ||
        chorus_conf_set(s->base, "saga.file", saga_file, err, sizeof(err)) != CHORUS_CONF_OK ||
        chorus_conf_set(s->base, "store.type", "postgres", err, sizeof(err)) != CHORUS_CONF_OK ||
        chorus_conf_set(s->base, "transport", "simulation", err, sizeof(err)) != CHORUS_CONF_OK ||
        chorus_conf_set(s->base, "topology.namespace", chorus__saga_namespace(s->saga), err,
                        sizeof(err)) != CHORUS_CONF_OK ||
        chorus_conf_set(s->base, "amqp.url", "amqp://sim:sim@simulation:5672/", err,
                        sizeof(err)) != CHORUS_CONF_OK ||
        (pg && *pg &&
         chorus_conf_set(s->base, "store.conninfo", pg, err, sizeof(err)) != CHORUS_CONF_OK)) {
        chorus__errstr(errstr, errstr_size, "%s", s->base ? err : "out of memory");
        chorus_sim_destroy(s);
        return NULL;
    }
    s->begin_part = -1;
    s->instances = 2;
    snprintf(s->prefix, sizeof(s->prefix), "sim%ld_", (long)getpid());
    return s;
}

void chorus_sim_destroy(chorus_sim_t *s) {
    if (!s)
        return;
    results_free(s);
    free(s->trace);
    free(s->handled);
    free(s->sagas);
    for (int i = 0; i < s->nparts; i++) {
        free(s->parts[i].confirms);
        free(s->parts[i].pending);
        free(s->parts[i].held);
    }
    for (size_t i = 0; i < s->ninv; i++) {
        free(s->inv[i].name);
        free(s->inv[i].description);
        free(s->inv[i].sql);
    }
    free(s->inv);
    while (s->npool > 0)
        PQfinish(s->pool[--s->npool]);
    if (s->ctl)
        PQfinish(s->ctl);
    chorus_conf_destroy(s->base);
    chorus_saga_destroy(s->saga);
    free(s);
}

chorus_err_t chorus_sim_set(chorus_sim_t *s, const char *key, const char *value) {
    char err[256];
    if (!s || !key || !value)
        return CHORUS_ERR_INVALID_ARG;
    return chorus_conf_set(s->base, key, value, err, sizeof(err)) == CHORUS_CONF_OK
               ? CHORUS_OK
               : CHORUS_ERR_INVALID_CONF;
}

static int find_decl(const chorus_sim_t *s, const char *service) {
    for (int i = 0; i < s->ndecl; i++)
        if (strcmp(s->decl[i].service, service) == 0)
            return i;
    return -1;
}

chorus_err_t chorus_sim_participant(chorus_sim_t *s, const char *service,
                                    chorus_sim_setup_fn *setup, void *opaque) {
    if (!s || !service || !*service || strlen(service) > 64 || find_decl(s, service) >= 0)
        return CHORUS_ERR_INVALID_ARG;
    if (s->ndecl == SIM_MAX_PARTS)
        return CHORUS_ERR_QUEUE_FULL;
    snprintf(s->decl[s->ndecl].service, sizeof(s->decl[0].service), "%s", service);
    s->decl[s->ndecl].setup = setup;
    s->decl[s->ndecl].opaque = opaque;
    s->ndecl++;
    return CHORUS_OK;
}

chorus_err_t chorus_sim_begin(chorus_sim_t *s, const char *service, chorus_sim_begin_fn *begin,
                              void *opaque) {
    int i = s && begin && service ? find_decl(s, service) : -1;
    if (i < 0)
        return CHORUS_ERR_INVALID_ARG;
    s->begin = begin;
    s->begin_opaque = opaque;
    s->begin_part = i;
    return CHORUS_OK;
}

/* The instances: each declared service @p n times. */
static void make_instances(chorus_sim_t *s, int n) {
    s->nparts = 0;
    for (int d = 0; d < s->ndecl; d++)
        for (int k = 0; k < n; k++) {
            sim_part_t *p = &s->parts[s->nparts];
            memset(p, 0, sizeof(*p));
            p->sim = s;
            s->nparts++;
            p->instance = k;
            snprintf(p->service, sizeof(p->service), "%s", s->decl[d].service);
            if (n > 1)
                snprintf(p->label, sizeof(p->label), "%s#%d", s->decl[d].service, k + 1);
            else
                snprintf(p->label, sizeof(p->label), "%s", s->decl[d].service);
            p->setup = s->decl[d].setup;
            p->opaque = s->decl[d].opaque;
        }
}

static char *json_text(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
}

chorus_err_t chorus_sim_invariants(chorus_sim_t *s, const char *path, char *errstr,
                                   size_t errstr_size) {
    FILE *f = s && path ? fopen(path, "rb") : NULL;
    if (!f) {
        chorus__errstr(errstr, errstr_size, "%s: cannot be read", path ? path : "(null)");
        return CHORUS_ERR_INVALID_CONF;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (!grow_array((void **)&text, &cap, len + 4097, 1))
            break;
        size_t n = fread(text + len, 1, 4096, f);
        len += n;
        if (n < 4096)
            break;
    }
    fclose(f);
    cJSON *j = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "invariants");
    const cJSON *saga = cJSON_GetObjectItemCaseSensitive(j, "saga");
    chorus_err_t rc = CHORUS_OK;
    if (!cJSON_IsObject(j) || !cJSON_IsArray(list)) {
        chorus__errstr(errstr, errstr_size, "%s: not a JSON object with an \"invariants\" array",
                       path);
        rc = CHORUS_ERR_INVALID_CONF;
    } else if (!cJSON_IsString(saga) || strcmp(saga->valuestring, chorus_saga_name(s->saga))) {
        chorus__errstr(errstr, errstr_size, "%s: \"saga\" must name the simulated saga '%s'", path,
                       chorus_saga_name(s->saga));
        rc = CHORUS_ERR_INVALID_CONF;
    }
    int i = 0;
    const cJSON *it, *from = rc ? NULL : list;
    cJSON_ArrayForEach(it, from) {
        char *name = json_text(it, "name"), *desc = json_text(it, "description"),
             *sql = json_text(it, "sql");
        invariant_t *n = realloc(s->inv, (s->ninv + 1) * sizeof(*n));
        if (!name || !*name || !desc || !sql || !*sql || !n) {
            chorus__errstr(errstr, errstr_size, "%s: invariant %d needs \"name\", "
                           "\"description\" and \"sql\" (text)", path, i);
            free(name), free(desc), free(sql);
            if (n)
                s->inv = n;
            rc = CHORUS_ERR_INVALID_CONF;
            break;
        }
        s->inv = n;
        s->inv[s->ninv++] = (invariant_t){name, desc, sql};
        i++;
    }
    cJSON_Delete(j);
    return rc;
}

/* ---- the command line ------------------------------------------------------ */

static void usage(FILE *out, const char *prog) {
    fprintf(out,
            "usage: %s [--seeds N] [--seed S] [--sagas K] [--instances I] [--jobs J]\n"
            "          [--set K=V] [--mutation M] [--keep-going] [--no-shrink] [--trace]\n"
            "          [--verbose]\n"
            "\n"
            "Runs N seeded schedules (seeds S, S+1, ...) of K concurrent sagas against the\n"
            "simulated broker and clock, with the handlers' SQL on PostgreSQL (libpq's PG*\n"
            "variables, or CHORUS_PG), and checks the invariants when each has settled.\n"
            "\n"
            "  --seeds N      schedules to run (default 100)\n"
            "  --seed S       the first seed (default 1); --seeds 1 --seed S replays one\n"
            "  --sagas K      sagas begun per schedule (default 3)\n"
            "  --instances I  instances of each service, consuming its queue together\n"
            "                 (default 2, at most 4)\n"
            "  --jobs J       J processes share the seeds (default 1); a violation is\n"
            "                 then run again here, for its shrinking and trace\n"
            "  --set K=V      a configuration property of every participant\n"
            "                 (lib/docs/CONFIGURATION.md), e.g. store.timer.interval.ms=500\n"
            "  --mutation M   a deliberate defect: pivot-unsafe, no-overtake-guard,\n"
            "                 inbox-bypass (the simulation must find it)\n"
            "  --keep-going   run every seed even after a violation\n"
            "  --no-shrink    print the failing schedule as it ran\n"
            "  --trace        print the whole trace of the (last) schedule\n"
            "  --verbose      the participants' logs on stderr\n"
            "\n"
            "Exit status: 0 no violation, 1 a violation, 2 usage or set-up error.\n",
            prog);
}

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
    if (!s || !*s || *s == '-')
        return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static uint64_t trace_hash(const chorus_sim_t *s) {
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < s->ntrace; i++)
        for (const char *c = s->trace[i].text; *c; c++)
            h = (h ^ (unsigned char)*c) * UINT64_C(1099511628211);
    return h;
}

static void print_trace(const chorus_sim_t *s, const char *corr) {
    const saga_seen_t *g = NULL;
    for (size_t i = 0; corr && i < s->nsagas; i++)
        if (strcmp(s->sagas[i].corr, corr) == 0)
            g = &s->sagas[i];
    for (size_t i = 0; i < s->ntrace; i++) {
        const trace_line_t *l = &s->trace[i];
        bool mine = !corr || strcmp(l->corr, corr) == 0 || strstr(l->text, corr) ||
                    (g && g->agg[0] && strstr(l->text, g->agg));
        /* faults, crashes and restarts are everyone's context */
        bool context = !l->corr[0] && (strstr(l->text, "FAULT") || strstr(l->text, "CRASHED") ||
                                       strstr(l->text, " down;") || strstr(l->text, " started") ||
                                       strstr(l->text, "lost:") || strstr(l->text, "settling"));
        if (mine || context)
            printf("    %s\n", l->text);
    }
}

static void print_faults(const chorus_sim_t *s) {
    for (int i = 0; i < s->nfaults; i++)
        printf("    step %-5d %-9s %s\n", s->faults[i].step, FAULT_NAMES[s->faults[i].kind],
               s->faults[i].what);
    if (!s->nfaults)
        printf("    (none: it fails without a fault)\n");
}

/*
 * The smallest schedule that still fails: the shortest prefix of its
 * faults, then each remaining fault left out in turn (kept out when the
 * run still fails).  Leaves the last failing run's results in @p s.
 */
static void shrink(chorus_sim_t *s, uint64_t seed, int nsagas, int total) {
    static bool off[SIM_MAX_FAULTS];
    memset(off, 0, sizeof(off));
    s->fault_off = off;
    int lo = 0, hi = total < SIM_MAX_FAULTS ? total : SIM_MAX_FAULTS, runs = 0;
    while (lo < hi) { /* the first `hi` faults fail; does a shorter prefix? */
        int mid = (lo + hi) / 2;
        s->fault_limit = mid;
        runs++;
        if (run_schedule(s, seed, nsagas) > 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    s->fault_limit = hi;
    for (int i = hi - 1; i >= 0; i--) {
        off[i] = true;
        runs++;
        if (run_schedule(s, seed, nsagas) <= 0)
            off[i] = false;
    }
    run_schedule(s, seed, nsagas);
    printf("  shrunk in %d runs: %d of %d faults still fail\n", runs + 1, s->nfaults, total);
    s->fault_off = NULL;
}

static int silence_stderr(bool verbose) {
    if (verbose)
        return -1;
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0)
        dup2(null, 2);
    if (null >= 0)
        close(null);
    return saved;
}

static void restore_stderr(int saved) {
    if (saved < 0)
        return;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
}

static int64_t real_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool prepare(chorus_sim_t *s) {
    if (s->begin_part < 0) {
        snprintf(s->error, sizeof(s->error), "no chorus_sim_begin(): who begins the sagas?");
        return false;
    }
    const char *const *names;
    size_t n = chorus_saga_services(s->saga, &names);
    for (size_t i = 0; i < n; i++) {
        bool observer = false;
        size_t steps = chorus_saga_step_count(s->saga);
        for (size_t k = 0; k < steps; k++)
            observer = observer || strcmp(chorus_saga_step_service(s->saga, k), names[i]) == 0;
        if (find_decl(s, names[i]) < 0 && observer) {
            snprintf(s->error, sizeof(s->error), "saga '%s': service '%s' takes steps but is "
                     "not a participant of the simulation (chorus_sim_participant)",
                     chorus_saga_name(s->saga), names[i]);
            return false;
        }
    }
    make_instances(s, s->instances);
    const char *ns = chorus__conf_str(s->base, "topology.namespace");
    const char *tmpl = chorus__conf_str(s->base, "security.user.template");
    for (int i = 0; i < s->nparts; i++) { /* the user its connection would log in as */
        char *u = chorus__expand_user(tmpl, ns, s->parts[i].service);
        if (!u) {
            snprintf(s->error, sizeof(s->error), "out of memory");
            return false;
        }
        snprintf(s->parts[i].user, sizeof(s->parts[i].user), "%s", u);
        free(u);
    }
    return true;
}

static void drop_schemas(chorus_sim_t *s) {
    for (int i = 0; s->ctl && i < s->ndecl; i++) {
        char sql[256];
        snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS \"%s%s\" CASCADE", s->prefix,
                 s->decl[i].service);
        PQclear(PQexec(s->ctl, sql));
    }
}

/* What one schedule came to, as a worker reports it. */
typedef struct {
    uint64_t seed;
    int violations; /* -1: a set-up error */
    int steps;
    uint64_t hash;
    long faults[F_KINDS];
    char error[1024];
} outcome_t;

static bool connect_ctl(chorus_sim_t *s) {
    s->ctl = PQconnectdb(chorus__conf_str(s->base, "store.conninfo"));
    if (PQstatus(s->ctl) != CONNECTION_OK) {
        snprintf(s->error, sizeof(s->error), "PostgreSQL: %s", PQerrorMessage(s->ctl));
        return false;
    }
    PQclear(PQexec(s->ctl, "SET client_min_messages = warning"));
    snprintf(s->prefix, sizeof(s->prefix), "sim%ld_", (long)getpid());
    drop_schemas(s); /* what an earlier run of this pid left */
    return true;
}

static void run_one(chorus_sim_t *s, uint64_t seed, int sagas, outcome_t *o) {
    int saved = silence_stderr(s->verbose);
    int v = run_schedule(s, seed, sagas);
    restore_stderr(saved);
    memset(o, 0, sizeof(*o));
    o->seed = seed;
    o->violations = v;
    o->steps = s->step;
    o->hash = trace_hash(s);
    memcpy(o->faults, s->fault_count, sizeof(o->faults));
    snprintf(o->error, sizeof(o->error), "%s", s->error);
}

/* A worker of --jobs: seeds first+j, first+j+jobs, ... until done or told
 * to stop (its stop pipe closed); one outcome_t per seed on @p out. */
static void worker(chorus_sim_t *s, uint64_t first, uint64_t seeds, int j, int jobs, int sagas,
                   bool keep_going, int out, int stop) {
    outcome_t o;
    if (!connect_ctl(s)) {
        memset(&o, 0, sizeof(o));
        o.violations = -1;
        snprintf(o.error, sizeof(o.error), "%s", s->error);
        (void)!write(out, &o, sizeof(o));
        return;
    }
    fcntl(stop, F_SETFL, O_NONBLOCK);
    for (uint64_t seed = first + (uint64_t)j; seed < first + seeds; seed += (uint64_t)jobs) {
        char c;
        if (read(stop, &c, 1) == 0)
            break; /* the parent closed it */
        run_one(s, seed, sagas, &o);
        if (write(out, &o, sizeof(o)) != (ssize_t)sizeof(o) || o.violations < 0 ||
            (o.violations > 0 && !keep_going))
            break;
    }
    drop_schemas(s);
}

/* Prints a violating seed: run again here, shrunk unless @p no_shrink,
 * with the failing saga's trace. */
static void report(chorus_sim_t *s, uint64_t seed, int sagas, uint64_t after, bool no_shrink,
                   bool details) {
    int saved = silence_stderr(s->verbose);
    int v = run_schedule(s, seed, sagas);
    restore_stderr(saved);
    printf("\nVIOLATION with seed %llu (after %llu schedule%s):\n", (unsigned long long)seed,
           (unsigned long long)after, after == 1 ? "" : "s");
    if (v <= 0)
        printf("  run again here, it %s: the seed does not decide the run alone (a bug of the "
               "simulation; please report it)\n", v < 0 ? s->error : "found nothing");
    for (size_t i = 0; i < s->nviolations; i++)
        printf("  - %s\n", s->violations[i]);
    if (details && !no_shrink && s->nviolations) {
        int total = s->nfaults;
        saved = silence_stderr(s->verbose);
        shrink(s, seed, sagas, total);
        restore_stderr(saved);
        s->fault_limit = SIM_MAX_FAULTS;
        for (size_t i = 0; i < s->nviolations; i++)
            printf("  - %s\n", s->violations[i]);
    }
    if (details) {
        printf("  faults of the %sschedule:\n", no_shrink ? "" : "shrunk ");
        print_faults(s);
        if (s->failing_corr[0]) {
            printf("  trace of saga %s:\n", s->failing_corr);
            print_trace(s, s->failing_corr);
        }
    }
    printf("  replay: --seed %llu --seeds 1 --sagas %d%s%s\n", (unsigned long long)seed, sagas,
           *s->mutation ? " --mutation " : "", s->mutation);
    fflush(stdout);
}

typedef struct {
    pid_t pid;
    int out, stop; /* read end of its outcomes; write end of its stop pipe */
} job_t;

static void stop_jobs(job_t *jobs, int n);

/* Ends the first @p n jobs started (a start that failed half-way). */
static void abandon_jobs(job_t *jobs, int n) {
    stop_jobs(jobs, n);
    for (int j = 0; j < n; j++) {
        close(jobs[j].out);
        waitpid(jobs[j].pid, NULL, 0);
    }
}

static bool start_jobs(chorus_sim_t *s, job_t *jobs, int n, uint64_t first, uint64_t seeds,
                       int sagas, bool keep_going) {
    fflush(stdout);
    fflush(stderr);
    for (int j = 0; j < n; j++) {
        int out[2] = {-1, -1}, stop[2] = {-1, -1};
        pid_t pid = -1;
        if (pipe(out) || pipe(stop) || (pid = fork()) < 0) {
            for (int k = 0; k < 2; k++) {
                if (out[k] >= 0)
                    close(out[k]);
                if (stop[k] >= 0)
                    close(stop[k]);
            }
            abandon_jobs(jobs, j);
            return false;
        }
        if (pid == 0) {
            for (int k = 0; k < j; k++)
                close(jobs[k].out), close(jobs[k].stop);
            close(out[0]);
            close(stop[1]);
            worker(s, first, seeds, j, n, sagas, keep_going, out[1], stop[0]);
            if (s->ctl)
                PQfinish(s->ctl);
            _exit(0);
        }
        close(out[1]);
        close(stop[0]);
        jobs[j] = (job_t){pid, out[0], stop[1]};
    }
    return true;
}

/* The next outcome of any job (false: every job has ended). */
static bool next_outcome(job_t *jobs, int n, outcome_t *o) {
    for (;;) {
        struct pollfd fds[64];
        int live = 0;
        for (int j = 0; j < n; j++) {
            fds[j] = (struct pollfd){.fd = jobs[j].out, .events = POLLIN};
            live += jobs[j].out >= 0;
        }
        if (!live)
            return false;
        if (poll(fds, (nfds_t)n, -1) < 0)
            continue;
        for (int j = 0; j < n; j++) {
            if (jobs[j].out < 0 || !fds[j].revents)
                continue;
            size_t got = 0;
            while (got < sizeof(*o)) {
                ssize_t r = read(jobs[j].out, (char *)o + got, sizeof(*o) - got);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            if (got == sizeof(*o))
                return true;
            close(jobs[j].out); /* it ended */
            jobs[j].out = -1;
            int st = 0;
            waitpid(jobs[j].pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { /* died: its seeds are lost */
                memset(o, 0, sizeof(*o));
                o->violations = -1;
                if (WIFSIGNALED(st))
                    snprintf(o->error, sizeof(o->error), "job %d died of signal %d", j + 1,
                             WTERMSIG(st));
                else
                    snprintf(o->error, sizeof(o->error), "job %d exited with status %d", j + 1,
                             WEXITSTATUS(st));
                return true;
            }
        }
    }
}

static void stop_jobs(job_t *jobs, int n) {
    for (int j = 0; j < n; j++)
        if (jobs[j].stop >= 0) {
            close(jobs[j].stop);
            jobs[j].stop = -1;
        }
}

int chorus_sim_main(chorus_sim_t *s, int argc, char **argv) {
    if (!s)
        return 2;
    const char *prog = argc > 0 ? argv[0] : "sim";
    uint64_t seeds = 100, first = 1, sagas = 3, njobs = 1;
    bool keep_going = false, no_shrink = false, full_trace = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout, prog);
            chorus_sim_destroy(s);
            return 0;
        } else if (strcmp(a, "--seeds") == 0) {
            ok = parse_u64(v, 1, 10000000, &seeds), i++;
        } else if (strcmp(a, "--seed") == 0) {
            ok = parse_u64(v, 0, UINT64_MAX / 2, &first), i++;
        } else if (strcmp(a, "--sagas") == 0) {
            ok = parse_u64(v, 1, 1000, &sagas), i++;
        } else if (strcmp(a, "--jobs") == 0) {
            ok = parse_u64(v, 1, 64, &njobs), i++;
        } else if (strcmp(a, "--instances") == 0) {
            uint64_t k = 0;
            ok = parse_u64(v, 1, SIM_MAX_INSTANCES, &k), i++;
            s->instances = (int)k;
        } else if (strcmp(a, "--mutation") == 0) {
            ok = v && (strcmp(v, "pivot-unsafe") == 0 || strcmp(v, "no-overtake-guard") == 0 ||
                       strcmp(v, "inbox-bypass") == 0 || strcmp(v, "none") == 0);
            if (ok)
                snprintf(s->mutation, sizeof(s->mutation), "%s", v);
            i++;
        } else if (strcmp(a, "--set") == 0) {
            const char *eq = v ? strchr(v, '=') : NULL;
            char key[128], err[256];
            ok = eq && eq > v && (size_t)(eq - v) < sizeof(key);
            if (ok) {
                snprintf(key, sizeof(key), "%.*s", (int)(eq - v), v);
                ok = chorus_conf_set(s->base, key, eq + 1, err, sizeof(err)) == CHORUS_CONF_OK;
                if (!ok)
                    fprintf(stderr, "%s: --set %s: %s\n", prog, v, err);
            }
            i++;
        } else if (strcmp(a, "--keep-going") == 0) {
            keep_going = true;
        } else if (strcmp(a, "--no-shrink") == 0) {
            no_shrink = true;
        } else if (strcmp(a, "--trace") == 0) {
            full_trace = true;
        } else if (strcmp(a, "--verbose") == 0) {
            s->verbose = true;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "%s: bad argument '%s'%s%s\n", prog, a, v ? " " : "", v ? v : "");
            usage(stderr, prog);
            chorus_sim_destroy(s);
            return 2;
        }
    }
    if (njobs > seeds)
        njobs = seeds;
    if (!prepare(s) || (njobs == 1 && !connect_ctl(s))) {
        fprintf(stderr, "%s: %s\n", prog, s->error);
        chorus_sim_destroy(s);
        return 2;
    }
    printf("simulating saga '%s' (%s): seeds %llu..%llu, %llu saga%s each, %d participants "
           "x %d instance%s%s%s", chorus_saga_name(s->saga), s->saga_file, (unsigned long long)first,
           (unsigned long long)(first + seeds - 1), (unsigned long long)sagas,
           sagas == 1 ? "" : "s", s->ndecl, s->instances, s->instances == 1 ? "" : "s",
           *s->mutation ? ", mutation " : "", s->mutation);
    if (njobs > 1)
        printf(", %llu jobs", (unsigned long long)njobs);
    printf("\n");
    fflush(stdout);
    long totals[F_KINDS] = {0};
    uint64_t run = 0, failed = 0, first_failed = UINT64_MAX, failed_after = 0;
    int code = 0;
    int64_t t0 = real_ms(), last = t0;
    s->keep_trace = true;
    s->fault_limit = SIM_MAX_FAULTS;
    job_t jobs[64];
    int n = (int)njobs;
    if (n > 1 && !start_jobs(s, jobs, n, first, seeds, (int)sagas, keep_going)) {
        fprintf(stderr, "%s: cannot start %d jobs\n", prog, n);
        chorus_sim_destroy(s);
        return 2;
    }
    for (uint64_t seed = first;; seed++) {
        outcome_t o;
        if (n > 1) {
            if (!next_outcome(jobs, n, &o))
                break;
        } else {
            if (seed >= first + seeds)
                break;
            run_one(s, seed, (int)sagas, &o);
        }
        if (o.violations < 0) {
            fprintf(stderr, "%s: seed %llu: %s\n", prog, (unsigned long long)o.seed, o.error);
            code = 2;
            if (n == 1)
                break;
            stop_jobs(jobs, n);
            continue;
        }
        run++;
        for (int k = 0; k < F_KINDS; k++)
            totals[k] += o.faults[k];
        if (seeds == 1)
            printf("seed %llu: %d steps, trace hash %016llx\n", (unsigned long long)o.seed,
                   o.steps, (unsigned long long)o.hash);
        if (o.violations > 0) {
            failed++;
            if (code == 0)
                code = 1;
            if (o.seed < first_failed) {
                first_failed = o.seed;
                failed_after = run;
            }
            if (n == 1) /* in order: the first is the first */
                report(s, o.seed, (int)sagas, run, no_shrink, failed == 1);
            if (!keep_going) {
                if (n == 1)
                    break;
                stop_jobs(jobs, n);
            }
        }
        int64_t now = real_ms();
        if (now - last >= 5000 && run < seeds) {
            printf("  %llu/%llu schedules, %.1f/s, %llu with a violation\n",
                   (unsigned long long)run, (unsigned long long)seeds,
                   (double)run * 1000.0 / (double)(now - t0 ? now - t0 : 1),
                   (unsigned long long)failed);
            fflush(stdout);
            last = now;
        }
    }
    double secs = (double)(real_ms() - t0) / 1000.0;
    if (code == 0 && run < seeds) {
        fprintf(stderr, "%s: only %llu of %llu schedules ran\n", prog, (unsigned long long)run,
                (unsigned long long)seeds);
        code = 2;
    }
    if (n > 1) {
        stop_jobs(jobs, n);
        /* the first failing seed found, run again here for its details */
        if (failed && code != 2) {
            if (connect_ctl(s))
                report(s, first_failed, (int)sagas, failed_after, no_shrink, true);
            else
                fprintf(stderr, "%s: %s\n", prog, s->error);
        }
    }
    if (full_trace && code != 2)
        print_trace(s, NULL);
    printf("\nschedules run: %llu in %.1f s (%.1f/s), %llu saga%s each\n", (unsigned long long)run,
           secs, secs > 0 ? (double)run / secs : 0.0, (unsigned long long)sagas,
           sagas == 1 ? "" : "s");
    printf("faults injected:");
    for (int k = 0; k < F_KINDS; k++)
        printf(" %s %ld%s", FAULT_NAMES[k], totals[k], k + 1 < F_KINDS ? "," : "\n");
    printf("violations: %llu schedule%s", (unsigned long long)failed, failed == 1 ? "" : "s");
    if (failed)
        printf(" (first: seed %llu)", (unsigned long long)first_failed);
    printf("\n");
    drop_schemas(s);
    chorus_sim_destroy(s);
    return code;
}
