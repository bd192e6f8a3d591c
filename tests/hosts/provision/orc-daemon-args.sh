#!/usr/bin/env bash
# The arguments of `orc daemon`, one per line: the one place that says how a node runs
# orc. Used by install-orc.sh (the systemd unit of a real machine or a Vagrant VM) and
# by tests/hosts/harness.sh start-orc (a namespace host), so both run the same daemon.
#
# Usage: orc-daemon-args.sh DATA_DIR SOCKET DOCKER_HOST
set -euo pipefail
if [ $# -ne 3 ]; then
    sed -n '2,7p' "$0" >&2
    exit 2
fi
printf '%s\n' daemon --data-dir "$1" --socket "$2" --docker-host "$3"
