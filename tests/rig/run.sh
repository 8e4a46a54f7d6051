#!/usr/bin/env bash
# THE test command of labship (what .ci/run runs).
#
#   bash tests/rig/run.sh [TEST-ARGS...]
#   bash tests/rig/run.sh [CARGO-ARGS...] -- [TEST-ARGS...]
#
# Runs these stages in order, stopping at the first that fails (except that a failing fmt
# still lets clippy run, so one run reports both lints):
#   setup     tests/rig/setup.sh (idempotent: packages, venv with moto/awscli, offline base
#             image, sim host image), then the rustfmt and clippy components when missing
#             (`rustup component add`)
#   fmt       cargo fmt --check
#   clippy    cargo clippy --locked --all-targets -- -D warnings
#   servers   tests/rig/servers.sh start (moto, docker-registry, instance simulator on free
#             127.0.0.1 ports), then sources $LABSHIP_RIG_STATE/rig.env (LABSHIP_TEST_*)
#   selftest  tests/rig/sim-selftest.sh, the instance simulator's self-test, bounded by
#             LABSHIP_RIG_SELFTEST_TIMEOUT seconds (default 300)
#   test      cargo test --locked --all-targets [CARGO-ARGS] -- [TEST-ARGS] at the repo root,
#             e.g. `run.sh --nocapture` or `run.sh --test e2e -- --nocapture`.
# Each stage's wall time is logged on stderr when it ends, and a table of all stages (result
# and time) is printed on stderr at the end, also after a failure or an interruption.
#
# On exit, tests/rig/servers.sh stop, unless the servers were already running before this
# run (someone started them by hand; they are left as they were) or LABSHIP_RIG_KEEP_SERVERS=1
# (keep them, e.g. to inspect after a failure).
#
# LABSHIP_RIG_SKIP_LINT=1 skips fmt and clippy for quick local runs; it is ignored when CI is
# set (true/1/yes): CI always lints.
#
# Exits with the status of the first failing stage (cargo's status for the tests), 0 when all
# pass. CARGO_TARGET_DIR defaults to $HOME/.cache/labship-target, so a fresh clone reuses
# compiled dependencies. With CI=true, CARGO_TERM_COLOR=never.
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

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/labship-target}"
ci=0
case "${CI:-}" in
true | TRUE | True | 1 | yes)
    ci=1
    export CARGO_TERM_COLOR=never
    ;;
esac
skip_lint=0
if [ "${LABSHIP_RIG_SKIP_LINT:-0}" = 1 ]; then
    if [ "$ci" = 1 ]; then
        rig_log "CI=$CI: ignoring LABSHIP_RIG_SKIP_LINT=1 (CI always runs fmt and clippy)"
    else
        skip_lint=1
    fi
fi
selftest_timeout="${LABSHIP_RIG_SELFTEST_TIMEOUT:-300}"
[[ "$selftest_timeout" =~ ^[1-9][0-9]*$ ]] ||
    rig_die "LABSHIP_RIG_SELFTEST_TIMEOUT must be a number of seconds, not '$selftest_timeout'"

# --- stage bookkeeping ----------------------------------------------------------------------

readonly STAGES=(setup fmt clippy servers selftest test)
declare -A stage_result=() stage_us=()
current_stage="" # the stage running now, for the EXIT trap
stage_t0=0
run_t0=0

# Microseconds since the epoch, from bash's own clock (no fork).
now_us() {
    local t="$EPOCHREALTIME"
    printf '%s' "${t/[.,]/}"
}

# Microseconds as "12.3 s" or "4 min 05.2 s".
fmt_us() {
    local tenths=$((($1 + 50000) / 100000))
    local s=$((tenths / 10)) d=$((tenths % 10))
    if [ "$s" -ge 60 ]; then
        printf '%d min %02d.%d s' $((s / 60)) $((s % 60)) "$d"
    else
        printf '%d.%d s' "$s" "$d"
    fi
}

stage_begin() {
    current_stage="$1"
    shift
    rig_log "=== stage $current_stage: $*"
    stage_t0="$(now_us)"
}

# stage_end RESULT: record the running stage's result and wall time, log them.
stage_end() {
    local us=$(($(now_us) - stage_t0))
    stage_result[$current_stage]="$1"
    stage_us[$current_stage]="$us"
    rig_log "=== stage $current_stage: $1 in $(fmt_us "$us")"
    current_stage=""
}

stage_skip() {
    stage_result[$1]=skipped
    rig_log "=== stage $1: skipped ($2)"
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
print_summary() {
    local name us total=$(($(now_us) - run_t0))
    {
        printf '[rig] %-10s %-22s %14s\n' stage result "wall time"
        for name in "${STAGES[@]}" stop; do
            if [ "$name" = stop ] && [ -z "${stage_result[stop]:-}" ]; then continue; fi
            us="${stage_us[$name]:-}"
            printf '[rig] %-10s %-22s %14s\n' "$name" "${stage_result[$name]:-not run}" \
                "$(if [ -n "$us" ]; then fmt_us "$us"; fi)"
        done
        printf '[rig] %-10s %-22s %14s\n' total "" "$(fmt_us "$total")"
    } >&2
}

# --- running commands -----------------------------------------------------------------------

# Long stages run in the background so that a SIGTERM/SIGINT sent to this script alone is
# handled at once (forwarded to the stage's command) instead of after the command finishes;
# the subshell restores SIGINT, which bash would otherwise ignore in a background job, so
# Ctrl-C still reaches cargo. Setup and server start run in the foreground: a signal then
# takes effect when they are done, so they are never cut half-way.
child_pid=""
got_signal=0 # exit status for the signal received (130, 143), 0 when none

# shellcheck disable=SC2317 # invoked by the INT/TERM traps
on_signal() {
    got_signal="$1"
    if [ -n "$child_pid" ]; then
        kill -"$2" "$child_pid" 2>/dev/null || true
    else
        exit "$1"
    fi
}

# run_bg CMD...: run CMD (a command or a function of this script) in the background, wait for
# it, return its status.
run_bg() {
    (
        trap - INT QUIT TERM
        if declare -F "$1" >/dev/null; then
            "$@"
        else
            exec "$@"
        fi
    ) </dev/null &
    child_pid=$!
    local status=0
    while :; do
        status=0
        wait "$child_pid" || status=$?
        kill -0 "$child_pid" 2>/dev/null || break # still alive: wait was interrupted by a signal
    done
    child_pid=""
    return "$status"
}

# stage NAME fg|bg DESCRIPTION CMD...: run CMD as the stage NAME. Returns CMD's status; exits
# at once when a signal arrived meanwhile.
stage() {
    local name="$1" how="$2" what="$3" status=0
    shift 3
    stage_begin "$name" "$what"
    if [ "$how" = bg ]; then
        run_bg "$@" || status=$?
    else
        "$@" || status=$?
    fi
    if [ "$got_signal" != 0 ]; then
        stage_end "interrupted"
        [ "$status" -ne 0 ] || status="$got_signal"
        exit "$status"
    fi
    if [ "$status" -eq 0 ]; then
        stage_end ok
    else
        stage_end "FAILED (exit $status)"
    fi
    return "$status"
}

# The setup stage: the rig's packages and images, then the lint components when needed.
# shellcheck disable=SC2317 # invoked through stage
setup_rig() {
    bash "$RIG_DIR/setup.sh" </dev/null >/dev/null || return
    [ "$skip_lint" = 1 ] || ensure_lint_components
}

# rustfmt and clippy come with rustup's default profile but not its minimal one (CI images).
# shellcheck disable=SC2317 # invoked through setup_rig
ensure_lint_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    [ "${#missing[@]}" -gt 0 ] || return 0
    if ! command -v rustup >/dev/null 2>&1; then
        rig_log "ERROR: cargo ${missing[*]} missing and no rustup to add them; install them with your Rust toolchain"
        return 1
    fi
    rig_log "adding the Rust components: ${missing[*]}"
    rustup component add "${missing[@]}" </dev/null >&2
}

# cargo fmt --check, with its stderr deduplicated: stable rustfmt repeats its warning about
# the nightly-only `group_imports` of rustfmt.toml once per crate target (it only warns: the
# check passes or fails on the formatting alone, and the import grouping is enforced only by
# `cargo +nightly fmt --check`).
# shellcheck disable=SC2317 # invoked through stage
fmt_check() {
    { cargo fmt --check 2>&1 1>&3 3>&- | awk '!seen[$0]++' >&2; } 3>&1
}

# --- exit -----------------------------------------------------------------------------------

stop_on_exit=0 # set before the servers stage

# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
    local rc=$? t0
    trap - EXIT INT TERM
    if [ -n "$current_stage" ]; then
        stage_end "$(if [ "$got_signal" != 0 ]; then echo interrupted; else echo "FAILED (exit $rc)"; fi)"
    fi
    if [ "$stop_on_exit" = 1 ]; then
        t0="$(now_us)"
        if bash "$RIG_DIR/servers.sh" stop </dev/null; then
            stage_result[stop]="ok"
        else
            stage_result[stop]="FAILED"
            rig_log "WARNING: servers.sh stop failed"
        fi
        stage_us[stop]=$(($(now_us) - t0))
    elif [ -n "${stage_result[servers]:-}" ]; then
        rig_log "servers left running (stop them with: bash tests/rig/servers.sh stop)"
    fi
    print_summary
    if [ "$rc" -ne 0 ] && [ -n "${stage_result[servers]:-}" ]; then
        rig_log "exit status $rc; server logs: $RIG_STATE/moto.log $RIG_STATE/registry.log $RIG_STATE/sim.log"
    elif [ "$rc" -ne 0 ]; then
        rig_log "exit status $rc"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'on_signal 130 INT' INT
trap 'on_signal 143 TERM' TERM

# --- the stages -----------------------------------------------------------------------------

run_t0="$(now_us)"
rig_log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

stage setup fg "tests/rig/setup.sh" setup_rig

if [ "$skip_lint" = 1 ]; then
    stage_skip fmt "LABSHIP_RIG_SKIP_LINT=1"
    stage_skip clippy "LABSHIP_RIG_SKIP_LINT=1"
else
    lint_status=0
    stage fmt bg "cargo fmt --check" fmt_check || lint_status=$?
    stage clippy bg "cargo clippy --locked --all-targets -- -D warnings" \
        cargo clippy --locked --all-targets -- -D warnings || {
        status=$?
        [ "$lint_status" -ne 0 ] || lint_status="$status"
    }
    [ "$lint_status" -eq 0 ] || exit "$lint_status"
fi

if bash "$RIG_DIR/servers.sh" status 2>/dev/null; then
    rig_log "servers were already running: using them and leaving them running afterwards"
else
    stop_on_exit=1
fi
if [ "${LABSHIP_RIG_KEEP_SERVERS:-0}" = 1 ]; then
    stop_on_exit=0
fi
stage servers fg "tests/rig/servers.sh start" bash "$RIG_DIR/servers.sh" start </dev/null
# shellcheck source=/dev/null
. "$RIG_STATE/rig.env"

# timeout(1) runs the self-test in its own process group and, at the deadline, sends SIGTERM
# to all of it (the self-test's EXIT trap terminates its instance), SIGKILL 30 s later.
stage selftest bg "tests/rig/sim-selftest.sh (at most ${selftest_timeout} s)" \
    timeout --kill-after=30 "$selftest_timeout" bash "$RIG_DIR/sim-selftest.sh" || {
    status=$?
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        rig_log "the simulator self-test did not finish within ${selftest_timeout} s (LABSHIP_RIG_SELFTEST_TIMEOUT)"
    fi
    exit "$status"
}

rig_log "  (AWS endpoint $LABSHIP_TEST_AWS_ENDPOINT, registry $LABSHIP_TEST_REGISTRY, base $LABSHIP_TEST_BASE_IMAGE)"
status=0
stage test bg "cargo test --locked --all-targets ${cargo_args[*]} -- ${test_args[*]}" \
    cargo test --locked --all-targets "${cargo_args[@]}" -- "${test_args[@]}" || status=$?
exit "$status"
