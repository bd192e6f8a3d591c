#!/usr/bin/env bash
# Installs orc as /usr/local/bin/orc and runs `orc daemon` as the systemd unit
# orc.service (arguments from orc-daemon-args.sh). Idempotent.
#
# Usage (as root): install-orc.sh [BINARY]
#   BINARY   an orc binary to install; without it, orc is built from the repository
#            this script is in (cargo build --release --locked, into CARGO_TARGET_DIR,
#            default <repo>/target/provision). The Rust toolchain is the one on PATH
#            (or in ~/.cargo/bin), else Debian's cargo, else rustup's stable, whichever
#            first meets Cargo.toml's rust-version.
# Environment: ORC_DATA_DIR (/var/lib/orc), ORC_SOCKET (/run/orc/orc.sock),
#              ORC_DOCKER_HOST (unix:///var/run/docker.sock),
#              ORC_SOCKET_GROUP (unset: the socket stays root's, mode 0600; a group:
#              the unit gives that group the socket, mode 0660, with
#              orc-socket-group.sh, so its users run orc without sudo — they are then
#              as powerful as root, as with docker's group)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
data=${ORC_DATA_DIR:-/var/lib/orc}
sock=${ORC_SOCKET:-/run/orc/orc.sock}
docker_host=${ORC_DOCKER_HOST:-unix:///var/run/docker.sock}
group=${ORC_SOCKET_GROUP:-}
export DEBIAN_FRONTEND=noninteractive
export PATH="${HOME:-/root}/.cargo/bin:$PATH"

apt_updated=0
apt_install() {
    [ "$apt_updated" = 1 ] || { apt-get update -q; apt_updated=1; }
    apt-get install -y -q --no-install-recommends "$@"
}

# the toolchain Cargo.toml asks for: rust-version = "X.Y"
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo/Cargo.toml" | head -n1)
rust_ok() {
    local have
    command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1 || return 1
    [ -n "$need" ] || return 0
    have=$(rustc --version | awk '{print $2}')
    [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ]
}

bin=${1:-}
if [ -z "$bin" ]; then
    if ! rust_ok && ! command -v cargo >/dev/null 2>&1; then
        # Debian's rustc when it is recent enough (bookworm's 1.63 is not)
        [ "$apt_updated" = 1 ] || { apt-get update -q; apt_updated=1; }
        deb=$(apt-cache policy rustc 2>/dev/null | awk '/Candidate:/ {print $2}' | sed 's/^[0-9]*://; s/[^0-9.].*//')
        if [ -n "$deb" ] && [ "$(printf '%s\n%s\n' "${need:-0}" "$deb" | sort -V | head -n1)" = "${need:-0}" ]; then
            apt_install cargo rustc build-essential ca-certificates
        fi
    fi
    if ! rust_ok; then
        echo "install-orc: $(rustc --version 2>/dev/null || echo 'no rustc') is older than $need; installing rustup's stable" >&2
        apt_install curl ca-certificates build-essential
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y -q --profile minimal --default-toolchain stable --no-modify-path
        hash -r
        rust_ok || { echo "install-orc: no Rust toolchain >= $need" >&2; exit 1; }
    fi
    command -v cc >/dev/null 2>&1 || apt_install build-essential
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/provision}
    echo "install-orc: building with $(cargo --version) into $CARGO_TARGET_DIR" >&2
    (cd "$repo" && cargo build --release --locked)
    bin=$CARGO_TARGET_DIR/release/orc
fi
install -m 0755 "$bin" /usr/local/bin/orc.new
mv /usr/local/bin/orc.new /usr/local/bin/orc
mkdir -p "$data" "$(dirname "$sock")"

args=$(bash "$here/orc-daemon-args.sh" "$data" "$sock" "$docker_host" | tr '\n' ' ')
post=""
if [ -n "$group" ]; then
    getent group "$group" >/dev/null || { echo "install-orc: no group $group" >&2; exit 1; }
    # the daemon makes its socket 0600 on every start: share it again once it answers
    install -D -m 0755 "$here/orc-socket-group.sh" /usr/local/lib/orc/orc-socket-group.sh
    post="ExecStartPost=/usr/local/lib/orc/orc-socket-group.sh $group $sock"
fi
unit=/etc/systemd/system/orc.service
cat >"$unit.new" <<UNIT
[Unit]
Description=orc daemon (container orchestrator)
After=docker.service network-online.target
Wants=docker.service network-online.target

[Service]
ExecStart=/usr/local/bin/orc ${args% }
$post
Restart=always
RestartSec=1
LimitNOFILE=1048576
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
mv "$unit.new" "$unit"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable orc.service >/dev/null
    systemctl restart orc.service
    for _ in $(seq 1 60); do
        [ -S "$sock" ] && break
        sleep 0.5
    done
    [ -S "$sock" ] || { echo "install-orc: no socket $sock; journalctl -u orc:" >&2; journalctl -u orc -n 30 --no-pager >&2 || true; exit 1; }
else
    echo "install-orc: no systemd here; start the daemon with: /usr/local/bin/orc ${args% }" >&2
fi
echo "install-orc: $(/usr/local/bin/orc --version), unit $unit, socket $sock"
