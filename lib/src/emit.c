/*
 * emit.c - the way out.  Every event a participant emits goes through
 * chorus__emit(), in the transaction that causes it, whoever emits it:
 * a handler (chorus_emit), the application (chorus_tx_emit), the event
 * store, the saga itself (the pivot's answers, a cancellation request),
 * a due timer.
 *
 *   contract.c   the flow's ids and the declared data
 *   the saga     the event's role for the guard of the delivery being
 *                handled (its step's success or a failure); the saga's
 *                first event records the first step as done, carries the
 *                deadline and, at the deadline owner, arms the timer that
 *                will ask for the cancellation; a terminal event cancels it
 *   outbox.c     a row in memory, written with the COMMIT and published
 *                from memory after it
 *
 * Due timers fire here too (timer.c only stores them): their events go
 * the same way, so the saga sees a fired event as any other.
 *
 *   saga_run.c, consumer.c, eventstore.c, chorus.c
 *         |
 *       emit.c  ->  timer.c, outbox.c, contract.c, tx.c
 */
#include "chorus_int.h"
#include "saga_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMER_PAGE 100

/* The events chorus writes itself (a cancellation request, the pivot's
 * answers): @p type with data {"reason": @p reason}, in saga instance
 * @p corr when not NULL (else the cause's, filled in on emit). */
chorus_err_t chorus__reason_event(const char *type, const char *aggregate, int64_t version,
                                 const char *corr, const char *reason, chorus_envelope_t **evp) {
    *evp = NULL;
    cJSON *data = cJSON_CreateObject();
    if (!data || !cJSON_AddStringToObject(data, "reason", reason)) {
        cJSON_Delete(data);
        return CHORUS_ERR_NOMEM;
    }
    chorus_error_t *err = NULL;
    chorus_envelope_t *ev = chorus_envelope_new_json(type, aggregate, version, data, &err);
    chorus_err_t rc = ev ? CHORUS_OK : err ? chorus_error_code(err) : CHORUS_ERR_NOMEM;
    chorus_error_destroy(err);
    if (!rc && corr && (rc = chorus_envelope_set_correlation_id(ev, corr))) {
        chorus_envelope_destroy(ev);
        return rc;
    }
    *evp = ev;
    return rc;
}

static chorus_err_t deadline_key(const char *corr, char *key, size_t n) {
    return snprintf(key, n, "saga-deadline:%s", corr) < (int)n ? CHORUS_OK : CHORUS_ERR_INVALID_ARG;
}

static chorus_err_t arm_deadline(chorus_tx_t *tx, const chorus_envelope_t *cause, int64_t deadline) {
    const chorus_saga_t *s = tx->ch->saga;
    const char *corr = chorus__saga_instance(cause);
    char key[128];
    chorus_err_t rc = deadline_key(corr, key, sizeof(key));
    if (rc)
        return rc;
    chorus_envelope_t *ev;
    if ((rc = chorus__reason_event(chorus__saga_deadline_event(s), chorus_envelope_aggregate_id(cause),
                           chorus_envelope_version(cause), corr, "deadline passed", &ev)))
        return rc;
    if (chorus_envelope_set_causation_id(ev, chorus_envelope_event_id(cause)) ||
        chorus_envelope_set_deadline_ms(ev, deadline)) {
        chorus_envelope_destroy(ev);
        return CHORUS_ERR_NOMEM;
    }
    return chorus__timer_arm(tx, key, deadline, ev, false);
}

static chorus_err_t saga_starts(chorus_tx_t *tx, chorus_envelope_t *env) {
    chorus_t *ch = tx->ch;
    const chorus_saga_t *s = ch->saga;
    const char *p[] = {chorus__saga_instance(env), chorus_saga_step_name(s, 0)};
    /* a record there (the saga already started, or was cancelled) stays */
    chorus__tx_defer(tx, "INSERT INTO saga_guards (correlation_id, step, state)"
                         " VALUES ($1, $2, 'done') ON CONFLICT DO NOTHING", 2, p);
    chorus_err_t rc = tx->broken ? CHORUS_ERR_DB : CHORUS_OK;
    if (!rc)
        rc = chorus__saga_stamp(ch, env);
    int64_t deadline = chorus_envelope_deadline_ms(env);
    if (rc || !deadline || !chorus_saga_deadline_ms(s) ||
        strcmp(chorus_saga_deadline_owner(s), ch->service) != 0)
        return rc;
    return arm_deadline(tx, env, deadline);
}

static chorus_err_t check_data(chorus_tx_t *tx, const chorus_envelope_t *env) {
    chorus_err_t rc = chorus__saga_check_emit(tx->ch, tx->d, env, "not emitted");
    if (rc)
        tx->invalid_emit = tx->failed = true;
    return rc;
}

/* What the event does to the saga, before it becomes a row. */
static chorus_err_t saga_moves(chorus_tx_t *tx, chorus_envelope_t *env) {
    chorus_t *ch = tx->ch;
    chorus_err_t rc = check_data(tx, env);
    if (rc || !ch->saga)
        return rc;
    const chorus_saga_t *s = ch->saga;
    const char *type = chorus_envelope_event_type(env);
    size_t step = 0;
    chorus__emit_t role = chorus__saga_emit_role(s, ch->service, type, &step);
    if (role != CHORUS__EMIT_OTHER)
        tx->saga_emit = role; /* read by the guard of the delivery being handled */
    if (chorus__saga_starts(ch, env))
        return saga_starts(tx, env);
    if (chorus_saga_is_terminal(s, type) && chorus_saga_deadline_ms(s) &&
        strcmp(chorus_saga_deadline_owner(s), ch->service) == 0) {
        char key[128];
        if (deadline_key(chorus__saga_instance(env), key, sizeof(key)) == CHORUS_OK)
            return chorus_timer_cancel(tx, key);
    }
    return CHORUS_OK;
}

chorus_err_t chorus__emit(chorus_tx_t *tx, chorus_envelope_t *env) {
    chorus_err_t rc = chorus__tx_adopt(tx, env);
    if (!rc)
        rc = saga_moves(tx, env);
    if (rc) {
        if (!tx->too_large && !tx->invalid_emit)
            tx->failed = true;
        chorus_envelope_destroy(env);
        return rc;
    }
    return chorus__outbox_add(tx, env); /* takes env */
}

chorus_err_t chorus_tx_emit(chorus_tx_t *tx, chorus_envelope_t *env) {
    if (!tx || !env) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_INVALID_ARG;
    }
    return chorus__emit(tx, env);
}

/* ---- due timers ------------------------------------------------------ */

/* One due timer's event into the outbox: a row that cannot be emitted
 * (edited by hand, or a schema tightened since it was armed) is refused
 * before any SQL (outbox rows are written at commit), marked "failed",
 * and the others still fire. */
static chorus_err_t fire_one(chorus_t *ch, chorus_tx_t *tx, const char *key, const char *json) {
    chorus_envelope_t *env = NULL;
    chorus_error_t *err = NULL;
    chorus_err_t rc = chorus__envelope_parse(json, strlen(json), &ch->limits, ch->max_decoded,
                                             &env, &err);
    if (!rc) {
        chorus_envelope_set_timestamp_ms(env, chorus_now_ms()); /* when it happened */
        rc = chorus__emit(tx, env); /* takes env */
        if (!rc)
            return CHORUS_OK;
        if (tx->broken)
            return CHORUS_ERR_DB;
        tx->failed = tx->invalid_emit = tx->too_large = false; /* this row only */
    }
    chorus__log(ch, CHORUS_LOG_ERR, "timer '%s' cannot be emitted (%s); marked failed", key,
                err ? chorus_error_string(err) : chorus_strerror(rc));
    chorus_error_destroy(err);
    const char *p[] = {key};
    chorus__tx_defer(tx, "UPDATE timers SET state = 'failed' WHERE key = $1", 1, p);
    return tx->broken ? CHORUS_ERR_DB : CHORUS_OK;
}

/* One page of due timers: their events into the outbox, in one
 * transaction; the number fired, or -1. */
static int fire_page(chorus_t *ch) {
    chorus_tx_t *tx;
    if (chorus_tx_begin(ch, &tx))
        return -1;
    tx->internal = true; /* its events are published without waiting */
    PGresult *r = NULL;
    char page[16], now[24];
    snprintf(page, sizeof(page), "%d", TIMER_PAGE);
    const char *p[] = {page, chorus__sim_now(now, sizeof(now))};
    chorus_err_t rc = chorus__tx_exec(tx,
        "UPDATE timers SET state = 'fired' WHERE key IN (SELECT key FROM timers"
        " WHERE state = 'pending' AND fire_at <= " CHORUS__SQL_NOW("$2")
        " ORDER BY fire_at, key LIMIT $1::int FOR UPDATE SKIP LOCKED) RETURNING key, envelope",
        2, p, &r);
    int n = rc ? 0 : PQntuples(r);
    for (int i = 0; !rc && i < n; i++)
        rc = fire_one(ch, tx, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    PQclear(r);
    if (rc) {
        chorus_tx_rollback(tx);
        return -1;
    }
    if (chorus_tx_commit(tx))
        return -1;
    if (n)
        chorus__log(ch, CHORUS_LOG_INFO, "timers: %d fired", n);
    return n;
}

/* One statement, no transaction: is any timer due? */
static bool any_due(chorus_t *ch) {
    PGresult *r = NULL;
    bool lost = false;
    char now[24];
    const char *p[] = {chorus__sim_now(now, sizeof(now))};
    if (chorus__store_exec(ch, "SELECT 1 FROM timers WHERE state = 'pending'"
                           " AND fire_at <= " CHORUS__SQL_NOW("$1") " LIMIT 1",
                           1, p, &r, &lost) != CHORUS_OK) {
        if (lost)
            chorus__store_lost(ch, "timer check failed");
        return false;
    }
    bool due = PQntuples(r) > 0;
    PQclear(r);
    return due;
}

void chorus__timers_poll(chorus_t *ch) {
    chorus__store_t *s = &ch->store;
    int64_t mono = chorus__mono_ms(), wall = chorus_now_ms();
    if (mono < s->next_timer_ms && wall < s->next_timer_wall_ms)
        return;
    s->next_timer_ms = mono + chorus__conf_int(ch->conf, "store.timer.interval.ms");
    s->next_timer_wall_ms = INT64_MAX;
    for (int page = 0; page < 4 && any_due(ch); page++)
        if (fire_page(ch) < TIMER_PAGE)
            break;
}
