#!/usr/bin/env bash
# sim.sh — the deterministic simulation (chorus_sim.h) in scripts/test:
#   sagas      a bounded simulation of every saga under sagas/ finds no violation
#   replay     the same seed twice is the same run, event for event (trace hash), and
#              the same seeds in two processes (--jobs) inject the same faults
#   mutations  each deliberate defect is found within a bounded number of seeds,
#              shrunk, and printed with a trace
#   usage      bad arguments and a bad invariants file are refused (exit 2)
# Usage: sim.sh sagas|replay|mutations|usage   (through meson test, suite sim)
set -euo pipefail
ROOT=${CHORUS_SOURCE_ROOT:?run through meson test (scripts/test)}
BUILD=${CHORUS_BUILD_DIR:-$ROOT/build}
if [[ -z ${PGHOST:-} ]]; then
    [[ ${CHORUS_REQUIRE_SERVERS:-} == 1 ]] && { echo "servers required but not set" >&2; exit 1; }
    echo "skipped: no PostgreSQL (run ./scripts/test)"
    exit 77
fi
SEEDS=${CHORUS_SIM_SEEDS:-200}
SIM=$BUILD/services/sim/order_fulfillment-sim
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

case ${1:?sagas|replay|mutations|usage} in
sagas)
    n=0
    for decl in "$ROOT"/sagas/*.json; do
        [[ $decl == *.invariants.json ]] && continue
        name=$(basename "$decl" .json)
        prog=$BUILD/services/sim/$name-sim
        [[ -x $prog ]] || fail "saga $name ($decl) has no simulation program ($prog)"
        [[ -f $ROOT/sagas/$name.invariants.json ]] || fail "saga $name declares no invariants"
        echo "== $name: $SEEDS seeds"
        "$prog" --seeds "$SEEDS" --sagas 3 --jobs "${CHORUS_SIM_JOBS:-2}" | tee "$OUT/$name.txt" ||
            fail "saga $name: the simulation found a violation (above)"
        grep -q "^schedules run: $SEEDS " "$OUT/$name.txt" || fail "saga $name: not every seed ran"
        grep -q "^violations: 0 schedules" "$OUT/$name.txt" || fail "saga $name: no clean summary"
        # it did inject faults: a run without them would prove little
        for kind in reorder duplicate delay crash loss relay timer skew nack pg-restart; do
            grep -Eq "$kind [1-9]" "$OUT/$name.txt" || fail "saga $name: no $kind fault injected"
        done
        n=$((n + 1))
    done
    ((n > 0)) || fail "no saga under sagas/"
    ;;
replay)
    for seed in 3 11 16 42; do
        a=$("$SIM" --seed "$seed" --seeds 1 | grep 'trace hash')
        b=$("$SIM" --seed "$seed" --seeds 1 | grep 'trace hash')
        echo "seed $seed: $a / $b"
        [[ -n $a && $a == "$b" ]] || fail "seed $seed ran differently twice"
    done
    one=$("$SIM" --seed 20 --seeds 8 | grep '^faults injected')
    two=$("$SIM" --seed 20 --seeds 8 --jobs 2 | grep '^faults injected')
    echo "one process: $one"; echo "two jobs:    $two"
    [[ -n $one && $one == "$two" ]] || fail "--jobs 2 ran the seeds differently"
    c=$("$SIM" --seed 4 --seeds 1 | grep 'trace hash' | awk '{print $NF}')
    d=$("$SIM" --seed 11 --seeds 1 | grep 'trace hash' | awk '{print $NF}')
    [[ $c != "$d" ]] || fail "seeds 4 and 11 gave the same run: the seed decides nothing"
    ;;
mutations)
    # mutation, the violation it must produce, the seed budget
    while read -r mut want budget; do
        echo "== --mutation $mut (within $budget seeds: $want)"
        rc=0
        "$SIM" --mutation "$mut" --seeds "$budget" > "$OUT/$mut.txt" || rc=$?
        grep -v '^    #' "$OUT/$mut.txt" | head -40
        ((rc == 1)) || fail "$mut: exit $rc, not 1 (found nothing?)"
        grep -q "^VIOLATION with seed" "$OUT/$mut.txt" || fail "$mut: no violation reported"
        grep -Eq "^  - ($want)" "$OUT/$mut.txt" || fail "$mut: not the violation expected ($want)"
        grep -q "faults of the shrunk schedule" "$OUT/$mut.txt" || fail "$mut: not shrunk"
        grep -q "^  trace of saga " "$OUT/$mut.txt" || fail "$mut: no trace of the failing saga"
        grep -q "^  replay: --seed" "$OUT/$mut.txt" || fail "$mut: no replay command"
        seed=$(sed -n 's/^VIOLATION with seed \([0-9]*\).*/\1/p' "$OUT/$mut.txt" | head -1)
        # the same seeds without the mutation: clean (the defect, not the seed, fails)
        "$SIM" --seeds "$seed" > "$OUT/$mut.clean.txt" ||
            fail "$mut: seeds 1..$seed fail without the mutation too"
        echo "   found at seed $seed; seeds 1..$seed clean without it"
    done <<'LIST'
pivot-unsafe pivot: 150
no-overtake-guard stock-held:|money:|pivot:|shipment:|charged-once: 200
inbox-bypass charged-once:|money: 150
LIST
    ;;
usage)
    rc=0; "$SIM" --seeds 0 2> "$OUT/err" || rc=$?
    { ((rc == 2)) && grep -q "bad argument '--seeds'" "$OUT/err"; } || fail "--seeds 0: exit $rc"
    rc=0; "$SIM" --mutation nonsense 2> "$OUT/err" || rc=$?
    { ((rc == 2)) && grep -q "usage:" "$OUT/err"; } || fail "--mutation nonsense: exit $rc"
    rc=0; "$SIM" --jobs 0 2> "$OUT/err" || rc=$?
    { ((rc == 2)) && grep -q "bad argument '--jobs'" "$OUT/err"; } || fail "--jobs 0: exit $rc"
    rc=0; "$SIM" --frobnicate 2> "$OUT/err" || rc=$?
    ((rc == 2)) || fail "--frobnicate: exit $rc"
    echo '{"saga": "order_fulfillment", "invariants": [{"name": "x"}]}' > "$OUT/bad.json"
    rc=0; CHORUS_SIM_INVARIANTS=$OUT/bad.json "$SIM" --seeds 1 2> "$OUT/err" || rc=$?
    { ((rc == 2)) && grep -q 'invariant 0 needs' "$OUT/err"; } || fail "bad invariants file: exit $rc"
    echo '{"saga": "other", "invariants": []}' > "$OUT/other.json"
    rc=0; CHORUS_SIM_INVARIANTS=$OUT/other.json "$SIM" --seeds 1 2> "$OUT/err" || rc=$?
    { ((rc == 2)) && grep -q 'must name the simulated saga' "$OUT/err"; } || fail "other saga: exit $rc"
    echo '{"saga": "order_fulfillment", "invariants": [{"name": "broken", "description": "d", "sql": "SELECT nonsense FROM nowhere"}]}' > "$OUT/sql.json"
    rc=0; CHORUS_SIM_INVARIANTS=$OUT/sql.json "$SIM" --seeds 1 2> "$OUT/err" || rc=$?
    { ((rc == 2)) && grep -q "invariant 'broken'" "$OUT/err"; } || fail "broken SQL: exit $rc"
    "$SIM" --help | grep -q -- "--mutation" || fail "--help"
    echo "usage checks passed"
    ;;
*) echo "usage: sim.sh sagas|replay|mutations|usage" >&2; exit 2 ;;
esac
