# shellcheck shell=bash
# common.sh — set-up shared by the end-to-end tests: the real servers that scripts/test
# started, the four services as separate processes, a namespace and schemas of their own.
set -euo pipefail
ROOT=${CHORUS_SOURCE_ROOT:?run through meson test (scripts/test)}
if [[ -z ${CHORUS_AMQP_URL:-} || -z ${PGHOST:-} ]]; then
    [[ ${CHORUS_REQUIRE_SERVERS:-} == 1 ]] && { echo "servers required but not set" >&2; exit 1; }
    echo "skipped: no servers (run ./scripts/test)"
    exit 77
fi
# shellcheck disable=SC1091
source "$ROOT/scripts/lib/saga-run.sh"

# The suites churn queues; see topology.retry.strategy in lib/docs/CONFIGURATION.md.
export CHORUS_CONF="${CHORUS_CONF:-retry.delays.ms=1s,2s,4s;retry.max.attempts=6;log.level=notice};topology.retry.strategy=at-most-once"

# e2e_init NAME: its own output dir, schema prefix and namespace.
e2e_init() {
    local tag
    tag="e2e_$1_$$"
    sr_init "$ROOT/build/e2e/$tag" "${tag}_" "$tag"
    trap e2e_cleanup EXIT
    sr_reset
    sr_provision
    "$(sr_bin inventory)" stock set SKU-A 1000000 >/dev/null
    "$(sr_bin inventory)" stock set SKU-B 1000000 >/dev/null
    "$(sr_bin inventory)" stock set RARE-1 5 >/dev/null
}

# shellcheck disable=SC2317  # called by the EXIT trap
e2e_cleanup() {
    local rc=$?
    ((${#SR_PID[@]})) && sr_stop >/dev/null 2>&1
    if ((rc == 0)); then
        sr_reset >/dev/null 2>&1 || true
    else
        echo "logs kept in $SR_OUT" >&2
    fi
    exit "$rc"
}

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# expect_eq WHAT GOT WANT
expect_eq() {
    [[ $2 == "$3" ]] || fail "$1: got '$2', want '$3'"
    echo "ok: $1 = $3"
}
