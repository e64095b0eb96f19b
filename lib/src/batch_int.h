/*
 * batch_int.h - the states of a batch of deliveries and of each delivery
 * in it, and the only transitions between them (batch.c).  Pure: no I/O;
 * consumer.c drives them, unit tests check them without servers.
 */
#ifndef CHORUS_BATCH_INT_H
#define CHORUS_BATCH_INT_H

#include "common_int.h"

/* A batch: deliveries taken from the backlog together, handled in one
 * transaction (durable), acked together.  See batch.c for the picture. */
typedef enum {
    CHORUS__B_TAKEN = 0,  /* decoded; nothing done yet */
    CHORUS__B_HANDLED,    /* every delivery has its outcome (durable: committed) */
    CHORUS__B_SENT,       /* its publishes are with the broker */
    CHORUS__B_SETTLED,    /* every one of them confirmed or failed */
    CHORUS__B_ACKED,      /* acked (nacked where a publish failed): done */
    CHORUS__B_REQUEUED,   /* given back unhandled (store down, no commit): done */
    CHORUS__B_VOID,       /* its delivery tags died with the channel: done */
    CHORUS__B_NSTATES
} chorus__bstate_t;

typedef enum {
    CHORUS__BE_HANDLE = 0, /* handlers ran; durable: the transaction committed */
    CHORUS__BE_GIVE_BACK,  /* the store is down or the transaction never committed */
    CHORUS__BE_SEND,       /* publishes handed to the publisher */
    CHORUS__BE_SETTLE,     /* the last of them settled (or there were none) */
    CHORUS__BE_ACK,        /* acks sent, oldest batch first */
    CHORUS__BE_LOSE,       /* connection or consume channel lost */
    CHORUS__BE_NEVENTS
} chorus__bevent_t;

/* A delivery's outcome, decided once per handling of its batch. */
typedef enum {
    CHORUS__D_RECEIVED = 0, /* in the backlog */
    CHORUS__D_DECODED,      /* envelope valid, handler found: to be handled */
    CHORUS__D_REFUSED,      /* to the DLQ before any handler (reason set) */
    CHORUS__D_RECOUNT,      /* classic queue redelivery: sent back with its count */
    CHORUS__D_HANDLED,      /* handler succeeded: its events are published */
    CHORUS__D_DUPLICATE,    /* handled before (inbox): acked, nothing else */
    CHORUS__D_RETRY,        /* to a retry queue */
    CHORUS__D_DEAD,         /* to the DLQ after its handler (reason set) */
    CHORUS__D_NSTATES
} chorus__dstate_t;

typedef enum {
    CHORUS__DE_DECODE = 0,  /* decode(): admissible */
    CHORUS__DE_REFUSE,      /* decode() or handling: to the DLQ */
    CHORUS__DE_RECOUNT,     /* decode(): a classic queue's redelivery */
    CHORUS__DE_SUCCEED,     /* handler returned CHORUS_HANDLED */
    CHORUS__DE_DUPLICATE,   /* the inbox knew it */
    CHORUS__DE_RETRY,       /* retry later (handler, conflict, SQL failure) */
    CHORUS__DE_RESET,       /* its batch runs again: back to decoded */
    CHORUS__DE_UNDECODE,    /* pushed back to the backlog (batch memory bound) */
    CHORUS__DE_NEVENTS
} chorus__devent_t;

/* The next state, or -1 when @p ev is not allowed in @p st. */
int chorus__batch_next(chorus__bstate_t st, chorus__bevent_t ev);
int chorus__delivery_next(chorus__dstate_t st, chorus__devent_t ev);
/* Whether a batch in @p st is finished (nothing more happens to it). */
bool chorus__batch_done(chorus__bstate_t st);
const char *chorus__bstate_name(chorus__bstate_t st);
const char *chorus__dstate_name(chorus__dstate_t st);

#endif
