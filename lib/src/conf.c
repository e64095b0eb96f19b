/*
 * conf.c - the configuration object and its property table.
 *
 * Every key the library understands is one row of `props` below: its name,
 * kind, default, bounds and documentation.  The same row validates
 * chorus_conf_set() and writes lib/docs/CONFIGURATION.md
 * (chorus_conf_write_docs()), so the documentation cannot drift from the
 * code.  Values are kept as validated text; conf_int.h parses them for the
 * modules that use them.
 */
#include "conf_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { P_STR, P_NAME, P_INT, P_ENUM, P_DELAYS, P_URLS } prop_kind_t;

typedef struct {
    const char *name;
    prop_kind_t kind;
    const char *def;
    long min, max;      /* P_INT bounds */
    const char *choices;/* P_ENUM: "a|b|c" */
    const char *doc;
} prop_t;

static const prop_t props[] = {
    {"service.name", P_NAME, "", 0, 0, NULL,
     "Name of this participant (lower case letters, digits, '-' and '_'). "
     "Prefix of the routing keys it publishes and part of its queue names. "
     "Required."},
    {"amqp.url", P_URLS, "", 0, 0, NULL,
     "Broker URLs, `amqp://user:pass@host:port/vhost` (`amqps://` for TLS, "
     "port 5671 by default; see `amqp.tls.*`), separated by commas or "
     "spaces; tried in order on every (re)connect. Empty: the environment "
     "variable CHORUS_AMQP_URL."},
    {"amqp.tls.ca.file", P_STR, "", 0, 0, NULL,
     "For `amqps://` URLs: the CA certificates (PEM) a broker's certificate "
     "must chain to. Empty: the environment variable CHORUS_AMQP_TLS_CA_FILE, "
     "else the system's CA store."},
    {"amqp.tls.cert.file", P_STR, "", 0, 0, NULL,
     "For `amqps://` URLs: a client certificate (PEM, with its chain) to "
     "present to the broker, with `amqp.tls.key.file`. Empty: the environment "
     "variable CHORUS_AMQP_TLS_CERT_FILE, else none."},
    {"amqp.tls.key.file", P_STR, "", 0, 0, NULL,
     "The private key (PEM, not encrypted) of `amqp.tls.cert.file`. Empty: "
     "the environment variable CHORUS_AMQP_TLS_KEY_FILE."},
    {"amqp.tls.verify.peer", P_ENUM, "on", 0, 0, "on|off",
     "For `amqps://` URLs: `on` refuses a broker whose certificate does not "
     "chain to a trusted CA (or has expired). `off` accepts any certificate: "
     "the connection is encrypted but the broker unauthenticated; for tests "
     "only."},
    {"amqp.tls.verify.hostname", P_ENUM, "on", 0, 0, "on|off",
     "For `amqps://` URLs: `on` refuses a broker whose certificate does not "
     "name the host of the URL (a DNS name, or an IP address in its "
     "subjectAltName) or `amqp.tls.server.name`."},
    {"amqp.tls.server.name", P_STR, "", 0, 0, NULL,
     "The name the broker's certificate must carry, instead of the URL's "
     "host (e.g. the URL names an IP address, the certificate a DNS name). "
     "SNI still sends the URL's host."},
    {"amqp.connection.name", P_STR, "", 0, 0, NULL,
     "Connection name shown by the broker (client property "
     "`connection_name`). Empty: the service name."},
    {"amqp.heartbeat.s", P_INT, "10", 0, 3600, NULL,
     "Heartbeat interval requested from the broker, in seconds (0 disables). "
     "A background thread keeps heartbeats going while handlers run."},
    {"amqp.connect.timeout.ms", P_INT, "5000", 100, 600000, NULL,
     "Timeout for the TCP connect to one broker address (for `amqps://`, "
     "the TLS handshake too)."},
    {"amqp.handshake.timeout.ms", P_INT, "10000", 100, 600000, NULL,
     "Timeout for the AMQP handshake and login."},
    {"amqp.rpc.timeout.ms", P_INT, "10000", 100, 600000, NULL,
     "Timeout for one synchronous AMQP method (declare, bind, qos...)."},
    {"amqp.start.timeout.ms", P_INT, "15000", 0, 3600000, NULL,
     "How long chorus_start() keeps trying when the broker is unreachable or "
     "not ready yet (refused logins and mismatched declarations fail at "
     "once). 0: one attempt."},
    {"amqp.reconnect.backoff.initial.ms", P_INT, "100", 1, 600000, NULL,
     "First delay before reconnecting after a lost connection; doubles "
     "after each failed attempt, with jitter."},
    {"amqp.reconnect.backoff.max.ms", P_INT, "5000", 1, 3600000, NULL,
     "Upper bound of the reconnect delay."},
    {"topology.namespace", P_NAME, "chorus", 0, 0, NULL,
     "Prefix of every exchange and queue name chorus declares."},
    {"topology.queue.type", P_ENUM, "quorum", 0, 0, "quorum|classic",
     "Type of the service queue and its retry queues. The DLQ is always "
     "classic: only a classic queue keeps a browsed message in its place."},
    {"topology.retry.strategy", P_ENUM, "at-least-once", 0, 0, "at-least-once|at-most-once",
     "How quorum queues dead-letter: a retry queue an expired message back to "
     "the service queue, the service queue a message over its delivery limit "
     "to the DLQ. RabbitMQ's at-least-once strategy (never lost; needs "
     "reject-publish overflow) or at-most-once. RabbitMQ 3.10's at-least-once "
     "worker can fail for good when such queues are created and deleted in "
     "quick succession (a test suite's churn); production queues are not."},
    {"topology.prefetch", P_INT, "100", 1, 65535, NULL,
     "Unacknowledged deliveries the broker may send ahead (basic.qos)."},
    {"topology.bindings", P_STR, "", 0, 0, NULL,
     "Routing keys the service queue is bound to, comma-separated. Empty: "
     "`*.<EventType>` for every registered handler."},
    {"retry.delays.ms", P_DELAYS, "1000,5000,30000", 0, 0, NULL,
     "Delays of the TTL retry queues, in ms or with an s/ms suffix "
     "(\"1s,5s,30s\"). A delivery retried for the n-th time waits the n-th "
     "delay (the last one repeats)."},
    {"retry.max.attempts", P_INT, "4", 1, 1000, NULL,
     "Handling attempts before a message that keeps asking to be retried is "
     "dead-lettered (reason `retries-exhausted`)."},
    {"publish.window", P_INT, "1000", 1, 1000000, NULL,
     "Publishes that may await their confirm at once."},
    {"consume.batch.max", P_INT, "64", 1, 65535, NULL,
     "Deliveries already waiting that are handled as one batch."},
    {"consume.batch.max.decoded.bytes", P_INT, "67108864", 65536, 2147483647, NULL,
     "Memory the decoded envelopes of one batch may take; a batch ends early "
     "(the rest waits for the next one) rather than go beyond it. A single "
     "delivery is always taken, so this bound should be at least "
     "`message.max.decoded.bytes`."},
    {"consume.delivery.limit", P_INT, "20", 2, 1000, NULL,
     "Deliveries of one message that may end without being settled (the "
     "process died, the connection was lost) before it is dead-lettered "
     "(reason `delivery-limit`) instead of handled again. Quorum queues also "
     "get it as `x-delivery-limit`, so the broker dead-letters a message chorus "
     "cannot even read; for classic queues chorus counts redeliveries itself."},
    {"consume.single.active", P_ENUM, "off", 0, 0, "off|on",
     "`on`: the service queue is declared with `x-single-active-consumer`: of "
     "several instances on it one consumes, the others stand by and take over "
     "when it goes, so the events of one aggregate are handled one at a time, "
     "in the order the queue holds them (README, \"Ordering\"), at the "
     "throughput of one instance. `off`: every instance consumes, and two "
     "events of one aggregate may be handled at the same time or out of "
     "order. An existing queue keeps its arguments: changing this needs the "
     "queue deleted (chorus_start() says so)."},
    {"consume.newer.schema", P_ENUM, "dead-letter", 0, 0, "dead-letter|retry",
     "What happens to an event whose schema_version is newer than any this "
     "consumer knows (no upcaster or declaration reaches it): dead-lettered "
     "at once (reason `unknown-schema-version`) or retried later, while a "
     "newer consumer is being deployed, and dead-lettered with that reason "
     "after the last attempt. The saga declaration may say so per event type "
     "(`events.<Type>.newer_schema`)."},
    {"message.max.bytes", P_INT, "1048576", 256, 134217728, NULL,
     "Largest envelope accepted; larger deliveries are dead-lettered as "
     "malformed."},
    {"message.max.depth", P_INT, "32", 2, 1000, NULL,
     "Deepest JSON nesting accepted in an envelope."},
    {"message.max.decoded.bytes", P_INT, "16777216", 4096, 2147483647, NULL,
     "Memory one decoded envelope may take (a cJSON node per value plus the "
     "bytes of every string, as counted by the parser). JSON of small "
     "numbers decodes to about 40 times its size, so a message within "
     "`message.max.bytes` can still be refused here; it is dead-lettered as "
     "malformed."},
    {"store.type", P_ENUM, "none", 0, 0, "none|postgres",
     "`postgres`: each delivery is handled in a PostgreSQL transaction with "
     "an inbox (duplicates skipped) and a transactional outbox; the event "
     "store is available. `none`: broker only."},
    {"store.conninfo", P_STR, "", 0, 0, NULL,
     "libpq connection string. Empty: libpq's PG* environment variables."},
    {"store.schema", P_NAME, "", 0, 0, NULL,
     "Schema holding chorus' tables. Empty: the service name."},
    {"store.snapshot.every", P_INT, "50", 1, 1000000, NULL,
     "The event store writes a snapshot of an aggregate every N events."},
    {"metrics.listen", P_STR, "", 0, 0, NULL,
     "`HOST:PORT` of the participant's HTTP endpoint serving `/metrics` "
     "(Prometheus text format), `/healthz` and `/readyz`. Empty: none. "
     "HOST must be a loopback address (127.0.0.0/8 or `[::1]`) unless "
     "metrics.listen.remote is `true`."},
    {"metrics.listen.remote", P_ENUM, "false", 0, 0, "true|false",
     "`true`: metrics.listen may name an address other hosts reach (nothing "
     "on the endpoint is authenticated)."},
    {"metrics.sample.interval.ms", P_INT, "5000", 100, 3600000, NULL,
     "How often the poll loop samples the queue depths (a passive declare on "
     "a channel of its own) and the outbox backlog (a query) for the metrics "
     "endpoint; counters are copied at every poll."},
    {"store.relay.interval.ms", P_INT, "1000", 10, 3600000, NULL,
     "How often the outbox relay looks for rows left unpublished (it also "
     "runs at start-up and on NOTIFY)."},
    {"store.timer.interval.ms", P_INT, "200", 10, 3600000, NULL,
     "How often a participant looks for durable timers that are due (saga "
     "deadlines, chorus_timer_schedule()); a timer it armed itself is looked "
     "at when due.  A timer fires at most this late."},
    {"store.inbox.retention.hours", P_INT, "168", 1, 87600, NULL,
     "Inbox rows older than this are deleted (a duplicate arriving later is "
     "no longer recognised), and so are outbox rows published that long ago, "
     "commands' idempotency keys and settled timers."},
    {"store.saga.retention.hours", P_INT, "2160", 1, 876000, NULL,
     "Saga step guards (saga_guards) older than this are deleted.  A step's "
     "trigger arriving later (a dead letter requeued after that long) is no "
     "longer recognised as refused or done; keep it above the time a dead "
     "letter may wait.  Default: 90 days."},
    {"store.conflict.retries", P_INT, "5", 0, 1000, NULL,
     "Immediate re-runs of a handler after a version conflict, serialization "
     "failure or deadlock, before it is retried later instead."},
    {"store.start.timeout.ms", P_INT, "15000", 0, 3600000, NULL,
     "How long chorus_start() keeps trying when PostgreSQL is down or not "
     "accepting connections yet (starting up, in recovery); refused logins "
     "and schema errors fail at once. 0: one attempt."},
    {"store.lock.wait.ms", P_INT, "50", 0, 60000, NULL,
     "How long a delivery that is not the first of its batch transaction may "
     "wait for a row lock (lock_timeout), while the transaction holds the "
     "locks of the deliveries before it. When it runs out, those commit and "
     "the delivery runs again first in a transaction of its own, where it "
     "waits as long as it takes (counter `splits`): several instances' "
     "batches never wait for each other in a circle, so PostgreSQL never "
     "has to detect a deadlock. 0: no bound (two instances' batches may "
     "deadlock, detected after deadlock_timeout)."},
    {"store.reconnect.backoff.max.ms", P_INT, "5000", 10, 3600000, NULL,
     "Upper bound of the delay between PostgreSQL reconnect attempts; "
     "consumption pauses meanwhile."},
    {"security.producer.check", P_ENUM, "declared", 0, 0, "declared|off",
     "With a saga declaration (`saga.file`): `declared` dead-letters (reason "
     "`forbidden-producer`) every event whose verified producer is not the "
     "service the declaration names as its producer, whatever route it came "
     "by. The producer is the AMQP `user_id` property, which RabbitMQ checks "
     "against the publishing connection's user (chorus sets it on every "
     "publish). `off`: no check (e.g. every service shares one broker user)."},
    {"security.user.template", P_STR, "{namespace}-{service}", 0, 0, NULL,
     "The broker user name of a saga's service, for the producer check: "
     "`{namespace}` and `{service}` are replaced (`shop-payment`)."},
    {"saga.file", P_STR, "", 0, 0, NULL,
     "Saga declaration (JSON). When set, chorus_start() refuses to start if "
     "the registered handlers differ from this service's role in it, and "
     "binds the queue to exactly the events the role consumes."},
    {"transport", P_ENUM, "amqp", 0, 0, "amqp|simulation",
     "`simulation`: the participant runs against the in-memory broker and "
     "simulated clock of a deterministic simulation (chorus_sim.h), which "
     "sets it; chorus_start() refuses it anywhere else."},
    {"debug.crash.point", P_ENUM, "none", 0, 0, "none|before-commit|after-commit|before-ack",
     "Fault injection for tests: the process kills itself (SIGKILL) at that "
     "point of a batch's life: before its transaction commits, after the "
     "commit and before its events are published, or after they are "
     "confirmed and before its deliveries are acked. Never set it in "
     "production."},
    {"debug.mutation", P_ENUM, "none", 0, 0, "none|pivot-unsafe|no-overtake-guard|inbox-bypass",
     "A deliberate defect, for the simulation's own tests (scripts/sim "
     "--mutation): `pivot-unsafe` makes the pivot accept a cancellation "
     "request even after it ran; `no-overtake-guard` runs a step's action "
     "although its compensation came first; `inbox-bypass` handles every "
     "delivery as new (no inbox, no once-per-saga record of an action). "
     "Never set it in production."},
    {"debug.commit.answer", P_ENUM, "read", 0, 0, "read|lost",
     "Fault injection for tests: `lost` drops the connection to PostgreSQL "
     "after the server has answered the COMMIT of a command that recorded an "
     "idempotency key (chorus_tx_idempotent, chorus_tx_commit) but "
     "before chorus reads the answer, as if the network failed at that "
     "moment: the transaction is committed, and the caller is told "
     "CHORUS_ERR_COMMIT_UNKNOWN. Never set it in production."},
    {"debug.publish.copies", P_INT, "1", 1, 3, NULL,
     "Fault injection for tests: every outbox row is published this many "
     "times, so every event reaches its consumers more than once. Never set "
     "it in production."},
    {"log.level", P_ENUM, "info", 0, 0, "err|warning|notice|info|debug",
     "Lowest level written to the log callback."},
};

#define NPROPS (sizeof(props) / sizeof(props[0]))

static int prop_index(const char *key) {
    for (size_t i = 0; i < NPROPS; i++)
        if (strcmp(props[i].name, key) == 0)
            return (int)i;
    return -1;
}

chorus_conf_t *chorus_conf_new(void) {
    chorus_conf_t *conf = calloc(1, sizeof(*conf));
    if (!conf)
        return NULL;
    conf->values = calloc(NPROPS, sizeof(char *));
    if (!conf->values) {
        free(conf);
        return NULL;
    }
    return conf;
}

void chorus_conf_destroy(chorus_conf_t *conf) {
    if (!conf)
        return;
    for (size_t i = 0; i < NPROPS; i++)
        free(conf->values[i]);
    free(conf->values);
    free(conf);
}

chorus_conf_t *chorus_conf_dup(const chorus_conf_t *conf) {
    chorus_conf_t *d = chorus_conf_new();
    if (!d)
        return NULL;
    for (size_t i = 0; i < NPROPS; i++) {
        if (conf->values[i] && !(d->values[i] = chorus__strdup(conf->values[i]))) {
            chorus_conf_destroy(d);
            return NULL;
        }
    }
    d->log_cb = conf->log_cb;
    d->log_opaque = conf->log_opaque;
    d->dr_cb = conf->dr_cb;
    d->dr_opaque = conf->dr_opaque;
    return d;
}

static bool parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

int chorus__parse_delays(const char *s, long *out, int max) {
    int n = 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > 86400000L)
            return -1;
        if (strncmp(end, "ms", 2) == 0)
            end += 2;
        else if (*end == 's') {
            if (v > 86400)
                return -1;
            v *= 1000;
            end++;
        }
        if (*end && *end != ',' && *end != ' ')
            return -1;
        if (n == max)
            return -1;
        out[n++] = v;
        p = end;
    }
    return n;
}

static bool valid_name(const char *v) {
    if (!*v || strlen(v) > 64)
        return false;
    for (const char *p = v; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

static bool enum_has(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

static bool validate(const prop_t *pr, const char *v, char *errstr,
                     size_t size) {
    long n;
    long delays[CHORUS__MAX_DELAYS];
    switch (pr->kind) {
    case P_STR:
    case P_URLS: /* URLs are parsed, with precise errors, by chorus_new() */
        return true;
    case P_NAME:
        if (*v == '\0' && (strcmp(pr->name, "service.name") == 0 ||
                           strcmp(pr->name, "store.schema") == 0))
            return true; /* unset: required, or a default from elsewhere */
        if (valid_name(v))
            return true;
        chorus__errstr(errstr, size,
                       "%s: \"%s\" must be 1-64 characters of a-z, 0-9, '-', '_'",
                       pr->name, v);
        return false;
    case P_INT:
        if (parse_long(v, &n) && n >= pr->min && n <= pr->max)
            return true;
        chorus__errstr(errstr, size, "%s: \"%s\" must be an integer from %ld to %ld",
                       pr->name, v, pr->min, pr->max);
        return false;
    case P_ENUM:
        if (enum_has(pr->choices, v))
            return true;
        chorus__errstr(errstr, size, "%s: \"%s\" must be one of %s", pr->name,
                       v, pr->choices);
        return false;
    case P_DELAYS:
        if (chorus__parse_delays(v, delays, CHORUS__MAX_DELAYS) >= 0)
            return true;
        chorus__errstr(errstr, size,
                       "%s: \"%s\" must be a comma-separated list of at most %d "
                       "durations such as 1s or 500ms",
                       pr->name, v, CHORUS__MAX_DELAYS);
        return false;
    }
    return false;
}

chorus_conf_res_t chorus_conf_set_list(chorus_conf_t *conf, const char *list, char *errstr,
                                       size_t errstr_size) {
    if (!conf || !list) {
        chorus__errstr(errstr, errstr_size, "conf and list are required");
        return CHORUS_CONF_INVALID;
    }
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ";");
        if (len) {
            const char *eq = memchr(p, '=', len);
            if (!eq) {
                chorus__errstr(errstr, errstr_size, "'%.*s' is not key=value", (int)len, p);
                return CHORUS_CONF_INVALID;
            }
            char *key = strndup(p, (size_t)(eq - p));
            char *value = strndup(eq + 1, len - (size_t)(eq - p) - 1);
            chorus_conf_res_t r = key && value ? chorus_conf_set(conf, key, value, errstr,
                                                                 errstr_size)
                                               : CHORUS_CONF_INVALID;
            if (!key || !value)
                chorus__errstr(errstr, errstr_size, "out of memory");
            free(key);
            free(value);
            if (r != CHORUS_CONF_OK)
                return r;
        }
        p += len;
        p += *p == ';';
    }
    return CHORUS_CONF_OK;
}

chorus_conf_res_t chorus_conf_set(chorus_conf_t *conf, const char *key,
                                  const char *value, char *errstr,
                                  size_t errstr_size) {
    if (!conf || !key || !value) {
        chorus__errstr(errstr, errstr_size, "conf, key and value are required");
        return CHORUS_CONF_INVALID;
    }
    int i = prop_index(key);
    if (i < 0) {
        chorus__errstr(errstr, errstr_size, "unknown configuration property \"%s\"", key);
        return CHORUS_CONF_UNKNOWN;
    }
    if (!validate(&props[i], value, errstr, errstr_size))
        return CHORUS_CONF_INVALID;
    char *copy = chorus__strdup(value);
    if (!copy) {
        chorus__errstr(errstr, errstr_size, "out of memory");
        return CHORUS_CONF_INVALID;
    }
    free(conf->values[i]);
    conf->values[i] = copy;
    return CHORUS_CONF_OK;
}

const char *chorus_conf_get(const chorus_conf_t *conf, const char *key) {
    int i = prop_index(key);
    if (i < 0)
        return NULL;
    return conf && conf->values[i] ? conf->values[i] : props[i].def;
}

const char *chorus__conf_str(const chorus_conf_t *conf, const char *key) {
    const char *v = chorus_conf_get(conf, key);
    return v ? v : "";
}

long chorus__conf_int(const chorus_conf_t *conf, const char *key) {
    return strtol(chorus__conf_str(conf, key), NULL, 10);
}

void chorus_conf_set_log_cb(chorus_conf_t *conf, chorus_log_cb *cb, void *opaque) {
    conf->log_cb = cb;
    conf->log_opaque = opaque;
}

void chorus_conf_set_dr_cb(chorus_conf_t *conf, chorus_dr_cb *cb, void *opaque) {
    conf->dr_cb = cb;
    conf->dr_opaque = opaque;
}

static const char *kind_name(const prop_t *pr) {
    switch (pr->kind) {
    case P_STR: return "string";
    case P_NAME: return "name";
    case P_INT: return "integer";
    case P_ENUM: return pr->choices;
    case P_DELAYS: return "durations";
    case P_URLS: return "URL list";
    }
    return "?";
}

void chorus_conf_write_docs(void *out) {
    FILE *f = out;
    fprintf(f, "# Configuration properties\n\n"
               "Generated from the property table in `lib/src/conf.c` by "
               "`chorus_conf_write_docs()`; do not edit by hand.\n"
               "Set with `chorus_conf_set(conf, key, value, errstr, size)`.\n\n"
               "| key | type | default | range | meaning |\n"
               "|---|---|---|---|---|\n");
    for (size_t i = 0; i < NPROPS; i++) {
        const prop_t *pr = &props[i];
        char range[64] = "";
        if (pr->kind == P_INT)
            snprintf(range, sizeof(range), "%ld..%ld", pr->min, pr->max);
        fprintf(f, "| `%s` | %s | `%s` | %s | %s |\n", pr->name, kind_name(pr),
                pr->def, range, pr->doc);
    }
}
