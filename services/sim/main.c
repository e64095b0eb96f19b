/*
 * order_fulfillment-sim - the deterministic simulation of the
 * order-fulfillment saga (sagas/order_fulfillment.json) with the sample
 * services' own handlers: scripts/sim runs it.
 *
 * The four participants are the services' setup functions
 * (participants.h): the same tables and handlers their "run" command
 * registers.  Sagas are begun as `order simulate` places orders; the
 * invariants are sagas/order_fulfillment.invariants.json.  Options: see
 * --help (chorus_sim_main).  Environment: CHORUS_SAGA_FILE and
 * CHORUS_SIM_INVARIANTS override the two files; PostgreSQL from libpq's
 * PG* variables or CHORUS_PG.
 */
#include "participants.h"

#include <chorus/chorus_sim.h>

#include <stdio.h>
#include <stdlib.h>

#ifndef SIM_SOURCE_ROOT
#define SIM_SOURCE_ROOT "."
#endif

/* Enough of everything but RARE-1, whose orders run out of stock. */
static char STOCK[] = "SKU-A:100000,SKU-B:100000,RARE-1:5";

static const char *path_or(const char *env, const char *dflt) {
    const char *v = getenv(env);
    return v && *v ? v : dflt;
}

int main(int argc, char **argv) {
    char err[1024];
    const char *saga = path_or("CHORUS_SAGA_FILE", SIM_SOURCE_ROOT "/sagas/order_fulfillment.json");
    const char *inv = path_or("CHORUS_SIM_INVARIANTS",
                              SIM_SOURCE_ROOT "/sagas/order_fulfillment.invariants.json");
    chorus_sim_t *sim = chorus_sim_new(saga, err, sizeof(err));
    if (!sim) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 2;
    }
    if (chorus_sim_participant(sim, "order", order_setup, NULL) ||
        chorus_sim_participant(sim, "payment", payment_setup, NULL) ||
        chorus_sim_participant(sim, "inventory", inventory_setup, STOCK) ||
        chorus_sim_participant(sim, "shipping", shipping_setup, NULL) ||
        chorus_sim_begin(sim, "order", order_begin, NULL)) {
        fprintf(stderr, "%s: cannot declare the participants\n", argv[0]);
        chorus_sim_destroy(sim);
        return 2;
    }
    if (chorus_sim_invariants(sim, inv, err, sizeof(err))) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        chorus_sim_destroy(sim);
        return 2;
    }
    return chorus_sim_main(sim, argc, argv);
}
