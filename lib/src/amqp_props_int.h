/*
 * amqp_props_int.h - what an AMQP 0-9-1 content header can carry, checked
 * before anything is sent (amqp_props.c; pure, no I/O).
 *
 * rabbitmq-c sends basic.publish's method frame before it encodes the
 * content header, so a header that turns out too large for the frame
 * ("table too large for buffer") leaves the broker waiting for a header
 * that never comes: the connection is lost, and the message that caused
 * it comes back to do it again.  It also truncates a header name longer
 * than 255 bytes to its low byte, which corrupts the table.  Every publish
 * chorus makes is therefore measured here first.
 */
#ifndef CHORUS_AMQP_PROPS_INT_H
#define CHORUS_AMQP_PROPS_INT_H

#include "common_int.h"

#include <amqp.h>

/* Nesting of tables and arrays in headers that chorus will send. */
#define CHORUS__HEADERS_MAX_DEPTH 64

/* Frame overhead around the property list of a content header frame:
 * 7 (frame header) + 12 (class, weight, body size) + 1 (frame end). */
#define CHORUS__HEADER_FRAME_OVERHEAD 20

/*
 * The encoded size of @p p's property list (flags included), as
 * rabbitmq-c writes it.  False, with the reason in @p why, when AMQP
 * cannot carry it at all: a short string or header name over 255 bytes,
 * an unknown field kind, headers nested deeper than
 * CHORUS__HEADERS_MAX_DEPTH.
 */
bool chorus__props_size(const amqp_basic_properties_t *p, size_t *out, char *why, size_t n);

/* The encoded size of a field value and of a whole table (its 4-byte
 * length included); false as above. */
bool chorus__field_size(const amqp_field_value_t *v, int depth, size_t *out, char *why, size_t n);
bool chorus__table_size(const amqp_table_t *t, int depth, size_t *out, char *why, size_t n);

/* True when @p p fits the content header frame of a connection whose
 * frame_max is @p frame_max; otherwise false and the reason. */
bool chorus__props_fit(const amqp_basic_properties_t *p, int frame_max, char *why, size_t n);

/* A deep copy of @p src into @p dst, allocated from @p pool (rabbitmq-c
 * does not export its own); false when out of memory. */
bool chorus__props_clone(const amqp_basic_properties_t *src, amqp_basic_properties_t *dst,
                         amqp_pool_t *pool);

/* amqp_read_message() with chorus__props_clone(): the content (header
 * and body frames) that follows a basic.deliver, basic.get-ok or
 * basic.return on @p channel, each frame within @p timeout_ms; an AMQP
 * status.  For readers that expect no other channel's frames meanwhile. */
int chorus__read_message(amqp_connection_state_t st, amqp_channel_t channel,
                         amqp_message_t *out, int timeout_ms);

#endif
