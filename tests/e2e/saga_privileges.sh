#!/usr/bin/env bash
# Least privilege and producer identity, as provisioned from the declaration.
#
# Broker side: the shipping service's broker user may publish shipping.* on the events
# exchange and nothing else: not order.OrderPlaced there, not through the default exchange
# straight into payment's queue (the route of issue 8: payment charged, inventory reserved,
# shipping shipped), not into payment's retry exchange or dead-letter exchange, and not
# with another service's user_id.  One route the broker cannot close: an exchange of
# shipping's own bound into the events exchange (topic permissions are checked only where a
# publish enters), which is why the consumer checks the producer.  Consumer side: payment handles an OrderPlaced only when
# its verified producer (user_id, checked by RabbitMQ) is the order service's user, whatever
# route it came by; anything else is dead-lettered as forbidden-producer, also a copy that
# claims, in a header, a producer it cannot have had.  Each refusal has a positive control,
# so a generic failure cannot pass for a refusal.  Then the PostgreSQL roles: payment's
# reaches its own schema, not order's.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
[[ -n ${CHORUS_CTL:-} ]] || { echo "skipped: the broker is not ours to administer"; exit 77; }
e2e_init priv
ns=$CHORUS_NAMESPACE
RAW=$ROOT/build/tests/e2e-inject-raw
p=$(sr_schema payment)
sr_start order payment

inject() { "$ROOT/build/tests/e2e-inject" "$ns" "$1" Ping \
    0190f7d2-0000-7000-8000-000000000001 '{}' >"$SR_OUT/inject-$1.log" 2>&1; }

CHORUS_AMQP_URL=$CHORUS_AMQP_URL_PAYMENT inject payment || fail "payment could not publish its own event"
echo "ok: payment publishes payment.Ping"
if CHORUS_AMQP_URL=$CHORUS_AMQP_URL_PAYMENT inject order; then
    fail "payment published as order"
fi
grep -q "ACCESS_REFUSED" "$SR_OUT/inject-order.log" || { cat "$SR_OUT/inject-order.log" >&2; fail "no ACCESS_REFUSED"; }
echo "ok: payment may not publish order.Ping or declare order's queues (ACCESS_REFUSED)"

# ---- every route into payment, as shipping --------------------------------------------
n=0
# order_placed: a valid OrderPlaced envelope for a new order in $body, its id in $last_order.
order_placed() {
    n=$((n + 1))
    printf -v last_order '0190f7d2-0000-7000-8000-%012d' "$((100 + n))"
    local ev cust=0190f7d2-0000-7000-8000-00000000000c
    printf -v ev '0190f7d2-0000-7000-8000-%012d' "$((900 + n))"
    body="{\"event_id\":\"$ev\",\"event_type\":\"OrderPlaced\",\"aggregate_id\":\"$last_order\",\"version\":1,"
    body+="\"schema_version\":1,\"timestamp\":\"2026-11-30T10:00:00.000Z\",\"data\":{\"order_id\":\"$last_order\","
    body+="\"customer_id\":\"$cust\",\"items\":[{\"sku\":\"SKU-A\",\"qty\":1,\"price\":500}],\"total\":500,"
    body+="\"address\":\"1 Harbour Street\",\"card\":\"4242424242424242\"},\"metadata\":{\"correlation_id\":\"$last_order\"}}"
}
payments_of() { sr_psql "SELECT count(*) FROM $p.payments WHERE order_id = '$1'"; }
# refused NAME WANT RAW-ARGS...: publish an OrderPlaced with shipping's user; the broker must
# refuse it with the reply WANT (and payment must never charge it, checked below).
refused() {
    local name=$1 want=$2 rc=0
    shift 2
    order_placed
    CHORUS_AMQP_URL=$CHORUS_AMQP_URL_SHIPPING "$RAW" "$@" "$body" >"$SR_OUT/route-$n.log" 2>&1 || rc=$?
    ((rc == 1)) || { cat "$SR_OUT/route-$n.log" >&2; fail "$name: not refused (exit $rc)"; }
    grep -q "$want" "$SR_OUT/route-$n.log" || { cat "$SR_OUT/route-$n.log" >&2; fail "$name: not $want"; }
    refused_orders+=("$last_order")
    echo "ok: shipping cannot publish OrderPlaced $name ($want)"
}
refused_orders=()
refused "on the events exchange as order.OrderPlaced" ACCESS_REFUSED "$ns" order.OrderPlaced
refused "through the default exchange into payment's queue" ACCESS_REFUSED \
    "$ns" "$ns.payment" --exchange ""
refused "into payment's retry exchange" ACCESS_REFUSED "$ns" "$ns.payment" --exchange "$ns.payment.retry"
refused "into payment's dead-letter exchange" ACCESS_REFUSED "$ns" payment --exchange "$ns.payment.dlx"
refused "with order's user_id" PRECONDITION_FAILED "$ns" shipping.OrderPlaced --user-id "$ns-order"
# Allowed, but it reaches nobody: payment binds order.OrderPlaced only.
order_placed
CHORUS_AMQP_URL=$CHORUS_AMQP_URL_SHIPPING "$RAW" "$ns" shipping.OrderPlaced "$body" ||
    fail "shipping could not publish under its own prefix"
refused_orders+=("$last_order")
echo "ok: shipping.OrderPlaced is accepted by the broker but bound to nobody"
# Around the topic permissions: an exchange of shipping's own, bound into the events
# exchange.  RabbitMQ checks topic permissions only at the exchange a publish names, so
# the broker takes it, and it reaches payment's queue: the consumer's check must refuse it.
order_placed
CHORUS_AMQP_URL=$CHORUS_AMQP_URL_SHIPPING "$RAW" "$ns" order.OrderPlaced \
    --via-exchange "$ns.shipping.side" "$body" || fail "shipping could not use an exchange of its own"
via_order=$last_order
echo "ok: shipping can route order.OrderPlaced through an exchange bound into the events exchange"

# ---- the consumer's check, whatever the route ------------------------------------------
# The administrator (impersonator tag) publishes straight into payment's queue; only the
# user_id decides.
admin() {
    order_placed
    "$RAW" "$ns" "$ns.payment" --exchange "" "$@" "$body" || fail "admin publish failed"
}
admin
forbidden=("$last_order")
admin --user-id "$ns-shipping"
forbidden+=("$last_order")
admin --user-id "$ns-payment" --header "x-chorus-producer=$ns-shipping"
forbidden+=("$last_order")
forbidden+=("$via_order")
admin --user-id "$ns-order"
allowed=("$last_order")
admin --user-id "$ns-payment" --header "x-chorus-producer=$ns-order"
allowed+=("$last_order")

for _ in $(seq 100); do
    [[ $(payments_of "${allowed[0]}") == 1 && $(payments_of "${allowed[1]}") == 1 ]] && break
    sleep 0.2
done
for o in "${allowed[@]}"; do
    expect_eq "payments for $o (from order's user)" "$(payments_of "$o")" 1
done
for _ in $(seq 100); do
    [[ $("$ROOT/scripts/dlq" --json list payment | jq -r '.services[0].total') == 4 ]] && break
    sleep 0.2
done
expect_eq "payment's dead letters" \
    "$("$ROOT/scripts/dlq" --json list payment | jq -r '.services[0].groups | map("\(.reason) \(.event_type)=\(.count)") | join(",")')" \
    "forbidden-producer OrderPlaced=4"
for o in "${forbidden[@]}" "${refused_orders[@]}"; do
    expect_eq "payments for $o (not from order)" "$(payments_of "$o")" 0
done
"$ROOT/scripts/dlq" --json show payment | jq -r '.messages[].error' >"$SR_OUT/forbidden.txt"
grep -q "a publisher that set no user_id" "$SR_OUT/forbidden.txt" || fail "no reason for the one without user_id"
grep -q "came from '$ns-shipping'" "$SR_OUT/forbidden.txt" || fail "no reason naming shipping"
echo "ok: forbidden producers are named in the dead letters' errors"
sr_stop

# ---- PostgreSQL -------------------------------------------------------------------------
own=$(PGOPTIONS='-c client_min_messages=warning' psql -X -A -t -q "$CHORUS_PG_PAYMENT" \
    -c "SELECT count(*) FROM $(sr_schema payment).inbox" 2>&1) || fail "payment cannot read its own schema: $own"
echo "ok: payment reads its own schema"
if other=$(psql -X -A -t -q "$CHORUS_PG_PAYMENT" -c "SELECT count(*) FROM $(sr_schema order).events" 2>&1); then
    fail "payment read the order service's events: $other"
fi
grep -q "permission denied" <<<"$other" || fail "unexpected error: $other"
echo "ok: payment may not read the order schema (permission denied)"
echo "privileges ok"
