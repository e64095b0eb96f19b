/*
 * confirm.c - which publishes has the broker confirmed?
 *
 * In confirm mode the broker numbers a channel's publishes 1, 2, 3 ... and
 * answers with basic.ack or basic.nack carrying a delivery tag and a
 * `multiple` flag.  Quorum queues may confirm out of order: tag 7 alone,
 * then "everything up to 9", then tag 3 is already settled and must not be
 * reported twice.  The tracker keeps one slot per issued sequence number in
 * a ring, in order, so a tag finds its slot in O(1):
 *
 *     first_seq                                  next_seq
 *        v                                          v
 *     [ 4:pending | 5:settled | 6:pending | 7:settled ]   head -> slot of 4
 *
 * Settling marks slots; the head then advances over settled slots, so the
 * ring holds exactly the window from the oldest unsettled publish to the
 * newest.  Every item is reported exactly once.
 */
#include "confirm_int.h"

#include <stdlib.h>
#include <string.h>

void chorus__confirms_init(chorus__confirms_t *c) {
    memset(c, 0, sizeof(*c));
    c->first_seq = 1;
    c->next_seq = 1;
}

void chorus__confirms_free(chorus__confirms_t *c) {
    free(c->ring);
    chorus__confirms_init(c);
}

static chorus__confirm_slot_t *slot(const chorus__confirms_t *c, uint64_t seq) {
    return &c->ring[(c->head + (size_t)(seq - c->first_seq)) & (c->cap - 1)];
}

static bool grow(chorus__confirms_t *c) {
    size_t ncap = c->cap ? c->cap * 2 : 64;
    chorus__confirm_slot_t *n = calloc(ncap, sizeof(*n));
    if (!n)
        return false;
    for (size_t i = 0; i < c->count; i++)
        n[i] = c->ring[(c->head + i) & (c->cap - 1)];
    free(c->ring);
    c->ring = n;
    c->cap = ncap;
    c->head = 0;
    return true;
}

uint64_t chorus__confirms_add(chorus__confirms_t *c, void *item) {
    if (c->count == c->cap && !grow(c))
        return 0;
    uint64_t seq = c->next_seq++;
    c->count++;
    c->pending++;
    chorus__confirm_slot_t *s = slot(c, seq);
    s->item = item;
    s->settled = false;
    return seq;
}

void *chorus__confirms_get(const chorus__confirms_t *c, uint64_t seq) {
    if (seq < c->first_seq || seq >= c->next_seq)
        return NULL;
    const chorus__confirm_slot_t *s = slot(c, seq);
    return s->settled ? NULL : s->item;
}

static void advance(chorus__confirms_t *c) {
    while (c->count > 0 && c->ring[c->head].settled) {
        c->ring[c->head].item = NULL;
        c->head = (c->head + 1) & (c->cap - 1);
        c->first_seq++;
        c->count--;
    }
}

static int settle_one(chorus__confirms_t *c, uint64_t seq,
                      chorus__confirm_result_t res, chorus__settle_fn *fn,
                      void *opaque) {
    chorus__confirm_slot_t *s = slot(c, seq);
    if (s->settled)
        return 0;
    s->settled = true;
    c->pending--;
    void *item = s->item;
    s->item = NULL;
    if (fn)
        fn(item, res, opaque);
    return 1;
}

int chorus__confirms_settle(chorus__confirms_t *c, uint64_t tag, bool multiple,
                            chorus__confirm_result_t res, chorus__settle_fn *fn,
                            void *opaque) {
    if (tag >= c->next_seq || (tag == 0 && !multiple))
        return -1;
    int n = 0;
    if (multiple) {
        /* tag 0 with multiple means "all so far" (AMQP 0-9-1). */
        uint64_t last = tag == 0 ? c->next_seq - 1 : tag;
        for (uint64_t seq = c->first_seq; seq <= last; seq++)
            n += settle_one(c, seq, res, fn, opaque);
    } else if (tag >= c->first_seq) {
        n = settle_one(c, tag, res, fn, opaque);
    }
    advance(c);
    return n;
}

void chorus__confirms_reset(chorus__confirms_t *c,
                            void (*fn)(void *item, void *opaque), void *opaque) {
    for (size_t i = 0; i < c->count; i++) {
        chorus__confirm_slot_t *s = &c->ring[(c->head + i) & (c->cap - 1)];
        if (!s->settled && fn)
            fn(s->item, opaque);
        s->item = NULL;
        s->settled = false;
    }
    c->head = 0;
    c->count = 0;
    c->pending = 0;
    c->first_seq = 1;
    c->next_seq = 1;
}
