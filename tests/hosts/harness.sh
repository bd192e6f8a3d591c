#!/usr/bin/env bash
# orc's multi-host harness: N "hosts" on this machine, each a network namespace with
# its own address, its own Docker engine and (when started) its own `orc daemon`.
# The recipe is shared/HOSTS.md; read it for the why.
#
# As a command (as root):   tests/hosts/harness.sh <verb> [args...]
# As a bash library:        source tests/hosts/harness.sh; orch_up 3; orch_halt 2; ...
#
# Verbs (library function in brackets):
#   up N              [orch_up]        tear down leftovers, then make hosts 1..N: bridge
#                                      orcbr0 10.77.0.1/24, host n = netns orc-h<n> at
#                                      10.77.0.(10+n), one dockerd each; wait until each
#                                      engine answers; load the orc-test/* images of the
#                                      machine's own engine into each
#   down              [orch_down]      kill, unmount and delete everything; idempotent
#   dockerhost N      [orch_dockerhost] print host N's engine as unix://...
#   docker N ARGS...  [orch_docker]    run the docker CLI against host N's engine
#   exec N CMD...     [orch_exec]      run CMD in host N's network namespace
#   addr N            [orch_addr]      print host N's address (10.77.0.(10+N))
#   ns N              [orch_ns]        print host N's network namespace name
#   dir N             [orch_dir]       print host N's state directory
#   start-orc N ARGS  [orch_start_orc] start `$ORC_BIN daemon --data-dir <dir>/orc
#                                      --socket <dir>/orc.sock --docker-host unix://...
#                                      ARGS` in host N's namespace (log <dir>/orc.log,
#                                      pid <dir>/orc.pid); waits for the socket. The
#                                      daemon's arguments are those of
#                                      provision/orc-daemon-args.sh, as in orc.service
#   cluster M W       [orch_cluster]   orc on hosts 1..M+W, then provision/cluster.sh
#                                      (the Vagrant machines' script): init on host 1,
#                                      managers 2..M and workers after them join
#   stop-orc N        [orch_stop_orc]  SIGTERM the orc daemon, SIGKILL after 10 s
#   orc-sock N        [orch_orc_sock]  print the orc daemon's socket path
#   halt N            [orch_halt]      power loss: link down, kill -9 every process of
#                                      the host (namespace, engine cgroups, its
#                                      dockerd/containerd/shims/orc), then what a reboot
#                                      loses: mounts, exec-root, sockets, pid files,
#                                      links and firewall rules inside the namespace
#   restart N         [orch_restart]   start host N's dockerd again on the same
#                                      directories (link up again unless cut); not orc
#   cut N / heal N    [orch_cut/heal]  take host N's bridge-side veth down / up
#   status            [orch_status]    one line per host
#
# Environment:
#   ORC_HOSTS_DIR        base directory (default /tmp/orc-hosts); host N uses <base>/hN
#   ORC_BIN              the orc binary (default: `orc` on PATH, else target/debug/orc)
#   ORC_MAIN_DOCKER_HOST the engine the test images come from (default: DOCKER_HOST,
#                        else unix:///var/run/docker.sock)
#   ORC_HOSTS_IMAGES     images to copy into each host (default: every orc-test/* image)
#   ORC_HOSTS_TIMEOUT    seconds to wait for an engine (default 90)
#   ORC_START_TIMEOUT    seconds start-orc waits for the orc socket (default 30; 0: no wait)
#   ORC_HOSTS_STORAGE_DRIVER  storage driver of the hosts' engines (default: overlay2
#                        when an overlay mount works here, else fuse-overlayfs, else vfs)
#   ORC_HALT_LINK        `down` (default): halt also takes the link down, as a powered-off
#                        machine answers nothing; `up`: leave it (peers get RST at once)
#   ORC_HOSTS_LOGS_DIR   if set, `down` copies every host's logs there before deleting
#
# Names: netns orc-h<N>, veth orc-v<N> (bridge side; eth0 inside), bridge orcbr0,
# cgroup parent /orc-h<N>, containerd namespaces orc-h<N> and orc-h<N>-plugins,
# docker0 of host N: 172.30.N.1/24, its user-defined networks: 10.(100+N).0.0/16.
# Files of host N under <base>/hN: daemon.json (its own, never /etc/docker/daemon.json),
# docker/ (data-root), exec/ (exec-root), docker.sock, dockerd.log, tmp/ (TMPDIR of its
# processes), orc/ (orc's --data-dir), orc.sock, orc.log, orc.pid; markers cut, halted.
# Progress goes to stderr; stdout carries only what a verb prints (paths, addresses,
# start-orc: the daemon's pid).
#
# Pitfalls met on this machine (Debian 12, Engine 20.10, cgroup v1):
# - dockerd reads /etc/docker/daemon.json unless --config-file says otherwise, and a
#   key given both there and as a flag (data-root) stops it: each host has its own file.
# - each engine needs its own deprecated-key-path, or all share /etc/docker/key.json
#   and report the same engine ID.
# - daemons must not inherit the caller's descriptors: a Rust test reading the
#   harness's output through a pipe would wait forever for EOF (orch_spawn closes them).
# - a `grep PATTERN /proc/*/cmdline` finds itself: the pattern goes through a file.
# - containerd shims listen in the machine-wide /run/containerd/s, and unix sockets are
#   listed per network namespace: `ss` must run inside the host's namespace.
# - busybox-static's `wget -T` segfaults: bound wget with timeout(1) instead.
# Library use: every function checks what may fail and returns a status; each runs
# with `local -; set +e +o pipefail`, so a caller's `set -euo pipefail` is fine and
# comes back on return.

ORC_HOSTS_DIR=${ORC_HOSTS_DIR:-/tmp/orc-hosts}
ORC_HOSTS_DIR=$(realpath -m -- "$ORC_HOSTS_DIR")
ORCH_BRIDGE=orcbr0
ORCH_BRIDGE_ADDR=10.77.0.1
ORCH_SUBNET_BITS=24
ORCH_FW_COMMENT="orc-hosts"
ORCH_SELF=$(realpath -- "${BASH_SOURCE[0]}")
ORCH_REPO=$(cd "$(dirname "$ORCH_SELF")/../.." && pwd)

orch_log() { echo "[hosts] $*" >&2; }
orch_err() { echo "[hosts] error: $*" >&2; }

# --- names and paths ------------------------------------------------------------

orch_check_n() {
    if ! [[ "${1:-}" =~ ^[1-9][0-9]?$ ]]; then
        orch_err "host number must be 1..99, got '${1:-}'"
        return 2
    fi
}
orch_ns() { echo "orc-h$1"; }
orch_veth() { echo "orc-v$1"; }
orch_addr() { echo "10.77.0.$((10 + $1))"; }
orch_dir() { echo "$ORC_HOSTS_DIR/h$1"; }
orch_cgroup_name() { echo "orc-h$1"; }
orch_dockerhost() { echo "unix://$ORC_HOSTS_DIR/h$1/docker.sock"; }
orch_orc_sock() { echo "$ORC_HOSTS_DIR/h$1/orc.sock"; }
orch_nspath() { echo "/run/netns/orc-h$1"; }
orch_main_dockerhost() { echo "${ORC_MAIN_DOCKER_HOST:-${DOCKER_HOST:-unix:///var/run/docker.sock}}"; }

orch_docker() {
    local -; set +e +o pipefail
    local n=$1
    shift
    orch_check_n "$n" || return
    docker -H "$(orch_dockerhost "$n")" "$@"
}

orch_exec() {
    local -; set +e +o pipefail
    local n=$1
    shift
    orch_check_n "$n" || return
    if [ ! -e "$(orch_nspath "$n")" ]; then
        orch_err "host $n has no namespace (run: up)"
        return 1
    fi
    # not `ip netns exec`: it remounts /sys for the command (HOSTS.md)
    nsenter --net="$(orch_nspath "$n")" -- "$@"
}

orch_orc_bin() {
    local bin=${ORC_BIN:-}
    if [ -z "$bin" ]; then
        if command -v orc >/dev/null 2>&1; then
            bin=orc
        elif [ -x "$ORCH_REPO/target/debug/orc" ]; then
            bin=$ORCH_REPO/target/debug/orc
        else
            bin=orc
        fi
    fi
    if [[ "$bin" == */* ]]; then
        realpath -- "$bin"
    else
        command -v -- "$bin" || { orch_err "orc binary '$bin' not found (set ORC_BIN)"; return 1; }
    fi
}

# --- processes -----------------------------------------------------------------

orch_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

orch_pid_from() { # pidfile -> pid, if it names a live process
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    orch_alive "$pid" || return 1
    echo "$pid"
}

# orch_spawn LOG PIDFILE CMD...: start CMD detached (own session, stdin /dev/null,
# stdout+stderr appended to LOG, no inherited descriptors beyond 0-2) and record its
# pid in PIDFILE. Returns once the pid file is written.
orch_spawn() {
    local -; set +e +o pipefail
    local log=$1 pidfile=$2 i
    shift 2
    rm -f -- "$pidfile"
    (
        # close every inherited descriptor above 2 (a caller's pipes or our lock):
        # a daemon holding them would keep a caller waiting for EOF, or the lock held
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null; fi
        done
        exec setsid -f sh -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
            </dev/null >>"$log" 2>&1
    )
    for i in $(seq 1 100); do
        [ -s "$pidfile" ] && return 0
        sleep 0.05
    done
    orch_err "could not start: $*"
    return 1
}

# pids of every process that belongs to host N: those in its network namespace,
# those in its engine's cgroups (containers live in namespaces of their own), and
# any whose command line names its directory (for example after its netns vanished)
orch_host_pids() {
    local -; set +e +o pipefail
    local n=$1 dir cg
    dir=$(orch_dir "$n")
    {
        [ -e "$(orch_nspath "$n")" ] && ip netns pids "$(orch_ns "$n")" 2>/dev/null
        for cg in $(orch_cgroup_dirs "$n"); do
            find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
        done
        orch_pids_naming "$dir/"
    } | orch_filter_pids
}

# pids whose command line contains STRING (the pattern goes through a file, not
# argv: otherwise grep would find itself)
orch_pids_naming() {
    local -; set +e +o pipefail
    grep -lsF -f <(printf '%s\n' "$1") /proc/[0-9]*/cmdline 2>/dev/null |
        sed -n 's|^/proc/\([0-9]*\)/cmdline$|\1|p'
}

# drop duplicates, this shell and its ancestors
orch_filter_pids() {
    local -; set +e +o pipefail
    local p self=() pid
    p=$BASHPID
    while [ -n "$p" ] && [ "$p" -gt 1 ] 2>/dev/null; do
        self+=("$p")
        p=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null)
    done
    while read -r pid; do
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        local skip=0 s
        for s in "${self[@]}"; do [ "$s" = "$pid" ] && skip=1; done
        [ "$skip" = 0 ] && echo "$pid"
    done | sort -un
}

# kill -9 every process of host N until none is left
orch_kill_host() {
    local -; set +e +o pipefail
    local n=$1 i pids
    for i in $(seq 1 200); do
        pids=$(orch_host_pids "$n")
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.05
    done
    orch_err "host $n: processes survive kill -9: $(orch_host_pids "$n" | tr '\n' ' ')"
    return 1
}

# the sockets of host N's containerd shims: they live in the machine-wide
# /run/containerd/s, outside the host's directory, and outlive a kill -9. Each is
# named by sha256(<containerd address>/<namespace>/<container id>) (containerd 1.6),
# so they are found from the containers in the data root even after a crash; the
# listening ones are also asked for inside the namespace (unix sockets are listed
# per network namespace).
orch_shim_sockets() {
    local -; set +e +o pipefail
    local n=$1 dir nsp c h
    dir=$(orch_dir "$n")
    nsp=$(orch_nspath "$n")
    {
        for c in "$dir"/docker/containers/*/; do
            [ -d "$c" ] || continue
            h=$(printf '%s' "$dir/exec/containerd/containerd.sock/orc-h$n/$(basename "$c")" | sha256sum | cut -c1-64)
            [ -S "/run/containerd/s/$h" ] && echo "/run/containerd/s/$h"
        done
        if [ -e "$nsp" ] && command -v ss >/dev/null 2>&1; then
            nsenter --net="$nsp" -- ss -xlpn 2>/dev/null | awk '{print $5}' | grep '^/run/containerd/s/'
        fi
    } | sort -u
    return 0
}

# --- cgroups, mounts, firewall ----------------------------------------------------

orch_cgroup_dirs() { # every cgroup directory of host N's engine (v1 controllers or v2)
    local -; set +e +o pipefail
    local name d
    name=$(orch_cgroup_name "$1")
    for d in /sys/fs/cgroup/"$name" /sys/fs/cgroup/*/"$name"; do
        [ -d "$d" ] && echo "$d"
    done
    return 0
}

orch_rm_cgroups() {
    local -; set +e +o pipefail
    local n=$1 d i left
    for i in $(seq 1 50); do
        left=0
        for d in $(orch_cgroup_dirs "$n"); do
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$d" ] && left=1
        done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    orch_err "host $n: cgroup folders remain: $(orch_cgroup_dirs "$n" | tr '\n' ' ')"
    return 1
}

# mount points at or under DIR, deepest first
orch_mounts_under() {
    local -; set +e +o pipefail
    local dir=$1
    awk '{print $5}' /proc/self/mountinfo | while read -r mp; do
        mp=$(printf '%b' "$mp") # mountinfo escapes spaces as \040
        case "$mp" in "$dir" | "$dir"/*) echo "$mp" ;; esac
    done | awk '{print length($0) " " $0}' | sort -rn | cut -d' ' -f2- | uniq
}

orch_unmount_under() {
    local -; set +e +o pipefail
    local dir=$1 i mps mp
    for i in $(seq 1 20); do
        mps=$(orch_mounts_under "$dir")
        [ -z "$mps" ] && return 0
        while IFS= read -r mp; do
            umount -l -- "$mp" 2>/dev/null || umount -f -l -- "$mp" 2>/dev/null || true
        done <<<"$mps"
    done
    orch_err "mounts remain under $dir: $(orch_mounts_under "$dir" | tr '\n' ' ')"
    return 1
}

orch_fw() { iptables -w "$@" 2>/dev/null; }

orch_fw_add() {
    local -; set +e +o pipefail
    orch_fw_del
    orch_fw -I FORWARD -o "$ORCH_BRIDGE" -m comment --comment "$ORCH_FW_COMMENT" -j ACCEPT &&
        orch_fw -I FORWARD -i "$ORCH_BRIDGE" -m comment --comment "$ORCH_FW_COMMENT" -j ACCEPT
}

orch_fw_del() {
    local -; set +e +o pipefail
    local i dir rule
    for dir in -i -o; do
        for rule in "-m comment --comment $ORCH_FW_COMMENT -j ACCEPT" "-j ACCEPT"; do
            for i in $(seq 1 20); do
                # shellcheck disable=SC2086
                orch_fw -D FORWARD "$dir" "$ORCH_BRIDGE" $rule || break
            done
        done
    done
    return 0
}

# --- network ---------------------------------------------------------------------

orch_bridge_up() {
    local -; set +e +o pipefail
    if ! ip link show "$ORCH_BRIDGE" >/dev/null 2>&1; then
        ip link add "$ORCH_BRIDGE" type bridge forward_delay 0 stp_state 0 || return 1
    fi
    ip addr replace "$ORCH_BRIDGE_ADDR/$ORCH_SUBNET_BITS" dev "$ORCH_BRIDGE" || return 1
    ip link set "$ORCH_BRIDGE" up || return 1
    orch_fw_add || { orch_err "could not add the FORWARD rules"; return 1; }
}

orch_netns_up() {
    local -; set +e +o pipefail
    local n=$1 ns veth peer nsp
    ns=$(orch_ns "$n")
    veth=$(orch_veth "$n")
    peer="orc-p$n"
    nsp=$(orch_nspath "$n")
    ip netns add "$ns" || return 1
    ip link add "$veth" type veth peer name "$peer" || return 1
    ip link set "$peer" netns "$ns" || return 1
    ip link set "$veth" master "$ORCH_BRIDGE" || return 1
    ip link set "$veth" up || return 1
    nsenter --net="$nsp" -- ip link set "$peer" name eth0 || return 1
    nsenter --net="$nsp" -- ip addr add "$(orch_addr "$n")/$ORCH_SUBNET_BITS" dev eth0 || return 1
    nsenter --net="$nsp" -- ip link set lo up || return 1
    nsenter --net="$nsp" -- ip link set eth0 up || return 1
    nsenter --net="$nsp" -- ip route add default via "$ORCH_BRIDGE_ADDR" || return 1
}

# what a reboot clears inside the namespace: every link but lo and eth0 (the engine's
# docker0 and veths) and the firewall rules the engine made
orch_netns_reset() {
    local -; set +e +o pipefail
    local n=$1 nsp link t
    nsp=$(orch_nspath "$n")
    [ -e "$nsp" ] || return 0
    for link in $(nsenter --net="$nsp" -- ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
        case "$link" in lo | eth0) ;; *) nsenter --net="$nsp" -- ip link del "$link" 2>/dev/null || true ;; esac
    done
    for t in filter nat mangle raw; do
        nsenter --net="$nsp" -- iptables -w -t "$t" -F 2>/dev/null || true
        nsenter --net="$nsp" -- iptables -w -t "$t" -X 2>/dev/null || true
    done
    for t in INPUT FORWARD OUTPUT; do
        nsenter --net="$nsp" -- iptables -w -P "$t" ACCEPT 2>/dev/null || true
    done
    return 0
}

orch_link_up_unless_cut() {
    local n=$1
    if [ -e "$(orch_dir "$n")/cut" ]; then
        orch_log "host $n stays cut off (run: heal $n)"
        return 0
    fi
    ip link set "$(orch_veth "$n")" up
}

# --- engines ---------------------------------------------------------------------

orch_storage_driver() {
    local -; set +e +o pipefail
    local f=$ORC_HOSTS_DIR/storage-driver probe drv
    if [ -n "${ORC_HOSTS_STORAGE_DRIVER:-}" ]; then
        echo "$ORC_HOSTS_STORAGE_DRIVER"
        return
    fi
    if [ -s "$f" ]; then
        cat "$f"
        return
    fi
    probe=$ORC_HOSTS_DIR/.overlay-probe
    rm -rf "$probe"
    mkdir -p "$probe"/{l,u,w,m}
    if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
        umount -l "$probe/m"
        drv=overlay2
    elif command -v fuse-overlayfs >/dev/null 2>&1 && [ -e /dev/fuse ]; then
        drv=fuse-overlayfs
    else
        drv=vfs
    fi
    rm -rf "$probe"
    echo "$drv" >"$f"
    echo "$drv"
}

orch_write_engine_config() {
    local -; set +e +o pipefail
    local n=$1 dir drv
    dir=$(orch_dir "$n")
    drv=$(orch_storage_driver)
    mkdir -p "$dir/docker" "$dir/exec" "$dir/orc"
    # a config file of our own: otherwise dockerd reads the machine's
    # /etc/docker/daemon.json, whose data-root clashes with ours
    cat >"$dir/daemon.json" <<EOF
{
  "storage-driver": "$drv",
  "default-address-pools": [{"base": "10.$((100 + n)).0.0/16", "size": 24}],
  "deprecated-key-path": "$dir/key.json",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF
}

orch_engine_pid() { # the live dockerd of host N, if any
    local n=$1 pid
    pid=$(orch_pid_from "$(orch_dir "$n")/dockerd.spawn.pid") && { echo "$pid"; return 0; }
    pid=$(orch_pid_from "$(orch_dir "$n")/docker.pid") && { echo "$pid"; return 0; }
    return 1
}

orch_start_engine() {
    local -; set +e +o pipefail
    local n=$1 dir ns
    dir=$(orch_dir "$n")
    ns=$(orch_nspath "$n")
    if orch_engine_pid "$n" >/dev/null; then
        orch_err "host $n: dockerd is already running (pid $(orch_engine_pid "$n"))"
        return 1
    fi
    # stale pid files after a power loss would name someone else's pid by now
    rm -f "$dir/docker.pid" "$dir/exec/containerd/containerd.pid" "$dir/docker.sock"
    local csock="$dir/exec/containerd/containerd.sock.ttrpc"
    if [ "${#csock}" -gt 100 ]; then
        orch_err "ORC_HOSTS_DIR is too long for unix sockets: $csock"
        return 1
    fi
    echo "=== $(date -u '+%F %T') dockerd start ===" >>"$dir/dockerd.log"
    # TMPDIR: containerd writes its stack dumps (containerd.<pid>.stacks.log) there
    mkdir -p "$dir/tmp"
    orch_spawn "$dir/dockerd.log" "$dir/dockerd.spawn.pid" \
        nsenter --net="$ns" -- \
        env TMPDIR="$dir/tmp" \
        dockerd \
        --config-file "$dir/daemon.json" \
        --data-root "$dir/docker" \
        --exec-root "$dir/exec" \
        --host "unix://$dir/docker.sock" \
        --pidfile "$dir/docker.pid" \
        --cgroup-parent "/$(orch_cgroup_name "$n")" \
        --containerd-namespace "orc-h$n" \
        --containerd-plugins-namespace "orc-h$n-plugins" \
        --bip "172.30.$n.1/24" \
        --iptables=true \
        --ip-forward=true
}

orch_wait_engine() {
    local -; set +e +o pipefail
    local n=$1 dir deadline pid
    dir=$(orch_dir "$n")
    deadline=$((SECONDS + ${ORC_HOSTS_TIMEOUT:-90}))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if docker -H "$(orch_dockerhost "$n")" info --format '{{.ID}}' >/dev/null 2>&1; then
            return 0
        fi
        pid=$(cat "$dir/dockerd.spawn.pid" 2>/dev/null)
        if ! orch_alive "$pid"; then
            orch_err "host $n: dockerd exited; end of $dir/dockerd.log:"
            tail -n 25 "$dir/dockerd.log" >&2
            return 1
        fi
        sleep 0.2
    done
    orch_err "host $n: engine did not answer within ${ORC_HOSTS_TIMEOUT:-90} s; end of $dir/dockerd.log:"
    tail -n 25 "$dir/dockerd.log" >&2
    return 1
}

orch_load_images() {
    local -; set +e +o pipefail
    local main images tar n pids=() rc=0 i
    main=$(orch_main_dockerhost)
    if [ -n "${ORC_HOSTS_IMAGES:-}" ]; then
        images=$ORC_HOSTS_IMAGES
    else
        images=$(docker -H "$main" images --filter 'reference=orc-test/*' \
            --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -v '<none>' | sort -u | tr '\n' ' ' || true)
    fi
    if [ -z "${images// /}" ]; then
        orch_log "no orc-test/* images on $main: nothing to load (build them with tests/images/build.sh)"
        return 0
    fi
    tar=$ORC_HOSTS_DIR/images.tar
    # shellcheck disable=SC2086
    if ! docker -H "$main" save -o "$tar" $images; then
        orch_err "docker save $images failed"
        return 1
    fi
    for n in "$@"; do
        docker -H "$(orch_dockerhost "$n")" load -q -i "$tar" >/dev/null &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { orch_err "docker load into host ${*:i+1:1} failed"; rc=1; }
    done
    rm -f "$tar"
    [ "$rc" = 0 ] && orch_log "loaded into hosts $*: $images"
    return $rc
}

# --- verbs -----------------------------------------------------------------------

orch_up() {
    local -; set +e +o pipefail
    local count=${1:-} n hosts=()
    orch_check_n "$count" || return
    command -v dockerd >/dev/null || { orch_err "dockerd not found"; return 1; }
    orch_down || return 1
    mkdir -p "$ORC_HOSTS_DIR" || return 1
    orch_bridge_up || return 1
    for n in $(seq 1 "$count"); do hosts+=("$n"); done
    orch_log "storage driver of the hosts' engines: $(orch_storage_driver)"
    for n in "${hosts[@]}"; do
        orch_netns_up "$n" || { orch_err "host $n: network setup failed"; return 1; }
        orch_write_engine_config "$n" || return 1
    done
    for n in "${hosts[@]}"; do
        orch_start_engine "$n" || return 1
    done
    for n in "${hosts[@]}"; do
        orch_wait_engine "$n" || return 1
        orch_log "host $n: $(orch_ns "$n") $(orch_addr "$n") engine $(orch_dockerhost "$n")"
    done
    orch_load_images "${hosts[@]}" || return 1
    orch_log "up: ${#hosts[@]} host(s) under $ORC_HOSTS_DIR"
}

orch_halt() {
    local -; set +e +o pipefail
    local n=$1 dir
    orch_check_n "$n" || return
    dir=$(orch_dir "$n")
    if [ "${ORC_HALT_LINK:-down}" != up ]; then
        ip link set "$(orch_veth "$n")" down 2>/dev/null || true
    fi
    [ -d "$dir" ] && touch "$dir/halted"
    local sockets
    sockets=$(orch_shim_sockets "$n")
    orch_kill_host "$n" || return 1
    # shellcheck disable=SC2086
    [ -z "$sockets" ] || rm -f -- $sockets
    # what a reboot loses: mounts, the run directory, sockets and pid files
    orch_unmount_under "$dir" || return 1
    rm -rf --one-file-system "$dir/exec"
    rm -f "$dir/docker.sock" "$dir/docker.pid" "$dir/dockerd.spawn.pid" "$dir/orc.sock" "$dir/orc.pid"
    orch_netns_reset "$n"
    orch_rm_cgroups "$n" || return 1
    orch_log "host $n halted"
}

orch_restart() {
    local -; set +e +o pipefail
    local n=$1 dir
    orch_check_n "$n" || return
    dir=$(orch_dir "$n")
    if [ ! -e "$(orch_nspath "$n")" ] || [ ! -f "$dir/daemon.json" ]; then
        orch_err "host $n was never brought up (run: up)"
        return 1
    fi
    rm -f "$dir/halted"
    orch_link_up_unless_cut "$n" || return 1
    orch_start_engine "$n" || return 1
    orch_wait_engine "$n" || return 1
    orch_log "host $n: engine restarted"
}

orch_cut() {
    local -; set +e +o pipefail
    local n=$1
    orch_check_n "$n" || return
    ip link set "$(orch_veth "$n")" down || return 1
    touch "$(orch_dir "$n")/cut"
    orch_log "host $n cut off"
}

orch_heal() {
    local -; set +e +o pipefail
    local n=$1 dir
    orch_check_n "$n" || return
    dir=$(orch_dir "$n")
    rm -f "$dir/cut"
    if [ -e "$dir/halted" ]; then
        orch_log "host $n is halted: its link comes up with restart"
        return 0
    fi
    ip link set "$(orch_veth "$n")" up || return 1
    orch_log "host $n healed"
}

orch_start_orc() {
    local -; set +e +o pipefail
    local n=$1 dir bin pid deadline sock
    shift
    orch_check_n "$n" || return
    dir=$(orch_dir "$n")
    sock=$(orch_orc_sock "$n")
    [ -e "$(orch_nspath "$n")" ] || { orch_err "host $n is not up"; return 1; }
    if pid=$(orch_pid_from "$dir/orc.pid"); then
        orch_err "host $n: orc daemon already running (pid $pid)"
        return 1
    fi
    bin=$(orch_orc_bin) || return 1
    mkdir -p "$dir/orc" "$dir/tmp"
    rm -f "$sock"
    # the daemon's arguments come from the script the systemd unit (and so the
    # Vagrant machines) use too
    local args out
    out=$(bash "$ORCH_REPO/tests/hosts/provision/orc-daemon-args.sh" \
        "$dir/orc" "$sock" "$(orch_dockerhost "$n")") || { orch_err "host $n: orc-daemon-args.sh failed"; return 1; }
    mapfile -t args <<<"$out"
    echo "=== $(date -u '+%F %T') orc daemon start: $bin ${args[*]} $* ===" >>"$dir/orc.log"
    orch_spawn "$dir/orc.log" "$dir/orc.pid" \
        nsenter --net="$(orch_nspath "$n")" -- \
        env TMPDIR="$dir/tmp" \
        "$bin" "${args[@]}" \
        "$@" || return 1
    pid=$(cat "$dir/orc.pid")
    [ "${ORC_START_TIMEOUT:-30}" = 0 ] && { echo "$pid"; return 0; }
    deadline=$((SECONDS + ${ORC_START_TIMEOUT:-30}))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ -S "$sock" ]; then
            echo "$pid"
            return 0
        fi
        if ! orch_alive "$pid"; then
            orch_err "host $n: orc daemon exited; end of $dir/orc.log:"
            tail -n 25 "$dir/orc.log" >&2
            return 1
        fi
        sleep 0.1
    done
    orch_err "host $n: no orc socket $sock after ${ORC_START_TIMEOUT:-30} s; end of $dir/orc.log:"
    tail -n 25 "$dir/orc.log" >&2
    return 1
}

# cluster M W: orc on hosts 1..M+W (started unless running), then the provisioning
# script cluster.sh, as on Vagrant machines: init on host 1, managers 2..M and workers
# M+1..M+W join it (tokens in <base>/tokens)
orch_cluster() {
    local -; set +e +o pipefail
    local m=${1:-} w=${2:-} i role bin tokens
    [[ "$m" =~ ^[1-9][0-9]*$ && "$w" =~ ^[0-9]+$ ]] || { orch_err "usage: cluster MANAGERS WORKERS"; return 2; }
    bin=$(orch_orc_bin) || return 1
    tokens=$ORC_HOSTS_DIR/tokens
    rm -rf "$tokens"
    for i in $(seq 1 $((m + w))); do
        orch_pid_from "$(orch_dir "$i")/orc.pid" >/dev/null || orch_start_orc "$i" >/dev/null || return 1
    done
    ORC=$bin ORC_HOST=$(orch_orc_sock 1) CLUSTER_TIMEOUT=60 \
        bash "$ORCH_REPO/tests/hosts/provision/cluster.sh" init "$(orch_addr 1)" "$tokens" >&2 || return 1
    for i in $(seq 2 $((m + w))); do
        role=worker
        [ "$i" -le "$m" ] && role=manager
        ORC=$bin ORC_HOST=$(orch_orc_sock "$i") CLUSTER_TIMEOUT=60 \
            bash "$ORCH_REPO/tests/hosts/provision/cluster.sh" join "$role" "$(orch_addr 1)" "$tokens" >&2 || return 1
    done
    orch_log "cluster: $m managers, $w workers"
}

orch_stop_orc() {
    local -; set +e +o pipefail
    local n=$1 dir pid i
    orch_check_n "$n" || return
    dir=$(orch_dir "$n")
    pid=$(orch_pid_from "$dir/orc.pid") || { orch_log "host $n: no orc daemon running"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 100); do
        orch_alive "$pid" || break
        sleep 0.1
    done
    if orch_alive "$pid"; then
        orch_log "host $n: orc daemon ignored SIGTERM for 10 s; SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/orc.pid"
}

# every host number that has anything left on this machine
orch_known_hosts() {
    local -; set +e +o pipefail
    {
        ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^orc-h\([0-9][0-9]*\)$/\1/p'
        ls /run/netns 2>/dev/null | sed -n 's/^orc-h\([0-9][0-9]*\)$/\1/p'
        ls "$ORC_HOSTS_DIR" 2>/dev/null | sed -n 's/^h\([0-9][0-9]*\)$/\1/p'
        ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | sed -n 's/^orc-[vp]\([0-9][0-9]*\)$/\1/p'
        for d in /sys/fs/cgroup/orc-h* /sys/fs/cgroup/*/orc-h*; do
            [ -d "$d" ] && basename "$d" | sed -n 's/^orc-h\([0-9][0-9]*\)$/\1/p'
        done
        true
    } | sort -un
}

orch_down() {
    local -; set +e +o pipefail
    local n hosts bases=("$ORC_HOSTS_DIR") b pid root link sockets=() s
    hosts=$(orch_known_hosts)
    # an engine started under another ORC_HOSTS_DIR: learn its base from its command line
    for n in $hosts; do
        for pid in $( [ -e "$(orch_nspath "$n")" ] && ip netns pids "$(orch_ns "$n")" 2>/dev/null); do
            root=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -A1 -x -- '--data-root' | tail -n1 || true)
            [ -n "$root" ] && [[ "$root" == /*/h[0-9]*/docker ]] && bases+=("$(dirname "$(dirname "$root")")")
        done
    done
    # the shims' sockets live in the machine's /run/containerd/s: note ours
    for n in $hosts; do
        while read -r s; do [ -n "$s" ] && sockets+=("$s"); done < <(orch_shim_sockets "$n")
    done
    for n in $hosts; do
        ip link set "$(orch_veth "$n")" down 2>/dev/null || true
        orch_kill_host "$n" || true
    done
    for b in "${bases[@]}"; do
        for pid in $(orch_pids_naming "$b/h" | orch_filter_pids); do kill -9 "$pid" 2>/dev/null || true; done
    done
    if [ -n "${ORC_HOSTS_LOGS_DIR:-}" ] && [ -d "$ORC_HOSTS_DIR" ]; then
        local dest
        dest=$ORC_HOSTS_LOGS_DIR/$(date -u +%Y%m%dT%H%M%S)-$$
        mkdir -p "$dest"
        for n in $hosts; do
            for s in dockerd.log orc.log; do
                [ -f "$ORC_HOSTS_DIR/h$n/$s" ] && cp "$ORC_HOSTS_DIR/h$n/$s" "$dest/h$n-$s"
            done
        done
    fi
    for b in "${bases[@]}"; do
        orch_unmount_under "$b" || true
    done
    for n in $hosts; do
        ip netns delete "$(orch_ns "$n")" 2>/dev/null || true
        if [ -e "$(orch_nspath "$n")" ]; then
            umount -l "$(orch_nspath "$n")" 2>/dev/null || true
            rm -f "$(orch_nspath "$n")"
        fi
        ip link del "$(orch_veth "$n")" 2>/dev/null || true
        ip link del "orc-p$n" 2>/dev/null || true
        orch_rm_cgroups "$n" || true
    done
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^orc-[vp][0-9]+$'); do
        ip link del "$link" 2>/dev/null || true
    done
    ip link del "$ORCH_BRIDGE" 2>/dev/null || true
    orch_fw_del
    for s in "${sockets[@]}"; do rm -f -- "$s"; done
    # /run/netns is a mount `ip netns add` made; once empty, leave no trace of it
    if [ -d /run/netns ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
        if mountpoint -q /run/netns 2>/dev/null; then umount -l /run/netns 2>/dev/null || true; fi
        rmdir /run/netns 2>/dev/null || true
    fi
    for b in "${bases[@]}"; do
        if [ -n "$(orch_mounts_under "$b")" ]; then
            orch_err "mounts remain under $b; not deleting it"
            return 1
        fi
        rm -rf --one-file-system "$b"
    done
    local left
    left=$(orch_known_hosts | tr '\n' ' ')
    if [ -n "${left// /}" ] || ip link show "$ORCH_BRIDGE" >/dev/null 2>&1; then
        orch_err "down: leftovers remain for hosts: $left"
        return 1
    fi
    if [ -n "$hosts" ]; then orch_log "down: removed hosts $(echo "$hosts" | tr "\n" " ")"; fi
    return 0
}

orch_status() {
    local -; set +e +o pipefail
    local n dir engine orc link
    for n in $(orch_known_hosts); do
        dir=$(orch_dir "$n")
        if docker -H "$(orch_dockerhost "$n")" info --format '{{.ID}}' >/dev/null 2>&1; then
            engine=up
        else
            engine=down
        fi
        if orch_pid_from "$dir/orc.pid" >/dev/null; then orc="pid $(cat "$dir/orc.pid")"; else orc=none; fi
        link=$(ip -o link show "$(orch_veth "$n")" 2>/dev/null | grep -q 'state UP\|,UP' && echo up || echo down)
        [ -e "$dir/halted" ] && engine="$engine (halted)"
        echo "host $n: $(orch_ns "$n") $(orch_addr "$n") link $link engine $engine orc $orc"
    done
}

orch_usage() {
    sed -n '2,/^$/p' "$ORCH_SELF" | sed 's/^# \{0,1\}//' >&2
}

orch_main() {
    # no errexit: every function checks what may fail and returns its status
    set -u
    local verb=${1:-}
    [ $# -gt 0 ] && shift
    case "$verb" in
        up | down | halt | restart | cut | heal | start-orc | stop-orc | cluster)
            [ "$(id -u)" = 0 ] || { orch_err "$verb needs root"; exit 1; }
            # one mutating verb at a time; the lock is this file (nothing left behind)
            exec 9<"$ORCH_SELF"
            flock -w 900 9 || { orch_err "could not take the harness lock"; exit 1; }
            ;;
    esac
    case "$verb" in
        up) orch_up "$@" ;;
        down) orch_down ;;
        dockerhost) orch_check_n "${1:-}" && orch_dockerhost "$1" ;;
        docker) orch_docker "$@" ;;
        exec)
            orch_check_n "${1:-}" || exit 2
            local n=$1
            shift
            [ -e "$(orch_nspath "$n")" ] || { orch_err "host $n has no namespace (run: up)"; exit 1; }
            exec nsenter --net="$(orch_nspath "$n")" -- "$@"
            ;;
        addr) orch_check_n "${1:-}" && orch_addr "$1" ;;
        ns) orch_check_n "${1:-}" && orch_ns "$1" ;;
        dir) orch_check_n "${1:-}" && orch_dir "$1" ;;
        start-orc) orch_start_orc "$@" ;;
        cluster) orch_cluster "$@" ;;
        stop-orc) orch_stop_orc "${1:-}" ;;
        orc-sock) orch_check_n "${1:-}" && orch_orc_sock "$1" ;;
        halt) orch_halt "${1:-}" ;;
        restart) orch_restart "${1:-}" ;;
        cut) orch_cut "${1:-}" ;;
        heal) orch_heal "${1:-}" ;;
        status) orch_status ;;
        "" | -h | --help | help) orch_usage ;;
        *)
            orch_err "unknown verb '$verb'"
            orch_usage
            exit 2
            ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    orch_main "$@"
fi
