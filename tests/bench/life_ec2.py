#!/usr/bin/env python3
"""Benchmark: `labship up --ec2` of a stopped deployment (start, same token and notebooks)
against a fresh `up` in the same run, and what the host's idle/TTL watchdog costs, on the
rig's instance simulator.

    bash tests/bench/run.sh life-ec2        (BENCH_RUNS=5 for more runs; BENCH_WATCH_SECS)

Each run: a new deployment of the default workload; `labship build` first (not timed, so the
fresh `up` is not charged for the build: the comparison favours the fresh side); then timed:
  fresh  `labship up --ec2` (push, launch, boot, Docker login, pull, Jupyter) to its report,
         which labship prints only once the URL answers from here;
  stop   `labship stop --ec2` (to "stopped");
  start  `labship up --ec2` again: StartInstances, the host's boot, the replace script through
         SSM, Jupyter answering with the same token.
Then `down --delete-data --purge-images`. Runs use fresh names and ports.

The watchdog: on one running deployment with the default settings (idle stop 60m, so a check
every 60 s), its bash process is sampled through /proc in the host container for
BENCH_WATCH_SECS (default 180): CPU = growth of utime+stime+cutime+cstime (children it waited
for: curl, date, sed) over the wall time; memory = VmRSS and VmHWM of the bash process. The
per-check cost is the CPU divided by the number of checks, from which the cost at the
shortest interval (5 s, for idle stops of 30 s) is worked out.

On the simulator the "instance" boots in well under a second and pulls from the engine that
built the image, so boot and pull are far shorter than on EC2, where both sides pay the boot
(the start one a second time, the fresh one with a first Docker setup and a full pull).
Timings are printed, never asserted; JSON goes to ${TMPDIR:-/tmp}/labship-bench-life-<time>.json.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
WATCH_SECS = int(os.environ.get("BENCH_WATCH_SECS", "180"))
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
REGISTRY = os.environ["LABSHIP_TEST_REGISTRY"]
SIM = os.environ["LABSHIP_TEST_SIM_ENDPOINT"]
ENV = dict(os.environ)
ENV.update({
    "AWS_ENDPOINT_URL": SIM,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "LABSHIP_REGISTRY_ENDPOINT": REGISTRY,
    "LABSHIP_CHECKIP": "127.0.0.1:1",  # --allow-cidr is given: never asked
})


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def labship(cwd, *args, timeout=1200):
    t = time.monotonic()
    cp = subprocess.run([LABSHIP, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=timeout, text=True)
    took = time.monotonic() - t
    if cp.returncode != 0:
        sys.stderr.write(cp.stderr[-3000:])
        raise SystemExit("labship %s failed (%d)" % (" ".join(args), cp.returncode))
    return took, cp.stdout


def up_args(port):
    return ["up", "--ec2", "--allow-cidr", "127.0.0.1/32", "--bind", "127.0.0.1",
            "--port", str(port), "--wait", "900", "-o", "json"]


def project(name):
    d = tempfile.mkdtemp(prefix="labship-bench-life-")
    subprocess.run([LABSHIP, "init", "--name", name], cwd=d, env=ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # A file of its own: a new content tag, so nothing is reused from another run.
    with open(os.path.join(d, "docker", "resources", "bench-%s.txt" % name), "w") as f:
        f.write(name + "\n")
    return d


def proc_sample(container, pid):
    out = subprocess.run(["docker", "exec", container, "sh", "-c",
                          "cat /proc/%d/stat; grep -E '^(VmRSS|VmHWM)' /proc/%d/status; getconf CLK_TCK"
                          % (pid, pid)], stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = out.strip().splitlines()
    fields = lines[0].rsplit(")", 1)[1].split()
    # after "(comm)": state is fields[0]; utime=14th field overall -> index 11 here
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    mem = {l.split(":")[0]: int(l.split()[1]) for l in lines[1:3]}
    return ticks, int(lines[3]), mem


def watchdog(name, instance):
    container = "labship-sim-" + instance
    state = subprocess.run(["docker", "exec", container, "sh", "-c", "echo $LABSHIP_STATE_DIR"],
                           stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    # The replace of `up` has just started a new watchdog, which writes its pid once the old
    # one has let go of the lock.
    deadline = time.monotonic() + 60
    while True:
        cp = subprocess.run(["docker", "exec", container, "cat", "%s/%s.watch.pid" % (state, name)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if cp.returncode == 0 and cp.stdout.strip().isdigit():
            pid = int(cp.stdout.strip())
            break
        if time.monotonic() > deadline:
            raise SystemExit("no watchdog pid file on %s after 60 s" % container)
        time.sleep(1)
    t0 = time.monotonic()
    ticks0, hz, mem0 = proc_sample(container, pid)
    time.sleep(WATCH_SECS)
    ticks1, _, mem1 = proc_sample(container, pid)
    wall = time.monotonic() - t0
    cpu = (ticks1 - ticks0) / hz
    checks = max(1, round(wall / 60))
    per_check = cpu / checks
    return {"window_s": round(wall, 1), "cpu_s": cpu, "cpu_pct": 100 * cpu / wall,
            "checks": checks, "cpu_per_check_s": per_check,
            "cpu_pct_at_5s_interval": 100 * per_check / 5,
            "rss_kib": mem1.get("VmRSS"), "hwm_kib": mem1.get("VmHWM")}


def main():
    results = []
    watch = None
    for run in range(RUNS):
        name = "benchlife%d-%d" % (run, int(time.time()) % 100000)
        d = project(name)
        port = free_port()
        log("run %d: %s: build (not timed)" % (run + 1, name))
        labship(d, "build", "-q")
        fresh, out = labship(d, *up_args(port))
        first = json.loads(out)
        assert first["action"] == "created", first
        log("  fresh up %.1f s" % fresh)
        stop, _ = labship(d, "stop", "--ec2", "-o", "json")
        start, out = labship(d, *up_args(port))
        second = json.loads(out)
        assert second["action"] == "started", second
        assert second["url"] == first["url"], "the URL (token, address) changed"
        log("  stop %.1f s, up of the stopped deployment %.1f s (%.2fx)" % (stop, start, start / fresh))
        if watch is None:
            log("  watchdog: sampling for %d s" % WATCH_SECS)
            watch = watchdog(name, second["instance_id"])
        labship(d, "down", "--ec2", "--yes", "--delete-data", "--purge-images", "-o", "json")
        results.append({"fresh_s": fresh, "stop_s": stop, "start_s": start,
                        "ratio": start / fresh, "start_timings": second.get("timings"),
                        "fresh_timings": first.get("timings")})
    med = lambda k: statistics.median(r[k] for r in results)
    print("up of a stopped deployment vs a fresh up (simulator, %d runs, medians)" % RUNS)
    print("  fresh up (push+launch+boot+pull+Jupyter)  %6.1f s" % med("fresh_s"))
    print("  stop                                       %6.1f s" % med("stop_s"))
    print("  up of the stopped deployment               %6.1f s" % med("start_s"))
    print("  ratio start/fresh                          %6.2f   (each run: %s)" % (
        med("ratio"), " ".join("%.2f" % r["ratio"] for r in results)))
    if watch:
        print("watchdog on the host (default idle stop 60m: a check every 60 s)")
        print("  window %.0f s, %d checks: CPU %.3f s = %.3f %% of one CPU; %.3f s per check"
              % (watch["window_s"], watch["checks"], watch["cpu_s"], watch["cpu_pct"], watch["cpu_per_check_s"]))
        print("  at the shortest interval (5 s): %.2f %% of one CPU" % watch["cpu_pct_at_5s_interval"])
        print("  memory: VmRSS %s KiB, VmHWM %s KiB (the bash process)" % (watch["rss_kib"], watch["hwm_kib"]))
    path = os.path.join(tempfile.gettempdir(), "labship-bench-life-%d.json" % int(time.time()))
    with open(path, "w") as f:
        json.dump({"runs": results, "watchdog": watch}, f, indent=2)
    log("results in %s" % path)


if __name__ == "__main__":
    main()
