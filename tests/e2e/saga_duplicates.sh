#!/usr/bin/env bash
# Every event delivered twice to every queue (each outbox row is published twice:
# debug.publish.copies=2) -> the same final states: the inboxes drop the copies.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
export CHORUS_CONF="retry.delays.ms=1s,2s,4s;retry.max.attempts=6;log.level=notice;debug.publish.copies=2;topology.retry.strategy=at-most-once"
e2e_init dups
sr_start
"$(sr_bin order)" simulate 20 >"$SR_OUT/orders.txt"
sr_wait 20 90
sr_report "$SR_OUT/orders.txt" || fail "the services disagree"
sr_dlq_empty || fail "dead letters"
dups=$(grep -c . "$SR_OUT/orders.txt")
expect_eq "orders" "$dups" 20
sr_stop
# the copies were really delivered, and dropped by the inboxes
for svc in order payment inventory shipping monitor; do
    n=$(sed -n 's/.*stats: handled=[0-9]* duplicates=\([0-9]*\).*/\1/p' "$SR_OUT/$svc.log" | tail -n 1)
    ((${n:-0} > 0)) || fail "$svc saw no duplicate deliveries"
    echo "ok: $svc dropped $n duplicate deliveries"
done
echo "duplicates ok"
