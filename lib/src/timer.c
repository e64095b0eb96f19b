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
 *   chorus__timers_poll(ch) (emit.c)          due rows -> fired, and their
 *                                             events emitted, in one
 *                                             transaction
 *
 * timer.c only stores timers; they fire in emit.c, since a fired event goes
 * the way every emitted event goes (and the saga arms timers from there).
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
