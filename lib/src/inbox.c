/*
 * inbox.c - "has this consumer handled this event before?"
 *
 * The inbox row (event_id, consumer) is inserted in the same transaction as
 * the handler's effects.  If the transaction commits, the event is handled
 * exactly once for this consumer: a redelivery finds the row and is acked
 * without running the handler.  If it rolls back, so does the row, and the
 * redelivery runs the handler again.  Rows older than the retention are
 * pruned; the broker's redeliveries come long before that.
 */
#include "chorus_int.h"

#include <stdio.h>
#include <string.h>

int chorus__inbox_claim(chorus_tx_t *tx, const char *event_id) {
    const char *p[] = {event_id, tx->ch->service};
    PGresult *r = NULL;
    bool lost;
    chorus_err_t rc = chorus__pg_exec(tx->ch, tx->pg,
                                      "INSERT INTO inbox (event_id, consumer) VALUES ($1, $2) "
                                      "ON CONFLICT DO NOTHING",
                                      2, p, &r, &lost);
    if (rc) {
        chorus__tx_note(tx, rc, lost);
        return -1;
    }
    int claimed = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    return claimed;
}

void chorus__inbox_prune(chorus_t *ch) {
    char hours[32];
    snprintf(hours, sizeof(hours), "%ld", chorus__conf_int(ch->conf, "store.inbox.retention.hours"));
    const char *p[] = {hours};
    PGresult *r = NULL;
    bool lost;
    if (chorus__pg_exec(ch, ch->store.pg,
                        "DELETE FROM inbox WHERE processed_at < now() - make_interval(hours => $1::int)",
                        1, p, &r, &lost) == CHORUS_OK) {
        if (strcmp(PQcmdTuples(r), "0") != 0)
            chorus__log(ch, CHORUS_LOG_INFO, "inbox: pruned %s rows", PQcmdTuples(r));
        PQclear(r);
    } else if (lost) {
        chorus__store_lost(ch, "inbox prune failed");
        return;
    }
    /* Published outbox rows, commands' idempotency keys and settled timers
     * are kept as long as inbox rows, then go too; saga guards as long as
     * store.saga.retention.hours says. */
    if (chorus__pg_exec(ch, ch->store.pg,
                        "DELETE FROM outbox WHERE published_at < now() - make_interval(hours => $1::int)",
                        1, p, NULL, &lost) != CHORUS_OK && lost) {
        chorus__store_lost(ch, "outbox prune failed");
        return;
    }
    if (chorus__pg_exec(ch, ch->store.pg,
                        "DELETE FROM idempotency WHERE created_at < now() - make_interval(hours => $1::int)",
                        1, p, NULL, &lost) != CHORUS_OK && lost)
        chorus__store_lost(ch, "idempotency prune failed");
    char guard_hours[32];
    snprintf(guard_hours, sizeof(guard_hours), "%ld",
             chorus__conf_int(ch->conf, "store.saga.retention.hours"));
    const char *gp[] = {guard_hours};
    if (chorus__pg_exec(ch, ch->store.pg,
                        "DELETE FROM saga_guards WHERE updated_at < now() - make_interval(hours => $1::int)",
                        1, gp, NULL, &lost) != CHORUS_OK && lost) {
        chorus__store_lost(ch, "saga_guards prune failed");
        return;
    }
    if (chorus__pg_exec(ch, ch->store.pg,
                        "DELETE FROM timers WHERE state <> 'pending'"
                        " AND created_at < now() - make_interval(hours => $1::int)",
                        1, p, NULL, &lost) != CHORUS_OK && lost)
        chorus__store_lost(ch, "timers prune failed");
}
