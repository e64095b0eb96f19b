/*
 * retry_int.h - the retry schedule (pure; no I/O).
 */
#ifndef CHORUS_RETRY_INT_H
#define CHORUS_RETRY_INT_H

#include "conf_int.h"

typedef struct {
    long delays_ms[CHORUS__MAX_DELAYS];
    int ndelays;
    int max_attempts;
} chorus__retry_schedule_t;

typedef struct {
    bool dead_letter;  /* true: no attempts left */
    int delay_index;   /* which retry queue, when !dead_letter */
    long delay_ms;
    int next_attempt;  /* the attempt number the retried message carries */
} chorus__retry_decision_t;

/* @p attempt is the attempt that just failed (1 = first delivery). */
chorus__retry_decision_t chorus__retry_decide(const chorus__retry_schedule_t *s,
                                              int attempt);
/* From "retry.delays.ms" and "retry.max.attempts". */
void chorus__retry_schedule_from_conf(const chorus_conf_t *conf,
                                      chorus__retry_schedule_t *s);

#endif
