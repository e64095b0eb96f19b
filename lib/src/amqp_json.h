/*
 * amqp_json.h - AMQP field tables and basic properties as JSON (pure).
 */
#ifndef CHORUS_AMQP_JSON_H
#define CHORUS_AMQP_JSON_H

#include "common_int.h"

#include <amqp.h>
#include <cjson/cJSON.h>

/* For people: strings, numbers, booleans, objects, arrays; timestamps as
 * RFC 3339 strings; bytes as base64 strings. */
cJSON *chorus__table_to_plain(const amqp_table_t *t);
cJSON *chorus__value_to_plain(const amqp_field_value_t *v);

/* Exact: every value is {"<AMQP type letter>": value}, so
 * chorus__table_from_typed(chorus__table_to_typed(t)) == t, type for type. */
cJSON *chorus__table_to_typed(const amqp_table_t *t);
/* Allocates from @p pool; false when @p j is not a well-formed typed table. */
bool chorus__table_from_typed(const cJSON *j, amqp_table_t *out, amqp_pool_t *pool);

cJSON *chorus__props_to_json(const amqp_basic_properties_t *p);
/* Headers are not touched (set them separately). */
bool chorus__props_from_json(const cJSON *j, amqp_basic_properties_t *p, amqp_pool_t *pool);

/* base64 (RFC 4648, padded); malloc'd / false when malformed. */
char *chorus__base64(const void *data, size_t len);
bool chorus__unbase64(const char *s, amqp_bytes_t *out); /* out malloc'd */

#endif
