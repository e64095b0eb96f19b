#!/usr/bin/env bash
# Invalid declarations stop start-up with a message naming the file, the step and the
# problem: a middle step without compensation; an event nobody produces; a failure event
# nobody handles; a service whose handlers differ from its role; a compensation that can
# run around the pivot (the deadline cancelling while shipping ships, or the pivot's own
# success undoing an earlier step).  Each is the real
# declaration with one change (jq), given to a real service process.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
e2e_init decl
real=$ROOT/sagas/order_fulfillment.json
dir=$SR_OUT/decl
mkdir -p "$dir"

# refuses SERVICE FILE PHRASE...: the service exits non-zero and says every phrase.
refuses() {
    local svc=$1 file=$2 log rc=0
    shift 2
    log=$dir/$(basename "$file" .json).$svc.log
    CHORUS_SAGA_FILE=$file timeout 30 "$(sr_bin "$svc")" run >"$log" 2>&1 || rc=$?
    ((rc != 0)) || fail "$svc started with $(basename "$file")"
    ((rc != 124)) || fail "$svc hung with $(basename "$file")"
    for phrase in "$@"; do
        grep -qF -- "$phrase" "$log" || { cat "$log" >&2; fail "$(basename "$file"): no '$phrase' in the refusal"; }
    done
    echo "ok: $svc refused $(basename "$file"): $(grep -m1 'refusing to start' "$log" | sed 's/.*refusing to start: //')"
}

jq '(.steps[] | select(.name == "reserve-stock")) |= del(.compensation)' "$real" >"$dir/middle_step_without_compensation.json"
refuses payment "$dir/middle_step_without_compensation.json" \
    "middle_step_without_compensation.json" "step 'reserve-stock'" "has no compensation"

jq '(.steps[] | select(.name == "charge-payment")).trigger = "OrderSubmitted"' "$real" >"$dir/event_nobody_produces.json"
refuses inventory "$dir/event_nobody_produces.json" \
    "event_nobody_produces.json" "step 'charge-payment'" "'OrderSubmitted'" "produced by nobody"

jq '(.steps[] | select(.name == "reserve-stock")).failures += ["WarehouseFlooded"]' "$real" >"$dir/failure_nobody_handles.json"
refuses shipping "$dir/failure_nobody_handles.json" \
    "failure_nobody_handles.json" "step 'reserve-stock'" "'WarehouseFlooded'" "handled by nobody"

jq '(.steps[] | select(.name == "charge-payment")).compensation.on += ["ShippingFailed"]' "$real" >"$dir/handlers_differ.json"
refuses payment "$dir/handlers_differ.json" \
    "service 'payment' has no handler for ShippingFailed" "compensation of step 'charge-payment'"

# the race issue 9 was about, as a declaration: the deadline cancels the order while the
# pivot may be shipping; and a compensation that follows the pivot's success
jq 'del(.cancellation, .events.CancellationRequested, .events.ShipmentCancelled, .events.CancellationRefused)
    | .deadline.emits = "OrderCancelled"
    | (.steps[] | select(.name == "place-order")).compensation.on -= ["ShipmentCancelled"]' \
    "$real" >"$dir/deadline_around_pivot.json"
refuses order "$dir/deadline_around_pivot.json" \
    "compensation on 'OrderCancelled' can undo it around the pivot step 'schedule-shipment'" \
    "comes from the deadline"
jq '(.steps[] | select(.name == "reserve-stock")).compensation.on += ["ShipmentScheduled"]' \
    "$real" >"$dir/undo_after_pivot.json"
refuses inventory "$dir/undo_after_pivot.json" \
    "compensation on 'ShipmentScheduled' can undo it around the pivot" "the success of step 'schedule-shipment'"

# and the real declaration is accepted by every service
for svc in order payment inventory shipping monitor; do
    sr_start "$svc"
done
sr_stop || fail "a service did not stop cleanly"
echo "declaration checks ok"
