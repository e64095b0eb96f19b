/*
 * chorus_sim.h - deterministic simulation of a declared saga.
 *
 * The participants of a saga -- the same chorus_t, the same handlers, the
 * same declaration as in production -- run in one process against an
 * in-memory broker (the exchanges, queues, retry and dead-letter routing
 * chorus declares) and a simulated clock, with their PostgreSQL work done
 * in real transactions on a real server, each participant in a schema of
 * its own.  A seeded scheduler decides, step by step, which participant
 * handles which delivery, and injects faults: reordering, duplicates,
 * delays, crashes at each point of a delivery's life, broker-side loss of
 * unacknowledged deliveries, relay runs, clock skew.  When the sagas have
 * settled, the built-in invariants and the ones declared beside the saga
 * are checked.  The same seed gives the same run, event for event.
 *
 *     static chorus_err_t payment(chorus_t *ch, void *opaque) {
 *         ...create tables, chorus_register() the handlers...
 *     }
 *     static chorus_err_t place(chorus_t *ch, int i, void *opaque) {
 *         ...a transaction that emits saga i's first event...
 *     }
 *     int main(int argc, char **argv) {
 *         char err[512];
 *         chorus_sim_t *sim = chorus_sim_new("sagas/shop.json", err, sizeof(err));
 *         chorus_sim_participant(sim, "payment", payment, NULL);
 *         ...one per service of the saga...
 *         chorus_sim_begin(sim, "order", place, NULL);
 *         chorus_sim_invariants(sim, "sagas/shop.invariants.json", err, sizeof(err));
 *         return chorus_sim_main(sim, argc, argv);   (frees sim)
 *     }
 *
 * See the README, "Simulating a saga".
 */
#ifndef CHORUS_SIM_H
#define CHORUS_SIM_H

#include <chorus/chorus.h>

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct chorus_sim_s chorus_sim_t;

/* Called on a new participant before chorus_start(), at the start of each
 * schedule and after every simulated crash: what the service's main does
 * (tables, chorus_register()).  CHORUS_OK or the schedule stops. */
typedef chorus_err_t chorus_sim_setup_fn(chorus_t *ch, void *opaque);

/* Begins saga number @p i (from 0) on the started participant @p ch: a
 * transaction emitting its first event, as the service's command would.
 * An error is retried later in the schedule (the service may be down). */
typedef chorus_err_t chorus_sim_begin_fn(chorus_t *ch, int i, void *opaque);

/* A simulation of the saga declared in @p saga_file; NULL (with the
 * reason) when it cannot be loaded. */
CHORUS_API chorus_sim_t *chorus_sim_new(const char *saga_file, char *errstr, size_t errstr_size);
CHORUS_API void chorus_sim_destroy(chorus_sim_t *sim);

/* A configuration property for every participant (chorus_conf_set()
 * names), e.g. "store.conninfo".  Checked when a participant is made. */
CHORUS_API chorus_err_t chorus_sim_set(chorus_sim_t *sim, const char *key, const char *value);

/* Each service of the declaration once (chorus_sim_main() refuses to run
 * while one is missing). */
CHORUS_API chorus_err_t chorus_sim_participant(chorus_sim_t *sim, const char *service,
                                               chorus_sim_setup_fn *setup, void *opaque);
/* Who begins the sagas, and how. */
CHORUS_API chorus_err_t chorus_sim_begin(chorus_sim_t *sim, const char *service,
                                         chorus_sim_begin_fn *begin, void *opaque);

/* The declared invariants (JSON, the format in sagas/README.md):
 * CHORUS_ERR_INVALID_CONF with the reason when the file is not one. */
CHORUS_API chorus_err_t chorus_sim_invariants(chorus_sim_t *sim, const char *path, char *errstr,
                                              size_t errstr_size);

/* The command line of scripts/sim (--help lists it): runs the schedules,
 * prints progress, the summary and, for a violation, the seed, the shrunk
 * schedule and the failing saga's trace.  Frees @p sim.  Exit status 0:
 * no violation; 1: a violation; 2: a usage or set-up error. */
CHORUS_API int chorus_sim_main(chorus_sim_t *sim, int argc, char **argv);

#ifdef __cplusplus
}
#endif

#endif
