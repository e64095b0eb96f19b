#!/usr/bin/env bash
# scripts/dlq end to end, on dead letters the real services made:
#
#   payment    malformed (not JSON; JSON that is no envelope), invalid-data (OrderPlaced without
#              a card, as order would publish it), no-handler (an OrderShipped envelope under
#              order.OrderPlaced)
#   inventory  invalid-data (PaymentSucceeded without items), malformed
#   shipping   retries-exhausted: orders to a "slow" address, placed through the order
#              service, which is then stopped so no deadline cancels them; the carrier stays
#              down until the retries run out
#
# Then: list counts (checked against the broker's own depth too); show decodes each kind
# (envelope, fault headers, x-death); browsing changes nothing (two exports are equal);
# requeue by --id (payment stopped: the message waits in payment's queue; started again it
# comes back, its requeue count recorded), by --reason, and --all on shipping restarted with
# the carrier up, after which every shipment is scheduled and shipping's DLQ is empty; purge
# without --yes refuses and removes nothing, purge by filter leaves the rest; export, purge,
# import round-trips bodies, properties and headers byte for byte; and list/show/export
# running while 50 more messages are dead-lettered lose, duplicate and reorder none.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
unset SHIPPING_CARRIER_DOWN # the carrier is down for "slow" addresses (the default)
e2e_init dlq
# The slow orders must outlive their retries, not their deadline (metadata.deadline would
# make shipping, the pivot, refuse them): a copy of the declaration with a long one.
export CHORUS_SAGA_FILE=$SR_OUT/order_fulfillment.json
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["deadline"]["ms"] = 3600000; json.dump(d, open(sys.argv[2], "w"))' \
    "$ROOT/sagas/order_fulfillment.json" "$CHORUS_SAGA_FILE"
ns=$CHORUS_NAMESPACE
INJECT=$ROOT/build/tests/e2e-inject
RAW=$ROOT/build/tests/e2e-inject-raw
[[ -x $ROOT/scripts/dlq ]] || fail "scripts/dlq is missing"
[[ -x $RAW ]] || fail "$RAW is missing (ninja -C build)"

dlq() { "$ROOT/scripts/dlq" "$@"; }
# dlq_rc ARGS...: the exit status of scripts/dlq ARGS (its output in $SR_OUT/last.out/.err)
dlq_rc() {
    local rc=0
    "$ROOT/scripts/dlq" "$@" >"$SR_OUT/last.out" 2>"$SR_OUT/last.err" || rc=$?
    echo "$rc"
}
# total SERVICE: the DLQ's depth as list --json says
total() { dlq --json list "$1" | jq -r --arg s "$1" '.services[] | select(.service == $s) | .total'; }
# groups SERVICE: "reason event_type=count" sorted, joined by ","; an unknown type is "-"
groups() {
    dlq --json list "$1" | jq -r --arg s "$1" '
        [.services[] | select(.service == $s) | .groups[]
         | "\(.reason) \(if (.event_type // "") == "" then "-" else .event_type end)=\(.count)"]
        | sort | join(",")'
}
# depth QUEUE: the broker's own count (ready + unacknowledged)
depth() {
    "$ROOT/scripts/env" ctl list_queues -q --no-table-headers name messages </dev/null |
        awk -v q="$1" '$1 == q {print $2; found = 1} END {if (!found) print "none"}'
}
# wait_depth QUEUE N SECONDS
wait_depth() {
    local t0=$SECONDS
    until [[ $(depth "$1") == "$2" ]]; do
        ((SECONDS - t0 <= $3)) || fail "$1 holds $(depth "$1") messages after $3 s, want $2"
        sleep 0.3
    done
}
# normalized export of SERVICE (each line's keys sorted) into FILE; x-delivery-count, the
# broker's count of deliveries from the DLQ itself, is never exported (checked at the end)
export_to() { dlq export "$1" | jq -cS . >"$2"; }
# header NAME of an export line (headers are an ordered array of {name, value: {KIND: v}})
hdr() { printf '[.headers[]? | select(.name == "%s") | .value[]][0]' "$1"; }

o=$(sr_schema order) i=$(sr_schema inventory) s=$(sr_schema shipping)
cust=0190f7d2-0000-7000-8000-00000000000a
sr_start order payment inventory shipping

# ---- poison, made by the real services ------------------------------------------------
echo "== dead letters"
# shipping, retries-exhausted: three orders to a slow address; once inventory has reserved
# them, order is stopped so the saga deadline (8 s) cannot cancel them while the carrier's
# six attempts (about 11 s) run out.
slow=()
for n in 1 2 3; do
    slow+=("$("$(sr_bin order)" place --customer "$cust" --item SKU-A:1:500 --address "$n Slow Lane")")
done
for _ in $(seq 100); do
    (($(sr_psql "SELECT count(*) FROM $i.reservations WHERE status = 'reserved'") == 3)) && break
    sleep 0.1
done
expect_eq "slow orders reserved" "$(sr_psql "SELECT count(*) FROM $i.reservations WHERE status = 'reserved'")" 3
sr_stop order

# payment, malformed: bytes that are not JSON, and JSON that is no envelope
"$RAW" "$ns" order.OrderPlaced 'this is not JSON'
"$RAW" "$ns" order.OrderPlaced '{"event_id":42,"event_type":"OrderPlaced"}'
# payment, invalid-data: OrderPlaced without a card, published as (and by) the order service
bad1=0190f7d2-0000-7000-8000-0000000000b1 bad2=0190f7d2-0000-7000-8000-0000000000b2
for id in "$bad1" "$bad2"; do
    CHORUS_AMQP_URL=$CHORUS_AMQP_URL_ORDER "$INJECT" "$ns" order OrderPlaced "$id" \
        "{\"order_id\":\"$id\",\"customer_id\":\"$cust\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1,\"price\":100}],\"total\":100,\"address\":\"1 Harbour Street\"}"
done
# payment, no-handler: an OrderShipped envelope under the routing key of OrderPlaced
nh_id=0190f7d2-0000-7000-8000-0000000000c1 nh_agg=0190f7d2-0000-7000-8000-0000000000c2
"$RAW" "$ns" order.OrderPlaced "{\"event_id\":\"$nh_id\",\"event_type\":\"OrderShipped\",\"aggregate_id\":\"$nh_agg\",\"version\":1,\"schema_version\":1,\"timestamp\":\"2024-07-01T10:00:00.000Z\",\"data\":{\"order_id\":\"$nh_agg\"},\"metadata\":{\"correlation_id\":\"$nh_agg\"}}"
# inventory, invalid-data: PaymentSucceeded without items; and malformed
inv_id=0190f7d2-0000-7000-8000-0000000000d1
CHORUS_AMQP_URL=$CHORUS_AMQP_URL_PAYMENT "$INJECT" "$ns" payment PaymentSucceeded "$inv_id" \
    "{\"order_id\":\"$inv_id\",\"payment_id\":\"0190f7d2-0000-7000-8000-0000000000d2\",\"amount\":100,\"address\":\"1 Harbour Street\"}"
"$RAW" "$ns" payment.PaymentSucceeded '<xml>not for us</xml>'

wait_depth "$ns.payment.dlq" 5 20
wait_depth "$ns.inventory.dlq" 2 20
wait_depth "$ns.shipping.dlq" 3 40
expect_eq "shipments while the carrier is down" \
    "$(sr_psql "SELECT count(*) FROM $s.shipments")" 0

# ---- usage -----------------------------------------------------------------------------
echo "== usage"
expect_eq "dlq --help exit" "$(dlq_rc --help)" 0
for cmd in list show requeue purge export import --json; do
    grep -qe "$cmd" "$SR_OUT/last.out" || fail "--help does not mention $cmd"
done
expect_eq "dlq (no command) exit" "$(dlq_rc)" 2
expect_eq "dlq frobnicate exit" "$(dlq_rc frobnicate)" 2
expect_eq "dlq requeue payment (no filter) exit" "$(dlq_rc requeue payment)" 2
expect_eq "dlq show (no service) exit" "$(dlq_rc show)" 2

# ---- list ------------------------------------------------------------------------------
echo "== list"
expect_eq "payment groups" "$(groups payment)" \
    "invalid-data OrderPlaced=2,malformed -=2,no-handler OrderShipped=1"
expect_eq "inventory groups" "$(groups inventory)" "invalid-data PaymentSucceeded=1,malformed -=1"
expect_eq "shipping groups" "$(groups shipping)" "retries-exhausted InventoryReserved=3"
expect_eq "order total" "$(total order)" 0
all=$(for svc in order payment inventory shipping; do dlq --json list "$svc"; done | jq -s '{services: [.[].services[]]}')
for svc in payment inventory shipping; do
    want=$(depth "$ns.$svc.dlq")
    expect_eq "$svc total in list = the broker's depth" \
        "$(jq -r --arg s "$svc" '.services[] | select(.service == $s) | .total' <<<"$all")" "$want"
    expect_eq "$svc queue name" \
        "$(jq -r --arg s "$svc" '.services[] | select(.service == $s) | .queue' <<<"$all")" "$ns.$svc.dlq"
done
expect_eq "every group's count adds up to its total" \
    "$(jq '[.services[] | select(.total != ([.groups[].count] | add // 0))] | length' <<<"$all")" 0
expect_eq "groups with oldest <= newest, both RFC 3339" \
    "$(jq '[.services[].groups[] | select((.oldest | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9:]+)$") | not)
                                        or (.newest | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T")| not)
                                        or (.oldest > .newest))] | length' <<<"$all")" 0
dlq list payment >"$SR_OUT/list.txt" || fail "dlq list payment (text) failed"
dlq list shipping >>"$SR_OUT/list.txt" || fail "dlq list shipping (text) failed"
grep -qF "$ns.payment.dlq" "$SR_OUT/list.txt" || fail "the text list does not name $ns.payment.dlq"
grep -qF "retries-exhausted" "$SR_OUT/list.txt" || fail "the text list does not show the reasons"

# ---- show ------------------------------------------------------------------------------
echo "== show"
dlq --json show payment >"$SR_OUT/show-payment.json"
p=$SR_OUT/show-payment.json
expect_eq "payment messages shown" "$(jq '.messages | length' "$p")" 5
expect_eq "positions" "$(jq -c '[.messages[].position]' "$p")" "[1,2,3,4,5]"
expect_eq "every message: queue, service, error, original queue and routing key, attempts, time" \
    "$(jq --arg ns "$ns" '[.messages[] | select(.fault_service != "payment" or (.error | length) == 0
        or .original_queue != "\($ns).payment" or .original_routing_key != "order.OrderPlaced"
        or .attempts < 1 or (.time | length) == 0 or .requeues != 0
        or .headers["x-chorus-fault-reason"] != .reason)] | length' "$p")" 0
expect_eq "malformed, not JSON: raw body, no envelope" \
    "$(jq -c '[.messages[] | select(.reason == "malformed" and .envelope == null) | .body]
              | map(select(. == "this is not JSON")) | length' "$p")" 1
expect_eq "malformed: the error says why" \
    "$(jq '[.messages[] | select(.reason == "malformed" and (.error | length) > 0)] | length' "$p")" 2
expect_eq "rejected: decoded OrderPlaced envelopes of the two orders, without card" \
    "$(jq -c '[.messages[] | select(.reason == "invalid-data")
               | [.event_type, .envelope.event_type, .envelope.aggregate_id, (.envelope.data | has("card")),
                  .event_id == .envelope.event_id]]' "$p")" \
    "[[\"OrderPlaced\",\"OrderPlaced\",\"$bad1\",false,true],[\"OrderPlaced\",\"OrderPlaced\",\"$bad2\",false,true]]"
expect_eq "rejected: the error names the field" \
    "$(jq -r '[.messages[] | select(.reason == "invalid-data") | .error] | unique | .[]' "$p")" \
    'data: required member "card" is missing'
expect_eq "no-handler: event id, type, error" \
    "$(jq -c '[.messages[] | select(.reason == "no-handler") | [.event_id, .event_type, .envelope.data.order_id, .error]]' "$p")" \
    "[[\"$nh_id\",\"OrderShipped\",\"$nh_agg\",\"no handler for event type 'OrderShipped'\"]]"
first_rejected=$(jq -r '[.messages[] | select(.reason == "invalid-data")][0].event_id' "$p")
[[ $first_rejected =~ ^[0-9a-f-]{36}$ ]] || fail "no event id on the rejected message"

dlq --json show shipping >"$SR_OUT/show-shipping.json"
sh=$SR_OUT/show-shipping.json
expect_eq "shipping: retries-exhausted, carrier unavailable, 6 attempts, InventoryReserved of the slow orders" \
    "$(jq -c '[.messages[] | [.reason, .error, .attempts, .event_type, .envelope.aggregate_id]] | sort' "$sh")" \
    "$(printf '%s\n' "${slow[@]}" | sort | jq -Rnc '[inputs | ["retries-exhausted", "carrier unavailable", 6, "InventoryReserved", .]]')"
expect_eq "shipping: x-death names the retry queues, with counts" \
    "$(jq --arg ns "$ns" '[.messages[] | select((.x_death | length) == 0
        or ([.x_death[] | select((.queue | startswith("\($ns).shipping.retry.")) and .count >= 1
                                 and .reason == "expired")] | length) == 0)] | length' "$sh")" 0
jq -r '.messages[0].x_death | map("\(.queue) \(.reason) x\(.count)") | join("; ")' "$sh" |
    sed 's/^/   x-death of the first: /'

dlq --json show inventory >"$SR_OUT/show-inventory.json"
expect_eq "inventory: rejected PaymentSucceeded names items; malformed raw body" \
    "$(jq -c '[.messages[] | [.reason, (.event_type // ""), (if .envelope then .envelope.aggregate_id else .body end)]] | sort' "$SR_OUT/show-inventory.json")" \
    "[[\"invalid-data\",\"PaymentSucceeded\",\"$inv_id\"],[\"malformed\",\"\",\"<xml>not for us</xml>\"]]"
grep -q 'member "items"' <<<"$(jq -r '.messages[] | select(.reason == "invalid-data") | .error' "$SR_OUT/show-inventory.json")" ||
    fail "inventory's rejection does not name data.items"

expect_eq "show --id: that one message" \
    "$(dlq --json show payment --id "$nh_id" | jq -c '[.messages[] | .event_id]')" "[\"$nh_id\"]"
expect_eq "show --limit 2: the first two, in order" \
    "$(dlq --json show payment --limit 2 | jq -c '[.messages[] | [.position, .event_id, .body]]')" \
    "$(jq -c '[.messages[:2][] | [.position, .event_id, .body]]' "$p")"
dlq show payment --limit 1 >"$SR_OUT/show.txt" || fail "dlq show (text) failed"
[[ -s $SR_OUT/show.txt ]] || fail "dlq show (text) printed nothing"

# ---- browsing changes nothing ------------------------------------------------------------
echo "== browsing is harmless"
export_to payment "$SR_OUT/browse1.jsonl"
dlq --json show payment >/dev/null
dlq --json list payment >/dev/null
export_to payment "$SR_OUT/browse2.jsonl"
expect_eq "export lines" "$(wc -l <"$SR_OUT/browse1.jsonl")" 5
cmp -s "$SR_OUT/browse1.jsonl" "$SR_OUT/browse2.jsonl" ||
    { diff "$SR_OUT/browse1.jsonl" "$SR_OUT/browse2.jsonl" | head -n 6 >&2; fail "browsing changed the DLQ"; }
echo "ok: export, show, list, export: the two exports are identical"
expect_eq "payment total after browsing" "$(total payment)" 5

# ---- requeue ---------------------------------------------------------------------------
echo "== requeue"
# by id, with payment away: it waits in payment's queue, the DLQ keeps the other four
sr_stop payment
expect_eq "requeue --id (payment stopped)" \
    "$(dlq --json requeue payment --id "$first_rejected" | jq -c '[.matched, .moved, .remaining]')" "[1,1,4]"
wait_depth "$ns.payment" 1 10 # waiting there for payment
wait_depth "$ns.payment.dlq" 4 10
echo "ok: the requeued message waits in $ns.payment, 4 left in the DLQ"
expect_eq "requeue --id of an id not there" \
    "$(dlq --json requeue payment --id 0190f7d2-0000-7000-8000-0000000000ee | jq -c '[.matched, .moved, .remaining]')" "[0,0,4]"
sr_start payment
# its cause is not fixed: payment rejects it again, and the DLQ now says it was requeued
wait_depth "$ns.payment.dlq" 5 20
expect_eq "requeued once, refused again (reason, requeues, error, original queue)" \
    "$(dlq --json show payment --id "$first_rejected" | jq -c '.messages[] | [.reason, .requeues, .error, .original_queue]')" \
    "[\"invalid-data\",1,\"data: required member \\\"card\\\" is missing\",\"$ns.payment\"]"
expect_eq "its raw header" \
    "$(dlq --json show payment --id "$first_rejected" | jq -c '.messages[] | .headers["x-chorus-requeue-count"]')" 1
# by reason
expect_eq "requeue --reason no-handler" \
    "$(dlq --json requeue payment --reason no-handler | jq -c '[.matched, .moved]')" "[1,1]"
for _ in $(seq 60); do
    [[ $(dlq --json show payment --id "$nh_id" | jq -c '[.messages[].requeues]') == "[1]" ]] && break
    sleep 0.3
done
expect_eq "no-handler back after its requeue" \
    "$(dlq --json show payment --id "$nh_id" | jq -c '[.messages[] | [.reason, .requeues]]')" '[["no-handler",1]]'
expect_eq "payment groups after the requeues" "$(groups payment)" \
    "invalid-data OrderPlaced=2,malformed -=2,no-handler OrderShipped=1"

# shipping with the carrier up: by id, then all; each is scheduled
sr_stop shipping
export SHIPPING_CARRIER_DOWN=
sr_start shipping
sid=$(dlq --json show shipping | jq -r --arg a "${slow[0]}" '.messages[] | select(.envelope.aggregate_id == $a) | .event_id')
expect_eq "requeue shipping --id (carrier up)" \
    "$(dlq --json requeue shipping --id "$sid" | jq -c '[.matched, .moved, .remaining]')" "[1,1,2]"
for _ in $(seq 60); do
    [[ $(sr_psql "SELECT status FROM $s.shipments WHERE order_id = '${slow[0]}'") == scheduled ]] && break
    sleep 0.3
done
expect_eq "the requeued order's shipment" "$(sr_psql "SELECT status FROM $s.shipments WHERE order_id = '${slow[0]}'")" scheduled
dlq requeue shipping --all >"$SR_OUT/requeue.txt" || fail "dlq requeue --all (text) failed"
grep -q 2 "$SR_OUT/requeue.txt" || fail "requeue --all does not report how many moved: $(cat "$SR_OUT/requeue.txt")"
for _ in $(seq 60); do
    (($(sr_psql "SELECT count(*) FROM $s.shipments WHERE status = 'scheduled'") == 3)) && break
    sleep 0.3
done
expect_eq "shipments scheduled for the slow orders" \
    "$(sr_psql "SELECT string_agg(order_id::text || ' ' || status, ',' ORDER BY order_id) FROM $s.shipments")" \
    "$(printf '%s scheduled\n' "${slow[@]}" | sort | paste -sd,)"
expect_eq "shipping DLQ after the fix" "$(total shipping)" 0
wait_depth "$ns.shipping.dlq" 0 10
wait_depth "$ns.order" 3 10 # the ShipmentScheduled events, waiting for order
expect_eq "still placed: order was away" \
    "$(sr_psql "SELECT count(*) FROM $o.order_summaries WHERE status = 'placed'")" 3

# ---- purge -----------------------------------------------------------------------------
echo "== purge"
totals() { for svc in payment inventory shipping; do echo "$svc $(total "$svc")"; done | paste -sd,; }
before_all=$(totals)
expect_eq "purge without --yes exit" "$(dlq_rc purge payment --reason malformed)" 2
expect_eq "purge --all without --yes exit" "$(dlq_rc purge payment --all)" 2
expect_eq "after the refusals: every DLQ as before" \
    "$(totals)" "$before_all"
expect_eq "purge payment --reason malformed --yes" \
    "$(dlq --json purge payment --reason malformed --yes | jq -c '[.matched, .purged, .remaining]')" "[2,2,3]"
expect_eq "payment groups after it" "$(groups payment)" "invalid-data OrderPlaced=2,no-handler OrderShipped=1"
expect_eq "inventory untouched" "$(groups inventory)" "invalid-data PaymentSucceeded=1,malformed -=1"
expect_eq "purge inventory --event-type PaymentSucceeded --yes" \
    "$(dlq --json purge inventory --event-type PaymentSucceeded --yes | jq -c '[.matched, .purged, .remaining]')" "[1,1,1]"
expect_eq "inventory groups after it" "$(groups inventory)" "malformed -=1"
expect_eq "payment untouched" "$(groups payment)" "invalid-data OrderPlaced=2,no-handler OrderShipped=1"
expect_eq "purge payment --id (one of the rejected) --yes" \
    "$(dlq --json purge payment --id "$bad2" --yes | jq -c '[.matched, .purged]')" "[0,0]"
bad2_event=$(dlq --json show payment | jq -r --arg a "$bad2" '.messages[] | select(.envelope.aggregate_id == $a) | .event_id')
expect_eq "purge payment --id EVENT_ID --yes" \
    "$(dlq --json purge payment --id "$bad2_event" --yes | jq -c '[.matched, .purged, .remaining]')" "[1,1,2]"
expect_eq "payment groups at last" "$(groups payment)" "invalid-data OrderPlaced=1,no-handler OrderShipped=1"

# ---- export / import -------------------------------------------------------------------
echo "== export and import"
# two more kinds on payment's DLQ for the round trip: a body with bytes that are not UTF-8
# and a multi-line one
printf 'line one\nline two\xff\xfe\x00 end' | "$RAW" "$ns" order.OrderPlaced
wait_depth "$ns.payment.dlq" 3 20
dlq export payment >"$SR_OUT/export1.jsonl"
expect_eq "exported lines" "$(wc -l <"$SR_OUT/export1.jsonl")" 3
expect_eq "export is non-destructive: payment total" "$(total payment)" 3
expect_eq "binary body exported exactly" \
    "$(jq -r "select($(hdr x-chorus-fault-reason) == \"malformed\") | .body_base64" "$SR_OUT/export1.jsonl" | base64 -d | od -An -tx1 | tr -d ' \n')" \
    "$(printf 'line one\nline two\xff\xfe\x00 end' | od -An -tx1 | tr -d ' \n')"
expect_eq "purge payment --all --yes" \
    "$(dlq --json purge payment --all --yes | jq -c '[.matched, .purged, .remaining]')" "[3,3,0]"
wait_depth "$ns.payment.dlq" 0 10
expect_eq "import" "$(dlq --json import payment <"$SR_OUT/export1.jsonl" | jq -c .imported)" 3
dlq export payment >"$SR_OUT/export2.jsonl"
for f in export1 export2; do
    jq -cS '{format, routing_key, properties, headers, headers_amqp_base64, body_base64}' \
        "$SR_OUT/$f.jsonl" >"$SR_OUT/$f.norm"
done
cmp -s "$SR_OUT/export1.norm" "$SR_OUT/export2.norm" ||
    { diff "$SR_OUT/export1.norm" "$SR_OUT/export2.norm" | head -n 8 >&2; fail "export / import is not a round trip"; }
echo "ok: export, purge --all, import, export: bodies, properties and headers identical, in order"
expect_eq "list after the import" "$(groups payment)" "invalid-data OrderPlaced=1,malformed -=1,no-handler OrderShipped=1"
expect_eq "import of a broken line exit" "$(echo '{"body_base64": 12' | dlq_rc import payment)" 1
expect_eq "payment total after the broken import" "$(total payment)" 3

# ---- browsing while messages are dead-lettered -----------------------------------------
echo "== browsing during dead-lettering"
expect_eq "purge inventory --all --yes" "$(dlq --json purge inventory --all --yes | jq -c .purged)" 1
bodies=()
for n in $(seq -w 1 50); do bodies+=("poison #$n"); done
"$RAW" "$ns" payment.PaymentSucceeded --interval-ms 40 "${bodies[@]}" &
injector=$!
runs=0 last=0
while kill -0 "$injector" 2>/dev/null || ((runs < 5)); do
    n=$(total inventory)
    ((n >= last)) || fail "list went back from $last to $n messages"
    last=$n
    # what show sees is always the first k of the sequence, in order, none twice
    got=$(dlq --json show inventory | jq -r '[.messages[].body] | join("|")')
    k=$(awk -F'|' '{print NF}' <<<"$got")
    [[ $got == "$(printf '%s\n' "${bodies[@]:0:k}" | paste -sd'|')" ]] ||
        fail "show during dead-lettering: $got"
    dlq export inventory >/dev/null
    runs=$((runs + 1))
done
wait "$injector" || fail "the injector failed"
echo "ok: $runs rounds of list, show and export while dead-lettering, each a prefix in order"
wait_depth "$ns.inventory.dlq" 50 30
expect_eq "inventory total after it" "$(total inventory)" 50
expect_eq "bodies, in injection order, none lost or twice" \
    "$(dlq export inventory | jq -r '.body_base64 | @base64d' | paste -sd'|')" \
    "$(printf '%s\n' "${bodies[@]}" | paste -sd'|')"
expect_eq "show positions" "$(dlq --json show inventory | jq -c '[.messages[].position] == [range(1; 51)]')" true

# browsing leaves no trace: the quorum DLQ's own x-delivery-count (it grows with every
# list, show and export, since each holds the messages and gives them back) is not part of
# what show and export report
expect_eq "exported lines with x-delivery-count" \
    "$(dlq export inventory | jq -s '[.[] | select(any(.headers[]?; .name == "x-delivery-count"))] | length')" 0
expect_eq "shown messages with x-delivery-count" \
    "$(dlq --json show inventory | jq '[.messages[] | select(.headers | has("x-delivery-count"))] | length')" 0

# list without SERVICE: every service of the saga, also when one (monitor here) never ran
# and so has no DLQ yet
all=$(dlq --json list) || fail "dlq list (every service) failed: $(dlq list 2>&1 >/dev/null)"
expect_eq "list (every service): payment, inventory, shipping" \
    "$(jq -c '[.services[] | select(.service | test("payment|inventory|shipping")) | [.service, .total]]' <<<"$all")" \
    '[["payment",3],["inventory",50],["shipping",0]]'
dlq list >/dev/null || fail "dlq list (text, every service) failed"

sr_stop || fail "a service did not stop cleanly"
echo "dead-letter tooling ok"
