/*
 * chorus.c - the participant handle: configuration in, handlers
 * registered, then a loop of chorus_poll() until chorus_stop().
 *
 *   chorus_new()      validates what can be checked without a broker
 *   chorus_register() one handler per event type, before start
 *   chorus_start()    topology plan from the handlers, connect, consume
 *   chorus_poll()     reconnect when due; read frames; handle a batch
 *   chorus_stop()     sets a flag (signal-safe); chorus_run() returns
 *
 * All reconnect decisions live in chorus_poll(): a lost connection is
 * noticed wherever it happens (reading, publishing, acking) and only
 * recorded there; the next poll reconnects after the backoff.
 */
#include "chorus_int.h"
#include "saga_int.h"

#include <errno.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool load_conf(chorus_t *ch, char *errstr, size_t size) {
    const char *svc = chorus__conf_str(ch->conf, "service.name");
    if (!*svc) {
        chorus__errstr(errstr, size, "service.name is required");
        return false;
    }
    /* Its queue would be the shared "<ns>.events" or "<ns>.unrouted" one. */
    if (strcmp(svc, "events") == 0 || strcmp(svc, "unrouted") == 0) {
        chorus__errstr(errstr, size, "service.name \"%s\" is reserved (a shared exchange or "
                                     "queue has that name)", svc);
        return false;
    }
    snprintf(ch->service, sizeof(ch->service), "%s", svc);
    const char *urls = chorus__conf_str(ch->conf, "amqp.url");
    if (!*urls)
        urls = getenv("CHORUS_AMQP_URL");
    ch->nurls = chorus__url_parse_list(urls, ch->urls, CHORUS__MAX_URLS, errstr, size);
    if (ch->nurls < 0)
        return false;
    const char *name = chorus__conf_str(ch->conf, "amqp.connection.name");
    snprintf(ch->conn_name, sizeof(ch->conn_name), "%s", *name ? name : svc);
    ch->heartbeat_s = (int)chorus__conf_int(ch->conf, "amqp.heartbeat.s");
    ch->limits.max_bytes = (size_t)chorus__conf_int(ch->conf, "message.max.bytes");
    ch->limits.max_depth = (int)chorus__conf_int(ch->conf, "message.max.depth");
    ch->max_decoded = (size_t)chorus__conf_int(ch->conf, "message.max.decoded.bytes");
    ch->batch_max_decoded = (size_t)chorus__conf_int(ch->conf, "consume.batch.max.decoded.bytes");
    ch->delivery_limit = (int)chorus__conf_int(ch->conf, "consume.delivery.limit");
    ch->window = (size_t)chorus__conf_int(ch->conf, "publish.window");
    ch->batch_max = (int)chorus__conf_int(ch->conf, "consume.batch.max");
    chorus__retry_schedule_from_conf(ch->conf, &ch->retry);
    chorus__backoff_init(&ch->reconnect,
                         chorus__conf_int(ch->conf, "amqp.reconnect.backoff.initial.ms"),
                         chorus__conf_int(ch->conf, "amqp.reconnect.backoff.max.ms"));
    chorus__backoff_init(&ch->pubfail, 200, 5000);
    chorus__store_t *st = &ch->store;
    chorus__backoff_init(&st->retry, 100, chorus__conf_int(ch->conf, "store.reconnect.backoff.max.ms"));
    st->enabled = strcmp(chorus__conf_str(ch->conf, "store.type"), "postgres") == 0;
    const char *schema = chorus__conf_str(ch->conf, "store.schema");
    snprintf(st->schema, sizeof(st->schema), "%s", *schema ? schema : svc);
    snprintf(st->channel, sizeof(st->channel), "chorus_outbox_%s", st->schema);
    st->channel[63] = '\0'; /* identifiers end at NAMEDATALEN - 1, as in the trigger */
    const char *crash = chorus__conf_str(ch->conf, "debug.crash.point");
    ch->crash_point = strcmp(crash, "none") == 0 ? NULL : crash;
    const char *mut = chorus__conf_str(ch->conf, "debug.mutation");
    ch->mutations = strcmp(mut, "pivot-unsafe") == 0        ? CHORUS__MUT_PIVOT_UNSAFE
                    : strcmp(mut, "no-overtake-guard") == 0 ? CHORUS__MUT_NO_OVERTAKE
                    : strcmp(mut, "inbox-bypass") == 0      ? CHORUS__MUT_INBOX_BYPASS
                                                            : 0;
    if (chorus__names_build(chorus__conf_str(ch->conf, "topology.namespace"), svc,
                            &ch->retry, &ch->topo.names)) {
        chorus__errstr(errstr, size, "topology.namespace and service.name make names "
                                     "longer than AMQP allows");
        return false;
    }
    /* Last: nothing after it fails, so a refusal frees nothing else.  The
     * declaration is needed before chorus_start(): a command emitting a
     * saga's first event (its deadline, its timer) runs without it. */
    const char *saga = chorus__conf_str(ch->conf, "saga.file");
    if (*saga && !(ch->saga = chorus_saga_load(saga, errstr, size)))
        return false;
    return true;
}

/* ---- the connection's hooks (chorus__conn_hooks_t) ---------------------- */

static chorus_err_t conn_ready(chorus_t *ch, amqp_channel_t n, char *err, size_t size) {
    /* a new connection, a reopened channel, a cancelled consumer, an
     * unroutable publish: the topology first (a 404 may mean someone
     * deleted it), then consuming where that channel is concerned */
    chorus_err_t rc = ch->link->declare(ch, err, size);
    if (!rc && (n == 0 || n == CHORUS__CH_CONSUME) && ch->nhandlers > 0)
        rc = chorus__consume_start(ch);
    return rc;
}

static void conn_reopened(chorus_t *ch, amqp_channel_t n) {
    if (n == CHORUS__CH_PUBLISH)
        chorus__publisher_resend(ch);
}

static void conn_reset(chorus_t *ch, amqp_channel_t n) {
    if (n == 0 || n == CHORUS__CH_CONSUME) {
        chorus__backlog_clear(ch); /* the broker requeues them */
        chorus__consumer_lost(ch);
    }
    if (n == 0 || n == CHORUS__CH_PUBLISH)
        chorus__publisher_reset(ch);
}

static const chorus__conn_hooks_t HOOKS = {
    .ready = conn_ready,
    .reopened = conn_reopened,
    .reset = conn_reset,
    .deliver = chorus__consumer_deliver,
    .refused = chorus__consumer_refused,
    .confirm = chorus__on_confirm,
    .returned = chorus__on_return,
};

chorus_t *chorus_new(chorus_conf_t *conf, char *errstr, size_t errstr_size) {
    if (!conf) {
        chorus__errstr(errstr, errstr_size, "conf is required");
        return NULL;
    }
    chorus_t *ch = calloc(1, sizeof(*ch));
    if (!ch) {
        chorus__errstr(errstr, errstr_size, "out of memory");
        return NULL;
    }
    ch->hooks = HOOKS;
    ch->link = &chorus__amqp_link;
    ch->conf = conf;
    if (!load_conf(ch, errstr, errstr_size)) {
        free(ch);
        return NULL;
    }
    pthread_mutex_init(&ch->conn_lock, NULL);
    chorus__confirms_init(&ch->confirms);
    atomic_store(&ch->last_io_ms, chorus__mono_ms());
    return ch;
}

static void free_bindings(chorus_t *ch) {
    for (int i = 0; i < ch->nbindings; i++)
        free(ch->bindings[i]);
    free(ch->bindings);
    ch->bindings = NULL;
    ch->nbindings = 0;
}

void chorus_destroy(chorus_t *ch) {
    if (!ch)
        return;
    chorus__metrics_stop(ch); /* first: its thread reads nothing of ch, but stops serving */
    chorus__hb_stop(ch);
    chorus__conn_close(ch);
    chorus__backlog_clear(ch);
    chorus__publisher_destroy(ch);
    chorus__consumer_free(ch);
    chorus__store_close(ch);
    chorus__sql_free(&ch->store.sql);
    chorus__marks_free(&ch->store.marks);
    chorus__upcasters_free(ch);
    chorus__topology_free(&ch->topo);
    free_bindings(ch);
    free(ch->held);
    for (size_t i = 0; i < ch->nhandlers; i++) {
        chorus__handler_t *h = &ch->handlers[i];
        free(h->event_type);
        for (size_t k = 0; k < h->nproducer_users; k++)
            free(h->producer_users[k]);
        free(h->producer_users);
    }
    free(ch->handlers);
    chorus_saga_destroy(ch->saga);
    pthread_mutex_destroy(&ch->conn_lock);
    chorus_conf_destroy(ch->conf);
    free(ch);
}

static bool find_registered(const chorus_t *ch, const char *type) {
    for (size_t i = 0; i < ch->nhandlers; i++)
        if (strcmp(ch->handlers[i].event_type, type) == 0)
            return true;
    return false;
}

chorus_err_t chorus_register(chorus_t *ch, const char *event_type,
                             chorus_handler_fn *fn, void *opaque) {
    if (!ch || !event_type || !*event_type || !fn)
        return CHORUS_ERR_INVALID_ARG;
    if (ch->started)
        return CHORUS_ERR_STATE;
    for (size_t i = 0; i < ch->nhandlers; i++)
        if (strcmp(ch->handlers[i].event_type, event_type) == 0)
            return CHORUS_ERR_INVALID_ARG;
    chorus__handler_t *n = realloc(ch->handlers, (ch->nhandlers + 1) * sizeof(*n));
    if (!n)
        return CHORUS_ERR_NOMEM;
    ch->handlers = n;
    n[ch->nhandlers].event_type = chorus__strdup(event_type);
    if (!n[ch->nhandlers].event_type)
        return CHORUS_ERR_NOMEM;
    n[ch->nhandlers].fn = fn;
    n[ch->nhandlers].opaque = opaque;
    n[ch->nhandlers].producer_users = NULL;
    n[ch->nhandlers].nproducer_users = 0;
    n[ch->nhandlers].newest_schema = 1;
    n[ch->nhandlers].registered_schema = 1;
    n[ch->nhandlers].newer_retry = false;
    ch->nhandlers++;
    return CHORUS_OK;
}

chorus_err_t chorus_register_schema_version(chorus_t *ch, const char *event_type, int version) {
    if (!ch || !event_type || version < 1)
        return CHORUS_ERR_INVALID_ARG;
    if (ch->started)
        return CHORUS_ERR_STATE;
    for (size_t i = 0; i < ch->nhandlers; i++) {
        if (strcmp(ch->handlers[i].event_type, event_type) == 0) {
            ch->handlers[i].registered_schema = version;
            return CHORUS_OK;
        }
    }
    return CHORUS_ERR_NO_HANDLER;
}

static chorus_err_t add_binding(chorus_t *ch, const char *key, size_t len) {
    char **n = realloc(ch->bindings, (size_t)(ch->nbindings + 1) * sizeof(*n));
    if (!n)
        return CHORUS_ERR_NOMEM;
    ch->bindings = n;
    if (!(n[ch->nbindings] = strndup(key, len)))
        return CHORUS_ERR_NOMEM;
    ch->nbindings++;
    return CHORUS_OK;
}

/*
 * Holds the handlers against the service's role in the declaration.  The
 * events chorus answers itself (a cancellation request at the pivot,
 * "refuses_after") get its own handler; one of the application's there
 * would never be called, so it is refused.
 */
static chorus_err_t check_saga(chorus_t *ch) {
    const chorus_saga_t *saga = ch->saga;
    if (!saga)
        return CHORUS_OK;
    char err[1024];
    for (size_t i = 0; i < ch->nhandlers; i++) {
        if (chorus__saga_library_handled(saga, ch->service, ch->handlers[i].event_type) &&
            ch->handlers[i].fn != chorus__saga_noop) {
            chorus__log(ch, CHORUS_LOG_ERR, "refusing to start: saga '%s': service '%s' "
                        "registered a handler for %s, which chorus answers itself there "
                        "(sagas/README.md, \"Cancellation\")", chorus_saga_name(saga),
                        ch->service, ch->handlers[i].event_type);
            return CHORUS_ERR_INVALID_CONF;
        }
    }
    const char *const *types;
    size_t n = chorus_saga_consumes(saga, ch->service, &types);
    bool guarded = false;
    for (size_t i = 0; i < n; i++) {
        size_t step;
        guarded |= chorus__saga_guard(saga, ch->service, types[i], &step) != CHORUS__GUARD_NONE;
        if (!chorus__saga_library_handled(saga, ch->service, types[i]) ||
            find_registered(ch, types[i]))
            continue;
        chorus_err_t rc = chorus_register(ch, types[i], chorus__saga_noop, NULL);
        if (rc)
            return rc;
    }
    if (guarded && !ch->store.enabled) {
        chorus__log(ch, CHORUS_LOG_ERR, "refusing to start: saga '%s': service '%s' takes steps, "
                    "whose guards need the store (store.type=postgres)", chorus_saga_name(saga),
                    ch->service);
        return CHORUS_ERR_INVALID_CONF;
    }
    const char **names = calloc(ch->nhandlers + 1, sizeof(*names));
    if (!names)
        return CHORUS_ERR_NOMEM;
    for (size_t i = 0; i < ch->nhandlers; i++)
        names[i] = ch->handlers[i].event_type;
    chorus_err_t rc = chorus_saga_check_handlers(saga, ch->service, names, ch->nhandlers, err,
                                                 sizeof(err));
    free(names);
    if (rc)
        chorus__log(ch, CHORUS_LOG_ERR, "refusing to start: %s", err);
    return rc;
}

/* "topology.bindings" when set; else the saga's routing keys for this
 * service; else "*.<EventType>" per handler. */
static chorus_err_t make_bindings(chorus_t *ch, const chorus_saga_t *saga) {
    const char *conf = chorus__conf_str(ch->conf, "topology.bindings");
    chorus_err_t rc = CHORUS_OK;
    if (!*conf && saga) {
        const char *const *keys;
        size_t n = chorus_saga_bindings(saga, ch->service, &keys);
        for (size_t i = 0; !rc && i < n; i++)
            rc = add_binding(ch, keys[i], strlen(keys[i]));
        return rc;
    }
    for (const char *p = conf; *p && !rc;) {
        size_t len = strcspn(p, ", ");
        if (len)
            rc = add_binding(ch, p, len);
        p += len;
        p += strspn(p, ", ");
    }
    for (size_t i = 0; !*conf && !rc && i < ch->nhandlers; i++) {
        char key[CHORUS__NAME_MAX];
        int n = snprintf(key, sizeof(key), "*.%s", ch->handlers[i].event_type);
        rc = add_binding(ch, key, (size_t)n);
    }
    return rc;
}

char *chorus__expand_user(const char *tmpl, const char *ns, const char *service) {
    size_t cap = strlen(tmpl) + 1, len = 0;
    for (const char *p = tmpl; *p; p++)
        if (*p == '{')
            cap += strlen(ns) + strlen(service);
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = tmpl; *p;) {
        const char *v = NULL;
        size_t skip = 1;
        if (strncmp(p, "{namespace}", 11) == 0)
            v = ns, skip = 11;
        else if (strncmp(p, "{service}", 9) == 0)
            v = service, skip = 9;
        if (v) {
            memcpy(out + len, v, strlen(v));
            len += strlen(v);
        } else {
            out[len++] = *p;
        }
        p += skip;
    }
    out[len] = '\0';
    return out;
}

/*
 * What the declaration says about each handled type: the broker users of
 * its producers (for "security.producer.check"), and the newest schema
 * version this participant knows (its upcasters' and the declaration's)
 * with what to do with a newer one.
 */
static chorus_err_t derive_handler_rules(chorus_t *ch, const chorus_saga_t *saga) {
    bool check = saga && strcmp(chorus__conf_str(ch->conf, "security.producer.check"), "declared") == 0;
    const char *tmpl = chorus__conf_str(ch->conf, "security.user.template");
    const char *ns = chorus__conf_str(ch->conf, "topology.namespace");
    bool retry_default = strcmp(chorus__conf_str(ch->conf, "consume.newer.schema"), "retry") == 0;
    for (size_t i = 0; i < ch->nhandlers; i++) {
        chorus__handler_t *h = &ch->handlers[i];
        h->newest_schema = chorus__upcast_newest(ch, h->event_type);
        if (h->registered_schema > h->newest_schema)
            h->newest_schema = h->registered_schema;
        int declared = saga ? chorus__saga_schema_version(saga, h->event_type) : 0;
        if (declared > h->newest_schema)
            h->newest_schema = declared;
        int policy = saga ? chorus__saga_newer_policy(saga, h->event_type) : -1;
        h->newer_retry = policy < 0 ? retry_default : policy == 1;
        if (!check)
            continue;
        size_t n = chorus__saga_producers(saga, h->event_type, NULL, 0);
        const char **prods = calloc(n ? n : 1, sizeof(*prods));
        h->producer_users = calloc(n ? n : 1, sizeof(*h->producer_users));
        if (!prods || !h->producer_users) {
            free(prods);
            return CHORUS_ERR_NOMEM;
        }
        chorus__saga_producers(saga, h->event_type, prods, n);
        for (size_t k = 0; k < n; k++) {
            if (!(h->producer_users[k] = chorus__expand_user(tmpl, ns, prods[k]))) {
                free(prods);
                return CHORUS_ERR_NOMEM;
            }
            h->nproducer_users++;
        }
        free(prods);
    }
    return CHORUS_OK;
}

static void sleep_ms(int64_t ms);

/* A server that is down or still starting is waited for at start-up,
 * within the configured timeout, with the backoff of its reconnects (@p b);
 * refused credentials or a declaration that disagrees with the broker's are
 * answers, not outages: they fail at once.  @p attempt says which it was. */
static chorus_err_t wait_at_start(chorus_t *ch, const char *what, const char *timeout_key,
                                  chorus__backoff_t b,
                                  chorus_err_t (*attempt)(chorus_t *ch, bool *transient)) {
    int64_t until = chorus__mono_ms() + chorus__conf_int(ch->conf, timeout_key);
    for (;;) {
        bool transient = false;
        chorus_err_t rc = attempt(ch, &transient);
        int64_t left = until - chorus__mono_ms();
        if (!rc || !transient || left <= 0 || ch->stop)
            return rc;
        long backoff = chorus__backoff_failed(&b, chorus__mono_ms());
        long wait = backoff < left ? backoff : (long)left;
        chorus__log(ch, CHORUS_LOG_NOTICE, "%s not ready (%s); trying again in %ld ms", what,
                    ch->last_error[0] ? ch->last_error : chorus_strerror(rc), wait);
        sleep_ms(wait);
    }
}

static chorus_err_t broker_attempt(chorus_t *ch, bool *transient) {
    chorus_err_t rc = chorus__conn_open(ch);
    *transient = rc == CHORUS_ERR_CONNECT || rc == CHORUS_ERR_TIMEOUT ||
                 rc == CHORUS_ERR_CONN_CLOSED || rc == CHORUS_ERR_CHANNEL_CLOSED;
    return rc;
}

static chorus_err_t store_attempt(chorus_t *ch, bool *transient) {
    ch->store.unreachable = false;
    chorus_err_t rc = chorus__store_connect(ch);
    *transient = ch->store.unreachable;
    return rc;
}

/* What chorus_start() declares, from the configuration and the bindings. */
static chorus_err_t build_topology(chorus_t *ch, chorus__topology_t *out) {
    chorus__topology_spec_t spec = {
        .service = ch->service,
        .ns = chorus__conf_str(ch->conf, "topology.namespace"),
        .quorum = strcmp(chorus__conf_str(ch->conf, "topology.queue.type"), "quorum") == 0,
        .prefetch = (int)chorus__conf_int(ch->conf, "topology.prefetch"),
        .bindings = (const char *const *)ch->bindings,
        .nbindings = ch->nbindings,
        .retry = &ch->retry,
        .retry_at_most_once =
            strcmp(chorus__conf_str(ch->conf, "topology.retry.strategy"), "at-most-once") == 0,
        .delivery_limit = ch->delivery_limit,
        .single_active = strcmp(chorus__conf_str(ch->conf, "consume.single.active"), "on") == 0,
    };
    return chorus__topology_build(&spec, out);
}

chorus_err_t chorus_topology_definitions(chorus_t *ch, const char *vhost, char **json) {
    if (!ch || !json)
        return CHORUS_ERR_INVALID_ARG;
    *json = NULL;
    chorus__topology_t t = {0};
    chorus_err_t rc = CHORUS_OK;
    if (ch->started) {
        t = ch->topo; /* borrowed */
    } else if ((rc = make_bindings(ch, ch->saga)) || (rc = build_topology(ch, &t))) {
        free_bindings(ch);
        return rc;
    }
    *json = chorus__topology_definitions(&t, vhost && *vhost ? vhost : "/");
    if (!ch->started) {
        chorus__topology_free(&t);
        free_bindings(ch); /* chorus_start makes them again */
    }
    return *json ? CHORUS_OK : CHORUS_ERR_NOMEM;
}


static chorus_err_t start(chorus_t *ch);

chorus_err_t chorus_start(chorus_t *ch) {
    if (!ch)
        return CHORUS_ERR_INVALID_ARG;
    if (ch->started)
        return CHORUS_ERR_STATE;
    ch->last_error[0] = ch->last_sqlstate[0] = '\0';
    chorus_err_t rc = start(ch);
    if (rc && !ch->last_error[0])
        chorus__fail(ch, NULL, "%s", chorus_strerror(rc));
    return rc;
}

static chorus_err_t start(chorus_t *ch) {
    const chorus_saga_t *saga = ch->saga;
    if ((strcmp(chorus__conf_str(ch->conf, "transport"), "simulation") == 0) !=
        (ch->link != &chorus__amqp_link)) {
        chorus__fail(ch, NULL, "transport=simulation is set by a simulation (chorus_sim.h) "
                               "for the participants it runs, and only there");
        return CHORUS_ERR_INVALID_CONF;
    }
    chorus_err_t rc = check_saga(ch);
    if (!rc)
        rc = make_bindings(ch, saga);
    if (!rc)
        rc = derive_handler_rules(ch, saga);
    if (rc)
        return rc;
    if ((rc = build_topology(ch, &ch->topo)))
        return rc;
    /* A bad metrics.listen or a port in use fails here, before anything
     * connects. */
    char merr[256];
    if ((rc = chorus__metrics_start(ch, merr, sizeof(merr)))) {
        chorus__fail(ch, NULL, "%s", merr);
        return rc;
    }
    /* The store first: consuming starts only once it is ready. */
    if (ch->store.enabled && !ch->store.up &&
        (rc = wait_at_start(ch, "PostgreSQL", "store.start.timeout.ms", ch->store.retry,
                            store_attempt))) {
        chorus__metrics_stop(ch);
        return rc;
    }
    if ((rc = wait_at_start(ch, "broker", "amqp.start.timeout.ms", ch->reconnect,
                            broker_attempt))) {
        chorus__metrics_stop(ch);
        return rc;
    }
    if ((rc = chorus__hb_start(ch))) {
        chorus__conn_close(ch);
        chorus__metrics_stop(ch);
        return rc;
    }
    ch->started = true;
    chorus__metrics_sample(ch);
    return CHORUS_OK;
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Reconnects when due.  Returns true when connected. */
static bool ensure_connected(chorus_t *ch, int timeout_ms) {
    if (chorus__up(ch))
        return true;
    int64_t wait = ch->reconnect.next_ms - chorus__mono_ms();
    if (wait > 0) {
        sleep_ms(wait < timeout_ms ? wait : timeout_ms);
        if (!chorus__backoff_due(&ch->reconnect, chorus__mono_ms()))
            return false;
    }
    if (chorus__conn_open(ch) == CHORUS_OK) {
        chorus__backoff_reset(&ch->reconnect);
        ch->stats.reconnects++;
        chorus__log(ch, CHORUS_LOG_NOTICE, "reconnected to %s; topology declared again",
                    ch->conn_where);
        return true;
    }
    chorus__schedule_reconnect(ch); /* as if the connection had just been lost */
    return false;
}

/* PostgreSQL: reconnect when due, resume consuming, relay the outbox. */
static void store_poll(chorus_t *ch) {
    chorus__store_t *s = &ch->store;
    if (!s->enabled)
        return;
    if (!s->up && chorus__backoff_due(&s->retry, chorus__mono_ms()) &&
        chorus__store_connect(ch) == CHORUS_OK) {
        ch->stats.store_reconnects++;
        chorus__log(ch, CHORUS_LOG_NOTICE, "PostgreSQL reconnected");
    }
    if (s->up && s->paused && chorus__up(ch)) {
        chorus__lock(ch);
        chorus__consume_resume(ch);
        chorus__unlock(ch);
    }
    chorus__relay_poll(ch, !ch->backlog_head && !ch->inflight);
    if (s->up)
        chorus__timers_poll(ch);
}

/* Waits at most @p wait_ms until a frame can be read or, for a durable
 * participant, the store's LISTEN connection has something (an outbox
 * NOTIFY: rows another process wrote, for this relay to publish now rather
 * than after the wait).  True when the store has. */
static bool wait_readable(chorus_t *ch, int wait_ms) {
    PGconn *listen = ch->store.up ? ch->store.listen : NULL;
    if (!listen || PQsocket(listen) < 0) {
        chorus__dispatch(ch, wait_ms); /* the broker alone */
        return false;
    }
    if (chorus__conn_buffered(ch))
        return false;
    struct pollfd fds[2] = {{.fd = chorus__conn_fd(ch), .events = POLLIN},
                            {.fd = PQsocket(listen), .events = POLLIN}};
    if (poll(fds, 2, wait_ms) <= 0)
        return false;
    return fds[1].revents != 0;
}

/* Reads what is there (waiting at most @p wait_ms for a first frame) and
 * moves the deliveries on; true when the store woke the wait. */
static bool poll_once(chorus_t *ch, int wait_ms) {
    /* held deliveries that are due go back first (consumer_due counts
     * them, so a wait never outlasts them; and never spins on them) */
    if (ch->nheld) {
        chorus__lock(ch);
        chorus__consumer_release_held(ch);
        chorus__unlock(ch);
    }
    chorus__lock(ch);
    chorus__redeclare_if_needed(ch);
    bool store_woke = wait_ms > 0 && wait_readable(ch, wait_ms);
    chorus__dispatch_drain(ch);
    chorus__unlock(ch);
    chorus__consumer_process(ch);
    return store_woke;
}

/* How long a wait for frames may last: until the poll's end, the oldest
 * confirm wait's deadline or a timer of this process falling due, whichever
 * comes first; at least @p least. */
static int frame_wait(const chorus_t *ch, int64_t until, int64_t now, int least) {
    int64_t due = chorus__consumer_due(ch);
    int64_t w = (due < until ? due : until) - now;
    if (ch->store.up && ch->store.next_timer_wall_ms != INT64_MAX) {
        int64_t t = ch->store.next_timer_wall_ms - chorus_now_ms();
        if (t < w)
            w = t;
    }
    return w < least ? least : (int)w;
}

static chorus_err_t poll_body(chorus_t *ch, int timeout_ms);

chorus_err_t chorus_poll(chorus_t *ch, int timeout_ms) {
    if (!ch)
        return CHORUS_ERR_INVALID_ARG;
    if (ch->stop)
        return CHORUS_ERR_STOPPED;
    if (!ch->started)
        return CHORUS_ERR_STATE;
    chorus_err_t rc = poll_body(ch, timeout_ms);
    if (ch->resend_head && !ch->blocked && chorus__up(ch)) {
        chorus__lock(ch); /* held back while blocked: out now */
        chorus__publisher_resend(ch);
        chorus__unlock(ch);
    }
    chorus__metrics_sample(ch); /* between batches: no transaction open */
    return rc;
}

static chorus_err_t poll_body(chorus_t *ch, int timeout_ms) {
    int64_t until = chorus__mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    bool connected = ensure_connected(ch, timeout_ms);
    store_poll(ch);
    if (!connected)
        return CHORUS_OK;

    /* Nothing to handle now (no backlog, or no room while batches wait for
     * their confirms): wait for a frame, at most until a confirm is late. */
    int64_t now = chorus__mono_ms();
    bool idle = !ch->backlog_head || !chorus__consumer_room(ch);
    if (poll_once(ch, idle ? frame_wait(ch, until, now, 0) : 0))
        store_poll(ch); /* a NOTIFY came during the wait: relay now */
    /* A batch under way and nothing else to do: its confirms are waited for
     * here, so that one poll handles and acks it (while other deliveries
     * arrive, the next poll handles them and the two batches overlap). */
    while (chorus__up(ch) && ch->inflight && !ch->backlog_head && chorus__consumer_waiting(ch) &&
           (now = chorus__mono_ms()) < until && !ch->stop)
        poll_once(ch, frame_wait(ch, until, now, 1));
    /* Gone idle: rows confirmed meanwhile are marked now rather than with
     * a next transaction that may be long in coming. */
    if (ch->store.marks.n && !ch->backlog_head && !ch->inflight)
        chorus__marks_flush(ch);
    chorus__lock(ch);
    ch->link->release(ch);
    chorus__unlock(ch);
    return ch->stop ? CHORUS_ERR_STOPPED : CHORUS_OK;
}

chorus_err_t chorus_run(chorus_t *ch) {
    chorus_err_t rc;
    while ((rc = chorus_poll(ch, 200)) == CHORUS_OK)
        ;
    if (rc != CHORUS_ERR_STOPPED)
        return rc;
    /* Let what was published go out, and the batches under way be acked,
     * before the caller destroys us; nothing new is taken meanwhile. */
    ch->stop = 0;
    chorus_flush(ch, 5000);
    ch->stop = 1;
    return CHORUS_OK;
}

void chorus_stop(chorus_t *ch) {
    if (ch)
        ch->stop = 1;
}

chorus_err_t chorus_publish(chorus_t *ch, chorus_envelope_t *env, void *msg_opaque) {
    if (!ch || !env) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_INVALID_ARG;
    }
    if (!ch->started) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_STATE;
    }
    if (ch->outq >= ch->window) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_QUEUE_FULL;
    }
    if (chorus__saga_check_emit(ch, NULL, env, "not published")) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_SCHEMA; /* breaks the declared contract */
    }
    if (ch->store.enabled && chorus__saga_starts(ch, env)) {
        /* its first step's record, deadline and timer go with a transaction */
        chorus__log_env(ch, CHORUS_LOG_ERR, env, "not published: a saga's first event is "
                        "emitted in a transaction (chorus_tx_emit)");
        chorus_envelope_destroy(env);
        return CHORUS_ERR_STATE;
    }
    /* A free-standing publish starts a flow: it is its own correlation. */
    if (!chorus_envelope_correlation_id(env) &&
        chorus_envelope_set_correlation_id(env, chorus_envelope_event_id(env))) {
        chorus_envelope_destroy(env);
        return CHORUS_ERR_NOMEM;
    }
    chorus__pub_t *p = chorus__pub_new();
    char rk[CHORUS__NAME_MAX];
    snprintf(rk, sizeof(rk), "%s.%s", ch->service, chorus_envelope_event_type(env));
    chorus_err_t rc = p ? chorus__pub_from_envelope(ch, p, env, ch->topo.names.exchange, rk)
                        : CHORUS_ERR_NOMEM;
    if (rc) {
        chorus__pub_destroy(p);
        chorus_envelope_destroy(env);
        return rc;
    }
    p->msg_opaque = msg_opaque;
    ch->outq++;
    chorus__lock(ch);
    rc = chorus__pub_send(ch, p);
    chorus__unlock(ch);
    if (rc == CHORUS_ERR_NOMEM || rc == CHORUS_ERR_TOO_LARGE) {
        ch->outq--;
        p->env = NULL; /* the caller's env is destroyed below, once */
        chorus__pub_destroy(p);
        chorus_envelope_destroy(env);
        return rc;
    }
    return CHORUS_OK;
}

chorus_err_t chorus_flush(chorus_t *ch, int timeout_ms) {
    if (!ch)
        return CHORUS_ERR_INVALID_ARG;
    /* What is under way: the application's publishes, and the batches
     * being handled (their events confirmed, their deliveries acked).
     * Nothing new is taken from the backlog meanwhile. */
    int64_t deadline = chorus__mono_ms() + timeout_ms;
    chorus_err_t rc = CHORUS_OK;
    bool was = ch->draining;
    ch->draining = true;
    while (ch->outq > 0 || ch->inflight) {
        int64_t left = deadline - chorus__mono_ms();
        if (left <= 0) {
            rc = CHORUS_ERR_TIMEOUT;
            break;
        }
        if ((rc = chorus_poll(ch, left > 100 ? 100 : (int)left)))
            break;
    }
    ch->draining = was;
    return rc;
}

size_t chorus_outq_len(const chorus_t *ch) { return ch ? ch->outq : 0; }
const char *chorus_service(const chorus_t *ch) { return ch->service; }
const char *chorus_queue_name(const chorus_t *ch) { return ch->topo.names.queue; }
const char *chorus_dlq_name(const chorus_t *ch) { return ch->topo.names.dlq; }
const char *chorus_exchange_name(const chorus_t *ch) { return ch->topo.names.exchange; }

