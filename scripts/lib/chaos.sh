# shellcheck shell=bash
# chaos.sh — a seeded chaos run of the order-fulfillment saga, for tests/fault/chaos.sh
# (and scripts/chaos, which runs that test by hand).  Sourced after scripts/lib/saga-run.sh.
#
# One seed decides everything random: the orders (their outcomes and amounts) and the
# faults (which process is killed when, how long it stays down; when RabbitMQ and
# PostgreSQL crash and for how long).  The plan is written to files before anything
# runs, in this shell (bash reseeds $RANDOM in every subshell), so a seed always gives
# the same plan on the same bash; the timing of the processes under it does not repeat.
#
#   chaos_plan_orders   plan-orders.txt  "T_MS|KEY|SCENARIO|CARD|ADDRESS|ITEM ITEM..."
#   chaos_plan_faults   plan-faults.txt  "T_MS kill SERVICE DOWN_MS" | "T_MS crash SERVER DOWN_MS"
#
#   placer (background)  plan-orders.txt --order place--> orders.txt ("ID SCENARIO")
#   this shell           plan-faults.txt --SIGKILL--> services, broker, postmaster
#                        and, every tick, restarts what is due and notices what died by itself
#
# Each service goes through   up --chaos_kill--> down --(DOWN_MS)--> starting --> up
# (starting --died--> down again, retried a second later: a service cannot start while
# the broker or PostgreSQL is away).  A service found dead while up died by itself: that
# is counted and reported as a violation, and it is restarted like a killed one.
#
# After the faults, chaos_settle waits (bounded) until every saga is settled and nothing
# moves any more; chaos_check then checks the invariants by SQL over the services' own
# tables, independently of what the services report.

CHAOS_SERVERS=(rabbitmq postgres)
declare -A CH_STATE=() CH_AT=() CH_LOGOFF=() CH_KILLS=() CH_STARTS=() CH_START_FAILS=()
declare -A CH_SELF_EXITS=() CH_SRV_JOB=() CH_SRV_UP_AT=() CH_CRASHES=()
CH_T0=0
CH_NOW=0
CH_VIOLATIONS=0
CH_PLACER=

# ---------------------------------------------------------------------------- time, log

# chaos_clock: CH_NOW = milliseconds since chaos_clock_start (no subshell).
chaos_clock_start() {
    CH_T0=${EPOCHREALTIME/./}
    CH_T0=$((CH_T0 / 1000))
    CH_NOW=0
    printf '  [   0.0s] is %s (UTC, the time in the services'"'"' logs)\n' \
        "$(date -u -d "@$((CH_T0 / 1000))" +%H:%M:%S).$(printf '%03d' $((CH_T0 % 1000)))" | tee -a "$SR_OUT/chaos.log"
}
chaos_clock() { CH_NOW=${EPOCHREALTIME/./}; CH_NOW=$((CH_NOW / 1000 - CH_T0)); }

chaos_log() {
    chaos_clock
    printf '  [%4d.%01ds] %s\n' $((CH_NOW / 1000)) $((CH_NOW % 1000 / 100)) "$*" | tee -a "$SR_OUT/chaos.log"
}

# chaos_mark SERVICE TEXT: a line in the service's log, so its incarnations can be told apart.
chaos_mark() { printf '=== chaos +%dms: %s\n' "$CH_NOW" "$2" >>"$SR_OUT/$1.log"; }

# chaos_rand N: CH_R = a number in [0, N) from the seeded $RANDOM (30 bits).
chaos_rand() { CH_R=$(((RANDOM << 15 | RANDOM) % $1)); }

# ---------------------------------------------------------------------------- set-up

# chaos_decl SRC DST MS: the saga declaration with only deadline.ms changed.
chaos_decl() {
    jq --argjson ms "$3" \
        'if (.deadline | type) == "object" and (.deadline.ms | type) == "number"
         then .deadline.ms = $ms else error("no deadline.ms in the declaration") end' \
        "$1" >"$2"
}

# chaos_init OUTDIR PREFIX NAMESPACE DEADLINE_MS: as e2e_init does (own namespace, schema
# prefix, least-privilege users), with a copy of the saga declaration whose deadline is
# DEADLINE_MS.  Initial stock is recorded in CH_STOCK for the stock invariant.
declare -A CH_STOCK=([SKU-A]=1000000 [SKU-B]=1000000 [RARE-1]=5)
chaos_init() {
    mkdir -p "$1"
    chaos_decl "$ROOT/sagas/order_fulfillment.json" "$1/order_fulfillment.json" "$4"
    export CHORUS_SAGA_FILE=$1/order_fulfillment.json
    sr_init "$1" "$2" "$3"
    sr_reset
    sr_provision
    local sku
    for sku in "${!CH_STOCK[@]}"; do
        "$(sr_bin inventory)" stock set "$sku" "${CH_STOCK[$sku]}" >/dev/null
    done
}

# ---------------------------------------------------------------------------- the plan

# chaos_plan_orders N WINDOW_MS > plan: N orders spread over the window, a seeded mix of
# the five outcomes (the scenarios of `order simulate`).
chaos_plan_orders() {
    local n=$1 w=$2 k t scen card addr items qa pa
    for ((k = 1; k <= n; k++)); do
        t=$(((k - 1) * w / n))
        card=4242424242424242
        chaos_rand 3; qa=$((1 + CH_R))
        chaos_rand 1000; pa=$((1000 + CH_R))
        items="SKU-A:$qa:$pa SKU-B:1:2500"
        addr="$k Harbour Street, Leith"
        chaos_rand 100
        if ((CH_R < 55)); then
            scen=completed
        elif ((CH_R < 65)); then
            scen=payment-declined card=4000000000000002
        elif ((CH_R < 75)); then
            scen=out-of-stock items="SKU-A:$qa:$pa RARE-1:1000:9"
        elif ((CH_R < 88)); then
            scen=shipping-failed addr="Undeliverable Lane $k"
        else
            scen=deadline addr="Slow Carrier Road $k"
        fi
        printf '%d|chaos-%d|%s|%s|%s|%s\n' "$t" "$k" "$scen" "$card" "$addr" "$items"
    done
}

# chaos_plan_faults WINDOW_MS KILLS FILE: KILLS SIGKILLs of each service and of the
# monitor (one in each of KILLS equal slots of the window, down 0.2 to 2.5 s), one
# RabbitMQ crash in the first half (down 1 to 4 s before it is started again) and one
# PostgreSQL crash in the second half (down 1 to 4 s).
chaos_plan_faults() {
    local w=$1 kills=$2 s k slot at
    slot=$((w / kills))
    {
        for s in "${SR_SERVICES[@]}"; do
            for ((k = 0; k < kills; k++)); do
                chaos_rand $((slot - 3000)); at=$((k * slot + 500 + CH_R))
                chaos_rand 2300
                printf '%d kill %s %d\n' "$at" "$s" $((200 + CH_R))
            done
        done
        if [[ -n ${CHORUS_CTL:-} ]]; then
            chaos_rand $((w * 25 / 100)); at=$((w * 15 / 100 + CH_R))
            chaos_rand 3000
            printf '%d crash rabbitmq %d\n' "$at" $((1000 + CH_R))
            chaos_rand $((w * 20 / 100)); at=$((w * 55 / 100 + CH_R))
            chaos_rand 3000
            printf '%d crash postgres %d\n' "$at" $((1000 + CH_R))
        fi
    } >"$3.unsorted" # not a pipe: a subshell would draw other random numbers
    sort -n -k1,1 "$3.unsorted" >"$3"
    rm -f "$3.unsorted"
}

# ---------------------------------------------------------------------------- orders

# chaos_placer GIVE_UP_MS < PLAN: places each order at its time (run in the background;
# the plan's times are from chaos_clock_start).  An order that cannot be stored, or whose
# commit's outcome is unknown (PostgreSQL crashed), is repeated with its idempotency key
# until `order place` says it is placed, for up to 60 s, and not after GIVE_UP_MS.
# Prints "ID SCENARIO" per order; placer.stats gets "placed N repeated R unknown U failed F".
chaos_placer() {
    local give_up=$1
    local t key scen card addr items rc id it d placed=0 repeated=0 unknown=0 failed=0 t1
    local -a args
    while IFS='|' read -r t key scen card addr items; do
        chaos_clock
        d=$((t - CH_NOW))
        if ((d > 0)); then sleep "$((d / 1000)).$(printf '%03d' $((d % 1000)))"; fi
        args=(--customer 0190f7d2-0000-7000-8000-00000000000c --card "$card" --address "$addr" --key "$key")
        for it in $items; do args+=(--item "$it"); done
        t1=$SECONDS
        while :; do
            rc=0
            id=$("$(sr_bin order)" place "${args[@]}" 2>>"$SR_OUT/placer.log") || rc=$?
            ((rc == 0)) && break
            ((rc == 3)) && unknown=$((unknown + 1))
            ((rc == 2)) && break
            chaos_clock
            if ((SECONDS - t1 > 60 || CH_NOW > give_up)); then break; fi
            repeated=$((repeated + 1))
            sleep 0.5
        done
        if ((rc == 0)) && [[ -n $id ]]; then
            printf '%s %s\n' "$id" "$scen"
            placed=$((placed + 1))
        else
            echo "order $key not placed (exit $rc)" >>"$SR_OUT/placer.log"
            failed=$((failed + 1))
        fi
    done
    printf 'placed %d repeated %d unknown %d failed %d\n' "$placed" "$repeated" "$unknown" "$failed" \
        >"$SR_OUT/placer.stats"
}

# ---------------------------------------------------------------------------- services

# chaos_launch SERVICE: starts it again with sr_start.  The tick notices when it runs: its
# log, after CH_LOGOFF, says so.  (sr_start looks for that line in the whole log, which
# already holds the one of the previous instance, so it returns at once; were it to wait
# for the new instance, the faults would only come later.)
chaos_launch() {
    local s=$1
    chaos_mark "$s" "start #$((${CH_STARTS[$s]:-0} + 1))"
    CH_LOGOFF[$s]=$(stat -c %s "$SR_OUT/$s.log")
    CH_STARTS[$s]=$((${CH_STARTS[$s]:-0} + 1))
    CH_STATE[$s]=starting
    sr_start "$s" 2>/dev/null || true
}

# chaos_reap SERVICE: waits for its dead process; CH_RC = its exit status.
chaos_reap() {
    CH_RC=0
    { wait "${SR_PID[$1]}"; } 2>/dev/null || CH_RC=$?
    unset "SR_PID[$1]"
}

# chaos_kill SERVICE DOWN_MS: SIGKILL, restarted DOWN_MS later.
chaos_kill() {
    local s=$1
    if [[ ${CH_STATE[$s]} == down ]]; then
        chaos_log "kill $s: skipped, it is down"
        return 0
    fi
    kill -KILL "${SR_PID[$s]}" 2>/dev/null || true
    chaos_reap "$s"
    chaos_clock
    chaos_mark "$s" "SIGKILL (it was ${CH_STATE[$s]}), restart in ${2}ms"
    chaos_log "SIGKILL $s (it was ${CH_STATE[$s]}), restart in ${2}ms"
    CH_KILLS[$s]=$((${CH_KILLS[$s]:-0} + 1))
    CH_STATE[$s]=down
    CH_AT[$s]=$((CH_NOW + $2))
}

# chaos_tick: restarts the services that are due, notices those that now run, and those
# that died by themselves; starts the crashed servers that are due; reaps their jobs.
chaos_tick() {
    local s log
    chaos_clock
    for s in "${SR_SERVICES[@]}"; do
        log=$SR_OUT/$s.log
        case ${CH_STATE[$s]} in
            down)
                ((CH_NOW >= CH_AT[$s])) && chaos_launch "$s"
                ;;
            starting)
                if grep -q ': running (queue' <(tail -c +$((CH_LOGOFF[$s] + 1)) "$log"); then
                    CH_STATE[$s]=up
                elif ! kill -0 "${SR_PID[$s]}" 2>/dev/null; then
                    chaos_reap "$s"
                    chaos_log "$s did not start (exit $CH_RC): $(tail -c +$((CH_LOGOFF[$s] + 1)) "$log" | grep -v '^===' | tail -n 1)"
                    CH_START_FAILS[$s]=$((${CH_START_FAILS[$s]:-0} + 1))
                    CH_STATE[$s]=down
                    CH_AT[$s]=$((CH_NOW + 1000))
                fi
                ;;
            up)
                if ! kill -0 "${SR_PID[$s]}" 2>/dev/null; then
                    chaos_reap "$s"
                    chaos_mark "$s" "died by itself (exit $CH_RC)"
                    chaos_log "VIOLATION: $s died by itself (exit $CH_RC); its log ends:"
                    tail -c +$((CH_LOGOFF[$s] + 1)) "$log" | tail -n 8 | sed 's/^/      /' | tee -a "$SR_OUT/chaos.log"
                    CH_SELF_EXITS[$s]=$((${CH_SELF_EXITS[$s]:-0} + 1))
                    CH_STATE[$s]=down
                    CH_AT[$s]=$((CH_NOW + 500))
                fi
                ;;
        esac
    done
    for s in "${CHAOS_SERVERS[@]}"; do
        if [[ -n ${CH_SRV_UP_AT[$s]:-} ]] && ((CH_NOW >= CH_SRV_UP_AT[$s])); then
            unset "CH_SRV_UP_AT[$s]"
            chaos_log "scripts/env up $s"
            "$ROOT/scripts/env" up "$s" >>"$SR_OUT/env-$s.log" 2>&1 </dev/null &
            CH_SRV_JOB[$s]=$!
        elif [[ -n ${CH_SRV_JOB[$s]:-} ]] && ! kill -0 "${CH_SRV_JOB[$s]}" 2>/dev/null; then
            chaos_srv_reap "$s"
        fi
    done
}

chaos_srv_reap() {
    local rc=0
    { wait "${CH_SRV_JOB[$1]}"; } 2>/dev/null || rc=$?
    unset "CH_SRV_JOB[$1]"
    if ((rc == 0)); then
        chaos_log "$1 is up again"
    else
        chaos_log "scripts/env up $1 failed (exit $rc; $SR_OUT/env-$1.log); trying again"
        CH_SRV_UP_AT[$1]=$((CH_NOW + 1000))
    fi
}

# chaos_server_down SERVER: it is crashed, or being started again.
chaos_server_down() { [[ -n ${CH_SRV_UP_AT[$1]:-}${CH_SRV_JOB[$1]:-} ]]; }

# chaos_crash SERVER DOWN_MS: crash it now; `scripts/env up SERVER` DOWN_MS later.
#   rabbitmq: SIGKILL of the broker's Erlang VM (beam.smp, whose pid the node writes to
#             .chorus/rabbitmq/beam.pid); its rabbitmq-server wrapper exits with it.
#   postgres: SIGKILL of the postmaster and, at the same instant, of its children (as a
#             machine crash would; a lone SIGKILLed postmaster leaves backends attached to
#             the shared memory, which keeps a new postmaster from starting).  The next
#             start recovers from the WAL.
chaos_crash() {
    local srv=$1 dir=${CHORUS_ENV_DIR:-$ROOT/.chorus} pid pids wrapper='' t
    case $srv in
        rabbitmq)
            read -r pid <"$dir/rabbitmq/beam.pid" || true
            [[ $(cat "/proc/$pid/comm" 2>/dev/null) == beam.smp ]] ||
                { chaos_log "crash rabbitmq: no beam.smp at pid '${pid:-}'; skipped"; return 0; }
            read -r wrapper <"$dir/rabbitmq/server.pid" || true
            CH_CRASHES[$srv]=$((${CH_CRASHES[$srv]:-0} + 1)) # before: the clean-up starts it again
            kill -KILL "$pid"
            pids=$pid
            ;;
        postgres)
            read -r pid <"$dir/pg/data/postmaster.pid" || true
            [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] ||
                { chaos_log "crash postgres: no postmaster at pid '${pid:-}'; skipped"; return 0; }
            pids="$pid $(pgrep -P "$pid" | tr '\n' ' ')"
            CH_CRASHES[$srv]=$((${CH_CRASHES[$srv]:-0} + 1))
            # shellcheck disable=SC2086  # a list of pids
            kill -KILL $pids 2>/dev/null || true
            ;;
    esac
    # scripts/env takes a live wrapper (or postmaster) for a running server: wait until
    # they are gone, for up to 10 s
    for ((t = 0; t < 100; t++)); do
        chaos_alive "$pid" || chaos_alive "$wrapper" || break
        sleep 0.1
    done
    chaos_clock
    chaos_log "CRASH $srv (SIGKILL pid $pids), up again in ${2}ms"
    CH_SRV_UP_AT[$srv]=$((CH_NOW + $2))
}

# chaos_alive PID: the process exists and is not a zombie (as pid_alive in scripts/env).
chaos_alive() {
    local stat
    [[ -n ${1:-} ]] || return 1
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# chaos_wait_servers TIMEOUT_S: ticks until no crashed server is still down.
chaos_wait_servers() {
    local t0=$SECONDS
    while chaos_server_down rabbitmq || chaos_server_down postgres; do
        ((SECONDS - t0 < $1)) || { chaos_log "a server is still down after ${1}s"; return 1; }
        chaos_tick
        sleep 0.1
    done
}

# chaos_run PLAN_FAULTS WINDOW_MS: runs the fault plan, each fault at its time (a server
# crash waits while the other server is still down, without holding up the kills), then
# ticks until the window has passed, every server is back, every service runs and the
# placer is done.
chaos_run() {
    local -a at=() what=() who=() arg=()
    local t w x y k pending s t0
    while read -r t w x y; do at+=("$t") what+=("$w") who+=("$x") arg+=("$y"); done <"$1"
    pending=${#at[@]}
    while ((pending)); do
        chaos_tick
        for k in "${!at[@]}"; do
            ((at[k] <= CH_NOW)) || continue
            if [[ ${what[k]} == crash ]]; then
                if chaos_server_down rabbitmq || chaos_server_down postgres; then continue; fi
                chaos_crash "${who[k]}" "${arg[k]}"
            else
                chaos_kill "${who[k]}" "${arg[k]}"
            fi
            unset "at[k]"
            pending=$((pending - 1))
        done
        sleep 0.1
    done
    while chaos_clock && ((CH_NOW < $2)); do chaos_tick; sleep 0.1; done
    chaos_wait_servers 120 || return 1
    t0=$SECONDS
    while :; do
        chaos_tick
        local all=1
        for s in "${SR_SERVICES[@]}"; do [[ ${CH_STATE[$s]} == up ]] || all=0; done
        if ((all)) && ! kill -0 "$CH_PLACER" 2>/dev/null; then break; fi
        if ((SECONDS - t0 > 90)); then
            chaos_log "services or placer still not done after 90 s"
            return 1
        fi
        sleep 0.1
    done
    { wait "$CH_PLACER"; } 2>/dev/null || true
    CH_PLACER=
    chaos_log "faults over; every service runs; $(cat "$SR_OUT/placer.stats")"
}

# ---------------------------------------------------------------------------- settling

# chaos_activity: a number that changes whenever any service handles or emits anything
# (rows of every inbox and outbox), and the count of outbox rows not yet published.
chaos_activity() {
    local q='' sep='' s
    for s in "${SR_SERVICES[@]}"; do
        q+="$sep(SELECT count(*) FROM $(sr_schema "$s").inbox) + (SELECT count(*) FROM $(sr_schema "$s").outbox)"
        sep=' + '
    done
    q="SELECT $q"
    sep=''
    local u=''
    for s in "${SR_SERVICES[@]}"; do
        u+="$sep(SELECT count(*) FROM $(sr_schema "$s").outbox WHERE published_at IS NULL)"
        sep=' + '
    done
    sr_psql "$q, $u"
}

# chaos_queued: messages in the namespace's queues other than the DLQs (retry queues
# included); 0 when the broker is not ours to inspect, -1 when it does not answer.
chaos_queued() {
    local list
    [[ -n ${CHORUS_CTL:-} ]] || { echo 0; return 0; }
    list=$("$ROOT/scripts/env" ctl list_queues -q --no-table-headers name messages </dev/null 2>&1) ||
        { echo -1; return 0; }
    awk -v ns="$CHORUS_NAMESPACE." 'index($1, ns) == 1 && $1 !~ /\.dlq$/ {n += $2} END {print n + 0}' <<<"$list"
}

# chaos_settle N TIMEOUT_S: until N orders exist, every saga is settled (sr_unsettled),
# the monitor agrees with every order, no message is queued, no outbox row unpublished,
# and nothing was handled across two looks a second apart.  Keeps ticking, so a service
# that dies by itself now is noticed and restarted.
chaos_settle() {
    local n=$1 timeout=$2 t0=$SECONDS next=0 last=-1 line total placed settled act unpub queued o m disagree
    o=$(sr_schema order) m=$(sr_schema monitor)
    while :; do
        chaos_tick
        line=$(sr_psql "SELECT count(*), count(*) FILTER (WHERE status = 'placed') FROM $o.order_summaries")
        IFS='|' read -r total placed <<<"$line"
        disagree=$(sr_psql "SELECT count(*) FROM $o.order_summaries os
                            LEFT JOIN $m.saga_instances si ON si.$(chaos_monitor_key) = os.order_id
                            WHERE si.state IS DISTINCT FROM os.status")
        IFS='|' read -r act unpub <<<"$(chaos_activity)"
        settled=0
        if ((total >= n && disagree == 0 && unpub == 0)) && (($(sr_unsettled) == 0)); then
            queued=$(chaos_queued)
            ((queued == 0 && act == last)) && settled=1
        else
            queued=-
        fi
        if ((settled)); then
            chaos_log "settled: $total orders, monitor agrees, nothing queued or unpublished"
            return 0
        fi
        if ((SECONDS >= next)); then
            next=$((SECONDS + 5))
            chaos_log "settling: orders $total/$n, in flight $placed, monitor differs on $disagree, unpublished $unpub, queued $queued"
        fi
        if ((SECONDS - t0 > timeout)); then
            chaos_log "not settled after ${timeout}s"
            return 1
        fi
        last=$act
        sleep 1
    done
}

# ---------------------------------------------------------------------------- invariants

# chaos_monitor_key: the column of saga_instances naming the order (aggregate_id; the
# monitor of the order service called it order_id).
chaos_monitor_key() {
    local k
    k=$(sr_psql "SELECT column_name FROM information_schema.columns
                 WHERE table_schema = '$(sr_schema monitor)' AND table_name = 'saga_instances'
                   AND column_name IN ('aggregate_id', 'order_id') ORDER BY 1 LIMIT 1")
    printf '%s' "${k:-aggregate_id}"
}

# chaos_inv NAME OK FIGURE: prints one invariant and counts a violation.
chaos_inv() {
    if [[ $2 == t || $2 == 1 ]]; then
        printf '  [ok]   %s: %s\n' "$1" "$3"
    else
        printf '  [FAIL] %s: %s\n' "$1" "$3"
        CH_VIOLATIONS=$((CH_VIOLATIONS + 1))
    fi
}

chaos_eq() { if [[ $1 == "$2" ]]; then printf '='; else printf '!='; fi; }

# chaos_show SQL: up to 10 offending rows, indented.
chaos_show() { sr_psql "$1 LIMIT 10" | sed 's/^/           /'; }

# chaos_check ORDERS_FILE N: every invariant, by SQL over the services' tables; N orders
# were planned.
chaos_check() {
    local file=$1 n=$2 o p i s m v q k sku line a b c d stock_values=''
    o=$(sr_schema order) p=$(sr_schema payment) i=$(sr_schema inventory)
    s=$(sr_schema shipping) m=$(sr_schema monitor)
    v=$(awk '{printf "%s(%s::uuid,%s)", (NR>1?",":""), "\x27" $1 "\x27", "\x27" $2 "\x27"}' "$file")
    local base="WITH plan(order_id, scenario) AS (VALUES $v)"

    # placed exactly once: every order of the plan exists, no other order does
    line=$(sr_psql "$base SELECT (SELECT count(*) FROM plan), (SELECT count(DISTINCT order_id) FROM plan),
                      (SELECT count(*) FROM plan JOIN $o.order_summaries USING (order_id)),
                      (SELECT count(*) FROM $o.order_summaries)")
    IFS='|' read -r a b c d <<<"$line"
    chaos_inv "each order placed exactly once" "$((a == b && b == c && c == d && a == n))" \
        "$n planned, $a placed, $b distinct, $c found, $d in order_summaries"

    line=$(sr_psql "SELECT count(*), count(*) FILTER (WHERE status = 'completed'),
                           count(*) FILTER (WHERE status = 'cancelled') FROM $o.order_summaries")
    IFS='|' read -r a b c <<<"$line"
    chaos_inv "every saga terminal" "$((b + c == a))" "$((b + c)) of $a (completed $b, cancelled $c)"
    ((b + c == a)) || chaos_show "SELECT order_id, status FROM $o.order_summaries WHERE status NOT IN ('completed', 'cancelled')"

    line=$(sr_psql "$base SELECT count(*) FILTER (WHERE p.scenario <> 'completed'),
                      count(*) FILTER (WHERE p.scenario <> 'completed' AND os.status <> 'cancelled'),
                      count(*) FILTER (WHERE p.scenario = 'completed'),
                      count(*) FILTER (WHERE p.scenario = 'completed' AND os.status = 'cancelled')
                    FROM plan p JOIN $o.order_summaries os USING (order_id)")
    IFS='|' read -r a b c d <<<"$line"
    chaos_inv "every order meant to fail is cancelled" "$((b == 0))" "$((a - b)) of $a"
    ((b == 0)) || chaos_show "$base SELECT p.order_id, p.scenario, os.status FROM plan p JOIN $o.order_summaries os USING (order_id) WHERE p.scenario <> 'completed' AND os.status <> 'cancelled'"
    printf '  [info] orders meant to complete: %s completed, %s cancelled (the deadline, under the faults): %s\n' \
        "$((c - d))" "$d" "$(sr_psql "$base SELECT coalesce(string_agg(r || ' ' || n, ', '), '-') FROM (SELECT coalesce(os.reason, '?') r, count(*) n
                   FROM plan p JOIN $o.order_summaries os USING (order_id)
                   WHERE p.scenario = 'completed' AND os.status = 'cancelled' GROUP BY 1) x")"

    # the pivot: a scheduled shipment only next to a completed order whose payment is
    # charged and whose stock is still reserved
    line=$(sr_psql "SELECT count(*) FROM $s.shipments sh JOIN $o.order_summaries os USING (order_id)
                    LEFT JOIN $p.payments py USING (order_id) LEFT JOIN $i.reservations r USING (order_id)
                    WHERE sh.status = 'scheduled' AND (os.status <> 'completed'
                       OR py.status IS DISTINCT FROM 'charged' OR r.status IS DISTINCT FROM 'reserved')")
    chaos_inv "no shipment next to a compensated step" "$((line == 0))" \
        "$line scheduled shipments of an order cancelled, refunded or released"
    ((line == 0)) || chaos_show "SELECT sh.order_id, 'order ' || os.status, 'payment ' || coalesce(py.status, '-'),
                   'stock ' || coalesce(r.status, '-'), 'shipment ' || sh.status, coalesce(os.reason, '')
            FROM $s.shipments sh JOIN $o.order_summaries os USING (order_id)
            LEFT JOIN $p.payments py USING (order_id) LEFT JOIN $i.reservations r USING (order_id)
            WHERE sh.status = 'scheduled' AND (os.status <> 'completed'
               OR py.status IS DISTINCT FROM 'charged' OR r.status IS DISTINCT FROM 'reserved')"

    # money
    line=$(sr_psql "SELECT (SELECT coalesce(sum(amount), 0) FROM $p.payments WHERE status = 'charged'),
                           (SELECT coalesce(sum(total), 0) FROM $o.order_summaries WHERE status = 'completed'),
                           (SELECT coalesce(sum(amount), 0) FROM $p.payments WHERE status = 'refunded'),
                           (SELECT count(*) FROM $p.payments WHERE status = 'declined')")
    IFS='|' read -r a b c d <<<"$line"
    chaos_inv "charged minus refunded equals the total of completed orders" "$((a == b))" \
        "charged $a $(chaos_eq "$a" "$b") completed $b (refunded $c, declined $d)"
    line=$(sr_psql "SELECT count(*) FROM $o.order_summaries os LEFT JOIN $p.payments py USING (order_id)
                    WHERE (os.status = 'completed') <> (py.status IS NOT DISTINCT FROM 'charged')
                       OR (os.status = 'completed' AND py.amount <> os.total)")
    chaos_inv "each completed order charged its total, no other order charged" "$((line == 0))" "$line differ"
    ((line == 0)) || chaos_show "SELECT os.order_id, os.status, os.total, py.status, py.amount FROM $o.order_summaries os
            LEFT JOIN $p.payments py USING (order_id) WHERE (os.status = 'completed') <> (py.status IS NOT DISTINCT FROM 'charged')
            OR (os.status = 'completed' AND py.amount <> os.total)"

    # stock: what was set, minus what is still reserved, is on hand; never below zero
    for sku in "${!CH_STOCK[@]}"; do
        stock_values+="${stock_values:+,}('$sku', ${CH_STOCK[$sku]}::bigint)"
    done
    while IFS='|' read -r sku a b c; do
        chaos_inv "stock of $sku consistent" "$((a - b == c && c >= 0))" \
            "set $a - reserved $b = $((a - b)) $(chaos_eq $((a - b)) "$c") on hand $c"
    done < <(sr_psql "WITH initial(sku, qty) AS (VALUES $stock_values),
                      held AS (SELECT it->>'sku' AS sku, sum((it->>'qty')::bigint) AS qty
                               FROM $i.reservations r, jsonb_array_elements(r.items) it
                               WHERE r.status = 'reserved' GROUP BY 1)
                      SELECT sku, coalesce(n.qty, 0), coalesce(h.qty, 0), coalesce(st.on_hand, 0)
                      FROM (SELECT sku FROM initial UNION SELECT sku FROM $i.stock) k
                      LEFT JOIN initial n USING (sku) LEFT JOIN held h USING (sku)
                      LEFT JOIN $i.stock st USING (sku) ORDER BY sku")
    line=$(sr_psql "SELECT count(*) FROM $o.order_summaries os LEFT JOIN $i.reservations r USING (order_id)
                    WHERE (os.status = 'completed') <> (r.status IS NOT DISTINCT FROM 'reserved')")
    chaos_inv "stock held exactly for completed orders" "$((line == 0))" "$line orders differ"
    ((line == 0)) || chaos_show "SELECT os.order_id, os.status, r.status FROM $o.order_summaries os LEFT JOIN $i.reservations r USING (order_id)
            WHERE (os.status = 'completed') <> (r.status IS NOT DISTINCT FROM 'reserved')"

    # shipments
    line=$(sr_psql "SELECT (SELECT count(*) FROM $o.order_summaries WHERE status = 'completed'),
                           (SELECT count(*) FROM $s.shipments WHERE status = 'scheduled'),
                           (SELECT count(*) FROM $o.order_summaries os WHERE os.status = 'completed'
                               AND (SELECT count(*) FROM $s.shipments sh WHERE sh.order_id = os.order_id
                                    AND sh.status = 'scheduled') <> 1),
                           (SELECT count(*) FROM $s.shipments sh LEFT JOIN $o.order_summaries os USING (order_id)
                             WHERE sh.status = 'scheduled' AND os.status IS DISTINCT FROM 'completed')")
    IFS='|' read -r a b c d <<<"$line"
    chaos_inv "one scheduled shipment per completed order, none otherwise" "$((c == 0 && d == 0))" \
        "$b scheduled for $a completed ($c completed without exactly one, $d for other orders)"

    # no effect twice: one payment row per order; no service emitted the same event type
    # twice for one order (its outbox); the monitor saw no event type twice in one saga
    line=$(sr_psql "SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM $p.payments GROUP BY order_id) x")
    chaos_inv "each order's payment charged at most once" "$((line <= 1))" "at most $line payment row per order"
    q=''
    for a in order payment inventory shipping; do
        q+="${q:+ UNION ALL }SELECT '$a', aggregate_id, routing_key, count(*) FROM $(sr_schema "$a").outbox GROUP BY 2, 3 HAVING count(*) > 1"
    done
    line=$(sr_psql "SELECT count(*) FROM ($q) x")
    b=$(sr_psql "SELECT count(*) FROM (SELECT 1 FROM $m.saga_steps GROUP BY correlation_id, event_type HAVING count(*) > 1) x")
    c=$(sr_psql "SELECT count(*) FROM (SELECT 1 FROM $o.events GROUP BY aggregate_id, event_type HAVING count(*) > 1) x")
    chaos_inv "no event emitted twice for one order" "$((line == 0 && b == 0 && c == 0))" \
        "$line in the outboxes, $b seen by the monitor, $c in the order event store"
    ((line == 0)) || chaos_show "$q"
    ((b == 0)) || chaos_show "SELECT correlation_id, event_type, count(*) FROM $m.saga_steps GROUP BY 1, 2 HAVING count(*) > 1"

    # the monitor
    k=$(chaos_monitor_key)
    line=$(sr_psql "SELECT (SELECT count(*) FROM $o.order_summaries),
                           (SELECT count(*) FROM $o.order_summaries os JOIN $m.saga_instances si ON si.$k = os.order_id
                             WHERE si.state = os.status),
                           (SELECT count(*) FROM (SELECT $k FROM $m.saga_instances GROUP BY 1 HAVING count(*) > 1) x),
                           (SELECT count(*) FROM $m.saga_instances si LEFT JOIN $o.order_summaries os ON si.$k = os.order_id
                             WHERE os.order_id IS NULL)")
    IFS='|' read -r a b c d <<<"$line"
    chaos_inv "the saga monitor agrees" "$((a == b && c == 0 && d == 0))" \
        "same state on $b of $a orders ($c orders with two instances, $d instances without an order)"
    ((a == b)) || chaos_show "SELECT os.order_id, os.status, coalesce(si.state, '-') FROM $o.order_summaries os
            LEFT JOIN $m.saga_instances si ON si.$k = os.order_id WHERE si.state IS DISTINCT FROM os.status"

    IFS='|' read -r a b <<<"$(chaos_activity)"
    chaos_inv "every outbox row published" "$((b == 0))" "$b unpublished"
    a=0
    for b in "${SR_SERVICES[@]}"; do a=$((a + ${CH_SELF_EXITS[$b]:-0})); done
    chaos_inv "no service died by itself" "$((a == 0))" "$a unexpected exits"
    if sr_dlq_empty >/dev/null 2>&1; then
        chaos_inv "every dead-letter queue empty" 1 "0 dead letters"
    else
        chaos_inv "every dead-letter queue empty" 0 "$(sr_dlq_empty 2>&1 | sed 's/^ *\[FAIL\] //' | paste -sd ';')"
    fi
}

# chaos_summary SEED N: one line with what happened.
chaos_summary() {
    local s kills='' starts=0 fails=0 dups
    for s in "${SR_SERVICES[@]}"; do
        kills+="${kills:+ }$s=${CH_KILLS[$s]:-0}"
        starts=$((starts + ${CH_STARTS[$s]:-1} - 1))
        fails=$((fails + ${CH_START_FAILS[$s]:-0}))
    done
    dups=$(sed -n 's/.*stats: handled=[0-9]* duplicates=\([0-9]*\).*/\1/p' "$SR_OUT"/*.log 2>/dev/null |
        awk '{n += $1} END {print n + 0}')
    printf 'chaos: N=%s seed=%s deadline=%sms kills: %s; restarts %d (%d failed to start); broker crashes %d, postgres crashes %d; %s; duplicates dropped by inboxes (final instances) %s; %d violations\n' \
        "$2" "$1" "$CH_DEADLINE_MS" "$kills" "$starts" "$fails" "${CH_CRASHES[rabbitmq]:-0}" \
        "${CH_CRASHES[postgres]:-0}" "$(cat "$SR_OUT/placer.stats" 2>/dev/null || echo 'placer did not finish')" \
        "$dups" "$CH_VIOLATIONS"
}

# chaos_cleanup: stops the placer and the services, starts again a server this run
# crashed (never stops one); waits for a `scripts/env up` still running.
chaos_cleanup() {
    local s
    [[ -n $CH_PLACER ]] && kill "$CH_PLACER" 2>/dev/null && { { wait "$CH_PLACER"; } 2>/dev/null || true; }
    for s in "${CHAOS_SERVERS[@]}"; do
        if [[ -n ${CH_SRV_JOB[$s]:-} ]]; then { wait "${CH_SRV_JOB[$s]}"; } 2>/dev/null || true; fi
        if ((${CH_CRASHES[$s]:-0})) && ! "$ROOT/scripts/env" status -q "$s"; then
            echo "chaos: starting $s again" >&2
            "$ROOT/scripts/env" up "$s" >>"$SR_OUT/env-$s.log" 2>&1 </dev/null ||
                echo "chaos: scripts/env up $s failed; see $SR_OUT/env-$s.log" >&2
        fi
    done
    for s in "${!SR_PID[@]}"; do kill -KILL "${SR_PID[$s]}" 2>/dev/null || true; done
    for s in "${!SR_PID[@]}"; do chaos_reap "$s"; done
}
