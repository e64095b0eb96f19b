/* metrics_int.h - histograms on the hot path and the metrics endpoint
 * (metrics.c). */
#ifndef CHORUS_METRICS_INT_H
#define CHORUS_METRICS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fixed upper bounds, in seconds; +Inf is the last bucket. */
#define CHORUS__HIST_BUCKETS 16

typedef enum { CHORUS__HIST_HANDLER, CHORUS__HIST_PROPAGATION, CHORUS__NHIST } chorus__hist_kind_t;

/* Counts per bucket (not cumulative: the formatter adds them up), the
 * count and the sum in nanoseconds.  Written by the poll thread only. */
typedef struct {
    uint64_t bucket[CHORUS__HIST_BUCKETS + 1]; /* last: above every bound */
    uint64_t count, sum_ns;
} chorus__hist_t;

void chorus__hist_observe(chorus__hist_t *h, chorus__hist_kind_t kind, uint64_t ns);

/* What the HTTP thread serves: a copy the poll thread makes under the
 * endpoint's mutex.  A gauge not sampled yet (or unknown) is -1. */
#define CHORUS__METRICS_MAX_STATS 64
typedef struct {
    size_t nstats;
    uint64_t stats[CHORUS__METRICS_MAX_STATS]; /* chorus_stat_value(i) order */
    chorus__hist_t hist[CHORUS__NHIST];
    int64_t queue_ready, dlq_ready, outbox_backlog, outbox_oldest_ms;
    bool broker_up, store_enabled, store_up, consuming, blocked, stopping;
    int64_t taken_ms;                          /* mono clock of the copy */
} chorus__metrics_snap_t;

/* The exposition text (Prometheus text format 0.0.4) of @p s, labelled
 * service="<service>"; malloc'd, NULL when out of memory. */
char *chorus__metrics_format(const chorus__metrics_snap_t *s, const char *service, size_t *len);

/* Escapes a label value (\\, \" and \n) into @p out; false when it does
 * not fit. */
bool chorus__metrics_escape(const char *in, char *out, size_t size);

/* "" ready, else why not (a literal). */
const char *chorus__metrics_unready(const chorus__metrics_snap_t *s, int64_t now_ms);

struct chorus_s;
/* metrics.listen set: listen (a bad address or one in use: an error in
 * @p err, nothing listening).  Empty: nothing, CHORUS_OK. */
int chorus__metrics_start(struct chorus_s *ch, char *err, size_t size);
/* At the end of every poll: copy the counters; every
 * metrics.sample.interval.ms, sample the queues and the outbox too. */
void chorus__metrics_sample(struct chorus_s *ch);
void chorus__metrics_stop(struct chorus_s *ch);

#endif
