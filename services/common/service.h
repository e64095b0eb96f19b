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

/* Applies "key=value;key=value" (the form of CHORUS_CONF) to @p conf. */
bool svc_conf_extra(chorus_conf_t *conf, const char *extra, char *errstr, size_t errstr_size);

/* The service's schema name ("<prefix><service>"). */
const char *svc_schema(const char *service);

/* Creates the participant (takes conf); prints the reason and returns NULL
 * on failure. */
chorus_t *svc_new(chorus_conf_t *conf);

/* svc_conf() + svc_new(); prints the reason and returns NULL on failure. */
chorus_t *svc_open(const char *service);

/* In one transaction: an advisory lock (instances starting together do not
 * race), the @p n statements of @p ddl, then @p more when not NULL.
 * Prints the reason and returns false on failure. */
bool svc_create_tables(chorus_t *ch, const char *const *ddl, size_t n,
                       bool (*more)(chorus_tx_t *tx, void *opaque), void *opaque);

/* Prints the rows of @p sql (one line per row, columns separated by a
 * space) from @p service's tables; the process exit code. */
int svc_dump(const char *service, const char *const *ddl, size_t n, const char *sql);

/* chorus_start(), then chorus_poll() until SIGTERM or SIGINT; returns the
 * process exit code.  (Timers, a saga's deadline included, are
 * libchorus': chorus_timer_schedule().) */
int svc_run(chorus_t *ch);

/* Runs SQL in @p tx with text parameters (a NULL-terminated list, so a
 * parameter itself cannot be SQL NULL: pass "" and use NULLIF($n, ''));
 * CHORUS_OK or the error of chorus_tx_exec().  *resp as there. */
chorus_err_t svc_sql(chorus_tx_t *tx, PGresult **resp, const char *sql, ...)
    __attribute__((sentinel));

/* Cuts a trailing incomplete UTF-8 character (after a snprintf that may
 * have cut the text inside one). */
void svc_utf8_trim(char *s);

/* JSON helpers on an event's data. */
const char *svc_str(const cJSON *obj, const char *key);      /* NULL if absent */
bool svc_int(const cJSON *obj, const char *key, long long *out);

/* A whole decimal number from @p lo to @p hi, the whole of @p s (a
 * command-line argument); false otherwise. */
bool svc_parse_long(const char *s, long lo, long hi, long *out);

/* ---- an event's data ------------------------------------------------
 * libchorus has checked it against its schema in the saga declaration
 * ("events") before a handler runs; these are the limits those schemas
 * and the command line use. */

#define SVC_MAX_TEXT 1000
#define SVC_MAX_SKU 64
#define SVC_MAX_ITEMS 100
#define SVC_MAX_NUMBER 1000000000000000LL /* exact in a double */

/* data.order_id is the envelope's aggregate (what a schema cannot say);
 * else records the reason on the delivery and returns false. */
bool svc_need_order(chorus_delivery_t *d, const chorus_envelope_t *env, const char **order_id);
/* Logs the rejection; the reason is already on the delivery. */
chorus_outcome_t svc_reject(const char *service, const chorus_envelope_t *env);

/* Emits @p type (data taken) for the order: CHORUS_HANDLED, or
 * CHORUS_RETRY_LATER (the delivery is rolled back and retried). */
chorus_outcome_t svc_emit(chorus_delivery_t *d, const char *type, const char *order_id,
                          cJSON *data);

/* Logs a line with the event's ids, like chorus does. */
void svc_log(const char *service, const chorus_envelope_t *env, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
