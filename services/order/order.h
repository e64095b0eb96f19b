/*
 * order.h - the order service's parts:
 *
 *   aggregate.c  the event-sourced Order (write side) and the
 *                order_summaries projection (read side), kept in step in
 *                the same transaction, rebuildable from the event store
 *   main.c       the participant: completes or cancels orders on the
 *                saga's events, and enforces the saga deadline
 *   cli.c        place, simulate, cancel, list, rebuild-projections
 */
#ifndef ORDER_H
#define ORDER_H

#include "participants.h"

typedef struct {
    char status[16];  /* placed | completed | cancelled */
    long long total;
    int items;
    char customer[37];
    char correlation[37]; /* the saga instance: OrderPlaced's correlation id */
} order_state_t;

extern const chorus_aggregate_type_t ORDER_TYPE;

/* Schema of the order service's own tables (besides chorus'). */
chorus_err_t order_prepare_tables(chorus_t *ch);
/* Appends @p env (taken) to order @p id at @p expected_version and updates
 * the projection; @p state is the loaded aggregate. */
chorus_err_t order_append(chorus_tx_t *tx, order_state_t *state, int64_t expected_version,
                          chorus_envelope_t *env);
/* Loads order @p id; *versionp is 0 when it does not exist. */
chorus_err_t order_load(chorus_tx_t *tx, const char *id, order_state_t *state,
                        int64_t *versionp);
/* Cancels @p id when it is still placed; emits OrderCancelled{reason} in the
 * order's saga (its correlation id), caused by @p causation when not NULL
 * (inside a handler chorus fills in the delivery as the cause).  *versionp,
 * when given, is the order's version before (0: no such order). */
chorus_err_t order_cancel(chorus_tx_t *tx, const char *id, const char *reason,
                          const char *causation, bool *done, int64_t *versionp);
/* TRUNCATE order_summaries and replay the event store into it. */
chorus_err_t order_rebuild_projection(chorus_tx_t *tx, long *events);

int order_run(int argc, char **argv);
int cli_main(int argc, char **argv);

#endif
