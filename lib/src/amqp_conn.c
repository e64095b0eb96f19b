/*
 * amqp_conn.c - one AMQP connection per participant: open it, keep it
 * alive, notice when it dies, and bring it back.
 *
 *   chorus__conn_open():  for each broker URL in order
 *       TCP connect (bounded; amqps:// URLs: with the TLS handshake, see
 *       amqp_tls.c) -> login (bounded handshake, capabilities
 *       consumer_cancel_notify + connection.blocked) -> channels
 *       1 consume, 2 publish (confirm mode), 3 admin (declarations)
 *       -> declare topology -> basic.qos + basic.consume -> resend
 *
 *   chorus__dispatch():  the one frame reader.  rabbitmq-c 0.11 hands out
 *       deliveries, confirms, returns and broker closes on one stream, so
 *       every frame is routed here, and reported to the owner through the
 *       hooks it registered (ch->hooks; chorus.c sets them).  Nothing here
 *       calls into the consumer or the publisher, and no hook waits or
 *       reads frames: the poll loop is the only one that does.
 *           basic.deliver   (ch 1) -> hooks.deliver (read whole; an oversized
 *                                     one rejected unread: hooks.refused)
 *           basic.ack/nack  (ch 2) -> hooks.confirm
 *           basic.return    (ch 2) -> hooks.returned
 *           basic.cancel    (ch 1) -> hooks.ready (declare, consume again)
 *           channel.close   (any)  -> close-ok, hooks.reset, reopen that
 *                                     channel only, hooks.ready, .reopened
 *           connection.close / socket error -> chorus__conn_lost()
 *
 *   chorus__conn_lost():  drop the socket, hooks.reset(0) (the owner forgets
 *       deliveries -- the broker requeues what was not acked -- and settles
 *       unconfirmed publishes), and schedule a reconnect with the backoff
 *       policy (backoff.c).
 *
 * rabbitmq-c sends heartbeats only from inside its own calls.  A handler
 * that runs longer than the heartbeat interval would get the connection
 * closed by the broker, so a small thread sends heartbeat frames whenever
 * the connection lock is free (see chorus_int.h on locking).
 */
#include "amqp_props_int.h"
#include "chorus_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void chorus__lock(chorus_t *ch) { pthread_mutex_lock(&ch->conn_lock); }

void chorus__unlock(chorus_t *ch) {
    atomic_store(&ch->last_io_ms, chorus__mono_ms());
    pthread_mutex_unlock(&ch->conn_lock);
}

static struct timeval tv_ms(long ms) {
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* ---- heartbeats ---------------------------------------------------------- */

static void sleep_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void *hb_main(void *arg) {
    chorus_t *ch = arg;
    while (!atomic_load(&ch->hb_stop)) {
        sleep_ms(200);
        if (ch->heartbeat_s <= 0)
            continue;
        int64_t due = atomic_load(&ch->last_io_ms) + ch->heartbeat_s * 1000L / 2;
        if (chorus__mono_ms() < due)
            continue;
        if (pthread_mutex_trylock(&ch->conn_lock) != 0)
            continue; /* the main thread is inside rabbitmq-c: it sends them */
        if (ch->st) {
            amqp_frame_t f = {.frame_type = AMQP_FRAME_HEARTBEAT, .channel = 0};
            if (amqp_send_frame(ch->st, &f) != AMQP_STATUS_OK)
                chorus__log(ch, CHORUS_LOG_WARNING, "heartbeat send failed");
        }
        chorus__unlock(ch);
    }
    return NULL;
}

chorus_err_t chorus__hb_start(chorus_t *ch) {
    if (!ch->link->heartbeats)
        return CHORUS_OK;
    atomic_store(&ch->hb_stop, false);
    if (pthread_create(&ch->hb_thread, NULL, hb_main, ch) != 0)
        return CHORUS_ERR_NOMEM;
    ch->hb_started = true;
    return CHORUS_OK;
}

void chorus__hb_stop(chorus_t *ch) {
    if (!ch->hb_started)
        return;
    atomic_store(&ch->hb_stop, true);
    pthread_join(ch->hb_thread, NULL);
    ch->hb_started = false;
}

/* Ends a blocked period (connection.unblocked, or the connection gone): its
 * length counted and said once. */
void chorus__set_unblocked(chorus_t *ch, const char *why) {
    if (!ch->blocked)
        return;
    ch->blocked = false;
    int64_t ms = chorus__mono_ms() - ch->blocked_since_ms;
    ch->stats.blocked_ms += (uint64_t)(ms > 0 ? ms : 0);
    chorus__log(ch, CHORUS_LOG_NOTICE, "%s after %.1f s blocked", why, (double)ms / 1000.0);
}

/* ---- open ---------------------------------------------------------------- */

static amqp_table_t client_properties(const char *name, amqp_table_entry_t *e,
                                      amqp_table_entry_t *caps) {
    static const char *const cap_names[] = {
        "consumer_cancel_notify", "connection.blocked", "publisher_confirms",
        "basic.nack", "authentication_failure_close"};
    for (int i = 0; i < 5; i++) {
        caps[i].key = amqp_cstring_bytes(cap_names[i]);
        caps[i].value.kind = AMQP_FIELD_KIND_BOOLEAN;
        caps[i].value.value.boolean = 1;
    }
    e[0].key = amqp_cstring_bytes("connection_name");
    e[0].value.kind = AMQP_FIELD_KIND_UTF8;
    e[0].value.value.bytes = amqp_cstring_bytes(name);
    e[1].key = amqp_cstring_bytes("product");
    e[1].value.kind = AMQP_FIELD_KIND_UTF8;
    e[1].value.value.bytes = amqp_cstring_bytes("chorus " CHORUS_VERSION_STR);
    e[2].key = amqp_cstring_bytes("capabilities");
    e[2].value.kind = AMQP_FIELD_KIND_TABLE;
    e[2].value.value.table = (amqp_table_t){.num_entries = 5, .entries = caps};
    return (amqp_table_t){.num_entries = 3, .entries = e};
}

static chorus_err_t open_channel(chorus_t *ch, amqp_channel_t n, char *err,
                                 size_t size) {
    amqp_channel_open(ch->st, n);
    return chorus__amqp_reply_error(ch->st, n, amqp_get_rpc_reply(ch->st),
                                    "opening a channel", err, size);
}

/* Brings channel @p n (back) into the state chorus needs. */
static chorus_err_t setup_channel(chorus_t *ch, amqp_channel_t n, char *err,
                                  size_t size) {
    chorus_err_t rc = open_channel(ch, n, err, size);
    if (rc)
        return rc;
    if (n == CHORUS__CH_PUBLISH) {
        amqp_confirm_select(ch->st, n);
        return chorus__amqp_reply_error(ch->st, n, amqp_get_rpc_reply(ch->st),
                                        "confirm.select", err, size);
    }
    return CHORUS_OK;
}

static chorus_err_t login(amqp_connection_state_t st, const chorus__url_t *u,
                          const chorus__amqp_opts_t *o, char *err, size_t size) {
    amqp_table_entry_t e[3], caps[5];
    amqp_table_t props = client_properties(o->name, e, caps);
    amqp_rpc_reply_t r = amqp_login_with_properties(st, u->vhost, 0, 131072, o->heartbeat_s,
                                                    &props, AMQP_SASL_METHOD_PLAIN, u->user,
                                                    u->pass);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_SOCKET_CLOSED) {
        chorus__errstr(err, size, "login refused (check user, password and vhost)");
        return CHORUS_ERR_AUTH;
    }
    return chorus__amqp_reply_error(st, 0, r, "login", err, size);
}

chorus_err_t chorus__amqp_login(const chorus__url_t *u, const chorus__amqp_opts_t *o,
                                amqp_connection_state_t *stp, char *err, size_t size) {
    amqp_connection_state_t st = *stp = amqp_new_connection();
    if (!st)
        return CHORUS_ERR_NOMEM;
    struct timeval hs = tv_ms(o->handshake_ms), rpc = tv_ms(o->rpc_ms),
                   ct = tv_ms(o->connect_ms);
    amqp_set_handshake_timeout(st, &hs);
    amqp_set_rpc_timeout(st, &rpc);
    if (u->tls) {
        chorus_err_t rc = chorus__tls_open(st, u, o, err, size);
        if (rc)
            return rc;
        return login(st, u, o, err, size);
    }
    amqp_socket_t *sock = amqp_tcp_socket_new(st);
    if (!sock)
        return CHORUS_ERR_NOMEM;
    int s = amqp_socket_open_noblock(sock, u->host, u->port, &ct);
    if (s != AMQP_STATUS_OK) {
        chorus__errstr(err, size, "TCP connect: %s", amqp_error_string2(s));
        return s == AMQP_STATUS_TIMEOUT ? CHORUS_ERR_TIMEOUT : CHORUS_ERR_CONNECT;
    }
    return login(st, u, o, err, size);
}

/* A TLS file from the configuration, else from the environment (as amqp.url
 * falls back to CHORUS_AMQP_URL), so that tools on a default configuration
 * (chorus-dlq) reach a TLS broker too. */
static const char *tls_file(const chorus_conf_t *conf, const char *key, const char *env) {
    const char *v = chorus__conf_str(conf, key);
    if (!*v && (v = getenv(env)) == NULL)
        v = "";
    return v;
}

void chorus__amqp_opts_from_conf(const chorus_conf_t *conf, const char *name,
                                 chorus__amqp_opts_t *o) {
    o->connect_ms = chorus__conf_int(conf, "amqp.connect.timeout.ms");
    o->handshake_ms = chorus__conf_int(conf, "amqp.handshake.timeout.ms");
    o->rpc_ms = chorus__conf_int(conf, "amqp.rpc.timeout.ms");
    o->heartbeat_s = (int)chorus__conf_int(conf, "amqp.heartbeat.s");
    o->name = name;
    o->tls.ca_file = tls_file(conf, "amqp.tls.ca.file", "CHORUS_AMQP_TLS_CA_FILE");
    o->tls.cert_file = tls_file(conf, "amqp.tls.cert.file", "CHORUS_AMQP_TLS_CERT_FILE");
    o->tls.key_file = tls_file(conf, "amqp.tls.key.file", "CHORUS_AMQP_TLS_KEY_FILE");
    o->tls.server_name = chorus__conf_str(conf, "amqp.tls.server.name");
    o->tls.verify_peer = strcmp(chorus__conf_str(conf, "amqp.tls.verify.peer"), "on") == 0;
    o->tls.verify_hostname = strcmp(chorus__conf_str(conf, "amqp.tls.verify.hostname"), "on") == 0;
}

static chorus_err_t try_url(chorus_t *ch, const chorus__url_t *u, char *err,
                            size_t size) {
    chorus__amqp_opts_t o;
    chorus__amqp_opts_from_conf(ch->conf, ch->conn_name, &o);
    o.heartbeat_s = ch->heartbeat_s;
    chorus_err_t rc = chorus__amqp_login(u, &o, &ch->st, err, size);
    for (amqp_channel_t n = 1; !rc && n <= 3; n++)
        rc = setup_channel(ch, n, err, size);
    /* the owner's part: declare, consume (the resend comes after the log) */
    if (!rc)
        rc = ch->hooks.ready(ch, 0, err, size);
    return rc;
}

static void destroy_state(chorus_t *ch) {
    if (!ch->st)
        return;
    amqp_destroy_connection(ch->st);
    ch->st = NULL;
    ch->consuming = false;
    chorus__set_unblocked(ch, "the connection closed");
}

static chorus_err_t amqp_open(chorus_t *ch) {
    chorus_err_t rc = CHORUS_ERR_CONNECT;
    char err[512] = "no broker URL";
    chorus__lock(ch);
    for (int i = 0; i < ch->nurls; i++) {
        char where[300];
        chorus__url_describe(&ch->urls[i], where, sizeof(where));
        rc = try_url(ch, &ch->urls[i], err, sizeof(err));
        if (rc == CHORUS_OK) {
            snprintf(ch->conn_user, sizeof(ch->conn_user), "%s", ch->urls[i].user);
            snprintf(ch->conn_where, sizeof(ch->conn_where), "%s", where);
            chorus__log(ch, CHORUS_LOG_INFO, "connected to %s as %s", where,
                        ch->urls[i].user);
            break;
        }
        chorus__log(ch, CHORUS_LOG_WARNING, "broker %s: %s", where, err);
        chorus__fail(ch, NULL, "broker %s: %s", where, err);
        destroy_state(ch);
    }
    if (rc == CHORUS_OK)
        ch->hooks.reopened(ch, CHORUS__CH_PUBLISH);
    chorus__unlock(ch);
    return rc;
}

/* ---- loss and close ------------------------------------------------------ */

/* Called with the lock held. */
static void amqp_lost(chorus_t *ch, const char *why) {
    if (!ch->st)
        return;
    chorus__log(ch, CHORUS_LOG_WARNING, "connection lost: %s; reconnecting", why);
    destroy_state(ch);
    ch->hooks.reset(ch, 0); /* deliveries void, unconfirmed publishes settled */
    chorus__schedule_reconnect(ch);
}

void chorus__schedule_reconnect(chorus_t *ch) {
    chorus__backoff_failed(&ch->reconnect, chorus__mono_ms());
}

static void amqp_close(chorus_t *ch) {
    chorus__lock(ch);
    if (ch->st) {
        amqp_channel_close(ch->st, CHORUS__CH_CONSUME, AMQP_REPLY_SUCCESS);
        amqp_channel_close(ch->st, CHORUS__CH_PUBLISH, AMQP_REPLY_SUCCESS);
        amqp_connection_close(ch->st, AMQP_REPLY_SUCCESS);
        destroy_state(ch);
    }
    chorus__unlock(ch);
}

/* ---- the dispatcher ------------------------------------------------------ */

static chorus_err_t on_method(chorus_t *ch, amqp_frame_t *f);

/* The next frame on @p channel within the RPC timeout; method frames of
 * other channels that arrive meanwhile (confirms, connection.blocked) are
 * dispatched as they come.  An AMQP status (OK, or why not). */
static int next_frame_on(chorus_t *ch, amqp_channel_t channel, amqp_frame_t *out) {
    int64_t deadline = chorus__mono_ms() + chorus__conf_int(ch->conf, "amqp.rpc.timeout.ms");
    for (;;) {
        int64_t left = deadline - chorus__mono_ms();
        if (left <= 0)
            return AMQP_STATUS_TIMEOUT;
        struct timeval tv = tv_ms((long)left);
        int s = amqp_simple_wait_frame_noblock(ch->st, out, &tv);
        if (s != AMQP_STATUS_OK || out->channel == channel)
            return s;
        /* Another channel's content (a basic.return's) is read with its
         * method by on_return(); only methods can come here.  (A
         * BAD_AMQP_DATA above may be another channel's frame: the delivery
         * is then rejected by mistake, and the broker keeps it, in the DLQ.) */
        if (out->frame_type == AMQP_FRAME_METHOD && on_method(ch, out) == CHORUS_ERR_CONN_CLOSED)
            return AMQP_STATUS_CONNECTION_CLOSED;
    }
}

/*
 * A delivery's content, read frame by frame instead of with
 * amqp_read_message(), for two hostile cases that would otherwise stall
 * the queue (the message comes back after every reconnect and does the
 * same again):
 *
 *   - a content header rabbitmq-c cannot decode: the connection cannot
 *     read past it.  The delivery is rejected without requeue (the
 *     queue's dead-letter exchange takes it, intact, to the DLQ) before
 *     the connection is dropped.
 *   - a body larger than "message.max.bytes": it would be dead-lettered
 *     anyway, but amqp_read_message() allocates whatever size the header
 *     claims.  Its frames are read and dropped one by one, and it is
 *     rejected to the DLQ unread.
 */
static chorus_err_t on_deliver(chorus_t *ch, amqp_frame_t *f) {
    amqp_basic_deliver_t *m = f->payload.method.decoded;
    amqp_channel_t channel = f->channel;
    uint64_t tag = m->delivery_tag;
    bool redelivered = m->redelivered;
    char rk[256];
    snprintf(rk, sizeof(rk), "%.*s", (int)m->routing_key.len, (const char *)m->routing_key.bytes);
    amqp_frame_t h;
    int s = next_frame_on(ch, channel, &h);
    if (s == AMQP_STATUS_BAD_AMQP_DATA) {
        chorus__log(ch, CHORUS_LOG_ERR,
                    "delivery %llu on '%s': its content header cannot be decoded; rejecting it "
                    "to the DLQ and reconnecting", (unsigned long long)tag, rk);
        amqp_basic_reject(ch->st, channel, tag, 0);
        return CHORUS_ERR_CONN_CLOSED;
    }
    if (s != AMQP_STATUS_OK || h.frame_type != AMQP_FRAME_HEADER) {
        /* a channel.close here would go unanswered: the connection goes */
        return CHORUS_ERR_CONN_CLOSED;
    }
    amqp_message_t msg = {0};
    init_amqp_pool(&msg.pool, 4096);
    uint64_t size = h.payload.properties.body_size;
    bool oversized = size > ch->limits.max_bytes;
    /* What cannot be held is this message's problem: read past it and
     * reject it to the DLQ, as the oversized one. */
    bool unheld = !chorus__props_clone(h.payload.properties.decoded, &msg.properties,
                                       &msg.pool) ||
                  (!oversized && size > 0 && !(msg.body = amqp_bytes_malloc((size_t)size)).bytes);
    oversized = oversized || unheld;
    for (uint64_t got = 0; got < size;) {
        amqp_maybe_release_buffers_on_channel(ch->st, channel);
        amqp_frame_t b;
        s = next_frame_on(ch, channel, &b);
        if (s != AMQP_STATUS_OK || b.frame_type != AMQP_FRAME_BODY ||
            b.payload.body_fragment.len > size - got) {
            amqp_destroy_message(&msg);
            return CHORUS_ERR_CONN_CLOSED;
        }
        if (!oversized && b.payload.body_fragment.len)
            memcpy((char *)msg.body.bytes + got, b.payload.body_fragment.bytes,
                   b.payload.body_fragment.len);
        got += b.payload.body_fragment.len;
    }
    amqp_maybe_release_buffers_on_channel(ch->st, channel);
    if (oversized) {
        if (unheld)
            chorus__log(ch, CHORUS_LOG_ERR, "delivery on '%s': out of memory holding it; "
                        "rejected to the DLQ unread", rk);
        else
            chorus__log(ch, CHORUS_LOG_WARNING,
                        "delivery on '%s': %llu bytes exceed message.max.bytes (%zu); rejected "
                        "to the DLQ unread", rk, (unsigned long long)size, ch->limits.max_bytes);
        int r = amqp_basic_reject(ch->st, channel, tag, 0);
        amqp_destroy_message(&msg);
        ch->hooks.refused(ch);
        return r == AMQP_STATUS_OK ? CHORUS_OK : CHORUS_ERR_CONN_CLOSED;
    }
    return ch->hooks.deliver(ch, tag, redelivered, rk, &msg); /* takes msg */
}

static chorus_err_t on_return(chorus_t *ch, amqp_frame_t *f) {
    amqp_message_t msg;
    int ms = (int)chorus__conf_int(ch->conf, "amqp.rpc.timeout.ms");
    if (chorus__read_message(ch->st, f->channel, &msg, ms) != AMQP_STATUS_OK)
        return CHORUS_ERR_CONN_CLOSED;
    ch->hooks.returned(ch, &msg);
    amqp_destroy_message(&msg);
    return CHORUS_OK;
}

/* The broker closed one channel: the others and the connection live on. */
static chorus_err_t on_channel_close(chorus_t *ch, amqp_frame_t *f) {
    amqp_channel_close_t *m = f->payload.method.decoded;
    amqp_channel_t n = f->channel;
    chorus__log(ch, CHORUS_LOG_WARNING, "broker closed channel %u: %u %.*s",
                n, m->reply_code, (int)m->reply_text.len,
                (const char *)m->reply_text.bytes);
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(ch->st, n, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok))
        return CHORUS_ERR_CONN_CLOSED;
    char err[512];
    if (n == CHORUS__CH_CONSUME)
        ch->consuming = false;
    ch->hooks.reset(ch, n); /* what was under way on it is gone */
    chorus_err_t rc = setup_channel(ch, n, err, sizeof(err));
    /* A 404 may mean someone deleted what we declared: the owner declares
     * again (and consumes again on a consume channel). */
    if (!rc)
        rc = ch->hooks.ready(ch, n, err, sizeof(err));
    if (!rc)
        ch->hooks.reopened(ch, n);
    if (rc) {
        chorus__log(ch, CHORUS_LOG_ERR, "recovering channel %u: %s", n, err);
        return CHORUS_ERR_CONN_CLOSED;
    }
    chorus__log(ch, CHORUS_LOG_INFO, "channel %u recovered", n);
    return CHORUS_OK;
}

static chorus_err_t on_method(chorus_t *ch, amqp_frame_t *f) {
    char err[256];
    switch (f->payload.method.id) {
    case AMQP_BASIC_DELIVER_METHOD:
        return on_deliver(ch, f);
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *m = f->payload.method.decoded;
        ch->hooks.confirm(ch, m->delivery_tag, m->multiple, false);
        return CHORUS_OK;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *m = f->payload.method.decoded;
        ch->hooks.confirm(ch, m->delivery_tag, m->multiple, true);
        return CHORUS_OK;
    }
    case AMQP_BASIC_RETURN_METHOD:
        return on_return(ch, f);
    case AMQP_BASIC_CANCEL_METHOD:
        /* consumer_cancel_notify: our queue went away.  Declare it again. */
        chorus__log(ch, CHORUS_LOG_WARNING, "broker cancelled our consumer; re-declaring");
        ch->consuming = false;
        if (ch->hooks.ready(ch, CHORUS__CH_CONSUME, err, sizeof(err)))
            return CHORUS_ERR_CONN_CLOSED;
        return CHORUS_OK;
    case AMQP_CHANNEL_CLOSE_METHOD:
        return on_channel_close(ch, f);
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = f->payload.method.decoded;
        chorus__log(ch, CHORUS_LOG_WARNING, "broker closed the connection: %u %.*s",
                    m->reply_code, (int)m->reply_text.len,
                    (const char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(ch->st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return CHORUS_ERR_CONN_CLOSED;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD: {
        /* A resource alarm (memory or disk): the broker stops reading this
         * connection's socket.  Publishes are held (publisher.c) and no new
         * batch is taken (consumer.c) until connection.unblocked. */
        amqp_connection_blocked_t *m = f->payload.method.decoded;
        if (!ch->blocked) {
            ch->blocked = true;
            ch->blocked_since_ms = chorus__mono_ms();
            ch->stats.blocked_periods++;
            chorus__log(ch, CHORUS_LOG_WARNING,
                        "broker blocked publishing (%.*s); publishes wait until it unblocks",
                        (int)m->reason.len, (const char *)m->reason.bytes);
        }
        return CHORUS_OK;
    }
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        chorus__set_unblocked(ch, "broker unblocked publishing");
        return CHORUS_OK;
    default:
        chorus__log(ch, CHORUS_LOG_DEBUG, "ignoring method 0x%08x on channel %u",
                    f->payload.method.id, f->channel);
        return CHORUS_OK;
    }
}

static chorus_err_t amqp_dispatch(chorus_t *ch, int timeout_ms) {
    if (!ch->st)
        return CHORUS_ERR_CONN_CLOSED;
    amqp_frame_t f;
    struct timeval tv = tv_ms(timeout_ms < 0 ? 0 : timeout_ms);
    int s = amqp_simple_wait_frame_noblock(ch->st, &f, &tv);
    if (s == AMQP_STATUS_TIMEOUT)
        return CHORUS_ERR_TIMEOUT;
    chorus_err_t rc = CHORUS_OK;
    if (s != AMQP_STATUS_OK) {
        chorus__conn_lost(ch, amqp_error_string2(s));
        return CHORUS_ERR_CONN_CLOSED;
    }
    if (f.frame_type == AMQP_FRAME_METHOD)
        rc = on_method(ch, &f);
    /* Stray header/body frames cannot occur: content is read with its method. */
    if (rc == CHORUS_ERR_CONN_CLOSED || rc == CHORUS_ERR_NOMEM) {
        chorus__conn_lost(ch, rc == CHORUS_ERR_NOMEM ? "out of memory"
                                                    : "broker closed the connection");
        return CHORUS_ERR_CONN_CLOSED;
    }
    return rc;
}

void chorus__redeclare_if_needed(chorus_t *ch) {
    if (!chorus__up(ch) || !ch->need_redeclare)
        return;
    char err[512];
    ch->need_redeclare = false;
    chorus__log(ch, CHORUS_LOG_WARNING, "a publish was unroutable; declaring the topology again");
    if (ch->hooks.ready(ch, CHORUS__CH_ADMIN, err, sizeof(err))) {
        chorus__log(ch, CHORUS_LOG_ERR, "%s", err);
        chorus__conn_lost(ch, "declaring the topology failed");
    }
}

static int amqp_fd(const chorus_t *ch) {
    return ch->st ? amqp_get_sockfd(ch->st) : -1;
}

static bool amqp_buffered(const chorus_t *ch) {
    return ch->st && (amqp_frames_enqueued(ch->st) || amqp_data_in_buffer(ch->st));
}

void chorus__dispatch_drain(chorus_t *ch) {
    /* A zero timeout polls the socket too, not only rabbitmq-c's buffer.
     * Everything waiting is read (confirms too, while the backlog is full:
     * the broker's prefetch bounds the deliveries), a bounded number. */
    for (int n = 0; chorus__up(ch) && n < 4096; n++)
        if (chorus__dispatch(ch, 0) != CHORUS_OK)
            break;
}

/* ---- the link (chorus__link_t) ------------------------------------------- */

static bool amqp_up(const chorus_t *ch) { return ch->st != NULL; }

static int amqp_frame_max(const chorus_t *ch) { return ch->st ? amqp_get_frame_max(ch->st) : 131072; }

static chorus_err_t amqp_declare(chorus_t *ch, char *err, size_t size) {
    return chorus__topology_declare(ch->st, CHORUS__CH_ADMIN, &ch->topo, err, size);
}

static chorus_err_t amqp_consume(chorus_t *ch, const char *tag, char *err, size_t size) {
    amqp_basic_qos(ch->st, CHORUS__CH_CONSUME, 0, (uint16_t)ch->topo.prefetch, 0);
    chorus_err_t rc = chorus__amqp_reply_error(ch->st, CHORUS__CH_CONSUME,
                                               amqp_get_rpc_reply(ch->st), "basic.qos", err, size);
    if (rc)
        return rc;
    amqp_basic_consume(ch->st, CHORUS__CH_CONSUME, amqp_cstring_bytes(ch->topo.names.queue),
                       amqp_cstring_bytes(tag), 0, 0, 0, amqp_empty_table);
    return chorus__amqp_reply_error(ch->st, CHORUS__CH_CONSUME, amqp_get_rpc_reply(ch->st),
                                    "basic.consume", err, size);
}

static chorus_err_t amqp_cancel(chorus_t *ch, const char *tag, char *err, size_t size) {
    amqp_basic_cancel(ch->st, CHORUS__CH_CONSUME, amqp_cstring_bytes(tag));
    return chorus__amqp_reply_error(ch->st, CHORUS__CH_CONSUME, amqp_get_rpc_reply(ch->st),
                                    "basic.cancel", err, size);
}

static int amqp_publish(chorus_t *ch, const chorus__pub_t *p) {
    return amqp_basic_publish(ch->st, CHORUS__CH_PUBLISH, p->exchange, p->routing_key,
                              p->mandatory, 0, &p->props, p->body);
}

static int amqp_ack(chorus_t *ch, uint64_t tag, bool multiple) {
    return amqp_basic_ack(ch->st, CHORUS__CH_CONSUME, tag, multiple);
}

static int amqp_nack(chorus_t *ch, uint64_t tag, bool requeue) {
    return amqp_basic_nack(ch->st, CHORUS__CH_CONSUME, tag, 0, requeue);
}

static void amqp_release(chorus_t *ch) {
    if (ch->st)
        amqp_maybe_release_buffers(ch->st);
}

static void amqp_crash(chorus_t *ch, const char *point) {
    chorus__log(ch, CHORUS_LOG_WARNING, "debug.crash.point: dying at %s", point);
    raise(SIGKILL);
}

const chorus__link_t chorus__amqp_link = {
    .name = "amqp",
    .up = amqp_up,
    .open = amqp_open,
    .close = amqp_close,
    .lost = amqp_lost,
    .dispatch = amqp_dispatch,
    .fd = amqp_fd,
    .buffered = amqp_buffered,
    .frame_max = amqp_frame_max,
    .declare = amqp_declare,
    .consume = amqp_consume,
    .cancel = amqp_cancel,
    .publish = amqp_publish,
    .ack = amqp_ack,
    .nack = amqp_nack,
    .release = amqp_release,
    .heartbeats = true,
    .crash = amqp_crash,
};
