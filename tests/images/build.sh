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
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
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
