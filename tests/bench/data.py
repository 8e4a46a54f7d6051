#!/usr/bin/env python3
"""Benchmark: a job's inputs from S3 (moto), labship against the AWS CLI.

    bash tests/bench/run.sh data      (BENCH_RUNS=3, BENCH_SHAPES="16x64 256x4")

For each shape FILESxMIB (16 files of 64 MiB, 256 of 4 MiB: 1 GiB each), a bucket of moto is
filled with random data (not timed), then, alternating which side goes first:
  - `aws s3 cp --recursive s3://BUCKET/data/ DIR` (the AWS CLI of the rig) into an empty folder;
  - `labship run empty.py --input s3://BUCKET/data/` with an empty cache: the copy's own time as
    the run reports it (`inputs[0].seconds`: listing excluded, the same work as the CLI's), and
    the run's wall time less that of the same run without the input (what the input adds);
  - once more with the copy in the cache and nothing changed (`fetched_bytes` 0).
The image is built once beforehand (not timed). Timings are printed, never asserted. The
summary goes to stdout, progress to stderr, the JSON results to
${TMPDIR:-/tmp}/labship-bench-data-<time>.json.
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
SHAPES = os.environ.get("BENCH_SHAPES", "16x64 256x4").split()
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
BASE = os.environ["LABSHIP_TEST_BASE_IMAGE"]
ENDPOINT = os.environ["LABSHIP_TEST_AWS_ENDPOINT"]
VENV = os.environ.get("LABSHIP_RIG_VENV", os.path.expanduser("~/.cache/labship-rig/venv"))
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TIMEOUT = 1800
AWS_ENV = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=ENDPOINT,
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, cwd=None, env=None):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env or AWS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TIMEOUT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        log(p.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout.decode(), wall


def aws(*args):
    return run([os.path.join(VENV, "bin", "aws"), "--endpoint-url", ENDPOINT, *args])


def fill(bucket, files, mib, work):
    src = os.path.join(work, "src")
    os.makedirs(src)
    for i in range(files):
        with open(os.path.join(src, f"part-{i:04d}.bin"), "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    aws("s3api", "create-bucket", "--bucket", bucket)
    aws("s3", "cp", "--recursive", "--quiet", src, f"s3://{bucket}/data/")
    shutil.rmtree(src)


def labship_run(proj, cache, *extra):
    env = dict(AWS_ENV, LABSHIP_CACHE_DIR=cache)
    out, wall = run([LABSHIP, "run", "empty.py", "-q", "-o", "json", *extra], cwd=proj, env=env)
    report = json.loads(out)
    assert report["state"] == "succeeded", report
    return report, wall


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            stdout=subprocess.PIPE).stdout.decode().strip()
    work = tempfile.mkdtemp(prefix="labship-bench-data-")
    name = f"bdata{os.getpid()}"
    proj = os.path.join(work, name)
    os.makedirs(proj)
    shutil.copytree(os.path.join(ROOT, "docker"), os.path.join(proj, "docker"))
    with open(os.path.join(proj, "labship.toml"), "w") as f:
        f.write(f'name = "{name}"\n[build.args]\nBASE_IMAGE = "{BASE}"\n')
    with open(os.path.join(proj, "empty.py"), "w") as f:
        f.write("import os\nprint(sum(len(fs) for _, _, fs in os.walk('inputs')))\n")
    run([LABSHIP, "build", "-q", "-o", "json"], cwd=proj)
    results = {"commit": commit, "runs": RUNS, "shapes": {}}
    for shape in SHAPES:
        files, mib = (int(x) for x in shape.split("x"))
        bucket = f"bench-data-{os.getpid()}-{shape}"
        log(f"{shape}: filling s3://{bucket}/data/ with {files} files of {mib} MiB")
        fill(bucket, files, mib, work)
        uri = f"s3://{bucket}/data/"
        r = {"cli": [], "labship_copy": [], "labship_added": [], "labship_warm": [], "bytes": files * mib << 20}
        for i in range(RUNS):
            order = ("labship", "cli") if i % 2 == 0 else ("cli", "labship")
            for side in order:
                log(f"{shape} run {i + 1}: {side}")
                if side == "cli":
                    dest = os.path.join(work, "cli")
                    _, wall = aws("s3", "cp", "--recursive", "--quiet", uri, dest)
                    r["cli"].append(wall)
                    shutil.rmtree(dest)
                else:
                    cache = os.path.join(work, "cache")
                    _, bare = labship_run(proj, cache)
                    report, wall = labship_run(proj, cache, "--input", uri)
                    copied = report["inputs"][0]
                    assert copied["fetched_bytes"] == r["bytes"], copied
                    r["labship_copy"].append(copied["seconds"])
                    r["labship_added"].append(wall - bare)
                    report, _ = labship_run(proj, cache, "--input", uri)
                    assert report["inputs"][0]["fetched_bytes"] == 0, report["inputs"]
                    r["labship_warm"].append(report["inputs"][0]["seconds"])
                    shutil.rmtree(cache)
        results["shapes"][shape] = r
        aws("s3", "rb", "--force", f"s3://{bucket}")
    subprocess.run(["docker", "rmi", "-f", f"labship/{name}:latest"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    out_file = os.path.join(tempfile.gettempdir(), f"labship-bench-data-{int(time.time())}.json")
    with open(out_file, "w") as f:
        json.dump(results, f, indent=2)
    print(f"inputs benchmark, labship {commit}, {RUNS} runs per side, moto S3 on loopback")
    med = statistics.median
    for shape, r in results["shapes"].items():
        gib = r["bytes"] / (1 << 30)
        cli, copy, added, warm = med(r["cli"]), med(r["labship_copy"]), med(r["labship_added"]), med(r["labship_warm"])
        all_ = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
        print(f"  {shape} ({gib:.2f} GiB)")
        print(f"    aws s3 cp --recursive   {cli:7.2f} s (median; all: {all_(r['cli'])})")
        print(f"    labship copy            {copy:7.2f} s (median; all: {all_(r['labship_copy'])})  ratio {copy / cli:.2f}")
        print(f"    labship run's added     {added:7.2f} s (median; all: {all_(r['labship_added'])})  ratio {added / cli:.2f}")
        print(f"    labship, copy cached    {warm:7.2f} s (median; nothing fetched)")
    print(f"results: {out_file}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
