/*
 * chorus.h - choreography sagas for C, on RabbitMQ and PostgreSQL.
 *
 * This is the one public header of libchorus.  It carries no rabbitmq-c,
 * libpq or cJSON type: handlers that need one include the small companion
 * headers (chorus/chorus_json.h) instead.
 *
 * Thread safety: a chorus_t is used by one thread at a time, except where a
 * function says otherwise (chorus_stop() may be called from any thread and
 * from a signal handler).  Configuration and envelope objects are plain
 * values: use each from one thread at a time.
 *
 * Ownership: every *_new has a *_destroy, and *_destroy(NULL) is a no-op.
 * Strings returned by accessors are borrowed from the object they came from
 * and live as long as it does, unless the function says otherwise.
 */
#ifndef CHORUS_H
#define CHORUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CHORUS_API __attribute__((visibility("default")))
#define CHORUS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CHORUS_API
#define CHORUS_PRINTF(f, a)
#endif

#define CHORUS_VERSION_MAJOR 0
#define CHORUS_VERSION_MINOR 1
#define CHORUS_VERSION_PATCH 0
#define CHORUS_VERSION_STR "0.1.0"

/** The library's version string ("0.1.0"). */
CHORUS_API const char *chorus_version(void);

/* ------------------------------------------------------------------------
 * Errors
 *
 * One list; the enum, chorus_strerror() and chorus_err_name() are generated
 * from it.  The list is append-only: a code is never renumbered or reused.
 * ---------------------------------------------------------------------- */
#define CHORUS_ERRNO_MAP(X)                                                  \
    X(OK, "success")                                                         \
    X(INVALID_ARG, "invalid argument")                                       \
    X(NOMEM, "out of memory")                                                \
    X(PARSE, "malformed JSON")                                               \
    X(SCHEMA, "envelope does not match the event contract")                  \
    X(TOO_LARGE, "message exceeds the size limit")                           \
    X(TOO_DEEP, "message exceeds the nesting limit")                         \
    X(BAD_UTF8, "message is not valid UTF-8")                                \
    X(UNKNOWN_CONF, "unknown configuration property")                        \
    X(INVALID_CONF, "invalid configuration value")                           \
    X(BAD_URL, "malformed AMQP URL")                                         \
    X(CONNECT, "could not connect to any broker")                            \
    X(AUTH, "broker refused the credentials")                                \
    X(TIMEOUT, "operation timed out")                                        \
    X(CONN_CLOSED, "connection to the broker was lost")                      \
    X(CHANNEL_CLOSED, "the broker closed the channel")                       \
    X(NACKED, "the broker refused the message (nack)")                       \
    X(UNROUTABLE, "the message could not be routed")                         \
    X(NOT_FOUND, "no such object")                                           \
    X(PRECONDITION, "broker object exists with different arguments")         \
    X(STOPPED, "stopped")                                                    \
    X(STATE, "operation not allowed in this state")                          \
    X(IO, "input/output error")                                              \
    X(DB, "database error")                                                  \
    X(CONFLICT, "concurrent modification (version conflict)")                \
    X(QUEUE_FULL, "too many unconfirmed messages")                           \
    X(NO_HANDLER, "no handler for this event type")                          \
    X(PROTOCOL, "unexpected AMQP frame")                                     \
    X(NOT_IJSON, "message is not I-JSON (RFC 7493)")                         \
    X(COMMIT_UNKNOWN, "the outcome of the commit is unknown")                \
    X(DUPLICATE, "already done: the idempotency key was used before")       \
    X(FORBIDDEN, "the producer may not send this event")                     \
    X(TLS, "TLS with the broker failed (certificate refused or bad TLS files)")

typedef enum chorus_err_e {
#define CHORUS__ERR_ENUM(name, msg) CHORUS_ERR_##name,
    CHORUS_ERRNO_MAP(CHORUS__ERR_ENUM)
#undef CHORUS__ERR_ENUM
    CHORUS_ERR__END
} chorus_err_t;

#define CHORUS_OK CHORUS_ERR_OK

/** A static, human-readable text for @p err; never NULL. */
CHORUS_API const char *chorus_strerror(chorus_err_t err);
/** The code's name without prefix ("TIMEOUT"); never NULL. */
CHORUS_API const char *chorus_err_name(chorus_err_t err);

/*
 * An error object, where the cause matters: a code, a message saying what
 * exactly is wrong, and whether retrying may help.
 */
typedef struct chorus_error_s chorus_error_t;

CHORUS_API chorus_err_t chorus_error_code(const chorus_error_t *e);
/** The detailed message ("field 'version' must be an integer"). */
CHORUS_API const char *chorus_error_string(const chorus_error_t *e);
/** Non-zero when the same operation may succeed later (a broker outage). */
CHORUS_API int chorus_error_is_retriable(const chorus_error_t *e);
CHORUS_API void chorus_error_destroy(chorus_error_t *e);

/* ------------------------------------------------------------------------
 * Logging
 * ---------------------------------------------------------------------- */
enum {
    CHORUS_LOG_ERR = 3,
    CHORUS_LOG_WARNING = 4,
    CHORUS_LOG_NOTICE = 5,
    CHORUS_LOG_INFO = 6,
    CHORUS_LOG_DEBUG = 7
};

/*
 * Called on the thread that logs (the thread using the chorus_t, or the
 * heartbeat thread for heartbeat problems).  @p line is borrowed until the
 * callback returns; it never contains credentials.
 */
typedef void(chorus_log_cb)(int level, const char *service, const char *line,
                            void *opaque);

/* ------------------------------------------------------------------------
 * Configuration
 *
 * Every key is listed, with its default and meaning, in lib/docs/CONFIGURATION.md,
 * which is generated from the same table that validates chorus_conf_set().
 * ---------------------------------------------------------------------- */
typedef struct chorus_conf_s chorus_conf_t;

typedef enum {
    CHORUS_CONF_UNKNOWN = -2, /**< no such key */
    CHORUS_CONF_INVALID = -1, /**< value rejected; errstr says why */
    CHORUS_CONF_OK = 0
} chorus_conf_res_t;

CHORUS_API chorus_conf_t *chorus_conf_new(void);
CHORUS_API chorus_conf_t *chorus_conf_dup(const chorus_conf_t *conf);
CHORUS_API void chorus_conf_destroy(chorus_conf_t *conf);
CHORUS_API chorus_conf_res_t chorus_conf_set(chorus_conf_t *conf,
                                             const char *key, const char *value,
                                             char *errstr, size_t errstr_size);
/** Sets each "key=value" of @p list, separated by ';' (the form of the
 *  CHORUS_CONF variable the sample services and tools read), in order;
 *  stops at the first refusal, which errstr names.  Empty items are
 *  skipped; a value cannot hold ';'. */
CHORUS_API chorus_conf_res_t chorus_conf_set_list(chorus_conf_t *conf, const char *list,
                                                  char *errstr, size_t errstr_size);
/** The current value as text (the default when never set); NULL if unknown. */
CHORUS_API const char *chorus_conf_get(const chorus_conf_t *conf,
                                       const char *key);
CHORUS_API void chorus_conf_set_log_cb(chorus_conf_t *conf, chorus_log_cb *cb,
                                       void *opaque);
/** Writes the documentation of every key, as Markdown, to @p out (a FILE *). */
CHORUS_API void chorus_conf_write_docs(void *out);

/* ------------------------------------------------------------------------
 * Envelopes (the event contract, schema/envelope.schema.json)
 * ---------------------------------------------------------------------- */
typedef struct chorus_envelope_s chorus_envelope_t;

/** Decoding limits; chorus_envelope_limits_default() gives 1 MiB and 32. */
typedef struct chorus_envelope_limits_s {
    size_t max_bytes;
    int max_depth;
} chorus_envelope_limits_t;

CHORUS_API chorus_envelope_limits_t chorus_envelope_limits_default(void);

/*
 * A new envelope with a fresh event_id (UUIDv7) and the current time.
 * @p data_json must be a JSON object (NULL means {}).  Returns NULL and sets
 * *errp (if errp is not NULL) when an argument is invalid.
 */
CHORUS_API chorus_envelope_t *chorus_envelope_new(const char *event_type,
                                                  const char *aggregate_id,
                                                  int64_t version,
                                                  const char *data_json,
                                                  chorus_error_t **errp);
CHORUS_API chorus_envelope_t *chorus_envelope_dup(const chorus_envelope_t *env);
CHORUS_API void chorus_envelope_destroy(chorus_envelope_t *env);

/*
 * Parses and validates @p len bytes.  Checks, in this order: size, UTF-8
 * (and no NUL bytes), nesting depth (scanned before parsing, so hostile
 * input never recurses), JSON syntax with no trailing bytes, then every
 * required field and its type.  @p lim may be NULL (the defaults).  On failure returns the code and sets *errp to an error
 * object naming the problem (caller destroys it).
 */
CHORUS_API chorus_err_t chorus_envelope_parse(const char *buf, size_t len,
                                              const chorus_envelope_limits_t *lim,
                                              chorus_envelope_t **envp,
                                              chorus_error_t **errp);
/** Serializes to compact JSON; *out is malloc'd, the caller frees it. */
CHORUS_API chorus_err_t chorus_envelope_serialize(const chorus_envelope_t *env,
                                                  char **out, size_t *lenp);

CHORUS_API const char *chorus_envelope_event_id(const chorus_envelope_t *env);
CHORUS_API const char *chorus_envelope_event_type(const chorus_envelope_t *env);
CHORUS_API const char *chorus_envelope_aggregate_id(const chorus_envelope_t *env);
/** The aggregate version this event gives its aggregate. */
CHORUS_API int64_t chorus_envelope_version(const chorus_envelope_t *env);
/** The schema version of the event type's data (optional field, default 1). */
CHORUS_API int chorus_envelope_schema_version(const chorus_envelope_t *env);
/** RFC 3339 UTC with milliseconds, "2026-03-14T10:00:00.000Z". */
CHORUS_API const char *chorus_envelope_timestamp(const chorus_envelope_t *env);
/** Milliseconds since the Unix epoch, from the timestamp. */
CHORUS_API int64_t chorus_envelope_timestamp_ms(const chorus_envelope_t *env);
/** The data object as compact JSON text. */
CHORUS_API const char *chorus_envelope_data_json(const chorus_envelope_t *env);
/** Metadata fields; NULL when absent. */
CHORUS_API const char *chorus_envelope_correlation_id(const chorus_envelope_t *env);
CHORUS_API const char *chorus_envelope_causation_id(const chorus_envelope_t *env);
CHORUS_API const char *chorus_envelope_user_id(const chorus_envelope_t *env);
CHORUS_API const char *chorus_envelope_traceparent(const chorus_envelope_t *env);
/** metadata.deadline (the saga instance's deadline) in ms since the epoch;
 *  0 when absent.  Set by chorus on a saga's first event, inherited by
 *  every event it causes. */
CHORUS_API int64_t chorus_envelope_deadline_ms(const chorus_envelope_t *env);

CHORUS_API chorus_err_t chorus_envelope_set_event_id(chorus_envelope_t *env, const char *uuid);
CHORUS_API chorus_err_t chorus_envelope_set_timestamp_ms(chorus_envelope_t *env, int64_t ms);
CHORUS_API chorus_err_t chorus_envelope_set_schema_version(chorus_envelope_t *env, int v);
CHORUS_API chorus_err_t chorus_envelope_set_data_json(chorus_envelope_t *env, const char *json);
/** Metadata setters; NULL removes the field. */
CHORUS_API chorus_err_t chorus_envelope_set_correlation_id(chorus_envelope_t *env, const char *uuid);
CHORUS_API chorus_err_t chorus_envelope_set_causation_id(chorus_envelope_t *env, const char *uuid);
CHORUS_API chorus_err_t chorus_envelope_set_user_id(chorus_envelope_t *env, const char *uuid);
CHORUS_API chorus_err_t chorus_envelope_set_traceparent(chorus_envelope_t *env, const char *tp);
/** 0 removes it. */
CHORUS_API chorus_err_t chorus_envelope_set_deadline_ms(chorus_envelope_t *env, int64_t ms);

/** Writes a new UUIDv7 (time-ordered), 36 characters plus NUL, into @p out. */
CHORUS_API void chorus_uuid_v7(char out[37]);
/** Non-zero when @p s is a canonical hyphenated UUID (any version). */
CHORUS_API int chorus_uuid_valid(const char *s);
/** Formats @p ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ" into @p out. */
CHORUS_API void chorus_format_timestamp(int64_t ms, char out[25]);
/**
 * Parses an RFC 3339 timestamp (any offset) into *ms, milliseconds since
 * the epoch (negative before 1970).  CHORUS_ERR_INVALID_ARG when malformed
 * or when the instant, in UTC, falls outside 0001-01-01T00:00:00.000Z ..
 * 9999-12-31T23:59:59.999Z (the years a canonical timestamp can spell).
 * Fractions beyond milliseconds are truncated.
 */
CHORUS_API chorus_err_t chorus_timestamp_parse(const char *s, int64_t *ms);
/** As chorus_timestamp_parse(), for instants from 1970 on; -1 if bad. */
CHORUS_API int64_t chorus_parse_timestamp(const char *s);
/** Milliseconds since the epoch, wall clock. */
CHORUS_API int64_t chorus_now_ms(void);

/* ------------------------------------------------------------------------
 * The participant: connection, topology, publishing, consuming
 *
 *   chorus_new(conf)          ->  chorus_register(type, handler) ...
 *   chorus_start()            ->  connect, declare topology, consume
 *   chorus_run() / _poll()    ->  deliveries in, handlers, publishes, acks
 *   chorus_stop()             ->  from anywhere, even a signal handler
 *   chorus_destroy()
 * ---------------------------------------------------------------------- */
typedef struct chorus_s chorus_t;
typedef struct chorus_delivery_s chorus_delivery_t;

/** What a handler decides about one delivery. */
typedef enum {
    CHORUS_HANDLED = 0,     /**< done; emitted events are published, then acked */
    CHORUS_RETRY_LATER = 1, /**< transient: retried after a delay, DLQ after the last attempt */
    CHORUS_REJECT = 2       /**< permanent: dead-lettered at once with the reason */
} chorus_outcome_t;

/*
 * A handler.  Called on the thread running chorus_run()/chorus_poll().
 * @p env and @p d are borrowed until it returns.  It must not call
 * chorus_poll(), chorus_run() or chorus_destroy() on @p ch.
 */
typedef chorus_outcome_t(chorus_handler_fn)(chorus_t *ch, chorus_delivery_t *d,
                                            const chorus_envelope_t *env,
                                            void *opaque);

/*
 * Delivery report for chorus_publish(): called once per published envelope,
 * from chorus_poll()/chorus_flush(), with CHORUS_OK when the broker confirmed
 * it, or CHORUS_ERR_NACKED / CHORUS_ERR_UNROUTABLE.  @p env is borrowed.
 */
typedef void(chorus_dr_cb)(chorus_t *ch, const chorus_envelope_t *env,
                           chorus_err_t result, void *msg_opaque, void *opaque);

CHORUS_API void chorus_conf_set_dr_cb(chorus_conf_t *conf, chorus_dr_cb *cb,
                                      void *opaque);

/*
 * Creates a participant.  On success it takes ownership of @p conf (do not
 * use or destroy it afterwards); on failure returns NULL, leaves @p conf with
 * the caller, and writes the reason into @p errstr.
 */
CHORUS_API chorus_t *chorus_new(chorus_conf_t *conf, char *errstr,
                                size_t errstr_size);
CHORUS_API void chorus_destroy(chorus_t *ch);

/*
 * Registers @p fn for @p event_type; the service queue is bound to the
 * routing key "*.<event_type>" unless "topology.bindings" says otherwise.
 * Only before chorus_start().
 */
CHORUS_API chorus_err_t chorus_register(chorus_t *ch, const char *event_type,
                                        chorus_handler_fn *fn, void *opaque);

/*
 * Says that the handler of @p event_type reads data of schema version
 * @p version (the default is 1).  An event whose schema_version is newer
 * than every version this participant knows -- this one, the saga
 * declaration's ("events"), and what its registered upcasters reach -- is
 * never handed to the handler: it is dead-lettered ("unknown-schema-version")
 * or retried, as "consume.newer.schema" or the declaration says.  Only
 * before chorus_start().
 */
CHORUS_API chorus_err_t chorus_register_schema_version(chorus_t *ch, const char *event_type,
                                                       int version);

/* Connects (trying each configured broker in turn), declares the topology
 * and starts consuming when handlers are registered. */
CHORUS_API chorus_err_t chorus_start(chorus_t *ch);

/* The exchanges, queues and bindings chorus_start() declares for @p ch (its
 * configuration, saga declaration and the handlers registered so far), as
 * the "exchanges", "queues" and "bindings" of a RabbitMQ definitions
 * document in @p vhost (NULL: "/").  Imported before the participant
 * starts (POST /api/definitions, rabbitmqctl import_definitions), they let
 * an operator provision everything at once, with the very arguments the
 * participant then declares again as a no-op.  Needs no broker.  @p json
 * is malloc'd: free() it. */
CHORUS_API chorus_err_t chorus_topology_definitions(chorus_t *ch, const char *vhost, char **json);
/*
 * Does the work that is ready, waiting up to @p timeout_ms for some:
 * deliveries, confirms, reconnects.  Returns CHORUS_OK, or
 * CHORUS_ERR_STOPPED once chorus_stop() was called.
 */
CHORUS_API chorus_err_t chorus_poll(chorus_t *ch, int timeout_ms);
/* chorus_poll() until chorus_stop(); then flushes publishes (bounded). */
CHORUS_API chorus_err_t chorus_run(chorus_t *ch);
/* Asks chorus_run() to return.  Any thread; async-signal-safe. */
CHORUS_API void chorus_stop(chorus_t *ch);

/*
 * Publishes @p env on the events exchange with routing key
 * "<service>.<event_type>", taking ownership of it.  Returns at once, before
 * the confirm; the delivery report tells the outcome.  Messages not yet
 * confirmed when the connection drops are published again after the
 * reconnect (at-least-once).  CHORUS_ERR_QUEUE_FULL when "publish.window"
 * messages are unconfirmed (call chorus_poll()); CHORUS_ERR_SCHEMA when the
 * saga declaration gives the event's data a schema it does not match.
 */
CHORUS_API chorus_err_t chorus_publish(chorus_t *ch, chorus_envelope_t *env,
                                       void *msg_opaque);
/* Waits until every publish is confirmed or @p timeout_ms passes. */
CHORUS_API chorus_err_t chorus_flush(chorus_t *ch, int timeout_ms);
/* Messages published and not yet reported. */
CHORUS_API size_t chorus_outq_len(const chorus_t *ch);

/* --- inside a handler ------------------------------------------------- */

/*
 * Emits a new event caused by the delivery being handled: correlation_id is
 * the delivery's (or its event_id when it has none), causation_id its
 * event_id.  Published with confirms after the handler returns
 * CHORUS_HANDLED, before the delivery is acked; discarded otherwise.
 * Takes ownership of @p env.
 */
CHORUS_API chorus_err_t chorus_emit(chorus_delivery_t *d, chorus_envelope_t *env);
/** 1 for the first delivery of a message, 2 after one retry, ... */
CHORUS_API int chorus_delivery_attempt(const chorus_delivery_t *d);
/** Non-zero when the broker says it delivered this message before. */
CHORUS_API int chorus_delivery_redelivered(const chorus_delivery_t *d);
CHORUS_API const char *chorus_delivery_routing_key(const chorus_delivery_t *d);
/** Records why the handler retries or rejects; carried in fault headers. */
CHORUS_API void chorus_delivery_set_error(chorus_delivery_t *d, const char *fmt,
                                          ...) CHORUS_PRINTF(2, 3);

/* --- names and counters ----------------------------------------------- */

CHORUS_API const char *chorus_service(const chorus_t *ch);
CHORUS_API const char *chorus_queue_name(const chorus_t *ch);
CHORUS_API const char *chorus_dlq_name(const chorus_t *ch);
CHORUS_API const char *chorus_exchange_name(const chorus_t *ch);

typedef struct chorus_stats_s {
    uint64_t handled;       /**< deliveries acked after their handler succeeded */
    uint64_t duplicates;    /**< deliveries skipped as already handled */
    uint64_t retried;       /**< deliveries sent to a retry queue */
    uint64_t dead_lettered; /**< deliveries sent to the DLQ */
    uint64_t published;     /**< publishes confirmed by the broker */
    uint64_t nacked;        /**< publishes nacked by the broker */
    uint64_t returned;      /**< publishes returned unroutable */
    uint64_t reconnects;    /**< successful reconnects after a loss */
    uint64_t handler_ns;    /**< total time spent in handlers */
    uint64_t propagation_ms;/**< total event-timestamp-to-handling delay */
    uint64_t conflicts;     /**< handler runs repeated after a version conflict */
    uint64_t relayed;       /**< outbox rows published by the relay */
} chorus_stats_t;

/* The first counters, in a struct the caller allocates: frozen (it never
 * grows) and deprecated in favour of the by-name API below, which has every
 * counter, these and any added later (store_reconnects, blocked_periods,
 * blocked_ms, ...: only there). */
CHORUS_API void chorus_stats(const chorus_t *ch, chorus_stats_t *out);

/*
 * Counters by name (see chorus_stat_name() for the list, with
 * chorus_stat_help() saying what each counts): new counters are appended
 * without changing any type the application holds.  Indexes are stable
 * within a release; names across releases.
 */
CHORUS_API size_t chorus_stat_count(void);
/** NULL past the end. */
CHORUS_API const char *chorus_stat_name(size_t i);
CHORUS_API const char *chorus_stat_help(size_t i);
CHORUS_API uint64_t chorus_stat_value(const chorus_t *ch, size_t i);
/** CHORUS_ERR_INVALID_ARG for a name chorus does not count. */
CHORUS_API chorus_err_t chorus_stat_get(const chorus_t *ch, const char *name, uint64_t *value);

/*
 * Why the last chorus_start() (or a reconnect of the store) failed, in
 * words ("" when nothing failed), and the SQLSTATE when PostgreSQL said
 * ("" otherwise): e.g. "42501" when the role may not create the schema.
 */
CHORUS_API const char *chorus_last_error(const chorus_t *ch);
CHORUS_API const char *chorus_last_sqlstate(const chorus_t *ch);

/* ------------------------------------------------------------------------
 * Saga declarations (sagas/<name>.json, format in sagas/README.md)
 *
 * A participant whose "saga.file" is set loads the declaration in
 * chorus_start(), refuses to start when its registered handlers differ from
 * its role there, and binds its queue to exactly the routing keys
 * ("<producer>.<EventType>") of the events it consumes.
 * ---------------------------------------------------------------------- */
typedef struct chorus_saga_s chorus_saga_t;

/*
 * Loads and checks a declaration.  Refuses (NULL, reason in @p errstr,
 * naming the file, the step and the problem) when: the JSON or a field is
 * malformed; a step other than the last has no compensation; an event is
 * consumed but produced by nobody; a failure event is handled by nobody; a
 * terminal event is produced by nobody; the deadline's owner takes no part.
 */
CHORUS_API chorus_saga_t *chorus_saga_load(const char *path, char *errstr, size_t errstr_size);
/* The same from text; @p name is used in messages in place of a path. */
CHORUS_API chorus_saga_t *chorus_saga_parse(const char *json, const char *name, char *errstr,
                                            size_t errstr_size);
CHORUS_API void chorus_saga_destroy(chorus_saga_t *saga);

CHORUS_API const char *chorus_saga_name(const chorus_saga_t *saga);
/* The deadline in ms from the first event (0: none), and who enforces it. */
CHORUS_API int64_t chorus_saga_deadline_ms(const chorus_saga_t *saga);
CHORUS_API const char *chorus_saga_deadline_owner(const chorus_saga_t *saga);
CHORUS_API int chorus_saga_is_terminal(const chorus_saga_t *saga, const char *event_type);

/* The steps, in declaration order; the pivot (the step that cannot be
 * compensated: "cancellation.pivot", else the first step without a
 * compensation) or -1; the completion's event or NULL. */
CHORUS_API size_t chorus_saga_step_count(const chorus_saga_t *saga);
CHORUS_API const char *chorus_saga_step_name(const chorus_saga_t *saga, size_t i);
CHORUS_API const char *chorus_saga_step_service(const chorus_saga_t *saga, size_t i);
CHORUS_API int chorus_saga_pivot(const chorus_saga_t *saga);
CHORUS_API const char *chorus_saga_completion_event(const chorus_saga_t *saga);

/* What an event means in the saga (for monitors): */
typedef enum {
    CHORUS_SAGA_EVENT_UNKNOWN = 0, /**< not an event of the saga */
    CHORUS_SAGA_STEP_DONE,         /**< a step's success ("emits") */
    CHORUS_SAGA_STEP_FAILED,       /**< one of a step's "failures" */
    CHORUS_SAGA_STEP_COMPENSATED,  /**< a step's compensation "emits" */
    CHORUS_SAGA_CANCEL_REQUEST,    /**< a cancellation asked of the pivot */
    CHORUS_SAGA_CANCEL_ACCEPTED,   /**< the pivot will never run: earlier steps compensate */
    CHORUS_SAGA_CANCEL_REFUSED,    /**< the pivot ran: the saga completes */
    CHORUS_SAGA_COMPLETED,         /**< the completion's "emits" */
    CHORUS_SAGA_DEADLINE           /**< the deadline's event (sagas without a pivot) */
} chorus_saga_event_kind_t;

/* The kind of @p event; *stepp (may be NULL) gets the step it concerns
 * (the pivot for its answers) or -1. */
CHORUS_API chorus_saga_event_kind_t chorus_saga_event_kind(const chorus_saga_t *saga,
                                                           const char *event, int *stepp);
/* The event of "cancellation" for CHORUS_SAGA_CANCEL_REQUEST, _ACCEPTED or
 * _REFUSED; NULL when the saga declares none. */
CHORUS_API const char *chorus_saga_cancellation_event(const chorus_saga_t *saga,
                                                      chorus_saga_event_kind_t kind);

/* The event types @p service consumes: *typesp is a borrowed array of
 * borrowed strings; returns the count (0 for a service not in the saga). */
CHORUS_API size_t chorus_saga_consumes(const chorus_saga_t *saga, const char *service,
                                       const char *const **typesp);
/* The routing keys @p service's queue binds to ("<producer>.<EventType>");
 * same ownership as chorus_saga_consumes(). */
CHORUS_API size_t chorus_saga_bindings(const chorus_saga_t *saga, const char *service,
                                       const char *const **keysp);
/* Services taking part (steps, completion, deadline owner, observers). */
CHORUS_API size_t chorus_saga_services(const chorus_saga_t *saga, const char *const **namesp);

/*
 * Compares the handlers a service registered with its role: CHORUS_OK, or
 * CHORUS_ERR_INVALID_CONF with @p errstr listing what is missing and what
 * is extra ("service 'payment' has no handler for InsufficientStock
 * (compensation of step 'charge-payment')").
 */
CHORUS_API chorus_err_t chorus_saga_check_handlers(const chorus_saga_t *saga,
                                                   const char *service,
                                                   const char *const *types, size_t ntypes,
                                                   char *errstr, size_t errstr_size);

/* The choreography as Graphviz DOT, to @p out (a FILE *): services as
 * nodes, events as edges; failures and compensations drawn dashed/red. */
CHORUS_API void chorus_saga_write_dot(const chorus_saga_t *saga, void *out);

/* RabbitMQ permissions for @p service, derived from the declaration and
 * the namespace: regular expressions for configure, write and read, and
 * the topic permission (write) on the events exchange.  Strings are
 * written into the caller's buffers of @p size bytes each. */
CHORUS_API chorus_err_t chorus_saga_permissions(const chorus_saga_t *saga, const char *service,
                                                const char *ns, char *configure, char *write,
                                                char *read, char *topic_write, size_t size);

/* ------------------------------------------------------------------------
 * Dead-letter queues: inspect and repair (scripts/dlq)
 *
 *   chorus_dlq_open()    a connection of its own to one service's DLQ
 *   chorus_dlq_fetch()   holds the messages present now, in order, without
 *                        removing them (unacknowledged deliveries)
 *   ..._requeue/remove() mark what leaves the DLQ (a requeue is published
 *                        to the service's queue and confirmed first)
 *   chorus_dlq_finish()  acks what left, gives back the rest in order
 *
 * A message the broker delivers while held is not lost: anything not
 * acknowledged returns to the queue, also when the process dies.
 * ---------------------------------------------------------------------- */
typedef struct chorus_dlq_s chorus_dlq_t;
typedef struct chorus_dead_letter_s chorus_dead_letter_t;

/* @p url: the first of a CHORUS_AMQP_URL-style list is used. */
CHORUS_API chorus_dlq_t *chorus_dlq_open(const char *url, const char *ns, const char *service,
                                         char *errstr, size_t errstr_size);
/* Gives back whatever is still held (as chorus_dlq_finish), then closes. */
CHORUS_API void chorus_dlq_close(chorus_dlq_t *q);
CHORUS_API const char *chorus_dlq_queue(const chorus_dlq_t *q);
/* Holds the messages in the DLQ now (at most @p max; 0 = all of them). */
CHORUS_API chorus_err_t chorus_dlq_fetch(chorus_dlq_t *q, size_t max);
CHORUS_API size_t chorus_dlq_count(const chorus_dlq_t *q);
CHORUS_API const chorus_dead_letter_t *chorus_dlq_at(const chorus_dlq_t *q, size_t i);
/* Publishes message @p i to the queue of the DLQ's service -- never to a
 * queue a header names, which its producer may have written -- (headers kept, requeue
 * count incremented, attempt reset to 1) and waits for the confirm; then it
 * is acked by chorus_dlq_finish().  Refused, and nothing sent, when the
 * requeue count cannot be incremented (already INT64_MAX, or not an
 * integer) or the copy's properties do not fit a frame; the reason is then
 * in chorus_dlq_last_error(). */
CHORUS_API chorus_err_t chorus_dlq_requeue(chorus_dlq_t *q, size_t i);
/* Why the last chorus_dlq_requeue() on @p q failed, for people; "" when it
 * did not.  Valid until the next call on @p q. */
CHORUS_API const char *chorus_dlq_last_error(const chorus_dlq_t *q);
CHORUS_API chorus_err_t chorus_dlq_remove(chorus_dlq_t *q, size_t i);
CHORUS_API chorus_err_t chorus_dlq_finish(chorus_dlq_t *q);
/* Publishes one line of chorus_dead_letter_export() into the DLQ (format 2,
 * or format 1 of earlier versions).  The line is read strictly: anything it
 * cannot rebuild exactly, or that would not fit a frame, is refused with
 * the reason in @p errstr (CHORUS_ERR_PARSE, CHORUS_ERR_TOO_LARGE), and
 * nothing is sent. */
CHORUS_API chorus_err_t chorus_dlq_import(chorus_dlq_t *q, const char *line, char *errstr,
                                          size_t errstr_size);

/* A string header ("x-chorus-fault-reason"...), NULL when absent, not a
 * string, or holding a NUL byte (a C string cannot carry one). */
CHORUS_API const char *chorus_dead_letter_header(const chorus_dead_letter_t *dl,
                                                 const char *key);
CHORUS_API long long chorus_dead_letter_header_int(const chorus_dead_letter_t *dl,
                                                   const char *key, long long dflt);
/* From the envelope when it decodes, else from the AMQP properties; "" if unknown. */
CHORUS_API const char *chorus_dead_letter_event_id(const chorus_dead_letter_t *dl);
CHORUS_API const char *chorus_dead_letter_event_type(const chorus_dead_letter_t *dl);
/*
 * A fault field as `dlq show` reports it: "reason", "error",
 * "original_queue", "original_routing_key", "time", "fault_service",
 * "dropped_headers" (x-chorus-dropped-headers: headers left out of a copy
 * because they did not fit).  From chorus' fault headers; where the broker
 * itself dead-lettered the message (no x-chorus-fault-reason), reason,
 * error, original queue, routing key and time come from x-death: reason
 * "delivery-limit" (x-death reason delivery_limit), "unreadable"
 * (rejected: chorus rejects, unrequeued, only what it cannot read), else
 * "broker-<reason>".  Bytes that are not UTF-8 text come as "base64:...".
 * NULL when unknown.  Borrowed until chorus_dlq_finish().
 */
CHORUS_API const char *chorus_dead_letter_fault(const chorus_dead_letter_t *dl,
                                                const char *field);
/* Everything about it as a JSON object (malloc'd; NULL when out of
 * memory): event id and type, the fault fields, attempts and requeues, the
 * decoded envelope (or the raw body: "body", or "body_base64" when it is not
 * text), x-death history, all headers, and "notes": what is shown other
 * than as itself, and why (big integers as strings, binary as base64,
 * nesting beyond 32 levels as base64 of its AMQP encoding, ...).
 * chorus_dead_letter_object() (chorus_json.h) gives the same as a tree. */
CHORUS_API char *chorus_dead_letter_json(const chorus_dead_letter_t *dl);
/* One JSON line ("format": 2) with the properties, headers (typed, in
 * order, or their exact AMQP encoding when they nest too deep for JSON) and
 * the body in base64, from which chorus_dlq_import() rebuilds the message
 * exactly.  NULL when out of memory. */
CHORUS_API char *chorus_dead_letter_export(const chorus_dead_letter_t *dl);

#ifdef __cplusplus
}
#endif
#endif /* CHORUS_H */
