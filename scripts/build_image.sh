#!/usr/bin/env bash
# `make image`: build the Containerfile with buildah (no daemon; chroot isolation, vfs storage,
# so it needs neither cgroups nor overlayfs) and check what the image is: its user, entry point,
# labels and ports, the server's --help run as that user, and an installation it cannot change.
#
# The base image is python:3.11-slim-bookworm when a registry can be reached. Where none can (the
# project's own machines and CI), a stand-in is made from Debian's own packages with mmdebstrap:
# bookworm with its python3 (3.11), python3-venv and python3-pip, as the slim image has them. The
# Containerfile is the same either way; only PYTHON_IMAGE differs, and this script says which.
set -euo pipefail
cd "$(dirname "$0")/.."

REAL_BASE=docker.io/library/python:3.11-slim-bookworm
STAND_IN=localhost/k8sailor-base:bookworm-python3.11
TAG=localhost/k8sailor:check
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot

say() { echo "image: $*" >&2; }
fail() { say "$*"; exit 1; }

missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "needs ${missing[*]} (apt-get install ${missing[*]})"
    say "installing ${missing[*]} from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if buildah pull --quiet "$REAL_BASE" >/dev/null 2>&1; then
    base=$REAL_BASE
    say "base: $REAL_BASE"
else
    base=$STAND_IN
    say "no registry reachable for $REAL_BASE: building on a stand-in made from Debian's packages"
    if ! buildah inspect --type image "$STAND_IN" >/dev/null 2>&1; then
        tarball=$(mktemp --suffix=.tar)
        started=$SECONDS
        if ! mmdebstrap --quiet --variant=apt \
            --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
            bookworm "$tarball"; then
            rm -f "$tarball"
            fail "mmdebstrap could not make the stand-in base"
        fi
        container=$(buildah from scratch)
        buildah add "$container" "$tarball" / >/dev/null
        rm -f "$tarball"
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
        buildah commit --quiet "$container" "$STAND_IN" >/dev/null
        buildah rm "$container" >/dev/null
        say "stand-in base made in $((SECONDS - started)) s"
    fi
fi

# Where outgoing TLS is inspected by a proxy whose CA only this machine trusts, pip in the build
# needs this machine's CA bundle; elsewhere the bundle is what the base image has anyway.
volumes=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    volumes=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
started=$SECONDS
buildah build --quiet --layers=false "${volumes[@]}" -f Containerfile \
    --build-arg PYTHON_IMAGE="$base" --build-arg REVISION="$(git rev-parse HEAD)" \
    -t "$TAG" . >/dev/null || fail "buildah build failed"
say "built $TAG in $((SECONDS - started)) s"

config() { buildah inspect --type image --format "{{$1}}" "$TAG"; }
expect() {  # what, got, wanted
    [ "$2" = "$3" ] || fail "$1 is '$2', expected '$3'"
    say "$1: $2"
}
expect "user" "$(config .OCIv1.Config.User)" "65532:65532"
expect "entrypoint" "$(config .OCIv1.Config.Entrypoint)" "[k8sailor-server]"
expect "exposed ports" "$(config .OCIv1.Config.ExposedPorts)" "map[50051/tcp:{} 50052/tcp:{}]"
expect "title label" "$(config 'index .OCIv1.Config.Labels "org.opencontainers.image.title"')" "k8sailor"
expect "revision label" "$(config 'index .OCIv1.Config.Labels "org.opencontainers.image.revision"')" \
    "$(git rev-parse HEAD)"

container=$(buildah from "$TAG")
cleanup() { buildah rm "$container" >/dev/null 2>&1 || true; }
trap cleanup EXIT
run() { buildah run "$container" -- "$@"; }
expect "id" "$(run id -u):$(run id -g)" "65532:65532"
run k8sailor-server --help | grep -q -- "--listen" || fail "k8sailor-server --help did not print its flags"
say "k8sailor-server --help: runs as 65532"
run k8sailor --help >/dev/null || fail "the k8sailor CLI does not run"
if run sh -c 'touch /opt/k8sailor/written' 2>/dev/null; then
    fail "user 65532 can change the installation in /opt/k8sailor"
fi
say "/opt/k8sailor: not writable by the server's user"
if run /opt/k8sailor/bin/python -c 'import pip' 2>/dev/null; then
    fail "the runtime venv still has pip"
fi
say "runtime venv: no pip"
say "ok: $TAG, built on $base"
