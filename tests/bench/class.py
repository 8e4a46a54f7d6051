#!/usr/bin/env python3
"""Benchmark: a class in one command (`labship up --seats N`), on the local engine and on the
instance simulator (moto behind tests/rig/instance-sim.py, which runs each instance's
user-data for real on the local engine).

    bash tests/bench/run.sh class      (BENCH_SEATS_LOCAL="1 10", BENCH_SEATS_EC2="1 10 30",
                                        BENCH_PER_INSTANCE="1", BENCH_RUNS=1)

Local, for each N: `labship up --local --seats N` from command to every seat's URL answering
(labship checks each; the benchmark checks again), against the same by hand: a loop of
`docker run -d` (own name, port, volume, same limits) and polling `docker logs` for the token
until the URL answers, one seat after the other, as a person's script does. Both sides run
the same image, built once beforehand (not timed). Then the memory each idle seat's container
uses (docker stats), and `down --delete-data` vs `docker rm -f` + `docker volume rm`.

EC2 (simulator), for each N (and each K of BENCH_PER_INSTANCE, `--seats-per-instance K`:
ceil(N/K) instances): `labship up --ec2 --seats N` to every URL answering, then
`down --delete-data`, with the AWS calls the simulator counted for each (its global counter,
reset before each command; run.sh gives this benchmark a rig of its own), the CPU seconds the
whole machine was busy during `up` and labship's own. Every simulated host runs on this
machine, so N seats cost N hosts' CPU here, where EC2 gives each its own: the time of N
seats cannot be less than that CPU divided among this machine's cores (the "floor"). The image is pushed
once beforehand (not timed), so every N starts from the same registry state.

Timings are printed, never asserted. The summary goes to stdout, progress to stderr, the JSON
results to ${TMPDIR:-/tmp}/labship-bench-class-<time>.json.
"""

import collections
import json
import os
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

RUNS = int(os.environ.get("BENCH_RUNS", "1"))
SEATS_LOCAL = [int(n) for n in os.environ.get("BENCH_SEATS_LOCAL", "1 10").split()]
SEATS_EC2 = [int(n) for n in os.environ.get("BENCH_SEATS_EC2", "1 10 30").split()]
# Seats per instance on EC2 (`--seats-per-instance K`): every size of SEATS_EC2 runs with each.
PER_INSTANCE = [int(k) for k in os.environ.get("BENCH_PER_INSTANCE", "1").split()]
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
BASE = os.environ["LABSHIP_TEST_BASE_IMAGE"]
REGISTRY = os.environ["LABSHIP_TEST_REGISTRY"]
SIM = os.environ["LABSHIP_TEST_SIM_ENDPOINT"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TIMEOUT = 1800  # seconds for one command, bounded
TOKEN_RE = re.compile(r"https?://[^\s]*[?&]token=([0-9a-f]{16,})")

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
})


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, cwd=None, timeout=TIMEOUT, check=True):
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"timed out after {timeout}s: {' '.join(cmd)}") from e
    wall = time.perf_counter() - t0
    if check and p.returncode != 0:
        log(p.stderr.decode(errors="replace")[-4000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout.decode(), p.stderr.decode(errors="replace"), wall


def answers(url):
    m = re.match(r"(https?://[^/]+)(/.*)?\?token=([0-9a-f]+)", url)
    if not m:
        return False
    ctx = ssl._create_unverified_context() if m.group(1).startswith("https") else None
    try:
        with urllib.request.urlopen(f"{m.group(1)}/api/status?token={m.group(3)}", timeout=5,
                                    context=ctx) as r:
            return r.status == 200
    except Exception:
        return False


def free_run(n, start=20000):
    """The first port P from `start` with P..P+n-1 all free on every address (as a simulated
    instance's own address in 127.0.0.0/8 holds its ports too)."""
    p = start
    while p + n < 65000:
        ok = True
        for q in range(p, p + n):
            with socket.socket() as s:
                try:
                    s.bind(("", q))
                except OSError:
                    ok, p = False, q + 1
                    break
        if ok:
            return p
    raise SystemExit("no run of free ports")


def project(work, name):
    d = os.path.join(work, name)
    os.makedirs(d)
    shutil.copytree(os.path.join(ROOT, "docker"), os.path.join(d, "docker"))
    with open(os.path.join(d, "labship.toml"), "w") as f:
        f.write(f'name = "{name}"\n[build.args]\nBASE_IMAGE = "{BASE}"\n')
    return d


def sim(path, method="GET"):
    req = urllib.request.Request(SIM + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def mib(text):
    """`123.4MiB` / `1.2GiB` / `800KiB` -> MiB."""
    m = re.match(r"([0-9.]+)\s*([KMG]i?B|B)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"B": 1 / 2**20, "KiB": 1 / 1024, "KB": 1 / 1024, "MiB": 1, "MB": 1, "GiB": 1024, "GB": 1024}[unit]


def seat_memory(names):
    out, _, _ = run(["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *names])
    return [mib(line.split(None, 1)[1]) for line in out.splitlines() if line.strip()]


def local_labship(proj, name, n):
    first = free_run(n)
    out, _, wall = run([LABSHIP, "up", "--local", "--seats", str(n), "--port", str(first), "-o", "json"],
                       cwd=proj)
    rep = json.loads(out)
    assert rep["ready"] == n, rep
    assert all(answers(s["url"]) for s in rep["seats"]), "a seat's URL does not answer"
    time.sleep(20)  # idle, as a seat is before its student opens it
    memory = seat_memory([f"labship-{name}-{s['seat']}" for s in rep["seats"]])
    _, _, down = run([LABSHIP, "down", "--local", "--delete-data", "--yes"], cwd=proj)
    return {"wall": wall, "down": down, "memory_mib": memory}


def local_manual(image, name, n):
    """One seat after the other, as a person's loop of docker commands does."""
    first = free_run(n)
    names = [f"{name}-m{i}" for i in range(1, n + 1)]
    t0 = time.perf_counter()
    for i, c in enumerate(names):
        run(["docker", "run", "-d", "--name", c, "--init", "--memory", "2048m", "--cpus", "1",
             "-p", f"127.0.0.1:{first + i}:8888", "-v", f"{c}-work:/home/jovyan/work", image])
        deadline = time.time() + 300
        while True:
            logs = subprocess.run(["docker", "logs", c], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT).stdout.decode(errors="replace")
            m = TOKEN_RE.search(logs)
            if m and answers(f"http://127.0.0.1:{first + i}/lab?token={m.group(1)}"):
                break
            if time.time() > deadline:
                raise SystemExit(f"{c}: no token within 300s")
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(["docker", "rm", "-f", *names])
    run(["docker", "volume", "rm", *[f"{c}-work" for c in names]])
    return {"wall": wall, "down": time.perf_counter() - t0}


def machine_busy():
    """CPU seconds this machine has been busy since boot, all cores (/proc/stat: user, nice,
    system, irq, softirq)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7)) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    """CPU seconds of this benchmark's finished children (labship), user + system."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ec2_labship(proj, n, k):
    # The first seat's port on each instance (each has an address of its own); the K seats
    # of one instance take K ports from there.
    first = free_run(k)
    sim("/_sim/calls/reset", "POST")
    busy0, own0 = machine_busy(), children_cpu()
    out, _, wall = run([LABSHIP, "up", "--ec2", "--seats", str(n), "--seats-per-instance", str(k),
                        "--allow-cidr", "127.0.0.1/32", "--bind", "127.0.0.1", "--port", str(first),
                        "--wait", "900", "-o", "json"], cwd=proj, check=False)
    busy, own = machine_busy() - busy0, children_cpu() - own0
    calls = sim("/_sim/calls")
    rep = json.loads(out)
    if rep["ready"] != n:
        # Each failed seat's own error (the roster holds it), then the seats are taken down.
        for s in rep["seats"]:
            if s.get("error"):
                log(f"seat {s['seat']}: {s['error']}")
        run([LABSHIP, "down", "--ec2", "--delete-data", "--yes"], cwd=proj, check=False)
        raise SystemExit(f"{n - rep['ready']} of {n} seats failed (their errors above)")
    assert all(answers(s["url"]) for s in rep["seats"]), "a seat's URL does not answer"
    sim("/_sim/calls/reset", "POST")
    _, _, down = run([LABSHIP, "down", "--ec2", "--delete-data", "--yes"], cwd=proj)
    down_calls = sim("/_sim/calls")
    return {"wall": wall, "down": down, "calls": calls, "down_calls": down_calls,
            "machine_cpu": busy, "labship_cpu": own}


def calls_of(calls):
    """{"ec2:RunInstances": 3, ...} from the simulator's answer (its shape: a dict, or a dict under "calls")."""
    c = calls.get("calls", calls) if isinstance(calls, dict) else {}
    return {k: v for k, v in c.items() if isinstance(v, int)}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            stdout=subprocess.PIPE).stdout.decode().strip()
    work = tempfile.mkdtemp(prefix="labship-bench-class-")
    results = {"commit": commit, "local": {}, "ec2": {}}
    name = f"bcl{os.getpid()}"
    proj = project(work, name)
    out, _, _ = run([LABSHIP, "build", "-o", "json"], cwd=proj)
    image = json.loads(out)["image_id"]
    for n in SEATS_LOCAL:
        for r in range(RUNS):
            order = ("labship", "manual") if r % 2 == 0 else ("manual", "labship")
            for side in order:
                log(f"local, {n} seat(s), run {r + 1}: {side}")
                res = local_labship(proj, name, n) if side == "labship" else local_manual(image, name, n)
                results["local"].setdefault(str(n), {}).setdefault(side, []).append(res)
    ename = f"bce{os.getpid()}"
    eproj = project(work, ename)
    run([LABSHIP, "push", "-o", "json"], cwd=eproj)
    for n in SEATS_EC2:
        for k in PER_INSTANCE:
            for r in range(RUNS):
                log(f"ec2 (simulator), {n} seat(s), {k} to an instance, run {r + 1}")
                results["ec2"].setdefault(f"{n}x{k}", []).append(ec2_labship(eproj, n, k))
    run([LABSHIP, "down", "--ec2", "--yes", "--purge-images"], cwd=eproj, check=False)
    out_file = os.path.join(tempfile.gettempdir(), f"labship-bench-class-{int(time.time())}.json")
    with open(out_file, "w") as f:
        json.dump(results, f, indent=2)

    p = print
    p(f"class benchmark, labship {commit}, {RUNS} run(s) per size")
    p("")
    p("local engine: command to every seat's URL answering (seconds, median)")
    p(f"{'seats':>6s} {'labship':>9s} {'by hand':>9s} {'ratio':>7s} {'down':>7s} {'by hand':>8s} {'MiB/seat idle':>14s}")
    one = None
    for n in SEATS_LOCAL:
        lab = results["local"][str(n)]["labship"]
        man = results["local"][str(n)]["manual"]
        lw, mw = med([x["wall"] for x in lab]), med([x["wall"] for x in man])
        mem = med([m for x in lab for m in x["memory_mib"]])
        one = one or lw
        p(f"{n:6d} {lw:9.1f} {mw:9.1f} {lw / mw:7.3f} {med([x['down'] for x in lab]):7.1f} "
          f"{med([x['down'] for x in man]):8.1f} {mem:14.0f}")
    if len(SEATS_LOCAL) > 1:
        n = SEATS_LOCAL[-1]
        lw = med([x["wall"] for x in results["local"][str(n)]["labship"]])
        p(f"labship: {n} seats take {lw / one:.2f}x the time of {SEATS_LOCAL[0]}")
    p("")
    p("EC2 on the simulator: `up --seats N` to every URL answering, then `down --delete-data`")
    p(f"{'seats':>6s} {'K':>3s} {'hosts':>6s} {'up s':>7s} {'x 1 seat':>9s} {'down s':>7s} {'up calls':>9s} "
      f"{'RunInstances':>13s} {'down calls':>11s} {'cpu s':>7s} {'floor s':>8s} {'labship cpu s':>14s}")
    base = {}
    cores = os.cpu_count() or 1
    for n in SEATS_EC2:
        for k in PER_INSTANCE:
            rs = results["ec2"][f"{n}x{k}"]
            w = med([x["wall"] for x in rs])
            base.setdefault(k, w)
            calls = calls_of(rs[0]["calls"])
            cpu = med([x["machine_cpu"] for x in rs])
            p(f"{n:6d} {k:3d} {-(-n // k):6d} {w:7.1f} {w / base[k]:9.2f} {med([x['down'] for x in rs]):7.1f} "
              f"{sum(calls.values()):9d} {calls.get('ec2:RunInstances', 0):13d} "
              f"{sum(calls_of(rs[0]['down_calls']).values()):11d} "
              f"{cpu:7.1f} {cpu / cores:8.1f} {med([x['labship_cpu'] for x in rs]):14.1f}")
    p("x 1 seat: against the first size with the same K")
    p(f"cpu s: this machine's busy CPU seconds during `up` (every simulated host, moto, the engine,"
      f" labship); floor s: cpu s / {cores} cores, the least time this machine can do that work in")
    for k in PER_INSTANCE:
        biggest = calls_of(results["ec2"][f"{SEATS_EC2[-1]}x{k}"][0]["calls"])
        top = collections.Counter(biggest).most_common(8)
        p(f"calls of `up --seats {SEATS_EC2[-1]} --seats-per-instance {k}` by action: "
          + ", ".join(f"{a} {v}" for a, v in top))
    p("")
    p(f"results: {out_file}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
