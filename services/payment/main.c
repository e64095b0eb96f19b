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
#define MAX_NUMBER 1000000000000000LL /* 10^13 currency units: exact in a double */
#define MAX_ITEMS 100
#define MAX_SKU 64
#define MAX_TEXT 1000

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

/* ---- input checks: each records on the delivery what is wrong ---------- */

static bool need_str(chorus_delivery_t *d, const cJSON *data, const char *key, const char **out) {
    *out = svc_str(data, key);
    if (*out && **out && strlen(*out) <= MAX_TEXT)
        return true;
    chorus_delivery_set_error(d, "data.%s must be a non-empty string of at most %d bytes", key,
                              MAX_TEXT);
    return false;
}

static bool need_uuid(chorus_delivery_t *d, const cJSON *data, const char *key, const char **out) {
    *out = svc_str(data, key);
    if (*out && chorus_uuid_valid(*out))
        return true;
    chorus_delivery_set_error(d, "data.%s must be a UUID", key);
    return false;
}

/* A JSON number holding a whole value in [min, MAX_NUMBER]. */
static bool whole(const cJSON *v, long long min) {
    return cJSON_IsNumber(v) && v->valuedouble >= (double)min && v->valuedouble <= MAX_NUMBER &&
           v->valuedouble == (double)(long long)v->valuedouble;
}

/* An integer in [min, MAX_NUMBER]; whole() checks the range before
 * svc_int() converts, so a huge number is refused rather than overflowing. */
static bool need_int(chorus_delivery_t *d, const cJSON *data, const char *key, long long min,
                     long long *out) {
    if (whole(cJSON_GetObjectItemCaseSensitive(data, key), min) && svc_int(data, key, out))
        return true;
    chorus_delivery_set_error(d, "data.%s must be an integer in [%lld, %lld]", key, min,
                              MAX_NUMBER);
    return false;
}

/* items: [{sku, qty >= 1, price >= 0}], 1 to MAX_ITEMS of them. */
static bool need_items(chorus_delivery_t *d, const cJSON *data, const cJSON **out) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(data, "items");
    int n = cJSON_IsArray(items) ? cJSON_GetArraySize(items) : 0;
    if (n < 1 || n > MAX_ITEMS) {
        chorus_delivery_set_error(d, "data.items must be an array of 1 to %d items", MAX_ITEMS);
        return false;
    }
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, items) {
        const char *sku = svc_str(it, "sku");
        const cJSON *qty = cJSON_GetObjectItemCaseSensitive(it, "qty");
        const cJSON *price = cJSON_GetObjectItemCaseSensitive(it, "price");
        if (!sku || !*sku || strlen(sku) > MAX_SKU || !whole(qty, 1) || !whole(price, 0)) {
            chorus_delivery_set_error(d, "data.items[%d] needs sku (1 to %d bytes), qty (integer "
                                         ">= 1) and price (integer cents >= 0)",
                                      i, MAX_SKU);
            return false;
        }
        i++;
    }
    *out = items;
    return true;
}

/* The contract: the aggregate of every saga event is the order. */
static bool need_order(chorus_delivery_t *d, const chorus_envelope_t *env, const char **order_id) {
    if (!need_uuid(d, chorus_envelope_data(env), "order_id", order_id))
        return false;
    if (strcmp(*order_id, chorus_envelope_aggregate_id(env)) == 0)
        return true;
    chorus_delivery_set_error(d, "data.order_id differs from the envelope's aggregate_id");
    return false;
}

static chorus_outcome_t reject(const chorus_envelope_t *env) {
    svc_log(SERVICE, env, "rejected: malformed data (see the dead-letter reason)");
    return CHORUS_REJECT;
}

/* ---- SQL and events -------------------------------------------------- */

/* Locks the order's row: 1 and its status in @p status, 0 when there is
 * none, -1 on an SQL error (chorus then retries or reruns the handler). */
static int lock_row(chorus_tx_t *tx, const char *order_id, char status[16]) {
    PGresult *r;
    if (svc_sql(tx, &r, "SELECT status FROM payments WHERE order_id = $1 FOR UPDATE", order_id,
                NULL))
        return -1;
    int found = PQntuples(r) == 1;
    if (found)
        snprintf(status, 16, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return found;
}

/* Emits @p type (data taken) for the order; a failure rolls the delivery
 * back and retries it. */
static chorus_outcome_t emit(chorus_delivery_t *d, const char *type, const char *order_id,
                             cJSON *data) {
    chorus_error_t *err = NULL;
    chorus_envelope_t *ev = data ? chorus_envelope_new_json(type, order_id, 1, data, &err) : NULL;
    chorus_err_t rc = ev ? chorus_emit(d, ev) : err ? chorus_error_code(err) : CHORUS_ERR_NOMEM;
    if (rc == CHORUS_OK)
        return CHORUS_HANDLED;
    chorus_delivery_set_error(d, "cannot emit %s: %s", type,
                              err ? chorus_error_string(err) : chorus_strerror(rc));
    chorus_error_destroy(err);
    return CHORUS_RETRY_LATER;
}

/* ---- handlers -------------------------------------------------------- */

typedef struct {
    const char *order_id, *customer_id, *address, *card;
    const cJSON *items;
    long long total;
} order_t;

static bool parse_order(chorus_delivery_t *d, const chorus_envelope_t *env, order_t *o) {
    const cJSON *data = chorus_envelope_data(env);
    return need_order(d, env, &o->order_id) && need_uuid(d, data, "customer_id", &o->customer_id) &&
           need_items(d, data, &o->items) && need_int(d, data, "total", 0, &o->total) &&
           need_str(d, data, "address", &o->address) && need_str(d, data, "card", &o->card);
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
        return reject(env);
    chorus_tx_t *tx = chorus_delivery_tx(d);
    char status[16], amount[24], why[128], payment_id[37];
    int found = lock_row(tx, o.order_id, status);
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
        return emit(d, "PaymentFailed", o.order_id, data);
    }
    svc_log(SERVICE, env, "order %s: charged %lld cents (payment %s)", o.order_id, o.total,
            payment_id);
    cJSON_AddStringToObject(data, "payment_id", payment_id);
    cJSON_AddNumberToObject(data, "amount", (double)o.total);
    cJSON_AddItemToObject(data, "items", cJSON_Duplicate(o.items, true));
    cJSON_AddStringToObject(data, "address", o.address);
    return emit(d, "PaymentSucceeded", o.order_id, data);
}

/* The data each compensation event must carry besides order_id. */
static bool parse_compensation(chorus_delivery_t *d, const chorus_envelope_t *env) {
    const cJSON *data = chorus_envelope_data(env);
    const char *type = chorus_envelope_event_type(env), *s;
    long long n;
    if (strcmp(type, "InsufficientStock") == 0)
        return need_str(d, data, "sku", &s) && need_int(d, data, "requested", 1, &n) &&
               need_int(d, data, "available", 0, &n);
    if (strcmp(type, "InventoryReleased") == 0)
        return need_uuid(d, data, "reservation_id", &s);
    return need_str(d, data, "reason", &s); /* OrderCancelled */
}

/* InsufficientStock, InventoryReleased, OrderCancelled: refund a charge. */
static chorus_outcome_t on_compensate(chorus_t *ch, chorus_delivery_t *d,
                                      const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    const char *order_id;
    if (!need_order(d, env, &order_id) || !parse_compensation(d, env))
        return reject(env);
    chorus_tx_t *tx = chorus_delivery_tx(d);
    char status[16];
    int found = lock_row(tx, order_id, status);
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
    return emit(d, "PaymentRefunded", order_id, data);
}

/* ---- commands -------------------------------------------------------- */

static chorus_t *open_participant(void) {
    char err[512];
    chorus_conf_t *conf = svc_conf(SERVICE, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, SERVICE ": configuration: %s\n", err);
        return NULL;
    }
    return svc_new(conf);
}

/* Creates the tables; an advisory lock keeps instances starting together
 * from racing on CREATE TABLE. */
static bool create_tables(chorus_t *ch) {
    chorus_tx_t *tx;
    chorus_err_t rc = chorus_tx_begin(ch, &tx);
    if (rc) {
        fprintf(stderr, SERVICE ": PostgreSQL: %s\n", chorus_strerror(rc));
        return false;
    }
    rc = svc_sql(tx, NULL, "SELECT pg_advisory_xact_lock(hashtext($1))", svc_schema(SERVICE),
                 NULL);
    for (size_t i = 0; !rc && i < sizeof(TABLES) / sizeof(TABLES[0]); i++)
        rc = svc_sql(tx, NULL, TABLES[i], NULL);
    if (rc) {
        chorus_tx_rollback(tx);
    } else {
        rc = chorus_tx_commit(tx);
    }
    if (rc)
        fprintf(stderr, SERVICE ": cannot create the tables: %s\n", chorus_strerror(rc));
    return rc == CHORUS_OK;
}

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
    chorus_t *ch = open_participant();
    if (!ch)
        return 1;
    int rc = 1;
    if (create_tables(ch) && !chorus_register(ch, "OrderPlaced", on_order_placed, NULL) &&
        !chorus_register(ch, "InsufficientStock", on_compensate, NULL) &&
        !chorus_register(ch, "InventoryReleased", on_compensate, NULL) &&
        !chorus_register(ch, "OrderCancelled", on_compensate, NULL))
        rc = svc_run(ch, NULL, 0, NULL);
    chorus_destroy(ch);
    return rc;
}

static int cmd_dump(void) {
    chorus_t *ch = open_participant();
    if (!ch || !create_tables(ch)) {
        chorus_destroy(ch);
        return 1;
    }
    chorus_tx_t *tx;
    PGresult *r = NULL;
    chorus_err_t rc = chorus_tx_begin(ch, &tx);
    if (!rc) {
        rc = svc_sql(tx, &r,
                     "SELECT order_id, status, amount FROM payments ORDER BY updated_at, order_id",
                     NULL);
        chorus_tx_rollback(tx);
    }
    for (int i = 0; !rc && i < PQntuples(r); i++)
        printf("%s %s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    chorus_destroy(ch);
    if (rc)
        fprintf(stderr, SERVICE ": dump failed: %s\n", chorus_strerror(rc));
    return rc ? 1 : 0;
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
