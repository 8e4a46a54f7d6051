#!/usr/bin/env bash
# Benchmarks against the rig (started if needed), with a release build of labship.
#   bash tests/bench/run.sh              build + push vs docker CLI / aws CLI (issue figures)
#   bash tests/bench/run.sh up-local     up --local vs docker run + polling docker logs
# BENCH_RUNS sets the runs per side. Timings are printed, never asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/labship-target}"
bash tests/rig/setup.sh >/dev/null
bash tests/rig/servers.sh start
# shellcheck disable=SC1091
source "${LABSHIP_RIG_STATE:-/tmp/labship-rig}/rig.env"
cargo build --release --locked
export LABSHIP_BIN="$CARGO_TARGET_DIR/release/labship"
case "${1:-build-push}" in
build-push) python3 tests/bench/build_push.py ;;
up-local) python3 tests/bench/up_local.py ;;
*)
    echo "usage: $0 [build-push|up-local]" >&2
    exit 2
    ;;
esac
