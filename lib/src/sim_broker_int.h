/*
 * sim_broker_int.h - the in-memory broker of the simulation (sim_broker.c).
 */
#ifndef CHORUS_SIM_BROKER_INT_H
#define CHORUS_SIM_BROKER_INT_H

#include "amqp_props_int.h"
#include "common_int.h"
#include "topology_int.h"

typedef struct chorus__sim_broker_s chorus__sim_broker_t;

/* A message taken from a queue (owned by the broker until acked). */
typedef struct {
    uint64_t tag;
    bool redelivered;
    int delivery_count;         /* x-delivery-count: returns so far */
    const char *exchange, *routing_key;
    const amqp_message_t *message;
    const char *death;          /* x-first-death-reason, "" if never dead-lettered */
} chorus__sim_delivery_t;

chorus__sim_broker_t *chorus__sim_broker_new(void);
void chorus__sim_broker_free(chorus__sim_broker_t *b);
/* Declares what the real connection would: CHORUS_ERR_PRECONDITION for a
 * redeclaration with other properties, CHORUS_ERR_NOT_FOUND for a binding
 * to nothing; @p err says which. */
chorus_err_t chorus__sim_declare(chorus__sim_broker_t *b, const chorus__topology_t *t, char *err,
                                 size_t n);
/* The number of queues it reached (0: unroutable), -1 when out of memory. */
int chorus__sim_publish(chorus__sim_broker_t *b, const char *exchange, const char *key,
                        const amqp_basic_properties_t *props, amqp_bytes_t body);
size_t chorus__sim_ready(chorus__sim_broker_t *b, const char *queue);
size_t chorus__sim_unacked(chorus__sim_broker_t *b, const char *queue);
/* The @p index-th ready message of @p queue (0: the head) becomes unacked. */
bool chorus__sim_take(chorus__sim_broker_t *b, const char *queue, size_t index,
                      chorus__sim_delivery_t *out);
chorus_err_t chorus__sim_ack(chorus__sim_broker_t *b, uint64_t tag);
/* With @p back: requeued at the head (or dead-lettered past the queue's
 * delivery limit); without: dead-lettered ("rejected"). */
chorus_err_t chorus__sim_nack(chorus__sim_broker_t *b, uint64_t tag, bool back);
/* The consumer of @p queue went: its unacked messages back at the head. */
void chorus__sim_lose(chorus__sim_broker_t *b, const char *queue);
/* Dead-letters what outlived its queue's TTL by chorus_now_ms(); how many. */
size_t chorus__sim_tick(chorus__sim_broker_t *b);
bool chorus__sim_topic_match(const char *pattern, const char *key);
/* A second copy of the @p index-th ready message at the tail of @p queue
 * (a publisher that resent it after a lost confirm). */
bool chorus__sim_copy(chorus__sim_broker_t *b, const char *queue, size_t index);
/* The queues, by index, for whoever inspects them. */
size_t chorus__sim_queue_count(const chorus__sim_broker_t *b);
const char *chorus__sim_queue_name(const chorus__sim_broker_t *b, size_t i);
/* The @p index-th ready message of @p queue, left where it is (NULL: none). */
const amqp_message_t *chorus__sim_peek(chorus__sim_broker_t *b, const char *queue, size_t index);

#endif
