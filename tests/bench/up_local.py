#!/usr/bin/env python3
"""Benchmark: `labship up --local` with a cached image, from command to a URL that answers,
against the same done by hand in the same run: `docker run -d -p ...` then polling
`docker logs` until a token URL appears and answers.

    bash tests/bench/run.sh up-local      (BENCH_RUNS=7 for more runs)

Both sides start from nothing running and the image already built; the container is removed
between runs. Reports median and spread (min-max) of each and the ratio of medians.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
BASE = os.environ["LABSHIP_TEST_BASE_IMAGE"]
HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN_URL = re.compile(r"http://127\.0\.0\.1:8888/lab\?token=([0-9a-f]{48})")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def answers(port, token):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def manual(image, port):
    """The by-hand way, as a shell user would script it (docker CLI, poll the logs)."""
    t0 = time.perf_counter()
    cid = subprocess.run(["docker", "run", "-d", "--name", "bench-manual", "-p", f"127.0.0.1:{port}:8888",
                          "-v", "bench-manual-work:/home/jovyan/work", image],
                         check=True, stdout=subprocess.PIPE).stdout.decode().strip()
    deadline = t0 + 120
    while time.perf_counter() < deadline:
        logs = subprocess.run(["docker", "logs", cid], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode()
        m = TOKEN_URL.search(logs)
        if m and answers(port, m.group(1)):
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise SystemExit("manual: no token")


def main():
    work = tempfile.mkdtemp(prefix="labship-bench-up-")
    subprocess.run(["cp", "-r", os.path.join(HERE, "..", "..", "docker"), work], check=True)
    with open(os.path.join(work, "labship.toml"), "w") as f:
        f.write(f'name = "benchup"\n[build.args]\nBASE_IMAGE = "{BASE}"\n')
    env = dict(os.environ)
    built = json.loads(subprocess.run([LABSHIP, "build", "-q", "-o", "json"], cwd=work, env=env, check=True,
                                      stdout=subprocess.PIPE).stdout)
    image = built["image"]
    lab, man = [], []
    for run in range(RUNS):
        subprocess.run([LABSHIP, "down", "-q"], cwd=work, env=env, stdout=subprocess.DEVNULL)
        t0 = time.perf_counter()
        out = subprocess.run([LABSHIP, "up", "--local", "-q", "-o", "json", "--port", "18888"], cwd=work, env=env,
                             check=True, stdout=subprocess.PIPE).stdout
        wall = time.perf_counter() - t0
        report = json.loads(out)
        assert report["action"] == "created" and not report["built"], report
        assert answers(18888, report["url"].split("token=")[1])
        lab.append(wall)
        subprocess.run([LABSHIP, "down", "-q"], cwd=work, env=env, stdout=subprocess.DEVNULL)

        subprocess.run(["docker", "rm", "-f", "bench-manual"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall_m = manual(image, 18889)
        man.append(wall_m)
        subprocess.run(["docker", "rm", "-f", "bench-manual"], stdout=subprocess.DEVNULL)
        log(f"  run {run + 1}: labship {wall:.2f}s  manual {wall_m:.2f}s")
    subprocess.run([LABSHIP, "down", "-q", "--delete-data", "--yes"], cwd=work, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["docker", "volume", "rm", "bench-manual-work"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {
        "labship_s": lab, "manual_s": man,
        "labship_median_s": statistics.median(lab), "manual_median_s": statistics.median(man),
        "labship_spread_s": [min(lab), max(lab)], "manual_spread_s": [min(man), max(man)],
        "ratio": statistics.median(lab) / statistics.median(man),
    }
    print(json.dumps({"up_local": result}, indent=2))
    log(f"up --local: labship median {result['labship_median_s']:.2f}s ({min(lab):.2f}-{max(lab):.2f}), "
        f"manual {result['manual_median_s']:.2f}s ({min(man):.2f}-{max(man):.2f}), ratio {result['ratio']:.3f}")


if __name__ == "__main__":
    main()
