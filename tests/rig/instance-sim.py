#!/usr/bin/env python3
"""EC2 instance simulator of the labship test rig: an HTTP proxy in front of moto_server.

    python3 instance-sim.py --port P --moto http://127.0.0.1:M --image labship/sim-host:H \
        [--self-url http://127.0.0.1:P] [--state-dir DIR] [--rig-id ID]
    (or the environment: LABSHIP_SIM_PORT, LABSHIP_SIM_MOTO_URL, LABSHIP_SIM_HOST_IMAGE,
     LABSHIP_SIM_SELF_URL; optional LABSHIP_SIM_CONSOLE_DELAY, LABSHIP_SIM_INVOCATION_DELAY)

Every request is forwarded unchanged to moto (method, path, query, headers, body) and moto's
answer is returned, except for what makes launched instances behave like real ones:

* RunInstances: for each new instance a detached container `labship-sim-<instance-id>` runs
  from the "sim host" image (tests/rig/sim-host.sh) with --network host and this engine's
  socket mounted (docker-outside-of-docker), AWS_ENDPOINT_URL pointing back at this proxy and
  test credentials (standing in for the instance profile); it runs the request's user-data
  like cloud-init does (bash scripts only) and then stays up like a host.
* GetConsoleOutput (simulated instances): fake boot lines, then the container's output as
  cloud-init journal lines `[%12.6f] cloud-init[2179]: <line>`, then (merged by time) the
  output of simulated SSM commands; last 64 KiB, base64; no <output> while there is nothing.
* TerminateInstances / StopInstances: after moto, the instance container and the containers
  and volumes labelled dev.labship.ec2.deployment=<its deployment> are removed (before the
  answer, bounded).
* DescribeInstances / RunInstances answers: public IP 127.0.0.1 and DNS name localhost for
  simulated instances (their published ports are on this machine's loopback).
* SSM: SendCommand (AWS-RunShellScript) runs the commands with `docker exec` in the instance
  container; GetCommandInvocation and DescribeInstanceInformation answer for them.
* /_sim/health, /_sim/calls (GET; POST /_sim/calls/reset), /_sim/instances.

Python standard library only. Logs go to stderr. SIGTERM/SIGINT: removes every container it
started (and their deployment containers/volumes), then exits.
"""

import argparse
import base64
import collections
import datetime
import gzip
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
JSON_TYPE = "application/x-amz-json-1.1"
CONSOLE_LIMIT = 64 * 1024
SSM_STDOUT_LIMIT = 24000
SSM_STDERR_LIMIT = 8000
KEEP_LIMIT = 1024 * 1024  # bytes of SSM output kept per stream
USER_DATA_PATH = "/var/lib/cloud/instance/user-data.txt"

LABEL_INSTANCE = "dev.labship.sim.instance"
LABEL_DEPLOYMENT = "dev.labship.sim.deployment"
LABEL_RIG = "dev.labship.sim.rig"
LABEL_OWNER = "dev.labship.sim.owner"
LABEL_EC2_DEPLOYMENT = "dev.labship.ec2.deployment"
DEPLOYMENT_TAG = "labship:deployment"

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "content-length", "expect",
}

# What the instance container runs: a cloud-init-like runner of the user-data, then idles as
# the "host". The user-data's stdout and stderr both go to the container's stdout (cloud-init
# tees both to the console), so their order is kept.
BOOT_SCRIPT = r"""
ud=/var/lib/cloud/instance/user-data.txt
now() { date -u '+%Y-%m-%d %H:%M:%S,%3N'; }
echo "Cloud-init v. 22.2.2 running 'modules:final' at $(date -u '+%a, %d %b %Y %H:%M:%S +0000'). Up ${SECONDS}.00 seconds."
rc=0
if [ ! -s "$ud" ]; then
    :
elif head -n 1 "$ud" | grep -Eq '^#!.*(bash|sh)'; then
    mkdir -p /var/lib/cloud/instance/scripts
    cp "$ud" /var/lib/cloud/instance/scripts/part-001
    chmod 700 /var/lib/cloud/instance/scripts/part-001
    cd / && bash /var/lib/cloud/instance/scripts/part-001 </dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "$(now) - cc_scripts_user.py[WARNING]: Failed to run module scripts-user (scripts in /var/lib/cloud/instance/scripts)"
        echo "$(now) - util.py[WARNING]: Running module scripts-user (<module 'cloudinit.config.cc_scripts_user' from '/usr/lib/python3.9/site-packages/cloudinit/config/cc_scripts_user.py'>) failed"
    fi
else
    echo "$(now) - __init__.py[WARNING]: Unhandled non-multipart (text/x-not-multipart) userdata: 'b'$(head -c 40 "$ud" | tr -c '[:print:]' '?')'...'"
fi
echo "Cloud-init v. 22.2.2 finished at $(date -u '+%a, %d %b %Y %H:%M:%S +0000'). Datasource DataSourceEc2.  Up ${SECONDS}.00 seconds"
exec sleep infinity
"""

BOOT_LINES = [
    "Linux version 6.1.115-126.197.amzn2023.x86_64 (mockbuild@ip-10-0-58-232) (gcc (GCC) 11.4.1 20230605 (Red Hat 11.4.1-2), GNU ld version 2.39-6.amzn2023.0.10) #1 SMP PREEMPT_DYNAMIC",
    "Command line: BOOT_IMAGE=(hd0,gpt1)/boot/vmlinuz-6.1.115-126.197.amzn2023.x86_64 root=UUID=0 ro console=tty0 console=ttyS0,115200n8 nvme_core.io_timeout=4294967295 rd.emergency=poweroff rd.shell=0 selinux=1 security=selinux quiet",
    "labship-sim: simulated instance {iid} (container {container})",
]


def log(msg):
    sys.stderr.write("[sim %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def iso_now(t=None):
    t = time.time() if t is None else t
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (int(t * 1000) % 1000)


_TS_RE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def parse_docker_ts(raw):
    """RFC 3339 (nanoseconds) timestamp of `docker logs -t` -> epoch seconds, or None."""
    m = _TS_RE.match(raw)
    if not m:
        return None
    dt = datetime.datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S")
    zone = m.group(3).decode()
    if zone == "Z":
        tz = datetime.timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    frac = float(m.group(2).decode()) if m.group(2) else 0.0
    return dt.replace(tzinfo=tz).timestamp() + frac


def docker(*args, timeout=60, input=None):
    """Run the docker CLI; returns CompletedProcess (bytes). Never raises on failure/timeout."""
    try:
        return subprocess.run(["docker", *args], input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, 124, e.stdout or b"", (e.stderr or b"") + b"\n(timed out)")
    except OSError as e:
        return subprocess.CompletedProcess(["docker", *args], 127, b"", str(e).encode())


def short_err(cp):
    return (cp.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no message)"]


class Invocation:
    def __init__(self, command_id, instance_id, comment):
        self.command_id = command_id
        self.instance_id = instance_id
        self.comment = comment
        self.status = "InProgress"
        self.details = "InProgress"
        self.code = -1
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.start = time.time()
        self.end = None
        self.lock = threading.Lock()

    def as_json(self):
        with self.lock:
            out = self.stdout.decode("utf-8", "replace")[-SSM_STDOUT_LIMIT:]
            err = self.stderr.decode("utf-8", "replace")[-SSM_STDERR_LIMIT:]
            end = self.end
            return {
                "CommandId": self.command_id, "InstanceId": self.instance_id, "Comment": self.comment,
                "DocumentName": "AWS-RunShellScript", "DocumentVersion": "$DEFAULT",
                "PluginName": "aws:runShellScript", "ResponseCode": self.code,
                "ExecutionStartDateTime": iso_now(self.start),
                "ExecutionElapsedTime": "PT%.3fS" % ((end or time.time()) - self.start),
                "ExecutionEndDateTime": iso_now(end) if end else "",
                "Status": self.status, "StatusDetails": self.details,
                "StandardOutputContent": out, "StandardOutputUrl": "",
                "StandardErrorContent": err, "StandardErrorUrl": "",
                "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
            }


class Instance:
    def __init__(self, iid, deployment, region, user_data, state_dir):
        self.id = iid
        self.deployment = deployment
        self.region = region
        self.user_data = user_data
        self.container = "labship-sim-" + iid
        self.dir = os.path.join(state_dir, iid)
        self.created = time.time()
        self.started_at = None  # epoch of the container's start (docker inspect)
        self.state = "pending"  # pending, running, failed, removed
        self.error = None
        self.extra = []  # (epoch, bytes line): SSM command output written "to the console"
        self.final_console = None  # bytes captured just before removal
        self.lock = threading.Lock()  # guards extra / final_console (short sections only)
        self.busy = threading.Lock()  # held while the container starts and while it is removed

    def add_console(self, line):
        with self.lock:
            self.extra.append((time.time(), line))
            if len(self.extra) > 20000:
                del self.extra[:10000]


class Sim:
    def __init__(self, args):
        self.args = args
        u = urllib.parse.urlsplit(args.moto)
        self.moto_host = u.hostname or "127.0.0.1"
        self.moto_port = u.port or 80
        self.self_url = args.self_url or "http://127.0.0.1:%d" % args.port
        self.instances = {}
        self.invocations = {}
        self.calls = collections.Counter()
        self.lock = threading.Lock()
        self.xml_lock = threading.Lock()
        self.owner = str(os.getpid())
        os.makedirs(args.state_dir, exist_ok=True)

    # ---------------------------------------------------------------- forwarding to moto
    def forward(self, req):
        conn = http.client.HTTPConnection(self.moto_host, self.moto_port, timeout=self.args.moto_timeout)
        try:
            headers = [(k, v) for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP]
            if req.body or req.method in ("POST", "PUT", "PATCH"):
                headers.append(("Content-Length", str(len(req.body))))
            conn.putrequest(req.method, req.raw_path, skip_host=True, skip_accept_encoding=True)
            if not any(k.lower() == "host" for k, _ in headers):
                conn.putheader("Host", "%s:%d" % (self.moto_host, self.moto_port))
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(req.body or None)
            resp = conn.getresponse()
            body = resp.read()
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            return resp.status, out_headers, body
        finally:
            conn.close()

    # ---------------------------------------------------------------- dispatch
    def handle(self, req):
        with self.lock:
            self.calls[req.call_name] += 1
        if req.service == "ec2" or (req.service == "?" and req.params.get("Action")):
            action = req.action
            if action == "GetConsoleOutput":
                inst = self.instances.get(req.params.get("InstanceId", ""))
                if inst is not None:
                    return self.console_response(inst)
            elif action in ("RunInstances", "DescribeInstances"):
                status, headers, body = self.forward(req)
                if status == 200 and action == "RunInstances":
                    self.launch(req, body)
                if status == 200:
                    body = self.rewrite_ips(body)
                return status, headers, body
            elif action in ("TerminateInstances", "StopInstances"):
                status, headers, body = self.forward(req)
                if status == 200:
                    ids = [v for k, v in sorted(req.params.items()) if re.fullmatch(r"InstanceId\.\d+", k)]
                    self.remove_instances([self.instances[i] for i in ids if i in self.instances], action)
                return status, headers, body
        elif req.service == "ssm" and req.target_op:
            op = req.target_op
            if op == "SendCommand":
                return self.ssm_send_command(req)
            if op == "GetCommandInvocation":
                data = req.json()
                inv = self.invocations.get((data.get("CommandId"), data.get("InstanceId")))
                if inv is not None:
                    if time.time() - inv.start < self.args.invocation_delay:
                        return json_error(400, "InvocationDoesNotExist", "")
                    return json_response(inv.as_json())
            elif op == "DescribeInstanceInformation":
                return self.ssm_describe_instance_information(req)
        return self.forward(req)

    # ---------------------------------------------------------------- EC2
    def launch(self, req, body):
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            log("RunInstances: cannot parse moto's answer: %s" % e)
            return
        ids = []
        for item in root.iter():
            if local(item.tag) == "instancesSet":
                for it in item:
                    iid = child_text(it, "instanceId")
                    if iid:
                        ids.append(iid)
        raw = req.params.get("UserData", "")
        user_data = b""
        if raw:
            try:
                user_data = base64.b64decode(raw + "=" * (-len(raw) % 4))
            except ValueError:
                user_data = raw.encode()
            if user_data[:2] == b"\x1f\x8b":
                try:
                    user_data = gzip.decompress(user_data)
                except OSError:
                    pass
        deployment = None
        for k, v in req.params.items():
            m = re.fullmatch(r"TagSpecification\.(\d+)\.ResourceType", k)
            if m and v == "instance":
                n = m.group(1)
                for kk, vv in req.params.items():
                    mm = re.fullmatch(r"TagSpecification\.%s\.Tag\.(\d+)\.Key" % n, kk)
                    if mm and vv == DEPLOYMENT_TAG:
                        deployment = req.params.get("TagSpecification.%s.Tag.%s.Value" % (n, mm.group(1)))
        if deployment is None:
            m = re.search(rb"%s=([A-Za-z0-9][A-Za-z0-9_.-]*)" % re.escape(LABEL_EC2_DEPLOYMENT.encode()), user_data)
            if m:
                deployment = m.group(1).decode()
        region = req.region or self.args.default_region
        for iid in ids:
            inst = Instance(iid, deployment, region, user_data, self.args.state_dir)
            inst.busy.acquire()  # released by the start thread
            with self.lock:
                self.instances[iid] = inst
            threading.Thread(target=self.start_container, args=(inst,), name="start-" + iid, daemon=True).start()
        log("RunInstances: %s (deployment %s, region %s, user-data %d bytes)" % (
            " ".join(ids) or "(no ids)", deployment, region, len(user_data)))

    def start_container(self, inst):
        try:
            os.makedirs(inst.dir, exist_ok=True)
            ud_file = os.path.join(inst.dir, "user-data.txt")
            fd = os.open(ud_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(inst.user_data)
            labels = ["--label", "%s=%s" % (LABEL_INSTANCE, inst.id),
                      "--label", "%s=%s" % (LABEL_RIG, self.args.rig_id),
                      "--label", "%s=%s" % (LABEL_OWNER, self.owner)]
            if inst.deployment:
                labels += ["--label", "%s=%s" % (LABEL_DEPLOYMENT, inst.deployment)]
            env = ["AWS_ENDPOINT_URL=" + self.self_url, "AWS_ACCESS_KEY_ID=testing",
                   "AWS_SECRET_ACCESS_KEY=testing", "AWS_DEFAULT_REGION=" + inst.region,
                   "AWS_REGION=" + inst.region]
            cmd = ["run", "-d", "--name", inst.container, *labels, "--network", "host", "--init",
                   "--log-driver", "json-file", "--log-opt", "max-size=20m",
                   "-v", "%s:/var/run/docker.sock" % self.args.docker_socket,
                   "-v", "%s:%s:ro" % (ud_file, USER_DATA_PATH)]
            for e in env:
                cmd += ["-e", e]
            cmd += [self.args.image, "bash", "-c", BOOT_SCRIPT]
            cp = docker(*cmd, timeout=60)
            if cp.returncode != 0:
                inst.state = "failed"
                inst.error = "docker run failed: %s" % short_err(cp)[0]
                inst.add_console(("labship-sim: " + inst.error).encode())
                log("%s: %s" % (inst.id, inst.error))
                return
            cp = docker("inspect", "--format", "{{.State.StartedAt}}", inst.container, timeout=20)
            inst.started_at = parse_docker_ts(cp.stdout.strip()) if cp.returncode == 0 else None
            inst.state = "running"
            log("%s: container %s started" % (inst.id, inst.container))
        except Exception as e:  # noqa: BLE001 - never let a thread die silently
            inst.state = "failed"
            inst.error = "start failed: %s" % e
            log("%s: %s\n%s" % (inst.id, inst.error, traceback.format_exc()))
        finally:
            inst.busy.release()

    def console_bytes(self, inst):
        """The console text of a simulated instance (bytes), or b'' when there is nothing yet."""
        with inst.lock:
            if inst.final_console is not None:
                return inst.final_console
            extra = list(inst.extra)
            state = inst.state
        lines = []
        if state == "running":
            cp = docker("logs", "-t", inst.container, timeout=30)
            data = cp.stdout + cp.stderr if cp.returncode == 0 else b""
            # `docker logs` writes the container's stdout and stderr to its own two streams:
            # put the lines back in time order (stable for equal stamps).
            for raw in data.split(b"\n"):
                if not raw:
                    continue
                ts, _, text = raw.partition(b" ")
                t = parse_docker_ts(ts)
                if t is None:
                    continue
                lines.append((t, 0, text.rstrip(b"\r")))
        if not lines and not extra:
            return b""
        base = inst.started_at or inst.created
        lines.sort(key=lambda x: x[0])
        merged = sorted(lines + [(t, 1, text) for t, text in extra], key=lambda x: x[0])
        out = [b"[%12.6f] %s" % (0.0, s.format(iid=inst.id, container=inst.container).encode()) for s in BOOT_LINES]
        for t, kind, text in merged:
            if kind == 0:
                out.append(b"[%12.6f] cloud-init[2179]: %s" % (max(0.0, t - base), text))
            else:
                out.append(text)
        return b"\n".join(out) + b"\n"

    def console_response(self, inst):
        text = b""
        if time.time() - inst.created >= self.args.console_delay:
            text = self.console_bytes(inst)[-CONSOLE_LIMIT:]
        parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<GetConsoleOutputResponse xmlns="%s">' % EC2_NS,
                 "<requestId>%s</requestId>" % uuid.uuid4(),
                 "<instanceId>%s</instanceId>" % xml_escape(inst.id),
                 "<timestamp>%s</timestamp>" % iso_now()]
        if text:
            parts.append("<output>%s</output>" % base64.b64encode(text).decode())
        parts.append("</GetConsoleOutputResponse>")
        return 200, [("Content-Type", "text/xml;charset=UTF-8")], "".join(parts).encode()

    def rewrite_ips(self, body):
        """Public address 127.0.0.1 / localhost for simulated instances in an EC2 XML answer."""
        with self.lock:
            sim_ids = {i for i, inst in self.instances.items() if inst.state != "removed"}
        if not sim_ids or not any(i.encode() in body for i in sim_ids):
            return body
        with self.xml_lock:
            try:
                root = ET.fromstring(body)
            except ET.ParseError as e:
                log("cannot parse an EC2 answer to rewrite its IPs: %s" % e)
                return body
            ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
            ET.register_namespace("", ns)
            changed = False
            for item in root.iter():
                if local(item.tag) != "item" or child_text(item, "instanceId") not in sim_ids:
                    continue
                for child in item:
                    name = local(child.tag)
                    if name == "ipAddress" and child.text:
                        child.text, changed = "127.0.0.1", True
                    elif name == "dnsName" and child.text:
                        child.text, changed = "localhost", True
                for assoc in item.iter():
                    if local(assoc.tag) != "association":
                        continue
                    for c in assoc:
                        if local(c.tag) == "publicIp" and c.text:
                            c.text, changed = "127.0.0.1", True
                        elif local(c.tag) == "publicDnsName" and c.text:
                            c.text, changed = "localhost", True
            if not changed:
                return body
            return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)

    def remove_instances(self, instances, why, deadline=60.0):
        threads = []
        for inst in instances:
            t = threading.Thread(target=self.remove_instance, args=(inst, why), daemon=True)
            t.start()
            threads.append(t)
        end = time.time() + deadline
        for t in threads:
            t.join(max(0.0, end - time.time()))

    def remove_instance(self, inst, why):
        acquired = inst.busy.acquire(timeout=60)
        if not acquired:
            log("%s: busy for 60 s; removing anyway" % inst.id)
        try:
            if inst.state == "removed":
                return
            if inst.state == "running":
                try:
                    inst.final_console = self.console_bytes(inst)
                except Exception as e:  # noqa: BLE001
                    log("%s: could not capture the console: %s" % (inst.id, e))
            inst.state = "removed"
            cp = docker("rm", "-f", inst.container, timeout=30)
            if cp.returncode != 0 and b"No such container" not in cp.stderr:
                log("%s: docker rm -f %s: %s" % (inst.id, inst.container, short_err(cp)[0]))
            shutil.rmtree(inst.dir, ignore_errors=True)
            with self.lock:
                others = [i.id for i in self.instances.values()
                          if i is not inst and i.deployment == inst.deployment and i.state not in ("removed", "failed")]
            if inst.deployment and others:
                log("%s: deployment %s is also on %s; its containers are left alone" % (
                    inst.id, inst.deployment, " ".join(others)))
            elif inst.deployment:
                remove_deployment(inst.deployment)
                time.sleep(1.0)  # a `docker run` the user-data had in flight may land now
                remove_deployment(inst.deployment)
            log("%s: %s: removed container %s (deployment %s)" % (inst.id, why, inst.container, inst.deployment))
        finally:
            if acquired:
                inst.busy.release()

    # ---------------------------------------------------------------- SSM
    def ssm_send_command(self, req):
        status, headers, body = self.forward(req)
        if status != 200:
            return status, headers, body
        data = req.json()
        if data.get("DocumentName") != "AWS-RunShellScript":
            return status, headers, body
        try:
            command_id = json.loads(body)["Command"]["CommandId"]
        except (ValueError, KeyError, TypeError):
            log("SendCommand: no CommandId in moto's answer")
            return status, headers, body
        params = data.get("Parameters") or {}
        script = "\n".join(params.get("commands") or [])
        try:
            timeout = float((params.get("executionTimeout") or ["3600"])[0])
        except (ValueError, TypeError):
            timeout = 3600.0
        for iid in data.get("InstanceIds") or []:
            inst = self.instances.get(iid)
            if inst is None:
                continue
            inv = Invocation(command_id, iid, data.get("Comment", ""))
            with self.lock:
                self.invocations[(command_id, iid)] = inv
            threading.Thread(target=self.run_command, args=(inst, inv, script, timeout),
                             name="ssm-" + command_id[:8], daemon=True).start()
            log("SendCommand %s on %s" % (command_id, iid))
        return status, headers, body

    def run_command(self, inst, inv, script, timeout):
        if inst.state == "pending":
            with inst.busy:  # wait for the start to finish
                pass
        if inst.state != "running":
            with inv.lock:
                inv.status, inv.details, inv.end = "Failed", "Undeliverable", time.time()
            return
        try:
            p = subprocess.Popen(["docker", "exec", inst.container, "bash", "-c", script],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            with inv.lock:
                inv.stderr += str(e).encode()
                inv.status, inv.details, inv.end = "Failed", "Failed", time.time()
            return

        def pump(stream, buf):
            for line in iter(stream.readline, b""):
                with inv.lock:
                    buf += line
                    if len(buf) > KEEP_LIMIT:
                        del buf[:len(buf) - KEEP_LIMIT]
                inst.add_console(line.rstrip(b"\r\n"))
            stream.close()

        pumps = [threading.Thread(target=pump, args=(p.stdout, inv.stdout), daemon=True),
                 threading.Thread(target=pump, args=(p.stderr, inv.stderr), daemon=True)]
        for t in pumps:
            t.start()
        timed_out = False
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            p.kill()
            rc = p.wait()
        for t in pumps:
            t.join(10)
        with inv.lock:
            inv.end = time.time()
            if timed_out:
                inv.status = inv.details = "TimedOut"
                inv.code = -1
            else:
                inv.code = rc
                inv.status = inv.details = "Success" if rc == 0 else "Failed"
        log("command %s on %s: %s (exit %s)" % (inv.command_id, inst.id, inv.status, inv.code))

    def ssm_describe_instance_information(self, req):
        data = req.json()
        wanted = None
        for f in data.get("Filters") or []:
            if f.get("Key") in ("InstanceIds", "InstanceId"):
                wanted = set(f.get("Values") or []) | (wanted or set())
        for f in data.get("InstanceInformationFilterList") or []:
            if f.get("key") == "InstanceIds":
                wanted = set(f.get("valueSet") or []) | (wanted or set())
        running = self.running_containers()
        out = []
        now = time.time()
        for inst in list(self.instances.values()):
            if inst.state != "running" or inst.id not in running:
                continue
            if wanted is not None and inst.id not in wanted:
                continue
            out.append({"InstanceId": inst.id, "PingStatus": "Online", "LastPingDateTime": now,
                        "AgentVersion": "3.3.0.0", "IsLatestVersion": True, "PlatformType": "Linux",
                        "PlatformName": "Amazon Linux", "PlatformVersion": "2023", "ResourceType": "EC2Instance",
                        "IPAddress": "127.0.0.1", "ComputerName": "ip-127-0-0-1." + inst.region + ".compute.internal"})
        return json_response({"InstanceInformationList": out})

    # ---------------------------------------------------------------- engine views and cleanup
    def running_containers(self):
        """Instance ids whose container runs (one `docker ps`)."""
        cp = docker("ps", "--filter", "label=%s=%s" % (LABEL_OWNER, self.owner),
                    "--format", '{{.Label "%s"}}' % LABEL_INSTANCE, timeout=20)
        return set(cp.stdout.decode().split()) if cp.returncode == 0 else set()

    def container_states(self):
        cp = docker("ps", "-a", "--filter", "label=%s=%s" % (LABEL_OWNER, self.owner),
                    "--format", '{{.Label "%s"}}\t{{.State}}' % LABEL_INSTANCE, timeout=20)
        states = {}
        for line in cp.stdout.decode().splitlines():
            iid, _, state = line.partition("\t")
            states[iid] = state
        return states

    def list_instances(self):
        states = self.container_states()
        out = []
        for inst in list(self.instances.values()):
            out.append({"id": inst.id, "deployment": inst.deployment, "region": inst.region,
                        "container": inst.container, "sim_state": inst.state,
                        "container_state": states.get(inst.id, "absent"), "error": inst.error,
                        "created": iso_now(inst.created)})
        return out

    def remove_stale(self):
        """Sim containers of this rig, or of a simulator process that no longer exists."""
        cp = docker("ps", "-a", "--filter", "label=" + LABEL_INSTANCE,
                    "--format", '{{.Names}}\t{{.Label "%s"}}\t{{.Label "%s"}}\t{{.Label "%s"}}' % (
                        LABEL_RIG, LABEL_OWNER, LABEL_DEPLOYMENT), timeout=30)
        for line in cp.stdout.decode().splitlines():
            name, rig, owner, dep = (line.split("\t") + ["", "", "", ""])[:4]
            if rig != self.args.rig_id and owner_alive(owner):
                continue
            log("removing stale %s (deployment %s)" % (name, dep or "-"))
            docker("rm", "-f", name, timeout=30)
            if dep:
                remove_deployment(dep)

    def shutdown_cleanup(self, deadline=20.0):
        insts = [i for i in self.instances.values() if i.state != "removed"]
        if insts:
            log("removing %d instance container(s)" % len(insts))
            self.remove_instances(insts, "shutdown", deadline=deadline)
        # Anything of ours the bookkeeping missed.
        cp = docker("ps", "-aq", "--filter", "label=%s=%s" % (LABEL_OWNER, self.owner), timeout=20)
        left = cp.stdout.decode().split()
        if left:
            docker("rm", "-f", *left, timeout=30)


def owner_alive(pid):
    if not pid.isdigit():
        return False
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return b"instance-sim" in f.read()
    except OSError:
        return False


def remove_deployment(dep):
    label = "label=%s=%s" % (LABEL_EC2_DEPLOYMENT, dep)
    cp = docker("ps", "-aq", "--filter", label, timeout=20)
    ids = cp.stdout.decode().split()
    if ids:
        r = docker("rm", "-f", "-v", *ids, timeout=60)
        log("deployment %s: removed %d container(s)%s" % (dep, len(ids), "" if r.returncode == 0 else ": " + short_err(r)[0]))
    cp = docker("volume", "ls", "-q", "--filter", label, timeout=20)
    vols = set(cp.stdout.decode().split())
    # The contract's volume name, in case it was created implicitly (without the label).
    name = "labship-ec2-%s-work" % dep
    if docker("volume", "inspect", name, timeout=20).returncode == 0:
        vols.add(name)
    if vols:
        r = docker("volume", "rm", "-f", *sorted(vols), timeout=60)
        log("deployment %s: removed volume(s) %s%s" % (dep, " ".join(sorted(vols)), "" if r.returncode == 0 else ": " + short_err(r)[0]))


def local(tag):
    return tag.rsplit("}", 1)[-1]


def child_text(el, name):
    for c in el:
        if local(c.tag) == name:
            return c.text
    return None


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def json_response(obj, status=200):
    return status, [("Content-Type", JSON_TYPE), ("x-amzn-RequestId", str(uuid.uuid4()))], json.dumps(obj).encode()


def json_error(status, code, message):
    return json_response({"__type": code, "message": message}, status)


class Request:
    """One incoming request with what the simulator needs to know about it."""

    _CRED = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")

    def __init__(self, method, raw_path, headers, body):
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.body = body
        split = urllib.parse.urlsplit(raw_path)
        self.path = split.path
        self.params = {}
        for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            self.params.setdefault(k, v)
        ctype = (headers.get("Content-Type") or "").lower()
        if body and "application/x-www-form-urlencoded" in ctype:
            for k, v in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
                self.params.setdefault(k, v)
        m = self._CRED.search(headers.get("Authorization") or "") or self._CRED.search(
            "Credential=" + urllib.parse.unquote(self.params.get("X-Amz-Credential", "")))
        self.region = m.group(3) if m else None
        self.service = m.group(4) if m else "?"
        target = headers.get("X-Amz-Target") or ""
        self.target_op = target.rsplit(".", 1)[-1] if "." in target else None
        self.action = self.params.get("Action") or self.target_op or "%s %s" % (method, self.path)
        self.call_name = "%s:%s" % (self.service, self.action)
        self._json = None

    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body or b"{}")
                if not isinstance(self._json, dict):
                    self._json = {}
            except ValueError:
                self._json = {}
        return self._json


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "labship-instance-sim/1"
    timeout = 300  # idle keep-alive connections and slow clients

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        log("%s %s" % (self.address_string(), format % args))

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, headers, body):
        self.send_response_only(status)
        names = set()
        for k, v in headers:
            self.send_header(k, v)
            names.add(k.lower())
        if "date" not in names:
            self.send_header("Date", self.date_time_string())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def handle_any(self):
        sim = self.server.sim
        t0 = time.time()
        call = "-"
        try:
            body = self.read_body()
            if self.path.startswith("/_sim/"):
                status, headers, out = self.sim_api(sim, body)
                self.send(status, headers, out)
                return
            req = Request(self.command, self.path, self.headers, body)
            call = req.call_name
            try:
                status, headers, out = sim.handle(req)
            except (OSError, http.client.HTTPException) as e:
                status, headers, out = 502, [("Content-Type", "text/plain")], ("moto unreachable: %s\n" % e).encode()
            self.send(status, headers, out)
            log("%s %s -> %d (%d ms)" % (self.command, call, status, (time.time() - t0) * 1000))
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            log("%s %s: connection error: %s" % (self.command, call, e))
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bad request must never take the server down
            log("%s %s: internal error: %s\n%s" % (self.command, call, e, traceback.format_exc()))
            try:
                self.send(500, [("Content-Type", "text/plain")], ("instance-sim error: %s\n" % e).encode())
            except OSError:
                pass
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any

    def sim_api(self, sim, body):
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        if path == "/_sim/health":
            return 200, [("Content-Type", "text/plain")], b"ok\n"
        if path == "/_sim/calls" and self.command == "GET":
            with sim.lock:
                calls = dict(sorted(sim.calls.items()))
            return json_ok(calls)
        if path == "/_sim/calls/reset" and self.command == "POST":
            with sim.lock:
                sim.calls.clear()
            return json_ok({})
        if path == "/_sim/instances" and self.command == "GET":
            return json_ok(sim.list_instances())
        return 404, [("Content-Type", "text/plain")], b"unknown simulator endpoint\n"


def json_ok(obj):
    return 200, [("Content-Type", "application/json")], (json.dumps(obj, indent=1) + "\n").encode()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def default_socket():
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return "/var/run/docker.sock"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    env = os.environ.get
    ap.add_argument("--port", type=int, default=int(env("LABSHIP_SIM_PORT") or 0) or None,
                    required=not env("LABSHIP_SIM_PORT"), help="[LABSHIP_SIM_PORT]")
    ap.add_argument("--moto", default=env("LABSHIP_SIM_MOTO_URL"), required=not env("LABSHIP_SIM_MOTO_URL"),
                    help="moto_server URL, e.g. http://127.0.0.1:5000 [LABSHIP_SIM_MOTO_URL]")
    ap.add_argument("--image", default=env("LABSHIP_SIM_HOST_IMAGE"), required=not env("LABSHIP_SIM_HOST_IMAGE"),
                    help="sim host image, from tests/rig/sim-host.sh [LABSHIP_SIM_HOST_IMAGE]")
    ap.add_argument("--self-url", default=env("LABSHIP_SIM_SELF_URL"),
                    help="this server's URL as instances see it (default http://127.0.0.1:PORT) [LABSHIP_SIM_SELF_URL]")
    ap.add_argument("--state-dir", default=os.path.join(os.environ.get("LABSHIP_RIG_STATE", "/tmp/labship-rig"), "sim"))
    ap.add_argument("--rig-id", help="label value marking this rig's containers (default: the state dir)")
    ap.add_argument("--docker-socket", default=default_socket())
    ap.add_argument("--default-region", default=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    ap.add_argument("--moto-timeout", type=float, default=300.0)
    ap.add_argument("--console-delay", type=float, default=float(os.environ.get("LABSHIP_SIM_CONSOLE_DELAY") or 0),
                    help="seconds after launch during which GetConsoleOutput has no output")
    ap.add_argument("--invocation-delay", type=float, default=float(os.environ.get("LABSHIP_SIM_INVOCATION_DELAY") or 0),
                    help="seconds after SendCommand during which GetCommandInvocation answers InvocationDoesNotExist")
    args = ap.parse_args()
    args.state_dir = os.path.abspath(args.state_dir)
    args.rig_id = args.rig_id or args.state_dir

    sim = Sim(args)
    sim.remove_stale()
    try:
        server = Server((args.host, args.port), Handler)
    except OSError as e:
        log("cannot listen on %s:%d: %s" % (args.host, args.port, e))
        return 1
    server.sim = sim

    def on_signal(signum, _frame):
        log("signal %d: shutting down" % signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log("listening on http://%s:%d, forwarding to %s, image %s, instances reach us at %s" % (
        args.host, args.port, args.moto, args.image, sim.self_url))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        sim.shutdown_cleanup()
        shutil.rmtree(args.state_dir, ignore_errors=True)
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
