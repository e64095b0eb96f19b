/*
 * shipping - the "schedule-shipment" step, the last of the order-fulfillment
 * saga.
 *
 *   inventory --InventoryReserved--> shipping --ShipmentScheduled--> order
 *                                             --ShippingFailed-----> inventory
 *   order --CancellationRequested--> shipping   (answered by libchorus)
 *
 * On InventoryReserved a shipment is scheduled to the order's address.  An
 * address containing "undeliverable" fails (ShippingFailed, which makes
 * inventory release and payment refund).  An address containing "slow"
 * plays a carrier that is down: the delivery is retried later through the
 * TTL retry queues, and meanwhile the saga deadline cancels the order; the
 * next attempt finds the cancellation and refuses.  Both words match in
 * any case.
 *
 * The outage is switchable: SHIPPING_CARRIER_DOWN names the word ("slow"
 * when unset); set to "" the carrier is up for every address.  With the
 * order service away (no deadline), a carrier that stays down exhausts the
 * retries and the delivery lands in the dead-letter queue; restarted with
 * the carrier up, a requeued delivery is scheduled (scripts/dlq, and
 * tests/e2e/saga_dlq.sh).
 *
 * Shipping is the saga's pivot: a scheduled shipment cannot be undone.
 * libchorus, from the declaration's "cancellation", answers a cancellation
 * request here: before the shipment, it records the cancellation, emits
 * ShipmentCancelled (every earlier step then compensates) and refuses a
 * later InventoryReserved; after it, it emits CancellationRefused and the
 * saga completes.  An InventoryReserved arriving after the saga's deadline
 * (metadata.deadline) is refused the same way, never shipped.  It also
 * checks the events' data and runs the step at most once per saga.
 *
 * Table (schema svc_schema("shipping")):
 *
 *   shipments(order_id PK, shipment_id, address, status, updated_at)
 *   status:  scheduled or failed
 *
 * Commands: "shipping [run]" runs the participant; "shipping dump" prints
 * one line per shipment, "order_id status shipment_id".
 */
#include "participants.h"

#include <stdlib.h>
#include <string.h>

#define SERVICE "shipping"

/* The carrier is down for addresses containing this (any case); "" = up. */
static const char *carrier_down = "slow";

static const char *const TABLES[] = {
    "CREATE TABLE IF NOT EXISTS shipments ("
    "  order_id uuid PRIMARY KEY,"
    "  shipment_id uuid,"
    "  address text,"
    "  status text NOT NULL"
    "    CHECK (status IN ('scheduled', 'failed')),"
    "  updated_at timestamptz NOT NULL DEFAULT now())",
};
#define NTABLES (sizeof(TABLES) / sizeof(TABLES[0]))

/* ---- handlers -------------------------------------------------------- */

static chorus_outcome_t on_inventory_reserved(chorus_t *ch, chorus_delivery_t *d,
                                              const chorus_envelope_t *env, void *opaque) {
    (void)ch, (void)opaque;
    const char *order_id, *address = svc_str(chorus_envelope_data(env), "address");
    if (!svc_need_order(d, env, &order_id))
        return svc_reject(SERVICE, env);
    chorus_tx_t *tx = chorus_delivery_tx(d);
    char shipment_id[37];
    bool fail = strcasestr(address, "undeliverable") != NULL;
    if (!fail && *carrier_down && strcasestr(address, carrier_down)) {
        chorus_delivery_set_error(d, "carrier unavailable");
        svc_log(SERVICE, env, "order %s: carrier unavailable, retrying later (attempt %d)",
                order_id, chorus_delivery_attempt(d));
        return CHORUS_RETRY_LATER;
    }
    chorus_uuid_v7(shipment_id);
    /* svc_sql's parameter list ends at NULL: a failed row's shipment_id
     * travels as "" and becomes NULL in SQL. */
    if (svc_sql(tx, NULL,
                "INSERT INTO shipments (order_id, shipment_id, address, status)"
                " VALUES ($1, NULLIF($2, '')::uuid, $3, $4)",
                order_id, fail ? "" : shipment_id, address, fail ? "failed" : "scheduled", NULL))
        return CHORUS_RETRY_LATER;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "order_id", order_id);
    if (fail) {
        svc_log(SERVICE, env, "order %s: address is undeliverable", order_id);
        cJSON_AddStringToObject(out, "reason", "address is undeliverable");
        return svc_emit(d, "ShippingFailed", order_id, out);
    }
    svc_log(SERVICE, env, "order %s: shipment %s scheduled", order_id, shipment_id);
    cJSON_AddStringToObject(out, "shipment_id", shipment_id);
    cJSON_AddStringToObject(out, "address", address);
    return svc_emit(d, "ShipmentScheduled", order_id, out);
}

/* ---- commands -------------------------------------------------------- */

chorus_err_t shipping_setup(chorus_t *ch, void *opaque) {
    (void)opaque;
    if (!svc_create_tables(ch, TABLES, NTABLES, NULL, NULL))
        return CHORUS_ERR_DB;
    return chorus_register(ch, "InventoryReserved", on_inventory_reserved, NULL);
}

#ifndef SVC_NO_MAIN
static int cmd_run(void) {
    const char *down = getenv("SHIPPING_CARRIER_DOWN");
    if (down)
        carrier_down = down;
    if (strlen(carrier_down) > SVC_MAX_TEXT) {
        fprintf(stderr, SERVICE ": SHIPPING_CARRIER_DOWN is longer than %d bytes\n", SVC_MAX_TEXT);
        return 2;
    }
    chorus_t *ch = svc_open(SERVICE);
    if (!ch)
        return 1;
    int rc = shipping_setup(ch, NULL) ? 1 : svc_run(ch);
    chorus_destroy(ch);
    return rc;
}

static int cmd_dump(void) {
    return svc_dump(SERVICE, TABLES, NTABLES,
                    "SELECT order_id, status, coalesce(shipment_id::text, '-') FROM shipments"
                    " ORDER BY updated_at, order_id");
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: shipping [run]    run the participant (until SIGTERM or SIGINT)\n"
            "       shipping dump     print every shipment: order_id status shipment_id\n"
            "       shipping --help\n"
            "\n"
            "Schedules shipments for reserved orders (InventoryReserved); a cancelled\n"
            "saga's are refused (by libchorus).  An address containing\n"
            "\"undeliverable\" fails; one containing the word in SHIPPING_CARRIER_DOWN\n"
            "(any case) is retried later, a carrier outage.\n"
            "\n"
            "Environment:\n"
            "  SHIPPING_CARRIER_DOWN   the carrier is down for addresses containing this\n"
            "                          (default \"slow\"; empty: up for every address)\n"
            "  the CHORUS_* variables of services/common/service.h and libpq's PG*.\n");
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
