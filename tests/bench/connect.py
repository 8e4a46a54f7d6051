#!/usr/bin/env python3
"""Benchmark of issue 10's secure access, on the rig's instance simulator:

  1. time to a working URL: `labship up --ec2` of this build (TLS: key and certificate made
     on the host, Jupyter on HTTPS, labship's pinned check) against a build without TLS
     (LABSHIP_PLAIN_BIN, e.g. commit f9980d7: sealed token, plain HTTP), alternating, each run
     a fresh deployment, removed afterwards;
  2. the forwarder of `labship connect` against a direct TLS connection to Jupyter on the
     same instance: download of a 100 MB file from the workspace (Jupyter's /files/ handler)
     and the latency of 200 sequential GET /api/status on one keep-alive connection.

    LABSHIP_BIN=... LABSHIP_PLAIN_BIN=... python3 tests/bench/connect.py   (rig.env sourced)
    bash tests/bench/run.sh connect                                      (builds, then this)

BENCH_RUNS (default 3) runs per side for 1; BENCH_DOWNLOADS (default 3) for 2; BENCH_PARTS
(default "1,2") picks the parts (e.g. part 1 with two debug builds, part 2 with a release
one). Timings are printed, never asserted; the JSON goes to ${TMPDIR:-/tmp}/labship-bench-connect-<time>.json.
"""

import http.client
import json
import os
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
import urllib.parse

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DOWNLOADS = int(os.environ.get("BENCH_DOWNLOADS", "3"))
REQUESTS = 200
PARTS = set(os.environ.get("BENCH_PARTS", "1,2").split(","))
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
PLAIN = os.environ.get("LABSHIP_PLAIN_BIN")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TIMEOUT = 1200

# The rig's AWS environment and the small helpers are up_ec2.py's (same simulator, same
# test account).
from up_ec2 import ENV, free_port, log  # noqa: E402


def project(tag):
    d = tempfile.mkdtemp(prefix=f"labship-bench-{tag}-")
    shutil.copytree(os.path.join(ROOT, "docker"), os.path.join(d, "docker"))
    return d, f"bench-{tag}-{int(time.time() * 1000) % 10**9}"


def labship(binary, args, cwd, timeout=TIMEOUT):
    t0 = time.perf_counter()
    p = subprocess.run([binary, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{binary} {' '.join(args)}: exit {p.returncode}\n{p.stderr[-3000:]}")
    return p.stdout, took


def up(binary, cwd, name, port):
    out, took = labship(binary, ["up", name, "--ec2", "--allow-cidr", "127.0.0.1/32", "--bind",
                                 "127.0.0.1", "--port", str(port), "--wait", "900", "-o", "json"],
                        cwd)
    return json.loads(out), took


def down(binary, cwd, name):
    labship(binary, ["down", name, "--ec2", "--yes", "--delete-data", "--purge-images"], cwd)


def conn(at, tls):
    """A connection to `at`, (host, port): the instance's address (TLS) or the forwarder's."""
    host, port = at
    if tls:
        # The instance's own certificate: the forwarder pins it; for the direct side of the
        # comparison only the bytes count.
        return http.client.HTTPSConnection(host, port, timeout=60,
                                           context=ssl._create_unverified_context())
    return http.client.HTTPConnection(host, port, timeout=60)


def download(at, tls, token, path):
    c = conn(at, tls)
    t0 = time.perf_counter()
    c.request("GET", path, headers={"Authorization": f"token {token}"})
    r = c.getresponse()
    n = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
    took = time.perf_counter() - t0
    c.close()
    if r.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {r.status}")
    return n / took / 1e6, n


def latency(at, tls, token):
    c = conn(at, tls)
    c.request("GET", "/api/status", headers={"Authorization": f"token {token}"})
    c.getresponse().read()  # the connection (and, direct, the TLS handshake) is made
    t0 = time.perf_counter()
    for _ in range(REQUESTS):
        c.request("GET", "/api/status", headers={"Authorization": f"token {token}"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"/api/status: HTTP {r.status}")
    took = time.perf_counter() - t0
    c.close()
    return took / REQUESTS * 1000


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    results = {"time_to_url": {"tls": [], "plain": []}, "forwarder": {}}
    # 1. time to a working URL, alternating sides.
    sides = [("tls", LABSHIP)] + ([("plain", PLAIN)] if PLAIN else [])
    if not PLAIN:
        log("LABSHIP_PLAIN_BIN is not set: only the TLS side of 1 runs")
    for i in range(RUNS if "1" in PARTS else 0):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for side, binary in order:
            cwd, name = project(side)
            try:
                answer, took = up(binary, cwd, name, free_port())
                results["time_to_url"][side].append(took)
                log(f"  run {i + 1} {side}: {took:.1f} s  {answer['url'].split('?')[0]}")
            finally:
                down(binary, cwd, name)
                shutil.rmtree(cwd, ignore_errors=True)

    # 2. the forwarder against a direct TLS connection, on one deployment.
    if "2" in PARTS:
        forwarder_part(results)
    summary(results)


def forwarder_part(results):
    cwd, name = project("fwd")
    port = free_port()
    fwd = None
    try:
        answer, _ = up(LABSHIP, cwd, name, port)
        token = answer["url"].split("token=")[1]
        # The instance's address (the simulator gives each its own), and the forwarder's.
        direct_at = (urllib.parse.urlsplit(answer["url"]).hostname, port)
        container = f"labship-ec2-{name}"
        subprocess.run(["docker", "exec", container, "dd", "if=/dev/urandom",
                        "of=/home/jovyan/work/big.bin", "bs=1M", "count=100"],
                       check=True, capture_output=True, timeout=300)
        fwd = subprocess.Popen([LABSHIP, "connect", name, "--ec2"], cwd=cwd, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        local = fwd.stdout.readline().strip()
        lport = int(local.split(":")[2].split("/")[0])
        forwarder_at = ("127.0.0.1", lport)
        direct, forwarded = [], []
        for i in range(DOWNLOADS):
            for side, p, tls, out in ([("direct", direct_at, True, direct), ("forwarder", forwarder_at, False, forwarded)]
                                      if i % 2 == 0 else
                                      [("forwarder", forwarder_at, False, forwarded), ("direct", direct_at, True, direct)]):
                mbps, n = download(p, tls, token, "/files/big.bin")
                out.append(mbps)
                log(f"  download {i + 1} {side}: {mbps:.0f} MB/s ({n} bytes)")
        lat_direct = [latency(direct_at, True, token) for _ in range(3)]
        lat_fwd = [latency(forwarder_at, False, token) for _ in range(3)]
        results["forwarder"] = {
            "download_mb_s": {"direct": direct, "forwarder": forwarded},
            "ms_per_request": {"direct": lat_direct, "forwarder": lat_fwd},
        }
    finally:
        if fwd is not None:
            fwd.send_signal(2)
            try:
                fwd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                fwd.kill()
        down(LABSHIP, cwd, name)
        shutil.rmtree(cwd, ignore_errors=True)


def summary(results):
    t = results["time_to_url"]
    if t["tls"]:
        print("1. time to a working URL (median of runs, seconds)")
        print(f"   TLS   (this build): {med(t['tls']):.1f}  runs {[round(x, 1) for x in t['tls']]}")
    if t["plain"]:
        print(f"   plain (LABSHIP_PLAIN_BIN): {med(t['plain']):.1f}  runs {[round(x, 1) for x in t['plain']]}")
        print(f"   TLS - plain: {med(t['tls']) - med(t['plain']):+.1f} s (target <= +2 s)")
    f = results["forwarder"]
    if not f:
        return
    d, w = f["download_mb_s"]["direct"], f["download_mb_s"]["forwarder"]
    print("2. 100 MB download from the workspace (median MB/s)")
    print(f"   direct TLS: {med(d):.0f}   through the forwarder: {med(w):.0f}   "
          f"ratio {med(w) / med(d):.2f} (target >= 0.90)")
    ld, lw = f["ms_per_request"]["direct"], f["ms_per_request"]["forwarder"]
    print(f"3. GET /api/status on one keep-alive connection, {REQUESTS} requests (median ms/request)")
    print(f"   direct TLS: {med(ld):.2f}   through the forwarder: {med(lw):.2f}   "
          f"added {med(lw) - med(ld):+.2f} ms (target <= 2 ms)")
    write(results)


def write(results):
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"labship-bench-connect-{int(time.time())}.json")
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
    log(f"results: {out}")


if __name__ == "__main__":
    main()
