#!/usr/bin/env bash
# Smoke test of the multi-host harness (tests/hosts/harness.sh), as root:
# two hosts, their engines, traffic from one host to a port published on the
# other, a halted host that leaves the other unaffected, a restart, a partition,
# and a tear-down that leaves nothing behind. Prints each check; exits 0 only if
# all passed. Needs the test images (tests/images/build.sh) and busybox-static.
set -uo pipefail
# shellcheck disable=SC2317 # helpers are called through check and eventually

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS=$HERE/harness.sh
# shellcheck source=tests/hosts/harness.sh
source "$HARNESS"

PASSED=0
FAILED=0
PORT=18080
PAGE="orc-smoke-ok"
CNAME="orc-smoke-httpd"
TORN_DOWN=0

pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
check() { # check DESCRIPTION CMD...
    local desc=$1
    shift
    if "$@"; then pass "$desc"; else fail "$desc"; fi
}
# retry CMD until it succeeds, for at most SECONDS
eventually() {
    local secs=$1 deadline
    shift
    deadline=$((SECONDS + secs))
    while :; do
        "$@" && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

cleanup() {
    [ "$TORN_DOWN" = 1 ] || "$HARNESS" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

finish() {
    echo
    echo "smoke: $PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ] && [ "$PASSED" -gt 0 ]
    exit $?
}

[ "$(id -u)" = 0 ] || { echo "smoke.sh must run as root" >&2; exit 1; }
command -v busybox >/dev/null || { echo "smoke.sh needs busybox (apt-get install busybox-static)" >&2; exit 1; }

engine_answers() { docker -H "$(orch_dockerhost "$1")" info --format '{{.ID}}' >/dev/null 2>&1; }
engine_silent() { ! timeout 5 docker -H "$(orch_dockerhost "$1")" info --format '{{.ID}}' >/dev/null 2>&1; }
has_image() { docker -H "$(orch_dockerhost "$1")" image inspect "$2" >/dev/null 2>&1; }
# fetch URL from host N's namespace with the machine's busybox wget
# (never `wget -T`: busybox-static's wget segfaults with it; timeout(1) bounds it)
fetch_from_ns() { [ "$(timeout 5 "$HARNESS" exec "$1" busybox wget -qO- "$2" 2>/dev/null)" = "$PAGE" ]; }
fetch_from_root() { [ "$(timeout 5 busybox wget -qO- "$1" 2>/dev/null)" = "$PAGE" ]; }
fetch_from_container() {
    [ "$(timeout 20 docker -H "$(orch_dockerhost "$1")" run --rm orc-test/busybox:1 \
        wget -qO- "$2" 2>/dev/null)" = "$PAGE" ]
}
no_fetch_from_root() { ! timeout 3 busybox wget -qO- "$1" >/dev/null 2>&1; }
container_started_at() { docker -H "$(orch_dockerhost "$1")" inspect -f '{{.State.Running}} {{.State.StartedAt}}' "$2" 2>/dev/null; }
ns_empty() { [ -z "$(ip netns pids "$(orch_ns "$1")" 2>/dev/null)" ]; }
no_cgroups() { [ -z "$(orch_cgroup_dirs "$1")" ]; }

echo "== up 2"
if "$HARNESS" up 2; then pass "harness up 2"; else fail "harness up 2"; finish; fi

echo "== engines"
for n in 1 2; do
    check "host $n: engine answers at $(orch_dockerhost "$n")" engine_answers "$n"
    check "host $n: orc-test/busybox:1 was loaded" has_image "$n" orc-test/busybox:1
    check "host $n: address $(orch_addr "$n") is on eth0" \
        sh -c "'$HARNESS' exec $n ip -o addr show eth0 | grep -q ' $(orch_addr "$n")/24 '"
done
id1=$(docker -H "$(orch_dockerhost 1)" info --format '{{.ID}}' 2>/dev/null)
id2=$(docker -H "$(orch_dockerhost 2)" info --format '{{.ID}}' 2>/dev/null)
check "the two engines are distinct (IDs $id1 / $id2)" test -n "$id1" -a "$id1" != "$id2"

echo "== traffic across hosts"
URL=http://$(orch_addr 1):$PORT/
check "host 1: httpd container runs with port $PORT published" \
    docker -H "$(orch_dockerhost 1)" run -d --name "$CNAME" -p "$PORT:80" orc-test/busybox:1 \
    sh -c "echo $PAGE >/www/index.html && exec httpd -f -p 80 -h /www" >/dev/null
check "host 2's namespace fetches $URL with wget" eventually 20 fetch_from_ns 2 "$URL"
check "a container on host 2 fetches $URL" fetch_from_container 2 "$URL"
started=$(container_started_at 1 "$CNAME")

echo "== halt host 2"
check "harness halt 2" "$HARNESS" halt 2
check "host 2: engine no longer answers" engine_silent 2
check "host 2: no process left in its namespace" ns_empty 2
check "host 2: no cgroup of its engine left" no_cgroups 2
check "host 1: engine still answers" engine_answers 1
check "host 1: container still running, not restarted" [ "$(container_started_at 1 "$CNAME")" = "$started" ]
check "host 1's namespace still fetches $URL" fetch_from_ns 1 "$URL"
check "the machine still fetches $URL" fetch_from_root "$URL"

echo "== restart host 2"
check "harness restart 2" "$HARNESS" restart 2
check "host 2: engine answers again" engine_answers 2
check "host 2: images survived the halt" has_image 2 orc-test/busybox:1
check "host 2's namespace fetches $URL again" eventually 20 fetch_from_ns 2 "$URL"

echo "== partition host 1"
check "harness cut 1" "$HARNESS" cut 1
check "the machine cannot reach $URL while host 1 is cut off" no_fetch_from_root "$URL"
check "harness heal 1" "$HARNESS" heal 1
check "the machine reaches $URL after heal" eventually 20 fetch_from_root "$URL"

echo "== down"
check "harness down" "$HARNESS" down
TORN_DOWN=1
check "no mount under $ORC_HOSTS_DIR" sh -c "! mount | grep -qF '$ORC_HOSTS_DIR'"
check "no orc-h* network namespace" sh -c "! ip netns list | grep -q '^orc-h'"
check "no orc link (orcbr0, orc-v*)" sh -c "! ip -o link show | grep -qE ': (orcbr0|orc-[vp][0-9]+)[@:]'"
check "no FORWARD rule for orcbr0" sh -c "! iptables -w -S FORWARD 2>/dev/null | grep -q orcbr0"
check "no cgroup folder orc-h*" sh -c "! ls -d /sys/fs/cgroup/orc-h* /sys/fs/cgroup/*/orc-h* >/dev/null 2>&1"
check "$ORC_HOSTS_DIR is gone" [ ! -e "$ORC_HOSTS_DIR" ]
check "harness down again (idempotent)" "$HARNESS" down

finish
