/*
 * envelope_int.h - what other libchorus modules may know about envelopes.
 *
 * The struct is defined here so the publisher, consumer and event store can
 * read fields without an accessor call each, but only envelope.c writes it:
 * every invariant below is established by envelope.c and assumed elsewhere.
 *
 *   event_id, aggregate_id  canonical lowercase hyphenated UUIDs
 *   event_type              ^[A-Z][A-Za-z0-9]*$, at most 128 characters
 *   version                 1 .. CHORUS__MAX_SAFE_INT
 *   schema_version          >= 1 (1 when the field was absent)
 *   ts_ms / timestamp       the same instant, in CHORUS__TS_MIN_MS ..
 *                           CHORUS__TS_MAX_MS (years 0001..9999); timestamp
 *                           is the canonical "YYYY-MM-DDTHH:MM:SS.mmmZ"
 *                           form of ts_ms
 *   data                    always a cJSON object, never NULL
 *   metadata                always a cJSON object, never NULL; its known
 *                           keys (correlation_id, causation_id, user_id,
 *                           traceparent) are valid strings when present,
 *                           unknown keys are kept as they came
 *   data_json               lazily computed exact text of data (json.c),
 *                           or NULL; freed whenever data changes
 */
#ifndef CHORUS_ENVELOPE_INT_H
#define CHORUS_ENVELOPE_INT_H

#include "common_int.h"
#include "chorus/chorus_json.h"

/* 2^53 - 1: the largest integer every JSON reader holds exactly. */
#define CHORUS__MAX_SAFE_INT INT64_C(9007199254740991)
#define CHORUS__EVENT_TYPE_MAX 128

struct chorus_envelope_s {
    char event_id[37];
    char aggregate_id[37];
    char *event_type;
    int64_t version;
    int schema_version;
    int64_t ts_ms;
    char timestamp[25];
    cJSON *data;
    cJSON *metadata;
    char *data_json; /* cache; see chorus_envelope_data_json() */
    size_t decoded;  /* bytes the parser counted for it, 0 when built locally */
};

/* chorus_envelope_parse() with a bound on the memory the decoded tree may
 * take (0: 16 times the byte limit); TOO_LARGE beyond it. */
chorus_err_t chorus__envelope_parse(const char *buf, size_t len,
                                   const chorus_envelope_limits_t *lim, size_t max_decoded,
                                   chorus_envelope_t **envp, chorus_error_t **errp);
/* The memory the envelope's data holds, as json.c counts it. */
size_t chorus__envelope_decoded(const chorus_envelope_t *env);

/*
 * An envelope from stored parts (an event-store row): every part is
 * validated as chorus_envelope_parse() would.  @p metadata_json may be NULL
 * (empty metadata); @p data_json may be NULL ({}).  Returns NULL and sets
 * *errp on failure.
 */
chorus_envelope_t *chorus__envelope_from_parts(
    const char *event_id, const char *event_type, const char *aggregate_id,
    int64_t version, int schema_version, int64_t ts_ms, const char *data_json,
    const char *metadata_json, chorus_error_t **errp);

/* Replaces the data object (for upcasters).  Takes @p data, even on
 * failure; CHORUS_ERR_INVALID_ARG when it is not an object. */
chorus_err_t chorus__envelope_take_data(chorus_envelope_t *env, cJSON *data);

/* The metadata object, borrowed; never NULL. */
const cJSON *chorus__envelope_metadata(const chorus_envelope_t *env);

/* Compact JSON text of the metadata object; malloc'd, NULL when out of
 * memory. */
char *chorus__envelope_metadata_json(const chorus_envelope_t *env);

/* --- validators shared with other modules ------------------------------ */

/* Non-zero when @p s is a valid event type name (PascalCase, <= 128). */
int chorus__event_type_valid(const char *s);
/* Non-zero when @p s is a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>",
 * lowercase, version not ff, ids not all zero). */
int chorus__traceparent_valid(const char *s);
/* Returns 1 when the @p len bytes are valid UTF-8 without NUL bytes;
 * otherwise 0 and *bad_off (if not NULL) is the offset of the first bad
 * byte, and *nul (if not NULL) says whether it was a NUL byte. */
int chorus__utf8_valid(const char *buf, size_t len, size_t *bad_off, int *nul);
#endif
