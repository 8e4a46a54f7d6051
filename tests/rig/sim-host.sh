#!/usr/bin/env bash
# The "sim host" image: what tests/rig/instance-sim.py runs each simulated EC2 instance in,
# standing in for an Amazon Linux host with Docker already running (like the ECS-optimized
# AMI): bash, coreutils, grep, sed, curl, the docker CLI (talking to this machine's engine
# through the mounted /var/run/docker.sock: docker-outside-of-docker) and the AWS CLI
# (awscli v1 in /opt/awscli, on PATH as `aws`; honours AWS_ENDPOINT_URL). There is no
# Docker daemon, no systemd and no systemctl in it: user-data that checks `docker info`
# first finds Docker answering and skips installing/starting it.
#
#   bash tests/rig/sim-host.sh        (stdout: the image tag; progress on stderr)
#
# Made offline: FROM the rig's offline Jupyter base (tests/rig/offline-base.sh, Debian
# bookworm minbase), with `docker build --network host` (Debian packages from the mirror
# apt uses on this machine, awscli from PyPI). The tag is labship/sim-host:<H>, H = 12 hex
# digits of sha256 over this script, the base image tag and the docker CLI that goes in, so
# it is rebuilt only when one of those changes; when it exists nothing is built. Images of
# earlier recipes are left alone (a running simulator may still use one): remove them with
# `docker image ls labship/sim-host`, `docker rmi ...`.
#
# Docker CLI: this machine's `docker` binary is copied in when it runs inside the base image
# (statically linked, e.g. the docker.com static build); otherwise the `docker` binary alone
# is extracted from Debian's docker.io package (no daemon, no containerd). Force the latter
# with LABSHIP_SIM_DOCKER_CLI=debian.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

exec 3>&1 1>&2 # fd 3: the real stdout, used once for the final tag

readonly REPO=labship/sim-host
readonly AWSCLI_VERSION=1.46.2
readonly SELF="$RIG_DIR/sim-host.sh"

command -v docker >/dev/null || rig_die "docker CLI not found"
docker info >/dev/null 2>&1 || rig_die "the Docker engine does not answer"

base="$(bash "$RIG_DIR/offline-base.sh")"
[ -n "$base" ] || rig_die "offline-base.sh printed no tag"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Which docker CLI goes into the image: "host:<path>" or "debian".
host_cli="$(command -v docker)"
host_cli="$(readlink -f "$host_cli")"
cli=debian
if [ "${LABSHIP_SIM_DOCKER_CLI:-}" != debian ] &&
    docker run --rm --network none -v "$host_cli:/x:ro" "$base" /x --version >/dev/null 2>&1; then
    cli="host:$host_cli"
fi
if [ "$cli" = debian ]; then
    cli_id=debian
else
    cli_id="$(sha256sum <"$host_cli" | cut -c1-64)"
fi

H="$( { sha256sum <"$SELF"; printf 'base=%s\ncli=%s\n' "$base" "$cli_id"; } | sha256sum | cut -c1-12)"
readonly TAG="$REPO:$H"

if image_exists "$TAG"; then
    rig_log "sim host image $TAG exists; nothing to build"
    printf '%s\n' "$TAG" >&3
    exit 0
fi

# One build at a time; the loser of a race finds the image afterwards.
mkdir -p "$RIG_HOME"
exec 9>"$RIG_HOME/sim-host.lock"
flock -w 1800 9 || rig_die "timed out waiting for another sim-host build"
if image_exists "$TAG"; then
    rig_log "sim host image $TAG was built meanwhile"
    printf '%s\n' "$TAG" >&3
    exit 0
fi

# The first deb URI that serves bookworm main, from apt's own sources (one-line or deb822).
apt_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//g' "$f" |
            awk '$1 == "deb" && $3 == "bookworm" { for (i = 4; i <= NF; i++) if ($i == "main") { print $2; exit } }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; comps = ""; types = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i; sub(/#.*/, "", line)
                    if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); uris = line }
                    else if (line ~ /^Suites:/) suites = " " line " "
                    else if (line ~ /^Components:/) comps = " " line " "
                    else if (line ~ /^Types:/) types = " " line " "
                    else if (line ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, "", line); enabled = tolower(line) }
                }
                if (enabled != "no" && types ~ / deb / && suites ~ / bookworm / && comps ~ / main /) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$f"
    done
}
mirror="$(apt_mirror | grep -E '^(https?|file)://' | head -n 1 || true)"
mirror="${mirror%/}"
mirror="${mirror:-http://deb.debian.org/debian}"
case "$mirror" in
file://*) mirror=http://deb.debian.org/debian ;; # a local mirror is not visible in the build
esac

start=$SECONDS
ctx="$(mktemp -d "$RIG_HOME/sim-host.XXXXXX")"
building="$REPO:building-$H-$$"
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    rm -rf --one-file-system "$ctx"
    docker rmi "$building" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pip in the build needs the CA bundle this machine trusts (PyPI may be reached through a
# TLS-intercepting proxy). It is public data; it is deleted in the same step that uses it.
ca=
for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$f" ] && [ -f "$f" ]; then
        ca="$f"
        break
    fi
done
if [ -n "$ca" ]; then cp -L "$ca" "$ctx/host-ca.crt"; else : >"$ctx/host-ca.crt"; fi
if [ "$cli" = debian ]; then
    : >"$ctx/docker"
else
    cp -L "$host_cli" "$ctx/docker"
fi
chmod 0755 "$ctx/docker"

cat >"$ctx/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
ARG MIRROR
ARG AWSCLI_VERSION
ARG CLI
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# The host's docker CLI (an empty file when it is taken from Debian's docker.io instead).
COPY docker /usr/local/bin/docker
COPY host-ca.crt /tmp/host-ca.crt
# Host tools. /etc/apt/sources.list of the debootstrapped base names the mirror it was made from.
RUN printf 'deb %s bookworm main\n' "$MIRROR" >/etc/apt/sources.list \
 && apt-get -qq update \
 && apt-get -qq install -y --no-install-recommends curl ca-certificates procps iproute2 less >/dev/null \
 && if [ "$CLI" = debian ]; then \
        cd /tmp && apt-get -qq download docker.io \
        && dpkg-deb --fsys-tarfile docker.io_*.deb | tar -x -C /tmp ./usr/bin/docker \
        && install -m 0755 /tmp/usr/bin/docker /usr/local/bin/docker \
        && rm -rf /tmp/usr /tmp/docker.io_*.deb && cd /; \
    fi \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log \
 && python3 -m venv /opt/awscli \
 && if [ -s /tmp/host-ca.crt ]; then export PIP_CERT=/tmp/host-ca.crt; fi \
 && /opt/awscli/bin/pip install --no-cache-dir --disable-pip-version-check --no-input \
        --progress-bar off "awscli==${AWSCLI_VERSION}" >/dev/null \
 && ln -s /opt/awscli/bin/aws /usr/local/bin/aws \
 && rm -f /tmp/host-ca.crt \
 && rm -rf /root/.cache
# An Amazon Linux host runs user-data as root from /.
WORKDIR /
CMD ["/bin/bash"]
LABEL dev.labship.sim.host="1"
EOF

rig_log "building $TAG (FROM $base, docker CLI: $cli, awscli $AWSCLI_VERSION, apt mirror $mirror)"
proxy_args=()
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    if [ -n "${!v:-}" ]; then proxy_args+=(--build-arg "$v=${!v}"); fi
done
log="$ctx/build.log"
if ! DOCKER_BUILDKIT=0 docker build --network host --pull=false --force-rm -t "$building" \
    --build-arg "BASE=$base" --build-arg "MIRROR=$mirror" \
    --build-arg "AWSCLI_VERSION=$AWSCLI_VERSION" --build-arg "CLI=${cli%%:*}" \
    "${proxy_args[@]}" "$ctx" >"$log" 2>&1 </dev/null; then
    tail -n 40 "$log" >&2
    rig_die "docker build of the sim host image failed"
fi

# Check before giving it the content tag, so "tag exists" means "image is good".
docker run --rm --network none "$building" bash -ec '
    for t in bash grep sed curl docker aws base64 timeout; do command -v "$t" >/dev/null || { echo "missing: $t"; exit 1; }; done
    ! command -v systemctl >/dev/null || { echo "systemctl present"; exit 1; }
    ! command -v dockerd >/dev/null || { echo "dockerd present"; exit 1; }
    docker --version >/dev/null
    aws --version' >&2 || rig_die "sim host image check failed"
docker tag "$building" "$TAG"
rig_log "built $TAG in $((SECONDS - start)) s ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
printf '%s\n' "$TAG" >&3
