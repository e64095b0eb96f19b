/*
 * stats.c - the participant's counters, by name.
 *
 * chorus_stats_t (caller-allocated) keeps its first twelve fields for
 * ever; every counter, those and the later ones, is listed here once, with
 * where it lives, so adding one is a line in this table and a field in
 * chorus__stats_t (internal: free to grow).
 */
#include "chorus_int.h"

#include <stddef.h>
#include <string.h>

typedef enum { IN_STATS, IN_SQL } where_t;

static const struct {
    const char *name, *help;
    where_t where;
    size_t off;
} STATS[] = {
#define S(f, h) {#f, h, IN_STATS, offsetof(chorus__stats_t, f)}
    S(handled, "deliveries acked after their handler succeeded"),
    S(duplicates, "deliveries skipped as already handled (inbox)"),
    S(retried, "deliveries sent to a retry queue"),
    S(dead_lettered, "deliveries sent to the DLQ"),
    S(published, "publishes confirmed by the broker"),
    S(nacked, "publishes nacked by the broker"),
    S(returned, "publishes returned unroutable"),
    S(reconnects, "successful reconnects to the broker after a loss"),
    S(handler_ns, "total time spent in handlers, ns"),
    S(propagation_ms, "total delay from an event's timestamp to its handling, ms"),
    S(conflicts, "handler runs repeated after a conflict"),
    S(relayed, "outbox rows published by the relay"),
    S(batches, "batches of deliveries acked"),
    S(transactions, "batch transactions committed (more than batches: conflicts split them)"),
    S(careful_runs, "batches run again with a savepoint per delivery after a broken transaction"),
    S(store_reconnects, "successful reconnects to PostgreSQL after a loss"),
#undef S
    {"sql_round_trips", "round trips to PostgreSQL on the transaction connection", IN_SQL,
     offsetof(chorus__sql_t, round_trips)},
    {"sql_statements", "statements sent on the transaction connection", IN_SQL,
     offsetof(chorus__sql_t, statements)},
    {"splits", "deliveries moved to a transaction of their own: a lock wait while the "
               "transaction held earlier deliveries' locks ran out (store.lock.wait.ms), or "
               "another conflict", IN_STATS, offsetof(chorus__stats_t, splits)},
    /* appended, never inserted: a stat's index stays what it was */
    {"blocked_periods", "times the broker blocked publishing (connection.blocked)", IN_STATS,
     offsetof(chorus__stats_t, blocked_periods)},
    {"blocked_ms", "total time publishing was blocked by the broker, ms", IN_STATS,
     offsetof(chorus__stats_t, blocked_ms)},
};

#define NSTATS (sizeof(STATS) / sizeof(STATS[0]))

size_t chorus_stat_count(void) { return NSTATS; }
const char *chorus_stat_name(size_t i) { return i < NSTATS ? STATS[i].name : NULL; }
const char *chorus_stat_help(size_t i) { return i < NSTATS ? STATS[i].help : NULL; }

uint64_t chorus_stat_value(const chorus_t *ch, size_t i) {
    if (!ch || i >= NSTATS)
        return 0;
    const char *base = STATS[i].where == IN_STATS ? (const char *)&ch->stats
                                                  : (const char *)&ch->store.sql;
    uint64_t v;
    memcpy(&v, base + STATS[i].off, sizeof(v));
    return v;
}

chorus_err_t chorus_stat_get(const chorus_t *ch, const char *name, uint64_t *value) {
    if (!ch || !name || !value)
        return CHORUS_ERR_INVALID_ARG;
    for (size_t i = 0; i < NSTATS; i++)
        if (strcmp(STATS[i].name, name) == 0) {
            *value = chorus_stat_value(ch, i);
            return CHORUS_OK;
        }
    return CHORUS_ERR_INVALID_ARG;
}

void chorus_stats(const chorus_t *ch, chorus_stats_t *out) {
    *out = (chorus_stats_t){
        .handled = ch->stats.handled,
        .duplicates = ch->stats.duplicates,
        .retried = ch->stats.retried,
        .dead_lettered = ch->stats.dead_lettered,
        .published = ch->stats.published,
        .nacked = ch->stats.nacked,
        .returned = ch->stats.returned,
        .reconnects = ch->stats.reconnects,
        .handler_ns = ch->stats.handler_ns,
        .propagation_ms = ch->stats.propagation_ms,
        .conflicts = ch->stats.conflicts,
        .relayed = ch->stats.relayed,
    };
}

const char *chorus_last_error(const chorus_t *ch) { return ch ? ch->last_error : ""; }
const char *chorus_last_sqlstate(const chorus_t *ch) { return ch ? ch->last_sqlstate : ""; }
