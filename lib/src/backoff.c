/*
 * backoff.c - the reconnect policy (see backoff_int.h).
 */
#include "backoff_int.h"

#include <sys/random.h>

void chorus__backoff_init(chorus__backoff_t *b, long initial_ms, long max_ms) {
    b->initial_ms = initial_ms > 0 ? initial_ms : 1;
    b->max_ms = max_ms >= b->initial_ms ? max_ms : b->initial_ms;
    b->cur_ms = 0;
    b->next_ms = 0;
}

/* Between half of @p ms and all of it. */
static long jitter(long ms) {
    unsigned r = 0;
    if (!chorus__clock_random(&r, sizeof(r)) &&
        getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (unsigned)chorus__mono_ns();
    return ms / 2 + (long)(r % (unsigned)(ms / 2 + 1));
}

long chorus__backoff_failed(chorus__backoff_t *b, int64_t now_ms) {
    if (b->cur_ms <= 0)
        b->cur_ms = b->initial_ms;
    long delay = jitter(b->cur_ms);
    b->next_ms = now_ms + delay;
    b->cur_ms = b->cur_ms > b->max_ms / 2 ? b->max_ms : b->cur_ms * 2;
    return delay;
}

void chorus__backoff_reset(chorus__backoff_t *b) {
    b->cur_ms = 0;
    b->next_ms = 0;
}
