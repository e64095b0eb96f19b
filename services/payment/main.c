/*
 * payment - the "charge-payment" step of the order-fulfillment saga.
 *
 *   order --OrderPlaced--> payment --PaymentSucceeded--> inventory
 *                                  --PaymentFailed-----> order
 *   InsufficientStock | InventoryReleased | OrderCancelled
 *                     --> payment --PaymentRefunded----> order
 *
 * On OrderPlaced the order is charged, or declined when its total is above
 * PAYMENT_DECLINE_ABOVE cents (default 100000) or the card is the test card
 * 4000000000000002.  A charge carries the items and the address forward,
 * for inventory and shipping.  The three compensation events all mean "undo
 * the charge": a refund.  No card number is stored or logged.
 *
 * Table (schema svc_schema("payment")):
 *
 *   payments(order_id PK, payment_id, amount, status, updated_at)
 *
 *   status:  (none) --OrderPlaced--> charged --compensation--> refunded
 *                   --OrderPlaced--> declined
 *                   --compensation--> cancelled   (the undo came first)
 *
 * Idempotency.  chorus' inbox already skips a redelivered event; the rules
 * below make the *business* effects safe too, whatever the order in which
 * the events arrive.  Every handler first locks the order's row (SELECT
 * ... FOR UPDATE), so two instances serialize on it; when there is no row,
 * a plain INSERT makes a racing second writer fail with a unique violation,
 * which chorus answers by running that handler again, now seeing the row.
 *
 *   - OrderPlaced with a row: charged/declined -> nothing (already decided);
 *     cancelled -> refused: the cancellation overtook the order, nothing is
 *     charged and nothing emitted.
 *   - A compensation refunds only a 'charged' row (UPDATE ... WHERE
 *     status = 'charged', checked by the rows it returns), so a refund is
 *     emitted exactly once and never for money that was not taken.  With no
 *     row it records 'cancelled', so a late OrderPlaced is refused.
 *
 * Commands: "payment [run]" runs the participant; "payment dump" prints one
 * line per payment, "order_id status amount".
 */
#include "service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE "payment"
#define DECLINED_CARD "4000000000000002"

static long long decline_above = 100000;

static const char *const TABLES[] = {
    "CREATE TABLE IF NOT EXISTS payments ("
    "  order_id uuid PRIMARY KEY,"
    "  payment_id uuid,"
    "  amount bigint NOT NULL DEFAULT 0,"
    "  status text NOT NULL"
    "    CHECK (status IN ('charged', 'declined', 'refunded', 'cancelled')),"
    "  updated_at timestamptz NOT NULL DEFAULT now())",
};
#define NTABLES (sizeof(TABLES) / sizeof(TABLES[0]))

/* ---- handlers -------------------------------------------------------- */

typedef struct {
    const char *order_id, *customer_id, *address, *card;
    const cJSON *items;
    long long total;
} order_t;

static bool parse_order(chorus_delivery_t *d, const chorus_envelope_t *env, order_t *o) {
    const cJSON *data = chorus_envelope_data(env);
    return svc_need_order(d, env, &o->order_id) && svc_need_uuid(d, data, "customer_id", &o->customer_id) &&
           svc_need_items(d, data, &o->items) && svc_need_int(d, data, "total", 0, &o->total) &&
           svc_need_str(d, data, "address", &o->address) && svc_need_str(d, data, "card", &o->card);
}

/* Why the charge is declined, or NULL to charge. */
static const char *decline_reason(const order_t *o, char *buf, size_t n) {
    if (strcmp(o->card, DECLINED_CARD) == 0)
        return "card declined";
    if (o->total > decline_above) {
        snprintf(buf, n, "amount %lld exceeds the limit of %lld", o->total, decline_above);
        return buf;
    }
    return NULL;
}

static chorus_outcome_t on_order_placed(chorus_t *ch, chorus_delivery_t *d,
                                        const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    order_t o;
    if (!parse_order(d, env, &o))
        return svc_reject(SERVICE, env);
    chorus_tx_t *tx = chorus_delivery_tx(d);
    char status[16], amount[24], why[128], payment_id[37];
    int found = svc_lock_status(tx, "payments", o.order_id, status);
    if (found < 0)
        return CHORUS_RETRY_LATER;
    if (found) {
        svc_log(SERVICE, env, "order %s: %s", o.order_id,
                strcmp(status, "cancelled") == 0 ? "already cancelled, refusing to charge"
                                                 : "already decided, nothing to do");
        return CHORUS_HANDLED;
    }
    const char *reason = decline_reason(&o, why, sizeof(why));
    snprintf(amount, sizeof(amount), "%lld", o.total);
    chorus_uuid_v7(payment_id);
    /* svc_sql's parameter list ends at NULL: a declined row's payment_id
     * travels as "" and becomes NULL in SQL. */
    if (svc_sql(tx, NULL,
                "INSERT INTO payments (order_id, payment_id, amount, status)"
                " VALUES ($1, NULLIF($2, '')::uuid, $3, $4)",
                o.order_id, reason ? "" : payment_id, amount, reason ? "declined" : "charged",
                NULL))
        return CHORUS_RETRY_LATER;
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "order_id", o.order_id);
    if (reason) {
        svc_log(SERVICE, env, "order %s: declined (%s)", o.order_id, reason);
        cJSON_AddStringToObject(data, "reason", reason);
        return svc_emit(d, "PaymentFailed", o.order_id, data);
    }
    svc_log(SERVICE, env, "order %s: charged %lld cents (payment %s)", o.order_id, o.total,
            payment_id);
    cJSON_AddStringToObject(data, "payment_id", payment_id);
    cJSON_AddNumberToObject(data, "amount", (double)o.total);
    cJSON_AddItemToObject(data, "items", cJSON_Duplicate(o.items, true));
    cJSON_AddStringToObject(data, "address", o.address);
    return svc_emit(d, "PaymentSucceeded", o.order_id, data);
}

/* The data each compensation event must carry besides order_id. */
static bool parse_compensation(chorus_delivery_t *d, const chorus_envelope_t *env) {
    const cJSON *data = chorus_envelope_data(env);
    const char *type = chorus_envelope_event_type(env), *s;
    long long n;
    if (strcmp(type, "InsufficientStock") == 0)
        return svc_need_str(d, data, "sku", &s) && svc_need_int(d, data, "requested", 1, &n) &&
               svc_need_int(d, data, "available", 0, &n);
    if (strcmp(type, "InventoryReleased") == 0)
        return svc_need_uuid(d, data, "reservation_id", &s);
    return svc_need_str(d, data, "reason", &s); /* OrderCancelled */
}

/* InsufficientStock, InventoryReleased, OrderCancelled: refund a charge. */
static chorus_outcome_t on_compensate(chorus_t *ch, chorus_delivery_t *d,
                                      const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    const char *order_id;
    if (!svc_need_order(d, env, &order_id) || !parse_compensation(d, env))
        return svc_reject(SERVICE, env);
    chorus_tx_t *tx = chorus_delivery_tx(d);
    char status[16];
    int found = svc_lock_status(tx, "payments", order_id, status);
    if (found < 0)
        return CHORUS_RETRY_LATER;
    if (!found) {
        svc_log(SERVICE, env, "order %s: not charged yet; recording the cancellation", order_id);
        return svc_sql(tx, NULL, "INSERT INTO payments (order_id, status) VALUES ($1, 'cancelled')",
                       order_id, NULL)
                   ? CHORUS_RETRY_LATER
                   : CHORUS_HANDLED;
    }
    PGresult *r;
    if (svc_sql(tx, &r,
                "UPDATE payments SET status = 'refunded', updated_at = now()"
                " WHERE order_id = $1 AND status = 'charged' RETURNING payment_id, amount",
                order_id, NULL))
        return CHORUS_RETRY_LATER;
    if (PQntuples(r) != 1) {
        PQclear(r);
        svc_log(SERVICE, env, "order %s: payment is %s, nothing to refund", order_id, status);
        return CHORUS_HANDLED;
    }
    long long amount = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "order_id", order_id);
    cJSON_AddStringToObject(data, "payment_id", PQgetvalue(r, 0, 0));
    cJSON_AddNumberToObject(data, "amount", (double)amount);
    PQclear(r);
    svc_log(SERVICE, env, "order %s: refunded %lld cents", order_id, amount);
    return svc_emit(d, "PaymentRefunded", order_id, data);
}

/* ---- commands -------------------------------------------------------- */



static bool read_env(void) {
    const char *v = getenv("PAYMENT_DECLINE_ABOVE");
    if (!v || !*v)
        return true;
    char *end;
    errno = 0;
    decline_above = strtoll(v, &end, 10);
    if (errno || *end || decline_above < 0) {
        fprintf(stderr, SERVICE ": PAYMENT_DECLINE_ABOVE must be a whole number of cents\n");
        return false;
    }
    return true;
}

static int cmd_run(void) {
    if (!read_env())
        return 1;
    chorus_t *ch = svc_open(SERVICE);
    if (!ch)
        return 1;
    int rc = 1;
    if (svc_create_tables(ch, TABLES, NTABLES, NULL, NULL) &&
        !chorus_register(ch, "OrderPlaced", on_order_placed, NULL) &&
        !chorus_register(ch, "InsufficientStock", on_compensate, NULL) &&
        !chorus_register(ch, "InventoryReleased", on_compensate, NULL) &&
        !chorus_register(ch, "OrderCancelled", on_compensate, NULL))
        rc = svc_run(ch, NULL, 0, NULL);
    chorus_destroy(ch);
    return rc;
}

static int cmd_dump(void) {
    return svc_dump(SERVICE, TABLES, NTABLES,
                    "SELECT order_id, status, amount FROM payments ORDER BY updated_at, order_id");
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: payment [run]    run the participant (until SIGTERM or SIGINT)\n"
            "       payment dump     print every payment: order_id status amount\n"
            "       payment --help\n"
            "\n"
            "Charges orders (OrderPlaced) and refunds them (InsufficientStock,\n"
            "InventoryReleased, OrderCancelled).  Environment: the CHORUS_* variables of\n"
            "services/common/service.h, libpq's PG*, and PAYMENT_DECLINE_ABOVE (cents;\n"
            "orders above it are declined; default 100000).\n");
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "run";
    if (argc <= 2 && (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc <= 2 && strcmp(cmd, "run") == 0)
        return cmd_run();
    if (argc == 2 && strcmp(cmd, "dump") == 0)
        return cmd_dump();
    usage(stderr);
    return 2;
}
