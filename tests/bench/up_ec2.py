#!/usr/bin/env python3
"""Benchmark: `labship up --ec2`, from command to a Jupyter URL that answers, against the same
done by hand (tests/bench/manual_ec2.sh: aws CLI + docker CLI, step after step), on the rig's
instance simulator (moto behind tests/rig/instance-sim.py, which runs each instance's
user-data for real on the local engine).

    bash tests/bench/run.sh up-ec2        (BENCH_RUNS=5 for more runs; BENCH_NOOP_RUNS)

Both sides get the same build context and build args, push the same image reference (the
content tag labship plans) and boot with the same user-data script (from
`labship up --ec2 --dry-run`), so the instance does identical work and the two differ only in
the laptop-side orchestration. Runs alternate (labship first in odd runs, manual first in
even ones), each with a fresh deployment name and port, everything removed after each run.
Build cache: none above the base image. Each side's images are removed after its run, so
every build redoes every step after FROM (the offline base image itself stays). The registry
already holds the base image's layers (pushed once beforehand), so each push uploads only the
layers the build made. The instance role and profile already exist for both sides (steady
state; each side has its own, made once beforehand if missing), so neither pays for IAM
creation. On the simulator the "instance" boots in well under a second and pulls from the
engine that built the image, so boot and pull are far shorter than on EC2.

Reported:
  1. wall time to a working URL (median, spread, labship/manual ratio), also minus the build
     ("the part labship controls": labship uploads while the instance boots, the manual way
     cannot), with labship's --timings phases and the manual script's per-step times;
  2. no-op `up` on the unchanged running deployment (BENCH_NOOP_RUNS, default 5): time,
     bytes_uploaded (must be 0), action (must be "unchanged");
  3. AWS API calls (the simulator's per-Action request counts, reset before each command) of
     labship `up` (fresh), no-op `up`, `down`, and the manual up/down. The counter is global:
     run.sh gives this benchmark its own rig (LABSHIP_RIG_STATE), and the simulator's
     instance list is checked around every count for instances that are not ours.
Timings are printed, never asserted. The summary goes to stdout, progress to stderr, the
JSON results to ${TMPDIR:-/tmp}/labship-bench-up-ec2-<time>.json.
"""

import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
NOOP_RUNS = int(os.environ.get("BENCH_NOOP_RUNS", "5"))
LABSHIP = os.environ.get("LABSHIP_BIN", "target/release/labship")
BASE = os.environ["LABSHIP_TEST_BASE_IMAGE"]
REGISTRY = os.environ["LABSHIP_TEST_REGISTRY"]
SIM = os.environ["LABSHIP_TEST_SIM_ENDPOINT"]
VENV = os.environ["LABSHIP_RIG_VENV"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MANUAL = os.path.join(HERE, "manual_ec2.sh")
AWS = os.path.join(VENV, "bin", "aws")
MANUAL_ROLE = "labship-bench-manual"
UP_TIMEOUT = 1200  # seconds for one `up` (either side), bounded
DOWN_TIMEOUT = 900
WAIT = "900"

ENV = dict(os.environ)
ENV.update({
    "AWS_ENDPOINT_URL": SIM,
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
# The aws CLI v1 ignores AWS_ENDPOINT_URL; the manual script passes --endpoint-url.
MANUAL_ENV = dict(ENV, AWS_CLI=AWS, AWS_ENDPOINT=SIM, WAIT=WAIT, TRUST_POLICY=os.path.join(
    ROOT, "infra", "instance-trust-policy.json"), ALLOW_CIDR="127.0.0.1/32")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url):
    """Does the Jupyter of this login URL answer /api/status with its token?"""
    m = re.match(r"(https?://[^/]+)(/.*)?\?token=([0-9a-f]+)", url)
    if not m:
        return False
    # An https URL is the instance's own certificate (labship pins it; here only the answer
    # counts, so it is not verified).
    ctx = ssl._create_unverified_context() if m.group(1).startswith("https") else None
    try:
        with urllib.request.urlopen(f"{m.group(1)}/api/status?token={m.group(3)}", timeout=5,
                                    context=ctx) as r:
            return r.status == 200
    except Exception:
        return False


def sim(path, method="GET"):
    req = urllib.request.Request(SIM + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def foreign_instances(ours):
    """Simulated instances still running that belong to none of our deployments."""
    return [i for i in sim("/_sim/instances")
            if i.get("deployment") not in ours and i.get("container_state") not in ("absent", "exited")
            and i.get("sim_state") not in ("removed", "terminated")]


class Counter:
    """The simulator's call counts around one command, with a check for other users."""

    def __init__(self, ours):
        self.ours = ours

    def __enter__(self):
        self.before = foreign_instances(self.ours)
        sim("/_sim/calls/reset", "POST")
        return self

    def __exit__(self, *exc):
        self.calls = sim("/_sim/calls")
        after = foreign_instances(self.ours)
        self.clean = not self.before and not after
        if not self.clean:
            log(f"  note: other instances on the simulator during the count: {[i['id'] for i in self.before + after]}")
        return False


def run(cmd, cwd=None, env=None, timeout=UP_TIMEOUT, check=True):
    """stdout, stderr and wall seconds of one bounded command."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SystemExit(f"timed out after {timeout}s: {' '.join(cmd)}") from e
    wall = time.perf_counter() - t0
    if check and p.returncode != 0:
        log(p.stderr.decode(errors="replace")[-4000:])
        log(p.stdout.decode(errors="replace")[-2000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout.decode(), p.stderr.decode(errors="replace"), wall


def make_project(work, name):
    d = os.path.join(work, name)
    os.makedirs(d)
    shutil.copytree(os.path.join(ROOT, "docker"), os.path.join(d, "docker"))
    with open(os.path.join(d, "labship.toml"), "w") as f:
        f.write(f'name = "{name}"\n[build.args]\nBASE_IMAGE = "{BASE}"\n')
    return d


def up_args(port):
    return ["up", "--ec2", "--allow-cidr", "127.0.0.1/32", "--bind", "127.0.0.1", "--port", str(port),
            "--wait", WAIT, "-o", "json"]


def remove_images(name):
    """Every local image of the deployment (build tags, registry tags), so nothing is cached."""
    refs = []
    for repo in (f"labship/{name}", f"{REGISTRY}/labship/{name}"):
        out = subprocess.run(["docker", "images", "-q", repo], stdout=subprocess.PIPE).stdout.decode().split()
        refs += out
    if refs:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(refs))], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def remove_leftovers(name):
    """Containers and volumes the instance's user-data made, and the instance container, in
    case a failed run left them (the simulator removes them on TerminateInstances)."""
    for kind, flt in (("ps", f"label=dev.labship.ec2.deployment={name}"),
                      ("ps", f"label=dev.labship.sim.deployment={name}")):
        ids = subprocess.run(["docker", kind, "-aq", "--filter", flt], stdout=subprocess.PIPE).stdout.decode().split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    vols = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=dev.labship.ec2.deployment={name}"],
                          stdout=subprocess.PIPE).stdout.decode().split()
    if vols:
        subprocess.run(["docker", "volume", "rm", "-f", *vols], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def labship_down(proj, check):
    return run([LABSHIP, "down", "--ec2", "--yes", "--purge-images", "-o", "json"], cwd=proj,
               timeout=DOWN_TIMEOUT, check=check)


def labship_run(work, run_no, ours, noop):
    name = f"bl{run_no}x{os.getpid()}"
    ours.add(name)
    proj = make_project(work, name)
    port = free_port()
    res = {"name": name}
    try:
        with Counter(ours) as c:
            out, err, wall = run([LABSHIP, *up_args(port), "--timings"], cwd=proj)
        with open(os.path.join(work, f"{name}.up.log"), "w") as f:
            f.write(err)
        rep = json.loads(out)
        assert rep["action"] == "created" and rep["built"] and rep["bytes_uploaded"] > 0, rep
        assert answers(rep["url"]), f"labship's URL does not answer: {rep['url']}"
        res.update(wall=wall, timings=rep["timings"], bytes_uploaded=rep["bytes_uploaded"],
                   calls=c.calls, calls_clean=c.clean, stderr_tail=err[-4000:])
        if noop:
            res["noop"] = []
            for _ in range(NOOP_RUNS):
                with Counter(ours) as c:
                    out, _, w = run([LABSHIP, *up_args(port)], cwd=proj)
                r = json.loads(out)
                assert answers(r["url"]), r["url"]
                res["noop"].append({"wall": w, "action": r["action"], "bytes_uploaded": r["bytes_uploaded"],
                                    "built": r["built"], "calls": c.calls, "calls_clean": c.clean})
        with Counter(ours) as c:
            out, _, w = labship_down(proj, check=True)
        res.update(down_wall=w, down_calls=c.calls, down_clean=c.clean)
    finally:
        labship_down(proj, check=False)
        remove_leftovers(name)
        remove_images(name)
    return res


def manual_run(work, run_no, ours):
    name = f"bm{run_no}x{os.getpid()}"
    ours.add(name)
    proj = make_project(work, name)
    port = free_port()
    state = os.path.join(work, f"{name}.state")
    # What the person's script is written with: labship's own plan for this deployment (not
    # timed, not counted): the image reference, AMI parameter, root device and the user-data.
    out, _, _ = run([LABSHIP, *up_args(port), "--dry-run"], cwd=proj)
    plan = json.loads(out)
    ud = os.path.join(work, f"{name}.user-data.sh")
    with open(ud, "w") as f:
        f.write(plan["user_data"])
    env = dict(MANUAL_ENV, NAME=name, CONTEXT=os.path.join(proj, "docker"), BASE_IMAGE=BASE,
               IMAGE=plan["image"], PORT=str(port), USER_DATA=ud, AMI_PARAMETER=plan["ami"]["source"],
               INSTANCE_TYPE=plan["instance_type"], ROOT_DEVICE=plan["root_volume"]["device"],
               ROOT_GIB=str(plan["root_volume"]["size_gib"]), ROLE=MANUAL_ROLE)
    res = {"name": name}
    try:
        with Counter(ours) as c:
            out, _, wall = run(["bash", MANUAL, "up", state], env=env)
        url = out.strip().splitlines()[-1]
        assert answers(url), f"the manual URL does not answer: {url}"
        steps = read_steps(state)
        res.update(wall=wall, steps=steps, calls=c.calls, calls_clean=c.clean,
                   instance=instance_seconds(os.path.join(state, "console")))
        with Counter(ours) as c:
            _, _, w = run(["bash", MANUAL, "down", state], env=env, timeout=DOWN_TIMEOUT)
        res.update(down_wall=w, down_steps=read_steps(state), down_calls=c.calls, down_clean=c.clean)
    finally:
        run(["bash", MANUAL, "down", state], env=env, timeout=DOWN_TIMEOUT, check=False)
        remove_leftovers(name)
        remove_images(name)
    return res


def instance_seconds(console_file):
    """begin -> ready on the instance, from the user-data's markers (the instance's clock)."""
    with open(console_file, errors="replace") as f:
        text = f.read()
    t = {m.group(1): float(m.group(2)) for m in re.finditer(r"labship: (begin|ready) t=([0-9.]+)", text)}
    return t["ready"] - t["begin"]


def read_steps(state):
    steps = {}
    with open(os.path.join(state, "steps")) as f:
        for line in f:
            k, v = line.split()
            steps[k] = float(v)
    return steps


def prepare_rig(work):
    """The same starting point for every run of either side: both instance roles exist (each
    made once, the same way, if missing), and the registry already holds the base image's
    layers (pushed once to a side repository), so no run pays for them first: the engine
    mounts them into each new repository and uploads only the layers the build made."""
    for role, path in (("labship-instance", "/labship/"), (MANUAL_ROLE, "/")):
        run(["bash", MANUAL, "iam", os.path.join(work, f"iam-{role}")],
            env=dict(MANUAL_ENV, ROLE=role, ROLE_PATH=path), timeout=300)
    warm = f"{REGISTRY}/labship/bench-base:warm"
    run(["bash", "-c", f'"$AWS_CLI" --endpoint-url "$AWS_ENDPOINT" ecr get-login-password | '
         f'docker login --username AWS --password-stdin {REGISTRY}'], env=MANUAL_ENV, timeout=120)
    run(["docker", "tag", BASE, warm], timeout=60)
    run(["docker", "push", warm], timeout=1200)
    run(["docker", "rmi", warm], timeout=60)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def total_calls(calls):
    return sum(calls.values())


def summary(lab, man, results):
    lw = [r["wall"] for r in lab]
    mw = [r["wall"] for r in man]
    lb = [r["wall"] - (r["timings"].get("build") or 0) for r in lab]
    mb = [r["wall"] - r["steps"]["docker-build"] for r in man]
    lines = []
    p = lines.append
    p(f"up --ec2 on the instance simulator, labship {results['commit']}: {RUNS} runs per side, alternating")
    p("no build cache above the base image; the registry already holds the base layers (both sides upload "
      f"only the built ones: labship {med([r['bytes_uploaded'] for r in lab]) / 1024:.0f} KiB)")
    p("")
    p(f"{'seconds (median, min-max)':34s} {'labship':>20s} {'manual':>20s} {'ratio':>7s}")

    def row(label, a, b):
        p(f"{label:34s} {med(a):8.1f} ({min(a):4.1f}-{max(a):4.1f}) {med(b):8.1f} ({min(b):4.1f}-{max(b):4.1f}) "
          f"{med(a) / med(b):7.3f}")
    row("command to a working URL", lw, mw)
    row("  minus the build", lb, mb)
    # The part labship controls: everything but the build and the work on the instance
    # (begin -> ready from the same user-data's markers, identical work on both sides).
    lo = [r["wall"] - (r["timings"].get("build") or 0)
          - sum(r["timings"].get(k) or 0 for k in ("docker", "pull", "jupyter")) for r in lab]
    mo = [r["wall"] - r["steps"]["docker-build"] - r["instance"] for r in man]
    row("  minus build and instance work", lo, mo)
    row("  build alone", [r["timings"].get("build") or 0 for r in lab], [r["steps"]["docker-build"] for r in man])
    row("down", [r["down_wall"] for r in lab], [r["down_wall"] for r in man])
    p("")
    p("labship phases (--timings, median; push overlaps launch+boot+docker):")
    phases = ["build", "push", "launch", "boot", "docker", "pull", "jupyter", "total"]
    p("  " + "  ".join(f"{ph} {med([r['timings'].get(ph) or 0 for r in lab]):.1f}" for ph in phases))
    p("manual steps (median, in order):")
    keys = list(man[0]["steps"])
    p("  " + "  ".join(f"{k} {med([r['steps'][k] for r in man]):.1f}" for k in keys))
    p("")
    noop = results.get("noop", [])
    if noop:
        nw = [n["wall"] for n in noop]
        p(f"no-op up ({len(noop)}x on the unchanged deployment): median {med(nw):.2f}s ({min(nw):.2f}-{max(nw):.2f}), "
          f"bytes_uploaded {sorted({n['bytes_uploaded'] for n in noop})}, action {sorted({n['action'] for n in noop})}, "
          f"built {sorted({n['built'] for n in noop})}")
        p("")
    # API calls: per run they should not differ; show the last run of each, and the spread of totals.
    cols = [("labship up", lab[-1]["calls"]), ("no-op up", noop[-1]["calls"] if noop else {}),
            ("labship down", lab[-1]["down_calls"]), ("manual up", man[-1]["calls"]),
            ("manual down", man[-1]["down_calls"])]
    actions = sorted(set().union(*[c for _, c in cols]))
    p("AWS API calls through the simulator (last run of each; includes the instance's own ECR login):")
    p(f"  {'service:Action':40s}" + "".join(f"{n:>14s}" for n, _ in cols))
    for a in actions:
        p(f"  {a:40s}" + "".join(f"{c.get(a, 0):14d}" for _, c in cols))
    p(f"  {'total':40s}" + "".join(f"{total_calls(c):14d}" for _, c in cols))
    spread = {
        "labship up": sorted({total_calls(r["calls"]) for r in lab}),
        "no-op up": sorted({total_calls(n["calls"]) for n in noop}),
        "labship down": sorted({total_calls(r["down_calls"]) for r in lab}),
        "manual up": sorted({total_calls(r["calls"]) for r in man}),
        "manual down": sorted({total_calls(r["down_calls"]) for r in man}),
    }
    p("  totals seen over all runs: " + ", ".join(f"{k} {v}" for k, v in spread.items()))
    clean = all(r["calls_clean"] and r["down_clean"] for r in lab + man) and all(n["calls_clean"] for n in noop)
    p(f"  counts {'uncontaminated: no other instance on the simulator during any count' if clean else 'MAY INCLUDE OTHER USERS OF THE SIMULATOR'}")
    return "\n".join(lines), {
        "labship_median_s": med(lw), "manual_median_s": med(mw), "ratio": med(lw) / med(mw),
        "labship_minus_build_median_s": med(lb), "manual_minus_build_median_s": med(mb),
        "ratio_minus_build": med(lb) / med(mb), "calls_uncontaminated": clean,
    }


def main():
    work = tempfile.mkdtemp(prefix="labship-bench-ec2-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    ours = set()
    leftover = foreign_instances(ours)
    if leftover:
        log(f"note: the simulator already runs instances of {sorted({i['deployment'] for i in leftover})}; "
            "call counts may include their traffic")
    lab, man = [], []
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL).stdout.decode().strip()
    results = {"commit": commit, "runs": RUNS, "noop_runs": NOOP_RUNS, "labship": lab, "manual": man,
               "cache": "none above the base image; base layers already in the registry"}
    try:
        prepare_rig(work)
        for i in range(RUNS):
            order = ("labship", "manual") if i % 2 == 0 else ("manual", "labship")
            for side in order:
                if side == "labship":
                    r = labship_run(work, i + 1, ours, noop=(i == 0))
                    lab.append(r)
                    if "noop" in r:
                        results["noop"] = r["noop"]
                    t = r["timings"]
                    log(f"  run {i + 1} labship {r['wall']:6.1f}s (build {t.get('build') or 0:.1f}, push {t.get('push') or 0:.1f}, "
                        f"boot {t.get('boot') or 0:.1f}, pull {t.get('pull') or 0:.1f}, jupyter {t.get('jupyter') or 0:.1f}); "
                        f"{total_calls(r['calls'])} calls; down {r['down_wall']:.1f}s")
                else:
                    r = manual_run(work, i + 1, ours)
                    man.append(r)
                    s = r["steps"]
                    log(f"  run {i + 1} manual  {r['wall']:6.1f}s (build {s['docker-build']:.1f}, push {s['docker-push']:.1f}, "
                        f"console {s['console-token']:.1f}); {total_calls(r['calls'])} calls; down {r['down_wall']:.1f}s")
        text, headline = summary(lab, man, results)
        results["summary"] = headline
        path = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"labship-bench-up-ec2-{time.strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        print(text)
        print(f"\nJSON: {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
