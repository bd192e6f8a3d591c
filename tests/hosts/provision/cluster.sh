#!/usr/bin/env bash
# Makes a cluster from nodes whose daemons run: `init` on the first manager, which
# writes the join tokens to a directory the others read, then `join` on each other
# node (retrying until the manager answers). Idempotent: a node already in a cluster
# is left alone. Used by the Vagrantfile and by tests/hosts/harness.sh cluster.
#
# Usage: cluster.sh init ADVERTISE_ADDR TOKEN_DIR
#        cluster.sh join manager|worker MANAGER_ADDR TOKEN_DIR
# Environment: ORC (the orc binary, default `orc`), ORC_HOST (the daemon's socket,
#              default /run/orc/orc.sock), CLUSTER_TIMEOUT (seconds, default 300)
set -euo pipefail
orc=${ORC:-orc}
timeout=${CLUSTER_TIMEOUT:-300}
usage() { sed -n '2,11p' "$0" >&2; exit 2; }

# Whether the node is in a cluster; a daemon that does not answer (busy, or
# restarting) is asked again for a few seconds before the answer counts as "no".
active() {
    local out i
    for i in 1 2 3 4 5; do
        if out=$("$orc" info --format json 2>/dev/null); then
            grep -q '"state": "active"' <<<"$out"
            return
        fi
        sleep 1
    done
    return 1
}

wait_daemon() {
    local deadline=$((SECONDS + timeout))
    until "$orc" info >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "cluster.sh: the orc daemon does not answer" >&2; exit 1; }
        sleep 1
    done
}

case "${1:-}" in
init)
    [ $# -eq 3 ] || usage
    addr=$2 dir=$3
    wait_daemon
    mkdir -p "$dir"
    if active; then
        echo "cluster.sh: already in a cluster"
    elif "$orc" init --advertise-addr "$addr"; then
        echo "cluster.sh: initialised at $addr"
    else
        # refused because it was in a cluster after all: as above
        active || exit 1
        echo "cluster.sh: already in a cluster"
    fi
    "$orc" join-token worker -q >"$dir/worker.tmp" && mv "$dir/worker.tmp" "$dir/worker"
    "$orc" join-token manager -q >"$dir/manager.tmp" && mv "$dir/manager.tmp" "$dir/manager"
    # a shared folder may not keep modes (vboxsf)
    chmod 600 "$dir/worker" "$dir/manager" 2>/dev/null || true
    echo "cluster.sh: join tokens in $dir"
    ;;
join)
    [ $# -eq 4 ] || usage
    role=$2 manager=$3 dir=$4
    case "$role" in manager | worker) ;; *) usage ;; esac
    wait_daemon
    if active; then
        echo "cluster.sh: already in a cluster"
        exit 0
    fi
    deadline=$((SECONDS + timeout))
    until [ -s "$dir/$role" ]; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "cluster.sh: no $role token in $dir" >&2; exit 1; }
        sleep 1
    done
    until "$orc" join --token "$(cat "$dir/$role")" "$manager"; do
        # a join that failed on the client's side may still have been done
        active && break
        [ "$SECONDS" -lt "$deadline" ] || { echo "cluster.sh: could not join $manager" >&2; exit 1; }
        sleep 2
    done
    echo "cluster.sh: joined $manager as a $role"
    ;;
*) usage ;;
esac
