#!/usr/bin/env bash
# Benchmarks against the rig (started if needed), with a release build of labship.
#   bash tests/bench/run.sh              build + push vs docker CLI / aws CLI (issue figures)
#   bash tests/bench/run.sh up-local     up --local vs docker run + polling docker logs
#   bash tests/bench/run.sh up-ec2       up --ec2 vs aws CLI + docker CLI (tests/bench/manual_ec2.sh)
#                                        on the instance simulator; also no-op up, API call counts
#   bash tests/bench/run.sh connect      up --ec2 with TLS vs without (LABSHIP_PLAIN_BIN), and
#                                        the connect forwarder vs a direct TLS connection
#   bash tests/bench/run.sh life-ec2     up of a stopped deployment vs a fresh up, and the host
#                                        watchdog's CPU and memory, on the instance simulator
#   bash tests/bench/run.sh class        a class of 1 and 10 seats locally (vs docker run by hand)
#                                        and of 1, 10 and 30 on the simulator, with API call counts
#   bash tests/bench/run.sh job          labship run of an empty notebook (and a --matrix of 3) vs
#                                        docker create/cp/start/cp/rm with jupyter nbconvert
#   bash tests/bench/run.sh job-ec2      labship run --ec2 of an empty notebook vs up + Jupyter's API +
#                                        down, on the instance simulator (own rig), with API call counts
#   bash tests/bench/run.sh data         a job's 1 GiB of inputs from S3 (moto) vs aws s3 cp --recursive
# BENCH_RUNS sets the runs per side. Timings are printed, never asserted.
# up-ec2 runs on a rig of its own (LABSHIP_RIG_STATE, default /tmp/labship-rig-bench-ec2) so
# the simulator's global call counter sees no other user (and no test run stops it midway);
# servers are left running, like the shared rig's (`servers.sh stop` with that state ends them).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/labship-target}"
if [ "${1:-}" = up-ec2 ] || [ "${1:-}" = class ] || [ "${1:-}" = job-ec2 ]; then
    export LABSHIP_RIG_STATE="${LABSHIP_RIG_STATE:-/tmp/labship-rig-bench-ec2}"
fi
bash tests/rig/setup.sh >/dev/null
bash tests/rig/servers.sh start
# shellcheck disable=SC1091
source "${LABSHIP_RIG_STATE:-/tmp/labship-rig}/rig.env"
cargo build --release --locked
export LABSHIP_BIN="$CARGO_TARGET_DIR/release/labship"
case "${1:-build-push}" in
build-push) python3 tests/bench/build_push.py ;;
up-local) python3 tests/bench/up_local.py ;;
up-ec2) python3 tests/bench/up_ec2.py ;;
connect) python3 tests/bench/connect.py ;;
life-ec2) python3 tests/bench/life_ec2.py ;;
class) python3 tests/bench/class.py ;;
job) python3 tests/bench/job.py ;;
job-ec2) python3 tests/bench/job_ec2.py ;;
data) python3 tests/bench/data.py ;;
*)
    echo "usage: $0 [build-push|up-local|up-ec2|connect|life-ec2|class|job|job-ec2|data]" >&2
    exit 2
    ;;
esac
