#!/usr/bin/env bash
# A cancellation that overtakes a reservation: with payment stopped, an order is placed;
# its cancellation (as the order service would emit it) reaches inventory and shipping
# first, then the PaymentSucceeded that payment had sent before it saw the cancellation.
# Inventory must refuse the late reservation (stock intact); once payment runs again the
# saga ends cancelled, with the payment refunded and nothing reserved or shipped.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
e2e_init overtake
sr_start # every queue exists (services declare their own), then payment is away
sr_stop payment
id=$("$(sr_bin order)" place --customer 0190f7d2-0000-7000-8000-00000000000a \
    --item SKU-A:3:1500 --address "1 Harbour Street")
i=$(sr_schema inventory)
# the OrderPlaced is on its way to payment's queue before anything is injected
for _ in $(seq 100); do
    (($(sr_psql "SELECT count(*) FROM $(sr_schema order).outbox WHERE published_at IS NULL") == 0)) && break
    sleep 0.1
done
stock_before=$(sr_psql "SELECT on_hand FROM $i.stock WHERE sku = 'SKU-A'")

# inject: order.OrderCancelled, then payment.PaymentSucceeded, in this order's saga
corr=$(sr_psql "SELECT metadata->>'correlation_id' FROM $(sr_schema order).events WHERE aggregate_id = '$id' AND version = 1")
# each as its declared producer (its broker user), or consumers dead-letter it
CHORUS_AMQP_URL=$CHORUS_AMQP_URL_ORDER "$ROOT/build/tests/e2e-inject" "$CHORUS_NAMESPACE" order OrderCancelled "$id" \
    "{\"order_id\":\"$id\",\"reason\":\"customer cancelled\"}" "$corr"
CHORUS_AMQP_URL=$CHORUS_AMQP_URL_PAYMENT "$ROOT/build/tests/e2e-inject" "$CHORUS_NAMESPACE" payment PaymentSucceeded "$id" \
    "{\"order_id\":\"$id\",\"payment_id\":\"0190f7d2-0000-7000-8000-0000000000ff\",\"amount\":4500,\"items\":[{\"sku\":\"SKU-A\",\"qty\":3,\"price\":1500}],\"address\":\"1 Harbour Street\"}" "$corr"
# chorus' guard at inventory: the cancellation came first (a semantic lock), then the late
# PaymentSucceeded was refused, never handed to the handler
for _ in $(seq 100); do
    st=$(sr_psql "SELECT state FROM $i.saga_guards WHERE correlation_id = '$corr' AND step = 'reserve-stock'")
    [[ $st == refused ]] && break
    sleep 0.1
done
expect_eq "inventory's guard after the late PaymentSucceeded" "$st" refused
expect_eq "reservations of the order" "$(sr_psql "SELECT count(*) FROM $i.reservations WHERE order_id = '$id'")" 0
expect_eq "SKU-A stock" "$(sr_psql "SELECT on_hand FROM $i.stock WHERE sku = 'SKU-A'")" "$stock_before"

sr_start payment
printf '%s completed-but-cancelled\n' "$id" >"$SR_OUT/orders.txt"
for _ in $(seq 150); do
    [[ $(sr_psql "SELECT status FROM $(sr_schema order).order_summaries WHERE order_id = '$id'") == cancelled ]] &&
        (($(sr_unsettled) == 0)) && break
    sleep 0.2
done
expect_eq "order" "$(sr_psql "SELECT status FROM $(sr_schema order).order_summaries WHERE order_id = '$id'")" cancelled
expect_eq "payment" "$(sr_psql "SELECT status FROM $(sr_schema payment).payments WHERE order_id = '$id'")" refunded
expect_eq "stock after it all" "$(sr_psql "SELECT on_hand FROM $i.stock WHERE sku = 'SKU-A'")" "$stock_before"
expect_eq "shipments" "$(sr_psql "SELECT count(*) FROM $(sr_schema shipping).shipments WHERE order_id = '$id' AND status = 'scheduled'")" 0
sr_dlq_empty || fail "dead letters"
sr_stop
echo "overtaking cancellation ok"
