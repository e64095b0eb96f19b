/*
 * timer.c - durable timers: an event to emit at a given time, stored in
 * the participant's PostgreSQL schema with the effects that asked for it.
 *
 *   timers(key PK, fire_at, envelope, state)   state: pending -> fired
 *                                                       pending -> cancelled
 *                                                       pending -> failed (its
 *                                                       event cannot be emitted)
 *
 *   chorus_timer_schedule(tx, key, at, env)   INSERT ... ON CONFLICT: (re)arms
 *   chorus_timer_cancel(tx, key)              pending -> cancelled
 *   chorus__timers_poll(ch)                   due rows -> fired, and their
 *                                             events into the outbox, in one
 *                                             transaction
 *
 * A timer is scheduled or cancelled only if the transaction that asked
 * commits, and fires once: the row turns "fired" in the transaction that
 * writes its event to the outbox (FOR UPDATE SKIP LOCKED keeps several
 * instances of the service off each other's rows), and the relay
 * publishes it as any other event.  The event's id is fixed when it is
 * scheduled, so even a duplicate publish is one event to its consumers.
 * Times are wall-clock milliseconds; due means PostgreSQL's now() has
 * passed them, one clock for every instance.  Fired and cancelled rows
 * are kept as long as inbox rows (a deadline armed "once" must not be
 * armed again by a late event), then pruned with them (inbox.c).
 */
#include "chorus_int.h"
#include "saga_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMER_PAGE 100

static bool key_ok(const char *key) {
    return key && *key && strlen(key) <= 200;
}

chorus_err_t chorus__timer_arm(chorus_tx_t *tx, const char *key, int64_t fire_at_ms,
                               chorus_envelope_t *env, bool rearm) {
    if (!tx || !key_ok(key) || !env || fire_at_ms < 0 || fire_at_ms > CHORUS__TS_MAX_MS) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_INVALID_ARG;
    }
    chorus_t *ch = tx->ch;
    char *json = NULL;
    size_t len = 0;
    /* refused now, not when it fires: a timer that cannot be emitted */
    chorus_err_t rc = chorus__tx_adopt(tx, env);
    if (!rc)
        rc = chorus__saga_check_emit(ch, NULL, env, "timer not armed");
    if (!rc)
        rc = chorus_envelope_serialize(env, &json, &len);
    chorus_envelope_destroy(env);
    if (rc)
        return rc;
    if (len > ch->limits.max_bytes) {
        free(json);
        return CHORUS_ERR_TOO_LARGE;
    }
    char at[32];
    snprintf(at, sizeof(at), "%lld", (long long)fire_at_ms);
    const char *p[] = {key, at, json};
    /* queued: sent with the transaction's next statement */
    chorus__tx_defer(tx, rearm
        ? "INSERT INTO timers (key, fire_at, envelope) VALUES ($1,"
          " to_timestamp($2::double precision / 1000), $3) ON CONFLICT (key) DO UPDATE SET"
          " fire_at = EXCLUDED.fire_at, envelope = EXCLUDED.envelope, state = 'pending',"
          " created_at = now()"
        : "INSERT INTO timers (key, fire_at, envelope) VALUES ($1,"
          " to_timestamp($2::double precision / 1000), $3) ON CONFLICT (key) DO NOTHING",
        3, p);
    free(json);
    rc = tx->broken ? CHORUS_ERR_DB : CHORUS_OK;
    if (!rc && fire_at_ms < ch->store.next_timer_wall_ms)
        ch->store.next_timer_wall_ms = fire_at_ms; /* looked at again when due */
    return rc;
}

chorus_err_t chorus_timer_schedule(chorus_tx_t *tx, const char *key, int64_t fire_at_ms,
                                   chorus_envelope_t *env) {
    return chorus__timer_arm(tx, key, fire_at_ms, env, true);
}

chorus_err_t chorus_timer_cancel(chorus_tx_t *tx, const char *key) {
    if (!tx || !key_ok(key))
        return CHORUS_ERR_INVALID_ARG;
    const char *p[] = {key};
    chorus__tx_defer(tx, "UPDATE timers SET state = 'cancelled' WHERE key = $1"
                         " AND state = 'pending'", 1, p);
    return tx->broken ? CHORUS_ERR_DB : CHORUS_OK;
}

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
        rc = chorus__outbox_insert(tx, env); /* takes env */
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
    char page[16];
    snprintf(page, sizeof(page), "%d", TIMER_PAGE);
    const char *p[] = {page};
    chorus_err_t rc = chorus__tx_exec(tx,
        "UPDATE timers SET state = 'fired' WHERE key IN (SELECT key FROM timers"
        " WHERE state = 'pending' AND fire_at <= now() ORDER BY fire_at LIMIT $1::int"
        " FOR UPDATE SKIP LOCKED) RETURNING key, envelope", 1, p, &r);
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
    if (chorus__store_exec(ch, "SELECT 1 FROM timers WHERE state = 'pending'"
                           " AND fire_at <= now() LIMIT 1", 0, NULL, &r, &lost) != CHORUS_OK) {
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
