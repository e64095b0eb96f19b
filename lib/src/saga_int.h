/*
 * saga_int.h - what the participant asks of a loaded saga declaration
 * (saga_decl.c) beyond the public accessors.
 */
#ifndef CHORUS_SAGA_INT_H
#define CHORUS_SAGA_INT_H

#include "common_int.h"

/* Whether @p service produces @p event in the declaration. */
bool chorus__saga_produces(const chorus_saga_t *s, const char *service, const char *event);
/* The services producing @p event (up to @p max of them into @p out,
 * borrowed); returns how many there are. */
size_t chorus__saga_producers(const chorus_saga_t *s, const char *event, const char **out,
                              size_t max);
/* From "events": the newest schema version of @p event the saga's
 * participants know (0: not declared), and what a consumer does with a
 * newer one (-1: not declared, 0: dead-letter, 1: retry). */
int chorus__saga_schema_version(const chorus_saga_t *s, const char *event);
int chorus__saga_newer_policy(const chorus_saga_t *s, const char *event);

#endif
