/*
 * contract.c - what every event a participant emits must carry, checked
 * before it is written or sent, by whoever emits it (a handler, the
 * application, the event store, a timer, the saga itself):
 *
 *   the flow's ids     inherited from the delivery being handled
 *                      (correlation, causation, traceparent, deadline), or
 *                      a flow of its own (correlation = its event id)
 *   the saga's stamp   the first event of a saga gets metadata.deadline
 *   the declared data  the JSON Schema its declaration gives its type
 *
 * Pure functions of the envelope, the delivery and the declaration: no
 * SQL, no broker, so every layer above can use them.
 */
#include "chorus_int.h"
#include "saga_int.h"
#include "schema_int.h"

#include <stdio.h>

chorus_err_t chorus__inherit(const chorus_delivery_t *d, chorus_envelope_t *env) {
    const chorus_envelope_t *cause = d->env;
    chorus_err_t rc = CHORUS_OK;
    if (!chorus_envelope_correlation_id(env)) {
        const char *corr = chorus_envelope_correlation_id(cause);
        rc = chorus_envelope_set_correlation_id(env, corr ? corr : chorus_envelope_event_id(cause));
    }
    if (!rc && !chorus_envelope_causation_id(env))
        rc = chorus_envelope_set_causation_id(env, chorus_envelope_event_id(cause));
    const char *tp = chorus_envelope_traceparent(cause);
    if (!rc && tp && !chorus_envelope_traceparent(env))
        rc = chorus_envelope_set_traceparent(env, tp);
    int64_t deadline = chorus_envelope_deadline_ms(cause);
    if (!rc && deadline && !chorus_envelope_deadline_ms(env))
        rc = chorus_envelope_set_deadline_ms(env, deadline);
    return rc;
}

chorus_err_t chorus__tx_adopt(chorus_tx_t *tx, chorus_envelope_t *env) {
    if (tx->d)
        return chorus__inherit(tx->d, env); /* a handler's events carry the flow's ids */
    if (chorus_envelope_correlation_id(env))
        return CHORUS_OK;
    return chorus_envelope_set_correlation_id(env, chorus_envelope_event_id(env));
}

const char *chorus__saga_instance(const chorus_envelope_t *env) {
    const char *corr = chorus_envelope_correlation_id(env);
    return corr ? corr : chorus_envelope_event_id(env);
}

/* The saga starts: its deadline goes into the first event, the owner arms
 * the timer that asks for the cancellation, and the first step is done. */
bool chorus__saga_starts(const chorus_t *ch, const chorus_envelope_t *env) {
    size_t step = 0;
    return ch->saga &&
           chorus__saga_emit_role(ch->saga, ch->service, chorus_envelope_event_type(env),
                                  &step) == CHORUS__EMIT_SUCCESS && step == 0;
}

chorus_err_t chorus__saga_stamp(const chorus_t *ch, chorus_envelope_t *env) {
    int64_t ms = ch->saga ? chorus_saga_deadline_ms(ch->saga) : 0;
    if (!ms || chorus_envelope_deadline_ms(env) || !chorus__saga_starts(ch, env))
        return CHORUS_OK;
    int64_t at = chorus_envelope_timestamp_ms(env) + ms;
    return chorus_envelope_set_deadline_ms(env, at < CHORUS__TS_MAX_MS ? at : CHORUS__TS_MAX_MS);
}

bool chorus__saga_data_ok(const chorus_t *ch, const chorus_envelope_t *env, char *err, size_t n) {
    const chorus__schema_t *schema =
        ch->saga ? chorus__saga_data_schema(ch->saga, chorus_envelope_event_type(env)) : NULL;
    return !schema || chorus__schema_validate(schema, chorus_envelope_data(env), "data", err, n);
}

chorus_err_t chorus__saga_check_emit(const chorus_t *ch, chorus_delivery_t *d,
                                     const chorus_envelope_t *env, const char *what) {
    char err[400];
    if (chorus__saga_data_ok(ch, env, err, sizeof(err)))
        return CHORUS_OK;
    if (d)
        snprintf(d->error, sizeof(d->error), "emitted %s breaks its declared schema: %s",
                 chorus_envelope_event_type(env), err);
    chorus__log_env(ch, CHORUS_LOG_ERR, env, "%s: %s", what, err);
    return CHORUS_ERR_SCHEMA;
}
