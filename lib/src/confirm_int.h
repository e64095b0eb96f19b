/*
 * confirm_int.h - publisher-confirm bookkeeping (pure; no I/O).
 */
#ifndef CHORUS_CONFIRM_INT_H
#define CHORUS_CONFIRM_INT_H

#include "common_int.h"

typedef enum {
    CHORUS__CONFIRM_ACK = 0,
    CHORUS__CONFIRM_NACK = 1
} chorus__confirm_result_t;

/* Called once per settled publish, in sequence order of settlement. */
typedef void(chorus__settle_fn)(void *item, chorus__confirm_result_t res,
                                void *opaque);

typedef struct {
    void *item;
    bool settled;
} chorus__confirm_slot_t;

typedef struct {
    chorus__confirm_slot_t *ring;
    size_t cap;       /* power of two */
    size_t head;      /* ring index of sequence number first_seq */
    size_t count;     /* slots from first_seq to next_seq - 1 */
    size_t pending;   /* of those, not yet settled */
    uint64_t first_seq;
    uint64_t next_seq;
} chorus__confirms_t;

void chorus__confirms_init(chorus__confirms_t *c);
void chorus__confirms_free(chorus__confirms_t *c);
/* Records a publish; returns its sequence number (1, 2, ...), 0 on ENOMEM. */
uint64_t chorus__confirms_add(chorus__confirms_t *c, void *item);
/* Applies basic.ack / basic.nack.  Returns how many publishes it settled,
 * or -1 when @p tag was never issued (a protocol error). */
int chorus__confirms_settle(chorus__confirms_t *c, uint64_t tag, bool multiple,
                            chorus__confirm_result_t res,
                            chorus__settle_fn *fn, void *opaque);
/* The item of a pending sequence number, or NULL. */
void *chorus__confirms_get(const chorus__confirms_t *c, uint64_t seq);
/* Unsettled publishes, oldest first, handed to fn (for republishing after a
 * lost channel); the tracker restarts at sequence 1. */
void chorus__confirms_reset(chorus__confirms_t *c,
                            void (*fn)(void *item, void *opaque), void *opaque);
static inline size_t chorus__confirms_pending(const chorus__confirms_t *c) {
    return c->pending;
}

#endif
