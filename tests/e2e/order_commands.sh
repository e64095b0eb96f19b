#!/usr/bin/env bash
# Starting a saga from the command line is idempotent (issue 8): `order place` takes or makes
# up an idempotency key, so repeating it never places a second order; when PostgreSQL goes
# away during the commit (made reproducible by debug.commit.answer=lost: the server commits,
# the answer is lost), place says the outcome is unknown, exits 3 and names the key, and
# repeating with that key finds the order instead of placing another.  `order simulate`
# repeats such orders itself.  Usage errors exit 2.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
e2e_init cmds
o=$(sr_schema order)
order=$(sr_bin order)
item=(--customer 0190f7d2-0000-7000-8000-00000000000a --item SKU-A:1:500 --address "1 Harbour Street")
orders() { sr_psql "SELECT count(*) FROM $o.events WHERE event_type = 'OrderPlaced'"; }

rc=0
"$order" place "${item[@]}" --key "" >/dev/null 2>"$SR_OUT/usage.err" || rc=$?
expect_eq "place --key '' exit" "$rc" 2

# the same key twice: one order, the same id both times
id1=$("$order" place "${item[@]}" --key k-1 2>"$SR_OUT/p1.err")
id2=$("$order" place "${item[@]}" --key k-1 2>"$SR_OUT/p2.err")
expect_eq "id of the repeated place" "$id2" "$id1"
grep -q "already placed as $id1 with key k-1" "$SR_OUT/p2.err" || fail "no 'already placed': $(cat "$SR_OUT/p2.err")"
expect_eq "orders after placing k-1 twice" "$(orders)" 1

# without --key, one is made up and printed
"$order" place "${item[@]}" >/dev/null 2>"$SR_OUT/p3.err"
grep -Eq "idempotency key [0-9a-f-]{36}" "$SR_OUT/p3.err" || fail "no key printed: $(cat "$SR_OUT/p3.err")"
expect_eq "orders" "$(orders)" 2

# the commit's answer lost: unknown (exit 3), yet committed; repeating finds it
rc=0
CHORUS_CONF="$CHORUS_CONF;debug.commit.answer=lost" "$order" place "${item[@]}" --key k-lost \
    >/dev/null 2>"$SR_OUT/lost.err" || rc=$?
expect_eq "place with the answer lost: exit" "$rc" 3
grep -q "outcome unknown" "$SR_OUT/lost.err" || fail "no 'outcome unknown': $(cat "$SR_OUT/lost.err")"
grep -q "safe to repeat this command with the same key: --key k-lost" "$SR_OUT/lost.err" ||
    fail "the key to repeat with is not named: $(cat "$SR_OUT/lost.err")"
expect_eq "orders (the lost one committed)" "$(orders)" 3
again=$("$order" place "${item[@]}" --key k-lost 2>"$SR_OUT/again.err")
grep -q "already placed as $again" "$SR_OUT/again.err" || fail "repeat placed again: $(cat "$SR_OUT/again.err")"
expect_eq "orders after repeating k-lost" "$(orders)" 3

# simulate: every commit's answer lost; each order repeated with its key, placed once
CHORUS_CONF="$CHORUS_CONF;debug.commit.answer=lost" "$order" simulate 4 --key-prefix sim \
    >"$SR_OUT/sim.out" 2>"$SR_OUT/sim.err" || fail "simulate failed: $(cat "$SR_OUT/sim.err")"
expect_eq "orders simulate printed" "$(wc -l <"$SR_OUT/sim.out")" 4
expect_eq "orders after simulate" "$(orders)" 7
grep -q "4 orders had an unknown commit outcome" "$SR_OUT/sim.err" || fail "simulate did not say: $(cat "$SR_OUT/sim.err")"
# and the same prefix again places nothing new
"$order" simulate 4 --key-prefix sim >"$SR_OUT/sim2.out" 2>&1 || fail "simulate again failed"
expect_eq "orders after simulating the same keys again" "$(orders)" 7
cmp -s "$SR_OUT/sim.out" "$SR_OUT/sim2.out" || fail "the repeated simulate printed other orders"
echo "order commands ok"
