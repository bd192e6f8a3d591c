#!/usr/bin/env bash
# Build orc's local test images from scratch, with Debian's busybox-static.
# No registry can be reached here, so nothing is pulled: every image is
# FROM scratch with one static busybox binary and its applet symlinks.
#
#   orc-test/busybox:1   /bin/busybox + symlinks (sh, httpd, wget, nc, sleep, ...),
#                        CMD ["sh"]
#   orc-test/web:1       the same files, EXPOSE 80, runs `httpd -f -p 80 -h /www`;
#                        GET / answers the container's hostname and a newline;
#                        GET /cgi-bin/slow?SECONDS sleeps SECONDS (fractions allowed,
#                        default 1), then answers the hostname (text/plain);
#                        HEALTHCHECK with wget on http://127.0.0.1/
#   orc-test/tools:1     the busybox files plus the machine's /usr/bin/iperf3 and
#                        /usr/bin/socat, with every shared library `ldd` lists and the
#                        dynamic loader at the same paths, CMD ["sh"]
#
# Stand-ins for the images of compose-examples/ (deploy those files unmodified with
# VOTE_IMAGE=orc-test/web:1 RESULT_IMAGE=orc-test/web:1 WORKER_IMAGE=orc-test/worker:1
# REDIS_IMAGE=orc-test/redis:1 DB_IMAGE=orc-test/postgres:1 WEB_IMAGE=orc-test/web:1
# AGENT_IMAGE=orc-test/node-exporter:1). Each stops at once on SIGTERM (web:1 does not:
# its httpd is PID 1 and ignores it, so a stop waits for the grace period).
#   orc-test/redis:1     EXPOSE 6379; like redis's docker-entrypoint.sh: no arguments,
#                        `redis-server ...` (its options ignored) or `--option ...` start
#                        the server, any other command runs as given. The server answers
#                        PING (inline or RESP) with +PONG, QUIT with +OK, all else -ERR.
#                        `redis-cli [-h HOST] [-p PORT] [COMMAND...]` (default PING on
#                        127.0.0.1:6379) prints the reply (PONG), exit 0; exit 1 and
#                        "Could not connect to Redis at HOST:PORT" when nothing answers.
#                        HEALTHCHECK redis-cli ping.
#   orc-test/postgres:1  EXPOSE 5432; `postgres ...` (options ignored), `-option ...` or no
#                        arguments start the server, any other command runs as given. Like
#                        postgres it exits 1 unless POSTGRES_PASSWORD is set (or
#                        POSTGRES_HOST_AUTH_METHOD=trust); it creates $PGDATA
#                        (/var/lib/postgresql/data) with PG_VERSION on the first start and
#                        appends one line per start to $PGDATA/orc-test-starts. Each
#                        connection gets "orc-test postgres HOSTNAME user=U db=D" and is
#                        closed. `pg_isready [-h HOST] [-p PORT] [-q] [any other flags]`
#                        exits 0 ("HOST:PORT - accepting connections") when that answer
#                        comes, else 2 ("no response"). HEALTHCHECK pg_isready.
#   orc-test/worker:1    ENTRYPOINT worker, arguments ignored: once a second connects to
#                        redis:6379 (PING -> PONG) and db:5432 (the postgres answer) by
#                        those names ($REDIS_HOST, $DB_HOST override them) and prints
#                        one line: "worker: redis:6379=ok db:5432=ok" (fail for either).
#   orc-test/node-exporter:1
#                        ENTRYPOINT /bin/node_exporter, its flags accepted (honoured:
#                        --path.procfs, --path.sysfs, --web.listen-address), EXPOSE 9100;
#                        GET /metrics answers "node_up 1", node_uname_info{nodename=...},
#                        node_load1 read from PROCFS/loadavg, node_procfs_readable and
#                        node_sysfs_readable (1 when PROCFS/loadavg and SYSFS/kernel are
#                        there), rewritten every 2 s. No HEALTHCHECK (like the real one).
#
# Usage: tests/images/build.sh            (uses DOCKER_HOST if set, else the default engine)
#        DOCKER_HOST=unix:///path/docker.sock tests/images/build.sh
#        tests/images/build.sh --force    (rebuild even when up to date)
#
# Idempotent: each image carries a label with the hash of its build context and is
# only rebuilt when that hash changes. Installs busybox-static, iperf3 and socat with
# apt-get when they are missing (as root). Prints one line per image: built / up to date.
set -euo pipefail

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

BUSYBOX=/bin/busybox
LABEL=org.orc.test.context-hash

# Debian's busybox-static ships /bin/busybox statically linked; the dynamic
# `busybox` package does not work FROM scratch, so check that it is static.
busybox_is_static() {
    [ -x "$BUSYBOX" ] || return 1
    # a static binary has no PT_INTERP program header
    if command -v readelf >/dev/null 2>&1; then
        ! readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'Requesting program interpreter'
    else
        dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'
    fi
}

apt_install() {
    echo "build.sh: installing $*" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "$@" >&2; then
        apt-get update -q >&2
        apt-get install -y -q "$@" >&2
    fi
}

if ! busybox_is_static; then
    apt_install busybox-static
    busybox_is_static || { echo "build.sh: $BUSYBOX is not a static busybox" >&2; exit 1; }
fi

# the dynamically linked tools of orc-test/tools:1 (Debian packages of the same names)
TOOLS=(/usr/bin/iperf3 /usr/bin/socat)
missing=()
for tool in "${TOOLS[@]}"; do
    [ -x "$tool" ] || missing+=("$(basename "$tool")")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
command -v ldd >/dev/null || { echo "build.sh: ldd not found" >&2; exit 1; }

command -v docker >/dev/null || { echo "build.sh: docker CLI not found" >&2; exit 1; }
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || {
    echo "build.sh: no Docker engine answers at ${DOCKER_HOST:-the default socket}" >&2
    exit 1
}

WORK=$(mktemp -d /tmp/orc-images.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# The shared root file system: /bin/busybox, one symlink per applet (what
# `busybox --install -s /bin` would make), a minimal /etc, /tmp, /www.
make_rootfs() {
    local root=$1
    mkdir -p "$root"/{bin,sbin,etc,tmp,root,www,var/run,proc,sys,dev}
    chmod 1777 "$root/tmp"
    cp "$BUSYBOX" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    local applet
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] && continue
        ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    # a fixed page so that /www is never empty; web:1 rewrites it at start
    printf 'orc-test\n' >"$root/www/index.html"
    # everything with a fixed mtime, so the context hash only follows content
    find "$root" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
}

# copy_with_libs ROOT BINARY...: each binary, every shared library `ldd` lists and the
# dynamic loader, at the paths ldd names (symlinks resolved: the path holds the file
# itself), so that the binaries run FROM scratch
copy_with_libs() {
    local root=$1 bin lib libs
    shift
    for bin in "$@"; do
        mkdir -p "$root$(dirname "$bin")"
        cp -L "$bin" "$root$bin"
        libs=$(ldd "$bin") || { echo "build.sh: ldd $bin failed" >&2; return 1; }
        if grep -q 'not found' <<<"$libs"; then
            echo "build.sh: $bin: libraries not found:" >&2
            grep 'not found' <<<"$libs" >&2
            return 1
        fi
        # "libx.so.1 => /lib/.../libx.so.1 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)";
        # linux-vdso.so.1 lives in the kernel and has no file
        for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$libs"); do
            [ -e "$root$lib" ] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    done
    find "$root" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
}

# put_script ROOT PATH: standard input becomes the executable ROOT/PATH (fixed mtimes)
put_script() {
    local root=$1 path=$2
    mkdir -p "$root$(dirname "$path")"
    cat >"$root$path"
    chmod 0755 "$root$path"
    find "$root" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
}

# hash of a build context: file names, modes, link targets and contents
context_hash() {
    local dir=$1
    (
        cd "$dir"
        find . -printf '%p %m %y %l\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -c1-32
}

# build_image NAME CONTEXT_DIR: build unless the image already has this context's hash
build_image() {
    local name=$1 ctx=$2 hash have
    hash=$(context_hash "$ctx")
    have=$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$name" 2>/dev/null || true)
    if [ "$FORCE" = 0 ] && [ "$have" = "$hash" ]; then
        echo "up to date: $name ($(docker image inspect --format '{{.Id}}' "$name" | cut -c1-19))"
        return 0
    fi
    local old
    old=$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
    # the legacy builder: BuildKit needs the buildx plugin, which is not installed
    if ! DOCKER_BUILDKIT=0 docker build -q --label "$LABEL=$hash" -t "$name" "$ctx" >"$WORK/build.log" 2>&1; then
        cat "$WORK/build.log" >&2
        echo "build.sh: building $name failed" >&2
        return 1
    fi
    echo "built: $name ($(docker image inspect --format '{{.Id}}' "$name" | cut -c1-19))"
    # drop the previous build if nothing else uses it (no dangling images pile up)
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect --format '{{.Id}}' "$name")" ] &&
        [ "$(docker image inspect --format '{{len .RepoTags}}' "$old" 2>/dev/null)" = 0 ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

# --- orc-test/busybox:1 ---
mkdir -p "$WORK/busybox"
make_rootfs "$WORK/busybox/rootfs"
cat >"$WORK/busybox/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin:/sbin
CMD ["sh"]
EOF
build_image orc-test/busybox:1 "$WORK/busybox"

# --- orc-test/web:1 ---
mkdir -p "$WORK/web"
make_rootfs "$WORK/web/rootfs"
cat >"$WORK/web/rootfs/bin/web-start" <<'EOF'
#!/bin/sh
# orc-test/web:1: serve the container's hostname on port 80
hostname >/www/index.html
exec httpd -f -p 80 -h /www "$@"
EOF
# busybox httpd runs /cgi-bin/* as CGI scripts, the query string in QUERY_STRING
mkdir -p "$WORK/web/rootfs/www/cgi-bin"
cat >"$WORK/web/rootfs/www/cgi-bin/slow" <<'EOF'
#!/bin/sh
# orc-test/web:1: GET /cgi-bin/slow?SECONDS sleeps SECONDS (fractions allowed,
# default 1), then answers the container's hostname
t=${QUERY_STRING:-1}
case "$t" in
    *[!0-9.]* | *.*.* | .) t=1 ;;
esac
sleep "$t"
printf 'Content-Type: text/plain\r\n\r\n'
hostname
EOF
chmod 0755 "$WORK/web/rootfs/bin/web-start" "$WORK/web/rootfs/www/cgi-bin/slow"
touch -h -d '2000-01-01 00:00:00 UTC' "$WORK/web/rootfs/bin/web-start" \
    "$WORK/web/rootfs/www/cgi-bin/slow" "$WORK/web/rootfs/www/cgi-bin" "$WORK/web/rootfs/www"
# (no `wget -T`: in busybox-static 1.35 it segfaults; the HEALTHCHECK timeout bounds it)
cat >"$WORK/web/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin:/sbin
EXPOSE 80
HEALTHCHECK --interval=2s --timeout=2s --start-period=2s --retries=3 \
  CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/"]
CMD ["web-start"]
EOF
build_image orc-test/web:1 "$WORK/web"

# --- orc-test/tools:1 ---
mkdir -p "$WORK/tools"
make_rootfs "$WORK/tools/rootfs"
copy_with_libs "$WORK/tools/rootfs" "${TOOLS[@]}"
cat >"$WORK/tools/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin:/sbin:/usr/bin
CMD ["sh"]
EOF
build_image orc-test/tools:1 "$WORK/tools"

# --- orc-test/redis:1 (stand-in for redis:7-alpine) ---
mkdir -p "$WORK/redis"
make_rootfs "$WORK/redis/rootfs"
printf 'redis:x:999:1000:redis:/data:/bin/false\n' >>"$WORK/redis/rootfs/etc/passwd"
printf 'redis:x:1000:redis\n' >>"$WORK/redis/rootfs/etc/group"
mkdir -p "$WORK/redis/rootfs/data"
put_script "$WORK/redis/rootfs" /usr/local/bin/docker-entrypoint.sh <<'EOF'
#!/bin/sh
# orc-test/redis:1: like redis's docker-entrypoint.sh, no arguments, an option or a
# .conf file first means redis-server; any other command runs as given
case "${1:-}" in
    '' | -* | *.conf) set -- redis-server "$@" ;;
esac
exec "$@"
EOF
put_script "$WORK/redis/rootfs" /usr/local/bin/redis-server <<'EOF'
#!/bin/sh
# orc-test/redis:1: stand-in for redis-server, its arguments ignored: port 6379, one
# redis-session per connection; SIGTERM or SIGINT stops it at once
trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
echo "orc-test redis stand-in on $(hostname) (arguments ignored: $*)"
nc -ll -p 6379 -e /usr/local/bin/redis-session &
pid=$!
echo "* Ready to accept connections tcp"
wait "$pid"
EOF
put_script "$WORK/redis/rootfs" /usr/local/bin/redis-session <<'EOF'
#!/bin/sh
# orc-test/redis:1: one connection on stdin/stdout. Commands inline ("PING") or as RESP
# arrays ("*1" "$4" "PING"): PING -> +PONG (PING MSG -> MSG), QUIT -> +OK and close,
# anything else -> -ERR
set -f
cr=$(printf '\r')
reply() { printf '%s\r\n' "$@"; }
while IFS= read -r -t 60 line; do
    line=${line%"$cr"}
    case "$line" in
        '*'*)
            n=${line#\*}
            case "$n" in '' | *[!0-9]*) n=0 ;; esac
            set --
            while [ "$#" -lt "$n" ] && IFS= read -r -t 60 len && IFS= read -r -t 60 arg; do
                set -- "$@" "${arg%"$cr"}"
            done
            ;;
        *) set -- $line ;;
    esac
    [ "$#" -gt 0 ] || continue
    case "$(printf '%s' "$1" | tr a-z A-Z)" in
        PING)
            if [ "$#" -gt 1 ]; then reply "\$${#2}" "$2"; else reply +PONG; fi ;;
        QUIT) reply +OK; exit 0 ;;
        *) reply "-ERR unknown command '$1' (orc-test redis stand-in knows PING and QUIT)" ;;
    esac
done
EOF
put_script "$WORK/redis/rootfs" /usr/local/bin/redis-cli <<'EOF'
#!/bin/sh
# orc-test/redis:1: redis-cli [-h HOST] [-p PORT] [OPTIONS] [COMMAND ARGS...]: sends
# COMMAND (default PING) to HOST:PORT (default 127.0.0.1:6379), prints the reply
# (PONG); exit 1 when nothing answers or the reply is an error
host=127.0.0.1 port=6379
while [ "$#" -gt 0 ]; do
    case "$1" in
        -h) host=${2:-$host}; shift ;;
        -p) port=${2:-$port}; shift ;;
        -a | -n | -u | -r | -i | -t | -s | --user | --pass) shift ;;
        --) shift; break ;;
        -*) ;;
        *) break ;;
    esac
    [ "$#" -gt 0 ] && shift
done
[ "$#" -gt 0 ] || set -- PING
out=$({
    printf '*%d\r\n' "$#"
    for a in "$@"; do printf '$%d\r\n%s\r\n' "${#a}" "$a"; done
} | timeout 5 nc "$host" "$port" 2>/dev/null | tr -d '\r')
first=$(printf '%s\n' "$out" | head -n 1)
case "$first" in
    '') echo "Could not connect to Redis at $host:$port: Connection refused" >&2; exit 1 ;;
    +*) printf '%s\n' "${first#+}" ;;
    -*) printf '(error) %s\n' "${first#-}"; exit 1 ;;
    :*) printf '(integer) %s\n' "${first#:}" ;;
    '$'*) printf '"%s"\n' "$(printf '%s\n' "$out" | sed -n 2p)" ;;
    *) printf '%s\n' "$out" ;;
esac
EOF
cat >"$WORK/redis/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin:/sbin
WORKDIR /data
EXPOSE 6379
HEALTHCHECK --interval=2s --timeout=2s --start-period=2s --retries=3 \
  CMD ["redis-cli", "ping"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
build_image orc-test/redis:1 "$WORK/redis"

# --- orc-test/postgres:1 (stand-in for postgres:16-alpine) ---
mkdir -p "$WORK/postgres"
make_rootfs "$WORK/postgres/rootfs"
printf 'postgres:x:70:70:postgres:/var/lib/postgresql:/bin/sh\n' >>"$WORK/postgres/rootfs/etc/passwd"
printf 'postgres:x:70:\n' >>"$WORK/postgres/rootfs/etc/group"
mkdir -p "$WORK/postgres/rootfs/var/lib/postgresql/data" "$WORK/postgres/rootfs/var/run/postgresql"
put_script "$WORK/postgres/rootfs" /usr/local/bin/docker-entrypoint.sh <<'EOF'
#!/bin/sh
# orc-test/postgres:1: like postgres's docker-entrypoint.sh, no arguments or an option
# first means postgres; any other command runs as given
case "${1:-}" in
    '' | -*) set -- postgres "$@" ;;
esac
exec "$@"
EOF
put_script "$WORK/postgres/rootfs" /usr/local/bin/postgres <<'EOF'
#!/bin/sh
# orc-test/postgres:1: stand-in for postgres, its arguments ignored: port 5432, one
# postgres-session per connection; SIGTERM or SIGINT stops it at once
trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
PGDATA=${PGDATA:-/var/lib/postgresql/data}
mkdir -p "$PGDATA" || exit 1
if [ -s "$PGDATA/PG_VERSION" ]; then
    echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
else
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
        cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
MSG
        exit 1
    fi
    echo 16 >"$PGDATA/PG_VERSION" || exit 1
    echo "initialized $PGDATA (user ${POSTGRES_USER:-postgres}, database ${POSTGRES_DB:-${POSTGRES_USER:-postgres}})"
fi
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname)" >>"$PGDATA/orc-test-starts"
echo "orc-test postgres stand-in on $(hostname), start $(wc -l <"$PGDATA/orc-test-starts") of $PGDATA (arguments ignored: $*)"
nc -ll -p 5432 -e /usr/local/bin/postgres-session &
pid=$!
echo "database system is ready to accept connections"
wait "$pid"
EOF
put_script "$WORK/postgres/rootfs" /usr/local/bin/postgres-session <<'EOF'
#!/bin/sh
# orc-test/postgres:1: one connection: a greeting line, then close (what the client sent
# is read first, for up to 2 s, so that the close is clean)
u=${POSTGRES_USER:-postgres}
printf 'orc-test postgres %s user=%s db=%s\n' "$(hostname)" "$u" "${POSTGRES_DB:-$u}"
timeout 2 cat >/dev/null 2>&1
exit 0
EOF
put_script "$WORK/postgres/rootfs" /usr/local/bin/pg_isready <<'EOF'
#!/bin/sh
# orc-test/postgres:1: pg_isready [-h HOST] [-p PORT] [-q] [any other flags]: exit 0 when
# HOST:PORT (default 127.0.0.1:5432) answers like orc-test postgres, else 2
host=127.0.0.1 port=5432 quiet=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        -h | --host) host=${2:-$host}; shift ;;
        -p | --port) port=${2:-$port}; shift ;;
        --host=*) host=${1#*=} ;;
        --port=*) port=${1#*=} ;;
        -h?*) host=${1#-h} ;;
        -p?*) port=${1#-p} ;;
        -q | --quiet) quiet=1 ;;
        -U | -d | -t | --username | --dbname | --timeout) shift ;;
        *) ;;
    esac
    [ "$#" -gt 0 ] && shift
done
if timeout 3 nc "$host" "$port" </dev/null 2>/dev/null | grep -q '^orc-test postgres'; then
    [ "$quiet" = 1 ] || echo "$host:$port - accepting connections"
    exit 0
fi
[ "$quiet" = 1 ] || echo "$host:$port - no response"
exit 2
EOF
cat >"$WORK/postgres/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin:/sbin PGDATA=/var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=2s --timeout=2s --start-period=2s --retries=3 \
  CMD ["pg_isready", "-q"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
EOF
build_image orc-test/postgres:1 "$WORK/postgres"

# --- orc-test/worker:1 (stand-in for dockersamples/examplevotingapp_worker) ---
mkdir -p "$WORK/worker"
make_rootfs "$WORK/worker/rootfs"
put_script "$WORK/worker/rootfs" /usr/local/bin/worker <<'EOF'
#!/bin/sh
# orc-test/worker:1: once a second, PING redis:6379 and connect to db:5432 (by those
# names, or $REDIS_HOST and $DB_HOST) and print one line with the outcome:
# "worker: redis:6379=ok db:5432=ok" (fail where no proper answer came)
trap 'exit 0' TERM INT
redis=${REDIS_HOST:-redis}
db=${DB_HOST:-db}
echo "worker: checking $redis:6379 and $db:5432 every second (arguments ignored: $*)"
while :; do
    if printf 'PING\r\n' | timeout 2 nc "$redis" 6379 2>/dev/null | grep -q PONG; then
        r=ok
    else
        r=fail
    fi
    if timeout 2 nc "$db" 5432 </dev/null 2>/dev/null | grep -q '^orc-test postgres'; then
        d=ok
    else
        d=fail
    fi
    echo "worker: $redis:6379=$r $db:5432=$d"
    sleep 1 &
    wait $!
done
EOF
cat >"$WORK/worker/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/bin:/sbin
ENTRYPOINT ["worker"]
EOF
build_image orc-test/worker:1 "$WORK/worker"

# --- orc-test/node-exporter:1 (stand-in for prom/node-exporter) ---
mkdir -p "$WORK/node-exporter"
make_rootfs "$WORK/node-exporter/rootfs"
printf '<html><head><title>Node Exporter</title></head><body><h1>Node Exporter (orc-test stand-in)</h1><p><a href="/metrics">Metrics</a></p></body></html>\n' \
    >"$WORK/node-exporter/rootfs/www/index.html"
put_script "$WORK/node-exporter/rootfs" /bin/node_exporter <<'EOF'
#!/bin/sh
# orc-test/node-exporter:1: stand-in for node_exporter: serves /www on port 9100 (or the
# port of --web.listen-address); GET /metrics answers node_up 1 and a few gauges,
# rewritten every 2 s; every other flag is accepted and ignored; SIGTERM stops it at once
procfs=/proc sysfs=/sys listen=:9100
while [ "$#" -gt 0 ]; do
    case "$1" in
        --path.procfs=*) procfs=${1#*=} ;;
        --path.sysfs=*) sysfs=${1#*=} ;;
        --web.listen-address=*) listen=${1#*=} ;;
        --path.procfs | --path.sysfs | --web.listen-address)
            [ "$#" -gt 1 ] || break
            case "$1" in
                --path.procfs) procfs=$2 ;;
                --path.sysfs) sysfs=$2 ;;
                *) listen=$2 ;;
            esac
            shift ;;
    esac
    shift
done
port=${listen##*:}
case "$port" in '' | *[!0-9]*) port=9100 ;; esac

write_metrics() {
    {
        echo '# HELP node_up 1 while the orc-test node-exporter stand-in runs.'
        echo '# TYPE node_up gauge'
        echo 'node_up 1'
        printf 'node_uname_info{nodename="%s"} 1\n' "$(hostname)"
        echo "node_time_seconds $(date +%s)"
        if [ -r "$procfs/loadavg" ] && read -r load1 _ <"$procfs/loadavg"; then
            echo "node_load1 $load1"
            echo 'node_procfs_readable 1'
        else
            echo 'node_procfs_readable 0'
        fi
        if [ -d "$sysfs/kernel" ]; then
            echo 'node_sysfs_readable 1'
        else
            echo 'node_sysfs_readable 0'
        fi
    } >/www/.metrics.tmp && mv /www/.metrics.tmp /www/metrics
}

trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
write_metrics
httpd -f -p "$port" -h /www &
pid=$!
echo "orc-test node-exporter stand-in on :$port (procfs $procfs, sysfs $sysfs)"
while kill -0 "$pid" 2>/dev/null; do
    sleep 2 &
    wait $!
    write_metrics
done
wait "$pid"
EOF
cat >"$WORK/node-exporter/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/bin:/sbin
EXPOSE 9100
ENTRYPOINT ["/bin/node_exporter"]
EOF
build_image orc-test/node-exporter:1 "$WORK/node-exporter"
