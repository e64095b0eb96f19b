/*
 * saga_int.h - what the participant asks of a loaded saga declaration
 * (saga_decl.c) beyond the public accessors.
 */
#ifndef CHORUS_SAGA_INT_H
#define CHORUS_SAGA_INT_H

#include "common_int.h"

#include <cjson/cJSON.h>

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

/* What an event is to a step of @p service, for the library's guards
 * (saga_run.c); *step is the step's index. */
typedef enum {
    CHORUS__GUARD_NONE,
    CHORUS__GUARD_ACTION,       /* the trigger of the step */
    CHORUS__GUARD_UNDO,         /* in its compensation "on" */
    CHORUS__GUARD_REFUSE_AFTER, /* in its "refuses_after" */
    CHORUS__GUARD_REQUEST       /* the cancellation request, at the pivot */
} chorus__guard_t;
chorus__guard_t chorus__saga_guard(const chorus_saga_t *s, const char *service, const char *event,
                                   size_t *step);

/* What @p service emitting @p event says of its step *step. */
typedef enum {
    CHORUS__EMIT_OTHER,
    CHORUS__EMIT_SUCCESS, /* the step's "emits" */
    CHORUS__EMIT_FAILURE, /* one of its "failures" */
    CHORUS__EMIT_UNDONE   /* its compensation's "emits" */
} chorus__emit_t;
chorus__emit_t chorus__saga_emit_role(const chorus_saga_t *s, const char *service,
                                      const char *event, size_t *step);

const char *chorus__saga_deadline_event(const chorus_saga_t *s);
bool chorus__saga_library_handled(const chorus_saga_t *s, const char *service, const char *event);
/* The compiled "schema" of @p event's data in "events", or NULL. */
struct chorus__schema_s;
const struct chorus__schema_s *chorus__saga_data_schema(const chorus_saga_t *s, const char *event);

/* contract.c: what every emitted event must carry */
struct chorus_tx_s;
/* The flow's ids (correlation, causation, traceparent, deadline) from the
 * delivery being handled, where @p env has none. */
chorus_err_t chorus__inherit(const chorus_delivery_t *d, chorus_envelope_t *env);
/* The flow's ids an event emitted in @p tx carries: the delivery's, or a
 * flow of its own (its event id as correlation). */
chorus_err_t chorus__tx_adopt(struct chorus_tx_s *tx, chorus_envelope_t *env);
/* The saga instance an event belongs to: its correlation id (or its own id). */
const char *chorus__saga_instance(const chorus_envelope_t *env);
/* The data of @p env against its declared schema: true when valid (or
 * none declared); else false and the reason in @p err. */
bool chorus__saga_data_ok(const chorus_t *ch, const chorus_envelope_t *env, char *err, size_t n);
/* Whether @p env is the saga's first event, emitted by this participant. */
bool chorus__saga_starts(const chorus_t *ch, const chorus_envelope_t *env);
/* A saga's first event gets its deadline (metadata.deadline). */
chorus_err_t chorus__saga_stamp(const chorus_t *ch, chorus_envelope_t *env);
/* chorus__saga_data_ok(), and when it fails: the reason logged ("@p what:
 * ..."), written on @p d (if not NULL), CHORUS_ERR_SCHEMA. */
chorus_err_t chorus__saga_check_emit(const chorus_t *ch, chorus_delivery_t *d,
                                     const chorus_envelope_t *env, const char *what);

/* saga_run.c: a handler run, behind its step's guard when it has one */
struct chorus__handler_s;
/* Calls the delivery's handler, timing it. */
chorus_outcome_t chorus__call_handler(chorus_t *ch, chorus_delivery_t *d,
                                      const struct chorus__handler_s *hd);
/* Runs the delivery's handler behind its step's guard (durable path). */
chorus_outcome_t chorus__saga_deliver(chorus_t *ch, chorus_delivery_t *d,
                                      const struct chorus__handler_s *hd);
/* The handler chorus registers for events it handles itself. */
chorus_outcome_t chorus__saga_noop(chorus_t *ch, chorus_delivery_t *d,
                                   const chorus_envelope_t *env, void *opaque);

/* "namespace" (default "chorus"): the prefix of its exchanges and queues. */
const char *chorus__saga_namespace(const chorus_saga_t *saga);

#endif
