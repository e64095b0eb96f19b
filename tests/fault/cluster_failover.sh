#!/usr/bin/env bash
# Failover on the local three-node RabbitMQ cluster (scripts/env cluster): the saga's four
# services and the monitor connect to the cluster through URL lists (each service's list
# starts at another node), orders stream in, and meanwhile
#
#   1. the node holding the order service's connection is stopped (SIGTERM),
#   2. the node holding payment's connection is SIGKILLed,
#   3. the node holding inventory's connection is frozen (SIGSTOP) for longer than the
#      heartbeat timeout, then thawed: a node cut off, as by a partition,
#
# each brought back before the next. Every service whose node went away must reconnect to
# another node of its list (the management API shows where each connection is; the time
# from the fault to the new connection is printed), and then every invariant of the chaos
# test holds (scripts/lib/chaos.sh: every saga terminal, money and stock exact, no
# duplicate effect or event, every outbox row published, the DLQs empty). The queues are
# checked to be replicated: quorum queues with a member on every node, the DLQs mirrored
# on all three by the provisioning policy.
#
# The cluster is started if it does not run, and stopped again if this test started it.
# shellcheck disable=SC1091
source "$(dirname "$0")/../e2e/common.sh"
source "$ROOT/scripts/lib/chaos.sh"
[[ -n ${CHORUS_CTL:-} ]] || { echo "skipped: the servers are not ours (no local cluster)"; exit 77; }

ENV=$ROOT/scripts/env
STARTED_CLUSTER=0
if ! "$ENV" cluster status >/dev/null 2>&1; then
    "$ENV" cluster up >&2 || fail "scripts/env cluster up failed"
    STARTED_CLUSTER=1
fi
source "$ROOT/.chorus/cluster.env"
MGMT=()
IFS=, read -r -a MGMT <<<"$CHORUS_CLUSTER_MGMT_URLS"
export CHORUS_AMQP_URL=$CHORUS_CLUSTER_URLS CHORUS_MGMT_URL=${MGMT[0]}
# a short heartbeat, so a frozen node is noticed within seconds (orders meant to complete
# may then be cancelled by the saga's deadline: consistent, and counted apart)
export CHORUS_CONF="$CHORUS_CONF;amqp.heartbeat.s=2"

cleanup_cluster() {
    local rc=$? n
    for n in 1 2 3; do "$ENV" cluster resume "$n" >/dev/null 2>&1 || true; done
    ((${#SR_PID[@]})) && sr_stop >/dev/null 2>&1
    if ((rc == 0)); then sr_reset >/dev/null 2>&1 || true; else echo "logs kept in $SR_OUT" >&2; fi
    if ((STARTED_CLUSTER)); then "$ENV" cluster down >&2 || true; fi
    exit "$rc"
}

tag="fault_cluster_$$"
sr_init "$ROOT/build/e2e/$tag" "${tag}_" "$tag"
trap cleanup_cluster EXIT
sr_reset
sr_provision
declare -A CH_STOCK=([SKU-A]=1000000 [SKU-B]=1000000 [RARE-1]=5)
for sku in "${!CH_STOCK[@]}"; do "$(sr_bin inventory)" stock set "$sku" "${CH_STOCK[$sku]}" >/dev/null; done
sr_start

# mgmt_get PATH: from the first node that answers (one may be down or frozen).
mgmt_get() {
    local m cred
    cred=$(sr_admin_cred)
    for m in "${MGMT[@]}"; do
        curl -sf -m 3 -K - "$m/api/$1" <<<"user = \"$cred\"" && return 0
    done
    return 1
}

# node_of SERVICE [EXCEPT]: the number (1..3) of a node SERVICE has a connection on, other
# than EXCEPT (a frozen node's connections stay listed until it is back), or nothing.
node_of() {
    mgmt_get "connections?columns=user,node" |
        jq -r --arg u "$CHORUS_NAMESPACE-$1" --arg x "chorus-c${2:-0}@localhost" \
            '[.[] | select(.user == $u and .node != $x) | .node][0] // empty' |
        sed -n 's/^chorus-c\([1-3]\)@.*/\1/p'
}

# fault KIND SERVICE: KIND (stop, kill, pause) the node of SERVICE's connection, wait until
# SERVICE is connected to another node, bring the node back.
declare -A RECONNECT_MS=()
fault() {
    local kind=$1 svc=$2 n t0
    local deadline=$((SECONDS + 20)) m
    until n=$(node_of "$svc") && [[ -n $n ]]; do
        ((SECONDS < deadline)) || fail "$svc has no connection on the cluster"
        sleep 0.5
    done
    t0=${EPOCHREALTIME/./}
    echo "=== $kind node $n, which holds $svc's connection"
    "$ENV" cluster "$kind" "$n" >&2 || fail "cluster $kind $n failed"
    # the service's own word: "reconnected to 127.0.0.1:PORT/" after the fault, on another
    # node (the management API's view of connections lags, and is partial while a node
    # is frozen)
    deadline=$((SECONDS + 60))
    local line='' ts port ms
    until [[ -n $line ]]; do
        ((SECONDS < deadline)) || fail "$svc did not reconnect to another node within 60 s"
        sleep 0.2
        while read -r ts line; do
            ms=$(date -d "$ts" +%s%3N 2>/dev/null) || continue
            ((ms * 1000 >= t0)) && break
            line=''
        done < <(grep -a ' reconnected to ' "$SR_OUT/$svc.log")
    done
    port=$(sed -n 's/.*reconnected to [0-9.]*:\([0-9]*\)\/.*/\1/p' <<<"$line")
    [[ $port =~ ^[0-9]+$ ]] || fail "$svc's reconnect line names no port: $line"
    m=$((port - ${CHORUS_CLUSTER_PORT:-5772} + 1))
    [[ $m != "$n" ]] || fail "$svc reconnected to node $n, the one that went away"
    RECONNECT_MS[$kind-$svc]=$((ms - t0 / 1000))
    echo "ok: $svc reconnected to node $m, $((RECONNECT_MS[$kind-$svc])) ms after the $kind of node $n"
    if [[ $kind == pause ]]; then
        sleep 2
        "$ENV" cluster resume "$n" >&2
    else
        "$ENV" cluster start "$n" >&2 || fail "node $n did not start again"
    fi
    # back in the cluster before the next fault (autoheal: a thawed node restarts and rejoins)
    deadline=$((SECONDS + 90))
    until [[ $(mgmt_get "nodes?columns=name,running,partitions" |
        jq '[.[] | select(.running and (.partitions | length) == 0)] | length') == 3 ]]; do
        ((SECONDS < deadline)) || fail "node $n did not rejoin the cluster within 90 s"
        sleep 0.5
    done
}

# the stream: 10 orders a second while the faults go on, each batch the demo's mix
: >"$SR_OUT/orders.txt"
(
    b=0
    while [[ ! -e $SR_OUT/stop-placing ]] && ((b < 40)); do
        b=$((b + 1))
        "$(sr_bin order)" simulate 10 --key-prefix "batch$b" >>"$SR_OUT/orders.txt" ||
            echo "placing batch $b failed" >&2
        sleep 1
    done
) &
PLACER=$!
sleep 3
fault stop order
fault kill payment
fault pause inventory
touch "$SR_OUT/stop-placing"
wait "$PLACER"
n=$(wc -l <"$SR_OUT/orders.txt")
echo "placed $n orders during the faults"
((n >= 50)) || fail "only $n orders placed"
sr_wait "$n" 120 || fail "the sagas did not settle"

# replication: quorum queues on all three nodes, the DLQs mirrored on the other two (a node
# back from the faults gets its mirrors again within seconds: waited for)
replication() {
    local q
    q=$(mgmt_get "queues?columns=name,type,members,slave_nodes" |
        jq -c --arg ns "$CHORUS_NAMESPACE." '[.[] | select(.name | startswith($ns))]')
    jq -r '"\([.[] | select(.type == "quorum" and ((.members // []) | length) < 3)] | length)" +
           " \([.[] | select((.name | endswith(".dlq")) and ((.slave_nodes // []) | length) < 2)] | length)" +
           " \([.[] | select(.name | endswith(".dlq"))] | length)"' <<<"$q"
}
t0=$SECONDS
until [[ $(replication) == "0 0 5" ]]; do
    ((SECONDS - t0 < 60)) || break
    sleep 1
done
read -r a b c <<<"$(replication)"
expect_eq "quorum queues with fewer than 3 members" "$a" 0
expect_eq "DLQs not mirrored on the two other nodes" "$b" 0
expect_eq "DLQs checked" "$c" 5

# each service that lost its node says it reconnected
for s in order payment inventory; do
    grep -q 'reconnected' "$SR_OUT/$s.log" || fail "$s's log shows no reconnect"
done

CH_VIOLATIONS=0
chaos_check "$SR_OUT/orders.txt" "$n"
((CH_VIOLATIONS == 0)) || fail "$CH_VIOLATIONS invariants violated"
printf 'failover: %s orders; reconnect after stop %s ms (order), kill %s ms (payment), pause %s ms (inventory)\n' \
    "$n" "${RECONNECT_MS[stop-order]}" "${RECONNECT_MS[kill-payment]}" "${RECONNECT_MS[pause-inventory]}"
sr_stop || fail "a service did not stop cleanly"
