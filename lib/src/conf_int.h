/*
 * conf_int.h - typed access to configuration values inside the library.
 *
 * chorus_conf_set() validates every value against the property table, so the
 * getters here cannot fail: they parse text already known to be well formed.
 */
#ifndef CHORUS_CONF_INT_H
#define CHORUS_CONF_INT_H

#include "common_int.h"

#define CHORUS__MAX_DELAYS 16

struct chorus_conf_s {
    char **values; /* one per property, NULL = default */
    chorus_log_cb *log_cb;
    void *log_opaque;
    chorus_dr_cb *dr_cb;
    void *dr_opaque;
};

long chorus__conf_int(const chorus_conf_t *conf, const char *key);
const char *chorus__conf_str(const chorus_conf_t *conf, const char *key);
/* Parses a list of durations ("1s,5s,30s" or "1000,5000") into ms; returns
 * the count, or -1 when malformed (at most CHORUS__MAX_DELAYS entries). */
int chorus__parse_delays(const char *s, long *out, int max);

#endif
