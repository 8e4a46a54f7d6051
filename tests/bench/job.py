#!/usr/bin/env python3
"""Benchmark: a notebook as a job on the local engine (`labship run`), against the same done by
hand with the docker CLI: `docker create` of the same image running `jupyter nbconvert --to
notebook --execute`, `docker cp` of the notebook in, `docker start -a`, `docker cp` of the
executed notebook and outputs/ out, `docker rm`.

    bash tests/bench/run.sh job      (BENCH_RUNS=5, BENCH_CELLS=10)

Both sides run a notebook of BENCH_CELLS cells that do nothing (`pass`) on the same image, built
once beforehand (not timed), alternating which side goes first. What is measured is the
overhead of a job: from command to the executed notebook on disk. Then a --matrix of 3 values
against three such docker runs one after the other.

Timings are printed, never asserted. The summary goes to stdout, progress to stderr, the JSON
results to ${TMPDIR:-/tmp}/labship-bench-job-<time>.json.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
CELLS = int(os.environ.get("BENCH_CELLS", "10"))
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
BASE = os.environ["LABSHIP_TEST_BASE_IMAGE"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TIMEOUT = 600


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, cwd=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        log(p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout.decode(), wall


def notebook(cells):
    code = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": "pass"}
    params = dict(code, metadata={"tags": ["parameters"]}, source="x = 0")
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [params] + [code] * cells}


def by_hand(image, proj, out, x):
    """The docker CLI way: nbconvert executes, docker cp moves the files."""
    name = f"bench-job-{os.getpid()}-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    run(["docker", "create", "--name", name, "--init", image, "jupyter", "nbconvert", "--to", "notebook",
         "--execute", "--output-dir", "/tmp/out", "--output", "empty", "/tmp/in/empty.ipynb"])
    try:
        # docker cp makes no parent folders: the notebook goes in as the folder /tmp/in.
        src = os.path.join(out, "in")
        os.makedirs(src, exist_ok=True)
        shutil.copy(os.path.join(proj, "empty.ipynb"), src)
        run(["docker", "cp", src, f"{name}:/tmp/in"])
        run(["docker", "start", "-a", name])
        dest = os.path.join(out, f"hand-{x}")
        os.makedirs(dest, exist_ok=True)
        run(["docker", "cp", f"{name}:/tmp/out/empty.ipynb", dest])
        subprocess.run(["docker", "cp", f"{name}:/home/jovyan/work/outputs", dest],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        subprocess.run(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            stdout=subprocess.PIPE).stdout.decode().strip()
    work = tempfile.mkdtemp(prefix="labship-bench-job-")
    name = f"bjob{os.getpid()}"
    proj = os.path.join(work, name)
    os.makedirs(proj)
    shutil.copytree(os.path.join(ROOT, "docker"), os.path.join(proj, "docker"))
    with open(os.path.join(proj, "labship.toml"), "w") as f:
        f.write(f'name = "{name}"\n[build.args]\nBASE_IMAGE = "{BASE}"\n')
    with open(os.path.join(proj, "empty.ipynb"), "w") as f:
        json.dump(notebook(CELLS), f)
    out, _ = run([LABSHIP, "build", "-o", "json"], cwd=proj)
    image = json.loads(out)["image_id"]
    results = {"commit": commit, "cells": CELLS, "labship": [], "hand": [], "matrix": {}}
    for r in range(RUNS):
        order = ("labship", "hand") if r % 2 == 0 else ("hand", "labship")
        for side in order:
            log(f"run {r + 1}: {side}")
            if side == "labship":
                out, wall = run([LABSHIP, "run", "empty.ipynb", "-q", "-o", "json"], cwd=proj)
                assert json.loads(out)["state"] == "succeeded"
                results["labship"].append(wall)
            else:
                results["hand"].append(by_hand(image, proj, work, r))
    log("matrix of 3")
    out, wall = run([LABSHIP, "run", "empty.ipynb", "--matrix", "x=1,2,3", "--parallel", "3", "-q", "-o", "json"],
                    cwd=proj)
    assert json.loads(out)["succeeded"] == 3
    results["matrix"]["labship"] = wall
    t0 = time.perf_counter()
    for x in range(3):
        by_hand(image, proj, work, f"m{x}")
    results["matrix"]["hand"] = time.perf_counter() - t0
    subprocess.run(["docker", "rmi", "-f", f"labship/{name}:latest"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out_file = os.path.join(tempfile.gettempdir(), f"labship-bench-job-{int(time.time())}.json")
    with open(out_file, "w") as f:
        json.dump(results, f, indent=2)
    lab, hand = statistics.median(results["labship"]), statistics.median(results["hand"])
    print(f"job benchmark, labship {commit}, {RUNS} runs per side, a notebook of {CELLS} empty cells")
    print(f"  labship run        {lab:6.2f} s (median; all: {', '.join(f'{x:.2f}' for x in results['labship'])})")
    print(f"  docker CLI by hand {hand:6.2f} s (median; all: {', '.join(f'{x:.2f}' for x in results['hand'])})")
    print(f"  ratio              {lab / hand:6.2f}")
    m = results["matrix"]
    print(f"  --matrix of 3 (3 at once) {m['labship']:.2f} s vs 3 by hand one after the other "
          f"{m['hand']:.2f} s: ratio {m['labship'] / m['hand']:.2f}")
    print(f"results: {out_file}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
