#!/usr/bin/env bash
# chaos.sh — the order-fulfillment saga under chaos.  N orders of every outcome are placed
# over a window of W seconds while each service and the saga monitor are SIGKILLed at
# seeded random times (and restarted a moment later), RabbitMQ crashes once (SIGKILL of
# its VM) and PostgreSQL crashes once (SIGKILL of the postmaster and its backends); the
# saga deadline is cut to a few seconds so the outages push sagas past it.  Then, once
# every saga has settled, the invariants are checked by SQL over the services' own tables
# (scripts/lib/chaos.sh, chaos_check), whatever the services say about themselves:
# every saga terminal; no shipment next to a refund, a release or a cancelled order;
# money and stock add up; one shipment per completed order; no effect twice; the
# monitor agrees; no dead letters; no service died by itself.
#
# Environment: CHAOS_SEED (default: random; printed), CHAOS_SAGAS (200), CHAOS_WINDOW_S
# (40), CHAOS_KILLS (kills of each service, 2), CHAOS_DEADLINE_MS (3000),
# CHAOS_SETTLE_S (120), CHAOS_KEEP=1 (keep the logs of a run that passed).  Replay a run with its seed: CHAOS_SEED=S meson test -C build
# chaos, or scripts/chaos --seed S --sagas N.  The servers it crashed are started again
# before it ends; on failure its logs and schemas are kept (the path is printed).
# shellcheck disable=SC1091
source "$(dirname "$0")/../e2e/common.sh"
source "$ROOT/scripts/lib/chaos.sh"

# number NAME VALUE MIN MAX: VALUE, checked.
number() {
    if ! [[ $2 =~ ^[0-9]{1,10}$ ]] || ((10#$2 < $3 || 10#$2 > $4)); then
        echo "chaos: $1 must be a whole number from $3 to $4, got '$2'" >&2
        exit 2
    fi
    printf '%d' "$((10#$2))"
}
SEED=$(number CHAOS_SEED "${CHAOS_SEED:-$(((RANDOM << 15 | RANDOM) % 1000000))}" 0 2147483647)
CH_N=$(number CHAOS_SAGAS "${CHAOS_SAGAS:-200}" 1 2000)
WINDOW_MS=$(($(number CHAOS_WINDOW_S "${CHAOS_WINDOW_S:-40}" 10 600) * 1000))
KILLS=$(number CHAOS_KILLS "${CHAOS_KILLS:-2}" 1 $((WINDOW_MS / 4000)))
CH_DEADLINE_MS=$(number CHAOS_DEADLINE_MS "${CHAOS_DEADLINE_MS:-3000}" 500 600000)
SETTLE_S=$(number CHAOS_SETTLE_S "${CHAOS_SETTLE_S:-120}" 10 3600)
REPLAY="replay: CHAOS_SEED=$SEED CHAOS_SAGAS=$CH_N meson test -C build chaos   (or scripts/chaos --seed $SEED --sagas $CH_N)"

# A carrier that is down keeps a "slow" order's delivery retrying until the deadline's
# cancellation reaches shipping; under outages that takes longer than without, so the
# retries last about 40 s here (1+2+4*10 s) instead of 15 s before dead-lettering.
export CHORUS_CONF="$CHORUS_CONF;retry.max.attempts=13"

tag=chaos_$$
finish() {
    local rc=$?
    trap - EXIT INT TERM
    chaos_cleanup
    if ((rc == 0)); then
        sr_reset >/dev/null 2>&1 || true
        if [[ ${CHAOS_KEEP:-} == 1 ]]; then echo "chaos: logs kept in $SR_OUT"; else rm -rf "$SR_OUT"; fi
    else
        echo "chaos: FAILED (seed $SEED); logs and schemas (prefix ${tag}_) kept in $SR_OUT" >&2
        echo "chaos: $REPLAY" >&2
    fi
    exit "$rc"
}
SR_OUT=$ROOT/build/e2e/$tag
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "chaos: seed $SEED, $CH_N sagas over $((WINDOW_MS / 1000)) s, $KILLS kills of each service," \
    "saga deadline ${CH_DEADLINE_MS} ms"
echo "chaos: $REPLAY"
if [[ -n ${CHORUS_CTL:-} ]]; then
    "$ROOT/scripts/env" status -q || fail "RabbitMQ and PostgreSQL must run first (scripts/env up; scripts/env status)"
else
    echo "chaos: note: the broker is not ours to control; no RabbitMQ or PostgreSQL crash"
fi
chaos_init "$SR_OUT" "${tag}_" "$tag" "$CH_DEADLINE_MS"

RANDOM=$SEED
chaos_plan_orders "$CH_N" "$WINDOW_MS" >"$SR_OUT/plan-orders.txt"
chaos_plan_faults "$WINDOW_MS" "$KILLS" "$SR_OUT/plan-faults.txt"
echo "chaos: the plan: $(cut -d'|' -f3 "$SR_OUT/plan-orders.txt" | sort | uniq -c | awk '{printf "%s%s %s", (NR>1?", ":""), $1, $2}')"
sed 's/^/    /' "$SR_OUT/plan-faults.txt"

sr_start
for s in "${SR_SERVICES[@]}"; do CH_STATE[$s]=up CH_STARTS[$s]=1 CH_LOGOFF[$s]=0; done

t_setup=$SECONDS
chaos_clock_start
chaos_placer $((WINDOW_MS + 60000)) <"$SR_OUT/plan-orders.txt" >"$SR_OUT/orders.txt" &
CH_PLACER=$!
chaos_run "$SR_OUT/plan-faults.txt" "$WINDOW_MS" || fail "the chaos did not end ($REPLAY)"
t_faults=$SECONDS
chaos_settle "$(wc -l <"$SR_OUT/orders.txt")" "$SETTLE_S" || CH_VIOLATIONS=$((CH_VIOLATIONS + 1))
t_settle=$SECONDS

echo "chaos: invariants"
chaos_check "$SR_OUT/orders.txt" "$CH_N"
# The e2e suite's own report, on the orders whose outcome is certain (those meant to
# fail); an order meant to complete may have been cancelled by the deadline.
awk '$2 != "completed"' "$SR_OUT/orders.txt" >"$SR_OUT/certain.txt"
if [[ -s $SR_OUT/certain.txt ]]; then
    echo "chaos: sr_report"
    sr_report "$SR_OUT/certain.txt" || CH_VIOLATIONS=$((CH_VIOLATIONS + 1))
fi
if ! sr_stop; then
    echo "  [FAIL] a service did not stop cleanly"
    CH_VIOLATIONS=$((CH_VIOLATIONS + 1))
fi
chaos_summary "$SEED" "$CH_N"
echo "chaos: ${SECONDS}s: set-up ${t_setup}s, faults $((t_faults - t_setup))s, settling $((t_settle - t_faults))s," \
    "checks and stop $((SECONDS - t_settle))s"
((CH_VIOLATIONS == 0)) || fail "$CH_VIOLATIONS invariants violated (seed $SEED)"
echo "chaos ok"
