/*
 * cli.c - the order service's commands.
 *
 *   order place --customer UUID --item SKU:QTY[:PRICE]... --address TEXT [--card NO]
 *               [--key KEY]
 *   order simulate N [--key-prefix P]
 *                           N orders covering every outcome (for the demo)
 *   order list              the order_summaries read model
 *   order rebuild-projections
 *
 * PlaceOrder is a command: it is validated here, and only a valid one
 * becomes an OrderPlaced event, appended to the event store with the
 * outbox row in one transaction.  A running order service's relay,
 * woken by NOTIFY, publishes it.
 *
 * Each command carries an idempotency key (--key, or one made up and
 * printed), recorded in the same transaction (chorus_tx_idempotent).  When
 * PostgreSQL goes away during COMMIT the outcome is unknown -- the order
 * may exist -- and the command says so: repeating it with the same key
 * either finds the order ("already placed") or places it, never twice.
 * simulate repeats such orders itself, with their keys, until it knows.
 */
#include "order.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ITEMS 50

typedef struct {
    char sku[64];
    long qty;
    long price;
} item_t;

typedef struct {
    char customer[37];
    item_t items[MAX_ITEMS];
    int nitems;
    char address[256];
    char card[32];
    char key[201];
} place_t;

/* What became of one PlaceOrder. */
typedef enum { PLACED, ALREADY_PLACED, NOT_PLACED, UNKNOWN } placed_t;

static void usage(FILE *f) {
    fprintf(f,
            "usage: order [run]                 run the order service\n"
            "       order place --customer UUID --item SKU:QTY[:PRICE] [--item ...]\n"
            "                   --address TEXT [--card NUMBER] [--key KEY]\n"
            "       order simulate N [--key-prefix P]\n"
            "                                   place N orders covering every outcome\n"
            "       order cancel ID [--reason TEXT]\n"
            "                                   ask the saga to cancel (shipping decides)\n"
            "       order list                  print the order_summaries read model\n"
            "       order rebuild-projections   rebuild order_summaries from the event store\n"
            "PRICE is in cents (default 1000). KEY (1-200 characters, default: a new\n"
            "UUID) makes place idempotent: repeated with the same KEY, it prints the\n"
            "order it placed before instead of placing another. Exit status of place:\n"
            "0 placed (or placed before), 1 not placed, 2 usage, 3 outcome unknown\n"
            "(PostgreSQL went away during the commit: repeat with the same KEY).\n"
            "simulate uses the keys P-1 .. P-N (P default: a new UUID). The environment\n"
            "names the servers (CHORUS_AMQP_URL, PG* or CHORUS_PG_ORDER, CHORUS_SAGA_FILE).\n");
}

static int bad(const char *fmt, const char *what) {
    fprintf(stderr, "order: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

/* "SKU:QTY[:PRICE]" */
static bool parse_item(const char *arg, item_t *it) {
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", arg);
    char *qty = strchr(buf, ':');
    if (!qty || qty == buf || (size_t)(qty - buf) >= sizeof(it->sku))
        return false;
    *qty++ = '\0';
    char *price = strchr(qty, ':');
    if (price)
        *price++ = '\0';
    for (const char *p = buf; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return false;
    memcpy(it->sku, buf, strlen(buf) + 1); /* shorter than sku: checked above */
    it->price = 1000;
    return svc_parse_long(qty, 1, 1000, &it->qty) &&
           (!price || svc_parse_long(price, 0, 10000000, &it->price));
}

static int parse_place(int argc, char **argv, place_t *p) {
    static const struct option opts[] = {{"customer", required_argument, NULL, 'c'},
                                          {"item", required_argument, NULL, 'i'},
                                          {"address", required_argument, NULL, 'a'},
                                          {"card", required_argument, NULL, 'k'},
                                          {"key", required_argument, NULL, 'K'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    memset(p, 0, sizeof(*p));
    snprintf(p->card, sizeof(p->card), "4242424242424242");
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (!chorus_uuid_valid(optarg))
                return bad("--customer '%s' is not a UUID", optarg);
            snprintf(p->customer, sizeof(p->customer), "%s", optarg);
            break;
        case 'i':
            if (p->nitems == MAX_ITEMS)
                return bad("at most %s items", "50");
            if (!parse_item(optarg, &p->items[p->nitems++]))
                return bad("--item '%s' must be SKU:QTY[:PRICE] (SKU of A-Z 0-9 - _, "
                           "QTY 1-1000, PRICE in cents)", optarg);
            break;
        case 'a':
            if (!*optarg || strlen(optarg) >= sizeof(p->address))
                return bad("--address must be 1 to 255 characters%s", "");
            snprintf(p->address, sizeof(p->address), "%s", optarg);
            break;
        case 'k':
            if (strlen(optarg) < 12 || strlen(optarg) > 19 || strspn(optarg, "0123456789") != strlen(optarg))
                return bad("--card '%s' must be 12 to 19 digits", optarg);
            snprintf(p->card, sizeof(p->card), "%s", optarg);
            break;
        case 'K':
            if (!*optarg || strlen(optarg) >= sizeof(p->key))
                return bad("--key must be 1 to 200 characters%s", "");
            snprintf(p->key, sizeof(p->key), "%s", optarg);
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc)
        return bad("unexpected argument '%s'", argv[optind]);
    if (!p->customer[0])
        return bad("--customer is required%s", "");
    if (p->nitems == 0)
        return bad("at least one --item is required%s", "");
    if (!p->address[0])
        return bad("--address is required%s", "");
    return 0;
}

static chorus_envelope_t *order_placed(const place_t *p, char id[37]) {
    chorus_uuid_v7(id);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "order_id", id);
    cJSON_AddStringToObject(data, "customer_id", p->customer);
    cJSON *items = cJSON_AddArrayToObject(data, "items");
    long long total = 0;
    for (int i = 0; i < p->nitems; i++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "sku", p->items[i].sku);
        cJSON_AddNumberToObject(it, "qty", (double)p->items[i].qty);
        cJSON_AddNumberToObject(it, "price", (double)p->items[i].price);
        cJSON_AddItemToArray(items, it);
        total += (long long)p->items[i].qty * p->items[i].price;
    }
    cJSON_AddNumberToObject(data, "total", (double)total);
    cJSON_AddStringToObject(data, "address", p->address);
    cJSON_AddStringToObject(data, "card", p->card);
    return chorus_envelope_new_json("OrderPlaced", id, 1, data, NULL);
}

static chorus_t *order_handle(void) {
    chorus_t *ch = svc_open("order");
    if (ch && order_prepare_tables(ch)) {
        chorus_destroy(ch);
        return NULL;
    }
    return ch;
}

/* One order, one transaction: idempotency key + event store + outbox +
 * read model.  @p id: the order placed now, or the one placed before with
 * the same key. */
static placed_t place(chorus_t *ch, const place_t *p, char id[37]) {
    chorus_tx_t *tx;
    if (chorus_tx_begin(ch, &tx))
        return NOT_PLACED;
    order_state_t st = {0};
    chorus_envelope_t *ev = order_placed(p, id);
    char before[37];
    chorus_err_t rc = ev ? chorus_tx_idempotent(tx, p->key, id, before, sizeof(before))
                         : CHORUS_ERR_NOMEM;
    if (rc == CHORUS_ERR_DUPLICATE) {
        chorus_envelope_destroy(ev);
        chorus_tx_rollback(tx);
        memcpy(id, before, sizeof(before));
        return ALREADY_PLACED;
    }
    if (rc || order_append(tx, &st, 0, ev)) {
        if (rc)
            chorus_envelope_destroy(ev);
        chorus_tx_rollback(tx);
        return NOT_PLACED;
    }
    rc = chorus_tx_commit(tx);
    return rc == CHORUS_OK ? PLACED : rc == CHORUS_ERR_COMMIT_UNKNOWN ? UNKNOWN : NOT_PLACED;
}

static int cmd_place(int argc, char **argv) {
    place_t p;
    int rc = parse_place(argc, argv, &p);
    if (rc)
        return rc == 1 ? 0 : rc;
    bool made_up = !p.key[0];
    if (made_up)
        chorus_uuid_v7(p.key);
    chorus_t *ch = order_handle();
    if (!ch)
        return 1;
    char id[37];
    placed_t r = place(ch, &p, id);
    chorus_destroy(ch);
    switch (r) {
    case PLACED:
        printf("%s\n", id);
        if (made_up)
            fprintf(stderr, "order: placed %s (idempotency key %s)\n", id, p.key);
        return 0;
    case ALREADY_PLACED:
        printf("%s\n", id);
        fprintf(stderr, "order: already placed as %s with key %s; nothing new was placed\n", id,
                p.key);
        return 0;
    case UNKNOWN:
        fprintf(stderr, "order: outcome unknown: PostgreSQL went away during the commit, so "
                        "order %s may or may not exist. It is safe to repeat this command with "
                        "the same key: --key %s\n", id, p.key);
        return 3;
    case NOT_PLACED:
        break;
    }
    fprintf(stderr, "order: the order could not be stored (nothing was placed; key %s)\n", p.key);
    return 1;
}

/* Every tenth order of each kind; the rest complete. */
static const char *scenario(int i, place_t *p) {
    static const char *const customers[] = {"0190f7d2-0000-7000-8000-00000000000a",
                                            "0190f7d2-0000-7000-8000-00000000000b"};
    memset(p, 0, sizeof(*p));
    snprintf(p->customer, sizeof(p->customer), "%s", customers[i % 2]);
    snprintf(p->card, sizeof(p->card), "4242424242424242");
    snprintf(p->address, sizeof(p->address), "%d Harbour Street, Leith", 1 + i);
    p->items[0] = (item_t){.qty = 1 + i % 3, .price = 1500};
    snprintf(p->items[0].sku, sizeof(p->items[0].sku), "SKU-A");
    p->items[1] = (item_t){.qty = 1, .price = 2500};
    snprintf(p->items[1].sku, sizeof(p->items[1].sku), "SKU-B");
    p->nitems = 2;
    switch (i % 10) {
    case 6:
        snprintf(p->card, sizeof(p->card), "4000000000000002"); /* declined */
        return "payment-declined";
    case 7:
        p->items[1] = (item_t){.qty = 1000, .price = 9};
        snprintf(p->items[1].sku, sizeof(p->items[1].sku), "RARE-1");
        return "out-of-stock";
    case 8:
        snprintf(p->address, sizeof(p->address), "Undeliverable Lane %d", i);
        return "shipping-failed";
    case 9:
        snprintf(p->address, sizeof(p->address), "Slow Carrier Road %d", i);
        return "deadline";
    default:
        return "completed";
    }
}

/* Places one order of simulate, repeating it with its key until its
 * outcome is known or @p deadline (monotonic seconds) passes. */
static placed_t place_known(chorus_t *ch, const place_t *p, char id[37], time_t deadline,
                            int *unknowns) {
    for (long wait_ms = 100;; wait_ms = wait_ms < 2000 ? wait_ms * 2 : 2000) {
        placed_t r = place(ch, p, id);
        if (r == PLACED || r == ALREADY_PLACED)
            return r;
        if (r == UNKNOWN)
            ++*unknowns;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec >= deadline)
            return r;
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int cmd_simulate(int argc, char **argv) {
    long n;
    char prefix[160] = "";
    if (argc == 4 && strcmp(argv[2], "--key-prefix") == 0 && *argv[3] && strlen(argv[3]) < 150)
        snprintf(prefix, sizeof(prefix), "%s", argv[3]);
    else if (argc != 2)
        return bad("simulate takes a number from 1 to 100000, then optionally --key-prefix P%s",
                   "");
    if (!svc_parse_long(argv[1], 1, 100000, &n))
        return bad("simulate takes one number from 1 to 100000%s", "");
    if (!prefix[0])
        chorus_uuid_v7(prefix);
    chorus_t *ch = order_handle();
    if (!ch)
        return 1;
    int failed = 0, unknowns = 0, again = 0;
    for (long i = 0; i < n; i++) {
        place_t p;
        const char *kind = scenario((int)i, &p);
        snprintf(p.key, sizeof(p.key), "%s-%ld", prefix, i + 1);
        char id[37];
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int before = unknowns;
        placed_t r = place_known(ch, &p, id, now.tv_sec + 60, &unknowns);
        if (r != PLACED && r != ALREADY_PLACED) {
            failed++;
            fprintf(stderr, "order: order %ld (key %s): %s\n", i + 1, p.key,
                    r == UNKNOWN ? "outcome still unknown after 60 s; repeat with this key"
                                 : "could not be stored for 60 s");
            continue;
        }
        if (unknowns > before)
            again++, fprintf(stderr, "order: order %ld (key %s): the commit's outcome was "
                                     "unknown; repeated with its key: %s\n", i + 1, p.key,
                             r == ALREADY_PLACED ? "it had been placed" : "placed now");
        printf("%s %s\n", id, kind);
    }
    fflush(stdout);
    chorus_destroy(ch);
    if (again)
        fprintf(stderr, "order: %d orders had an unknown commit outcome; each was repeated with "
                        "its idempotency key and placed exactly once\n", again);
    if (failed)
        fprintf(stderr, "order: %d orders could not be stored\n", failed);
    return failed ? 1 : 0;
}

/* order cancel ID [--reason TEXT]: asks the saga to cancel.  Shipping,
 * the pivot, decides (libchorus answers there): before the shipment the
 * order ends cancelled, after it the order completes. */
static int cmd_cancel(int argc, char **argv) {
    const char *reason = "cancelled by request";
    if (argc == 4 && strcmp(argv[2], "--reason") == 0)
        reason = argv[3];
    else if (argc != 2)
        return bad("cancel takes ID [--reason TEXT]%s", "");
    if (!chorus_uuid_valid(argv[1]))
        return bad("'%s' is not an order id (a UUID)", argv[1]);
    if (!*reason || strlen(reason) > SVC_MAX_TEXT)
        return bad("--reason must be 1 to 1000 bytes%s", "");
    chorus_t *ch = order_handle();
    if (!ch)
        return 1;
    chorus_tx_t *tx;
    order_state_t o = {0};
    int64_t v = 0;
    int code = 1;
    chorus_err_t rc = chorus_tx_begin(ch, &tx);
    if (!rc && !(rc = order_load(tx, argv[1], &o, &v)) && v && strcmp(o.status, "placed") == 0 &&
        !(rc = chorus_saga_cancel(tx, o.correlation, argv[1], reason))) {
        rc = chorus_tx_commit(tx); /* frees tx */
        if (!rc)
            printf("order %s: cancellation requested; shipping decides\n", argv[1]);
        code = rc ? (rc == CHORUS_ERR_COMMIT_UNKNOWN ? 3 : 1) : 0;
    } else if (!rc) {
        chorus_tx_rollback(tx);
        if (v == 0)
            fprintf(stderr, "order: no order %s\n", argv[1]);
        else
            printf("order %s is already %s\n", argv[1], o.status);
        code = v == 0 ? 1 : 0;
    } else {
        if (tx)
            chorus_tx_rollback(tx);
    }
    if (rc && rc != CHORUS_ERR_COMMIT_UNKNOWN)
        fprintf(stderr, "order: cancel: %s\n", chorus_strerror(rc));
    chorus_destroy(ch);
    return code;
}

static int with_tx(int (*fn)(chorus_tx_t *)) {
    chorus_t *ch = order_handle();
    if (!ch)
        return 1;
    chorus_tx_t *tx;
    int rc = 1;
    if (chorus_tx_begin(ch, &tx) == CHORUS_OK) {
        rc = fn(tx);
        if (rc == 0 && chorus_tx_commit(tx) != CHORUS_OK)
            rc = 1;
        else if (rc)
            chorus_tx_rollback(tx);
    }
    chorus_destroy(ch);
    return rc;
}

static int list_fn(chorus_tx_t *tx) {
    PGresult *r = NULL;
    if (svc_sql(tx, &r, "SELECT order_id, status, total, items, coalesce(reason, ''), version"
                        " FROM order_summaries ORDER BY placed_at", NULL))
        return 1;
    printf("%-36s  %-9s  %8s  %5s  %3s  %s\n", "order", "status", "total", "items", "v",
           "reason");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-36s  %-9s  %8s  %5s  %3s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 5),
               PQgetvalue(r, i, 4));
    PQclear(r);
    return 0;
}

static int rebuild_fn(chorus_tx_t *tx) {
    long events = 0;
    if (order_rebuild_projection(tx, &events))
        return 1;
    printf("order_summaries rebuilt from %ld events\n", events);
    return 0;
}

int cli_main(int argc, char **argv) {
    const char *cmd = argv[0];
    if (strcmp(cmd, "place") == 0)
        return cmd_place(argc, argv);
    if (strcmp(cmd, "simulate") == 0)
        return cmd_simulate(argc, argv);
    if (strcmp(cmd, "cancel") == 0)
        return cmd_cancel(argc, argv);
    if (strcmp(cmd, "list") == 0 && argc == 1)
        return with_tx(list_fn);
    if (strcmp(cmd, "rebuild-projections") == 0 && argc == 1)
        return with_tx(rebuild_fn);
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    return bad("unknown command or arguments: '%s'", cmd);
}

chorus_err_t order_begin(chorus_t *ch, int i, void *opaque) {
    (void)opaque;
    place_t p;
    scenario(i, &p);
    snprintf(p.key, sizeof(p.key), "simulated-order-%d", i);
    char id[37];
    switch (place(ch, &p, id)) {
    case PLACED:
    case ALREADY_PLACED:
        return CHORUS_OK;
    case UNKNOWN:
        return CHORUS_ERR_COMMIT_UNKNOWN; /* begun again later, with the same key */
    case NOT_PLACED:
        break;
    }
    return CHORUS_ERR_DB;
}
