/*
 * monitor - the generic saga monitor: a projection of every instance of the
 * saga that CHORUS_SAGA_FILE declares, built from the declaration alone.
 *
 *   monitor [run]            the participant (the declaration's observer)
 *   monitor status ID        one instance, by correlation or aggregate id
 *   monitor list [--stuck]   one line per instance
 *
 * It is the saga's observer (declared under "observers"; its service name
 * is CHORUS_MONITOR_SERVICE, default "monitor"), so it consumes every
 * event of the saga.  It knows no event by name: what an event means comes
 * from chorus_saga_event_kind() and chorus_saga_is_terminal(), the steps
 * from chorus_saga_step_*(), the pivot from chorus_saga_pivot().
 *
 * Its tables, in its own schema:
 *
 *   saga_steps           the timeline: one row per event (event_id), with
 *                        its producer, its time, its kind and its step
 *   saga_instances       one row per instance (correlation_id): aggregate
 *                        id, times, deadline, the state below
 *   saga_instance_steps  one row per instance and step reached: its state
 *
 * An instance's state is the greatest, in two orders, of what its events
 * say (PostgreSQL enums, ordered as listed), combined into one column:
 *
 *   progress      running < compensating < completed < cancelled
 *   cancellation  (none) < requested < refused < accepted
 *   state         = progress, but "cancelling" when progress is running
 *                   and the cancellation is only requested (no answer yet)
 *
 *   event (its kind)                 progress       cancellation  step state
 *   a step's success                 running        -             done
 *   a step's failure                 compensating   -             failed
 *   a step's compensation            compensating   -             compensated
 *   the cancellation request         running        requested     -
 *   the pivot's accepted answer      compensating   accepted      pivot: cancelled
 *   the pivot's refused answer       running        refused       pivot: kept
 *   the completion's event           running        -             -
 *   the deadline (no pivot)          compensating   -             -
 *   a terminal event                 completed if it is the completion's event (or,
 *                                    with no completion, a step's success), else cancelled
 *
 * (Both a success and another terminal event would be participants
 * disagreeing; the state then says cancelled.)  A step's state is the
 * greatest of done < kept < failed < cancelled < compensated; a step absent
 * from saga_instance_steps was not reached.  on_event() applies one event,
 * in the delivery's transaction; nothing else writes.
 * "stuck" is computed when read, never stored: not terminal and past the
 * deadline (metadata.deadline, else the first event plus the declared
 * deadline) by more than CHORUS_MONITOR_GRACE_MS (default 2000), or, with
 * no deadline at all, no event for CHORUS_MONITOR_IDLE_MS (default 60000).
 *
 * Events reach the monitor in any order and possibly twice.  Every update
 * is a maximum (states as above, last_event_at), a minimum (started_at,
 * ended_at, deadline_at; the aggregate id of the first event by time, then
 * event id) or a count of events new to saga_steps, so the result is a
 * function of the set of events seen, whatever their order.
 */
#include "service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *service;
    chorus_saga_t *saga;
    chorus_t *ch;
    long long grace_ms, idle_ms;
} monitor_t;

/* What one event contributes, from the declaration (the table above). */
typedef struct {
    const char *kind;         /* saga_steps.kind */
    const char *progress;
    const char *cancellation; /* "" for none */
    const char *step_state;   /* "" for none */
    int step;                 /* the step it concerns, or -1 */
    bool terminal;
} meaning_t;

static const meaning_t BY_KIND[] = {
    [CHORUS_SAGA_EVENT_UNKNOWN] = {"unknown", "running", "", "", -1, false},
    [CHORUS_SAGA_STEP_DONE] = {"done", "running", "", "done", -1, false},
    [CHORUS_SAGA_STEP_FAILED] = {"failed", "compensating", "", "failed", -1, false},
    [CHORUS_SAGA_STEP_COMPENSATED] = {"compensated", "compensating", "", "compensated", -1, false},
    [CHORUS_SAGA_CANCEL_REQUEST] = {"cancel-request", "running", "requested", "", -1, false},
    [CHORUS_SAGA_CANCEL_ACCEPTED] = {"cancel-accepted", "compensating", "accepted", "cancelled", -1,
                                     false},
    [CHORUS_SAGA_CANCEL_REFUSED] = {"cancel-refused", "running", "refused", "kept", -1, false},
    [CHORUS_SAGA_COMPLETED] = {"completed", "running", "", "", -1, false},
    [CHORUS_SAGA_DEADLINE] = {"deadline", "compensating", "", "", -1, false},
};

static meaning_t meaning_of(const chorus_saga_t *saga, const char *type) {
    int step;
    chorus_saga_event_kind_t k = chorus_saga_event_kind(saga, type, &step);
    meaning_t m = BY_KIND[(size_t)k < sizeof(BY_KIND) / sizeof(BY_KIND[0]) ? k : 0];
    m.step = step;
    if (step < 0)
        m.step_state = "";
    if (chorus_saga_is_terminal(saga, type)) {
        /* success: the completion's event, or, with no completion, a step's */
        const char *done = chorus_saga_completion_event(saga);
        bool success = done ? strcmp(done, type) == 0 : k == CHORUS_SAGA_STEP_DONE;
        m.progress = success ? "completed" : "cancelled";
        m.terminal = true;
    }
    return m;
}

/* ------------------------------------------------------------------ run */

/*
 * One event, applied in one statement (one round trip), its text fixed so
 * the connection can keep it prepared: the timeline row first; only when
 * that row is new (RETURNING a row) do the instance and its step count it.
 * The three tables differ, so the snapshot the three parts share hides
 * nothing from any of them.
 *
 *   $1 event_id     $2 correlation_id  $3 event_type   $4 producer
 *   $5 time (ms)    $6 kind            $7 step ('' for none)
 *   $8 aggregate_id $9 saga            $10 progress    $11 cancellation ('')
 *   $12 terminal    $13 deadline (ms, '' for none)     $14 step state ('')
 *
 * Why not one statement per batch: each delivery runs in its own savepoint,
 * and a handler learns neither where its batch ends nor whether a later
 * savepoint is undone -- changes kept in memory and written by a later
 * delivery's handler would be lost with that delivery's rollback while the
 * earlier delivery stays handled (its inbox row kept).
 */
static const char APPLY[] =
    "WITH e AS ("
    " INSERT INTO saga_steps (event_id, correlation_id, event_type, service, occurred_at, kind,"
    "   step)"
    " VALUES ($1::uuid, $2::uuid, $3, $4, to_timestamp($5::double precision / 1000), $6,"
    "   NULLIF($7, ''))"
    " ON CONFLICT DO NOTHING RETURNING event_id, correlation_id, occurred_at, step),"
    " i AS ("
    " INSERT INTO saga_instances AS s (correlation_id, aggregate_id, first_event, saga,"
    "   progress, cancellation, started_at, last_event_at, ended_at, deadline_at, events)"
    " SELECT correlation_id, $8::uuid, event_id, $9, $10::saga_progress,"
    "   NULLIF($11, '')::saga_cancellation, occurred_at, occurred_at,"
    "   CASE WHEN $12::boolean THEN occurred_at END,"
    "   to_timestamp(NULLIF($13, '')::double precision / 1000), 1 FROM e"
    " ON CONFLICT (correlation_id) DO UPDATE SET"
    "  aggregate_id = CASE WHEN (EXCLUDED.started_at, EXCLUDED.first_event)"
    "    < (s.started_at, s.first_event) THEN EXCLUDED.aggregate_id ELSE s.aggregate_id END,"
    "  first_event = CASE WHEN (EXCLUDED.started_at, EXCLUDED.first_event)"
    "    < (s.started_at, s.first_event) THEN EXCLUDED.first_event ELSE s.first_event END,"
    "  progress = greatest(s.progress, EXCLUDED.progress),"
    "  cancellation = greatest(s.cancellation, EXCLUDED.cancellation),"
    "  started_at = least(s.started_at, EXCLUDED.started_at),"
    "  last_event_at = greatest(s.last_event_at, EXCLUDED.last_event_at),"
    "  ended_at = least(s.ended_at, EXCLUDED.ended_at),"
    "  deadline_at = least(s.deadline_at, EXCLUDED.deadline_at),"
    "  events = s.events + 1)"
    " INSERT INTO saga_instance_steps AS s (correlation_id, step, state, at)"
    " SELECT correlation_id, step, NULLIF($14, '')::saga_step_state, occurred_at FROM e"
    " WHERE step IS NOT NULL AND $14 <> ''"
    " ON CONFLICT (correlation_id, step) DO UPDATE SET"
    "  state = greatest(s.state, EXCLUDED.state),"
    "  at = CASE WHEN EXCLUDED.state > s.state THEN EXCLUDED.at"
    "    WHEN EXCLUDED.state < s.state THEN s.at ELSE least(s.at, EXCLUDED.at) END";

static chorus_outcome_t on_event(chorus_t *ch, chorus_delivery_t *d, const chorus_envelope_t *env,
                                 void *opaque) {
    (void)ch;
    const chorus_saga_t *saga = opaque;
    const char *rk = chorus_delivery_routing_key(d), *type = chorus_envelope_event_type(env);
    const char *id = chorus_envelope_event_id(env), *corr = chorus_envelope_correlation_id(env);
    if (!corr)
        corr = id; /* as chorus_emit() would: a flow of one event */
    meaning_t m = meaning_of(saga, type);
    const char *step = m.step >= 0 ? chorus_saga_step_name(saga, (size_t)m.step) : "";
    char producer[65], ts[24], deadline[24] = "";
    snprintf(producer, sizeof(producer), "%.*s", (int)strcspn(rk, "."), rk);
    snprintf(ts, sizeof(ts), "%lld", (long long)chorus_envelope_timestamp_ms(env));
    if (chorus_envelope_deadline_ms(env) > 0)
        snprintf(deadline, sizeof(deadline), "%lld", (long long)chorus_envelope_deadline_ms(env));
    const char *params[] = {id, corr, type, producer, ts, m.kind, step,
                            chorus_envelope_aggregate_id(env), chorus_saga_name(saga), m.progress,
                            m.cancellation, m.terminal ? "true" : "false", deadline,
                            m.step_state};
    chorus_err_t rc = chorus_tx_exec(chorus_delivery_tx(d), APPLY,
                                     (int)(sizeof(params) / sizeof(params[0])), params, NULL);
    return rc ? CHORUS_RETRY_LATER : CHORUS_HANDLED;
}

/* CREATE TYPE has no IF NOT EXISTS. */
#define ENUM(name, labels)                                                                    \
    "DO $$ BEGIN CREATE TYPE " name " AS ENUM (" labels ");"                                  \
    " EXCEPTION WHEN duplicate_object THEN NULL; END $$"

static const char *const DDL[] = {
    /* the order service's monitor (before this one) had tables of these names */
    "DO $$ BEGIN IF to_regclass('saga_instances') IS NOT NULL AND NOT EXISTS (SELECT 1"
    " FROM information_schema.columns WHERE table_schema = current_schema()"
    " AND table_name = 'saga_instances' AND column_name = 'progress') THEN RAISE EXCEPTION"
    " 'saga_instances and saga_steps of schema % are an older monitor''s: drop them',"
    " current_schema(); END IF; END $$",
    ENUM("saga_progress", "'running', 'compensating', 'completed', 'cancelled'"),
    ENUM("saga_cancellation", "'requested', 'refused', 'accepted'"),
    ENUM("saga_step_state", "'done', 'kept', 'failed', 'cancelled', 'compensated'"),
    "CREATE TABLE IF NOT EXISTS saga_instances ("
    " correlation_id uuid PRIMARY KEY, aggregate_id uuid NOT NULL, first_event uuid NOT NULL,"
    " saga text NOT NULL, progress saga_progress NOT NULL, cancellation saga_cancellation,"
    " state text NOT NULL GENERATED ALWAYS AS (CASE progress"
    "   WHEN 'running' THEN CASE WHEN cancellation = 'requested' THEN 'cancelling'"
    "     ELSE 'running' END"
    "   WHEN 'compensating' THEN 'compensating' WHEN 'completed' THEN 'completed'"
    "   ELSE 'cancelled' END) STORED,"
    " started_at timestamptz NOT NULL, last_event_at timestamptz NOT NULL,"
    " ended_at timestamptz, deadline_at timestamptz, events int NOT NULL)",
    "CREATE INDEX IF NOT EXISTS saga_instances_aggregate ON saga_instances (aggregate_id)",
    "CREATE TABLE IF NOT EXISTS saga_steps ("
    " event_id uuid PRIMARY KEY, correlation_id uuid NOT NULL, event_type text NOT NULL,"
    " service text NOT NULL, occurred_at timestamptz NOT NULL,"
    " received_at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL, step text)",
    "CREATE INDEX IF NOT EXISTS saga_steps_corr ON saga_steps (correlation_id, occurred_at)",
    "CREATE TABLE IF NOT EXISTS saga_instance_steps ("
    " correlation_id uuid NOT NULL, step text NOT NULL, state saga_step_state NOT NULL,"
    " at timestamptz NOT NULL, PRIMARY KEY (correlation_id, step))",
};

static int monitor_run(monitor_t *mon) {
    const char *const *types;
    size_t n = chorus_saga_consumes(mon->saga, mon->service, &types);
    if (n == 0) {
        fprintf(stderr, "monitor: '%s' takes no part in saga '%s' (declare it under"
                " \"observers\")\n", mon->service, chorus_saga_name(mon->saga));
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        chorus_register(mon->ch, types[i], on_event, mon->saga);
    if (!svc_create_tables(mon->ch, DDL, sizeof(DDL) / sizeof(DDL[0]), NULL, NULL))
        return 1; /* it said why */
    return svc_run(mon->ch);
}

/* ------------------------------------------------------- status and list */

/* The instances with "due" (their deadline) and "stuck"; $1 the declared
 * deadline in ms ('' for none), $2 the grace, $3 the idle time. */
#define INSTANCES                                                                             \
    "WITH d AS (SELECT *, coalesce(deadline_at, started_at"                                   \
    "    + NULLIF($1, '')::bigint * interval '1 ms') AS due FROM saga_instances),"           \
    " i AS (SELECT *, state NOT IN ('completed', 'cancelled') AND now() > CASE"               \
    "    WHEN due IS NOT NULL THEN due + $2::bigint * interval '1 ms'"                        \
    "    ELSE last_event_at + $3::bigint * interval '1 ms' END AS stuck FROM d) "
#define UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static chorus_err_t instances(const monitor_t *mon, chorus_tx_t *tx, PGresult **r,
                              const char *where, const char *id) {
    char decl[24] = "", grace[24], idle[24];
    if (chorus_saga_deadline_ms(mon->saga) > 0)
        snprintf(decl, sizeof(decl), "%lld", (long long)chorus_saga_deadline_ms(mon->saga));
    snprintf(grace, sizeof(grace), "%lld", mon->grace_ms);
    snprintf(idle, sizeof(idle), "%lld", mon->idle_ms);
    char sql[2048];
    snprintf(sql, sizeof(sql),
             INSTANCES "SELECT correlation_id, aggregate_id, saga, state, stuck, events,"
             " round(extract(epoch FROM last_event_at - started_at) * 1000), "
             UTC("started_at") ", coalesce(" UTC("ended_at") ", ''),"
             " coalesce(" UTC("due") ", ''),"
             " CASE WHEN due IS NOT NULL THEN round(extract(epoch FROM now() - due) * 1000)"
             "   ELSE round(extract(epoch FROM now() - last_event_at) * 1000) END"
             " FROM i %s ORDER BY started_at, correlation_id", where);
    return id ? svc_sql(tx, r, sql, decl, grace, idle, id, NULL)
              : svc_sql(tx, r, sql, decl, grace, idle, NULL);
}
enum { I_CORR, I_AGG, I_SAGA, I_STATE, I_STUCK, I_EVENTS, I_SPAN, I_START, I_END, I_DUE, I_LATE };

static bool yes(const PGresult *r, int row, int col) {
    return strcmp(PQgetvalue(r, row, col), "t") == 0;
}

static const char *step_label(const char *state) {
    return strcmp(state, "cancelled") == 0 ? "cancelled (accepted)"
           : strcmp(state, "kept") == 0    ? "kept (refused)"
                                           : state;
}

static chorus_err_t print_steps(const monitor_t *mon, chorus_tx_t *tx, const char *corr) {
    PGresult *r = NULL;
    chorus_err_t rc = svc_sql(tx, &r, "SELECT step, state FROM saga_instance_steps"
                                      " WHERE correlation_id = $1", corr, NULL);
    int pivot = chorus_saga_pivot(mon->saga);
    printf("  steps:\n");
    for (size_t s = 0; !rc && s < chorus_saga_step_count(mon->saga); s++) {
        const char *name = chorus_saga_step_name(mon->saga, s), *state = "not reached";
        for (int k = 0; k < PQntuples(r); k++)
            if (strcmp(PQgetvalue(r, k, 0), name) == 0)
                state = step_label(PQgetvalue(r, k, 1));
        printf("    %zu. %-20s %-12s %s%s\n", s + 1, name, chorus_saga_step_service(mon->saga, s),
               state, (int)s == pivot ? "  (the pivot)" : "");
    }
    PQclear(r);
    return rc;
}

static chorus_err_t print_timeline(chorus_tx_t *tx, const char *corr) {
    PGresult *r = NULL;
    chorus_err_t rc = svc_sql(tx, &r,
        "SELECT round(extract(epoch FROM e.occurred_at - i.started_at) * 1000),"
        " e.service, e.event_type FROM saga_steps e JOIN saga_instances i USING (correlation_id)"
        " WHERE e.correlation_id = $1 ORDER BY e.occurred_at, e.event_id", corr, NULL);
    printf("  events:\n");
    for (int i = 0; !rc && i < PQntuples(r); i++)
        printf("    +%6s ms  %-12s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2));
    PQclear(r);
    return rc;
}

static chorus_err_t print_instance(const monitor_t *mon, chorus_tx_t *tx, const PGresult *r,
                                   int row) {
    const char *corr = PQgetvalue(r, row, I_CORR), *saga = PQgetvalue(r, row, I_SAGA);
    printf("saga %s  instance %s\n  aggregate %s\n", saga, corr, PQgetvalue(r, row, I_AGG));
    if (yes(r, row, I_STUCK))
        printf("  state stuck (%s): %s %s ms ago\n", PQgetvalue(r, row, I_STATE),
               *PQgetvalue(r, row, I_DUE) ? "its deadline passed" : "its last event came",
               PQgetvalue(r, row, I_LATE));
    else
        printf("  state %s\n", PQgetvalue(r, row, I_STATE));
    printf("  %s events, %s ms from first to last; started %s", PQgetvalue(r, row, I_EVENTS),
           PQgetvalue(r, row, I_SPAN), PQgetvalue(r, row, I_START));
    if (*PQgetvalue(r, row, I_END))
        printf(", ended %s", PQgetvalue(r, row, I_END));
    if (*PQgetvalue(r, row, I_DUE))
        printf(", deadline %s", PQgetvalue(r, row, I_DUE));
    printf("\n");
    chorus_err_t rc = CHORUS_OK;
    if (strcmp(saga, chorus_saga_name(mon->saga)) == 0)
        rc = print_steps(mon, tx, corr);
    else
        printf("  (saga '%s' is not the one declared, '%s': its steps are unknown)\n", saga,
               chorus_saga_name(mon->saga));
    return rc ? rc : print_timeline(tx, corr);
}

/* Runs @p fn in a read-only look at the monitor's tables. */
static int with_tables(monitor_t *mon, int (*fn)(monitor_t *, chorus_tx_t *, const char *),
                       const char *arg) {
    chorus_tx_t *tx;
    PGresult *r = NULL;
    if (chorus_tx_begin(mon->ch, &tx) != CHORUS_OK) {
        fprintf(stderr, "monitor: cannot reach PostgreSQL\n");
        return 1;
    }
    int code = 1;
    if (svc_sql(tx, &r, "SELECT to_regclass('saga_instance_steps') IS NOT NULL", NULL) ||
        !yes(r, 0, 0))
        fprintf(stderr, "monitor: no tables in schema %s: the monitor has not run yet"
                " (monitor run)\n", svc_schema(mon->service));
    else
        code = fn(mon, tx, arg);
    PQclear(r);
    chorus_tx_rollback(tx);
    return code;
}

static int status_fn(monitor_t *mon, chorus_tx_t *tx, const char *id) {
    PGresult *r = NULL;
    chorus_err_t rc = instances(mon, tx, &r, "WHERE correlation_id = $4 OR aggregate_id = $4", id);
    int n = rc ? 0 : PQntuples(r);
    for (int i = 0; !rc && i < n; i++) {
        if (i)
            printf("\n");
        rc = print_instance(mon, tx, r, i);
    }
    PQclear(r);
    if (rc)
        fprintf(stderr, "monitor: %s\n", chorus_strerror(rc));
    else if (n == 0)
        fprintf(stderr, "monitor: no saga instance for %s\n", id);
    return rc || n == 0 ? 1 : 0;
}

static int list_fn(monitor_t *mon, chorus_tx_t *tx, const char *stuck_only) {
    PGresult *r = NULL;
    chorus_err_t rc = instances(mon, tx, &r, stuck_only ? "WHERE stuck" : "", NULL);
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        char state[64];
        snprintf(state, sizeof(state), yes(r, i, I_STUCK) ? "stuck (%s)" : "%s",
                 PQgetvalue(r, i, I_STATE));
        printf("%s  %s  %-23s %3s events  started %s\n", PQgetvalue(r, i, I_CORR),
               PQgetvalue(r, i, I_AGG), state, PQgetvalue(r, i, I_EVENTS),
               PQgetvalue(r, i, I_START));
    }
    PQclear(r);
    if (rc)
        fprintf(stderr, "monitor: %s\n", chorus_strerror(rc));
    return rc ? 1 : 0;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f,
        "usage: monitor [run]            run the saga monitor (the declaration's observer)\n"
        "       monitor status ID        one saga instance: its state, each declared step,\n"
        "                                its events (ID: correlation or aggregate id)\n"
        "       monitor list [--stuck]   one line per instance (--stuck: only the stuck)\n"
        "       monitor --help\n"
        "The saga is CHORUS_SAGA_FILE's (default sagas/order_fulfillment.json); the other\n"
        "settings are the services' (CHORUS_AMQP_URL, PG* or CHORUS_PG_MONITOR,\n"
        "CHORUS_NAMESPACE, CHORUS_SCHEMA_PREFIX, CHORUS_CONF), and:\n"
        "  CHORUS_MONITOR_SERVICE    its service name in the declaration (default monitor)\n"
        "  CHORUS_MONITOR_GRACE_MS   an instance not terminal this long past its deadline\n"
        "                            is stuck (default 2000)\n"
        "  CHORUS_MONITOR_IDLE_MS    with no deadline: stuck after this long without an\n"
        "                            event (default 60000)\n"
        "Exit status: 0 ok, 1 failed (or no such instance), 2 bad arguments.\n");
}

static int bad_usage(const char *what, const char *arg) {
    if (arg)
        fprintf(stderr, "monitor: %s '%s'\n", what, arg);
    else
        fprintf(stderr, "monitor: %s\n", what);
    usage(stderr);
    return 2;
}

static bool env_ms(const char *name, long long def, long long *out) {
    const char *v = getenv(name);
    char *end;
    if (!v || !*v) {
        *out = def;
        return true;
    }
    errno = 0;
    *out = strtoll(v, &end, 10);
    if (errno || *end || *out < 0 || *out > 1000LL * 86400 * 365) {
        fprintf(stderr, "monitor: %s='%s' is not a number of milliseconds\n", name, v);
        return false;
    }
    return true;
}

static bool monitor_open(monitor_t *mon) {
    char err[512];
    const char *svc = getenv("CHORUS_MONITOR_SERVICE");
    mon->service = svc && *svc ? svc : "monitor";
    chorus_conf_t *conf = svc_conf(mon->service, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "monitor: %s\n", err);
        return false;
    }
    mon->saga = chorus_saga_load(chorus_conf_get(conf, "saga.file"), err, sizeof(err));
    if (!mon->saga) {
        fprintf(stderr, "monitor: %s\n", err);
        chorus_conf_destroy(conf);
        return false;
    }
    mon->ch = svc_new(conf);
    return mon->ch != NULL;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "run", *arg = NULL;
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "run") == 0) {
        if (argc > 2)
            return bad_usage("run takes no arguments, not", argv[2]);
    } else if (strcmp(cmd, "status") == 0) {
        if (argc != 3)
            return bad_usage("status needs one ID", NULL);
        if (!chorus_uuid_valid(argv[2]))
            return bad_usage("status: not a correlation or aggregate id (a UUID):", argv[2]);
        arg = argv[2];
    } else if (strcmp(cmd, "list") == 0) {
        if (argc > 3 || (argc == 3 && strcmp(argv[2], "--stuck") != 0))
            return bad_usage("list takes only --stuck, not", argv[argc - 1]);
        arg = argc == 3 ? "stuck" : NULL;
    } else {
        return bad_usage("unknown command", cmd);
    }
    monitor_t mon = {0};
    if (!env_ms("CHORUS_MONITOR_GRACE_MS", 2000, &mon.grace_ms) ||
        !env_ms("CHORUS_MONITOR_IDLE_MS", 60000, &mon.idle_ms))
        return 2;
    int code = 1;
    if (monitor_open(&mon))
        code = strcmp(cmd, "run") == 0      ? monitor_run(&mon)
               : strcmp(cmd, "status") == 0 ? with_tables(&mon, status_fn, arg)
                                            : with_tables(&mon, list_fn, arg);
    chorus_destroy(mon.ch);
    chorus_saga_destroy(mon.saga);
    return code;
}
