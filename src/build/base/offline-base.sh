#!/usr/bin/env bash
# Make labship's offline JupyterLab base image without pulling from any registry.
#
#   bash offline-base.sh [TAG]
#
# labship embeds this file and runs it for `labship base` and when `up --local` cannot pull
# the Dockerfile's base image; the test rig runs the same file (tests/rig/offline-base.sh).
#
# The image is labship/jupyter-base:offline-<H>, where H is the first 12 hex digits of the
# sha256 of this script's content, so it is rebuilt only when this recipe changes. When it
# already exists nothing is built. The moving tag labship/jupyter-base:offline always points
# at the current one; an optional TAG argument is applied as one more tag and printed instead.
#
# Recipe: debootstrap (minbase bookworm, mirror taken from apt's own sources) + a venv at
# /opt/jupyter with jupyterlab==$JUPYTERLAB_VERSION (default: the version the project's
# Dockerfile pins) from PyPI, imported with `docker import`. A non-default JUPYTERLAB_VERSION
# is folded into H so that it yields a different tag.
#
# Progress goes to stderr; stdout carries only the final tag.
set -euo pipefail

BASE_HOME="${LABSHIP_BASE_HOME:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/labship}"
log() { printf '[labship base %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

exec 3>&1 1>&2 # fd 3: the real stdout, used once for the final tag

readonly DEFAULT_JUPYTERLAB_VERSION=4.4.10
JUPYTERLAB_VERSION="${JUPYTERLAB_VERSION:-$DEFAULT_JUPYTERLAB_VERSION}"
readonly REPO=labship/jupyter-base
readonly SUITE=bookworm
readonly PACKAGES=python3,python3-venv,ca-certificates,tini
readonly IMAGE_PATH=/opt/jupyter/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

self="${BASH_SOURCE[0]}"
if [ "$JUPYTERLAB_VERSION" = "$DEFAULT_JUPYTERLAB_VERSION" ]; then
    H="$(sha256sum <"$self" | cut -c1-12)"
else
    H="$( { cat "$self"; printf '\nJUPYTERLAB_VERSION=%s\n' "$JUPYTERLAB_VERSION"; } | sha256sum | cut -c1-12)"
fi
readonly TAG="$REPO:offline-$H"
readonly MOVING_TAG="$REPO:offline"
EXTRA_TAG="${1:-}"

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

finish() {
    # Point the moving tag (and the optional extra tag) at TAG, then print the tag to stdout.
    local id
    id="$(image_id "$TAG")"
    if [ "$(image_id "$MOVING_TAG" || true)" != "$id" ]; then
        docker tag "$TAG" "$MOVING_TAG"
    fi
    if [ -n "$EXTRA_TAG" ] && [ "$(image_id "$EXTRA_TAG" || true)" != "$id" ]; then
        docker tag "$TAG" "$EXTRA_TAG"
    fi
    printf '%s\n' "${EXTRA_TAG:-$TAG}" >&3
}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"

if image_id "$TAG" >/dev/null; then
    log "base image $TAG exists; nothing to build"
    finish
    exit 0
fi

# Serialise concurrent builds; the loser of the race finds the image afterwards.
mkdir -p "$BASE_HOME"
exec 9>"$BASE_HOME/offline-base.lock"
if ! flock -n 9; then
    log "another offline-base build is running; waiting for it (up to 30 min)"
    flock -w 1800 9 || die "timed out waiting for the other build"
fi
if image_id "$TAG" >/dev/null; then
    log "base image $TAG was built meanwhile"
    finish
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the base image needs root (debootstrap, chroot)"
if ! command -v debootstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    log "installing debootstrap with apt-get (needed to make the base)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq debootstrap >&2 ||
        { apt-get update -qq >&2 && apt-get install -y -qq debootstrap >&2; } ||
        die "could not install debootstrap"
fi
for tool in debootstrap chroot tar flock python3; do
    command -v "$tool" >/dev/null || die "$tool not found (on Debian/Ubuntu: apt-get install debootstrap)"
done

# The first deb URI that serves "bookworm" with component "main", from apt's own sources.
apt_mirror() {
    python3 - "$SUITE" <<'PY'
import glob, re, sys
suite = sys.argv[1]

def one_line(path):
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # drop [options]
        f = line.split()
        if len(f) >= 4 and f[0] == "deb" and f[2] == suite and "main" in f[3:]:
            yield f[1]

def deb822(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    for stanza in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                fields[key] = val.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if ("deb" in fields.get("types", "").split()
                and suite in fields.get("suites", "").split()
                and "main" in fields.get("components", "").split()):
            yield from fields.get("uris", "").split()

files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
        + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
for path in files:
    try:
        uris = deb822(path) if path.endswith(".sources") else one_line(path)
        for uri in uris:
            if re.match(r"(https?|file)://", uri):
                print(uri.rstrip("/"))
                sys.exit(0)
    except OSError:
        pass
sys.exit(1)
PY
}
MIRROR="$(apt_mirror || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

start=$SECONDS
BUILD="$(mktemp -d "$BASE_HOME/offline-base.XXXXXX")"
ROOTFS="$BUILD/rootfs"
BUILDING_TAG="$REPO:building-$H-$$"

# Unmount whatever is still mounted below ROOTFS (deepest first), then delete the build dir.
cleanup() {
    local rc=$? m
    if [ -n "${ROOTFS:-}" ]; then
        while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done < <(awk -v r="$ROOTFS" '$5 == r || index($5, r "/") == 1 { print $5 }' \
            /proc/self/mountinfo | sort -r)
    fi
    if [ -n "${BUILD:-}" ] && [ -d "$BUILD" ]; then
        if awk -v r="$ROOTFS" 'index($5, r) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
            log "WARNING: mounts remain below $ROOTFS; leaving $BUILD in place"
        else
            log "removing $BUILD"
            rm -rf --one-file-system "$BUILD"
        fi
    fi
    docker rmi "$BUILDING_TAG" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a noisy step with its output in a log file; show the tail only when it fails.
step() {
    local name="$1"
    shift
    local t0=$SECONDS
    log "$name ..."
    if ! "$@" >"$BUILD/$name.log" 2>&1 </dev/null; then
        log "$name FAILED; last lines of its log:"
        tail -n 40 "$BUILD/$name.log" >&2
        return 1
    fi
    log "$name done ($((SECONDS - t0)) s)"
}

# Run a command in the chroot with a clean environment, keeping only the host's proxy and
# package-index settings (a PyPI mirror, if the host uses one).
in_chroot() {
    local envs=(HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
    local v
    for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY \
        PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT; do
        if [ -n "${!v:-}" ]; then envs+=("$v=${!v}"); fi
    done
    env -i "${envs[@]}" "${CHROOT_ENV[@]}" chroot "$ROOTFS" "$@"
}
CHROOT_ENV=()

log "building $TAG (jupyterlab $JUPYTERLAB_VERSION, Debian $SUITE from $MIRROR) in $BUILD"

step debootstrap debootstrap --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$ROOTFS" "$MIRROR"

# pip inside the chroot needs name resolution, /proc, and the host's CA bundle (this host
# may reach PyPI through a TLS-intercepting proxy whose CA only the host trusts). The CA
# bundle is used only for this step and is not left in the image.
rm -f "$ROOTFS/etc/resolv.conf"
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
for ca in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$ca" ] && [ -f "$ca" ]; then
        cp -L "$ca" "$ROOTFS/tmp/host-ca.crt"
        CHROOT_ENV=(PIP_CERT=/tmp/host-ca.crt)
        break
    fi
done

step venv in_chroot python3 -m venv /opt/jupyter
step pip in_chroot /opt/jupyter/bin/pip install --no-cache-dir --disable-pip-version-check \
    --no-input --progress-bar off "jupyterlab==$JUPYTERLAB_VERSION"

umount "$ROOTFS/proc"
rm -f "$ROOTFS/tmp/host-ca.crt"

# Clean caches and host-specific files (Docker provides resolv.conf/hosts/hostname at run time).
in_chroot apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/root/.cache "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/debootstrap \
    "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/log/dpkg.log "$ROOTFS"/var/log/bootstrap.log
: >"$ROOTFS/etc/resolv.conf"
[ -d "$ROOTFS/var/lib/apt/lists/partial" ] || mkdir -p "$ROOTFS/var/lib/apt/lists/partial"

log "importing into the Docker engine ..."
t0=$SECONDS
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change "ENV PATH=$IMAGE_PATH" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$BUILDING_TAG" >/dev/null
log "import done ($((SECONDS - t0)) s)"

# Check the image before giving it the content tag, so "tag exists" means "image is good".
got="$(docker run --rm --network none "$BUILDING_TAG" jupyter lab --version 2>&1 | tail -n 1)"
[ "$got" = "$JUPYTERLAB_VERSION" ] || die "image check failed: jupyter lab --version printed '$got'"
docker run --rm --network none "$BUILDING_TAG" sh -ec \
    'useradd --help >/dev/null; python -c "import urllib.request"; command -v tini >/dev/null' \
    || die "image check failed (useradd, python or tini missing)"

docker tag "$BUILDING_TAG" "$TAG"
log "built $TAG in $((SECONDS - start)) s ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
finish
