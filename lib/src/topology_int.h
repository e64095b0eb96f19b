/*
 * topology_int.h - names, arguments and declaration of everything chorus
 * declares on the broker.  The plan is pure data (unit-testable); one
 * function turns it into AMQP methods.
 */
#ifndef CHORUS_TOPOLOGY_INT_H
#define CHORUS_TOPOLOGY_INT_H

#include "retry_int.h"

#include <amqp.h>

#define CHORUS__NAME_MAX 256

typedef struct {
    char key[48];
    bool is_int;
    bool is_bool; /* i: 0 or 1 */
    char s[CHORUS__NAME_MAX];
    long long i;
} chorus__arg_t;

typedef enum {
    CHORUS__OP_EXCHANGE,
    CHORUS__OP_QUEUE,
    CHORUS__OP_BIND
} chorus__op_kind_t;

typedef struct {
    chorus__op_kind_t kind;
    char name[CHORUS__NAME_MAX];   /* exchange or queue */
    char type[16];                 /* exchange type */
    char source[CHORUS__NAME_MAX]; /* bind: the exchange */
    char key[CHORUS__NAME_MAX];    /* bind: the routing key */
    chorus__arg_t args[8];
    int nargs;
} chorus__topo_op_t;

typedef struct {
    char exchange[CHORUS__NAME_MAX];          /* <ns>.events (topic) */
    char unrouted_exchange[CHORUS__NAME_MAX]; /* <ns>.events.unrouted (fanout) */
    char unrouted_queue[CHORUS__NAME_MAX];    /* <ns>.unrouted */
    char dlx[CHORUS__NAME_MAX];               /* <ns>.<service>.dlx (direct) */
    char retry_exchange[CHORUS__NAME_MAX];    /* <ns>.<service>.retry (direct) */
    char queue[CHORUS__NAME_MAX];             /* <ns>.<service> */
    char dlq[CHORUS__NAME_MAX];               /* <ns>.<service>.dlq */
    char retry[CHORUS__MAX_DELAYS][CHORUS__NAME_MAX]; /* <ns>.<service>.retry.<ms> */
    int nretry;
} chorus__names_t;

typedef struct {
    chorus__names_t names;
    chorus__topo_op_t *ops;
    int nops;
    bool quorum;
    int prefetch;
} chorus__topology_t;

typedef struct {
    const char *service;
    const char *ns;
    bool quorum;
    int prefetch;
    const char *const *bindings; /* routing keys for the service queue */
    int nbindings;
    const chorus__retry_schedule_t *retry;
    bool retry_at_most_once; /* quorum queues dead-letter without at-least-once */
    int delivery_limit;      /* quorum service queue: x-delivery-limit */
    bool single_active;      /* service queue: x-single-active-consumer */
} chorus__topology_spec_t;

/* Fills names only (no allocation). */
chorus_err_t chorus__names_build(const char *ns, const char *service,
                                 const chorus__retry_schedule_t *retry,
                                 chorus__names_t *out);
chorus_err_t chorus__topology_build(const chorus__topology_spec_t *spec,
                                    chorus__topology_t *out);
void chorus__topology_free(chorus__topology_t *t);
/* The plan as a RabbitMQ definitions document (exchanges, queues, bindings
 * in @p vhost), malloc'd JSON text; NULL when out of memory. */
char *chorus__topology_definitions(const chorus__topology_t *t, const char *vhost);
const chorus__arg_t *chorus__op_arg(const chorus__topo_op_t *op, const char *key);

/* Declares every op on @p channel (already open).  On a broker refusal the
 * channel is closed (close-ok sent) and errstr names the object and reason;
 * returns CHORUS_ERR_PRECONDITION (406), CHORUS_ERR_NOT_FOUND (404),
 * CHORUS_ERR_CHANNEL_CLOSED, or CHORUS_ERR_CONN_CLOSED. */
chorus_err_t chorus__topology_declare(amqp_connection_state_t st,
                                      amqp_channel_t channel,
                                      const chorus__topology_t *t, char *errstr,
                                      size_t size);

/* Maps an rpc reply to an error code and text; sends channel.close-ok /
 * connection.close-ok when the broker closed something. */
chorus_err_t chorus__amqp_reply_error(amqp_connection_state_t st,
                                      amqp_channel_t channel,
                                      amqp_rpc_reply_t r, const char *what,
                                      char *errstr, size_t size);

#endif
