#!/usr/bin/env bash
# Shares a running orc daemon's control socket with a group (mode 0660), so that the
# group's users run `orc` without sudo; they are then as powerful as root, as with
# docker's group. orc.service runs it as ExecStartPost when install-orc.sh was given
# ORC_SOCKET_GROUP (the Vagrantfile: vagrant); install-orc.sh copies it to
# /usr/local/lib/orc/.
#
# The daemon replaces a stale socket of an earlier run, binds its own, makes it 0600,
# and only then serves it: this waits until the socket answers `orc info`, so that
# neither a stale socket nor one the daemon has yet to chmod is the one shared.
# Idempotent.
#
# Usage (as root): orc-socket-group.sh GROUP SOCKET [TIMEOUT_SECONDS (60)]
# Environment: ORC (the orc binary, default /usr/local/bin/orc, else orc on PATH)
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    sed -n '2,14p' "$0" >&2
    exit 2
fi
group=$1 sock=$2 timeout=${3:-60}
orc=${ORC:-/usr/local/bin/orc}
[ -x "$orc" ] || orc=orc
getent group "$group" >/dev/null || { echo "orc-socket-group: no group $group" >&2; exit 1; }

deadline=$((SECONDS + timeout))
until [ -S "$sock" ] && timeout 5 "$orc" -H "$sock" info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "orc-socket-group: no answering orc socket $sock after $timeout s" >&2
        exit 1
    fi
    sleep 0.1
done
chgrp "$group" "$sock"
chmod 0660 "$sock"
echo "orc-socket-group: $sock shared with group $group"
