/*
 * backoff_int.h - the one reconnect policy: the broker connection, the
 * PostgreSQL connections, the wait at start-up and the tools all retry the
 * same way.  After a failure the next attempt comes after the current
 * delay, drawn between half of it and all of it (so instances that lost
 * the same server do not come back in step), and the delay doubles up to
 * its maximum; a success starts it again from the initial delay.  Pure.
 */
#ifndef CHORUS_BACKOFF_INT_H
#define CHORUS_BACKOFF_INT_H

#include "common_int.h"

typedef struct {
    long initial_ms, max_ms;
    long cur_ms;          /* the next delay; 0: initial_ms */
    int64_t next_ms;      /* monotonic: no attempt before this */
} chorus__backoff_t;

void chorus__backoff_init(chorus__backoff_t *b, long initial_ms, long max_ms);
/* A failure at @p now_ms: returns the delay until the next attempt. */
long chorus__backoff_failed(chorus__backoff_t *b, int64_t now_ms);
void chorus__backoff_reset(chorus__backoff_t *b);
static inline bool chorus__backoff_due(const chorus__backoff_t *b, int64_t now_ms) {
    return now_ms >= b->next_ms;
}

#endif
