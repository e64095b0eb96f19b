/*
 * amqp_json.h - AMQP field tables and basic properties as JSON (pure, no
 * I/O; amqp_json.c).
 *
 * Two forms, for two readers:
 *
 *   plain   for people (dlq show): strings, numbers, objects.  Whatever
 *           cannot be shown as itself is shown in a raw form and a note
 *           says so; nothing is left out.
 *   typed   for moving messages (dlq export / import): exact.  Every
 *           value keeps its AMQP kind, every bit of it, and the order and
 *           repetition of names; what import cannot rebuild exactly it
 *           refuses, naming the header and the problem.
 *
 * Every JSON read here comes from chorus__json_parse() and every JSON
 * written goes through chorus__json_print() (json_int.h).
 */
#ifndef CHORUS_AMQP_JSON_H
#define CHORUS_AMQP_JSON_H

#include "common_int.h"

#include <amqp.h>
#include <cjson/cJSON.h>

/* Nesting of tables and arrays the plain form shows as such; a value
 * deeper down is shown as base64 of its AMQP encoding, with a note. */
#define CHORUS__PLAIN_MAX_DEPTH 32

/* The deepest AMQP encoding chorus__table_decode() hands to rabbitmq-c,
 * whose decoder recurses once per level (a 128 KiB frame holds at most
 * about 26000 levels). */
#define CHORUS__AMQP_DECODE_MAX_DEPTH 10000

/* The "format" of the export lines chorus__export_line() writes. */
#define CHORUS__EXPORT_FORMAT 2

/* ---- plain ------------------------------------------------------------- */

/*
 * @p path names the value in notes ("headers"); @p notes, when not NULL,
 * is a cJSON array that gets one string per thing shown other than as
 * itself: integers beyond 2^53 - 1 (as decimal strings), timestamps
 * outside years 0001..9999 (as seconds), NaN and infinities (as strings),
 * decimals (as exact text), bytes and non-text strings (as base64), names
 * that are not text ("base64:..."), repeated names ("name (2)"), nesting
 * beyond CHORUS__PLAIN_MAX_DEPTH (base64 of the AMQP encoding).  NULL only
 * when out of memory.
 */
cJSON *chorus__table_to_plain(const amqp_table_t *t, const char *path, cJSON *notes);
cJSON *chorus__value_to_plain(const amqp_field_value_t *v, const char *path, cJSON *notes);

/* True when @p b is text a JSON string carries as itself: valid UTF-8,
 * no NUL, no surrogate or noncharacter. */
bool chorus__bytes_are_text(amqp_bytes_t b);
/* @p b as a C string (malloc'd): itself when it is text, else "base64:"
 * and its base64 (*was_base64 true). */
char *chorus__text_or_base64(amqp_bytes_t b, bool *was_base64);

/* ---- typed ------------------------------------------------------------- */

/*
 * A table as an array of entries, in order, repeated names kept:
 *   [{"name": "x-a", "value": {"S": "text"}}, {"name_base64": "...", ...}]
 * @p depth is the JSON nesting of the array within its document (1 for a
 * document of its own).  NULL with *too_deep set when the typed form
 * would nest deeper than CHORUS__JSON_MAX_DEPTH (the caller falls back to
 * chorus__table_encode); NULL otherwise only when out of memory or on a
 * kind rabbitmq-c never decodes (*why says which).
 */
cJSON *chorus__table_to_typed(const amqp_table_t *t, int depth, bool *too_deep, char *why,
                              size_t n);
/*
 * Rebuilds a table (allocated from @p pool) from the entry array above
 * or, when @p object_form, from the format-1 object {"name": value}.
 * Every value is checked; false with *why naming the place ("headers
 * [\"x-a\"]: {\"b\": 1000} is out of range ...") otherwise.
 */
bool chorus__table_from_typed(const cJSON *j, bool object_form, const char *path,
                              amqp_table_t *out, amqp_pool_t *pool, char *why, size_t n);

/* ---- the AMQP encoding ------------------------------------------------- */

/* amqp_encode_table() into a buffer of the right size (out->bytes
 * malloc'd).  Names must be at most 255 bytes (true of every table
 * rabbitmq-c decoded and of every table chorus__table_from_typed built). */
bool chorus__table_encode(const amqp_table_t *t, amqp_bytes_t *out);
/* Checks that @p enc is exactly one well-formed table (lengths nest,
 * kinds known, booleans 0 or 1, at most CHORUS__AMQP_DECODE_MAX_DEPTH
 * deep, no byte left over), then amqp_decode_table() into @p pool. */
bool chorus__table_decode(amqp_bytes_t enc, amqp_table_t *out, amqp_pool_t *pool, char *why,
                          size_t n);

/* ---- properties -------------------------------------------------------- */

/* Typed: short strings as strings (text) or {"base64": ...}; delivery_mode
 * and priority integers; timestamp an integer or, beyond 2^53 - 1, a
 * decimal string.  Headers are not part of it. */
cJSON *chorus__props_to_json(const amqp_basic_properties_t *p);
/* The reverse, strictly (unknown members, over 255 bytes, out of range:
 * false and *why).  Headers are not touched. */
bool chorus__props_from_json(const cJSON *j, amqp_basic_properties_t *p, amqp_pool_t *pool,
                             char *why, size_t n);

/* ---- export lines ------------------------------------------------------ */

/*
 * One line of `dlq export` (malloc'd, no newline):
 *
 *   {"format": 2, "routing_key": ..., "properties": {...},
 *    "headers": [entries] | "headers_amqp_base64": "...", "body_base64": "..."}
 *
 * "headers" is absent when the message has no header table, and
 * "headers_amqp_base64" (the exact amqp_encode_table bytes) replaces it
 * when the typed form would nest too deep.  x-delivery-count, the
 * broker's count of this queue's deliveries, is never exported.
 * @p routing_key (informational; NULL: null) is written like a short
 * string property.
 */
char *chorus__export_line(const amqp_basic_properties_t *p, amqp_bytes_t body,
                          const amqp_bytes_t *routing_key, char *why, size_t n);
/*
 * Reads one such line (format 2, or format 1: no "format", headers as an
 * object) strictly: I-JSON, no unknown member, every value checked.  The
 * properties, headers and body are allocated from @p pool; x-delivery-count
 * is dropped.  False with *why otherwise.  The caller still checks that
 * the result can be sent (chorus__props_fit).
 */
bool chorus__import_line(const char *line, size_t len, amqp_basic_properties_t *p,
                         amqp_bytes_t *body, amqp_pool_t *pool, char *why, size_t n);

/* ---- base64 ------------------------------------------------------------ */

/* RFC 4648, padded; malloc'd. */
char *chorus__base64(const void *data, size_t len);
/* Strict: padded, canonical (unused bits zero), nothing else; out->bytes
 * malloc'd; false when malformed. */
bool chorus__unbase64(const char *s, amqp_bytes_t *out);

#endif
