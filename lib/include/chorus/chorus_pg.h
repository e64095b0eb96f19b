/*
 * chorus_pg.h - durable participants: the PostgreSQL side of chorus.
 *
 * Kept apart from chorus.h because it exposes libpq's PGconn (a handler
 * runs its own SQL in the participant's transaction) and cJSON (upcasters
 * rewrite event data).
 *
 * A participant whose "store.type" is "postgres" handles the deliveries
 * already waiting (a batch) in one PostgreSQL transaction:
 *
 *   BEGIN
 *     INSERT inbox (event_id, consumer) for the batch -- already there:
 *                                              duplicate, acked and skipped
 *     handler(...)                          -- its own SQL (chorus_tx_exec),
 *                                              in a savepoint of its own
 *     outbox rows for emitted events        -- chorus_emit / chorus_tx_emit
 *   COMMIT
 *   publish the outbox rows with confirms, ack; marked published later
 *
 * A handler whose own SQL fails (or that returns anything but
 * CHORUS_HANDLED) is undone alone: its savepoint, its inbox row, its
 * events.  Statements whose results nobody waits for go out with the next
 * one that is needed (one round trip), and statement texts that repeat
 * are prepared once per connection, handlers' included.  An outbox relay
 * publishes rows left unpublished (after a crash, or written by a
 * command-line tool) at start-up, periodically and on LISTEN/NOTIFY.
 *
 * Thread safety: as chorus.h; a chorus_tx_t belongs to the thread that
 * began it (or to the handler it was given to).
 */
#ifndef CHORUS_PG_H
#define CHORUS_PG_H

#include <libpq-fe.h>

#include "chorus.h"
#include "chorus_json.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Transactions
 * ---------------------------------------------------------------------- */
typedef struct chorus_tx_s chorus_tx_t;

/* The transaction a handler runs in (store.type=postgres); NULL otherwise.
 * Borrowed: valid until the handler returns. */
CHORUS_API chorus_tx_t *chorus_delivery_tx(chorus_delivery_t *d);

/*
 * A transaction outside any delivery, e.g. for a command ("PlaceOrder")
 * received from a command line.  Connects to PostgreSQL (and migrates the
 * schema) on first use; does not need chorus_start().  Events emitted in it
 * are written to the outbox; chorus_tx_commit() publishes them when the
 * participant is started, otherwise the relay of a running instance
 * publishes them (it is woken by NOTIFY).
 */
CHORUS_API chorus_err_t chorus_tx_begin(chorus_t *ch, chorus_tx_t **txp);
/*
 * Commits and frees @p tx.  CHORUS_OK: committed.  CHORUS_ERR_COMMIT_UNKNOWN:
 * the connection was lost after COMMIT may have reached the server, so the
 * transaction may or may not have committed -- never report it as failed;
 * a command that recorded an idempotency key (chorus_tx_idempotent) can be
 * repeated with the same key to find out, safely.  CHORUS_ERR_CONFLICT,
 * CHORUS_ERR_DB, CHORUS_ERR_CONN_CLOSED: not committed.
 */
CHORUS_API chorus_err_t chorus_tx_commit(chorus_tx_t *tx);
CHORUS_API void chorus_tx_rollback(chorus_tx_t *tx);

/*
 * Makes a command idempotent: records in @p tx that the command with
 * idempotency key @p key (1 to 200 bytes, chosen by whoever issues the
 * command, e.g. a UUID it keeps) was done, with @p result (what the caller
 * would report: the id of what it created).  CHORUS_OK when the key is new:
 * do the work in @p tx and commit.  CHORUS_ERR_DUPLICATE when a committed
 * transaction recorded the key before: its result is copied into @p prev
 * (truncated to @p prev_size); roll back and report that result -- the
 * work is done already.  So repeating a command after
 * CHORUS_ERR_COMMIT_UNKNOWN never does it twice.  Keys are kept for
 * "store.inbox.retention.hours".
 */
CHORUS_API chorus_err_t chorus_tx_idempotent(chorus_tx_t *tx, const char *key, const char *result,
                                             char *prev, size_t prev_size);

/* The connection, inside the open transaction: run parameterized SQL on it
 * (PQexecParams); never COMMIT, ROLLBACK or close it, nor leave it in
 * pipeline mode.  chorus_tx_exec() is cheaper: it prepares repeated
 * statements and sends chorus' queued ones along. */
CHORUS_API PGconn *chorus_tx_pg(chorus_tx_t *tx);

/*
 * A parameterized statement on the transaction, with the outcome
 * classified: CHORUS_OK (and *resp, when not NULL, the result for the
 * caller to PQclear), or CHORUS_ERR_CONFLICT for a unique violation,
 * serialization failure or deadlock (chorus runs the handler again, a
 * bounded number of times), or CHORUS_ERR_DB with the message logged
 * (chorus_tx_sqlstate() and chorus_tx_error_message() say what failed).
 * A text used twice on a connection runs as a prepared statement from
 * then on: pass values as parameters, never in the text.
 */
CHORUS_API chorus_err_t chorus_tx_exec(chorus_tx_t *tx, const char *sql, int nparams,
                                       const char *const *params, PGresult **resp);

/* The last failure in @p tx: its SQLSTATE ("" when the connection was lost
 * without one) and the server's message (first line); NULL when nothing
 * failed.  Valid until the next statement in @p tx. */
CHORUS_API const char *chorus_tx_sqlstate(const chorus_tx_t *tx);
CHORUS_API const char *chorus_tx_error_message(const chorus_tx_t *tx);

/* Emits an event in @p tx (outbox row in the same transaction).  Inside a
 * handler, chorus_emit() is the same with correlation and causation filled
 * in.  Takes ownership of @p env. */
CHORUS_API chorus_err_t chorus_tx_emit(chorus_tx_t *tx, chorus_envelope_t *env);

/* ------------------------------------------------------------------------
 * Durable timers: an event emitted later, armed with the effects that
 * asked for it
 * ---------------------------------------------------------------------- */

/*
 * Arms the timer @p key (1-200 bytes, unique in the participant's schema)
 * to emit @p env at @p fire_at_ms (wall clock, ms since the epoch; past
 * times fire at once), in @p tx: armed only if @p tx commits.  Arming a
 * key again replaces its time and event.  The event fires once, from one
 * instance of the service (the one polling first), at most
 * "store.timer.interval.ms" late, through the outbox; its event_id is
 * fixed now.  Inside a handler it carries the delivery's correlation,
 * causation and deadline.  Takes ownership of @p env.
 */
CHORUS_API chorus_err_t chorus_timer_schedule(chorus_tx_t *tx, const char *key,
                                              int64_t fire_at_ms, chorus_envelope_t *env);
/* Disarms @p key (if it has not fired), in @p tx.  Unknown keys are fine. */
CHORUS_API chorus_err_t chorus_timer_cancel(chorus_tx_t *tx, const char *key);

/*
 * Asks the saga instance @p correlation_id to cancel, in @p tx: emits the
 * declaration's cancellation request (data {"reason": ...}) to the pivot,
 * which answers "accepted" (earlier steps compensate) or "refused" (it
 * already ran; the saga completes).  CHORUS_ERR_STATE when the saga
 * declares no "cancellation" or this service is not its "requested_by".
 * Asking twice is harmless.
 */
CHORUS_API chorus_err_t chorus_saga_cancel(chorus_tx_t *tx, const char *correlation_id,
                                           const char *aggregate_id, const char *reason);

/* ------------------------------------------------------------------------
 * Upcasting: old event data read as the current schema version
 * ---------------------------------------------------------------------- */

/*
 * Rewrites @p data (schema version @p from) in place to version from + 1.
 * Return CHORUS_OK, or an error to refuse the event (it is then
 * dead-lettered as malformed when it came from the broker).
 */
typedef chorus_err_t(chorus_upcast_fn)(cJSON *data, int from, void *opaque);

/* Registers the step from @p from_version to from_version + 1 for
 * @p event_type.  Steps chain: 1 -> 2 -> 3.  Applied to deliveries before
 * the handler sees them and to events read from the event store; the
 * stored original is never changed.  Only before chorus_start(). */
CHORUS_API chorus_err_t chorus_register_upcaster(chorus_t *ch, const char *event_type,
                                                 int from_version, chorus_upcast_fn *fn,
                                                 void *opaque);

/* ------------------------------------------------------------------------
 * Event store
 * ---------------------------------------------------------------------- */

/* How an aggregate is rebuilt from its events. */
typedef struct chorus_aggregate_type_s {
    const char *name;   /* "Order": stored as aggregate_type */
    /* Applies one event (already upcast) to @p state. */
    chorus_err_t (*apply)(void *state, const chorus_envelope_t *ev, void *opaque);
    /* The state as JSON for a snapshot (malloc'd), or NULL for none. */
    char *(*snapshot)(const void *state, void *opaque);
    /* Restores @p state (freshly initialised by the caller) from a snapshot. */
    chorus_err_t (*restore)(void *state, const char *json, void *opaque);
    void *opaque;
} chorus_aggregate_type_t;

/*
 * Loads aggregate @p aggregate_id into @p state (initialised by the caller):
 * the latest snapshot, then the events after it, in version order.
 * *versionp receives the aggregate's version (0 when it has no events).
 * With @p as_of_ms >= 0, only events created at or before that instant
 * count ("state as of time T"); -1 means now.
 */
CHORUS_API chorus_err_t chorus_es_load(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                                       const char *aggregate_id, void *state,
                                       int64_t *versionp, int64_t as_of_ms);

/*
 * Appends @p env (taken) to the aggregate as version expected_version + 1
 * (the envelope's version is set to that), applies it to @p state, writes a
 * snapshot when the new version is a multiple of "store.snapshot.every",
 * and emits it (outbox).  CHORUS_ERR_CONFLICT when another writer got that
 * version first: inside a handler chorus then runs the handler again at
 * once, with a fresh transaction savepoint.
 */
CHORUS_API chorus_err_t chorus_es_append(chorus_tx_t *tx, const chorus_aggregate_type_t *type,
                                         void *state, int64_t expected_version,
                                         chorus_envelope_t *env);

/*
 * Replays every stored event, in global order, to @p fn (upcast), for
 * rebuilding projections; stops early when fn returns non-zero.
 */
typedef int(chorus_replay_fn)(chorus_tx_t *tx, const chorus_envelope_t *ev, void *opaque);
CHORUS_API chorus_err_t chorus_es_replay(chorus_tx_t *tx, const char *aggregate_type,
                                         chorus_replay_fn *fn, void *opaque);

#ifdef __cplusplus
}
#endif
#endif /* CHORUS_PG_H */
