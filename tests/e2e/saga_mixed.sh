#!/usr/bin/env bash
# 200 mixed orders: every saga terminal; total charged minus refunded equals the total of
# completed orders; reserved stock equals the items of completed orders; shipments exist
# only for completed orders; the saga monitor agrees with the services; no dead letters.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
e2e_init mixed
sr_start
"$(sr_bin order)" simulate 200 >"$SR_OUT/orders.txt"
sr_wait 200 150
sr_report "$SR_OUT/orders.txt" || fail "the services disagree"
sr_dlq_empty || fail "dead letters"
sr_stop || fail "a service did not stop cleanly"
echo "200 mixed orders ok"
