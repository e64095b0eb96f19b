/*
 * inventory - the "reserve-stock" step of the order-fulfillment saga.
 *
 *   payment --PaymentSucceeded--> inventory --InventoryReserved--> shipping
 *                                           --InsufficientStock--> payment
 *   ShippingFailed | OrderCancelled
 *                   --> inventory --InventoryReleased---------> payment
 *
 * On PaymentSucceeded every item of the order is taken from stock, or none
 * is: the stock rows are locked first (SELECT ... FOR UPDATE), all
 * quantities are checked, and only then decremented, so a shortage leaves
 * no partial reservation behind.  An unknown SKU has 0 available.  A
 * reservation carries the items and the address forward, for shipping.
 * The compensation events put a reservation's items back.
 *
 * Tables (schema svc_schema("inventory")):
 *
 *   stock(sku PK, on_hand CHECK (on_hand >= 0))
 *   reservations(order_id PK, reservation_id, items jsonb, status, updated_at)
 *
 *   status:  reserved --compensation--> released,  or refused (insufficient stock)
 *
 * What this file does not do, because libchorus does it from the saga
 * declaration: check the events' data (their schemas), reserve at most
 * once per saga, refuse a reservation whose cancellation came first, and
 * call the release only for a step that reserved, once.
 *
 * Commands: "inventory [run]" runs the participant (seeding stock from
 * INVENTORY_SEED="SKU:QTY,..." first when set); "inventory stock set SKU
 * QTY" and "inventory stock list" manage stock.
 */
#include "participants.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE "inventory"

static const char *const TABLES[] = {
    "CREATE TABLE IF NOT EXISTS stock ("
    "  sku text PRIMARY KEY,"
    "  on_hand bigint NOT NULL CHECK (on_hand >= 0))",
    "CREATE TABLE IF NOT EXISTS reservations ("
    "  order_id uuid PRIMARY KEY,"
    "  reservation_id uuid,"
    "  items jsonb,"
    "  status text NOT NULL"
    "    CHECK (status IN ('reserved', 'released', 'refused')),"
    "  updated_at timestamptz NOT NULL DEFAULT now())",
};
#define NTABLES (sizeof(TABLES) / sizeof(TABLES[0]))

/* The items of a JSON array parameter, one row per SKU (a SKU listed twice
 * counts once, with the quantities added). */
#define WANTED(param)                                                         \
    "(SELECT i->>'sku' AS sku, sum((i->>'qty')::bigint) AS qty"               \
    "   FROM jsonb_array_elements(" param "::jsonb) AS i GROUP BY 1 ORDER BY 1)"

/* ---- handlers -------------------------------------------------------- */

typedef struct {
    const char *order_id, *address;
    const cJSON *items;
    char *items_json; /* malloc'd */
} payment_t;

/* Locks the order's SKUs and finds the first one short of stock: 1 (and
 * the shortage in @p data), 0 when everything is there, -1 on error. */
static int find_shortage(chorus_tx_t *tx, const char *items_json, cJSON *data) {
    PGresult *r;
    if (svc_sql(tx, &r,
                "SELECT w.sku, w.qty, coalesce(s.on_hand, 0) FROM " WANTED("$1") " AS w"
                " LEFT JOIN LATERAL (SELECT on_hand FROM stock WHERE sku = w.sku FOR UPDATE) AS s"
                " ON true ORDER BY w.sku",
                items_json, NULL))
        return -1;
    int short_at = -1;
    for (int i = 0; short_at < 0 && i < PQntuples(r); i++)
        if (strtoll(PQgetvalue(r, i, 2), NULL, 10) < strtoll(PQgetvalue(r, i, 1), NULL, 10))
            short_at = i;
    if (short_at >= 0) {
        cJSON_AddStringToObject(data, "sku", PQgetvalue(r, short_at, 0));
        cJSON_AddNumberToObject(data, "requested", strtod(PQgetvalue(r, short_at, 1), NULL));
        cJSON_AddNumberToObject(data, "available", strtod(PQgetvalue(r, short_at, 2), NULL));
    }
    PQclear(r);
    return short_at >= 0;
}

/* Takes the (locked, sufficient) items from stock and records the
 * reservation: CHORUS_OK or the SQL error. */
static chorus_err_t reserve(chorus_tx_t *tx, const payment_t *p, const char *reservation_id) {
    chorus_err_t rc = svc_sql(tx, NULL,
                              "UPDATE stock SET on_hand = stock.on_hand - w.qty"
                              " FROM " WANTED("$1") " AS w WHERE stock.sku = w.sku",
                              p->items_json, NULL);
    return rc ? rc
              : svc_sql(tx, NULL,
                        "INSERT INTO reservations (order_id, reservation_id, items, status)"
                        " VALUES ($1, $2, $3, 'reserved')",
                        p->order_id, reservation_id, p->items_json, NULL);
}

static chorus_outcome_t reserve_or_refuse(chorus_delivery_t *d, const chorus_envelope_t *env,
                                          const payment_t *p) {
    chorus_tx_t *tx = chorus_delivery_tx(d);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "order_id", p->order_id);
    int shortage = find_shortage(tx, p->items_json, data);
    if (shortage < 0 ||
        (shortage && svc_sql(tx, NULL,
                             "INSERT INTO reservations (order_id, items, status)"
                             " VALUES ($1, $2, 'refused')",
                             p->order_id, p->items_json, NULL))) {
        cJSON_Delete(data);
        return CHORUS_RETRY_LATER;
    }
    if (shortage) {
        svc_log(SERVICE, env, "order %s: insufficient stock of %s", p->order_id,
                svc_str(data, "sku"));
        return svc_emit(d, "InsufficientStock", p->order_id, data);
    }
    char reservation_id[37];
    chorus_uuid_v7(reservation_id);
    if (reserve(tx, p, reservation_id)) {
        cJSON_Delete(data);
        return CHORUS_RETRY_LATER;
    }
    svc_log(SERVICE, env, "order %s: reserved (reservation %s)", p->order_id, reservation_id);
    cJSON_AddStringToObject(data, "reservation_id", reservation_id);
    cJSON_AddItemToObject(data, "items", cJSON_Duplicate(p->items, true));
    cJSON_AddStringToObject(data, "address", p->address);
    return svc_emit(d, "InventoryReserved", p->order_id, data);
}

static chorus_outcome_t on_payment_succeeded(chorus_t *ch, chorus_delivery_t *d,
                                             const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    const cJSON *data = chorus_envelope_data(env);
    payment_t p = {.items = cJSON_GetObjectItemCaseSensitive(data, "items"),
                   .address = svc_str(data, "address")};
    if (!svc_need_order(d, env, &p.order_id))
        return svc_reject(SERVICE, env);
    /* the items as validated, printed exactly: never the raw input */
    if (!(p.items_json = chorus_json_print(p.items, NULL)))
        return CHORUS_RETRY_LATER;
    chorus_outcome_t out = reserve_or_refuse(d, env, &p);
    free(p.items_json);
    return out;
}

/* ShippingFailed, OrderCancelled: put the reservation's items back. */
static chorus_outcome_t on_compensate(chorus_t *ch, chorus_delivery_t *d,
                                      const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    const char *order_id;
    if (!svc_need_order(d, env, &order_id))
        return svc_reject(SERVICE, env);
    chorus_tx_t *tx = chorus_delivery_tx(d);
    PGresult *r;
    if (svc_sql(tx, &r,
                "UPDATE reservations SET status = 'released', updated_at = now()"
                " WHERE order_id = $1 AND status = 'reserved' RETURNING reservation_id, items",
                order_id, NULL))
        return CHORUS_RETRY_LATER;
    if (PQntuples(r) != 1) { /* cannot happen behind chorus' guard; said if it does */
        PQclear(r);
        svc_log(SERVICE, env, "WARNING order %s: no reservation to release", order_id);
        return CHORUS_HANDLED;
    }
    /* An upsert: stock comes back even if an operator removed the SKU. */
    chorus_err_t rc = svc_sql(tx, NULL,
                              "INSERT INTO stock (sku, on_hand) SELECT sku, qty FROM " WANTED("$1")
                              " AS w ON CONFLICT (sku) DO UPDATE"
                              " SET on_hand = stock.on_hand + excluded.on_hand",
                              PQgetvalue(r, 0, 1), NULL);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "order_id", order_id);
    cJSON_AddStringToObject(out, "reservation_id", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (rc) {
        cJSON_Delete(out);
        return CHORUS_RETRY_LATER;
    }
    svc_log(SERVICE, env, "order %s: released (after %s)", order_id,
            chorus_envelope_event_type(env));
    return svc_emit(d, "InventoryReleased", order_id, out);
}

/* ---- commands -------------------------------------------------------- */

static bool parse_qty(const char *s, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return *s && !*end && !errno && *out >= 0 && *out <= SVC_MAX_NUMBER;
}

static bool valid_sku(const char *s) { return *s && strlen(s) <= SVC_MAX_SKU; }

/* "SKU:QTY,SKU:QTY" -> upserts in @p tx; false (with a message) when the
 * text is malformed or the SQL fails. */
static bool seed(chorus_tx_t *tx, const char *spec, bool keep) {
    char *copy = strdup(spec), *save = NULL;
    bool ok = copy != NULL;
    for (char *kv = ok ? strtok_r(copy, ",", &save) : NULL; ok && kv;
         kv = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(kv, ':');
        long long qty;
        if (colon)
            *colon = '\0';
        ok = colon && valid_sku(kv) && parse_qty(colon + 1, &qty);
        if (!ok && colon)
            *colon = ':'; /* the whole entry in the message */
        if (!ok)
            fprintf(stderr, SERVICE ": INVENTORY_SEED: '%s' is not SKU:QTY\n", kv);
        else
            ok = !svc_sql(tx, NULL,
                          keep ? "INSERT INTO stock (sku, on_hand) VALUES ($1, $2)"
                                 " ON CONFLICT (sku) DO NOTHING"
                               : "INSERT INTO stock (sku, on_hand) VALUES ($1, $2)"
                                 " ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand",
                          kv, colon + 1, NULL);
    }
    free(copy);
    return ok;
}

/* The simulation's seed: stock where there is none yet (a restarted
 * participant keeps what it reserved). */
static bool seed_once(chorus_tx_t *tx, void *opaque) {
    return !opaque || seed(tx, opaque, true);
}

static chorus_err_t register_handlers(chorus_t *ch) {
    chorus_err_t rc = chorus_register(ch, "PaymentSucceeded", on_payment_succeeded, NULL);
    if (!rc)
        rc = chorus_register(ch, "ShippingFailed", on_compensate, NULL);
    if (!rc)
        rc = chorus_register(ch, "OrderCancelled", on_compensate, NULL);
    return rc;
}

chorus_err_t inventory_setup(chorus_t *ch, void *seed_spec) {
    if (!svc_create_tables(ch, TABLES, NTABLES, seed_once, seed_spec))
        return CHORUS_ERR_DB;
    return register_handlers(ch);
}

#ifndef SVC_NO_MAIN
/* The seed of INVENTORY_SEED, in the transaction that creates the tables. */
static bool seed_from_env(chorus_tx_t *tx, void *opaque) {
    (void)opaque;
    const char *spec = getenv("INVENTORY_SEED");
    return !spec || !*spec || seed(tx, spec, false);
}

/* Creates the tables (an advisory lock keeps instances starting together
 * from racing on CREATE TABLE) and applies INVENTORY_SEED when set. */
static bool prepare(chorus_t *ch, bool with_seed) {
    return svc_create_tables(ch, TABLES, NTABLES,
                             with_seed ? seed_from_env : NULL, NULL);
}


static int cmd_run(void) {
    chorus_t *ch = svc_open(SERVICE);
    if (!ch)
        return 1;
    int rc = prepare(ch, true) && !register_handlers(ch) ? svc_run(ch) : 1;
    chorus_destroy(ch);
    return rc;
}

/* "stock set SKU QTY" (sku and qty checked by the caller) or "stock list". */
static int cmd_stock(const char *sku, const char *qty) {
    chorus_t *ch = svc_open(SERVICE);
    if (!ch || !prepare(ch, false)) {
        chorus_destroy(ch);
        return 1;
    }
    chorus_tx_t *tx;
    PGresult *r = NULL;
    chorus_err_t rc = chorus_tx_begin(ch, &tx);
    if (!rc && sku) {
        rc = svc_sql(tx, NULL,
                     "INSERT INTO stock (sku, on_hand) VALUES ($1, $2)"
                     " ON CONFLICT (sku) DO UPDATE SET on_hand = excluded.on_hand",
                     sku, qty, NULL);
        if (rc)
            chorus_tx_rollback(tx);
        else
            rc = chorus_tx_commit(tx);
    } else if (!rc) {
        rc = svc_sql(tx, &r, "SELECT sku, on_hand FROM stock ORDER BY sku", NULL);
        chorus_tx_rollback(tx);
    }
    for (int i = 0; !rc && r && i < PQntuples(r); i++)
        printf("%s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    PQclear(r);
    chorus_destroy(ch);
    if (rc)
        fprintf(stderr, SERVICE ": stock: %s\n", chorus_strerror(rc));
    return rc ? 1 : 0;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: inventory [run]              run the participant (until SIGTERM or SIGINT)\n"
            "       inventory stock set SKU QTY  set the stock of SKU to QTY (creates it)\n"
            "       inventory stock list         print every SKU: sku on_hand\n"
            "       inventory --help\n"
            "\n"
            "Reserves stock for paid orders (PaymentSucceeded) and releases it\n"
            "(ShippingFailed, OrderCancelled).  Environment: the CHORUS_* variables of\n"
            "services/common/service.h, libpq's PG*, and INVENTORY_SEED=\"SKU:QTY,...\"\n"
            "(stock set at start-up).\n");
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "run";
    long long qty;
    if (argc <= 2 && (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc <= 2 && strcmp(cmd, "run") == 0)
        return cmd_run();
    if (argc == 3 && strcmp(cmd, "stock") == 0 && strcmp(argv[2], "list") == 0)
        return cmd_stock(NULL, NULL);
    if (argc == 5 && strcmp(cmd, "stock") == 0 && strcmp(argv[2], "set") == 0) {
        if (valid_sku(argv[3]) && parse_qty(argv[4], &qty))
            return cmd_stock(argv[3], argv[4]);
        fprintf(stderr, SERVICE ": SKU must be 1 to %d bytes and QTY a whole number >= 0\n",
                SVC_MAX_SKU);
    }
    usage(stderr);
    return 2;
}
#endif
