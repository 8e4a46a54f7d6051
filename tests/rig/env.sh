# shellcheck shell=bash
# Shared helpers for the labship test rig. Source it; do not execute it.
#
#   . tests/rig/env.sh
#
# Defines (all logging goes to stderr, never stdout):
#   rig_log MSG...            log a line prefixed with "[rig]"
#   rig_die MSG...            log and exit 1
#   rig_free_port             print a free 127.0.0.1 TCP port chosen by the kernel
#   rig_wait_http URL SECS    wait (bounded) until URL answers any HTTP response
#   rig_http_answers URL      one quick probe: does URL answer any HTTP response?
#   rig_apt_install PKG...    install the Debian packages that are missing (idempotent)
#   rig_as_root CMD...        run CMD as root (directly, or through sudo)
# and the variables
#   RIG_DIR    this directory (tests/rig)
#   RIG_ROOT   the repository root
#   RIG_HOME   ${LABSHIP_RIG_HOME:-$HOME/.cache/labship-rig}  (venv, locks, build scratch)
#   RIG_STATE  ${LABSHIP_RIG_STATE:-/tmp/labship-rig}         (pids, logs, rig.env)
#   RIG_VENV   $RIG_HOME/venv

RIG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
RIG_ROOT="$(cd "$RIG_DIR/../.." && pwd -P)"
RIG_HOME="${LABSHIP_RIG_HOME:-${HOME:-/root}/.cache/labship-rig}"
RIG_STATE="${LABSHIP_RIG_STATE:-/tmp/labship-rig}"
RIG_VENV="$RIG_HOME/venv"
export RIG_DIR RIG_ROOT RIG_HOME RIG_STATE RIG_VENV

rig_log() {
    printf '[rig %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

rig_die() {
    rig_log "ERROR: $*"
    exit 1
}

rig_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        rig_log "ERROR: need root for: $*"
        return 1
    fi
}

# Ask the kernel for a free loopback TCP port (bind to 127.0.0.1:0, read it, close).
# There is an unavoidable small race until the server binds it; callers retry on failure.
rig_free_port() {
    python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# One quick probe: succeeds when URL answers with any HTTP status (401, 404... count).
rig_http_answers() {
    local url="$1"
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null --connect-timeout 1 --max-time 3 "$url"
    else
        python3 - "$url" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=3)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PY
    fi
}

# Bounded wait until URL answers anything. Usage: rig_wait_http URL SECONDS [PID]
# With PID, give up early when that process has died.
rig_wait_http() {
    local url="$1" seconds="${2:-30}" pid="${3:-}"
    local deadline=$((SECONDS + seconds))
    while :; do
        if rig_http_answers "$url"; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            rig_log "process $pid died while waiting for $url"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            rig_log "timed out after ${seconds}s waiting for $url"
            return 1
        fi
        sleep 0.2
    done
}

# Install the Debian packages among "$@" that are not installed yet. Needs no network
# (and is fast) when all are present. Runs apt-get update only if the install fails.
rig_apt_install() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    rig_log "installing Debian packages: ${missing[*]}"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -qq -y
        -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
        install --no-install-recommends)
    if ! rig_as_root "${apt[@]}" "${missing[@]}" </dev/null >&2; then
        rig_log "apt-get install failed; running apt-get update and retrying"
        rig_as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq update </dev/null >&2
        rig_as_root "${apt[@]}" "${missing[@]}" </dev/null >&2
    fi
}

# Is PID alive and is its command line containing STRING? (guards against pid reuse)
rig_pid_matches() {
    local pid="$1" needle="$2"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$needle"
}
