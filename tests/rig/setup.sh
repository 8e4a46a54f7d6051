#!/usr/bin/env bash
# Idempotent installer of everything the labship test rig needs on this machine.
#
#   bash tests/rig/setup.sh
#
# 1. Debian packages (installed only when missing: a second run needs no network); chromium is
#    the headless browser of tests/e2e/browser.rs.
# 2. Makes sure the docker-registry package's system service is not running/enabled:
#    the rig runs its own registry on a free port (servers.sh).
# 3. A Python venv at ${LABSHIP_RIG_HOME:-$HOME/.cache/labship-rig}/venv with the exact pins
#    of tests/rig/requirements.txt (moto[server], awscli); recreated only when that file
#    (or the Python used) changes.
# 4. The offline JupyterLab base image (offline-base.sh; rebuilt only when its recipe changes).
# 5. The sim host image of the EC2 instance simulator, FROM that base (sim-host.sh; rebuilt
#    only when its recipe, the base or the docker CLI changes).
#
# Logs go to stderr; stdout carries only the base image tag (last step).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

exec 3>&1 1>&2

readonly APT_PACKAGES=(docker-registry debootstrap apache2-utils shellcheck hyperfine curl jq ca-certificates chromium)
readonly REQUIREMENTS="$RIG_DIR/requirements.txt"
readonly HASH_FILE="$RIG_VENV/.labship-rig-requirements.sha256"

start=$SECONDS
mkdir -p "$RIG_HOME"

# One setup at a time (concurrent run.sh invocations would race on the venv).
exec 9>"$RIG_HOME/setup.lock"
flock -w 1800 9 || rig_die "timed out waiting for another setup.sh"

# --- 1. Debian packages ---------------------------------------------------------------------
rig_apt_install "${APT_PACKAGES[@]}"
if ! command -v python3 >/dev/null 2>&1; then
    rig_apt_install python3 python3-venv
fi

# --- 2. No system docker-registry service ---------------------------------------------------
disable_system_registry() {
    local unit=docker-registry.service link pid cmd
    # systemd: stop and disable (when systemd is not PID 1, `disable` only removes the links).
    if command -v systemctl >/dev/null 2>&1; then
        if [ -d /run/systemd/system ]; then
            if systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit" 2>/dev/null; then
                rig_log "stopping and disabling the system $unit"
                rig_as_root systemctl disable --now "$unit" >/dev/null 2>&1 || true
            fi
        elif [ -e "/etc/systemd/system/multi-user.target.wants/$unit" ]; then
            rig_log "disabling the system $unit"
            rig_as_root systemctl disable "$unit" >/dev/null 2>&1 || true
        fi
    fi
    # sysvinit links.
    for link in /etc/rc[2-5].d/S[0-9][0-9]docker-registry; do
        if [ -e "$link" ] && command -v update-rc.d >/dev/null 2>&1; then
            rig_log "disabling the sysvinit docker-registry service"
            rig_as_root update-rc.d docker-registry disable >/dev/null 2>&1 || true
        fi
        break
    done
    # A running instance started by the init script (pid file) or by anything else with the
    # package's config: stop it, by its pid.
    if [ -s /var/run/docker-registry.pid ] && rig_pid_matches "$(cat /var/run/docker-registry.pid)" /usr/bin/docker-registry; then
        rig_log "stopping the sysvinit docker-registry service"
        rig_as_root /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
    for pid in /proc/[0-9]*; do
        pid="${pid#/proc/}"
        [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = docker-registry ] || continue
        cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
        if [ "$cmd" = "/usr/bin/docker-registry serve /etc/docker/registry/config.yml " ]; then
            rig_log "killing the system docker-registry (pid $pid) that serves /etc/docker/registry/config.yml"
            rig_as_root kill "$pid" 2>/dev/null || true
        fi
    done
}
disable_system_registry

# --- 3. Python venv with moto and awscli ----------------------------------------------------
python="$(python3 -c 'import sys; print(sys.executable)')"
want="$( { sha256sum <"$REQUIREMENTS"; "$python" -c 'import sys; print(sys.version)'; echo "$python"; } | sha256sum | cut -c1-64)"
have="$(cat "$HASH_FILE" 2>/dev/null || true)"
if [ "$want" = "$have" ] && "$RIG_VENV/bin/python" -c '' 2>/dev/null && [ -x "$RIG_VENV/bin/moto_server" ]; then
    rig_log "venv $RIG_VENV is up to date"
else
    rig_log "creating venv $RIG_VENV from $(basename "$REQUIREMENTS") with $python"
    t0=$SECONDS
    rm -rf "$RIG_VENV"
    "$python" -m venv "$RIG_VENV"
    log="$RIG_HOME/pip-install.log"
    if ! "$RIG_VENV/bin/pip" install --disable-pip-version-check --no-input --progress-bar off \
        -r "$REQUIREMENTS" >"$log" 2>&1 </dev/null; then
        tail -n 40 "$log" >&2
        rig_die "pip install failed (full log: $log)"
    fi
    "$RIG_VENV/bin/pip" check >&2 || rig_die "pip check failed in $RIG_VENV"
    printf '%s\n' "$want" >"$HASH_FILE" # written last: an interrupted install is redone
    rig_log "venv ready ($((SECONDS - t0)) s): $("$RIG_VENV/bin/pip" freeze | grep -iE '^(moto|awscli)==' | tr '\n' ' ')"
fi

# --- 4. Offline base image ------------------------------------------------------------------
tag="$(bash "$RIG_DIR/offline-base.sh")"

# --- 5. Sim host image ----------------------------------------------------------------------
sim_tag="$(bash "$RIG_DIR/sim-host.sh")"
rig_log "setup complete in $((SECONDS - start)) s (base image $tag, sim host image $sim_tag)"
printf '%s\n' "$tag" >&3
