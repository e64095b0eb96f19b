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

/* Monotonic clock in milliseconds / nanoseconds. */
int64_t chorus__mono_ms(void);
uint64_t chorus__mono_ns(void);

#endif
