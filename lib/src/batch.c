/*
 * batch.c - the life of a batch of deliveries, and of each delivery in it.
 *
 * A batch (consumer.c drives it, from chorus_poll() only):
 *
 *   TAKEN ----HANDLE----> HANDLED ----SEND----> SENT ----SETTLE----> SETTLED
 *     |                      |                    |                     |
 *     | GIVE_BACK            |                    |                    ACK
 *     v                      |                    |                     v
 *   REQUEUED (nack, requeue) +-------LOSE---------+---------LOSE----> ACKED
 *                                   v
 *                                  VOID (tags dead with the channel)
 *
 *   TAKEN     deliveries taken from the backlog, decoded in order (a batch
 *             ends early at "consume.batch.max.decoded.bytes").
 *   HANDLE    plain: each handler ran.  durable: the batch's transaction
 *             committed: inbox rows claimed in one statement, handlers in
 *             savepoints (the first only where it ran SQL), emitted rows
 *             written in one INSERT sent with the COMMIT.  A conflict, or
 *             a lock wait of a later delivery that ran out (another
 *             instance holds the row), commits the deliveries before it
 *             and moves that one to a transaction of its own, so instances
 *             never wait on each other's batches in a circle.
 *   GIVE_BACK the store is down, or the transaction could not commit after
 *             "store.conflict.retries" careful runs: every delivery is
 *             nacked with requeue, none is counted.
 *   SEND      the handled deliveries' events (from memory, not read back),
 *             retry and DLQ copies, counted redeliveries, all handed to
 *             the publisher at once.
 *   SETTLE    the last of its publishes confirmed or failed: one wait for
 *             the whole batch.  It is not waited for in place: the poll
 *             loop reads frames and the next batch may be handled meanwhile
 *             (at most two batches are in flight).
 *   ACK       oldest batch first: one multiple ack when every publish went
 *             well, otherwise per delivery (a failed publish: nack, requeue).
 *   LOSE      the connection or the consume channel went: the broker
 *             requeues every unacked delivery by itself.
 *
 * A delivery:
 *
 *   RECEIVED --DECODE--> DECODED --SUCCEED--> HANDLED
 *      |  |                 |  |--DUPLICATE--> DUPLICATE
 *      |  |                 |  |--RETRY------> RETRY
 *      |  |                 |  +--REFUSE-----> DEAD
 *      |  +--RECOUNT--> RECOUNT                    |
 *      +--REFUSE--> REFUSED          RESET (batch runs again): back to DECODED
 *
 *   UNDECODE takes a decoded delivery back to RECEIVED (it waits for the
 *   next batch without holding its decoded envelope).
 */
#include "batch_int.h"

static const signed char BATCH[CHORUS__B_NSTATES][CHORUS__BE_NEVENTS] = {
    /*              HANDLE          GIVE_BACK          SEND            SETTLE
     *              ACK             LOSE */
    [CHORUS__B_TAKEN] = {CHORUS__B_HANDLED, CHORUS__B_REQUEUED, -1, -1, -1, CHORUS__B_VOID},
    [CHORUS__B_HANDLED] = {-1, -1, CHORUS__B_SENT, -1, -1, CHORUS__B_VOID},
    [CHORUS__B_SENT] = {-1, -1, -1, CHORUS__B_SETTLED, -1, CHORUS__B_VOID},
    [CHORUS__B_SETTLED] = {-1, -1, -1, -1, CHORUS__B_ACKED, CHORUS__B_VOID},
    [CHORUS__B_ACKED] = {-1, -1, -1, -1, -1, -1},
    [CHORUS__B_REQUEUED] = {-1, -1, -1, -1, -1, -1},
    [CHORUS__B_VOID] = {-1, -1, -1, -1, -1, -1},
};

static const signed char DELIVERY[CHORUS__D_NSTATES][CHORUS__DE_NEVENTS] = {
    /*                 DECODE  REFUSE  RECOUNT  SUCCEED  DUPLICATE  RETRY  RESET  UNDECODE */
    [CHORUS__D_RECEIVED] = {CHORUS__D_DECODED, CHORUS__D_REFUSED, CHORUS__D_RECOUNT, -1, -1,
                            CHORUS__D_RETRY, -1, CHORUS__D_RECEIVED},
    [CHORUS__D_DECODED] = {-1, CHORUS__D_DEAD, -1, CHORUS__D_HANDLED, CHORUS__D_DUPLICATE,
                           CHORUS__D_RETRY, CHORUS__D_DECODED, CHORUS__D_RECEIVED},
    [CHORUS__D_REFUSED] = {-1, -1, -1, -1, -1, -1, CHORUS__D_REFUSED, CHORUS__D_RECEIVED},
    [CHORUS__D_RECOUNT] = {-1, -1, -1, -1, -1, -1, CHORUS__D_RECOUNT, CHORUS__D_RECEIVED},
    [CHORUS__D_HANDLED] = {-1, CHORUS__D_DEAD, -1, -1, -1, -1, CHORUS__D_DECODED, -1},
    [CHORUS__D_DUPLICATE] = {-1, -1, -1, -1, -1, -1, CHORUS__D_DECODED, -1},
    [CHORUS__D_RETRY] = {-1, CHORUS__D_DEAD, -1, -1, -1, -1, CHORUS__D_DECODED, -1},
    [CHORUS__D_DEAD] = {-1, -1, -1, -1, -1, -1, CHORUS__D_DECODED, -1},
};

int chorus__batch_next(chorus__bstate_t st, chorus__bevent_t ev) {
    if ((unsigned)st >= CHORUS__B_NSTATES || (unsigned)ev >= CHORUS__BE_NEVENTS)
        return -1;
    return BATCH[st][ev];
}

int chorus__delivery_next(chorus__dstate_t st, chorus__devent_t ev) {
    if ((unsigned)st >= CHORUS__D_NSTATES || (unsigned)ev >= CHORUS__DE_NEVENTS)
        return -1;
    return DELIVERY[st][ev];
}

bool chorus__batch_done(chorus__bstate_t st) {
    return st == CHORUS__B_ACKED || st == CHORUS__B_REQUEUED || st == CHORUS__B_VOID;
}

const char *chorus__bstate_name(chorus__bstate_t st) {
    static const char *const names[] = {"taken", "handled", "sent", "settled",
                                        "acked", "requeued", "void"};
    return (unsigned)st < CHORUS__B_NSTATES ? names[st] : "?";
}

const char *chorus__dstate_name(chorus__dstate_t st) {
    static const char *const names[] = {"received", "decoded", "refused", "recount",
                                        "handled", "duplicate", "retry", "dead"};
    return (unsigned)st < CHORUS__D_NSTATES ? names[st] : "?";
}
