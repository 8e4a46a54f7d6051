#!/usr/bin/env python3
"""Benchmark: `labship build` / `labship push` against the manual way (docker CLI + aws CLI).

Run it after the rig is up (it starts it if needed):

    bash tests/bench/run.sh            # sources the rig, builds labship --release, runs this

What it measures, in one run so the ratios share the machine's noise:
  1. build of the same 1 GiB / 10,000-file context, several times each, alternating
     `labship build` and `docker build` (the legacy builder, which is what this engine runs);
     images are removed between runs so every build is a full one. Median wall time of each,
     their ratio, and labship's peak RSS (also for a 100 MiB context, to show RSS does not
     grow with the context).
  2. push of a ~500 MB image to the loopback registry: `labship push` vs
     `aws ecr get-login-password | docker login` + `docker tag` + `docker push`; each run
     pushes fresh random data so no layer is already there.
Timings are printed, never asserted.
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
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
BASE = os.environ["LABSHIP_TEST_BASE_IMAGE"]
REGISTRY = os.environ["LABSHIP_TEST_REGISTRY"]
MOTO = os.environ["LABSHIP_TEST_AWS_ENDPOINT"]
VENV = os.environ["LABSHIP_RIG_VENV"]

ENV = dict(os.environ)
ENV.update({
    "AWS_ENDPOINT_URL": MOTO,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",  # the aws CLI v1 reads this one
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "LABSHIP_REGISTRY_ENDPOINT": REGISTRY,
    "DOCKER_BUILDKIT": "0",
})


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(cmd, cwd=None, shell=False):
    """Wall seconds and stdout of one command; a failure stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        log(proc.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"failed: {cmd}")
    return wall, proc.stdout.decode()


def rss_of(cmd, cwd):
    """Peak RSS (KiB) of one command, via GNU time in its own process tree."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        log(proc.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"failed: {cmd}")
    return int(proc.stderr.decode().strip().splitlines()[-1])


def make_context(root, total_bytes, files, seed):
    ctx = os.path.join(root, "docker")
    os.makedirs(ctx, exist_ok=True)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        # A LABEL line, as the default workload's Dockerfile has: labship merges its labels
        # into it (no extra build step). Without one, labship adds one LABEL step after FROM.
        f.write(os.environ.get("BENCH_DOCKERFILE",
                               "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nLABEL org.opencontainers.image.title=bench\nCOPY data/ /data/\n"))
    size = total_bytes // files
    block = os.urandom(1 << 20)
    for i in range(files):
        d = os.path.join(ctx, "data", f"d{i % 100:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
            # Distinct content per file and per seed, cheap to make: a rotated random block.
            off = (i * 7919 + seed * 104729) % len(block)
            chunk = (block[off:] + block[:off])[:size]
            f.write(seed.to_bytes(8, "little") + i.to_bytes(8, "little") + chunk[16:])
    with open(os.path.join(root, "labship.toml"), "w") as f:
        f.write(f'name = "bench"\n[build.args]\nBASE_IMAGE = "{BASE}"\n')
    return ctx


def rmi(*refs):
    subprocess.run(["docker", "rmi", "-f", *refs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rm_repo(repo):
    """Every tag of a repository, so no image is left for the build cache to reuse."""
    tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                          stdout=subprocess.PIPE).stdout.decode().split()
    if tags:
        rmi(*tags)


def bench_build(work):
    log(f"== build: 1 GiB / 10,000 files, {RUNS} runs each")
    root = os.path.join(work, "build")
    os.makedirs(root)
    make_context(root, 1 << 30, 10_000, seed=1)
    lab, dock, rss = [], [], []
    for run in range(RUNS):
        for which in ("labship", "docker"):
            rm_repo("labship/bench")
            rm_repo("bench-docker")
            subprocess.run(["sync"])
            if which == "labship":
                cmd = [LABSHIP, "build", "-q", "-o", "json"]
                t0 = time.perf_counter()
                peak = rss_of(cmd, root)
                wall = time.perf_counter() - t0
                lab.append(wall)
                rss.append(peak)
            else:
                wall, _ = timed(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE}",
                                    "-t", "bench-docker:latest", "docker"], cwd=root)
                dock.append(wall)
            log(f"  run {run + 1} {which:8s} {wall:6.2f}s")
    rm_repo("labship/bench")
    rm_repo("bench-docker")
    small = os.path.join(work, "small")
    os.makedirs(small)
    make_context(small, 100 << 20, 1_000, seed=2)
    small_rss = rss_of([LABSHIP, "build", "-q", "-o", "json"], small)
    rm_repo("labship/bench")
    shutil.rmtree(root)
    shutil.rmtree(small)
    return {
        "labship_s": lab, "docker_s": dock,
        "labship_median_s": statistics.median(lab), "docker_median_s": statistics.median(dock),
        "ratio": statistics.median(lab) / statistics.median(dock),
        "labship_peak_rss_mib_1gib": max(rss) / 1024,
        "labship_peak_rss_mib_100mib": small_rss / 1024,
    }


def bench_push(work):
    log(f"== push: ~500 MB image to the loopback registry, {RUNS} runs each")
    aws = os.path.join(VENV, "bin", "aws")
    lab, dock = [], []
    for run in range(RUNS):
        for which in ("labship", "docker"):
            root = os.path.join(work, f"push-{which}-{run}")
            os.makedirs(root)
            make_context(root, 500 << 20, 500, seed=100 + run * 2 + (which == "docker"))
            repo = f"bench-{which}-{run}-{os.getpid()}"
            with open(os.path.join(root, "labship.toml"), "a") as f:
                f.write(f'[push]\nrepository = "labship/{repo}"\n')
            report = json.loads(subprocess.run([LABSHIP, "build", "-q", "-o", "json"], cwd=root, env=ENV,
                                               check=True, stdout=subprocess.PIPE).stdout)
            image = report["image"]
            if which == "labship":
                wall, out = timed([LABSHIP, "push", "-q", "-o", "json"], cwd=root)
                pushed = json.loads(out)
                assert not pushed["skipped"] and pushed["bytes_uploaded"] > 400 << 20, pushed
            else:
                target = f"{REGISTRY}/labship/{repo}:manual"
                script = (
                    f"{aws} ecr create-repository --repository-name labship/{repo} >/dev/null && "
                    f"{aws} ecr get-login-password | docker login --username AWS --password-stdin {REGISTRY} >/dev/null 2>&1 && "
                    f"docker tag {image} {target} && docker push -q {target} >/dev/null"
                )
                wall, _ = timed(script, shell=True)
                rmi(target)
            (dock if which == "docker" else lab).append(wall)
            log(f"  run {run + 1} {which:8s} {wall:6.2f}s")
            rmi(image, report["image"].rsplit(":", 1)[0] + ":latest",
                f"{REGISTRY}/labship/{repo}:{report['content_tag']}", f"{REGISTRY}/labship/{repo}:latest")
            shutil.rmtree(root)
    return {
        "labship_s": lab, "docker_s": dock,
        "labship_median_s": statistics.median(lab), "docker_median_s": statistics.median(dock),
        "ratio": statistics.median(lab) / statistics.median(dock),
    }


def main():
    work = tempfile.mkdtemp(prefix="labship-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    parts = os.environ.get("BENCH_PARTS", "build,push").split(",")
    results = {}
    try:
        if "build" in parts:
            b = results["build"] = bench_build(work)
            log(f"build: labship median {b['labship_median_s']:.2f}s, docker {b['docker_median_s']:.2f}s, "
                f"ratio {b['ratio']:.3f}; labship peak RSS {b['labship_peak_rss_mib_1gib']:.1f} MiB (1 GiB context), "
                f"{b['labship_peak_rss_mib_100mib']:.1f} MiB (100 MiB context)")
        if "push" in parts:
            p = results["push"] = bench_push(work)
            log(f"push:  labship median {p['labship_median_s']:.2f}s, manual {p['docker_median_s']:.2f}s, "
                f"ratio {p['ratio']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
