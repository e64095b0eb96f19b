# shellcheck shell=bash
# saga-run.sh — run the four services and the saga monitor, wait for every saga to settle,
# print each order across all services and check that they agree.  Sourced by scripts/demo
# and by the end-to-end tests (tests/e2e); expects ROOT, and the variables of
# .chorus/env.sh in the environment.  SR_BUILD is the build directory whose programs run
# (default $ROOT/build; scripts/bench uses its optimized build-bench).

SR_SERVICES=(order payment inventory shipping monitor)
declare -A SR_PID=()

# sr_init OUTDIR PREFIX NAMESPACE: where logs go, the schema prefix, the AMQP namespace.
sr_init() {
    SR_OUT=$1
    mkdir -p "$SR_OUT"
    export CHORUS_SCHEMA_PREFIX=$2
    export CHORUS_NAMESPACE=$3
    export CHORUS_SAGA_FILE=${CHORUS_SAGA_FILE:-$ROOT/sagas/order_fulfillment.json}
    # Short retry delays, so a carrier that stays down outlives the saga deadline
    # (8 s) and its retries end soon after the cancellation.
    export CHORUS_CONF=${CHORUS_CONF:-retry.delays.ms=1s,2s,4s;retry.max.attempts=6;log.level=notice}
    export PAYMENT_DECLINE_ABOVE=${PAYMENT_DECLINE_ABOVE:-100000}
}

sr_psql() {
    PGOPTIONS='-c client_min_messages=warning' psql -X -A -t -q -v ON_ERROR_STOP=1 -F '|' -c "$1"
}

sr_schema() { printf '%s%s' "$CHORUS_SCHEMA_PREFIX" "$1"; }

# sr_admin_cred: USER:PASS of the first URL of CHORUS_AMQP_URL (the broker's admin).
sr_admin_cred() {
    local cred=${CHORUS_AMQP_URL%%[, ]*}
    cred=${cred#amqp*://}
    printf '%s' "${cred%%@*}"
}

# sr_mgmt METHOD PATH [FILE]: the RabbitMQ management API as the admin of CHORUS_AMQP_URL,
# FILE the JSON body (the credentials go to curl on stdin, never on a command line).
sr_mgmt() {
    local cred
    cred=$(sr_admin_cred)
    curl -sSf -K - -X "$1" ${3:+-H 'content-type: application/json' --data-binary "@$3"} \
        "$CHORUS_MGMT_URL/api/$2" <<<"user = \"$cred\""
}

# The vhost of CHORUS_AMQP_URL, %-encoded for the management API ("/" when none).
sr_vhost() {
    local url=${CHORUS_AMQP_URL%%[, ]*} v
    v=${url#amqp*://}
    v=${v#*@}
    if [[ $v == */* ]]; then v=${v#*/}; else v=''; fi
    if [[ -n $v ]]; then printf '%s' "$v"; else printf '%%2F'; fi
}

# sr_can_admin: the management API answers the admin of CHORUS_AMQP_URL.
sr_can_admin() {
    [[ -n ${CHORUS_MGMT_URL:-} ]] && command -v curl >/dev/null && sr_mgmt GET overview >/dev/null 2>&1
}

# sr_mgmt_delete PATH...: DELETE each, in one curl (missing objects are no error).
sr_mgmt_delete() {
    (($#)) || return 0
    local cred p urls=()
    cred=$(sr_admin_cred)
    for p in "$@"; do urls+=("$CHORUS_MGMT_URL/api/$p"); done
    curl -s -K - -X DELETE "${urls[@]}" <<<"user = \"$cred\"" >/dev/null || true
}

# sr_drop_broker NS [USER...]: deletes every queue and exchange named "NS.*", and the
# broker users named, through the management API (no CLI start-up per object).
sr_drop_broker() {
    local ns=$1 vhost kind name u paths=()
    shift
    if ! sr_can_admin; then
        echo "note: the broker is not ours to administer; what namespace $ns declared is kept" >&2
        return 0
    fi
    vhost=$(sr_vhost)
    for kind in queues exchanges; do
        while read -r name; do
            paths+=("$kind/$vhost/$name")
        done < <(sr_mgmt GET "$kind/$vhost?columns=name" |
            jq -r --arg p "$ns." '.[].name | select(startswith($p)) | @uri')
    done
    paths+=("policies/$vhost/$(jq -rn --arg n "$ns.dlq-mirror" '$n|@uri')") # sr_provision's
    for u in "$@"; do paths+=("users/$(jq -rn --arg n "$u" '$n|@uri')"); done
    sr_mgmt_delete "${paths[@]}"
}

# Drops the services' schemas, roles and broker users, and the namespace's queues and
# exchanges: a clean slate.
sr_reset() {
    local s users=()
    for s in "${SR_SERVICES[@]}"; do
        sr_psql "DROP SCHEMA IF EXISTS $(sr_schema "$s") CASCADE" >/dev/null
        sr_psql "DROP ROLE IF EXISTS $(sr_schema "$s")" >/dev/null
        users+=("$CHORUS_NAMESPACE-$s")
    done
    sr_drop_broker "$CHORUS_NAMESPACE" "${users[@]}"
}

# sr_url_list USER:PASS FIRST SCHEME://HOST...: SCHEME://USER:PASS@HOST for each, comma-separated
# (amqps stays amqps), starting with the FIRST-th (modulo their number) and wrapping around.
sr_url_list() {
    local cred=$1 first=$2 n i out='' u
    shift 2
    n=$#
    local h=("$@")
    for ((i = 0; i < n; i++)); do
        u=${h[$(((first + i) % n))]}
        out+="${out:+,}${u%%://*}://$cred@${u#*://}"
    done
    printf '%s' "$out"
}

sr_secret() { head -c 18 /dev/urandom | base64 | tr -d '/+=' ; }

# Least privilege, derived from the saga declaration: each service gets a RabbitMQ user
# ("<namespace>-<service>", the default of security.user.template, so consumers can check
# that every event comes from its declared producer) that may configure and read only its
# own queues and exchanges and write to the events exchange only under its own
# routing-key prefix, and a PostgreSQL role owning only its own schema.
#
# The broker side is one definitions import (POST /api/definitions: RabbitMQ's own
# provisioning, in one request): every service's user, permissions and topic
# permissions, the exchanges, queues and bindings each participant would declare
# (chorus-saga topology, with CHORUS_CONF: the same arguments, so their own declaration
# at start is a no-op), and the policy that mirrors the dead-letter queues on every node
# of a cluster ($SR_OUT/definitions.json, passwords removed, is kept for reading).
# Credentials go to the services through CHORUS_AMQP_URL_<SERVICE> / CHORUS_PG_<SERVICE>
# and to $SR_OUT/credentials (mode 600); they are never printed.
sr_provision() {
    local s up pass perms urls tool parts=() defs=$SR_OUT/definitions.json k=0
    if ! sr_can_admin; then
        # One broker user for every service: the producer check (each event from the
        # user of its declared producer) cannot hold, so it is switched off.
        echo "note: the broker is not ours to administer; services share CHORUS_AMQP_URL," \
            "without the producer check" >&2
        export CHORUS_CONF="${CHORUS_CONF:+$CHORUS_CONF;}security.producer.check=off"
        return 0
    fi
    tool=${SR_BUILD:-$ROOT/build}/lib/tools/chorus-saga
    # host:port/vhost of each broker of CHORUS_AMQP_URL (a cluster: a list)
    local hosts=() u list
    IFS=', ' read -r -a list <<<"$CHORUS_AMQP_URL"
    for u in "${list[@]}"; do hosts+=("${u%%://*}://${u##*@}"); done
    : >"$SR_OUT/credentials"
    chmod 600 "$SR_OUT/credentials"
    (umask 077 && : >"$defs.secret")
    for s in "${SR_SERVICES[@]}"; do
        up=$(printf '%s' "$s" | tr 'a-z-' 'A-Z_')
        pass=$(sr_secret)
        perms=$("$tool" permissions "$CHORUS_SAGA_FILE" "$s" "$CHORUS_NAMESPACE")
        "$tool" topology "$CHORUS_SAGA_FILE" "$s" "$CHORUS_NAMESPACE" >"$SR_OUT/topology-$s.json"
        parts+=("$SR_OUT/topology-$s.json")
        jq -n --arg user "$CHORUS_NAMESPACE-$s" --arg pass "$pass" --arg perms "$perms" \
            --arg exchange "$CHORUS_NAMESPACE.events" '
            ($perms | split("\n") | map(select(. != "") | capture("^(?<key>[a-z]+) (?<value>.*)$"))
                    | from_entries) as $p
            | {users: [{name: $user, password: $pass, tags: ""}],
               permissions: [{user: $user, vhost: "/", configure: $p.configure,
                              write: $p.write, read: $p.read}],
               topic_permissions: [{user: $user, vhost: "/", exchange: $exchange,
                                    write: $p.topic, read: ".*"}]}' >>"$defs.secret"
        # the list rotated per service: on a cluster the services spread over its nodes
        urls=$(sr_url_list "$CHORUS_NAMESPACE-$s:$pass" "$k" "${hosts[@]}")
        k=$((k + 1))
        export "CHORUS_AMQP_URL_$up=$urls"
        sr_psql "CREATE ROLE $(sr_schema "$s") LOGIN PASSWORD '$pass'" >/dev/null
        sr_psql "CREATE SCHEMA $(sr_schema "$s") AUTHORIZATION $(sr_schema "$s")" >/dev/null
        sr_psql "REVOKE ALL ON SCHEMA $(sr_schema "$s") FROM PUBLIC" >/dev/null
        export "CHORUS_PG_$up=user=$(sr_schema "$s") password=$pass"
        printf 'CHORUS_AMQP_URL_%s=%s\nCHORUS_PG_%s=user=%s password=%s\n' \
            "$up" "$urls" "$up" "$(sr_schema "$s")" "$pass" \
            >>"$SR_OUT/credentials"
    done
    # one document: the users' part, every service's topology (shared objects once) and the
    # DLQ mirroring policy (ha-* applies to classic queues only: the DLQs; see README)
    jq -s --arg ns "$CHORUS_NAMESPACE" '
        (map(select(.users)) ) as $u | (map(select(.queues))) as $t
        | {users: [$u[].users[]], permissions: [$u[].permissions[]],
           topic_permissions: [$u[].topic_permissions[]],
           exchanges: ([$t[].exchanges[]] | unique_by(.name)),
           queues: ([$t[].queues[]] | unique_by(.name)),
           bindings: ([$t[].bindings[]] | unique),
           policies: [{vhost: "/", name: "\($ns).dlq-mirror",
                       pattern: "^\($ns | gsub("\\."; "\\."))\\.[^.]+\\.dlq$",
                       "apply-to": "queues", priority: 0,
                       definition: {"ha-mode": "all", "ha-sync-mode": "automatic"}}]}' \
        "$defs.secret" "${parts[@]}" >"$defs.all"
    chmod 600 "$defs.all"
    local rc=0
    sr_mgmt POST definitions "$defs.all" >/dev/null || rc=$?
    jq 'del(.users[].password)' "$defs.all" >"$defs"
    rm -f "$defs.secret" "$defs.all" "${parts[@]}"
    ((rc == 0)) || { echo "the broker refused the definitions import ($defs)" >&2; return 1; }
    # the command-line tools of a service (order place, inventory stock set) use its role too
}

# sr_bin SERVICE: its program (the saga monitor is build/services/monitor/monitor).
sr_bin() { printf '%s\n' "${SR_BUILD:-$ROOT/build}/services/$1/$1"; }

# sr_start [SERVICE...]: starts them in the background and waits until each runs.
# SERVICE@K is instance K of SERVICE (another process on the same queue and schema, its
# log SERVICE@K.log): scripts/bench --instances runs several of each.
sr_start() {
    local s log t
    (($#)) || set -- "${SR_SERVICES[@]}"
    for s in "$@"; do
        log=$SR_OUT/$s.log
        # SR_WRAPPER runs each service under a tool, e.g. "valgrind --leak-check=full"
        # shellcheck disable=SC2086
        ${SR_WRAPPER:-} "$(sr_bin "${s%@*}")" run >>"$log" 2>&1 &
        SR_PID[$s]=$!
    done
    for s in "$@"; do
        log=$SR_OUT/$s.log
        for ((t = 0; t < 600; t++)); do
            grep -q ': running (queue' "$log" 2>/dev/null && break
            if ! kill -0 "${SR_PID[$s]}" 2>/dev/null; then
                echo "$s did not start; its log ($log) ends:" >&2
                tail -n 15 "$log" >&2
                return 1
            fi
            sleep 0.1
        done
        ((t < 600)) || { echo "$s did not start within 60 s" >&2; return 1; }
    done
}

# sr_stop [SERVICE...]: SIGTERM, then waits; each must say it stopped cleanly.
sr_stop() {
    local s rc=0
    (($#)) || set -- "${!SR_PID[@]}"
    for s in "$@"; do
        [[ -n ${SR_PID[$s]:-} ]] && kill -TERM "${SR_PID[$s]}" 2>/dev/null
    done
    for s in "$@"; do
        [[ -n ${SR_PID[$s]:-} ]] || continue
        wait "${SR_PID[$s]}" 2>/dev/null || rc=1
        grep -q 'stopped cleanly' "$SR_OUT/$s.log" || rc=1
        unset "SR_PID[$s]"
    done
    return $rc
}

# Orders not yet settled: still placed, or cancelled with money or stock not yet given back.
sr_unsettled() {
    local o p i
    o=$(sr_schema order) p=$(sr_schema payment) i=$(sr_schema inventory)
    sr_psql "SELECT count(*) FROM $o.order_summaries os
             WHERE os.status = 'placed'
                OR (os.status = 'cancelled' AND (
                    EXISTS (SELECT 1 FROM $p.payments x WHERE x.order_id = os.order_id AND x.status = 'charged')
                 OR EXISTS (SELECT 1 FROM $i.reservations x WHERE x.order_id = os.order_id AND x.status = 'reserved')))"
}

# sr_wait N TIMEOUT_S [progress]: until N orders exist and all are settled.
sr_wait() {
    local n=$1 timeout=$2 progress=${3:-} t0=$SECONDS line o
    o=$(sr_schema order)
    while :; do
        line=$(sr_psql "SELECT count(*), count(*) FILTER (WHERE status = 'placed'),
                               count(*) FILTER (WHERE status = 'completed'),
                               count(*) FILTER (WHERE status = 'cancelled')
                        FROM $o.order_summaries")
        IFS='|' read -r total placed completed cancelled <<<"$line"
        if [[ -n $progress ]]; then
            printf '\r  %3ss  orders %4s/%s   in flight %4s   completed %4s   cancelled %4s ' \
                $((SECONDS - t0)) "$total" "$n" "$placed" "$completed" "$cancelled"
        fi
        if ((total >= n)) && (($(sr_unsettled) == 0)); then
            [[ -n $progress ]] && echo
            return 0
        fi
        if ((SECONDS - t0 > timeout)); then
            [[ -n $progress ]] && echo
            echo "not settled after ${timeout}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

# sr_report ORDERS_FILE [table]: checks that every service agrees; prints the table when asked.
sr_report() {
    local file=$1 table=${2:-} o p i s m values fails=0 name ok detail
    o=$(sr_schema order) p=$(sr_schema payment) i=$(sr_schema inventory)
    s=$(sr_schema shipping) m=$(sr_schema monitor)
    values=$(awk '{printf "%s(%s::uuid,%s)", (NR>1?",":""), "\x27" $1 "\x27", "\x27" $2 "\x27"}' "$file")
    local base="WITH expect(order_id, scenario) AS (VALUES $values)"
    if [[ -n $table ]]; then
        printf '\n  %-12s  %-16s  %-9s  %-15s  %-9s  %-9s  %-12s  %6s\n' "order" scenario order \
            payment inventory shipping "saga" "ms"
        sr_psql "$base SELECT right(e.order_id::text, 12), e.scenario, os.status,
                    coalesce(py.status || ' ' || py.amount, '-'), coalesce(r.status, '-'),
                    coalesce(sh.status, '-'), coalesce(si.state, '-'),
                    coalesce(round(extract(epoch FROM si.last_event_at - si.started_at) * 1000)::text, '-')
                 FROM expect e JOIN $o.order_summaries os USING (order_id)
                 LEFT JOIN $p.payments py USING (order_id)
                 LEFT JOIN $i.reservations r USING (order_id)
                 LEFT JOIN $s.shipments sh USING (order_id)
                 LEFT JOIN $m.saga_instances si ON si.aggregate_id = os.order_id
                 ORDER BY os.placed_at" |
            while IFS='|' read -r a b c d e f g h; do
                printf '  %-12s  %-16s  %-9s  %-15s  %-9s  %-9s  %-12s  %6s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h"
            done
        echo
        sr_psql "$base SELECT e.scenario, count(*), string_agg(DISTINCT os.status, ',')
                 FROM expect e JOIN $o.order_summaries os USING (order_id) GROUP BY 1 ORDER BY 1" |
            while IFS='|' read -r a b c; do printf '  %-16s %4s orders -> %s\n' "$a" "$b" "$c"; done
        echo
    fi
    while IFS='|' read -r name ok detail; do
        printf '  [%s] %s%s\n' "$([[ $ok == t ]] && echo ok || echo FAIL)" "$name" "${detail:+ ($detail)}"
        [[ $ok == t ]] || fails=$((fails + 1))
    done < <(sr_psql "$base,
        completed AS (SELECT order_id, total FROM $o.order_summaries WHERE status = 'completed'),
        placed_qty AS (SELECT ev.aggregate_id AS order_id, sum((it->>'qty')::bigint) AS qty
                       FROM $o.events ev, jsonb_array_elements(ev.event_data->'items') it
                       WHERE ev.event_type = 'OrderPlaced' GROUP BY 1),
        reserved_qty AS (SELECT sum((it->>'qty')::bigint) AS qty FROM $i.reservations r,
                         jsonb_array_elements(r.items) it WHERE r.status = 'reserved')
        SELECT 'every saga is terminal', count(*) = 0, count(*) || ' still placed'
          FROM $o.order_summaries WHERE status = 'placed'
        UNION ALL
        SELECT 'each order ended as its scenario says', count(*) = 0, count(*) || ' differ'
          FROM expect e JOIN $o.order_summaries os USING (order_id)
         WHERE os.status <> CASE e.scenario WHEN 'completed' THEN 'completed' ELSE 'cancelled' END
        UNION ALL
        SELECT 'charged minus refunded equals the total of completed orders',
               (SELECT coalesce(sum(amount), 0) FROM $p.payments WHERE status = 'charged')
                 = (SELECT coalesce(sum(total), 0) FROM completed),
               (SELECT coalesce(sum(amount), 0) FROM $p.payments WHERE status = 'charged') || ' vs '
                 || (SELECT coalesce(sum(total), 0) FROM completed)
        UNION ALL
        SELECT 'reserved stock equals the items of completed orders',
               (SELECT coalesce(qty, 0) FROM reserved_qty)
                 = (SELECT coalesce(sum(q.qty), 0) FROM placed_qty q JOIN completed USING (order_id)),
               (SELECT coalesce(qty, 0) FROM reserved_qty) || ' vs '
                 || (SELECT coalesce(sum(q.qty), 0) FROM placed_qty q JOIN completed USING (order_id))
        UNION ALL
        SELECT 'shipments exist only for completed orders, and for each of them',
               NOT EXISTS (SELECT 1 FROM $s.shipments sh LEFT JOIN completed c USING (order_id)
                           WHERE sh.status = 'scheduled' AND c.order_id IS NULL)
               AND NOT EXISTS (SELECT 1 FROM completed c LEFT JOIN $s.shipments sh
                               ON sh.order_id = c.order_id AND sh.status = 'scheduled'
                               WHERE sh.order_id IS NULL), ''
        UNION ALL
        SELECT 'no stock below zero', count(*) = 0, '' FROM $i.stock WHERE on_hand < 0
        UNION ALL
        SELECT 'the saga monitor agrees with the services', count(*) = 0, count(*) || ' differ'
          FROM $o.order_summaries os LEFT JOIN $m.saga_instances si ON si.aggregate_id = os.order_id
         WHERE si.state IS DISTINCT FROM os.status")
    return $((fails > 0))
}

# sr_dlq_empty: every service's DLQ is empty, as scripts/dlq counts them (AMQP, exact; any
# broker of CHORUS_AMQP_URL, a cluster's too).
sr_dlq_empty() {
    local s out n bad=0
    for s in "${SR_SERVICES[@]}"; do
        if ! out=$("$ROOT/scripts/dlq" --json --namespace "$CHORUS_NAMESPACE" list "$s" 2>"$SR_OUT/dlq.err") ||
            ! n=$(jq -r '[.services[].total] | add // 0' <<<"$out"); then
            echo "  [FAIL] cannot count $s's dead letters: $(cat "$SR_OUT/dlq.err")" >&2
            bad=1
            continue
        fi
        if [[ $n != 0 ]]; then
            echo "  [FAIL] $CHORUS_NAMESPACE.$s.dlq holds $n dead letters" >&2
            bad=1
        fi
    done
    ((bad == 0)) && echo "  [ok] every dead-letter queue is empty"
    return $bad
}
