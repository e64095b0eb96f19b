/*
 * common_int.h - what every libchorus module shares and no user sees:
 * error-object construction, bounded string helpers, the logging entry point.
 */
#ifndef CHORUS_COMMON_INT_H
#define CHORUS_COMMON_INT_H

#include "chorus/chorus.h"

#include <stdarg.h>
#include <stdbool.h>

struct chorus_error_s {
    chorus_err_t code;
    bool retriable;
    char msg[512];
};

/* A new error object; NULL only when out of memory. */
chorus_error_t *chorus__error_new(chorus_err_t code, bool retriable,
                                  const char *fmt, ...) CHORUS_PRINTF(3, 4);
/* Stores a new error in *errp when errp is not NULL; returns code. */
chorus_err_t chorus__error_set(chorus_error_t **errp, chorus_err_t code,
                               const char *fmt, ...) CHORUS_PRINTF(3, 4);

/* snprintf into a caller buffer that may be NULL or zero-sized. */
void chorus__errstr(char *errstr, size_t size, const char *fmt, ...)
    CHORUS_PRINTF(3, 4);

/* strdup that returns NULL for NULL. */
char *chorus__strdup(const char *s);

/* 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, in ms since the
 * epoch: the instants an envelope timestamp may name. */
#define CHORUS__TS_MIN_MS INT64_C(-62135596800000)
#define CHORUS__TS_MAX_MS INT64_C(253402300799999)

/* An RFC 3339 timestamp (any offset) whose instant lies in the range
 * above; false otherwise. */
bool chorus__timestamp_parse(const char *s, int64_t *ms);

/* "{a,b,...}": a PostgreSQL uuid[] literal of @p n uuids, the i-th being
 * at(arg, i) (36 characters, no quoting needed); malloc'd, NULL when out
 * of memory. */
char *chorus__uuid_array(size_t n, const char *(*at)(const void *arg, size_t i), const void *arg);

/* clock.c: time and random bits, the system's or a simulation's. */
typedef struct {
    int64_t (*wall_ms)(void *opaque);  /* chorus_now_ms() */
    uint64_t (*mono_ns)(void *opaque); /* never goes back */
    void (*random)(void *opaque, void *buf, size_t n);
    void *opaque;
} chorus__clock_t;
/* From now on @p c's time and bits (NULL: the system's). */
void chorus__clock_use(const chorus__clock_t *c);
/* Changes with every chorus__clock_use() (ids then restart afresh). */
unsigned chorus__clock_generation(void);
bool chorus__clock_simulated(void);
/* Fills @p buf from the installed clock's generator; false when there is
 * none (the caller then takes the system's). */
bool chorus__clock_random(void *buf, size_t n);
/* Monotonic clock in milliseconds / nanoseconds. */
int64_t chorus__mono_ms(void);
uint64_t chorus__mono_ns(void);

/* A simulated clock: time advances only when told; bits from a seed. */
typedef struct {
    chorus__clock_t clock; /* pass &s->clock to chorus__clock_use() */
    uint64_t rng[4];
    int64_t epoch_ms;      /* the wall clock at monotonic 0 */
    uint64_t now_ns;
    int64_t skew_ms;       /* added to the wall clock (one host's clock ahead/behind) */
} chorus__sim_clock_t;
void chorus__sim_clock_init(chorus__sim_clock_t *s, uint64_t seed, int64_t epoch_ms);
void chorus__sim_clock_advance(chorus__sim_clock_t *s, int64_t ms);
/* The next 64 bits of its generator (the simulation's own choices too). */
uint64_t chorus__sim_next(chorus__sim_clock_t *s);

#endif
