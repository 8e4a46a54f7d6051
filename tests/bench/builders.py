#!/usr/bin/env python3
"""Benchmark: labship's two builders (BuildKit over the engine API, and the classic builder)
against each other and against `docker build` (the legacy builder: this machine's docker CLI
has no buildx, so the CLI cannot drive BuildKit here).

    bash tests/rig/servers.sh start; . /tmp/labship-rig/rig.env
    LABSHIP_BIN=~/.cache/labship-target/release/labship python3 tests/bench/builders.py

In one run, so the ratios share the machine's noise, BENCH_RUNS times each (alternating):
  1. full build of a 1 GiB / 10,000-file context (`FROM scratch`, `COPY data /data`), with
     the image and the engine's build cache removed first;
  2. rebuild after one small notebook in that context changed (caches warm);
  3. the content tag alone (`up --local --dry-run`) of that context, first run and again;
  4. a pip-heavy Dockerfile (BENCH_PIP_PACKAGES wheels of BENCH_PIP_MB MiB from a loopback
     index, tests/rig/pypi.py, sending at BENCH_PIP_RATE_MB MiB/s as a remote index would),
     rebuilt after one requirement was added: labship BuildKit with a pip cache mount, the same
     without it, and `docker build` (legacy, no mount); all with `--network host`.
Medians, ratios and labship's peak RSS are printed; nothing is asserted.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
LABSHIP = os.path.expanduser(os.environ.get("LABSHIP_BIN", "target/release/labship"))
FILES = int(os.environ.get("BENCH_FILES", "10000"))
FILE_BYTES = int(os.environ.get("BENCH_FILE_BYTES", str(100 * 1024 + 750)))
PIP_PACKAGES = int(os.environ.get("BENCH_PIP_PACKAGES", "20"))
PIP_MB = float(os.environ.get("BENCH_PIP_MB", "2"))
PIP_RATE_MB = float(os.environ.get("BENCH_PIP_RATE_MB", "10"))
HERE = os.path.dirname(os.path.abspath(__file__))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, cwd, env=None):
    """Wall seconds and peak RSS (KiB) of one command; a failure stops the benchmark."""
    full = ["/usr/bin/time", "-f", "%M"] + cmd
    start = time.perf_counter()
    proc = subprocess.run(full, cwd=cwd, env=env or os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        log(proc.stderr.decode(errors="replace")[-3000:])
        sys.exit(f"failed: {' '.join(cmd)}")
    rss = int(proc.stderr.decode().strip().splitlines()[-1])
    return wall, rss


def quiet(cmd):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_context(root):
    data = os.path.join(root, "docker", "data")
    per_dir = 100
    for i in range(FILES):
        d = os.path.join(data, f"d{i // per_dir:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i % per_dir:03}.bin"), "wb") as f:
            f.write(os.urandom(FILE_BYTES))
    with open(os.path.join(root, "docker", "notebook.ipynb"), "w") as f:
        f.write('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n')
    with open(os.path.join(root, "docker", "Dockerfile"), "w") as f:
        f.write("FROM scratch\nCOPY data /data\nCOPY notebook.ipynb /notebook.ipynb\n")
    with open(os.path.join(root, "labship.toml"), "w") as f:
        f.write('name = "bench-builders"\n')


def touch_notebook(root, n):
    with open(os.path.join(root, "docker", "notebook.ipynb"), "w") as f:
        f.write('{"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["run %d"]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n' % n)


def reset():
    quiet(["docker", "image", "rm", "-f", "labship/bench-builders:latest", "bench-builders-cli:latest"])
    out = subprocess.run(["docker", "images", "-q", "labship/bench-builders"], stdout=subprocess.PIPE).stdout.decode().split()
    if out:
        quiet(["docker", "image", "rm", "-f"] + out)
    quiet(["docker", "builder", "prune", "-af"])


def pip_bench(env):
    """Section 4: a rebuild after one requirement was added, with and without a cache mount."""
    names = [f"pkg{i:02}==1.0" for i in range(PIP_PACKAGES)] + ["extra==1.0"]
    index = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "..", "rig", "pypi.py"), "--payload", str(int(PIP_MB * 2**20)),
         "--rate", str(int(PIP_RATE_MB * 2**20))] + names,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(index.stdout.readline().split()[1])
    downloads = []
    import threading
    threading.Thread(target=lambda: downloads.extend(l.split()[1] for l in index.stdout if l.startswith("download")), daemon=True).start()
    pip = f"pip install --disable-pip-version-check --no-input --trusted-host 127.0.0.1 --index-url http://127.0.0.1:{port}/simple --target /opt/pkgs -r /tmp/requirements.txt"
    variants = {
        "labship buildkit, cache mount": ("RUN --mount=type=cache,id=bench-pip,target=/pipcache PIP_CACHE_DIR=/pipcache " + pip,
                                          lambda: [LABSHIP, "build", "-q", "--network", "host"]),
        "labship buildkit, no cache mount": ("RUN " + pip + " --no-cache-dir",
                                             lambda: [LABSHIP, "build", "-q", "--network", "host"]),
        "docker build (legacy), no cache mount": ("RUN " + pip + " --no-cache-dir",
                                                  lambda: ["docker", "build", "-q", "--network", "host", "-t", "bench-pip-cli", "docker"]),
    }
    result = {k: [] for k in variants}
    got = {k: [] for k in variants}
    try:
        for r in range(RUNS):
            for name, (run_line, cmd) in variants.items():
                work = tempfile.mkdtemp(prefix="labship-bench-pip-")
                os.makedirs(os.path.join(work, "docker"))
                with open(os.path.join(work, "labship.toml"), "w") as f:
                    f.write('name = "bench-pip"\n')
                with open(os.path.join(work, "docker", "Dockerfile"), "w") as f:
                    f.write(f"FROM labship/jupyter-base:offline\nCOPY requirements.txt /tmp/requirements.txt\n{run_line}\n")
                reqs = os.path.join(work, "docker", "requirements.txt")
                with open(reqs, "w") as f:
                    f.write("\n".join(names[:-1]) + "\n")
                quiet(["docker", "builder", "prune", "-af"])
                e = dict(env, DOCKER_BUILDKIT="0") if name.startswith("docker") else env
                run(cmd(), work, e)
                with open(reqs, "a") as f:
                    f.write(names[-1] + "\n")
                time.sleep(0.5)
                downloads.clear()
                secs, _ = run(cmd(), work, e)
                time.sleep(0.5)
                result[name].append(secs)
                got[name].append(len(downloads))
                log(f"run {r + 1} {name}: rebuild after one added requirement {secs:.1f} s, {len(downloads)} wheels downloaded")
                shutil.rmtree(work, ignore_errors=True)
                quiet(["docker", "image", "rm", "-f", "labship/bench-pip:latest", "bench-pip-cli:latest"])
    finally:
        index.stdin.close()
        index.kill()
    med = statistics.median
    with_mount = med(result["labship buildkit, cache mount"])
    return {
        "index": {"packages": PIP_PACKAGES, "wheel_mib": PIP_MB, "rate_mib_s": PIP_RATE_MB},
        "rebuild_one_added_requirement_median_s": {k: round(med(v), 2) for k, v in result.items()},
        "wheels_downloaded_on_rebuild": {k: max(v) for k, v in got.items()},
        "ratio_cache_mount_to_no_mount": round(with_mount / med(result["labship buildkit, no cache mount"]), 3),
        "ratio_cache_mount_to_docker_legacy": round(with_mount / med(result["docker build (legacy), no cache mount"]), 3),
    }


def main():
    work = tempfile.mkdtemp(prefix="labship-bench-builders-")
    cache = os.path.join(work, "hash-cache")
    env = dict(os.environ, LABSHIP_CACHE_DIR=cache)
    env.pop("DOCKER_BUILDKIT", None)
    try:
        if os.environ.get("BENCH_CONTEXT", "1") != "1":
            print(json.dumps({"runs": RUNS, "pip": pip_bench(env)}, indent=2))
            return
        log(f"making a {FILES}-file context of {FILES * FILE_BYTES / 2**30:.2f} GiB in {work}")
        make_context(work)
        time.sleep(3)  # older than the hash cache's racy margin
        ways = {
            "labship classic": lambda: [LABSHIP, "build", "-q", "--builder", "classic"],
            "labship buildkit": lambda: [LABSHIP, "build", "-q", "--builder", "buildkit"],
            "docker build (legacy)": lambda: ["docker", "build", "-q", "-t", "bench-builders-cli", "docker"],
        }
        full = {k: [] for k in ways}
        rebuild = {k: [] for k in ways}
        rss = {k: 0 for k in ways}
        n = 0
        for r in range(RUNS):
            for name, cmd in ways.items():
                reset()
                secs, peak = run(cmd(), work, dict(env, DOCKER_BUILDKIT="0") if name.startswith("docker") else env)
                full[name].append(secs)
                n += 1
                touch_notebook(work, n)
                secs2, peak2 = run(cmd(), work, dict(env, DOCKER_BUILDKIT="0") if name.startswith("docker") else env)
                rebuild[name].append(secs2)
                if name.startswith("labship"):
                    rss[name] = max(rss[name], peak, peak2)
                log(f"run {r + 1} {name}: full {secs:.1f} s, rebuild after one notebook {secs2:.1f} s")
        shutil.rmtree(cache, ignore_errors=True)
        tag_first, _ = run([LABSHIP, "up", "--local", "--dry-run", "-o", "json"], work, env)
        tag_again, tag_rss = run([LABSHIP, "up", "--local", "--dry-run", "-o", "json"], work, env)
        med = lambda xs: statistics.median(xs)
        result = {
            "runs": RUNS,
            "context": {"files": FILES, "bytes": FILES * FILE_BYTES},
            "full_build_median_s": {k: round(med(v), 2) for k, v in full.items()},
            "rebuild_one_notebook_median_s": {k: round(med(v), 2) for k, v in rebuild.items()},
            "ratio_full_buildkit_to_classic": round(med(full["labship buildkit"]) / med(full["labship classic"]), 3),
            "ratio_rebuild_buildkit_to_classic": round(med(rebuild["labship buildkit"]) / med(rebuild["labship classic"]), 3),
            "ratio_full_labship_classic_to_docker": round(med(full["labship classic"]) / med(full["docker build (legacy)"]), 3),
            "labship_peak_rss_mib": {k: round(v / 1024, 1) for k, v in rss.items() if k.startswith("labship")},
            "content_tag_s": {"first (reads every file)": round(tag_first, 2), "again (hash cache)": round(tag_again, 2)},
            "content_tag_again_peak_rss_mib": round(tag_rss / 1024, 1),
        }
        if os.environ.get("BENCH_PIP", "1") == "1":
            result["pip"] = pip_bench(env)
        print(json.dumps(result, indent=2))
    finally:
        reset()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
