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
#include <stdlib.h>
#include <string.h>

int chorus__inbox_claim(chorus_tx_t *tx, const char *event_id) {
    const char *p[] = {event_id, tx->ch->service};
    PGresult *r = NULL;
    if (chorus__tx_exec(tx, "INSERT INTO inbox (event_id, consumer) VALUES ($1, $2) "
                            "ON CONFLICT DO NOTHING", 2, p, &r))
        return -1;
    int claimed = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    return claimed;
}

static const char *id_at(const void *ids, size_t i) { return ((const char *const *)ids)[i]; }

bool chorus__inbox_claim_all(chorus_tx_t *tx, const char *const *ids, size_t n, bool *fresh) {
    char *arr = chorus__uuid_array(n, id_at, ids);
    if (!arr) {
        tx->failed = tx->broken = true;
        return false;
    }
    const char *p[] = {arr, tx->ch->service};
    PGresult *r = NULL;
    /* Sorted: two instances claiming overlapping batches (redeliveries)
     * take the index entries in one order and cannot deadlock. */
    chorus_err_t rc = chorus__tx_exec(tx,
        "INSERT INTO inbox (event_id, consumer) SELECT DISTINCT id, $2 FROM "
        "unnest($1::uuid[]) AS id ORDER BY id ON CONFLICT DO NOTHING RETURNING event_id", 2, p, &r);
    free(arr);
    if (rc)
        return false;
    int got = PQntuples(r);
    memset(fresh, 0, n * sizeof(*fresh));
    /* each id claimed now is fresh on its first copy in the batch only */
    for (int k = 0; k < got; k++)
        for (size_t i = 0; i < n; i++)
            if (strcmp(PQgetvalue(r, k, 0), ids[i]) == 0) {
                fresh[i] = true;
                break;
            }
    PQclear(r);
    return true;
}

void chorus__inbox_unclaim(chorus_tx_t *tx, const char *event_id) {
    const char *p[] = {event_id, tx->ch->service};
    chorus__tx_defer(tx, "DELETE FROM inbox WHERE event_id = $1 AND consumer = $2", 2, p);
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
        if (chorus__store_exec(ch, PRUNE[i].sql, 1, p, &r, &lost) == CHORUS_OK) {
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
