#!/usr/bin/env bash
# The saga monitor is generic: run with tests/sagas/trip_booking.json (a saga with none of
# the order saga's services or events), it follows that saga from the declaration alone.
# Only the monitor runs; this test publishes each event as its declared producer would
# (its user_id), in order and, for a twin of each instance, shuffled and with duplicates:
#   confirmed the completion's event before any step's success -> completed, every step done
#   undone    a failure at the pivot, then the compensation -> compensating, then cancelled
#   refused   a cancellation request -> cancelling; the pivot refuses -> running again, the
#             pivot kept; then completed
#   accepted  the pivot accepts the request -> compensating, the pivot cancelled -> cancelled
#   stuck     not terminal, past metadata.deadline (or, without one, past the declared
#             deadline, or, with no deadline at all, idle too long): `monitor list --stuck`
#             shows it, `monitor status` says so
# Each shuffled twin ends exactly as its in-order twin; an event delivered again after the
# inbox forgot it is not counted twice.  An event from the wrong producer
# is dead-lettered, not counted.  And the monitor's source names no event of either saga.
# shellcheck disable=SC1091
source "$(dirname "$0")/common.sh"
export CHORUS_SAGA_FILE=$ROOT/tests/sagas/trip_booking.json
tag="e2e_monitor_$$"
sr_init "$ROOT/build/e2e/$tag" "${tag}_" "$tag"
# shellcheck disable=SC2034  # read by saga-run.sh
SR_SERVICES=(monitor) # the only participant; this script publishes as the producers
trap e2e_cleanup EXIT
sr_reset
sr_provision
ns=$CHORUS_NAMESPACE
m=$(sr_schema monitor)
MON=$(sr_bin monitor)
RAW=$ROOT/build/tests/e2e-inject-raw

# ---- nothing of any saga in the monitor's code ------------------------------------------
for saga in "$CHORUS_SAGA_FILE" "$ROOT/sagas/order_fulfillment.json"; do
    while read -r ev; do
        ! grep -qw "$ev" "$ROOT/services/monitor/main.c" || fail "the monitor's code names $ev"
    done < <("$ROOT/build/lib/tools/chorus-saga" bindings "$saga" monitor | sed 's/^[^.]*\.//' | sort -u)
done
echo "ok: services/monitor/main.c names no event of trip_booking or order_fulfillment"

sr_start monitor

# ---- publishing as the producers ----------------------------------------------------------
NOW=$(date +%s%3N)
n=0
declare -A CORR AGG T0 DL BODY
uuid() { cat /proc/sys/kernel/random/uuid; }
ts() { date -u -d "@$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))" +%Y-%m-%dT%H:%M:%S.%3NZ; }
# instance NAME [START_OFFSET_MS [DEADLINE]]: a saga instance started at now + offset,
# whose events carry the deadline (in ms since the epoch; default: ten minutes after the
# start, so none is stuck however slow the test; "none": no deadline)
instance() {
    CORR[$1]=$(uuid)
    AGG[$1]=$(uuid)
    T0[$1]=$((NOW + ${2:-0}))
    DL[$1]=${3:-$((T0[$1] + 600000))}
}
# send NAME PRODUCER TYPE AT_MS [AGGREGATE]: publishes a new event of instance NAME as
# PRODUCER, AT_MS after its start; send again with the same NAME and TYPE: the very same
# message (a duplicate)
send() {
    local key=$1/$3 meta uid=()
    if [[ -z ${BODY[$key]:-} ]]; then
        n=$((n + 1))
        meta="\"correlation_id\":\"${CORR[$1]}\""
        [[ ${DL[$1]} == none ]] || meta+=",\"deadline\":\"$(ts "${DL[$1]}")\""
        printf -v BODY["$key"] '{"event_id":"%s","event_type":"%s","aggregate_id":"%s","version":1,"timestamp":"%s","data":{},"metadata":{%s}}' \
            "$(printf '0190f7d2-0000-7000-8000-%012d' "$n")" "$3" "${5:-${AGG[$1]}}" "$(ts $((T0[$1] + $4)))" "$meta"
    fi
    # the producer's identity: RabbitMQ checks user_id (the admin may impersonate)
    [[ -z ${CHORUS_CTL:-} ]] || uid=(--user-id "$ns-$2")
    "$RAW" "$ns" "$2.$3" "${uid[@]}" "${BODY[$key]}" >>"$SR_OUT/publish.log" 2>&1 ||
        fail "publishing $3 as $2 (see $SR_OUT/publish.log)"
}
# settle NAME EVENTS: until the monitor counted that many events of the instance
settle() {
    local t got
    for ((t = 0; t < 150; t++)); do
        got=$(sr_psql "SELECT events FROM $m.saga_instances WHERE correlation_id = '${CORR[$1]}'")
        [[ $got == "$2" ]] && return 0
        sleep 0.1
    done
    fail "$1: the monitor counted '${got:-no}' events, not $2"
}
# state NAME: "state events span_ms step=state,..." as the monitor's tables say
state() {
    sr_psql "SELECT i.state || ' ' || i.events || ' '
                    || round(extract(epoch FROM i.last_event_at - i.started_at) * 1000) || ' '
                    || coalesce((SELECT string_agg(step || '=' || state, ',' ORDER BY step)
                                 FROM $m.saga_instance_steps s
                                 WHERE s.correlation_id = i.correlation_id), '-')
             FROM $m.saga_instances i WHERE i.correlation_id = '${CORR[$1]}'"
}
status() { "$MON" status "$1" >"$SR_OUT/status.txt" || fail "monitor status $1 failed"; }
# shows LINE...: `monitor status` (in status.txt) has each line (an ERE, whole line)
shows() {
    local l
    for l in "$@"; do
        grep -qE "^$l\$" "$SR_OUT/status.txt" || { cat "$SR_OUT/status.txt" >&2; fail "status lacks /$l/"; }
    done
}

# ---- confirmed: completed, the in-order twin and the shuffled twin ------------------------------
instance confirmed
send confirmed flights SeatReserved 0
send confirmed hotels HotelBooked 100
send confirmed mailer ItinerarySent 200
send confirmed flights TripConfirmed 300
settle confirmed 4
want='completed 4 300 book-hotel=done,reserve-seat=done,send-itinerary=done'
expect_eq "confirmed in order" "$(state confirmed)" "$want"
instance confirmed2
other=$(uuid) # the itinerary's aggregate: the instance keeps its first event's
send confirmed2 flights TripConfirmed 300
send confirmed2 mailer ItinerarySent 200 "$other"
send confirmed2 hotels HotelBooked 100
send confirmed2 hotels HotelBooked 100
send confirmed2 flights SeatReserved 0
send confirmed2 flights TripConfirmed 300
settle confirmed2 4
expect_eq "confirmed shuffled, with duplicates" "$(state confirmed2)" "$want"
expect_eq "confirmed shuffled: its aggregate, of the first event" \
    "$(sr_psql "SELECT aggregate_id FROM $m.saga_instances WHERE correlation_id = '${CORR[confirmed2]}'")" "${AGG[confirmed2]}"
status "${AGG[confirmed]}"
shows "saga trip_booking  instance ${CORR[confirmed]}" "  aggregate ${AGG[confirmed]}" "  state completed" \
    "  4 events, 300 ms from first to last; started $(ts "${T0[confirmed]}"), ended $(ts $((T0[confirmed] + 300))), deadline $(ts "${DL[confirmed]}")" \
    " +1\. reserve-seat +flights +done" " +2\. book-hotel +hotels +done +\(the pivot\)" \
    " +3\. send-itinerary +mailer +done" \
    " +\+ +0 ms  flights +SeatReserved" " +\+ +100 ms  hotels +HotelBooked" \
    " +\+ +200 ms  mailer +ItinerarySent" " +\+ +300 ms  flights +TripConfirmed"
echo "ok: monitor status by aggregate id shows the steps and the timeline"

# ---- undone: compensating, then cancelled ---------------------------------------------------
instance undone
send undone flights SeatReserved 0
send undone hotels HotelUnavailable 80
settle undone 2
expect_eq "undone after the failure" "$(state undone)" "compensating 2 80 book-hotel=failed,reserve-seat=done"
status "${CORR[undone]}"
shows "  state compensating" " +2\. book-hotel +hotels +failed +\(the pivot\)" " +3\. send-itinerary +mailer +not reached"
send undone flights SeatReleased 150
settle undone 3
want='cancelled 3 150 book-hotel=failed,reserve-seat=compensated'
expect_eq "undone after the compensation" "$(state undone)" "$want"
instance undone2
send undone2 flights SeatReleased 150
send undone2 flights SeatReleased 150
send undone2 hotels HotelUnavailable 80
send undone2 flights SeatReserved 0
settle undone2 3
expect_eq "undone shuffled" "$(state undone2)" "$want"

# ---- refused: cancelling, running again, completed ------------------------------------------
instance refused
send refused flights SeatReserved 0
send refused flights TripCancellationRequested 50
settle refused 2
expect_eq "refused after the request" "$(state refused)" "cancelling 2 50 reserve-seat=done"
send refused hotels HotelBooked 60
send refused hotels HotelCancellationRefused 70
settle refused 4
expect_eq "refused after the refusal" "$(state refused)" "running 4 70 book-hotel=kept,reserve-seat=done"
status "${CORR[refused]}"
shows "  state running" " +2\. book-hotel +hotels +kept \(refused\) +\(the pivot\)"
send refused mailer ItinerarySent 100
send refused flights TripConfirmed 150
settle refused 6
want='completed 6 150 book-hotel=kept,reserve-seat=done,send-itinerary=done'
expect_eq "refused at the end" "$(state refused)" "$want"
instance refused2
send refused2 hotels HotelCancellationRefused 70
send refused2 flights TripCancellationRequested 50
settle refused2 2
# the answer came first: the request is no longer open
expect_eq "refused shuffled: the refusal, then the request" "$(state refused2)" "running 2 20 book-hotel=kept"
send refused2 flights TripConfirmed 150
send refused2 flights SeatReserved 0
send refused2 mailer ItinerarySent 100
send refused2 hotels HotelBooked 60
send refused2 flights TripCancellationRequested 50
settle refused2 6
expect_eq "refused shuffled" "$(state refused2)" "$want"

# ---- accepted: the pivot cancelled, compensating, cancelled -----------------------------------
instance accepted
send accepted flights SeatReserved 0
send accepted flights TripCancellationRequested 40
send accepted hotels HotelCancelled 50
settle accepted 3
expect_eq "accepted" "$(state accepted)" "compensating 3 50 book-hotel=cancelled,reserve-seat=done"
status "${CORR[accepted]}"
shows "  state compensating" " +2\. book-hotel +hotels +cancelled \(accepted\) +\(the pivot\)"
send accepted flights SeatReleased 90
settle accepted 4
want='cancelled 4 90 book-hotel=cancelled,reserve-seat=compensated'
expect_eq "accepted at the end" "$(state accepted)" "$want"
instance accepted2
send accepted2 flights SeatReleased 90
send accepted2 hotels HotelCancelled 50
send accepted2 flights SeatReserved 0
send accepted2 flights TripCancellationRequested 40
send accepted2 hotels HotelCancelled 50
settle accepted2 4
expect_eq "accepted shuffled" "$(state accepted2)" "$want"

# ---- stuck -------------------------------------------------------------------------------------
instance stuck -65000 $((NOW - 60000)) # its deadline passed a minute ago
send stuck flights SeatReserved 0
send stuck hotels HotelBooked 30
instance late -60000 none # no metadata.deadline: the declared 5 s from its first event
send late flights SeatReserved 0
instance young # running, its deadline ten minutes away
send young flights SeatReserved 0
settle stuck 2
settle late 1
settle young 1
expect_eq "stuck instance's deadline_at (from metadata.deadline)" \
    "$(sr_psql "SELECT round(extract(epoch FROM deadline_at) * 1000) FROM $m.saga_instances WHERE correlation_id = '${CORR[stuck]}'")" \
    "$((NOW - 60000))"
"$MON" list --stuck >"$SR_OUT/stuck.txt" || fail "monitor list --stuck failed"
expect_eq "monitor list --stuck" "$(awk '{print $1, $3, $4}' "$SR_OUT/stuck.txt" | sort)" \
    "$(printf '%s\n' "${CORR[stuck]} stuck (running)" "${CORR[late]} stuck (running)" | sort)"
"$MON" list >"$SR_OUT/list.txt" || fail "monitor list failed"
expect_eq "monitor list: every instance" "$(grep -c . "$SR_OUT/list.txt")" 11
grep -qE "^${CORR[young]}  ${AGG[young]}  running " "$SR_OUT/list.txt" || fail "young is not listed as running"
status "${CORR[stuck]}"
shows "  state stuck \(running\): its deadline passed [0-9]+ ms ago" " +2\. book-hotel +hotels +done +\(the pivot\)"
echo "ok: past the deadline and not terminal is stuck; a running instance before it is not"
# read with a declaration without a deadline: "late" has none, and is stuck for its idle
# minute ("stuck" has its metadata.deadline)
jq 'del(.deadline)' "$CHORUS_SAGA_FILE" >"$SR_OUT/no_deadline.json"
expect_eq "stuck without a declared deadline, idle for 30 s" \
    "$(CHORUS_SAGA_FILE=$SR_OUT/no_deadline.json CHORUS_MONITOR_IDLE_MS=30000 "$MON" list --stuck | awk '{print $1}' | sort)" \
    "$(printf '%s\n' "${CORR[stuck]}" "${CORR[late]}" | sort)"
expect_eq "stuck without a declared deadline, idle for 2 minutes" \
    "$(CHORUS_SAGA_FILE=$SR_OUT/no_deadline.json CHORUS_MONITOR_IDLE_MS=120000 "$MON" list --stuck | awk '{print $1}')" \
    "${CORR[stuck]}"
# a grace as long as a day: nothing is stuck
expect_eq "stuck with a grace of a day" "$(CHORUS_MONITOR_GRACE_MS=86400000 "$MON" list --stuck | grep -c .)" 0

# ---- an event the inbox has forgotten (pruned, as after store.inbox.retention.hours) ----------
# the monitor's own timeline (saga_steps, by event id) still counts it once
instance forgotten
send forgotten flights SeatReserved 0
settle forgotten 1
again=$(jq -r .event_id <<<"${BODY[forgotten/SeatReserved]}")
sr_psql "DELETE FROM $m.inbox WHERE event_id = '$again'" >/dev/null
send forgotten flights SeatReserved 0
send forgotten hotels HotelBooked 100
settle forgotten 2
for ((t = 0; t < 150; t++)); do # the copy handled: the inbox has it again
    [[ $(sr_psql "SELECT count(*) FROM $m.inbox WHERE event_id = '$again'") == 1 ]] && break
    sleep 0.1
done
((t < 150)) || fail "the copy of $again was not handled"
expect_eq "an event the inbox forgot, again" "$(state forgotten)" "running 2 100 book-hotel=done,reserve-seat=done"
expect_eq "its timeline" "$(sr_psql "SELECT count(*) FROM $m.saga_steps WHERE correlation_id = '${CORR[forgotten]}'")" 2

# ---- the wrong producer is refused --------------------------------------------------------------
if [[ -n ${CHORUS_CTL:-} ]]; then
    # HotelBooked under hotels' routing key, but with flights' user_id
    forged=$(uuid)
    "$RAW" "$ns" hotels.HotelBooked --user-id "$ns-flights" \
        "{\"event_id\":\"$(uuid)\",\"event_type\":\"HotelBooked\",\"aggregate_id\":\"$(uuid)\",\"version\":1,\"timestamp\":\"$(ts "$NOW")\",\"data\":{},\"metadata\":{\"correlation_id\":\"$forged\"}}" \
        >>"$SR_OUT/publish.log" 2>&1 || fail "publishing the forged HotelBooked"
    for _ in $(seq 100); do
        [[ $("$ROOT/scripts/env" ctl list_queues -q --no-table-headers name messages |
            awk -v q="$ns.monitor.dlq" '$1 == q {print $2}') == 1 ]] && break
        sleep 0.1
    done
    expect_eq "dead letters at the monitor" "$("$ROOT/scripts/env" ctl list_queues -q --no-table-headers name messages |
        awk -v q="$ns.monitor.dlq" '$1 == q {print $2}')" 1
    expect_eq "instances from the forged event" \
        "$(sr_psql "SELECT count(*) FROM $m.saga_instances WHERE correlation_id = '$forged'")" 0
fi

# ---- the commands ------------------------------------------------------------------------------
"$ROOT/scripts/saga" status "${CORR[refused]}" >"$SR_OUT/status.txt" || fail "scripts/saga status failed"
shows "saga trip_booking  instance ${CORR[refused]}" "  state completed"
echo "ok: scripts/saga status reads the generic monitor"
rc=0; "$MON" status "$(uuid)" 2>/dev/null || rc=$?
expect_eq "monitor status of an unknown instance: exit" "$rc" 1
for args in "status" "status not-a-uuid" "list --all" "status a b" "frobnicate"; do
    rc=0
    # shellcheck disable=SC2086
    "$MON" $args >/dev/null 2>"$SR_OUT/usage.txt" || rc=$?
    ((rc == 2)) || fail "monitor $args: exit $rc, not 2"
    grep -q '^usage: monitor' "$SR_OUT/usage.txt" || fail "monitor $args: no usage"
done
echo "ok: bad arguments print the usage and exit 2"

sr_stop monitor || fail "the monitor did not stop cleanly"
dups=$(sed -n 's/.*stats: handled=[0-9]* duplicates=\([0-9]*\).*/\1/p' "$SR_OUT/monitor.log" | tail -n 1)
((${dups:-0} >= 5)) || fail "the monitor's inbox dropped ${dups:-no} duplicates, not 5"
echo "ok: the inbox dropped $dups duplicate deliveries"
echo "generic monitor ok"
