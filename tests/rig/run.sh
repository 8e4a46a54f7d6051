#!/usr/bin/env bash
# THE test command of labship.
#
#   bash tests/rig/run.sh [TEST-ARGS...]
#   bash tests/rig/run.sh [CARGO-ARGS...] -- [TEST-ARGS...]
#
# 1. tests/rig/setup.sh        (idempotent: packages, venv with moto/awscli, offline base image)
# 2. tests/rig/servers.sh start (moto_server + docker-registry on free 127.0.0.1 ports)
# 3. sources $LABSHIP_RIG_STATE/rig.env (LABSHIP_TEST_* variables) and runs, at the repo root,
#        cargo test --locked --all-targets [CARGO-ARGS] -- [TEST-ARGS]
#    e.g. `run.sh --nocapture` or `run.sh --test e2e -- --nocapture`.
# 4. on exit, tests/rig/servers.sh stop, unless the servers were already running before this
#    run (someone started them by hand; they are left as they were) or
#    LABSHIP_RIG_KEEP_SERVERS=1 (keep them, e.g. to inspect after a failure).
#
# Exits with cargo's status. CARGO_TARGET_DIR defaults to $HOME/.cache/labship-target, so a
# fresh clone reuses compiled dependencies. With CI=true, CARGO_TERM_COLOR=never.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

cd "$RIG_ROOT"
command -v cargo >/dev/null 2>&1 || rig_die "cargo not found in PATH"

cargo_args=()
test_args=("$@")
for ((i = 0; i < $#; i++)); do
    if [ "${test_args[i]}" = "--" ]; then
        cargo_args=("${test_args[@]:0:i}")
        test_args=("${test_args[@]:i+1}")
        break
    fi
done

bash "$RIG_DIR/setup.sh" </dev/null >/dev/null

stop_on_exit=1
if bash "$RIG_DIR/servers.sh" status 2>/dev/null; then
    rig_log "servers were already running: using them and leaving them running afterwards"
    stop_on_exit=0
fi
if [ "${LABSHIP_RIG_KEEP_SERVERS:-0}" = 1 ]; then
    stop_on_exit=0
fi

# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$stop_on_exit" = 1 ]; then
        bash "$RIG_DIR/servers.sh" stop </dev/null || rig_log "WARNING: servers.sh stop failed"
    else
        rig_log "servers left running (stop them with: bash tests/rig/servers.sh stop)"
    fi
    if [ "$rc" -ne 0 ]; then
        rig_log "exit status $rc; server logs: $RIG_STATE/moto.log $RIG_STATE/registry.log $RIG_STATE/sim.log"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$RIG_DIR/servers.sh" start </dev/null
# shellcheck source=/dev/null
. "$RIG_STATE/rig.env"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/labship-target}"
case "${CI:-}" in
true | TRUE | True | 1 | yes) export CARGO_TERM_COLOR=never ;;
esac

rig_log "cargo test --locked --all-targets ${cargo_args[*]} -- ${test_args[*]}"
rig_log "  (CARGO_TARGET_DIR=$CARGO_TARGET_DIR, AWS endpoint $LABSHIP_TEST_AWS_ENDPOINT, registry $LABSHIP_TEST_REGISTRY, base $LABSHIP_TEST_BASE_IMAGE)"
# cargo runs in the background so that a SIGTERM/SIGINT sent to this script alone is handled
# at once (forwarded to cargo) instead of after cargo finishes; the subshell restores SIGINT,
# which bash would otherwise ignore in a background job, so Ctrl-C still reaches cargo.
(
    trap - INT QUIT TERM
    exec cargo test --locked --all-targets "${cargo_args[@]}" -- "${test_args[@]}"
) </dev/null &
cargo_pid=$!
trap 'kill -TERM "$cargo_pid" 2>/dev/null || true' TERM
trap 'kill -INT "$cargo_pid" 2>/dev/null || true' INT
status=0
while :; do
    status=0
    wait "$cargo_pid" || status=$?
    kill -0 "$cargo_pid" 2>/dev/null || break # still alive: wait was interrupted by a signal
done
exit "$status"
