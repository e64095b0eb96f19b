/*
 * saga_run.c - the saga semantics a participant gets from its declaration:
 * step guards, the pivot's answer to a cancellation, the deadline.
 *
 * Every handler of a saga step runs behind a guard: one row per saga
 * instance (correlation id) and step in the participant's own schema,
 * saga_guards(correlation_id, step, state), locked for the delivery's
 * transaction, so two instances of a service serialize on it and the
 * guard's decision commits or rolls back with the handler's effects.
 *
 *   state        set when                          then
 *   (no row)     -                                 trigger: run the handler
 *   done         the trigger's handler succeeded   undo: run the compensation
 *   failed       it emitted one of "failures"      undo: nothing was done
 *   compensated  the compensation's handler ran    anything: nothing
 *   cancelled    an undo (or "refuses_after", or   trigger: refused, never run
 *                the pivot's acceptance) came first
 *   refused      a trigger came after "cancelled"  anything: nothing
 *   kept         the pivot ran and refused a       anything: nothing
 *                cancellation request
 *
 * So a compensation runs at most once and only for a step that took
 * effect, and an action that a cancellation overtook never runs: the
 * participant that sees the cancellation first records it (a semantic
 * lock) and refuses the late action.
 *
 * The pivot (the step that cannot be compensated) decides cancellations:
 *
 *   order (requested_by)     shipping (pivot)              earlier steps
 *     |  CancellationRequested  |
 *     |------------------------>| no row: record "cancelled",
 *     |                         | emit "accepted" ----------> compensate
 *     |                         | done:   emit "refused"      (nothing;
 *     |                         |         (saga completes)     the saga
 *                                                               completes)
 *
 * and, when its trigger arrives after the deadline the events carry in
 * metadata.deadline, it accepts the cancellation itself instead of
 * running.  Since only the pivot's acceptance (or failures before it)
 * can start compensations before it (saga_decl.c checks that), no
 * compensated step is ever next to a pivot that ran.
 *
 * The deadline: the saga's first event gets metadata.deadline (its
 * timestamp + "deadline.ms"), every event it causes inherits it, and the
 * deadline owner arms a durable timer (timer.c) for it in the transaction
 * that emits the first event; the timer, when it fires, emits the
 * cancellation request, and a terminal event emitted by the owner
 * cancels it.
 */
#include "chorus_int.h"
#include "saga_int.h"
#include "schema_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Locks the guard row of (instance, step), creating it empty: *state is
 * "" for a step not seen before.  Held until the transaction ends. */
static chorus_err_t guard_lock(chorus_tx_t *tx, const char *corr, const char *step,
                               char *state, size_t n) {
    const char *p[] = {corr, step};
    PGresult *r = NULL;
    chorus_err_t rc = chorus__tx_exec(tx,
        "INSERT INTO saga_guards (correlation_id, step, state) VALUES ($1, $2, '')"
        " ON CONFLICT (correlation_id, step) DO UPDATE SET updated_at = now()"
        " RETURNING state", 2, p, &r);
    if (!rc)
        snprintf(state, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

/* Queued: its answer is not needed, it goes out with the next statement
 * (its failure then breaks the transaction, which runs again). */
static chorus_err_t guard_set(chorus_tx_t *tx, const char *corr, const char *step,
                              const char *state) {
    const char *p[] = {corr, step, state};
    chorus__tx_defer(tx,
        "INSERT INTO saga_guards (correlation_id, step, state) VALUES ($1, $2, $3)"
        " ON CONFLICT (correlation_id, step) DO UPDATE SET state = $3, updated_at = now()",
        3, p);
    return tx->broken ? CHORUS_ERR_DB : CHORUS_OK;
}

chorus_outcome_t chorus__call_handler(chorus_t *ch, chorus_delivery_t *d,
                                      const chorus__handler_t *hd) {
    uint64_t t0 = chorus__mono_ns();
    d->ran = true;
    chorus_outcome_t out = hd->fn(ch, d, d->env, hd->opaque);
    uint64_t took = chorus__mono_ns() - t0;
    ch->stats.handler_ns += took;
    chorus__hist_observe(&ch->hist[CHORUS__HIST_HANDLER], CHORUS__HIST_HANDLER, took);
    int64_t lag = d->handled_ms - chorus_envelope_timestamp_ms(d->env);
    if (lag > 0)
        ch->stats.propagation_ms += (uint64_t)lag;
    /* a clock behind the producer's counts as no delay */
    chorus__hist_observe(&ch->hist[CHORUS__HIST_PROPAGATION], CHORUS__HIST_PROPAGATION,
                         lag > 0 ? (uint64_t)lag * 1000000u : 0);
    return out;
}

/* The pivot's answer ("accepted" or "refused"), caused by the delivery.
 * The request's reason goes with it when the answer's schema takes it
 * (the declaration was checked to take chorus' fixed reasons). */
static chorus_err_t answer(chorus_delivery_t *d, const char *type, const char *reason) {
    const char *agg = chorus_envelope_aggregate_id(d->env);
    int64_t version = chorus_envelope_version(d->env);
    chorus_envelope_t *ev;
    chorus_err_t rc = chorus__reason_event(type, agg, version, NULL, reason, &ev);
    if (!rc && !chorus__saga_data_ok(d->ch, ev, NULL, 0)) {
        chorus_envelope_destroy(ev);
        rc = chorus__reason_event(type, agg, version, NULL, "cancellation requested", &ev);
    }
    return rc ? rc : chorus__emit(d->tx, ev);
}

/* The reason a request gives, for the answer ("deadline passed", ...). */
static const char *request_reason(const chorus_envelope_t *env) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(chorus_envelope_data(env), "reason");
    return cJSON_IsString(r) && *r->valuestring ? r->valuestring : "cancellation requested";
}

static chorus_outcome_t db_trouble(chorus_delivery_t *d) {
    if (!d->error[0])
        snprintf(d->error, sizeof(d->error), "saga guard: an SQL statement failed");
    return CHORUS_RETRY_LATER;
}

/* The pivot accepts a cancellation: it will never run. */
static chorus_outcome_t accept_cancel(chorus_t *ch, chorus_delivery_t *d, const char *corr,
                                      const char *step, const char *reason) {
    const char *accepted = chorus_saga_cancellation_event(ch->saga, CHORUS_SAGA_CANCEL_ACCEPTED);
    if (guard_set(d->tx, corr, step, "cancelled") || answer(d, accepted, reason))
        return db_trouble(d);
    chorus__log_env(ch, CHORUS_LOG_NOTICE, d->env, "saga %s: step '%s' will not run (%s); "
                    "cancellation accepted: %s", corr, step, reason, accepted);
    return CHORUS_HANDLED;
}

/* The trigger of a step. */
static chorus_outcome_t on_action(chorus_t *ch, chorus_delivery_t *d, const chorus__handler_t *hd,
                                  const char *corr, size_t step, const char *state) {
    const char *name = chorus_saga_step_name(ch->saga, step);
    /* the simulation's mutations (debug.mutation): the guard forgets a
     * cancellation that came first, or that the action already ran */
    if ((strcmp(state, "cancelled") == 0 && chorus__mutated(ch, CHORUS__MUT_NO_OVERTAKE)) ||
        (strcmp(state, "done") == 0 && chorus__mutated(ch, CHORUS__MUT_INBOX_BYPASS)))
        state = "";
    if (*state) {
        if (strcmp(state, "cancelled") == 0) {
            chorus__log_env(ch, CHORUS_LOG_NOTICE, d->env, "saga %s: step '%s' refused: the saga "
                            "was cancelled before its trigger arrived", corr, name);
            return guard_set(d->tx, corr, name, "refused") ? db_trouble(d) : CHORUS_HANDLED;
        }
        chorus__log_env(ch, CHORUS_LOG_INFO, d->env, "saga %s: step '%s' is already %s", corr,
                        name, state);
        return CHORUS_HANDLED;
    }
    int64_t deadline = chorus_envelope_deadline_ms(d->env);
    if ((int)step == chorus_saga_pivot(ch->saga) && deadline && chorus_now_ms() >= deadline &&
        chorus_saga_cancellation_event(ch->saga, CHORUS_SAGA_CANCEL_ACCEPTED))
        return accept_cancel(ch, d, corr, name, "the deadline passed before the pivot ran");
    d->tx->saga_emit = CHORUS__EMIT_OTHER;
    chorus_outcome_t out = chorus__call_handler(ch, d, hd);
    if (out != CHORUS_HANDLED || d->tx->failed || d->tx->conflict)
        return out;
    if (d->tx->saga_emit != CHORUS__EMIT_SUCCESS && d->tx->saga_emit != CHORUS__EMIT_FAILURE) {
        /* it did nothing the saga can see: as if it had not run */
        chorus__log_env(ch, CHORUS_LOG_WARNING, d->env, "saga %s: step '%s' handled its trigger "
                        "but emitted neither its success nor a failure", corr, name);
        return CHORUS_HANDLED;
    }
    return guard_set(d->tx, corr, name, d->tx->saga_emit == CHORUS__EMIT_FAILURE ? "failed" : "done")
               ? db_trouble(d)
               : CHORUS_HANDLED;
}

/* A compensation trigger. */
static chorus_outcome_t on_undo(chorus_t *ch, chorus_delivery_t *d, const chorus__handler_t *hd,
                                const char *corr, size_t step, const char *state) {
    const char *name = chorus_saga_step_name(ch->saga, step);
    if (!*state) {
        chorus__log_env(ch, CHORUS_LOG_NOTICE, d->env, "saga %s: step '%s' has not run; nothing "
                        "to undo, and it will refuse to run", corr, name);
        return guard_set(d->tx, corr, name, "cancelled") ? db_trouble(d) : CHORUS_HANDLED;
    }
    if (strcmp(state, "done") != 0) {
        chorus__log_env(ch, CHORUS_LOG_INFO, d->env, "saga %s: step '%s' is %s; nothing to undo",
                        corr, name, state);
        return CHORUS_HANDLED;
    }
    chorus_outcome_t out = chorus__call_handler(ch, d, hd);
    if (out != CHORUS_HANDLED || d->tx->failed || d->tx->conflict)
        return out;
    return guard_set(d->tx, corr, name, "compensated") ? db_trouble(d) : CHORUS_HANDLED;
}

/* A cancellation request, at the pivot. */
static chorus_outcome_t on_request(chorus_t *ch, chorus_delivery_t *d, const char *corr,
                                   size_t step, const char *state) {
    const char *name = chorus_saga_step_name(ch->saga, step);
    if (!*state || (strcmp(state, "done") == 0 && chorus__mutated(ch, CHORUS__MUT_PIVOT_UNSAFE)))
        return accept_cancel(ch, d, corr, name, request_reason(d->env));
    if (strcmp(state, "done") == 0) {
        const char *refused =
            chorus_saga_cancellation_event(ch->saga, CHORUS_SAGA_CANCEL_REFUSED);
        if (guard_set(d->tx, corr, name, "kept") ||
            answer(d, refused, "the pivot already ran; the saga completes"))
            return db_trouble(d);
        chorus__log_env(ch, CHORUS_LOG_NOTICE, d->env, "saga %s: step '%s' already ran; "
                        "cancellation refused: %s", corr, name, refused);
        return CHORUS_HANDLED;
    }
    /* failed: its failure's compensations already run; cancelled,
     * refused, kept: answered before */
    chorus__log_env(ch, CHORUS_LOG_INFO, d->env, "saga %s: step '%s' is %s; the request "
                    "changes nothing", corr, name, state);
    return CHORUS_HANDLED;
}

chorus_outcome_t chorus__saga_noop(chorus_t *ch, chorus_delivery_t *d,
                                   const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)d, (void)env, (void)opaque;
    return CHORUS_HANDLED;
}

chorus_outcome_t chorus__saga_deliver(chorus_t *ch, chorus_delivery_t *d,
                                      const chorus__handler_t *hd) {
    size_t step = 0;
    chorus__guard_t g = ch->saga ? chorus__saga_guard(ch->saga, ch->service,
                                                      chorus_envelope_event_type(d->env), &step)
                                 : CHORUS__GUARD_NONE;
    if (g == CHORUS__GUARD_NONE)
        return chorus__call_handler(ch, d, hd);
    const char *corr = chorus__saga_instance(d->env);
    char state[32];
    if (guard_lock(d->tx, corr, chorus_saga_step_name(ch->saga, step), state, sizeof(state)))
        return db_trouble(d);
    switch (g) {
    case CHORUS__GUARD_ACTION:
        return on_action(ch, d, hd, corr, step, state);
    case CHORUS__GUARD_UNDO:
        return on_undo(ch, d, hd, corr, step, state);
    case CHORUS__GUARD_REQUEST:
        return on_request(ch, d, corr, step, state);
    case CHORUS__GUARD_REFUSE_AFTER:
        if (*state)
            return CHORUS_HANDLED;
        return guard_set(d->tx, corr, chorus_saga_step_name(ch->saga, step), "cancelled")
                   ? db_trouble(d)
                   : CHORUS_HANDLED;
    case CHORUS__GUARD_NONE:
        break;
    }
    return chorus__call_handler(ch, d, hd);
}

/* ---- what an emitted event does -------------------------------------- */

chorus_err_t chorus_saga_cancel(chorus_tx_t *tx, const char *correlation_id,
                                const char *aggregate_id, const char *reason) {
    if (!tx || !chorus_uuid_valid(correlation_id) || !chorus_uuid_valid(aggregate_id) || !reason ||
        !*reason)
        return CHORUS_ERR_INVALID_ARG;
    chorus_t *ch = tx->ch;
    const char *req = ch->saga ? chorus_saga_cancellation_event(ch->saga, CHORUS_SAGA_CANCEL_REQUEST)
                               : NULL;
    if (!req || !chorus__saga_produces(ch->saga, ch->service, req))
        return CHORUS_ERR_STATE; /* no cancellation declared, or not ours to ask */
    chorus_envelope_t *ev;
    chorus_err_t rc = chorus__reason_event(req, aggregate_id, 1, correlation_id, reason, &ev);
    return rc ? rc : chorus_tx_emit(tx, ev);
}
