#!/usr/bin/env bash
# private_clone.sh — scripts/env starts PostgreSQL from a clone under a mode-700 directory
# (root's home is 0700). As root PostgreSQL runs as the user chorus, who cannot enter such a
# directory; scripts/env must cope without changing the permissions of any directory above
# the clone. Three runs, each from a fresh data directory, on a free port (not the main
# run's servers, which this test leaves alone):
#   1. as it comes: with CAP_DAC_READ_SEARCH in the bounding set, the data stays in the
#      clone's .chorus/pg and the postmaster holds the capability as an ambient one;
#   2. without that capability (dropped from the bounding set, as in a default Docker
#      container): the data goes to a mode-700 directory of chorus's under /var/lib/chorus,
#      .chorus/pg links to it, and 'purge postgres' deletes it;
#   3. CHORUS_PG_ACCESS=outside: the same, by choice.
# Needs no running servers; only meaningful as root. The scripts/env under test is this
# tree's (what this meson run tests), in a clone of the committed tree.
set -euo pipefail
ROOT=${CHORUS_SOURCE_ROOT:?run through meson test (scripts/test)}
if [[ $EUID -ne 0 ]]; then
    echo "skipped: needs root (PostgreSQL then runs as the user chorus)"
    exit 77
fi
# The clone's scripts/env must start its own PostgreSQL, not use the main run's servers.
unset CHORUS_AMQP_URL CHORUS_MGMT_URL PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGPASSFILE \
    PGSSLMODE CHORUS_ENV_DIR CHORUS_CTL CHORUS_PG_ACCESS

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

tmp=$(mktemp -d)
chmod 700 "$tmp"
clone=$tmp/chorus
env_sh() { "$clone/scripts/env" "$@"; }

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local rc=$?
    if [[ -x $clone/scripts/env ]]; then
        env_sh purge postgres >/dev/null 2>&1 || env_sh down postgres >/dev/null 2>&1 || true
    fi
    rm -rf -- "$tmp"
    exit "$rc"
}
trap cleanup EXIT

git clone --quiet "$ROOT" "$clone"
cp "$ROOT/scripts/env" "$clone/scripts/env"
cd "$clone"

# A port nothing listens on, away from the main run's 5432.
port=
for ((p = 20000 + RANDOM % 20000, n = 0; n < 200; p++, n++)); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p && break; fi
done
[[ -n $port ]] || fail "no free port found"

# Mode, owner and ACL mark of the clone and every directory above it.
ancestors() {
    local d=$clone
    while :; do
        # shellcheck disable=SC2012  # ls shows the ACL mark (+) that stat does not
        printf '%s %s\n' "$d" "$(ls -ld -- "$d" | awk '{print $1, $3, $4}')"
        [[ $d == / ]] && break
        d=$(dirname -- "$d")
    done
}
before=$(ancestors)

# check_up WHAT: PostgreSQL from the clone answers on $port, as user chorus.
check_up() {
    env_sh status -q postgres || fail "$1: status says PostgreSQL does not run"
    local got
    # shellcheck disable=SC1091
    got=$(source .chorus/env.sh && [[ $PGPORT == "$port" ]] && psql -X -Atc 'SELECT 1') ||
        fail "$1: psql with the clone's env.sh failed"
    [[ $got == 1 ]] || fail "$1: SELECT 1 gave '$got'"
    pm=$(head -n1 .chorus/pg/data/postmaster.pid)
    [[ $(awk '/^Uid:/ {print $2}' "/proc/$pm/status") == "$(id -u chorus)" ]] ||
        fail "$1: the postmaster (pid $pm) does not run as chorus"
    echo "ok: $1: PostgreSQL answers on 127.0.0.1:$port (postmaster $pm, user chorus)"
}

# check_outside WHAT: .chorus/pg links to a mode-700 directory of chorus's under /var/lib/chorus.
check_outside() {
    [[ -L .chorus/pg ]] || fail "$1: .chorus/pg is not a symlink"
    outside=$(readlink .chorus/pg)
    [[ $outside == /var/lib/chorus/pg.* ]] || fail "$1: .chorus/pg links to $outside"
    [[ $(stat -c '%a %U' "$outside") == '700 chorus' ]] ||
        fail "$1: $outside is $(stat -c '%a %U' "$outside"), want 700 chorus"
    echo "ok: $1: data in $outside (mode 700, user chorus)"
}

# check_purged WHAT: 'purge postgres' stopped it and deleted the directory outside the clone.
check_purged() {
    env_sh purge postgres
    [[ ! -e $outside && ! -L .chorus/pg ]] || fail "$1: purge left $outside or .chorus/pg behind"
    if env_sh status -q postgres; then fail "$1: PostgreSQL still runs after purge"; fi
    echo "ok: $1: purge deleted $outside"
}

# 1. With the capability (the usual case for root on a machine or VM).
read -r _ capbnd < <(grep '^CapBnd:' /proc/self/status)
if (((16#$capbnd >> 2) & 1)); then
    CHORUS_PG_PORT=$port env_sh up postgres
    check_up capability
    [[ -d .chorus/pg/data && ! -L .chorus/pg ]] || fail "capability: data is not in .chorus/pg"
    read -r _ capamb < <(grep '^CapAmb:' "/proc/$pm/status")
    (((16#$capamb >> 2) & 1)) || fail "capability: the postmaster's CapAmb is $capamb, no CAP_DAC_READ_SEARCH"
    echo "ok: capability: data in $clone/.chorus/pg, postmaster CapAmb $capamb"
    env_sh down postgres
    if env_sh status -q postgres; then fail "capability: PostgreSQL still runs after down"; fi
    env_sh purge postgres
else
    echo "note: CAP_DAC_READ_SEARCH is not in the bounding set; run 1 skipped"
fi

# 2. Without it: as if in a container that lacks it.
CHORUS_PG_PORT=$port setpriv --bounding-set=-dac_read_search -- "$clone/scripts/env" up postgres
check_up "no capability"
check_outside "no capability"
check_purged "no capability"

# 3. Outside the clone by choice.
CHORUS_PG_ACCESS=outside CHORUS_PG_PORT=$port env_sh up postgres
check_up outside
check_outside outside
check_purged outside

after=$(ancestors)
[[ $before == "$after" ]] || fail "directories above the clone changed:"$'\n'"$before"$'\n'"-> now:"$'\n'"$after"
echo "ok: directories above the clone unchanged:"
while read -r line; do echo "    $line"; done <<<"$before"
