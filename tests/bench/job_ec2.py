#!/usr/bin/env python3
"""Benchmark: a notebook as a job on EC2 (`labship run --ec2`, on the rig's instance
simulator), against the same done by hand with labship's own verbs: `labship up --ec2`, the
notebook uploaded, run cell by cell and saved through Jupyter's own API (contents REST and the
kernel websocket, as the browser does it), downloaded, then `labship down --ec2`.

    bash tests/bench/run.sh job-ec2      (BENCH_RUNS=3, BENCH_CELLS=10)

Both sides run the same notebook of BENCH_CELLS cells that do nothing (`pass`) from the same
image, built and pushed once beforehand by an untimed warm-up run (so neither side builds or
uploads: what is measured is the overhead of a job). Each is timed from the command to the
executed notebook on disk with nothing left running: `run --ec2` includes the host ending
itself and its security group removed; the manual side includes `down`. Runs alternate which
side goes first. Also the AWS calls each side makes (the simulator's counter; run.sh gives
this benchmark a rig of its own).

Timings are printed, never asserted. The summary goes to stdout, progress to stderr, the JSON
results to ${TMPDIR:-/tmp}/labship-bench-job-ec2-<time>.json.
"""

import base64
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
CELLS = int(os.environ.get("BENCH_CELLS", "10"))
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
BASE = os.environ["LABSHIP_TEST_BASE_IMAGE"]
SIM = os.environ["LABSHIP_TEST_SIM_ENDPOINT"]
MOTO = os.environ["LABSHIP_TEST_AWS_ENDPOINT"]
REGISTRY = os.environ["LABSHIP_TEST_REGISTRY"]
AWS = os.path.join(os.environ["LABSHIP_RIG_VENV"], "bin", "aws")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TIMEOUT = 1200
BUCKET = f"labship-bench-{os.getpid()}"

ENV = dict(os.environ)
ENV.update({
    "AWS_ENDPOINT_URL": SIM,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "LABSHIP_REGISTRY_ENDPOINT": REGISTRY,
})
# Jupyter on the simulated host serves its own certificate (labship pins it; here only the
# answers count).
TLS = ssl._create_unverified_context()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, cwd, check=True):
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"timed out after {TIMEOUT}s: {' '.join(cmd)}") from e
    wall = time.perf_counter() - t0
    if check and p.returncode != 0:
        log(p.stderr.decode(errors="replace")[-4000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout.decode(), wall


def sim(path, method="GET"):
    req = urllib.request.Request(SIM + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook():
    code = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": "pass"}
    params = dict(code, metadata={"tags": ["parameters"]}, source="x = 0")
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "cells": [params] + [dict(code) for _ in range(CELLS)]}


# ---- Jupyter's API, as the browser uses it -------------------------------------------------

def api(base, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, method=method, data=data,
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60, context=TLS) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


class Websocket:
    """The smallest client of RFC 6455 that Jupyter's kernel channel needs: text frames out
    (masked), text frames in (pings answered)."""

    def __init__(self, host, port, path, token):
        raw = socket.create_connection((host, port), timeout=60)
        self.s = TLS.wrap_socket(raw, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                        f"Authorization: token {token}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            if not chunk:
                raise SystemExit("the kernel websocket closed during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise SystemExit(f"kernel websocket refused: {status!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("the kernel websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text):
        self._frame(1, text.encode())

    def recv(self):
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 9:
                self._frame(10, payload)
            elif opcode == 8:
                raise SystemExit("the kernel websocket was closed by the server")
            elif opcode == 1:
                return payload.decode()

    def close(self):
        try:
            self._frame(8, b"")
        finally:
            self.s.close()


def execute(ws, session, code):
    """One execute_request on the shell channel; its outputs (from iopub) and status."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "bench", "session": session,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    outputs, status, idle = [], None, False
    while status is None or not idle:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "execute_reply":
            status = msg["content"]["status"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
        elif kind == "stream":
            outputs.append({"output_type": "stream", "name": msg["content"]["name"],
                            "text": msg["content"]["text"]})
    return outputs, status


def by_hand(work, proj, n):
    """labship up --ec2; upload, run every cell, save and download through Jupyter's API;
    labship down --ec2."""
    port = free_port()
    t0 = time.perf_counter()
    out, _ = run([LABSHIP, "up", "--ec2", "--allow-cidr", "127.0.0.1/32", "--bind", "127.0.0.1",
                  "--port", str(port), "--wait", "900", "-o", "json"], proj)
    t_up = time.perf_counter() - t0
    url = json.loads(out)["url"]
    token = url.split("token=", 1)[1]
    host = urllib.parse.urlsplit(url).hostname  # the instance's address
    base = f"https://{host}:{port}"
    nb = notebook()
    api(base, token, "PUT", "/api/contents/bench.ipynb", {"type": "notebook", "format": "json", "content": nb})
    kernel = api(base, token, "POST", "/api/kernels", {"name": "python3"})
    session = uuid.uuid4().hex
    ws = Websocket(host, port, f"/api/kernels/{kernel['id']}/channels?session_id={session}", token)
    for i, cell in enumerate(nb["cells"], 1):
        outputs, status = execute(ws, session, cell["source"])
        if status != "ok":
            raise SystemExit(f"cell {i} did not run: {status}")
        cell["outputs"], cell["execution_count"] = outputs, i
    ws.close()
    api(base, token, "PUT", "/api/contents/bench.ipynb", {"type": "notebook", "format": "json", "content": nb})
    got = api(base, token, "GET", "/api/contents/bench.ipynb?content=1")
    dest = os.path.join(work, f"manual-{n}")
    os.makedirs(dest)
    with open(os.path.join(dest, "bench.ipynb"), "w") as f:
        json.dump(got["content"], f)
    api(base, token, "DELETE", f"/api/kernels/{kernel['id']}")
    t_nb = time.perf_counter() - t0 - t_up
    _, t_down = run([LABSHIP, "down", "--ec2", "--yes", "-o", "json"], proj)
    return {"wall": time.perf_counter() - t0, "up": t_up, "notebook": t_nb, "down": t_down}


def with_labship(proj):
    t0 = time.perf_counter()
    out, _ = run([LABSHIP, "run", "bench.ipynb", "--ec2", "--output-uri", f"s3://{BUCKET}/runs",
                  "-o", "json"], proj)
    wall = time.perf_counter() - t0
    rep = json.loads(out)
    assert rep["state"] == "succeeded" and os.path.exists(os.path.join(rep["results"], "bench.ipynb")), rep
    return {"wall": wall, "run_id": rep["run_id"]}


def counted(fn):
    sim("/_sim/calls/reset", "POST")
    res = fn()
    calls = sim("/_sim/calls")
    res["calls"] = sum(v for v in calls.values() if isinstance(v, int)) if isinstance(calls, dict) else None
    res["calls_by_action"] = calls
    return res


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    work = tempfile.mkdtemp(prefix="labship-bench-job-ec2-")
    name = f"bjob{os.getpid()}"
    proj = os.path.join(work, name)
    os.makedirs(proj)
    shutil.copytree(os.path.join(ROOT, "docker"), os.path.join(proj, "docker"))
    with open(os.path.join(proj, "labship.toml"), "w") as f:
        f.write(f'name = "{name}"\n[build.args]\nBASE_IMAGE = "{BASE}"\n')
    with open(os.path.join(proj, "bench.ipynb"), "w") as f:
        json.dump(notebook(), f)
    subprocess.run([AWS, "--endpoint-url", MOTO, "s3api", "create-bucket", "--bucket", BUCKET], env=ENV,
                   check=True, stdout=subprocess.DEVNULL)
    log(f"warm-up (builds and pushes the image once; not timed), {CELLS} empty cells, {RUNS} runs per side")
    with_labship(proj)
    lab, man = [], []
    try:
        for n in range(RUNS):
            order = [("labship", lambda: with_labship(proj)), ("manual", lambda n=n: by_hand(work, proj, n))]
            if n % 2:
                order.reverse()
            for side, fn in order:
                res = counted(fn)
                (lab if side == "labship" else man).append(res)
                log(f"run {n + 1} {side}: {res['wall']:.1f}s, {res['calls']} AWS calls")
    finally:
        run([LABSHIP, "down", "--ec2", "--yes", "-o", "json"], proj, check=False)
    lw, mw = [r["wall"] for r in lab], [r["wall"] for r in man]
    results = {"runs": RUNS, "cells": CELLS, "labship": lab, "manual": man,
               "median_labship": med(lw), "median_manual": med(mw), "ratio": med(lw) / med(mw)}
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"labship-bench-job-ec2-{int(time.time())}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"a job of {CELLS} empty cells on the simulator, command to results on disk, nothing left running")
    print(f"  labship run --ec2            median {med(lw):6.1f}s  (all: {', '.join(f'{x:.1f}' for x in lw)})")
    print(f"  up + Jupyter API + down      median {med(mw):6.1f}s  (all: {', '.join(f'{x:.1f}' for x in mw)})")
    print(f"    of which up {med([r['up'] for r in man]):.1f}s, notebook {med([r['notebook'] for r in man]):.1f}s, "
          f"down {med([r['down'] for r in man]):.1f}s")
    print(f"  ratio labship/manual: {results['ratio']:.2f}  (target <= 0.7)")
    print(f"  AWS calls (median): labship {med([r['calls'] or 0 for r in lab])}, manual {med([r['calls'] or 0 for r in man])}")
    print(f"  results: {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
