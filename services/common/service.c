/*
 * service.c - the sample services' shared plumbing (see service.h).
 */
#include "service.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void upper(const char *in, char *out, size_t n) {
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++)
        out[i] = (char)(in[i] == '-' ? '_' : toupper((unsigned char)in[i]));
    out[i] = '\0';
}

static const char *env_for(const char *base, const char *service) {
    char key[128], up[64];
    upper(service, up, sizeof(up));
    snprintf(key, sizeof(key), "%s_%s", base, up);
    const char *v = getenv(key);
    return v && *v ? v : NULL;
}

const char *svc_schema(const char *service) {
    static char schema[128];
    const char *prefix = getenv("CHORUS_SCHEMA_PREFIX");
    snprintf(schema, sizeof(schema), "%s%s", prefix ? prefix : "", service);
    for (char *p = schema; *p; p++)
        if (*p == '-')
            *p = '_';
    return schema;
}

static bool set(chorus_conf_t *c, const char *k, const char *v, char *err, size_t n) {
    return chorus_conf_set(c, k, v, err, n) == CHORUS_CONF_OK;
}

bool svc_conf_extra(chorus_conf_t *c, const char *extra, char *err, size_t n) {
    char why[512];
    if (chorus_conf_set_list(c, extra, why, sizeof(why)) == CHORUS_CONF_OK)
        return true;
    snprintf(err, n, "CHORUS_CONF: %s", why);
    return false;
}

chorus_conf_t *svc_conf(const char *service, char *err, size_t n) {
    chorus_conf_t *c = chorus_conf_new();
    const char *url = env_for("CHORUS_AMQP_URL", service);
    const char *pg = env_for("CHORUS_PG", service);
    const char *saga = getenv("CHORUS_SAGA_FILE");
    const char *ns = getenv("CHORUS_NAMESPACE");
    const char *extra = getenv("CHORUS_CONF");
    bool ok = c && set(c, "service.name", service, err, n) &&
              set(c, "store.type", "postgres", err, n) &&
              set(c, "store.schema", svc_schema(service), err, n) &&
              set(c, "saga.file", saga && *saga ? saga : "sagas/order_fulfillment.json", err, n) &&
              (!url || set(c, "amqp.url", url, err, n)) &&
              (!pg || set(c, "store.conninfo", pg, err, n)) &&
              (!ns || !*ns || set(c, "topology.namespace", ns, err, n)) &&
              (!extra || !*extra || svc_conf_extra(c, extra, err, n));
    if (!ok) {
        chorus_conf_destroy(c);
        return NULL;
    }
    return c;
}

chorus_t *svc_new(chorus_conf_t *conf) {
    char err[1024]; /* a refused saga declaration says where and why */
    chorus_t *ch = chorus_new(conf, err, sizeof(err));
    if (!ch) {
        fprintf(stderr, "cannot create the participant: %s\n", err);
        chorus_conf_destroy(conf);
    }
    return ch;
}

chorus_t *svc_open(const char *service) {
    char err[512];
    chorus_conf_t *conf = svc_conf(service, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "%s: configuration: %s\n", service, err);
        return NULL;
    }
    return svc_new(conf);
}

bool svc_create_tables(chorus_t *ch, const char *const *ddl, size_t n,
                       bool (*more)(chorus_tx_t *tx, void *opaque), void *opaque) {
    const char *service = chorus_service(ch);
    chorus_tx_t *tx;
    chorus_err_t rc = chorus_tx_begin(ch, &tx);
    if (rc) {
        fprintf(stderr, "%s: PostgreSQL: %s\n", service, chorus_strerror(rc));
        return false;
    }
    rc = svc_sql(tx, NULL, "SELECT pg_advisory_xact_lock(hashtext($1))", svc_schema(service),
                 NULL);
    for (size_t i = 0; !rc && i < n; i++)
        rc = svc_sql(tx, NULL, ddl[i], NULL);
    bool ok = !rc && (!more || more(tx, opaque));
    if (!ok)
        chorus_tx_rollback(tx);
    else if ((rc = chorus_tx_commit(tx)) != CHORUS_OK)
        ok = false;
    if (!ok)
        fprintf(stderr, "%s: cannot prepare the tables%s%s\n", service, rc ? ": " : "",
                rc ? chorus_strerror(rc) : "");
    return ok;
}

int svc_dump(const char *service, const char *const *ddl, size_t n, const char *sql) {
    chorus_t *ch = svc_open(service);
    if (!ch || !svc_create_tables(ch, ddl, n, NULL, NULL)) {
        chorus_destroy(ch);
        return 1;
    }
    chorus_tx_t *tx;
    PGresult *r = NULL;
    chorus_err_t rc = chorus_tx_begin(ch, &tx);
    if (!rc) {
        rc = svc_sql(tx, &r, sql, NULL);
        chorus_tx_rollback(tx);
    }
    for (int i = 0; !rc && i < PQntuples(r); i++)
        for (int k = 0; k < PQnfields(r); k++)
            printf("%s%s", PQgetvalue(r, i, k), k + 1 < PQnfields(r) ? " " : "\n");
    PQclear(r);
    chorus_destroy(ch);
    if (rc)
        fprintf(stderr, "%s: dump failed: %s\n", service, chorus_strerror(rc));
    return rc ? 1 : 0;
}

static chorus_t *running;

static void on_signal(int sig) {
    (void)sig;
    chorus_stop(running); /* async-signal-safe */
}

int svc_run(chorus_t *ch) {
    chorus_err_t rc = chorus_start(ch);
    if (rc) {
        fprintf(stderr, "%s: cannot start: %s (see the log above)\n", chorus_service(ch),
                chorus_strerror(rc));
        return 1;
    }
    running = ch;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fprintf(stderr, "%s: running (queue %s)\n", chorus_service(ch), chorus_queue_name(ch));
    while ((rc = chorus_poll(ch, 200)) == CHORUS_OK)
        ;
    chorus_flush(ch, 5000);
    chorus_stats_t st;
    chorus_stats(ch, &st);
    uint64_t splits = 0, careful = 0;
    chorus_stat_get(ch, "splits", &splits);
    chorus_stat_get(ch, "careful_runs", &careful);
    fprintf(stderr, "%s: stats: handled=%llu duplicates=%llu retried=%llu dead_lettered=%llu "
            "published=%llu relayed=%llu conflicts=%llu splits=%llu careful_runs=%llu "
            "reconnects=%llu\n", chorus_service(ch),
            (unsigned long long)st.handled, (unsigned long long)st.duplicates,
            (unsigned long long)st.retried, (unsigned long long)st.dead_lettered,
            (unsigned long long)st.published, (unsigned long long)st.relayed,
            (unsigned long long)st.conflicts, (unsigned long long)splits,
            (unsigned long long)careful, (unsigned long long)st.reconnects);
    fprintf(stderr, "%s: stopped cleanly\n", chorus_service(ch));
    return rc == CHORUS_ERR_STOPPED ? 0 : 1;
}

chorus_err_t svc_sql(chorus_tx_t *tx, PGresult **resp, const char *sql, ...) {
    const char *params[16];
    int n = 0;
    va_list ap;
    va_start(ap, sql);
    for (const char *p; n < 16 && (p = va_arg(ap, const char *)) != NULL;)
        params[n++] = p;
    va_end(ap);
    return chorus_tx_exec(tx, sql, n, params, resp);
}

const char *svc_str(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

bool svc_parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

bool svc_int(const cJSON *obj, const char *key, long long *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    /* Exactly representable integers only: +-2^53, checked before converting. */
    if (!cJSON_IsNumber(v) || v->valuedouble > 9007199254740991.0 ||
        v->valuedouble < -9007199254740991.0 ||
        v->valuedouble != (double)(long long)v->valuedouble)
        return false;
    *out = (long long)v->valuedouble;
    return true;
}

void svc_log(const char *service, const chorus_envelope_t *env, const char *fmt, ...) {
    char text[512], ts[25];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    chorus_format_timestamp(chorus_now_ms(), ts);
    const char *corr = env ? chorus_envelope_correlation_id(env) : NULL;
    fprintf(stderr, "%s %s INFO %s [event_type=%s event_id=%s correlation_id=%s]\n", ts, service,
            text, env ? chorus_envelope_event_type(env) : "-",
            env ? chorus_envelope_event_id(env) : "-", corr ? corr : "-");
}

void svc_utf8_trim(char *s) {
    size_t n = strlen(s), i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--, back++;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (lead >= 0x80 && back + 1 < want)
        s[i - 1] = '\0'; /* a character cut in two: drop its start */
}

/* ---- checks ----------------------------------------------------------- */

/* The one check a data schema cannot say: data.order_id (its format and
 * presence are the schema's) names the envelope's aggregate. */
bool svc_need_order(chorus_delivery_t *d, const chorus_envelope_t *env, const char **order_id) {
    *order_id = svc_str(chorus_envelope_data(env), "order_id");
    if (*order_id && strcmp(*order_id, chorus_envelope_aggregate_id(env)) == 0)
        return true;
    chorus_delivery_set_error(d, "data.order_id differs from the envelope's aggregate_id");
    return false;
}

chorus_outcome_t svc_reject(const char *service, const chorus_envelope_t *env) {
    svc_log(service, env, "rejected: malformed data (see the dead-letter reason)");
    return CHORUS_REJECT;
}

chorus_outcome_t svc_emit(chorus_delivery_t *d, const char *type, const char *order_id,
                          cJSON *data) {
    chorus_error_t *err = NULL;
    chorus_envelope_t *ev = data ? chorus_envelope_new_json(type, order_id, 1, data, &err) : NULL;
    chorus_err_t rc = ev ? chorus_emit(d, ev) : err ? chorus_error_code(err) : CHORUS_ERR_NOMEM;
    if (rc == CHORUS_OK)
        return CHORUS_HANDLED;
    chorus_delivery_set_error(d, "cannot emit %s: %s", type,
                              err ? chorus_error_string(err) : chorus_strerror(rc));
    chorus_error_destroy(err);
    return CHORUS_RETRY_LATER;
}
