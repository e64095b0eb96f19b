/*
 * url_int.h - AMQP URL parsing (pure; no I/O).
 */
#ifndef CHORUS_URL_INT_H
#define CHORUS_URL_INT_H

#include "common_int.h"

typedef struct {
    char user[128];
    char pass[256];
    char host[256];
    int port;
    char vhost[256];
    bool tls; /* amqps:// */
} chorus__url_t;

/* Parses one "amqp://user:pass@host:port/vhost" (or amqps://, tls set).
 * Missing parts take the AMQP URI defaults (guest/guest, localhost, 5672 --
 * 5671 for amqps --, vhost "/").  On failure
 * returns CHORUS_ERR_BAD_URL with the reason in errstr (never the password). */
chorus_err_t chorus__url_parse(const char *s, chorus__url_t *out, char *errstr,
                               size_t errstr_size);

/* Parses a list separated by commas or white space into at most max URLs;
 * returns the count, or -1 with errstr set. */
int chorus__url_parse_list(const char *s, chorus__url_t *out, int max,
                           char *errstr, size_t errstr_size);

/* "host:port/vhost" for logs (" (TLS)" after it for amqps): never the
 * credentials. */
void chorus__url_describe(const chorus__url_t *u, char *buf, size_t size);

#endif
