/*
 * retry.c - when does a message that asked to be retried come back?
 *
 * Attempt n (1-based) failing with "retry later" goes to retry queue
 * min(n, ndelays) - 1, whose TTL is that delay; the queue dead-letters it back
 * into the service queue carrying attempt n + 1.  Once attempt max_attempts
 * has failed, or when no delays are configured, the message is
 * dead-lettered with reason "retries-exhausted".
 *
 *   attempt 1 --fail--> retry[0] (1 s) --> attempt 2 --fail--> retry[1] (5 s)
 *   --> attempt 3 --fail--> retry[2] (30 s) --> attempt 4 --fail--> DLQ
 */
#include "retry_int.h"

chorus__retry_decision_t chorus__retry_decide(const chorus__retry_schedule_t *s,
                                              int attempt) {
    chorus__retry_decision_t d = {.dead_letter = true};
    if (attempt < 1)
        attempt = 1;
    if (s->ndelays == 0 || attempt >= s->max_attempts)
        return d;
    d.dead_letter = false;
    d.delay_index = attempt <= s->ndelays ? attempt - 1 : s->ndelays - 1;
    d.delay_ms = s->delays_ms[d.delay_index];
    d.next_attempt = attempt + 1;
    return d;
}

void chorus__retry_schedule_from_conf(const chorus_conf_t *conf,
                                      chorus__retry_schedule_t *s) {
    int n = chorus__parse_delays(chorus__conf_str(conf, "retry.delays.ms"),
                                 s->delays_ms, CHORUS__MAX_DELAYS);
    s->ndelays = n < 0 ? 0 : n;
    s->max_attempts = (int)chorus__conf_int(conf, "retry.max.attempts");
}
