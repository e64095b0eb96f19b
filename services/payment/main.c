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
 *   payments(payment_id PK, order_id, amount, status, updated_at): one row
 *   per charge or declined attempt
 *   status:  charged --compensation--> refunded,  or declined
 *
 * What this file does not do, because libchorus does it from the saga
 * declaration: check the events' data (their schemas in "events"), run
 * a charge at most once per saga, refuse a charge whose cancellation came
 * first, and call the refund only for a step that charged (a declined
 * order emitted PaymentFailed, so there is nothing to undo) and only once.
 *
 * Commands: "payment [run]" runs the participant; "payment dump" prints one
 * line per payment, "order_id status amount".
 */
#include "participants.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE "payment"
#define DECLINED_CARD "4000000000000002"

static long long decline_above = 100000;

/* One row per charge (or declined attempt): a charge is money moved at
 * the card processor, and nothing in this table stops a second one for an
 * order -- chorus' inbox and step guard do (the simulation's inbox-bypass
 * mutation shows the double charge they prevent). */
static const char *const TABLES[] = {
    "CREATE TABLE IF NOT EXISTS payments ("
    "  payment_id uuid PRIMARY KEY,"
    "  order_id uuid NOT NULL,"
    "  amount bigint NOT NULL DEFAULT 0,"
    "  status text NOT NULL"
    "    CHECK (status IN ('charged', 'declined', 'refunded')),"
    "  updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS payments_order ON payments (order_id)",
};
#define NTABLES (sizeof(TABLES) / sizeof(TABLES[0]))

/* ---- handlers -------------------------------------------------------- */

/* Why the charge is declined, or NULL to charge. */
static const char *decline_reason(const char *card, long long total, char *buf, size_t n) {
    if (strcmp(card, DECLINED_CARD) == 0)
        return "card declined";
    if (total > decline_above) {
        snprintf(buf, n, "amount %lld exceeds the limit of %lld", total, decline_above);
        return buf;
    }
    return NULL;
}

static chorus_outcome_t on_order_placed(chorus_t *ch, chorus_delivery_t *d,
                                        const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    const cJSON *data = chorus_envelope_data(env);
    const char *order_id;
    long long total = 0;
    if (!svc_need_order(d, env, &order_id))
        return svc_reject(SERVICE, env);
    svc_int(data, "total", &total);
    char amount[24], why[128], payment_id[37];
    const char *reason = decline_reason(svc_str(data, "card"), total, why, sizeof(why));
    snprintf(amount, sizeof(amount), "%lld", total);
    chorus_uuid_v7(payment_id);
    if (svc_sql(chorus_delivery_tx(d), NULL,
                "INSERT INTO payments (order_id, payment_id, amount, status)"
                " VALUES ($1, $2, $3, $4)",
                order_id, payment_id, amount, reason ? "declined" : "charged", NULL))
        return CHORUS_RETRY_LATER;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "order_id", order_id);
    if (reason) {
        svc_log(SERVICE, env, "order %s: declined (%s)", order_id, reason);
        cJSON_AddStringToObject(out, "reason", reason);
        return svc_emit(d, "PaymentFailed", order_id, out);
    }
    svc_log(SERVICE, env, "order %s: charged %lld cents (payment %s)", order_id, total,
            payment_id);
    cJSON_AddStringToObject(out, "payment_id", payment_id);
    cJSON_AddNumberToObject(out, "amount", (double)total);
    cJSON_AddItemToObject(out, "items",
                          cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(data, "items"), true));
    cJSON_AddStringToObject(out, "address", svc_str(data, "address"));
    return svc_emit(d, "PaymentSucceeded", order_id, out);
}

/* InsufficientStock, InventoryReleased, OrderCancelled: refund the charge. */
static chorus_outcome_t on_compensate(chorus_t *ch, chorus_delivery_t *d,
                                      const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    const char *order_id;
    if (!svc_need_order(d, env, &order_id))
        return svc_reject(SERVICE, env);
    PGresult *r;
    if (svc_sql(chorus_delivery_tx(d), &r,
                "UPDATE payments SET status = 'refunded', updated_at = now()"
                " WHERE order_id = $1 AND status = 'charged' RETURNING payment_id, amount",
                order_id, NULL))
        return CHORUS_RETRY_LATER;
    if (PQntuples(r) == 0) { /* cannot happen behind chorus' guard; said if it does */
        PQclear(r);
        svc_log(SERVICE, env, "WARNING order %s: no charge to refund", order_id);
        return CHORUS_HANDLED;
    }
    long long amount = 0; /* every charge of the order (one, behind chorus' guard) */
    for (int i = 0; i < PQntuples(r); i++)
        amount += strtoll(PQgetvalue(r, i, 1), NULL, 10);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "order_id", order_id);
    cJSON_AddStringToObject(out, "payment_id", PQgetvalue(r, 0, 0));
    cJSON_AddNumberToObject(out, "amount", (double)amount);
    PQclear(r);
    svc_log(SERVICE, env, "order %s: refunded %lld cents", order_id, amount);
    return svc_emit(d, "PaymentRefunded", order_id, out);
}

/* The participant: its table and handlers (main's "run", the simulation). */
chorus_err_t payment_setup(chorus_t *ch, void *opaque) {
    (void)opaque;
    if (!svc_create_tables(ch, TABLES, NTABLES, NULL, NULL))
        return CHORUS_ERR_DB;
    chorus_err_t rc = chorus_register(ch, "OrderPlaced", on_order_placed, NULL);
    if (!rc)
        rc = chorus_register(ch, "InsufficientStock", on_compensate, NULL);
    if (!rc)
        rc = chorus_register(ch, "InventoryReleased", on_compensate, NULL);
    if (!rc)
        rc = chorus_register(ch, "OrderCancelled", on_compensate, NULL);
    return rc;
}

/* ---- commands -------------------------------------------------------- */

#ifndef SVC_NO_MAIN

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
    int rc = payment_setup(ch, NULL) ? 1 : svc_run(ch);
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
#endif
