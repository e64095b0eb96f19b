/*
 * json_int.h - the one JSON reader and writer of libchorus (json.c).
 *
 * Everything chorus reads from outside (envelopes, outbox rows, saga
 * declarations, DLQ export lines) goes through chorus__json_parse(), which
 * accepts exactly I-JSON (RFC 7493) and builds a cJSON tree; everything it
 * writes goes through chorus__json_print(), which prints numbers exactly.
 * cJSON's own parser and printer are never used on message data: the
 * parser takes duplicate member names, "\u0000" and leading zeros, and the
 * printer rounds numbers (9007199254740991 comes out as
 * 9.00719925474099e+15), so what a handler validated and what PostgreSQL
 * stored could differ.
 */
#ifndef CHORUS_JSON_INT_H
#define CHORUS_JSON_INT_H

#include "common_int.h"
#include "chorus/chorus_json.h"

/* The deepest nesting the printer and checker follow (the parser's bound
 * is the caller's max_depth). */
#define CHORUS__JSON_MAX_DEPTH 1000

typedef struct {
    int max_depth;       /* nesting of arrays and objects; 0: 32 */
    size_t max_decoded;  /* bytes the decoded tree may take; 0: no bound */
} chorus__json_limits_t;

/*
 * Parses the @p len bytes as exactly one JSON value (surrounding
 * whitespace allowed) that is also I-JSON:
 *
 *   RFC 8259 grammar only        no leading zeros, no "+1", no ".5", no
 *                                NaN, no comments, no trailing commas,
 *                                raw control characters only escaped
 *   UTF-8                        well-formed, no surrogates or
 *                                noncharacters, raw or escaped
 *   no "\u0000"                  (C strings would truncate there)
 *   unique member names          in every object, at every depth
 *   exact numbers                integer literals within +-(2^53 - 1); no
 *                                more than 17 significant digits; no
 *                                overflow to infinity or underflow
 *
 * Iterative: hostile nesting never recurses.  On success *out is the tree
 * (caller deletes it) and *decodedp (when not NULL) the bytes it takes.
 * On failure returns CHORUS_ERR_PARSE, _BAD_UTF8, _NOT_IJSON, _TOO_DEEP or
 * _TOO_LARGE with *errp naming the place ("data.items[0]: duplicate member
 * name \"qty\" (offset 57)").
 */
chorus_err_t chorus__json_parse(const char *buf, size_t len, const chorus__json_limits_t *lim,
                                cJSON **out, size_t *decodedp, chorus_error_t **errp);
/* The same; on failure *erroffp (when not NULL) is the offset of the
 * error, for messages that give a line and column. */
chorus_err_t chorus__json_parse_at(const char *buf, size_t len, const chorus__json_limits_t *lim,
                                   cJSON **out, size_t *decodedp, size_t *erroffp,
                                   chorus_error_t **errp);

enum {
    CHORUS__JSON_PRETTY = 1 /* two-space indentation, one member per line */
};

/*
 * Prints @p v (malloc'd, NUL-terminated; *lenp its length when not NULL).
 * Numbers come out so that parsing them gives the same double: integers
 * up to 2^53 - 1 as integers, anything else as the shortest decimal that
 * round-trips.  Refuses (NULL and *errp) what would not be I-JSON: a
 * number that is not finite, a string that is not valid UTF-8 or holds a
 * surrogate or noncharacter, a duplicate member name, a raw (cJSON_Raw) or
 * invalid node, nesting beyond CHORUS__JSON_MAX_DEPTH.
 */
char *chorus__json_print(const cJSON *v, int flags, size_t *lenp, chorus_error_t **errp);

/* The bytes the tree under @p v takes, as the parser counts them. */
size_t chorus__json_decoded_size(const cJSON *v);

/* Writes the exact text of @p d into @p out (at least 32 bytes); false
 * when @p d is not finite. */
bool chorus__json_number(double d, char *out, size_t size);

/* How many bytes of @p s, at most @p max, end on a character boundary, for
 * "%.*s" in messages: they quote names, and must stay valid UTF-8. */
int chorus__text_cut(const char *s, int max);

/* A one-byte-per-call UTF-8 check of a whole buffer (no NUL, no
 * surrogates, no noncharacters); offset of the first bad byte in *bad. */
bool chorus__json_text_ok(const char *s, size_t len, size_t *bad);

#endif
