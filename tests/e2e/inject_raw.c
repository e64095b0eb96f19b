/*
 * e2e-inject-raw NAMESPACE ROUTING_KEY [--exchange NAME] [--via-exchange NAME]
 *                [--user-id USER] [--header KEY=VALUE]... [--interval-ms N] [BODY...]
 *
 * Publishes raw bytes to "<NAMESPACE>.events" (or the exchange NAME; ""
 * is the default exchange) with ROUTING_KEY, one persistent message per
 * BODY argument (or, with none, one message holding all of stdin), in
 * order, waiting for each publisher confirm before the next; --user-id
 * sets the AMQP user_id property, --header adds a string header,
 * --via-exchange declares a fanout exchange NAME of the publisher's own,
 * binds it into "<NAMESPACE>.events" (exchange-to-exchange) and publishes
 * to it instead, a route around the topic permissions of the events
 * exchange,
 * --interval-ms sleeps between two messages.  It bypasses chorus on
 * purpose: for end-to-end tests that need bytes no chorus producer would
 * send (not JSON, an envelope under another event's routing key, a route
 * around the events exchange).
 *
 * The broker is CHORUS_AMQP_URL.  Exit 0 when every message was confirmed,
 * 1 on a failure (the broker's refusal, with its reply text, on stderr),
 * 2 on bad usage.
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int usage(void) {
    fprintf(stderr, "usage: e2e-inject-raw NAMESPACE ROUTING_KEY [--exchange NAME] [--user-id USER]\n"
                    "                      [--header KEY=VALUE]... [--interval-ms N] [BODY...]\n"
                    "       (no BODY: one message holding stdin)\n");
    return 2;
}

/* The reply text of a broker close, so a test can tell ACCESS_REFUSED
 * from PRECONDITION_FAILED. */
static void print_close(const amqp_frame_t *f) {
    if (f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        fprintf(stderr, "e2e-inject-raw: the broker closed the channel: %u %.*s\n",
                m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        fprintf(stderr, "e2e-inject-raw: the broker closed the connection: %u %.*s\n",
                m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    }
}

static int rpc_failed(amqp_rpc_reply_t r, const char *what) {
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        fprintf(stderr, "e2e-inject-raw: %s: %s\n", what, amqp_error_string2(r.library_error));
    else
        fprintf(stderr, "e2e-inject-raw: %s: refused by the broker\n", what);
    return 1;
}

/* Waits for the confirm of the last publish: 0 on ack, 1 otherwise. */
static int wait_confirm(amqp_connection_state_t c) {
    for (;;) {
        amqp_frame_t f;
        struct timeval tv = {10, 0};
        int s = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (s != AMQP_STATUS_OK) {
            fprintf(stderr, "e2e-inject-raw: waiting for the confirm: %s\n",
                    amqp_error_string2(s));
            return 1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD)
            return 0;
        if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            fprintf(stderr, "e2e-inject-raw: the broker nacked a message\n");
            return 1;
        }
        if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
            f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            print_close(&f);
            return 1;
        }
    }
}

static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return usage();
    const char *ns = argv[1], *rk = argv[2], *exchange_opt = NULL, *user_id = NULL, *via = NULL;
    long interval_ms = 0;
    amqp_table_entry_t hdrs[16];
    int nhdrs = 0, first = 3;
    while (first + 1 < argc && strncmp(argv[first], "--", 2) == 0) {
        const char *opt = argv[first], *val = argv[first + 1];
        if (strcmp(opt, "--interval-ms") == 0) {
            char *end;
            interval_ms = strtol(val, &end, 10);
            if (*end || interval_ms < 0)
                return usage();
        } else if (strcmp(opt, "--exchange") == 0) {
            exchange_opt = val;
        } else if (strcmp(opt, "--via-exchange") == 0) {
            via = val;
        } else if (strcmp(opt, "--user-id") == 0) {
            user_id = val;
        } else if (strcmp(opt, "--header") == 0 && strchr(val, '=') && nhdrs < 16) {
            const char *eq = strchr(val, '=');
            hdrs[nhdrs].key = (amqp_bytes_t){.len = (size_t)(eq - val), .bytes = (void *)val};
            hdrs[nhdrs].value.kind = AMQP_FIELD_KIND_UTF8;
            hdrs[nhdrs].value.value.bytes = amqp_cstring_bytes(eq + 1);
            nhdrs++;
        } else {
            return usage();
        }
        first += 2;
    }
    const char *env_url = getenv("CHORUS_AMQP_URL");
    if (!env_url || !*env_url) {
        fprintf(stderr, "e2e-inject-raw: CHORUS_AMQP_URL is not set\n");
        return 2;
    }
    /* the first of a list ("url1,url2"); an empty path is vhost "/" */
    char *url = strndup(env_url, strcspn(env_url, ", "));
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (!url || amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "e2e-inject-raw: CHORUS_AMQP_URL is not an amqp:// URL\n");
        return 2;
    }
    if (!ci.vhost || !*ci.vhost)
        ci.vhost = "/";
    char exchange[256];
    if (snprintf(exchange, sizeof(exchange), "%s.events", ns) >= (int)sizeof(exchange))
        return usage();
    if (exchange_opt)
        snprintf(exchange, sizeof(exchange), "%s", exchange_opt);

    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *sock = c ? amqp_tcp_socket_new(c) : NULL;
    if (!sock || amqp_socket_open(sock, ci.host, ci.port) != AMQP_STATUS_OK) {
        fprintf(stderr, "e2e-inject-raw: cannot connect to %s:%d\n", ci.host, ci.port);
        return 1;
    }
    int rc = rpc_failed(amqp_login(c, ci.vhost, 0, 131072, 30, AMQP_SASL_METHOD_PLAIN, ci.user,
                                   ci.password),
                        "login");
    if (!rc) {
        amqp_channel_open(c, 1);
        rc = rpc_failed(amqp_get_rpc_reply(c), "channel.open");
    }
    if (!rc) {
        amqp_confirm_select(c, 1);
        rc = rpc_failed(amqp_get_rpc_reply(c), "confirm.select");
    }
    if (!rc && via) {
        amqp_exchange_declare(c, 1, amqp_cstring_bytes(via), amqp_cstring_bytes("fanout"), 0, 0,
                              1, 0, amqp_empty_table);
        rc = rpc_failed(amqp_get_rpc_reply(c), "exchange.declare");
        if (!rc) {
            amqp_exchange_bind(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(via),
                               amqp_cstring_bytes(""), amqp_empty_table);
            rc = rpc_failed(amqp_get_rpc_reply(c), "exchange.bind");
        }
        snprintf(exchange, sizeof(exchange), "%s", via);
    }
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_DELIVERY_MODE_FLAG,
        .delivery_mode = 2,
    };
    if (user_id) {
        props._flags |= AMQP_BASIC_USER_ID_FLAG;
        props.user_id = amqp_cstring_bytes(user_id);
    }
    if (nhdrs) {
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers = (amqp_table_t){.num_entries = nhdrs, .entries = hdrs};
    }
    int n = first < argc ? argc - first : 1;
    for (int i = 0; !rc && i < n; i++) {
        amqp_bytes_t body;
        char *in = NULL;
        if (first < argc) {
            body = amqp_cstring_bytes(argv[first + i]);
        } else {
            size_t len;
            if (!(in = read_stdin(&len))) {
                fprintf(stderr, "e2e-inject-raw: out of memory\n");
                rc = 1;
                break;
            }
            body = (amqp_bytes_t){.len = len, .bytes = in};
        }
        if (i > 0 && interval_ms > 0) {
            struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        int s = amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(rk), 0,
                                   0, &props, body);
        free(in);
        if (s != AMQP_STATUS_OK) {
            fprintf(stderr, "e2e-inject-raw: publish: %s\n", amqp_error_string2(s));
            rc = 1;
        } else {
            rc = wait_confirm(c);
        }
    }
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    free(url);
    return rc;
}
