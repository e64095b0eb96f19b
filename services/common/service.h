/*
 * service.h - what the sample services share: configuration from the
 * environment, the run loop with clean shutdown, small JSON and SQL
 * helpers.  Built only on libchorus' public API, as a user's service would.
 *
 * Environment (SERVICE is the upper-case service name):
 *   CHORUS_AMQP_URL_<SERVICE> or CHORUS_AMQP_URL   broker URL(s)
 *   CHORUS_PG_<SERVICE>                            libpq conninfo (else PG*)
 *   CHORUS_SAGA_FILE                               the saga declaration
 *                                                  (default sagas/order_fulfillment.json)
 *   CHORUS_NAMESPACE                               topology namespace (default chorus)
 *   CHORUS_SCHEMA_PREFIX                           prefix of the service's schema
 *   CHORUS_CONF                                    more settings, "key=value;key=value"
 */
#ifndef CHORUS_SAMPLE_SERVICE_H
#define CHORUS_SAMPLE_SERVICE_H

#include <chorus/chorus.h>
#include <chorus/chorus_json.h>
#include <chorus/chorus_pg.h>

#include <stdbool.h>
#include <stdio.h>

/* A conf for @p service from the environment; NULL with errstr on error. */
chorus_conf_t *svc_conf(const char *service, char *errstr, size_t errstr_size);

/* The service's schema name ("<prefix><service>"). */
const char *svc_schema(const char *service);

/* Creates the participant (takes conf); prints the reason and returns NULL
 * on failure. */
chorus_t *svc_new(chorus_conf_t *conf);

/* chorus_start(), then chorus_run() until SIGTERM or SIGINT; returns the
 * process exit code.  @p tick, when not NULL, runs about every
 * tick_ms between polls (for timers such as a saga deadline). */
int svc_run(chorus_t *ch, void (*tick)(chorus_t *, void *), int tick_ms, void *opaque);

/* Runs SQL in @p tx with text parameters (a NULL-terminated list, so a
 * parameter itself cannot be SQL NULL: pass "" and use NULLIF($n, ''));
 * CHORUS_OK or the error of chorus_tx_exec().  *resp as there. */
chorus_err_t svc_sql(chorus_tx_t *tx, PGresult **resp, const char *sql, ...)
    __attribute__((sentinel));

/* JSON helpers on an event's data. */
const char *svc_str(const cJSON *obj, const char *key);      /* NULL if absent */
bool svc_int(const cJSON *obj, const char *key, long long *out);

/* Logs a line with the event's ids, like chorus does. */
void svc_log(const char *service, const chorus_envelope_t *env, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
