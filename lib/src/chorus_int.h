/*
 * chorus_int.h - the participant handle and what its modules share.
 *
 *   chorus.c     the public surface: new/destroy, register, start/run/stop
 *   amqp_conn.c  connect (several brokers), login, channels, heartbeats,
 *                reconnect with backoff, the frame dispatcher
 *   publisher.c  messages to publish, publisher confirms, returns, resends
 *   consumer.c   deliveries: decode, handler, retry / DLQ, ack
 *
 * Locking: rabbitmq-c is not thread-safe.  Every call on the connection is
 * made with `conn_lock` held.  The only other thread is the heartbeat
 * thread, which takes the lock when it is free (that is, while handlers run
 * and the main thread is not inside rabbitmq-c) and sends a heartbeat frame.
 */
#ifndef CHORUS_INT_H
#define CHORUS_INT_H

#include "backoff_int.h"
#include "batch_int.h"
#include "confirm_int.h"
#include "store_int.h"
#include "conf_int.h"
#include "envelope_int.h"
#include "metrics_int.h"
#include "retry_int.h"
#include "topology_int.h"
#include "url_int.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#define CHORUS__MAX_URLS 16
#define CHORUS__CH_CONSUME 1
#define CHORUS__CH_PUBLISH 2
#define CHORUS__CH_ADMIN 3

/* Fault header names, shared with scripts/dlq. */
#define CHORUS__H_ATTEMPT "x-chorus-attempt"
#define CHORUS__H_ORIG_RK "x-chorus-original-routing-key"
#define CHORUS__H_ORIG_Q "x-chorus-original-queue"
#define CHORUS__H_REASON "x-chorus-fault-reason"
#define CHORUS__H_ERROR "x-chorus-fault-error"
#define CHORUS__H_TIME "x-chorus-fault-time"
#define CHORUS__H_SERVICE "x-chorus-fault-service"
#define CHORUS__H_ATTEMPTS "x-chorus-fault-attempts"
#define CHORUS__H_LAST_ERROR "x-chorus-last-error"
/* The verified producer (AMQP user_id) of a message this service copied
 * to its retry queue or DLQ: the copy itself carries our own user_id. */
#define CHORUS__H_PRODUCER "x-chorus-producer"
/* Original headers left out of a copy because it would not fit a frame. */
#define CHORUS__H_DROPPED "x-chorus-dropped-headers"
/* Redeliveries chorus counted for a classic queue (see consumer.c). */
#define CHORUS__H_REDELIVERIES "x-chorus-redeliveries"
/* The broker's count of a quorum queue message's unsettled deliveries. */
#define CHORUS__H_DELIVERY_COUNT "x-delivery-count"

typedef struct chorus__handler_s {
    char *event_type;
    chorus_handler_fn *fn;
    void *opaque;
    /* From the declaration at chorus_start(): the broker users allowed to
     * produce this type (NULL: no check), the newest schema version known
     * (upcasters and declaration), and what to do with a newer one. */
    char **producer_users;
    size_t nproducer_users;
    int newest_schema;
    int registered_schema;          /* chorus_register_schema_version(), or 1 */
    bool newer_retry;
} chorus__handler_t;

/* Whoever waits for a group of publishes: a delivery, an outbox flush. */
struct chorus__waiter_s {
    int pending;  /* publishes not yet settled */
    bool failed;  /* one was nacked, returned or lost */
};

/* One message to publish, kept until the broker confirms it. */
typedef struct chorus__pub_s {
    struct chorus__pub_s *next;     /* resend list */
    amqp_pool_t pool;               /* properties, headers, names */
    amqp_basic_properties_t props;
    amqp_bytes_t body;              /* malloc'd */
    amqp_bytes_t exchange;          /* in pool */
    amqp_bytes_t routing_key;       /* in pool */
    bool mandatory;
    bool returned;
    chorus_envelope_t *env;         /* for the delivery report; may be NULL */
    void *msg_opaque;
    chorus__waiter_t *waiter;       /* who waits for it; NULL: nobody */
    /* An outbox row's publish: told how it settled (marks it published);
     * with neither, it is the application's (delivery report). */
    void (*done)(chorus_t *ch, struct chorus__pub_s *p, chorus_err_t res);
} chorus__pub_t;

struct chorus_delivery_s {
    struct chorus_delivery_s *next;
    chorus_t *ch;
    chorus__dstate_t state;         /* batch.c: what became of it */
    uint64_t tag;
    bool redelivered;
    char *routing_key;
    amqp_message_t msg;             /* properties (in msg.pool) and body */
    chorus_envelope_t *env;
    int attempt;
    const char *reason;             /* fault reason when dead-lettered */
    char error[512];
    chorus_envelope_t **emitted;    /* plain: its events, published after it */
    size_t nemitted, capemitted;
    chorus__waiter_t w;             /* its retry / DLQ / emitted publishes */
    const chorus__handler_t *hd;    /* its handler, once decoded */
    chorus_tx_t *tx;                /* durable: its batch's transaction, while handled */
    bool fresh;                     /* durable: the batch's inbox claim was its first */
    long runs;                      /* durable: handler runs so far (conflicts) */
    bool ran;                       /* durable: the handler ran in this run */
    bool bad_emit;                  /* plain: an emitted event broke its schema */
    size_t row_from, nrows;         /* durable: its events among the batch's rows */
    uint64_t gen;                   /* consume generation it came with */
    int64_t handled_ms;             /* wall clock when handling started */
};

/* Deliveries handled and acked together (batch.c has the states). */
typedef struct chorus__batch_s {
    struct chorus__batch_s *next;   /* in flight, oldest first */
    chorus__bstate_t state;
    chorus_delivery_t *head;
    size_t n;
    chorus_tx_t tx;                 /* durable: the transaction being run */
    chorus_delivery_t *resume;      /* durable: the first not committed yet */
    chorus__row_t *rows;            /* durable: committed events, to publish */
    size_t nrows, caprows;
    int64_t due_ms;                 /* monotonic: its confirms are late after this */
    bool alone;                     /* no other batch is handled until it is acked */
} chorus__batch_t;

/*
 * What the connection (amqp_conn.c) reports to its owner.  The connection
 * knows AMQP only; everything above it -- topology, consuming, the
 * backlog, the publisher -- is the owner's, reached through these.  A hook
 * never waits and never reads frames.
 */
typedef struct {
    /* Channel @p n (0: the whole new connection) is open: declare what the
     * owner needs on it (and consume, on the consume channel). */
    chorus_err_t (*ready)(chorus_t *ch, amqp_channel_t n, char *err, size_t size);
    /* ... and, once ready, what waited for it may go (publishes to resend). */
    void (*reopened)(chorus_t *ch, amqp_channel_t n);
    /* What was under way on channel @p n (0: the connection) is gone. */
    void (*reset)(chorus_t *ch, amqp_channel_t n);
    /* A delivery read whole; @p msg is taken. */
    chorus_err_t (*deliver)(chorus_t *ch, uint64_t tag, bool redelivered, const char *routing_key,
                            amqp_message_t *msg);
    /* One was rejected to the DLQ unread (too large, or not holdable). */
    void (*refused)(chorus_t *ch);
    void (*confirm)(chorus_t *ch, uint64_t tag, bool multiple, bool nack);
    void (*returned)(chorus_t *ch, const amqp_message_t *msg);
} chorus__conn_hooks_t;

/*
 * The transport under a participant: the AMQP connection (amqp_conn.c), or
 * the simulation's in-memory broker (sim.c, "transport=simulation").  Above
 * it nothing differs: the same hooks report deliveries, confirms, returns
 * and losses, the same consumer, publisher, store and handlers run.
 * Every operation is called with the connection lock held except open and
 * close, which take it.  AMQP statuses: AMQP_STATUS_OK or a failure (the
 * caller then loses the connection).
 */
typedef struct chorus__link_s {
    const char *name;
    bool (*up)(const chorus_t *ch);                     /* connected */
    chorus_err_t (*open)(chorus_t *ch);                 /* connect, hooks.ready, resend */
    void (*close)(chorus_t *ch);                        /* an orderly close */
    void (*lost)(chorus_t *ch, const char *why);        /* drop it, hooks.reset(0) */
    chorus_err_t (*dispatch)(chorus_t *ch, int timeout_ms); /* as chorus__dispatch() */
    int (*fd)(const chorus_t *ch);
    bool (*buffered)(const chorus_t *ch);
    int (*frame_max)(const chorus_t *ch);
    chorus_err_t (*declare)(chorus_t *ch, char *err, size_t size); /* ch->topo */
    chorus_err_t (*consume)(chorus_t *ch, const char *tag, char *err, size_t size);
    chorus_err_t (*cancel)(chorus_t *ch, const char *tag, char *err, size_t size);
    int (*publish)(chorus_t *ch, const chorus__pub_t *p);
    int (*ack)(chorus_t *ch, uint64_t tag, bool multiple);
    int (*nack)(chorus_t *ch, uint64_t tag, bool requeue);
    void (*release)(chorus_t *ch);                      /* idle: give buffers back */
    bool heartbeats;                                    /* needs the heartbeat thread */
    /* debug.crash.point reached: the process dies (AMQP: SIGKILL), or the
     * simulated participant stops taking part, from this instant on. */
    void (*crash)(chorus_t *ch, const char *point);
    /* A handler's effects committed for @p env (NULL: nobody counts). */
    void (*handled)(chorus_t *ch, const chorus_envelope_t *env);
    /* PostgreSQL connections from a pool (NULL: libpq each time): a
     * connection given back, reset to a new session, or NULL to open one;
     * and one the store is done with (the pool may keep it). */
    PGconn *(*pg_take)(chorus_t *ch);
    void (*pg_give)(chorus_t *ch, PGconn *pg);
} chorus__link_t;

extern const chorus__link_t chorus__amqp_link;

/* Every counter (stats.c lists them by name; chorus_stats_t is the first
 * twelve, for compatibility). */
typedef struct {
    uint64_t handled, duplicates, retried, dead_lettered, published, nacked, returned,
        reconnects, handler_ns, propagation_ms, conflicts, relayed;
    uint64_t batches, transactions, careful_runs, store_reconnects, splits;
    uint64_t blocked_periods, blocked_ms; /* connection.blocked (by name only) */
} chorus__stats_t;

struct chorus_s {
    chorus_conf_t *conf;
    char service[65];
    chorus__url_t urls[CHORUS__MAX_URLS];
    int nurls;
    chorus_envelope_limits_t limits;
    size_t max_decoded;             /* message.max.decoded.bytes */
    size_t batch_max_decoded;       /* consume.batch.max.decoded.bytes */
    int delivery_limit;             /* consume.delivery.limit */
    chorus_saga_t *saga;            /* saga.file, kept from chorus_start() */
    chorus__retry_schedule_t retry;
    chorus__topology_t topo;
    char **bindings;
    int nbindings;

    chorus__handler_t *handlers;
    size_t nhandlers;

    /* connection */
    const chorus__link_t *link;     /* AMQP unless the simulation's */
    void *link_opaque;              /* the simulation's participant */
    chorus__conn_hooks_t hooks;     /* set by chorus_new() */
    pthread_mutex_t conn_lock;
    amqp_connection_state_t st;     /* NULL while disconnected */
    bool consuming;
    uint64_t consume_gen;           /* bumped by every basic.consume */
    bool blocked;                   /* connection.blocked from the broker */
    int64_t blocked_since_ms;       /* mono clock of the last connection.blocked */
    bool need_redeclare;            /* a publish came back unroutable */
    bool started;
    chorus__backoff_t reconnect;    /* amqp.reconnect.backoff.* */
    /* Deliveries whose publishes the broker refused, given back only when
     * due: a quorum queue without a leader (a node lost) refuses for a
     * while, and an immediate return would use up the delivery limit in a
     * loop.  The delay doubles while refusals go on (pubfail).  Their tags
     * stay valid as long as the consume channel (a new basic.consume on it
     * included); losing the channel forgets them (chorus__consumer_lost). */
    struct chorus__held_s {
        uint64_t tag; /* on the consume channel; forgotten when it goes */
        int64_t due_ms;
    } *held;
    int nheld, capheld;
    chorus__backoff_t pubfail;
    int heartbeat_s;
    char conn_name[160];
    char conn_user[256];            /* the broker user of the connection */
    char conn_where[300];           /* and its broker: host:port/vhost */

    pthread_t hb_thread;
    bool hb_started;
    atomic_bool hb_stop;
    atomic_int_fast64_t last_io_ms;

    volatile sig_atomic_t stop;

    /* publishing */
    chorus__confirms_t confirms;
    chorus__pub_t *resend_head, *resend_tail; /* unconfirmed, to publish again */
    size_t outq;                    /* publishes not yet reported */
    size_t window;

    /* consuming */
    chorus_delivery_t *backlog_head, *backlog_tail;
    size_t backlog_len;
    int batch_max;
    chorus__batch_t *inflight;      /* batches not yet acked, oldest first */
    size_t ninflight;
    bool draining;                  /* stopping: no new batch is taken */

    /* durable participants (store.type = postgres) */
    chorus__store_t store;
    chorus__upcaster_t *upcasters;
    size_t nupcasters;
    const char *crash_point;        /* debug.crash.point */
    unsigned mutations;             /* debug.mutation (CHORUS__MUT_*) */

    chorus__stats_t stats;
    chorus__hist_t hist[CHORUS__NHIST]; /* handler time, propagation delay */
    struct chorus__metrics_s *metrics;  /* metrics.listen: the endpoint, or NULL */
    char last_error[512];           /* chorus_last_error() */
    char last_sqlstate[6];
};

/* security.user.template @p tmpl with {namespace} and {service} replaced:
 * a service's broker user; malloc'd, NULL when out of memory. */
char *chorus__expand_user(const char *tmpl, const char *ns, const char *service);

/* Records why something failed, for chorus_last_error() (and logs it). */
void chorus__fail(chorus_t *ch, const char *sqlstate, const char *fmt, ...) CHORUS_PRINTF(3, 4);

/* log.c */
void chorus__log(const chorus_t *ch, int level, const char *fmt, ...)
    CHORUS_PRINTF(3, 4);
void chorus__log_env(const chorus_t *ch, int level, const chorus_envelope_t *env,
                     const char *fmt, ...) CHORUS_PRINTF(4, 5);

/* amqp_conn.c */
/* How a connection is opened: the same for participants and tools. */
typedef struct {
    long connect_ms, handshake_ms, rpc_ms; /* amqp.*.timeout.ms */
    int heartbeat_s;
    const char *name;                      /* connection_name */
    struct {                               /* amqp.tls.*: for amqps:// URLs */
        const char *ca_file, *cert_file, *key_file, *server_name; /* "" or NULL: none */
        bool verify_peer, verify_hostname;
    } tls;
} chorus__amqp_opts_t;
void chorus__amqp_opts_from_conf(const chorus_conf_t *conf, const char *name,
                                 chorus__amqp_opts_t *o);
/* TCP connect (bounded) and login to one broker; *stp is set even on
 * failure (for the caller to destroy). */
chorus_err_t chorus__amqp_login(const chorus__url_t *u, const chorus__amqp_opts_t *o,
                                amqp_connection_state_t *stp, char *err, size_t size);
/* amqp_tls.c */
/* A TLS socket for @p st, connected to u's host and port with the
 * handshake done (within o->connect_ms), the broker's certificate checked
 * as o->tls says.  CHORUS_ERR_TLS for a refused certificate or bad TLS
 * files, with the cause in err. */
chorus_err_t chorus__tls_open(amqp_connection_state_t st, const chorus__url_t *u,
                              const chorus__amqp_opts_t *o, char *err, size_t size);
/* The transport's operations (see chorus__link_t). */
static inline bool chorus__up(const chorus_t *ch) { return ch->link->up(ch); }
/* amqp_conn.c: the end of a connection.blocked period. */
void chorus__set_unblocked(chorus_t *ch, const char *why);
static inline chorus_err_t chorus__conn_open(chorus_t *ch) { return ch->link->open(ch); }
static inline void chorus__conn_lost(chorus_t *ch, const char *why) { ch->link->lost(ch, why); }
/* The next reconnect after the current backoff (with jitter); doubles it. */
void chorus__schedule_reconnect(chorus_t *ch);
static inline void chorus__conn_close(chorus_t *ch) { ch->link->close(ch); }
chorus_err_t chorus__hb_start(chorus_t *ch);
void chorus__hb_stop(chorus_t *ch);
/* Reads and dispatches frames for up to timeout_ms (0: only what is
 * buffered).  Deliveries go to the backlog.  Returns CHORUS_ERR_TIMEOUT when
 * nothing arrived, CHORUS_OK when something was dispatched, or
 * CHORUS_ERR_CONN_CLOSED after the connection was lost (already cleaned). */
static inline chorus_err_t chorus__dispatch(chorus_t *ch, int timeout_ms) {
    return ch->link->dispatch(ch, timeout_ms);
}
/* Keeps reading until no frame is buffered (a bounded number of frames). */
void chorus__dispatch_drain(chorus_t *ch);
/* The connection's socket (-1 when disconnected), and whether frames or
 * bytes are already buffered (a wait on the socket would not see them). */
static inline int chorus__conn_fd(const chorus_t *ch) { return ch->link->fd(ch); }
static inline bool chorus__conn_buffered(const chorus_t *ch) { return ch->link->buffered(ch); }
/* Declares the topology again when a publish found something missing
 * (deleted behind our back); lock held.  Loses the connection on failure. */
void chorus__redeclare_if_needed(chorus_t *ch);
void chorus__lock(chorus_t *ch);
void chorus__unlock(chorus_t *ch);

/* publisher.c */
chorus__pub_t *chorus__pub_new(void);
void chorus__pub_destroy(chorus__pub_t *p);
/* Fills exchange, routing key, body and properties from an envelope. */
chorus_err_t chorus__pub_from_envelope(chorus_t *ch, chorus__pub_t *p,
                                       chorus_envelope_t *env, const char *exchange,
                                       const char *routing_key);
/* Sends it on the publish channel and tracks its confirm; lock held.
 * CHORUS_ERR_STATE / CHORUS_ERR_NOMEM / CHORUS_ERR_TOO_LARGE (its
 * properties do not fit a frame: nothing was sent): not taken, the caller
 * still owns @p p.  Otherwise the publisher owns it (a loss while sending
 * settles it). */
chorus_err_t chorus__pub_send(chorus_t *ch, chorus__pub_t *p);
void chorus__on_confirm(chorus_t *ch, uint64_t tag, bool multiple, bool nack);
void chorus__on_return(chorus_t *ch, const amqp_message_t *msg);
/* The same with the envelope already serialized: @p json (malloc'd) is
 * taken on success. */
chorus_err_t chorus__pub_fill(chorus_t *ch, chorus__pub_t *p, chorus_envelope_t *env, char *json,
                             size_t len, const char *exchange, const char *routing_key);
/* Parses a stored envelope and makes a publish of it (outbox rows). */
chorus__pub_t *chorus__pub_from_text(chorus_t *ch, const char *json, size_t len,
                                     const char *routing_key, size_t rk_len);
/* After a lost publish channel: unconfirmed publishes of deliveries fail
 * (those deliveries come again); free-standing ones are queued to resend. */
void chorus__publisher_reset(chorus_t *ch);
void chorus__publisher_resend(chorus_t *ch);
void chorus__publisher_destroy(chorus_t *ch);
/* Waits, reading frames, until @p done(ch, arg) or the deadline. */
chorus_err_t chorus__wait_until(chorus_t *ch, int64_t deadline_ms,
                                bool (*done)(chorus_t *, void *), void *arg);

/* consumer.c */
/* The connection's hooks for deliveries (see chorus__conn_hooks_t). */
chorus_err_t chorus__consumer_deliver(chorus_t *ch, uint64_t tag, bool redelivered,
                                      const char *routing_key, amqp_message_t *msg);
void chorus__consumer_refused(chorus_t *ch);
/* Moves the batches in flight on (settled ones acked, oldest first) and
 * handles a new one from the backlog when there is room.  Never waits. */
void chorus__consumer_process(chorus_t *ch);
/* Whether a batch waits for confirms (the poll then reads frames). */
bool chorus__consumer_waiting(const chorus_t *ch);
/* When the oldest confirm wait runs out (monotonic ms; INT64_MAX: none). */
int64_t chorus__consumer_due(const chorus_t *ch);
/* Gives back the held deliveries that are due (nack, requeue). */
void chorus__consumer_release_held(chorus_t *ch);
/* The connection or consume channel is gone: batches in flight are void. */
void chorus__consumer_lost(chorus_t *ch);
/* Whether another batch may be taken now. */
bool chorus__consumer_room(const chorus_t *ch);
void chorus__consumer_free(chorus_t *ch);
void chorus__delivery_free(chorus_delivery_t *d);
void chorus__backlog_clear(chorus_t *ch);
chorus_err_t chorus__consume_start(chorus_t *ch);
/* Stops / resumes consuming while the store is down. */
void chorus__consume_pause(chorus_t *ch);
void chorus__consume_resume(chorus_t *ch);
/* Test hook (debug.crash.point): dies with SIGKILL at the named point (a
 * simulated participant stops there instead: chorus__link_t.crash). */
void chorus__crash_point(chorus_t *ch, const char *point);

/* debug.mutation: defects the simulation must find, switched on by tests. */
#define CHORUS__MUT_PIVOT_UNSAFE 1u   /* "pivot-unsafe": the pivot accepts every request */
#define CHORUS__MUT_NO_OVERTAKE 2u    /* "no-overtake-guard": a cancelled action runs */
#define CHORUS__MUT_INBOX_BYPASS 4u   /* "inbox-bypass": no inbox, no once-per-saga record */
static inline bool chorus__mutated(const chorus_t *ch, unsigned m) {
    return (ch->mutations & m) != 0;
}

/* header helpers (publisher.c) */
amqp_table_entry_t *chorus__table_find(const amqp_table_t *t, const char *key);
long long chorus__table_int(const amqp_table_t *t, const char *key, long long dflt);

#endif
