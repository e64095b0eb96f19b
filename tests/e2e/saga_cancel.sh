#!/usr/bin/env bash
# Pivot-safe cancellation end to end: shipping, the pivot, decides every cancellation.
#   1. the deadline passes while InventoryReserved waits in the queue of a shipping that is
#      down (the race that used to end with a shipment next to a refunded order): when
#      shipping comes back, the late InventoryReserved is past metadata.deadline and is
#      refused; the saga compensates, nothing ships;
#   2. `order cancel` of an order already shipped: refused (CancellationRefused), the order
#      completes, nothing is compensated;
#   3. `order cancel` while the carrier is down (retrying): accepted (ShipmentCancelled),
#      refunded and released, the later retry is refused.
# Every saga ends consistent (sr_report), and no step is both run and compensated.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
DEADLINE_MS=3000
e2e_init cancel
# a copy of the declaration with a short deadline
export CHORUS_SAGA_FILE=$SR_OUT/order_fulfillment.json
python3 - "$ROOT/sagas/order_fulfillment.json" "$CHORUS_SAGA_FILE" "$DEADLINE_MS" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["deadline"]["ms"] = int(sys.argv[3])
json.dump(d, open(sys.argv[2], "w"), indent=2)
PY
o=$(sr_schema order) p=$(sr_schema payment) i=$(sr_schema inventory) s=$(sr_schema shipping)
place() { "$(sr_bin order)" place --customer 0190f7d2-0000-7000-8000-00000000000c --item SKU-A:2:700 --address "$1"; }
status() { sr_psql "SELECT status FROM $o.order_summaries WHERE order_id = '$1'"; }
wait_for() { # SQL WANT TIMEOUT_S
    local got t
    for ((t = 0; t < $3 * 10; t++)); do
        got=$(sr_psql "$1")
        [[ $got == "$2" ]] && return 0
        sleep 0.1
    done
    echo "waited ${3}s for '$2', got '$got': $1" >&2
    return 1
}
guard() { # SCHEMA ORDER STEP: the step's guard state in that participant
    sr_psql "SELECT g.state FROM $1.saga_guards g JOIN $o.events e ON e.aggregate_id = '$2'
             AND e.version = 1 AND g.correlation_id = (e.metadata->>'correlation_id')::uuid
             WHERE g.step = '$3'"
}
: >"$SR_OUT/orders.txt"

# --- 1: the deadline overtakes a reservation waiting at a stopped pivot
sr_start
sr_stop shipping
late=$(place "1 Harbour Street")
printf '%s deadline\n' "$late" >>"$SR_OUT/orders.txt"
wait_for "SELECT count(*) FROM $i.reservations WHERE order_id = '$late' AND status = 'reserved'" 1 20
sleep $((DEADLINE_MS / 1000 + 1)) # past the deadline, with InventoryReserved queued at shipping
sr_start shipping
wait_for "SELECT status FROM $o.order_summaries WHERE order_id = '$late'" cancelled 30
wait_for "SELECT status FROM $p.payments WHERE order_id = '$late'" refunded 30
wait_for "SELECT status FROM $i.reservations WHERE order_id = '$late'" released 30
expect_eq "late order: shipments" "$(sr_psql "SELECT count(*) FROM $s.shipments WHERE order_id = '$late'")" 0
expect_eq "late order: shipping's guard" "$(guard "$s" "$late" schedule-shipment)" cancelled
expect_eq "late order: ShipmentCancelled emitted once" \
    "$(sr_psql "SELECT count(*) FROM $s.outbox WHERE aggregate_id = '$late' AND routing_key = 'shipping.ShipmentCancelled'")" 1

# --- 2: cancelling an order that shipped: refused, it completes
shipped=$(place "2 Quay Road")
printf '%s completed\n' "$shipped" >>"$SR_OUT/orders.txt"
wait_for "SELECT status FROM $o.order_summaries WHERE order_id = '$shipped'" completed 20
out=$("$(sr_bin order)" cancel "$shipped")
expect_eq "cancel of a completed order" "$out" "order $shipped is already completed"
# a request that reaches shipping after the shipment (as one racing the ShipmentScheduled
# would): sent as the order service's broker user, in the order's saga
shipped2=$(place "3 Quay Road")
printf '%s completed\n' "$shipped2" >>"$SR_OUT/orders.txt"
wait_for "SELECT count(*) FROM $s.shipments WHERE order_id = '$shipped2' AND status = 'scheduled'" 1 20
corr=$(sr_psql "SELECT metadata->>'correlation_id' FROM $o.events WHERE aggregate_id = '$shipped2' AND version = 1")
CHORUS_AMQP_URL=$CHORUS_AMQP_URL_ORDER "$ROOT/build/tests/e2e-inject" "$CHORUS_NAMESPACE" order \
    CancellationRequested "$shipped2" '{"reason":"customer changed their mind"}' "$corr"
wait_for "SELECT count(*) FROM $s.outbox WHERE aggregate_id = '$shipped2' AND routing_key = 'shipping.CancellationRefused'" 1 20
expect_eq "shipped order: payment" "$(sr_psql "SELECT status FROM $p.payments WHERE order_id = '$shipped2'")" charged
expect_eq "shipped order: reservation" "$(sr_psql "SELECT status FROM $i.reservations WHERE order_id = '$shipped2'")" reserved
expect_eq "shipped order: shipping's guard" "$(guard "$s" "$shipped2" schedule-shipment)" kept

# --- 3: cancelling while the carrier is down: accepted, compensated, the retry refused
slow=$(place "4 Slow Lane")
printf '%s deadline\n' "$slow" >>"$SR_OUT/orders.txt"
wait_for "SELECT count(*) FROM $i.reservations WHERE order_id = '$slow' AND status = 'reserved'" 1 20
"$(sr_bin order)" cancel "$slow" >/dev/null
wait_for "SELECT status FROM $o.order_summaries WHERE order_id = '$slow'" cancelled 20
wait_for "SELECT status FROM $p.payments WHERE order_id = '$slow'" refunded 20
wait_for "SELECT status FROM $i.reservations WHERE order_id = '$slow'" released 20
expect_eq "slow order: reason" "$(sr_psql "SELECT reason FROM $o.order_summaries WHERE order_id = '$slow'")" \
    "cancelled before shipping: cancelled by request"
# the carrier's retry comes back (1 s, 2 s, ...) and is refused, never shipped
wait_for "$(printf "SELECT g.state FROM %s.saga_guards g JOIN %s.events e ON e.aggregate_id = '%s' AND e.version = 1 AND g.correlation_id = (e.metadata->>'correlation_id')::uuid WHERE g.step = 'schedule-shipment'" "$s" "$o" "$slow")" refused 20
expect_eq "slow order: shipments" "$(sr_psql "SELECT count(*) FROM $s.shipments WHERE order_id = '$slow'")" 0

sr_wait 4 60
sr_report "$SR_OUT/orders.txt" || fail "the services disagree"
expect_eq "timers left pending" "$(sr_psql "SELECT count(*) FROM $o.timers WHERE state = 'pending'")" 0
sr_dlq_empty || fail "dead letters"
sr_stop
echo "pivot-safe cancellation ok"
