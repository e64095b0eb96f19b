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

#ifdef __cplusplus
}
#endif
#endif /* CHORUS_JSON_H */
