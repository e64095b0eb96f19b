/*
 * durable.h - fixtures shared by the durable-participant tests: a
 * participant with store.type=postgres in a schema of its own, and
 * counting queries on that schema.
 */
#ifndef CHORUS_TEST_DURABLE_H
#define CHORUS_TEST_DURABLE_H

#include "testlib.h"
#include "chorus/chorus_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "<ns>_<service>": the schema a durable test participant uses. */
static inline const char *dur_schema(const char *service) {
    static char buf[8][96];
    static int next;
    char *s = buf[next++ % 8];
    snprintf(s, 96, "%s_%s", it_ns(), service);
    return s;
}

static inline chorus_conf_t *dur_conf(const char *service) {
    chorus_conf_t *c = it_conf(service);
    char err[256];
    if (chorus_conf_set(c, "store.type", "postgres", err, sizeof(err)) ||
        chorus_conf_set(c, "store.schema", dur_schema(service), err, sizeof(err)))
        fail_msg("%s", err);
    return c;
}

/* SELECT count(*) FROM <schema of service>.<table> [WHERE ...] */
static inline long dur_count(const char *service, const char *table, const char *where) {
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s.%s%s%s", dur_schema(service), table,
             where ? " WHERE " : "", where ? where : "");
    char *v = it_pg_value(sql, 0, NULL);
    long n = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return n;
}

/* Runs @p fmt_with_schema, whose one %s is the service's schema. */
static inline void dur_sql(const char *service, const char *fmt_with_schema) {
    char sql[1024];
    snprintf(sql, sizeof(sql), fmt_with_schema, dur_schema(service));
    it_pg_exec(sql, 0, NULL);
}

#endif
