#!/usr/bin/env bash
# Runs the build/push benchmark against the rig's registry and moto (started if needed).
# Usage: bash tests/bench/run.sh   (BENCH_RUNS=5 for more runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/labship-target}"
bash tests/rig/setup.sh
bash tests/rig/servers.sh start
# shellcheck disable=SC1091
source "${LABSHIP_RIG_STATE:-/tmp/labship-rig}/rig.env"
cargo build --release --locked
export LABSHIP_BIN="$CARGO_TARGET_DIR/release/labship"
python3 tests/bench/build_push.py
