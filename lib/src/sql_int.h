/*
 * sql_int.h - one PostgreSQL connection's statements: each text prepared
 * once it repeats, and statements whose answer can wait sent together
 * with the next one that is needed, in one libpq pipeline (one round
 * trip).  Knows libpq only; no chorus handle, no logging.
 *
 *   chorus__sql_defer(s, "RELEASE SAVEPOINT x", ...)   queued, not sent
 *   chorus__sql_exec(s, "INSERT ... RETURNING", ...)   queued ones + this,
 *                                                     one Sync, one round trip
 *
 * A queued statement that fails is reported by the exec that sent it
 * (err->deferred), so the caller can tell its own statement's failure
 * from an earlier one's.
 */
#ifndef CHORUS_SQL_INT_H
#define CHORUS_SQL_INT_H

#include "common_int.h"

#include <libpq-fe.h>

/* What a failed statement said. */
typedef struct {
    chorus_err_t rc;      /* CONFLICT, DB or CONN_CLOSED */
    bool lost;            /* the connection is gone */
    bool deferred;        /* a queued statement failed, not the one asked */
    char sqlstate[6];     /* "" when there was none (a lost connection) */
    char message[256];    /* the server's message, first line */
} chorus__sql_err_t;

typedef struct {
    uint64_t hash;
    char *text;
    int uses;
    bool prepared;
    unsigned name;        /* "chorus_s<name>" on the server */
} chorus__sql_stmt_t;

typedef struct {
    size_t text;          /* offset in the arena */
    int n;
    size_t first;         /* its params' offsets: offs[first .. first + n) */
} chorus__sql_queued_t;

typedef struct {
    PGconn *pg;
    chorus__sql_stmt_t *cache;   /* open addressing, CHORUS__SQL_CACHE slots */
    size_t ncache;
    unsigned next_name;
    chorus__sql_queued_t *q;     /* deferred statements, in order */
    size_t nq, capq;
    size_t *offs, noffs, capoffs; /* parameter offsets (SIZE_MAX: NULL) */
    char *arena;                 /* their texts and parameters */
    size_t arena_len, arena_cap;
    uint64_t round_trips;        /* for the stats: pipelines and single statements */
    uint64_t statements;
} chorus__sql_t;

#define CHORUS__SQL_CACHE 512    /* slots; at most half of them used */
#define CHORUS__SQL_QUEUE_MAX 512 /* deferred statements sent early past this */

void chorus__sql_init(chorus__sql_t *s, PGconn *pg);
/* A new connection (or none): the server forgot every prepared statement. */
void chorus__sql_reset(chorus__sql_t *s, PGconn *pg);
void chorus__sql_free(chorus__sql_t *s);

/* Queues a statement whose result nobody reads; copies text and params. */
chorus_err_t chorus__sql_defer(chorus__sql_t *s, const char *sql, int n,
                               const char *const *params);
/* Sends the queue and @p sql in one round trip; *resp gets @p sql's result
 * (tuples or command status) when asked.  @p sql NULL: only the queue. */
chorus_err_t chorus__sql_exec(chorus__sql_t *s, const char *sql, int n,
                              const char *const *params, PGresult **resp,
                              chorus__sql_err_t *err);
/* Forgets the queue unsent (its transaction is being rolled back). */
void chorus__sql_drop(chorus__sql_t *s);
static inline size_t chorus__sql_queued(const chorus__sql_t *s) { return s->nq; }

#endif
