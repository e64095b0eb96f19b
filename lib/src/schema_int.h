/*
 * schema_int.h - a small, strict JSON Schema validator (schema.c), for the
 * schemas a saga declaration gives the `data` of its events.
 *
 * The subset of JSON Schema draft 2020-12 it knows, with 2020-12 meanings:
 *
 *   type                  "null" "boolean" "object" "array" "number"
 *                         "integer" "string", or a non-empty array of them;
 *                         "integer" is any number with an integral value
 *   properties, required, additionalProperties (a boolean or a schema)
 *   items                 one schema for every element (the array form is
 *                         2020-12's prefixItems: refused)
 *   minItems maxItems minLength maxLength
 *                         non-negative integers; lengths count code points
 *   minimum maximum exclusiveMinimum exclusiveMaximum
 *                         numbers (exclusive* are bounds, not booleans)
 *   enum const            JSON equality: numbers by value, objects member by
 *                         member in any order, arrays element by element
 *   format                "uuid" (8-4-4-4-12 hex digits, any case) and
 *                         "date-time" (RFC 3339, chorus__timestamp_parse():
 *                         years 0001..9999, no leap second); asserted
 *   $defs, $ref           $defs only at the top; $ref only "#/$defs/NAME"
 *                         (NAME with "~0" for '~', "~1" for '/'); $ref
 *                         applies beside the other keywords of its schema
 *   $schema               at the top only, the 2020-12 meta-schema's URI
 *   $id                   at the top only, a string
 *   $comment title description examples default
 *                         annotations, checked for type and otherwise ignored
 *
 * and `true` / `false` as whole schemas.  Anything else is refused when
 * compiling, so that a misspelt keyword ("requried") never quietly accepts
 * everything.  As in JSON Schema, a keyword about one type says nothing of
 * the others: {"minimum": 1} accepts "text"; give "type" to exclude them.
 *
 * A compiled schema is immutable: any number of threads may validate with
 * it at once.
 */
#ifndef CHORUS_SCHEMA_INT_H
#define CHORUS_SCHEMA_INT_H

#include "common_int.h"
#include "chorus/chorus_json.h"

/* The deepest a schema document nests (values of any keyword included),
 * and the deepest instance level the validator follows. */
#define CHORUS__SCHEMA_MAX_DEPTH 64
#define CHORUS__SCHEMA_MAX_INSTANCE_DEPTH 128

typedef struct chorus__schema_s chorus__schema_t;

/*
 * Compiles @p schema.  The compiled schema keeps a private copy of what it
 * needs: the caller keeps ownership of @p schema and may delete it at once.
 * NULL when @p schema is not in the subset above, with the reason in @p err
 * (when @p errsize > 0): "<path in the schema>: <problem>", e.g.
 * "properties.total.minimum: must be a number", or "<problem>" alone when
 * it is about the schema as a whole.  Refused besides: a $ref naming no
 * member of $defs, a chain of $refs that loops, nesting deeper than
 * CHORUS__SCHEMA_MAX_DEPTH, const or enum values that are not I-JSON.
 * On success @p err is "".
 */
chorus__schema_t *chorus__schema_compile(const cJSON *schema, char *err, size_t errsize);

/*
 * True when @p instance is valid (@p err then ""); false otherwise, and
 * @p err names the first failing place, in document order (required
 * members in the order listed, then the members and elements as they come),
 * as a path rooted at @p root_name:
 *
 *   data.items[0].qty: must be an integer >= 1
 *   data: required member "total" is missing
 *   data.card: unexpected member (additionalProperties is false)
 *   data["ship to"]: must be a string of 1 to 255 characters (is null)
 *
 * Member names that are not identifiers are quoted as JSON strings, long
 * ones cut; values are never quoted from the instance (it may hold secrets),
 * only from the schema (const, enum).  The message is valid UTF-8 text, cut
 * between characters to @p errsize.  Instances nesting deeper than
 * CHORUS__SCHEMA_MAX_INSTANCE_DEPTH where the schema follows them are
 * invalid.  A NULL @p instance is invalid ("data: is missing").
 */
bool chorus__schema_validate(const chorus__schema_t *s, const cJSON *instance,
                             const char *root_name, char *err, size_t errsize);

/* chorus__schema_free(NULL) is a no-op. */
void chorus__schema_free(chorus__schema_t *s);

#endif
