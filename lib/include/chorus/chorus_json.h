/*
 * chorus_json.h - cJSON access to envelopes, for handlers that want it.
 *
 * chorus.h carries no cJSON type; a handler that would rather walk the data
 * object than re-parse chorus_envelope_data_json() includes this header and
 * links cJSON (pkg-config libcjson; the chorus pkg-config file requires it).
 */
#ifndef CHORUS_JSON_H
#define CHORUS_JSON_H

#include <cjson/cJSON.h>

#include "chorus.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The data object of @p env; never NULL for a valid envelope.  Borrowed:
 * valid until @p env is destroyed or its data is replaced.  Do not modify
 * it (the envelope caches its serialization).
 */
CHORUS_API const cJSON *chorus_envelope_data(const chorus_envelope_t *env);

/*
 * As chorus_envelope_new(), but with the data given as a cJSON object.
 * Takes ownership of @p data, even on failure (NULL means {}); it must be
 * an object (cJSON_IsObject), else CHORUS_ERR_INVALID_ARG.
 */
CHORUS_API chorus_envelope_t *chorus_envelope_new_json(const char *event_type,
                                                       const char *aggregate_id,
                                                       int64_t version,
                                                       cJSON *data,
                                                       chorus_error_t **errp);

/*
 * JSON as chorus reads and writes it, for handlers that store or forward
 * parts of an event: store what was validated, never the raw input.
 *
 * chorus_json_print() prints @p v compactly and exactly: a number parsed
 * back gives the same double (cJSON_PrintUnformatted() rounds them, e.g.
 * 9007199254740991 to 9.00719925474099e+15).  It refuses (NULL, reason in
 * *errp when errp is not NULL) what is not I-JSON: NaN or infinity, a
 * duplicate member name, invalid UTF-8, a surrogate or noncharacter, a
 * cJSON_Raw node.  The text is malloc'd: free() it.
 */
CHORUS_API char *chorus_json_print(const cJSON *v, chorus_error_t **errp);

/*
 * Parses @p len bytes of I-JSON (RFC 7493), the rules envelopes are read
 * with: no duplicate member names, no "\u0000", no lone surrogates or
 * noncharacters, integers within +-(2^53 - 1), at most 17 significant
 * digits, nesting at most 32 deep.  *out is the tree (cJSON_Delete() it);
 * on failure the code and, in *errp, the place and the reason.
 */
CHORUS_API chorus_err_t chorus_json_parse(const char *buf, size_t len, cJSON **out,
                                          chorus_error_t **errp);

/*
 * What chorus_dead_letter_json() prints, as a tree the caller owns
 * (cJSON_Delete() it), for tools that add to it or print it their own way
 * without parsing JSON again.  NULL when out of memory.
 */
CHORUS_API cJSON *chorus_dead_letter_object(const chorus_dead_letter_t *dl);

#ifdef __cplusplus
}
#endif
#endif /* CHORUS_JSON_H */
