/*
 * store_int.h - the PostgreSQL side inside libchorus: connections and
 * migrations (store.c), transactions (tx.c), inbox (inbox.c), outbox and
 * relay (outbox.c), upcasters (upcast.c), event store (eventstore.c).
 *
 * Tables live in the schema "store.schema" (default: the service name) of
 * the database libpq's PG* variables or "store.conninfo" name; every
 * statement is parameterized and runs with search_path set to that schema.
 */
#ifndef CHORUS_STORE_INT_H
#define CHORUS_STORE_INT_H

#include "chorus/chorus_pg.h"
#include "common_int.h"

typedef struct chorus__waiter_s chorus__waiter_t;

typedef struct {
    PGconn *pg;           /* transactions */
    PGconn *listen;       /* LISTEN chorus_outbox */
    char schema[64];
    char channel[128];    /* NOTIFY channel: "chorus_outbox_<schema>" */
    bool up;              /* both connections usable */
    bool enabled;         /* store.type = postgres */
    int64_t next_retry_ms;
    long backoff_ms;
    int64_t next_relay_ms;
    int64_t next_prune_ms;
    int64_t next_timer_ms;       /* monotonic: the next look for due timers */
    int64_t next_timer_wall_ms;  /* wall clock: a timer this process armed */
    bool relay_wanted;    /* NOTIFY arrived or rows left behind */
    bool paused;          /* consumer cancelled while the store is down */
} chorus__store_t;

struct chorus_tx_s {
    chorus_t *ch;
    PGconn *pg;                  /* borrowed from the store */
    struct chorus_delivery_s *d; /* the delivery it runs for, or NULL */
    bool conflict;               /* a conflict happened: run the handler again */
    bool failed;                 /* an SQL error aborted the (sub)transaction */
    bool lost;                   /* the connection died */
    bool own;                    /* begun by chorus_tx_begin() */
    bool keyed;                  /* recorded an idempotency key */
    bool too_large;              /* an emitted event exceeds message.max.bytes */
    bool invalid_emit;           /* an emitted event's data breaks its declared schema */
    int saga_emit;               /* chorus__emit_t: what the handler's events say of its step */
    int64_t *seqs;               /* outbox rows this transaction inserted */
    size_t nseqs, capseqs;
};

typedef struct {
    char *event_type;
    int from;
    chorus_upcast_fn *fn;
    void *opaque;
} chorus__upcaster_t;

/* store.c */
/* Connects (both connections), sets search_path, migrates, LISTENs.
 * On failure logs and schedules a retry with backoff. */
chorus_err_t chorus__store_connect(chorus_t *ch);
void chorus__store_lost(chorus_t *ch, const char *why);
void chorus__store_close(chorus_t *ch);
/* Runs one statement; classifies the outcome like chorus_tx_exec().
 * Sets *lost when the connection is gone. */
chorus_err_t chorus__pg_exec(chorus_t *ch, PGconn *pg, const char *sql, int n,
                             const char *const *params, PGresult **resp, bool *lost);
/* The migrations, in order (exposed for the unit test). */
extern const char *const chorus__migrations[];
extern const int chorus__nmigrations;

/* tx.c */
/* A transaction for a batch of deliveries (store up, BEGIN done). */
chorus_err_t chorus__tx_open(chorus_t *ch, chorus_tx_t *tx);
/* Savepoint helpers for one delivery; false when the connection died. */
bool chorus__tx_savepoint(chorus_tx_t *tx);
bool chorus__tx_release(chorus_tx_t *tx);
bool chorus__tx_rollback_to(chorus_tx_t *tx);
/* COMMIT; CHORUS_ERR_CONFLICT on serialization failure, CONN_CLOSED when
 * lost (the outcome of the commit is then unknown). */
chorus_err_t chorus__tx_finish(chorus_tx_t *tx);
void chorus__tx_abort(chorus_tx_t *tx);
void chorus__tx_clear(chorus_tx_t *tx);
/* Records that an operation in @p tx saw a conflict / an error. */
void chorus__tx_note(chorus_tx_t *tx, chorus_err_t rc, bool lost);

/* inbox.c */
/* 1: first time (row inserted), 0: duplicate, -1: error (tx noted). */
int chorus__inbox_claim(chorus_tx_t *tx, const char *event_id);
void chorus__inbox_prune(chorus_t *ch);

/* outbox.c */
/* Inserts the outbox row for @p env (taken) in @p tx. */
/* The flow's ids an event emitted in @p tx carries: the delivery's, or a
 * flow of its own (its event id as correlation). */
chorus_err_t chorus__tx_adopt(chorus_tx_t *tx, chorus_envelope_t *env);
chorus_err_t chorus__outbox_insert(chorus_tx_t *tx, chorus_envelope_t *env);

/* timer.c */
chorus_err_t chorus__timer_arm(chorus_tx_t *tx, const char *key, int64_t fire_at_ms,
                               chorus_envelope_t *env, bool rearm);
void chorus__timers_poll(chorus_t *ch);
/* Publishes unpublished rows with confirms and marks them published:
 * exactly @p seqs when given (rows a committed transaction just wrote),
 * otherwise the oldest rows left behind (the relay).  Rows another
 * instance holds are skipped (FOR UPDATE SKIP LOCKED).  Returns the number
 * published, or -1 when the store or broker failed. */
int chorus__outbox_flush(chorus_t *ch, const int64_t *seqs, size_t n);
/* Relay duty from chorus_poll(): NOTIFYs, the interval, retention. */
void chorus__relay_poll(chorus_t *ch);

/* upcast.c */
/* Upcasts @p env to the newest schema version registered for its type. */
chorus_err_t chorus__upcast(const chorus_t *ch, chorus_envelope_t *env,
                            chorus_error_t **errp);
void chorus__upcasters_free(chorus_t *ch);
/* The newest schema version of @p event_type the registered upcasters
 * reach (1 when none is registered). */
int chorus__upcast_newest(const chorus_t *ch, const char *event_type);

#endif
