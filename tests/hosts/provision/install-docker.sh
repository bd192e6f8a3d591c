#!/usr/bin/env bash
# Installs Debian's Docker engine (docker.io) and starts it. Idempotent.
#
# Usage (as root): install-docker.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v dockerd >/dev/null 2>&1; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends docker.io ca-certificates
fi
if [ -d /run/systemd/system ]; then
    systemctl enable --now docker >/dev/null
fi
for _ in $(seq 1 60); do
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && break
    sleep 1
done
echo "install-docker: engine $(docker version --format '{{.Server.Version}}')"
