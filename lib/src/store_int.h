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
#include "backoff_int.h"
#include "sql_int.h"

typedef struct chorus__waiter_s chorus__waiter_t;

/* An emitted event waiting in memory for its transaction's commit: one
 * multi-row INSERT writes a transaction's rows, and after COMMIT they are
 * published from here, not read back. */
typedef struct {
    chorus_envelope_t *env;
    char *json;           /* serialized envelope: the row's and the message's body */
    size_t len;
    char routing_key[256];
} chorus__row_t;

/* Event ids whose publish was confirmed, to be marked published in the
 * next transaction (or by the idle poll). */
typedef struct {
    char (*ids)[37];
    size_t n, cap;
} chorus__marks_t;

typedef struct {
    PGconn *pg;           /* transactions */
    chorus__sql_t sql;    /* its statements: prepared, pipelined */
    PGconn *listen;       /* LISTEN chorus_outbox */
    char schema[64];
    char channel[128];    /* NOTIFY channel: "chorus_outbox_<schema>" */
    bool up;              /* both connections usable */
    bool enabled;         /* store.type = postgres */
    chorus__backoff_t retry; /* store.reconnect.backoff.max.ms */
    int64_t next_relay_ms;
    int64_t next_prune_ms;
    int64_t next_timer_ms;       /* monotonic: the next look for due timers */
    int64_t next_timer_wall_ms;  /* wall clock: a timer this process armed */
    bool relay_wanted;    /* NOTIFY arrived or rows left behind */
    chorus__marks_t marks;  /* confirmed, not yet marked published */
    bool paused;          /* consumer cancelled while the store is down */
    bool unreachable;     /* the last connect found no server answering (or one
                           * not accepting connections yet): worth waiting for */
} chorus__store_t;

struct chorus_tx_s {
    chorus_t *ch;
    PGconn *pg;                  /* borrowed from the store */
    chorus__sql_t *sql;          /* the store's statement session */
    struct chorus_delivery_s *d; /* the delivery being handled in it, or NULL */
    bool conflict;               /* a conflict happened: run the handler again */
    bool failed;                 /* an SQL error aborted the (sub)transaction */
    bool broken;                 /* ... outside any savepoint: the whole transaction */
    bool lost;                   /* the connection died */
    bool own;                    /* begun by chorus_tx_begin() */
    bool internal;               /* chorus' own (timers): publishes without waiting */
    bool careful;                /* every delivery in a savepoint from its start */
    bool savepoint;              /* the current delivery's savepoint is set (or queued) */
    bool lock_bounded;           /* lock waits end after store.lock.wait.ms from here on */
    bool keyed;                  /* recorded an idempotency key */
    bool too_large;              /* an emitted event exceeds message.max.bytes */
    bool invalid_emit;           /* an emitted event's data breaks its declared schema */
    int saga_emit;               /* chorus__emit_t: what the handler's events say of its step */
    chorus__row_t *rows;         /* emitted in it, written at commit */
    size_t nrows, caprows;
    size_t rows_mark;            /* the current delivery's rows start here */
    chorus__marks_t marking;     /* marks sent with it: kept only if it commits */
    chorus__sql_err_t err;       /* its last SQL failure (chorus_tx_sqlstate) */
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
/* One statement on the store's transaction connection, outside any
 * transaction (through its statement session: prepared when repeated). */
chorus_err_t chorus__store_exec(chorus_t *ch, const char *sql, int n, const char *const *params,
                                PGresult **resp, bool *lost);
/* The migrations, in order (exposed for the unit test). */
extern const char *const chorus__migrations[];
extern const int chorus__nmigrations;

/*
 * The durable layers, each calling only those below it:
 *
 *   emit.c     every emitted event: contract, saga, row; due timers
 *   timer.c    timer rows (arm, cancel)
 *   outbox.c   rows: written at COMMIT, published from memory; the relay;
 *              the application's transactions (chorus_tx_begin/commit)
 *   inbox.c    claims
 *   tx.c       a transaction and the published marks it carries
 *   sql.c      statements, prepared and pipelined
 */

/* tx.c */
/* A transaction for a batch of deliveries (store up; BEGIN queued, sent
 * with its first statement, and with it the published marks). */
chorus_err_t chorus__tx_open(chorus_t *ch, chorus_tx_t *tx, bool careful);
/* chorus' own statement in @p tx: no savepoint of its own; a failure is
 * noted (outside a savepoint it breaks the transaction). */
chorus_err_t chorus__tx_exec(chorus_tx_t *tx, const char *sql, int n,
                             const char *const *params, PGresult **resp);
/* The same, queued: sent with the next statement that is needed. */
void chorus__tx_defer(chorus_tx_t *tx, const char *sql, int n, const char *const *params);
/* A delivery's part of a batch transaction: enter, then keep or undo. */
/* @p later: an earlier delivery of this transaction may hold row locks,
 * so this one must not wait for a lock for long (see tx.c). */
void chorus__tx_enter(chorus_tx_t *tx, struct chorus_delivery_s *d, bool later);
void chorus__tx_keep(chorus_tx_t *tx);
void chorus__tx_undo(chorus_tx_t *tx);
/* COMMITs with what is queued, in one round trip; CHORUS_ERR_CONFLICT on a
 * serialization failure, CONN_CLOSED when lost (its outcome unknown).
 * Rolls back a failed or broken transaction instead. */
chorus_err_t chorus__tx_finish(chorus_tx_t *tx);
void chorus__tx_abort(chorus_tx_t *tx);
/* Frees what @p tx holds (rows, marks: given back to the store). */
void chorus__tx_clear(chorus_tx_t *tx);
/* Records that an operation in @p tx failed as @p err says. */
void chorus__tx_note(chorus_tx_t *tx, const chorus__sql_err_t *err);
void chorus__row_free(chorus__row_t *r);
/* Published marks: event ids whose confirm came, marked published by the
 * next transaction (chorus__tx_open) or, when idle, now. */
bool chorus__marks_reserve(chorus__marks_t *m, size_t n);
void chorus__marks_free(chorus__marks_t *m);
void chorus__marks_flush(chorus_t *ch);

/* inbox.c */
/* 1: first time (row inserted), 0: duplicate, -1: error (tx noted). */
int chorus__inbox_claim(chorus_tx_t *tx, const char *event_id);
/* The inbox rows of a whole batch in one statement, in a stable order (no
 * two instances wait on each other's rows in a circle): fresh[i] true for
 * the first copy of an event not handled before.  False on an error. */
bool chorus__inbox_claim_all(chorus_tx_t *tx, const char *const *ids, size_t n, bool *fresh);
/* Takes back a claim made by chorus__inbox_claim_all() (queued). */
void chorus__inbox_unclaim(chorus_tx_t *tx, const char *event_id);
void chorus__inbox_prune(chorus_t *ch);

/* outbox.c */
/* Keeps the outbox row for @p env (taken, already through chorus__emit's
 * checks) in @p tx, written at commit. */
chorus_err_t chorus__outbox_add(chorus_tx_t *tx, chorus_envelope_t *env);
/* Queues the multi-row INSERT of rows [from, tx->nrows) in @p tx. */
void chorus__outbox_write(chorus_tx_t *tx, size_t from);
/* The rows' INSERT and the COMMIT, in one round trip (chorus__tx_finish). */
chorus_err_t chorus__outbox_commit(chorus_tx_t *tx);
/* Makes the publish of a committed row (taken); NULL when it cannot be
 * made (the row stays for the relay).  Its confirm marks it published. */
struct chorus__pub_s *chorus__outbox_pub(chorus_t *ch, chorus__row_t *row);
/* After a command's COMMIT: its rows (taken) to the publisher, and, when
 * @p wait, their confirms waited for (the application's own call). */
void chorus__outbox_publish_committed(chorus_t *ch, chorus__row_t *rows, size_t n, bool wait);
/* Hands committed rows (taken) to the publisher, @p w waiting for their
 * confirms (NULL: nobody); how many were sent. */
int chorus__outbox_send(chorus_t *ch, chorus__row_t *rows, size_t n, chorus__waiter_t *w);
/* Relay duty from chorus_poll(): NOTIFYs, the interval, retention; the
 * rows left behind are handed to the publisher, marked when confirmed.
 * @p idle: no batch is under way (confirmed rows are marked now). */
void chorus__relay_poll(chorus_t *ch, bool idle);

/* timer.c */
chorus_err_t chorus__timer_arm(chorus_tx_t *tx, const char *key, int64_t fire_at_ms,
                               chorus_envelope_t *env, bool rearm);

/* emit.c */
/* @p env (taken) emitted in @p tx: the flow's ids, the declared data, the
 * saga's bookkeeping, then its outbox row.  A failure is noted on @p tx. */
chorus_err_t chorus__emit(chorus_tx_t *tx, chorus_envelope_t *env);
/* The events chorus writes itself (a cancellation request, the pivot's
 * answers): @p type with data {"reason": @p reason}, in saga instance
 * @p corr when not NULL (else the cause's, filled in on emit). */
chorus_err_t chorus__reason_event(const char *type, const char *aggregate, int64_t version,
                                  const char *corr, const char *reason, chorus_envelope_t **evp);
/* Due timers' events into the outbox (from chorus_poll()). */
void chorus__timers_poll(chorus_t *ch);

/* upcast.c */
/* Upcasts @p env to the newest schema version registered for its type. */
chorus_err_t chorus__upcast(const chorus_t *ch, chorus_envelope_t *env,
                            chorus_error_t **errp);
void chorus__upcasters_free(chorus_t *ch);
/* The newest schema version of @p event_type the registered upcasters
 * reach (1 when none is registered). */
int chorus__upcast_newest(const chorus_t *ch, const char *event_type);

/* "Now" in SQL: PostgreSQL's now(), one clock for every instance -- but a
 * simulation's clock when one is installed (clock.c), passed as parameter
 * @p param (milliseconds, or NULL: then now()).  chorus__sim_now() gives
 * that parameter's value: NULL unless simulated, else written in @p buf. */
#define CHORUS__SQL_NOW(param) "coalesce(to_timestamp(" param "::float8 / 1000), now())"
const char *chorus__sim_now(char *buf, size_t n);

#endif
