/*
 * testlib.c - fixtures for integration and fault tests (see testlib.h).
 */
#include "testlib.h"

#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "amqp_props_int.h"
#include "url_int.h"

const char *it_amqp_url(void) {
    const char *u = getenv("CHORUS_AMQP_URL");
    if (u && *u)
        return u;
    const char *req = getenv("CHORUS_REQUIRE_SERVERS");
    if (req && strcmp(req, "1") == 0) {
        fprintf(stderr, "CHORUS_AMQP_URL is not set but servers are required\n");
        exit(1);
    }
    fprintf(stderr, "skipped: CHORUS_AMQP_URL is not set (run ./scripts/test)\n");
    exit(77);
}

const char *it_ns(void) {
    static char ns[48];
    if (!ns[0]) {
        unsigned r = 0;
        if (getrandom(&r, sizeof(r), 0) != sizeof(r))
            r = (unsigned)time(NULL);
        snprintf(ns, sizeof(ns), "t%ldx%u", (long)getpid(), r % 100000u);
    }
    return ns;
}

static void must_set(chorus_conf_t *c, const char *k, const char *v) {
    char err[256];
    if (chorus_conf_set(c, k, v, err, sizeof(err)) != CHORUS_CONF_OK)
        fail_msg("conf %s=%s: %s", k, v, err);
}

chorus_conf_t *it_conf(const char *service) {
    chorus_conf_t *c = chorus_conf_new();
    char name[128];
    must_set(c, "service.name", service);
    must_set(c, "amqp.url", it_amqp_url());
    must_set(c, "topology.namespace", it_ns());
    snprintf(name, sizeof(name), "%s.%s", it_ns(), service);
    must_set(c, "amqp.connection.name", name);
    must_set(c, "retry.delays.ms", "200ms,400ms");
    must_set(c, "retry.max.attempts", "3");
    must_set(c, "amqp.reconnect.backoff.initial.ms", "50");
    must_set(c, "amqp.reconnect.backoff.max.ms", "1000");
    must_set(c, "log.level", "notice");
    /* The suites create and delete many retry queues in quick succession,
     * which RabbitMQ 3.10's at-least-once dead-letter worker does not
     * survive; it_retry sets the default back and tests that path. */
    must_set(c, "topology.retry.strategy", "at-most-once");
    return c;
}

chorus_t *it_start(chorus_conf_t *conf) {
    char err[512];
    chorus_t *ch = chorus_new(conf, err, sizeof(err));
    if (!ch)
        fail_msg("chorus_new: %s", err);
    chorus_err_t rc = chorus_start(ch);
    if (rc)
        fail_msg("chorus_start: %s", chorus_strerror(rc));
    return ch;
}

bool it_poll_until(chorus_t **chs, int n, int timeout_ms, bool (*done)(void *), void *arg) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (done(arg))
            return true;
        for (int i = 0; i < n; i++)
            chorus_poll(chs[i], 20);
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > timeout_ms)
            return done(arg);
    }
}

/* ---- raw client -------------------------------------------------------- */

static void check_reply(amqp_connection_state_t st, const char *what) {
    amqp_rpc_reply_t r = amqp_get_rpc_reply(st);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("raw %s failed (reply type %d, id 0x%x)", what, r.reply_type,
                 r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION ? r.reply.id : 0);
}

it_raw_t *it_raw_open(void) {
    chorus__url_t u;
    char err[256];
    if (chorus__url_parse(it_amqp_url(), &u, err, sizeof(err)))
        fail_msg("%s", err);
    it_raw_t *r = calloc(1, sizeof(*r));
    r->st = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(r->st);
    if (amqp_socket_open(s, u.host, u.port))
        fail_msg("raw connect failed");
    amqp_rpc_reply_t lr = amqp_login(r->st, u.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                     u.user, u.pass);
    if (lr.reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("raw login failed");
    amqp_channel_open(r->st, 1);
    check_reply(r->st, "channel.open");
    amqp_confirm_select(r->st, 1);
    check_reply(r->st, "confirm.select");
    return r;
}

void it_raw_close(it_raw_t *r) {
    if (!r)
        return;
    amqp_channel_close(r->st, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(r->st, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(r->st);
    free(r);
}

void it_raw_publish(it_raw_t *r, const char *exchange, const char *rk, const void *body,
                    size_t len, const amqp_table_t *headers) {
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.content_type = amqp_cstring_bytes("application/json");
    if (headers) {
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers = *headers;
    }
    amqp_bytes_t b = {.len = len, .bytes = (void *)body};
    if (amqp_basic_publish(r->st, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(rk), 0,
                           0, &p, b))
        fail_msg("raw publish failed");
    amqp_frame_t f;
    struct timeval tv = {.tv_sec = 10};
    if (amqp_simple_wait_frame_noblock(r->st, &f, &tv) != AMQP_STATUS_OK ||
        f.frame_type != AMQP_FRAME_METHOD || f.payload.method.id != AMQP_BASIC_ACK_METHOD)
        fail_msg("raw publish was not confirmed");
    amqp_maybe_release_buffers(r->st);
}

void it_raw_tap(it_raw_t *r, const char *queue) {
    char ex[300];
    snprintf(ex, sizeof(ex), "%s.events", it_ns());
    amqp_queue_declare(r->st, 1, amqp_cstring_bytes(queue), 0, 0, 0, 0, amqp_empty_table);
    check_reply(r->st, "tap declare");
    amqp_queue_bind(r->st, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(ex),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    check_reply(r->st, "tap bind");
}

bool it_raw_get(it_raw_t *r, const char *queue, amqp_message_t *out, int timeout_ms) {
    for (int waited = 0;; waited += 50) {
        amqp_rpc_reply_t rep = amqp_basic_get(r->st, 1, amqp_cstring_bytes(queue), 1);
        if (rep.reply_type != AMQP_RESPONSE_NORMAL)
            fail_msg("raw basic.get on %s failed", queue);
        if (rep.reply.id == AMQP_BASIC_GET_OK_METHOD) {
            if (chorus__read_message(r->st, 1, out, 10000) != AMQP_STATUS_OK)
                fail_msg("raw read_message failed");
            return true;
        }
        if (waited >= timeout_ms)
            return false;
        usleep(50 * 1000);
    }
}

int it_raw_count(it_raw_t *r, const char *queue) {
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(r->st, 1, amqp_cstring_bytes(queue), 1,
                                                     0, 0, 0, amqp_empty_table);
    check_reply(r->st, "passive declare");
    return (int)ok->message_count;
}

void it_cleanup(const char *const *services, int n) {
    it_raw_t *r = it_raw_open();
    const char *ns = it_ns();
    char name[300];
    for (int i = 0; i < n; i++) {
        static const char *const fmts[] = {"%s.%s", "%s.%s.dlq", "%s.%s.retry.200",
                                           "%s.%s.retry.400", "%s.%s.tap"};
        for (size_t k = 0; k < sizeof(fmts) / sizeof(fmts[0]); k++) {
            snprintf(name, sizeof(name), fmts[k], ns, services[i]);
            amqp_queue_delete(r->st, 1, amqp_cstring_bytes(name), 0, 0);
        }
    }
    snprintf(name, sizeof(name), "%s.unrouted", ns);
    amqp_queue_delete(r->st, 1, amqp_cstring_bytes(name), 0, 0);
    static const char *const exs[] = {"%s.events", "%s.events.unrouted"};
    for (size_t k = 0; k < 2; k++) {
        snprintf(name, sizeof(name), exs[k], ns);
        amqp_exchange_delete(r->st, 1, amqp_cstring_bytes(name), 0);
    }
    for (int i = 0; i < n; i++) {
        static const char *const own[] = {"%s.%s.dlx", "%s.%s.retry"};
        for (size_t k = 0; k < 2; k++) {
            snprintf(name, sizeof(name), own[k], ns, services[i]);
            amqp_exchange_delete(r->st, 1, amqp_cstring_bytes(name), 0);
        }
    }
    it_raw_close(r);
}

char *it_envelope_text(const char *type, const char *aggregate, const char *data) {
    chorus_error_t *err = NULL;
    chorus_envelope_t *e = chorus_envelope_new(type, aggregate, 1, data, &err);
    if (!e)
        fail_msg("envelope %s: %s", type, chorus_error_string(err));
    char *out = NULL;
    size_t len;
    if (chorus_envelope_serialize(e, &out, &len) != CHORUS_OK)
        fail_msg("envelope %s: cannot serialize", type);
    chorus_envelope_destroy(e);
    return out;
}

char *it_header_str(const amqp_message_t *m, const char *key) {
    if (!(m->properties._flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    const amqp_table_t *t = &m->properties.headers;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == strlen(key) && (e->key.len == 0 || memcmp(e->key.bytes, key, e->key.len) == 0) &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            return strndup(e->value.value.bytes.bytes, e->value.value.bytes.len);
    }
    return NULL;
}

long long it_header_int(const amqp_message_t *m, const char *key, long long dflt) {
    if (!(m->properties._flags & AMQP_BASIC_HEADERS_FLAG))
        return dflt;
    const amqp_table_t *t = &m->properties.headers;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len != strlen(key) || (e->key.len && memcmp(e->key.bytes, key, e->key.len) != 0))
            continue;
        switch (e->value.kind) {
        case AMQP_FIELD_KIND_I64: return e->value.value.i64;
        case AMQP_FIELD_KIND_I32: return e->value.value.i32;
        case AMQP_FIELD_KIND_U32: return e->value.value.u32;
        case AMQP_FIELD_KIND_I16: return e->value.value.i16;
        case AMQP_FIELD_KIND_U8: return e->value.value.u8;
        default: return dflt;
        }
    }
    return dflt;
}

/* ---- broker control ------------------------------------------------------ */

int it_ctl(char *out, size_t size, const char *fmt, ...) {
    const char *ctl = getenv("CHORUS_CTL");
    if (!ctl || !*ctl) {
        fprintf(stderr, "skipped: CHORUS_CTL is not set (the broker is not ours to control)\n");
        exit(77);
    }
    char args[1024], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", ctl, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        fail_msg("cannot run %s", cmd);
    size_t n = 0;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), p)) > 0) {
        if (out && n + 1 < size) {
            size_t take = got < size - n - 1 ? got : size - n - 1;
            memcpy(out + n, buf, take);
            n += take;
        }
    }
    if (out && size)
        out[n] = '\0';
    int st = pclose(p);
    return st;
}

int it_close_connections(const char *name_part) {
    static char list[65536];
    if (it_ctl(list, sizeof(list), "list_connections -q --no-table-headers pid client_properties") != 0)
        fail_msg("list_connections failed: %s", list);
    int closed = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char pid[128] = "", name[512] = "";
        if (sscanf(line, "%127s %511[^\n]", pid, name) != 2 || !strstr(line + strlen(pid), name_part))
            continue;
        char o[1024];
        if (it_ctl(o, sizeof(o), "close_connection '%s' 'chorus fault test'", pid) == 0)
            closed++;
        else
            fprintf(stderr, "close_connection %s: %s\n", pid, o);
    }
    return closed;
}

/* ---- id set ------------------------------------------------------------- */

bool it_idset_add(it_idset_t *s, const char *id) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->items[i], id) == 0) {
            s->dups++;
            return false;
        }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->items = realloc(s->items, sizeof(*s->items) * (size_t)s->cap);
    }
    snprintf(s->items[s->n++], 37, "%s", id);
    return true;
}

void it_idset_free(it_idset_t *s) {
    free(s->items);
    s->items = NULL;
    s->n = s->cap = s->dups = 0;
}

/* ---- PostgreSQL ------------------------------------------------------------ */

static PGconn *it_pg_conn;

PGconn *it_pg(void) {
    if (it_pg_conn)
        return it_pg_conn;
    if (!getenv("PGHOST") && !getenv("PGDATABASE") && !getenv("PGSERVICE")) {
        const char *req = getenv("CHORUS_REQUIRE_SERVERS");
        if (req && strcmp(req, "1") == 0) {
            fprintf(stderr, "no PG* variable is set but servers are required\n");
            exit(1);
        }
        fprintf(stderr, "skipped: no PG* variable is set (run ./scripts/test)\n");
        exit(77);
    }
    it_pg_conn = PQconnectdb("");
    if (PQstatus(it_pg_conn) != CONNECTION_OK)
        fail_msg("PostgreSQL: %s", PQerrorMessage(it_pg_conn));
    PQclear(PQexec(it_pg_conn, "SET client_min_messages = warning"));
    return it_pg_conn;
}

static PGresult *it_pg_run(const char *sql, int n, const char *const *params) {
    PGresult *r = PQexecParams(it_pg(), sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("SQL failed: %s\n  %s", PQresultErrorMessage(r), sql);
    return r;
}

void it_pg_exec(const char *sql, int n, const char *const *params) {
    PQclear(it_pg_run(sql, n, params));
}

char *it_pg_value(const char *sql, int n, const char *const *params) {
    PGresult *r = it_pg_run(sql, n, params);
    char *v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

void it_pg_drop_schema(const char *schema) {
    const char *p[] = {schema};
    char *sql = it_pg_value("SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', $1::text)", 1, p);
    it_pg_exec(sql, 0, NULL);
    free(sql);
}

void it_pg_close(void) {
    PQfinish(it_pg_conn);
    it_pg_conn = NULL;
}
