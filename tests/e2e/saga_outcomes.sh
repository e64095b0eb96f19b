#!/usr/bin/env bash
# Each outcome end to end, asserting every service's final state: ten orders, one cycle of
# the demo's mix (six complete; one each is declined, out of stock, fails shipping, and
# outlives the deadline).  Then the projection is rebuilt from the event store and must
# come out the same.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
e2e_init outcomes
sr_start
"$(sr_bin order)" simulate 10 >"$SR_OUT/orders.txt"
sr_wait 10 90
sr_report "$SR_OUT/orders.txt" || fail "the services disagree"

o=$(sr_schema order) p=$(sr_schema payment) i=$(sr_schema inventory) s=$(sr_schema shipping)
m=$(sr_schema monitor)
while read -r id scenario; do
    got=$(sr_psql "SELECT os.status, coalesce(py.status, '-'), coalesce(r.status, '-'),
                          coalesce(sh.status, '-'), coalesce(si.state, '-')
                   FROM $o.order_summaries os
                   LEFT JOIN $p.payments py USING (order_id)
                   LEFT JOIN $i.reservations r USING (order_id)
                   LEFT JOIN $s.shipments sh USING (order_id)
                   LEFT JOIN $m.saga_instances si ON si.aggregate_id = os.order_id
                   WHERE os.order_id = '$id'")
    case $scenario in
        completed) want='completed|charged|reserved|scheduled|completed' ;;
        # steps that never ran keep no row of their own (chorus' guard remembers the
        # cancellation in saga_guards, below)
        payment-declined) want='cancelled|declined|-|-|cancelled' ;;
        out-of-stock) want='cancelled|refunded|refused|-|cancelled' ;;
        shipping-failed) want='cancelled|refunded|released|failed|cancelled' ;;
        # the carrier never answered: shipping, the pivot, accepted the cancellation
        deadline) want='cancelled|refunded|released|-|cancelled' ;;
        *) fail "unknown scenario $scenario" ;;
    esac
    expect_eq "$scenario order (order|payment|inventory|shipping|monitor)" "$got" "$want"
done <"$SR_OUT/orders.txt"

late=$(awk '$2 == "deadline" {print $1}' "$SR_OUT/orders.txt")
reason=$(sr_psql "SELECT reason FROM $o.order_summaries WHERE order_id = '$late'")
# the deadline timer's request, or the pivot refusing a retry that came after the deadline
[[ $reason == "cancelled before shipping: deadline passed" ||
   $reason == "cancelled before shipping: the deadline passed before the pivot ran" ]] ||
    fail "deadline order's reason: '$reason'"
echo "ok: deadline order's reason: $reason"
# the guards: what each participant knows of the late order's steps
expect_eq "shipping's guard of the late order" \
    "$(sr_psql "SELECT state FROM $s.saga_guards WHERE step = 'schedule-shipment' AND correlation_id =
                (SELECT correlation_id FROM $m.saga_instances WHERE aggregate_id = '$late')")" cancelled
declined=$(awk '$2 == "payment-declined" {print $1}' "$SR_OUT/orders.txt")
expect_eq "payment's guard of the declined order" \
    "$(sr_psql "SELECT state FROM $p.saga_guards WHERE step = 'charge-payment' AND correlation_id =
                (SELECT correlation_id FROM $m.saga_instances WHERE aggregate_id = '$declined')")" failed
expect_eq "inventory's guard of the declined order" \
    "$(sr_psql "SELECT state FROM $i.saga_guards WHERE step = 'reserve-stock' AND correlation_id =
                (SELECT correlation_id FROM $m.saga_instances WHERE aggregate_id = '$declined')")" cancelled
expect_eq "timers left pending at the order service" \
    "$(sr_psql "SELECT count(*) FROM $o.timers WHERE state = 'pending'")" 0
sr_dlq_empty || fail "dead letters"
# scripts/saga status: the generic monitor's view of one order of each scenario, its state
# and each declared step's
while read -r id scenario; do
    case $scenario in
        completed) want='completed: place-order=done,charge-payment=done,reserve-stock=done,schedule-shipment=done' ;;
        payment-declined) want='cancelled: place-order=compensated,charge-payment=failed,reserve-stock=not reached,schedule-shipment=not reached' ;;
        out-of-stock) want='cancelled: place-order=compensated,charge-payment=compensated,reserve-stock=failed,schedule-shipment=not reached' ;;
        shipping-failed) want='cancelled: place-order=compensated,charge-payment=compensated,reserve-stock=compensated,schedule-shipment=failed' ;;
        deadline) want='cancelled: place-order=compensated,charge-payment=compensated,reserve-stock=compensated,schedule-shipment=cancelled (accepted)' ;;
    esac
    "$ROOT/scripts/saga" status "$id" >"$SR_OUT/status-$scenario.txt" || fail "scripts/saga status $id"
    got="$(sed -n 's/^  state //p' "$SR_OUT/status-$scenario.txt"): $(
        sed -n 's/^    [0-9]*\. \([^ ]*\) *[^ ]* *\(.*\)$/\1=\2/p' "$SR_OUT/status-$scenario.txt" |
            sed 's/  (the pivot)$//' | paste -sd,)"
    expect_eq "scripts/saga status of a $scenario order" "$got" "$want"
done < <(sort -u -k2,2 "$SR_OUT/orders.txt")

before=$(sr_psql "SELECT md5(string_agg(order_id || status || total || items || version, ',' ORDER BY order_id)) FROM $o.order_summaries")
sr_stop order
"$(sr_bin order)" rebuild-projections
after=$(sr_psql "SELECT md5(string_agg(order_id || status || total || items || version, ',' ORDER BY order_id)) FROM $o.order_summaries")
expect_eq "order_summaries rebuilt from the event store" "$after" "$before"
# PlaceOrder from the command line: bad input is refused with a clear error, nothing stored
count_before=$(sr_psql "SELECT count(*) FROM $o.events")
bad_place() {
    local want=$1 rc=0 err
    shift
    err=$("$(sr_bin order)" place "$@" 2>&1 >/dev/null) || rc=$?
    ((rc == 2)) || fail "order place $* exited $rc, not 2"
    grep -qF -- "$want" <<<"$err" || fail "order place $*: '$err' does not say '$want'"
    echo "ok: order place refuses: $(head -n1 <<<"$err")"
}
cust=0190f7d2-0000-7000-8000-00000000000a
bad_place "--customer 'nobody' is not a UUID" --customer nobody --item SKU-A:1 --address x
bad_place "at least one --item is required" --customer "$cust" --address x
bad_place "--item 'SKU-A:0'" --customer "$cust" --item SKU-A:0 --address x
bad_place "--item 'sku a:1'" --customer "$cust" --item "sku a:1" --address x
bad_place "--address is required" --customer "$cust" --item SKU-A:1
bad_place "--card '12ab' must be 12 to 19 digits" --customer "$cust" --item SKU-A:1 --address x --card 12ab
expect_eq "events stored by refused commands" "$(sr_psql "SELECT count(*) FROM $o.events")" "$count_before"
sr_stop
echo "all outcomes ok"
