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

/*
 * What is pruned, and after how long: inbox rows (a duplicate arriving
 * later is no longer recognised), with them published outbox rows,
 * commands' idempotency keys and settled timers; saga guards after their
 * own, longer, retention.
 */
static const struct {
    const char *table, *sql, *retention;
} PRUNE[] = {
    {"inbox", "DELETE FROM inbox WHERE processed_at < now() - make_interval(hours => $1::int)",
     "store.inbox.retention.hours"},
    {"outbox", "DELETE FROM outbox WHERE published_at < now() - make_interval(hours => $1::int)",
     "store.inbox.retention.hours"},
    {"idempotency",
     "DELETE FROM idempotency WHERE created_at < now() - make_interval(hours => $1::int)",
     "store.inbox.retention.hours"},
    {"timers", "DELETE FROM timers WHERE state <> 'pending'"
               " AND created_at < now() - make_interval(hours => $1::int)",
     "store.inbox.retention.hours"},
    {"saga_guards",
     "DELETE FROM saga_guards WHERE updated_at < now() - make_interval(hours => $1::int)",
     "store.saga.retention.hours"},
};

void chorus__inbox_prune(chorus_t *ch) {
    for (size_t i = 0; i < sizeof(PRUNE) / sizeof(PRUNE[0]); i++) {
        char hours[32], what[64];
        snprintf(hours, sizeof(hours), "%ld", chorus__conf_int(ch->conf, PRUNE[i].retention));
        const char *p[] = {hours};
        PGresult *r = NULL;
        bool lost = false;
        if (chorus__pg_exec(ch, ch->store.pg, PRUNE[i].sql, 1, p, &r, &lost) == CHORUS_OK) {
            if (strcmp(PQcmdTuples(r), "0") != 0)
                chorus__log(ch, CHORUS_LOG_INFO, "%s: pruned %s rows", PRUNE[i].table,
                            PQcmdTuples(r));
            PQclear(r);
        } else if (lost) {
            snprintf(what, sizeof(what), "%s prune failed", PRUNE[i].table);
            chorus__store_lost(ch, what);
            return;
        }
    }
}
