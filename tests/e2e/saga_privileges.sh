#!/usr/bin/env bash
# Least privilege, as provisioned from the declaration: the payment service's broker user
# may publish under "payment." but not as another service, and its PostgreSQL role can
# reach its own schema but not the order service's.  Each refusal has a positive control,
# so a generic failure cannot pass for a refusal.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
[[ -n ${CHORUS_CTL:-} ]] || { echo "skipped: the broker is not ours to administer"; exit 77; }
e2e_init priv
sr_start order payment
sr_stop
inject() { "$ROOT/build/tests/e2e-inject" "$CHORUS_NAMESPACE" "$1" Ping \
    0190f7d2-0000-7000-8000-000000000001 '{}' >"$SR_OUT/inject-$1.log" 2>&1; }

CHORUS_AMQP_URL=$CHORUS_AMQP_URL_PAYMENT inject payment || fail "payment could not publish its own event"
echo "ok: payment publishes payment.Ping"
if CHORUS_AMQP_URL=$CHORUS_AMQP_URL_PAYMENT inject order; then
    fail "payment published as order"
fi
grep -q "ACCESS_REFUSED" "$SR_OUT/inject-order.log" || { cat "$SR_OUT/inject-order.log" >&2; fail "no ACCESS_REFUSED"; }
echo "ok: payment may not publish order.Ping or declare order's queues (ACCESS_REFUSED)"

own=$(PGOPTIONS='-c client_min_messages=warning' psql -X -A -t -q "$CHORUS_PG_PAYMENT" \
    -c "SELECT count(*) FROM $(sr_schema payment).inbox" 2>&1) || fail "payment cannot read its own schema: $own"
echo "ok: payment reads its own schema"
if other=$(psql -X -A -t -q "$CHORUS_PG_PAYMENT" -c "SELECT count(*) FROM $(sr_schema order).events" 2>&1); then
    fail "payment read the order service's events: $other"
fi
grep -q "permission denied" <<<"$other" || fail "unexpected error: $other"
echo "ok: payment may not read the order schema (permission denied)"
echo "privileges ok"
