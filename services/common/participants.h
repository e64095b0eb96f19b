/*
 * participants.h - the sample services as participants: what each service's
 * "run" command sets up on its chorus_t before chorus_start(), callable
 * from the deterministic simulation too (services/sim), so that the
 * handlers simulated are the very ones deployed.
 */
#ifndef CHORUS_SAMPLE_PARTICIPANTS_H
#define CHORUS_SAMPLE_PARTICIPANTS_H

#include "service.h"

/* Tables and handlers (chorus_sim_setup_fn).  @p opaque is unused except
 * for inventory: the stock to seed where none is yet ("SKU:QTY,..."). */
chorus_err_t order_setup(chorus_t *ch, void *opaque);
chorus_err_t payment_setup(chorus_t *ch, void *opaque);
chorus_err_t inventory_setup(chorus_t *ch, void *seed_spec);
chorus_err_t shipping_setup(chorus_t *ch, void *opaque);

/* Places order @p i of `order simulate`'s mix (chorus_sim_begin_fn): every
 * tenth of each kind declined, out of stock, undeliverable, slow to ship. */
chorus_err_t order_begin(chorus_t *ch, int i, void *opaque);

#endif
