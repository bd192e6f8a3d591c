#!/bin/bash
# Records Docker's own outcome for each case of this corpus: for every NAME.docker (or
# the names given), makes the objects its `setup:` lines name, runs
#   docker stack deploy -c STACK NAME
# with only the variables of its `env:` lines, writes the outcome back into NAME.docker
# (the input lines are kept), then removes the stack and the objects again.
#
# It needs a swarm-mode engine of its own: DOCKER_HOST must name it, and it must not be
# the machine's main engine (other tests use that one). SOURCES.md tells how the
# recorded outcomes were made (an engine in its own network namespace).
#
# NAME.docker, one `key: value` per line:
#   stack: FILE.yml        the stack file (beside this one)
#   setup: network|secret|config NAME   made before the deploy, as the project's README
#                          asks (external objects); removed after
#   env: K=V               a variable of the deploying shell (repeatable); nothing else is set
#   docker: ...            the client and engine versions that gave the outcome
#   outcome: accepted|refused
#   ignored: KEY ...       the keys Docker named in "Ignoring unsupported options:" and
#                          "Ignoring deprecated options:"
#   message: ...           Docker's error (refused only), its lines joined with " | "
set -euo pipefail
cd "$(dirname "$0")"
: "${DOCKER_HOST:?set DOCKER_HOST to the socket of a swarm-mode engine of its own}"
case "$DOCKER_HOST" in
unix:///var/run/docker.sock | unix:///run/docker.sock)
    echo "record.sh: refusing the machine's main engine ($DOCKER_HOST)" >&2
    exit 1
    ;;
esac
export DOCKER_CONFIG=${DOCKER_CONFIG:-$(mktemp -d)}
versions=$(docker version --format 'client {{.Client.Version}}, engine {{.Server.Version}} (API {{.Server.APIVersion}})')
[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ] || {
    echo "record.sh: the engine at $DOCKER_HOST is not in swarm mode" >&2
    exit 1
}

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for f in *.docker; do names+=("${f%.docker}"); done
fi

for name in "${names[@]}"; do
    spec=$name.docker
    stack=$(sed -n 's/^stack: //p' "$spec")
    mapfile -t envs < <(sed -n 's/^env: //p' "$spec")
    mapfile -t setups < <(sed -n 's/^setup: //p' "$spec")
    for s in "${setups[@]}"; do
        read -r kind obj <<<"$s"
        case $kind in
        network) docker network create -d overlay --attachable "$obj" >/dev/null ;;
        secret) printf 'stand-in' | docker secret create "$obj" - >/dev/null ;;
        config) printf 'stand-in' | docker config create "$obj" - >/dev/null ;;
        esac
    done
    set +e
    out=$(env -i PATH="$PATH" DOCKER_HOST="$DOCKER_HOST" DOCKER_CONFIG="$DOCKER_CONFIG" \
        "${envs[@]}" docker stack deploy -c "$stack" "$name" 2>&1 >/dev/null)
    rc=$?
    set -e
    ignored=$(printf '%s\n' "$out" | awk '
        /^Ignoring unsupported options: / { sub(/^Ignoring unsupported options: /, ""); gsub(/,/, ""); printf "%s ", $0; next }
        /^Ignoring deprecated options:/ { dep = 1; next }
        dep && /^[a-z_]+: / { sub(/:.*/, ""); printf "%s ", $0; next }
        dep && NF && !/^[a-z_]+: / { dep = 0 }
    ' | xargs -n1 2>/dev/null | sort -u | xargs)
    message=$(printf '%s\n' "$out" | awk '
        /^Ignoring unsupported options: / { next }
        /^Ignoring deprecated options:/ { dep = 1; next }
        dep && /^[a-z_]+: / { next }
        NF { dep = 0; print }
    ' | grep -v -e '^Since --detach=false' -e '^In a future release' -e 'could not be accessed on a registry' -e '^Creating ' || true)
    message=$(printf '%s\n' "$message" | sed '/^$/d' | paste -sd'|' | sed 's/|/ | /g')
    message=${message//"$PWD/"/} # paths as the stack names them, not this checkout's
    {
        grep -E '^(stack|setup|env): ' "$spec"
        echo "docker: $versions"
        if [ $rc -eq 0 ]; then echo "outcome: accepted"; else echo "outcome: refused"; fi
        echo "ignored: $ignored"
        if [ $rc -ne 0 ]; then echo "message: $message"; fi
    } >"$spec.new"
    mv "$spec.new" "$spec"
    echo "$name: $(sed -n 's/^outcome: //p' "$spec") ${message:+($message)}" >&2
    docker stack rm "$name" >/dev/null 2>&1 || true
    for _ in $(seq 30); do
        [ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=$name")" ] &&
            [ -z "$(docker service ls -q --filter "label=com.docker.stack.namespace=$name")" ] && break
        sleep 1
    done
    for s in "${setups[@]}"; do
        read -r kind obj <<<"$s"
        docker "$kind" rm "$obj" >/dev/null 2>&1 || true
    done
    for n in $(docker network ls -q --filter "label=com.docker.stack.namespace=$name"); do docker network rm "$n" >/dev/null 2>&1 || true; done
    # the names a stack gives with `name:` carry its label too; anything else left is ours
    for _ in $(seq 10); do
        left=$(docker network ls --filter driver=overlay --format '{{.Name}}' | grep -v '^ingress$' || true)
        [ -z "$left" ] && break
        for n in $left; do docker network rm "$n" >/dev/null 2>&1 || true; done
        sleep 1
    done
done
