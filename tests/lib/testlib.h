/*
 * testlib.h - shared fixtures for tests that talk to the real RabbitMQ:
 * unique names per test, a raw rabbitmq-c client to inject and inspect
 * messages behind chorus' back, broker control, and clean-up.
 */
#ifndef CHORUS_TESTLIB_H
#define CHORUS_TESTLIB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <amqp.h>
#include <stdbool.h>

#include "chorus/chorus.h"

/* CHORUS_AMQP_URL, or exit 77 (skip); exit 1 when CHORUS_REQUIRE_SERVERS=1. */
const char *it_amqp_url(void);
/* A namespace unique to this process ("t<pid>x<random>"). */
const char *it_ns(void);
/* A conf for @p service in it_ns(), with short retry delays. */
chorus_conf_t *it_conf(const char *service);
/* chorus_new + chorus_start, failing the test on error. */
chorus_t *it_start(chorus_conf_t *conf);
/* Polls every handle in turn until @p done() or @p timeout_ms. */
bool it_poll_until(chorus_t **chs, int n, int timeout_ms, bool (*done)(void *), void *arg);

/* A raw connection for injecting and inspecting messages. */
typedef struct {
    amqp_connection_state_t st;
} it_raw_t;

it_raw_t *it_raw_open(void);
void it_raw_close(it_raw_t *r);
/* Publishes raw bytes with persistent delivery; waits for the confirm. */
void it_raw_publish(it_raw_t *r, const char *exchange, const char *rk,
                    const void *body, size_t len, const amqp_table_t *headers);
/* A queue bound to the events exchange with "#", to see what is published. */
void it_raw_tap(it_raw_t *r, const char *queue);
/* basic.get with ack; false when the queue is empty after waiting timeout_ms. */
bool it_raw_get(it_raw_t *r, const char *queue, amqp_message_t *out, int timeout_ms);
/* Messages ready in a queue (passive declare). */
int it_raw_count(it_raw_t *r, const char *queue);
/* Deletes what chorus declared in it_ns() for these services. */
void it_cleanup(const char *const *services, int n);

/* A valid envelope of @p type for @p aggregate with @p data (a JSON
 * object), serialized (malloc'd); fails the test on error. */
char *it_envelope_text(const char *type, const char *aggregate, const char *data);

/* Header lookups on a message; NULL / dflt when absent. */
char *it_header_str(const amqp_message_t *m, const char *key); /* malloc'd */
long long it_header_int(const amqp_message_t *m, const char *key, long long dflt);

/* Runs `$CHORUS_CTL args` (rabbitmqctl on the local node); skips the test
 * when the broker is not ours to control. Output goes to *out when given. */
int it_ctl(char *out, size_t size, const char *fmt, ...);
/* Closes every broker connection whose name contains @p name_part;
 * returns how many. */
int it_close_connections(const char *name_part);

/* A set of seen strings (event ids). */
typedef struct {
    char (*items)[37];
    int n, cap;
    int dups;
} it_idset_t;
bool it_idset_add(it_idset_t *s, const char *id); /* false when seen before */
void it_idset_free(it_idset_t *s);

/* ---- PostgreSQL, behind chorus' back (libpq's PG* variables) ---------- */
#include <libpq-fe.h>

/* Skips (exit 77) when no PG* variable names a server, unless
 * CHORUS_REQUIRE_SERVERS=1; fails the test when the server is unreachable.
 * One connection per process, opened on first use. */
PGconn *it_pg(void);
/* Runs parameterized SQL; fails the test on error. */
void it_pg_exec(const char *sql, int n, const char *const *params);
/* The first column of the first row (malloc'd), NULL when no row or NULL. */
char *it_pg_value(const char *sql, int n, const char *const *params);
/* DROP SCHEMA IF EXISTS ... CASCADE. */
void it_pg_drop_schema(const char *schema);
void it_pg_close(void);

#endif
