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
  like cloud-init does (bash scripts only) and then stays up like a host. The host scripts'
  state directory (LABSHIP_STATE_DIR) is a directory of this machine mounted at the same
  path, so what they bind-mount into the Jupyter container (the TLS certificate) resolves on
  the engine as it does on a real host. moto launches MinCount instances; EC2 launches
  MaxCount when it has the capacity, so moto is asked for MaxCount (or fewer: launch_at_most
  below). Instances launched together (a class's seats: tags labship:class and
  labship:launch-seats, no labship:deployment) are each the seat of their launch index.
* IMDSv2 of each simulated instance, at /_sim/imds/<instance-id>/latest/...: PUT api/token
  (X-aws-ec2-metadata-token-ttl-seconds 1-21600) gives a session token; GET meta-data/
  instance-id, ami-launch-index and placement/region need it (401 without). The curl shim
  sends the host's http://169.254.169.254/... there.
* GetConsoleOutput (simulated instances): fake boot lines, then the container's output as
  cloud-init journal lines `[%12.6f] cloud-init[2179]: <line>`, then (merged by time) the
  output of simulated SSM commands; last 64 KiB, base64; no <output> while there is nothing.
* TerminateInstances: answered at once, as EC2 does, with the instance shutting-down (moto
  has it terminated): the instance container and the containers and volumes labelled
  dev.labship.ec2.deployment=<its deployment>, and those it made itself (a host of several
  seats: each seat's), are removed meanwhile (bounded), and until they
  are gone DescribeInstances says shutting-down (code 32); terminated after. A
  DescribeInstances filtered on instance-state-name shutting-down (and not terminated) lists
  them too (its first page), with its other filters, as EC2 does.
  A job host (tag labship:job, no labship:deployment) counts as deployment run-<its run id>,
  the label its job's container has.
* StopInstances / StartInstances: after moto, the instance container and its deployment's
  containers (and every container it ran) are stopped (disk, state directory and volumes kept, sessions terminated), and
  started again: the deployment's containers whose restart policy is always or unless-stopped
  (as Docker does at boot), then the instance container, whose boot script does not run the
  user-data a second time (cloud-init's per-instance marker).
* Spot (RunInstances InstanceMarketOptions.MarketType=spot; moto says InstanceLifecycle spot):
  POST /_sim/instances/ID/interrupt [{"capacity": false}] is EC2 interrupting it with
  interruption behaviour stop: the instance stops (as StopInstances), and DescribeInstances
  shows StateReason Server.SpotInstanceShutdown. As on AWS, only EC2 restarts it:
  StartInstances of it is refused (400 IncorrectInstanceState), and EC2 starts it again at
  once, or with "capacity": false when POST /_sim/instances/ID/capacity says capacity
  returned. 400 for an on-demand instance.
* EBS volumes (moto keeps their state): an attached volume is a folder of this machine,
  <state dir>/ebs/volumes/<volume id>, its disk, made on the first AttachVolume and removed
  by DeleteVolume. Each instance container has <state dir>/ebs mounted at the same path and
  LABSHIP_SIM_EBS_DIR=<state dir>/ebs/attached/<instance id>, where AttachVolume puts a link
  <volume id> to the disk, and one named after its Device (dev-sdg for /dev/sdg, /dev/sdf
  to /dev/sdp or xvd*), and DetachVolume, DeleteVolume and TerminateInstances take them
  away: the host scripts find "the attached device" there (they cannot mount block devices
  here; a host of several seats finds each seat's by its device). Its files outlive the instance and follow the volume to the next one. CreateSnapshot
  copies the disk to <state dir>/ebs/snapshots/<snapshot id> (DeleteSnapshot removes it), and
  CreateVolume with a SnapshotId starts the new volume's disk as that copy.
* Instance-initiated shutdown: each instance container has `shutdown` (SHUTDOWN_SHIM, mounted
  at /usr/local/sbin/shutdown): `shutdown -h now` (or +0, `poweroff`-like forms: -h/-P/-r are
  all a halt here) asks this simulator, as the host's ACPI power-off does EC2, to stop the
  instance or, when RunInstances had InstanceInitiatedShutdownBehavior=terminate, to
  terminate it (moto is told first, as the instance itself: POST /_sim/instances/ID/shutdown);
  `shutdown -h +M` schedules that in M minutes (a new schedule replaces the old one) and
  `shutdown -c` cancels it, as systemd's shutdown does. The host's /dev/console is its
  container's output: LABSHIP_WATCH_CONSOLE=/proc/1/fd/1 in its environment.
* Boots: every boot of an instance runs cloud-init's per-boot scripts
  (/var/lib/cloud/scripts/per-boot/*, in name order) before the user-data (first boot only);
  the console shows the current boot only, as EC2's does after a stop and start.
* DescribeInstances / RunInstances answers: a simulated instance's public IP and DNS name are
  its own address in 127.0.0.0/8, where its containers' published ports are (DOCKER_SHIM says
  how); DescribeInstanceInformation's IPAddress too. It keeps it when stopped and started.
* RunInstances and CreateVolume with a ClientToken that succeeded before (same region): moto's
  first answer again and nothing made, or IdempotentParameterMismatch when the parameters
  differ (AWS's idempotency; moto ignores the token). A token of more than 64 ASCII
  characters is refused (400 InvalidParameterValue), as EC2 refuses it.
* SSM: SendCommand (AWS-RunShellScript) runs the commands with `docker exec` in the instance
  container; GetCommandInvocation, ListCommandInvocations (with Details: the output) and
  DescribeInstanceInformation answer for them.
* SSM StartSession (moto has none), for port forwarding only: Target must be a simulated
  instance of the request's region whose container runs, else HTTP 400 TargetNotConnected
  "<id> is not connected."; DocumentName must be AWS-StartPortForwardingSession (else 400
  InvalidDocument); Parameters: portNumber a list of one port number string, localPortNumber
  optional (same shape; "0" = any), nothing else (else 400 InvalidParameters). Answers
  {"SessionId": "<access key>-<17 hex>", "StreamUrl": "wss://ssmmessages.<region>.amazonaws.com
  /v1/data-channel/<SessionId>?role=publish_subscribe", "TokenValue": <96 random characters>}
  and keeps the session (Connected) in memory. Nothing speaks the data channel: the stand-in
  session-manager-plugin (tests/rig/ssm-plugin/) checks the session here and forwards the
  local port to the instance's port on this machine's loopback.
* SSM TerminateSession {SessionId}: the session becomes Terminated; answers {"SessionId": id},
  also for an unknown or already terminated id (as AWS does). Removing an instance (terminate,
  stop, shutdown of the simulator) terminates its sessions too.
* /_sim/health, /_sim/calls (GET; POST /_sim/calls/reset), /_sim/instances (each instance:
  id, deployment, region, address, container, sim_state, container_state, error, created,
  spot, interrupted), /_sim/sessions (below), POST /_sim/instances/ID/interrupt and .../capacity (spot, above).
* Fault injection for chaos tests, by access key (below).

Fault injection. Rules apply to the calls signed with one access key (the "scope": the
Credential=KEY/... of the SigV4 Authorization header or X-Amz-Credential query parameter), so
tests with different keys do not interfere; other calls, the /_sim/ API and the simulated
instances' own calls (signed with INSTANCE_ACCESS_KEY "testing", refused as a scope) are
untouched. JSON in, JSON out; a bad rule set gets HTTP 400 {"error": "<field>: ..."}.

  POST /_sim/faults {"scope": "AKIDCHAOS1", "seed": 7, "pid": 1234, "rules": [RULE, ...]}
      Replaces everything of the scope (rules, its random.Random(seed), counters, fired list,
      pid); seed defaults to 0; pid (optional) is the process signal rules signal.
  POST /_sim/faults/pid {"scope": ..., "pid": N}   registers the pid later (404 if no rules).
  GET /_sim/faults?scope=X  {"scope", "seed", "pid", "rules", "calls": {"ec2:RunInstances": 2,
      ...} (every call signed with the key), "fired": [{"action", "n" (the call's number among
      the scope's calls of that action), "what", "t" (epoch), "rule" (index), "attempt" (of the
      SDK's amz-sdk-request header, or null)}, ...]}; 404 for an unknown scope; without scope:
      {"scopes": {KEY: the same, ...}}.
  DELETE /_sim/faults?scope=X  {"scope", "deleted": true|false}: rules and counters gone.

  RULE = {"action": A, ["param": {NAME: VALUE, ...}], [trigger], and one of  "signal":
          "KILL"|"INT"|"TERM", "when": "before"|"after"[, "pid": N]  |  "delay": SECONDS  |
          "fault": F  |  "launch_at_most": N}
  A: "service:Action" (the call name of /_sim/calls, e.g. "ec2:RunInstances", "iam:CreateRole",
     "ssm:SendCommand"), "service:*", "*" (every call) or "mutating" (the action name starts
     with a word of MUTATING_PREFIXES: Create Delete Put Run Terminate Authorize Revoke Send Add
     Remove Attach Detach Stop Start Associate Disassociate Modify Tag Untag Set Update).
  param: the rule matches only calls whose query/form parameters hold these values (EC2 and
     the other query protocols; e.g. {"InstanceType": "t3.medium"} for RunInstances); the
     value "*" matches any value of a parameter that is there (e.g. {"InstanceId.2": "*"}:
     a describe that names several instances).
  trigger: "nth": N (only the Nth call the rule matches, counted from the POST, from 1) or
     "share": P (each matching call with probability P, one draw of the scope's generator per
     matching share rule, in rule order, under a lock: the same seed and the same sequence of
     calls give the same faults); neither: every matching call. A signal rule fires once.
  signal: os.kill of the rule's pid, else the scope's (waiting up to 10 s for one to be
     registered, then skipped); "before": then the call goes on as usual; "after": the call is
     forwarded (applied), then the signal, then the answer. Fired entries get "pid" and
     "result": "sent" | "no such process" | "permission denied" | "skipped: no pid ...".
  delay: sleep before forwarding (delays of several matching rules add up); "what": "delay S".
  F: "throttle" (answered instead of forwarded): EC2 HTTP 503 RequestLimitExceeded; JSON
     services (X-Amz-Target: ssm, ecr) 400 ThrottlingException; IAM/STS 400 Throttling
     (ErrorResponse, Type Sender). "5xx": HTTP 500, EC2 InternalError, JSON InternalFailure,
     IAM/STS ServiceFailure (Type Receiver). "throttle-or-5xx": one of the two (a draw).
     "lose-response": forwarded (the call is applied, instances launch), then the 5xx answer
     instead of the real one. "capacity": EC2's HTTP 500 InsufficientInstanceCapacity (no
     capacity for the instance type in the zone; not retried by the SDK). "vcpu-quota": EC2's
     HTTP 400 VcpuLimitExceeded (the account's vCPU quota for the type's family is used up).
     "unauthorized": the caller's policy does not allow the call: EC2 HTTP 403
     UnauthorizedOperation, JSON services 400 AccessDeniedException, IAM/STS 403 AccessDenied.
     "instance-not-found" (for EC2 calls): EC2's HTTP 400 InvalidInstanceID.NotFound for the
     instances the call names (what EC2 answers for a few seconds after a launch, until it
     knows them everywhere).
     Only the first fault rule that fires applies; "what" is the fault's kind.
  launch_at_most (action "ec2:RunInstances" only): EC2 has capacity for N instances: the call
     launches at most N of its MaxCount, and is refused (InsufficientInstanceCapacity) when its
     MinCount is more; "what": "launch at most N".
  Order for one call: signals "before", delay, fault or forwarding, signals "after", answer.

SSM sessions (StartSession above), for tests and for the stand-in plugin. JSON out; a session
is {"SessionId", "Target", "TargetAddress" (the instance's own address, where the plugin
connects), "DocumentName", "Parameters", "Reason", "State": "Connected" |
"Terminated", "Region", "AccessKey" (the caller's), "StartDate", "EndDate" (null while
Connected)}, never its TokenValue.

  GET /_sim/sessions                  {"sessions": [SESSION, ...]} (in start order)
  GET /_sim/sessions/ID               SESSION; 404 {"error": ...} for an unknown id
  GET /_sim/sessions/ID?token=VALUE   SESSION with "token_ok": true|false (VALUE is the session's
      TokenValue, compared in constant time): how the plugin verifies a token it was handed
      without the simulator revealing one.

Python standard library only. Logs go to stderr. SIGTERM/SIGINT: removes every container it
started (and their deployment containers/volumes), then exits.
"""

import argparse
import base64
import collections
import datetime
import fcntl
import gzip
import hmac
import http.client
import http.server
import json
import os
import random
import re
import secrets
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
PORT_FORWARDING_DOCUMENT = "AWS-StartPortForwardingSession"

LABEL_INSTANCE = "dev.labship.sim.instance"
LABEL_DEPLOYMENT = "dev.labship.sim.deployment"
LABEL_RIG = "dev.labship.sim.rig"
LABEL_OWNER = "dev.labship.sim.owner"
LABEL_EC2_DEPLOYMENT = "dev.labship.ec2.deployment"
LABEL_ON_INSTANCE = "dev.labship.sim.on-instance"
DEPLOYMENT_TAG = "labship:deployment"
# A class's seats launched by one RunInstances: the class, and the seats in launch-index order.
CLASS_TAG = "labship:class"
LAUNCH_SEATS_TAG = "labship:launch-seats"
JOB_TAG = "labship:job"

# The access key the simulated instances sign with (AWS_ACCESS_KEY_ID of their containers): not
# accepted as a fault scope, so faults never reach the instances' own calls.
INSTANCE_ACCESS_KEY = "testing"

# Fault injection (POST /_sim/faults). The rule action "mutating" matches the calls whose action
# name starts with one of these words (then an upper-case letter, a digit or the end):
# CreateTags, RunInstances, SendCommand, PutImage, AttachRolePolicy, ...; not Describe*, Get*,
# List*, nor ECR's BatchDeleteImage, InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload.
MUTATING_PREFIXES = (
    "Create", "Delete", "Put", "Run", "Terminate", "Authorize", "Revoke", "Send", "Add", "Remove",
    "Attach", "Detach", "Stop", "Start", "Associate", "Disassociate", "Modify", "Tag", "Untag",
    "Set", "Update",
)
_MUTATING_RE = re.compile(r"(?:%s)(?=[A-Z0-9_]|$)" % "|".join(MUTATING_PREFIXES))
FAULT_SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
FAULT_KINDS = ("throttle", "5xx", "throttle-or-5xx", "lose-response", "capacity", "vcpu-quota",
               "unauthorized", "instance-not-found")
FAULT_RULE_FIELDS = ("action", "param", "nth", "share", "signal", "when", "pid", "delay", "fault",
                     "launch_at_most")
FAULT_PID_WAIT = 10.0  # seconds a signal rule waits for its scope's pid to be registered
FAULT_MAX_DELAY = 300.0
FAULT_FIRED_LIMIT = 10000  # entries kept per scope (the oldest half is dropped beyond)

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
done_marker=/var/lib/cloud/instance/boot-finished
rm -f /run/labship-sim-shutdown.pid  # a schedule ends with the boot it was made in
for hook in /var/lib/cloud/scripts/per-boot/*; do
    [ -f "$hook" ] && [ -x "$hook" ] || continue
    "$hook" </dev/null 2>&1 || echo "$(now) - cc_scripts_per_boot.py[WARNING]: Failed to run module scripts-per-boot ($hook)"
done
if [ -e "$done_marker" ]; then
    :  # a start after a stop: cloud-init runs user-data once per instance
elif [ ! -s "$ud" ]; then
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
mkdir -p /var/lib/cloud/instance && touch "$done_marker"
echo "Cloud-init v. 22.2.2 finished at $(date -u '+%a, %d %b %Y %H:%M:%S +0000'). Datasource DataSourceEc2.  Up ${SECONDS}.00 seconds"
exec sleep infinity
"""

# `shutdown` on a simulated host (see the module docstring): now, +M (scheduled), -c (cancel).
SHUTDOWN_SHIM = r"""#!/bin/bash
pidfile=/run/labship-sim-shutdown.pid
when=now
for a in "$@"; do
    case "$a" in
    -c) if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
        echo "Shutdown cancelled."; exit 0 ;;
    now | +0) when=now ;;
    +[0-9]*) when=${a#+} ;;
    -*) ;;
    *) echo "shutdown: unsupported argument $a" >&2; exit 1 ;;
    esac
done
if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
if [ "$when" = now ]; then
    exec curl -fsS -o /dev/null -X POST "$AWS_ENDPOINT_URL/_sim/instances/$LABSHIP_SIM_INSTANCE_ID/shutdown"
fi
setsid bash -c 'sleep "$1"; rm -f "$2"; exec shutdown -h now' _ "$((when * 60))" "$pidfile" </dev/null >/dev/null 2>&1 &
echo "$!" >"$pidfile"
echo "Shutdown scheduled in $when minutes."
"""

# The instance's own loopback. Every simulated instance runs on this machine's network (its
# container has --network host), so two instances could not both publish one port on
# 127.0.0.1 or 0.0.0.0, while on EC2 each instance has addresses of its own. Each instance
# therefore has an address of its own in 127.0.0.0/8 (Instance.address, given to its
# container as LABSHIP_SIM_LOOPBACK and shown by DescribeInstances as its public address), and
# two shims on its PATH (before the real tools, as the shutdown shim is) make it the
# instance's "127.0.0.1":
# * `docker run`/`docker create`: a published port whose address is 0.0.0.0, 127.0.0.1, [::]
#   or [::1], or none, is published on the instance's address instead (options before the
#   image only; -P and --network host, which would take this machine's addresses, are refused),
#   and the container is labelled dev.labship.sim.on-instance=<instance id> (LABEL_ON_INSTANCE:
#   a host of several seats' containers stop and go with it), as is a volume it creates;
# * `curl`: a URL to 127.0.0.1, localhost or [::1] goes to the instance's address (not the URL
#   of this simulator, AWS_ENDPOINT_URL, which the instance reaches on the machine's loopback).
# A process the host runs itself (not in a container) still binds this machine's addresses.
# The curl shim also sends the instance metadata service's address, 169.254.169.254, to this
# simulator's IMDSv2 for the instance (Sim.imds: a session token, then the instance's id and
# launch index).
DOCKER_SHIM = r"""#!/bin/bash
real=/usr/local/bin/docker
addr=${LABSHIP_SIM_LOOPBACK:-}
[ -n "$addr" ] || exec "$real" "$@"
publish() {
    case "$1" in
    0.0.0.0:*:* | 127.0.0.1:*:*) printf '%s:%s' "$addr" "${1#*:}" ;;
    '[::]:'*:* | '[::1]:'*:*) printf '%s:%s' "$addr" "${1#*]:}" ;;
    *.*.*.*:*:* | '['*) printf '%s' "$1" ;;
    *:*) printf '%s:%s' "$addr" "$1" ;;
    *) printf '%s::%s' "$addr" "$1" ;;
    esac
}
refuse() {
    echo "labship-sim: docker $*: a simulated instance has no network of its own for that; publish ports with -p" >&2
    exit 2
}
out=()
# The client's own options, then the command: only run and create (also as `container ...`)
# are changed, and only their options before the image (what follows is the container's).
while [ $# -gt 0 ]; do
    case "$1" in
    -H | --host | -c | --context | --config | -l | --log-level | --tlscacert | --tlscert | --tlskey)
        out+=("$1")
        shift
        if [ $# -gt 0 ]; then out+=("$1"); shift; fi ;;
    -*) out+=("$1"); shift ;;
    *) break ;;
    esac
done
if [ "${1-}" = volume ] && [ "${2-}" = create ] && [ -n "${LABSHIP_SIM_INSTANCE_ID:-}" ]; then
    exec "$real" "${out[@]}" volume create --label "dev.labship.sim.on-instance=$LABSHIP_SIM_INSTANCE_ID" "${@:3}"
fi
if [ "${1-}" = container ]; then out+=("$1"); shift; fi
case "${1-}" in
run | create)
    out+=("$1")
    shift
    # What the instance runs is the instance's: it goes when the instance does.
    if [ -n "${LABSHIP_SIM_INSTANCE_ID:-}" ]; then
        out+=(--label "dev.labship.sim.on-instance=$LABSHIP_SIM_INSTANCE_ID")
    fi ;;
*) exec "$real" "${out[@]}" "$@" ;;
esac
while [ $# -gt 0 ]; do
    a=$1
    shift
    case "$a" in
    --) out+=("$a"); break ;;
    -p | --publish)
        out+=("$a" "$(publish "${1-}")")
        if [ $# -gt 0 ]; then shift; fi ;;
    --publish=*) out+=("--publish=$(publish "${a#--publish=}")") ;;
    -p=*) out+=("-p" "$(publish "${a#-p=}")") ;;
    -p?*) out+=("-p" "$(publish "${a#-p}")") ;;
    -P | --publish-all | --publish-all=true) refuse "$a" ;;
    --network=host | --net=host) refuse "$a" ;;
    --network | --net)
        if [ "${1-}" = host ]; then refuse "$a host"; fi
        out+=("$a")
        if [ $# -gt 0 ]; then out+=("$1"); shift; fi ;;
    --*=*) out+=("$a") ;;
    -d | --detach | --rm | --init | -i | --interactive | -t | --tty | --privileged | \
        --read-only | --no-healthcheck | --oom-kill-disable | -q | --quiet | --disable-content-trust | --sig-proxy)
        out+=("$a") ;;
    -[!-]?*)
        # Short flags together (-it, -dit; the last may take the next word: -itp 80:80,
        # -ite X=1), or one with its value attached (-eX=1, -v/a:/b).
        body=${a#-}
        if [[ $body =~ ^[dit]*P[ditP]*$ ]]; then
            refuse "$a"
        elif [[ $body =~ ^[dit]+$ ]]; then
            out+=("$a")
        elif [[ $body =~ ^[dit]+p$ ]]; then
            out+=("$a" "$(publish "${1-}")")
            if [ $# -gt 0 ]; then shift; fi
        elif [[ $body =~ ^[dit]+[a-zA-Z]$ ]]; then
            out+=("$a")
            if [ $# -gt 0 ]; then out+=("$1"); shift; fi
        else
            out+=("$a")
        fi ;;
    -*)
        out+=("$a")
        if [ $# -gt 0 ]; then out+=("$1"); shift; fi ;;
    *) out+=("$a"); break ;;
    esac
done
exec "$real" "${out[@]}" "$@"
"""
CURL_SHIM = r"""#!/bin/bash
real=/usr/bin/curl
addr=${LABSHIP_SIM_LOOPBACK:-}
[ -n "$addr" ] || exec "$real" "$@"
out=()
re='^(https?://)(127\.0\.0\.1|localhost|\[::1\])([:/?#].*)?$'
imds='^http://169\.254\.169\.254(/.*)?$'
for a in "$@"; do
    own=${AWS_ENDPOINT_URL:-}
    own=${own%/}
    if [[ $a =~ $imds ]] && [ -n "$own" ] && [ -n "${LABSHIP_SIM_INSTANCE_ID:-}" ]; then
        a="$own/_sim/imds/$LABSHIP_SIM_INSTANCE_ID${BASH_REMATCH[1]}"
    elif [[ $a =~ $re ]] && { [ -z "$own" ] || ! [[ $a == "$own" || $a == "$own"[/?#]* ]]; }; then
        a="${BASH_REMATCH[1]}$addr${BASH_REMATCH[3]}"
    fi
    out+=("$a")
done
exec "$real" "${out[@]}"
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
    def __init__(self, iid, deployment, region, user_data, state_dir, address, shutdown_behavior="stop"):
        self.id = iid
        self.address = address  # its own loopback address, its public IP here (see DOCKER_SHIM)
        self.shutdown_behavior = shutdown_behavior  # RunInstances InstanceInitiatedShutdownBehavior
        self.deployment = deployment
        self.region = region
        self.user_data = user_data
        self.container = "labship-sim-" + iid
        self.dir = os.path.join(state_dir, iid)
        self.created = time.time()
        self.started_at = None  # epoch of the container's start (docker inspect)
        self.boot_at = None  # epoch of the latest start after a stop (None: the first boot)
        self.state = "pending"  # pending, running, failed, removed
        self.error = None
        self.extra = []  # (epoch, bytes line): SSM command output written "to the console"
        self.final_console = None  # bytes captured just before removal
        self.lock = threading.Lock()  # guards extra / final_console (short sections only)
        self.busy = threading.Lock()  # held while the container starts and while it is removed
        self.spot = False  # RunInstances InstanceMarketOptions.MarketType=spot
        self.interrupted = False  # stopped by a simulated spot interruption (until EC2 restarts it)
        self.launch_index = 0  # its place in its RunInstances (amiLaunchIndex)
        self.imds_tokens = {}  # IMDSv2 session token -> its expiry (epoch)
        self.shutting_down = False  # TerminateInstances answered; its containers still going

    def add_console(self, line):
        with self.lock:
            self.extra.append((time.time(), line))
            if len(self.extra) > 20000:
                del self.extra[:10000]


class Session:
    """An SSM session (StartSession); nothing behind it but this record (see the plugin)."""

    def __init__(self, session_id, target, address, document, parameters, reason, region, access_key):
        self.id = session_id
        self.target = target
        self.address = address  # the target's own loopback address, where the plugin connects
        self.document = document
        self.parameters = parameters
        self.reason = reason
        self.region = region
        self.access_key = access_key
        self.token = secrets.token_urlsafe(72)  # 96 characters, URL-safe: opaque to everyone
        self.state = "Connected"
        self.start = time.time()
        self.end = None

    def terminate(self):
        """Marks it Terminated (once); True when it was Connected."""
        if self.state == "Terminated":
            return False
        self.state, self.end = "Terminated", time.time()
        return True

    def as_json(self):
        return {"SessionId": self.id, "Target": self.target, "TargetAddress": self.address,
                "DocumentName": self.document,
                "Parameters": self.parameters, "Reason": self.reason, "State": self.state,
                "Region": self.region, "AccessKey": self.access_key, "StartDate": iso_now(self.start),
                "EndDate": iso_now(self.end) if self.end else None}


def port_parameter(params, name, required, lowest):
    """Parameters[name] of a port forwarding session: a list of one decimal port string.
    Returns the error message, or None when it is fine."""
    if name not in params:
        return "Parameter \"%s\" is required." % name if required else None
    v = params[name]
    if (not isinstance(v, list) or len(v) != 1 or not isinstance(v[0], str)
            or not re.fullmatch(r"[0-9]{1,5}", v[0]) or not lowest <= int(v[0]) <= 65535):
        return "Parameter \"%s\" must be a list of one port number from %d to 65535 as a string, got %s." % (
            name, lowest, json.dumps(v))
    return None


# ------------------------------------------------------------------------ fault injection
class FaultRuleError(ValueError):
    """A bad fault rule set; the message starts with the bad field (e.g. `rules[1].share`)."""


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_scope(scope):
    if not isinstance(scope, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", scope):
        raise FaultRuleError("scope: must be an access key id (1 to 128 letters, digits, '_', '.', '-')")
    if scope == INSTANCE_ACCESS_KEY:
        raise FaultRuleError("scope: %r is the access key of the simulated instances (and of the ordinary "
                             "tests); sign the faulted calls with a key of their own" % scope)
    return scope


def check_pid(pid, where):
    if not is_int(pid) or pid <= 1 or pid == os.getpid():
        raise FaultRuleError("%s: must be the id of a process to signal (an integer > 1, not the simulator)" % where)
    return pid


def parse_fault_rule(rule, where):
    """One rule of POST /_sim/faults, checked; returns a copy."""
    if not isinstance(rule, dict):
        raise FaultRuleError("%s: must be an object" % where)
    for k in rule:
        if k not in FAULT_RULE_FIELDS:
            raise FaultRuleError("%s.%s: unknown field (known: %s)" % (where, k, ", ".join(FAULT_RULE_FIELDS)))
    action = rule.get("action")
    if not isinstance(action, str) or not (
            action in ("*", "mutating") or re.fullmatch(r"[a-z0-9-]+:(\*|[A-Za-z0-9]+)", action)):
        raise FaultRuleError('%s.action: must be "*", "mutating", "service:*" or "service:Action" '
                             '(e.g. "ec2:RunInstances")' % where)
    if "param" in rule and not (isinstance(rule["param"], dict) and rule["param"] and all(
            isinstance(k, str) and isinstance(v, str) for k, v in rule["param"].items())):
        raise FaultRuleError('%s.param: must be an object of parameter names to string values '
                             '(e.g. {"InstanceType": "t3.medium"})' % where)
    kinds = [k for k in ("signal", "delay", "fault", "launch_at_most") if k in rule]
    if len(kinds) != 1:
        raise FaultRuleError("%s.%s: a rule has exactly one of signal, delay, fault, launch_at_most" % (
            where, kinds[1] if kinds else "fault"))
    # EC2 with capacity for only so many instances: a RunInstances launches at most this many
    # (and is refused, InsufficientInstanceCapacity, when its MinCount is more).
    if "launch_at_most" in rule and (action != "ec2:RunInstances" or not is_int(rule["launch_at_most"])
                                     or rule["launch_at_most"] < 0):
        raise FaultRuleError('%s.launch_at_most: a count of instances (>= 0), for "ec2:RunInstances" only' % where)
    if "nth" in rule and "share" in rule:
        raise FaultRuleError("%s.share: not with nth (nth picks one call, share a random part of them)" % where)
    if "nth" in rule and (not is_int(rule["nth"]) or rule["nth"] < 1):
        raise FaultRuleError("%s.nth: must be an integer >= 1" % where)
    if "share" in rule and (not is_number(rule["share"]) or not 0 <= rule["share"] <= 1):
        raise FaultRuleError("%s.share: must be a number from 0 to 1" % where)
    if "signal" in rule:
        if rule["signal"] not in FAULT_SIGNALS:
            raise FaultRuleError("%s.signal: must be one of %s" % (where, ", ".join(FAULT_SIGNALS)))
        if rule.get("when") not in ("before", "after"):
            raise FaultRuleError('%s.when: must be "before" or "after"' % where)
        if "pid" in rule:
            check_pid(rule["pid"], "%s.pid" % where)
    else:
        for k in ("when", "pid"):
            if k in rule:
                raise FaultRuleError("%s.%s: only for signal rules" % (where, k))
    if "delay" in rule and (not is_number(rule["delay"]) or not 0 <= rule["delay"] <= FAULT_MAX_DELAY):
        raise FaultRuleError("%s.delay: must be seconds from 0 to %d" % (where, FAULT_MAX_DELAY))
    if "fault" in rule and rule["fault"] not in FAULT_KINDS:
        raise FaultRuleError("%s.fault: must be one of %s" % (where, ", ".join(FAULT_KINDS)))
    return dict(rule)


def parse_fault_rules(data):
    """The body of POST /_sim/faults -> (scope, seed, pid or None, rules); FaultRuleError if bad."""
    if not isinstance(data, dict):
        raise FaultRuleError("body: must be a JSON object")
    for k in data:
        if k not in ("scope", "seed", "rules", "pid"):
            raise FaultRuleError("%s: unknown field (known: scope, seed, rules, pid)" % k)
    scope = check_scope(data.get("scope"))
    seed = data.get("seed", 0)
    if not is_int(seed):
        raise FaultRuleError("seed: must be an integer")
    pid = check_pid(data["pid"], "pid") if "pid" in data else None
    rules = data.get("rules")
    if not isinstance(rules, list):
        raise FaultRuleError("rules: must be a list")
    return scope, seed, pid, [parse_fault_rule(r, "rules[%d]" % i) for i, r in enumerate(rules)]


def rule_matches(action, req):
    if action == "*":
        return True
    if action == "mutating":
        return req.service != "?" and _MUTATING_RE.match(req.action) is not None
    if action.endswith(":*"):
        return req.service == action[:-2]
    return req.call_name == action


def fault_answer(req, kind):
    """What AWS answers when it throttles (kind "throttle") or fails (kind "5xx") the call, in the
    shape of req's protocol: JSON (X-Amz-Target: ssm, ecr), EC2 query, other query (iam, sts)."""
    if kind == "vcpu-quota":
        return ec2_error(400, "VcpuLimitExceeded",
                         "You have requested more vCPU capacity than your current vCPU limit of 32 "
                         "allows for the instance bucket that the specified instance type %s belongs "
                         "to. Please visit http://aws.amazon.com/contact-us/ec2-request to request an "
                         "adjustment to this limit." % req.params.get("InstanceType", "instance"))
    if kind == "instance-not-found":
        numbered = [(m.group(1), int(m.group(2) or 0), v) for k, v in req.params.items()
                    for m in [re.match(r"(InstanceId|ResourceId)(?:\.(\d+))?$", k)] if m]
        named = [v for _, _, v in sorted(numbered)]
        return ec2_error(400, "InvalidInstanceID.NotFound",
                         "The instance ID '%s' does not exist" % (", ".join(named) or "?"))
    if kind == "unauthorized":
        if req.service == "ec2":
            return ec2_error(403, "UnauthorizedOperation", "You are not authorized to perform this operation.")
        if req.headers.get("X-Amz-Target"):
            return json_error(400, "AccessDeniedException", "User is not authorized to perform this operation")
        rid = str(uuid.uuid4())
        return xml_answer(403, rid, "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>"
                          "User is not authorized to perform this operation</Message></Error><RequestId>%s"
                          "</RequestId></ErrorResponse>" % rid)
    if kind == "capacity":
        return ec2_error(500, "InsufficientInstanceCapacity",
                         "We currently do not have sufficient %s capacity in the Availability Zone "
                         "you requested. Our system will be working on provisioning additional "
                         "capacity." % req.params.get("InstanceType", "instance"))
    throttle = kind == "throttle"
    if req.headers.get("X-Amz-Target"):
        if throttle:
            return json_error(400, "ThrottlingException", "Rate exceeded")
        return json_error(500, "InternalFailure", "The request processing has failed because of an unknown error.")
    if req.service == "ec2":
        if throttle:
            return ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.")
        return ec2_error(500, "InternalError", "An internal error has occurred.")
    rid = str(uuid.uuid4())
    status, typ, code, msg = (400, "Sender", "Throttling", "Rate exceeded") if throttle else (
        500, "Receiver", "ServiceFailure", "An internal error has occurred.")
    return xml_answer(status, rid, "<ErrorResponse><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message>"
                      "</Error><RequestId>%s</RequestId></ErrorResponse>" % (typ, code, msg, rid))


class FaultScope:
    """The fault rules of one access key, with its random generator, call counts and fired list."""

    def __init__(self, key, seed, pid, rules):
        self.key = key
        self.seed = seed
        self.rng = random.Random(seed)
        self.pid = pid
        self.rules = rules
        self.seen = [0] * len(rules)  # matching calls per rule
        self.done = [False] * len(rules)  # signal rules fire once
        self.calls = collections.Counter()
        self.fired = []

    def record(self, req, n, rule_index, what):
        m = re.search(r"attempt=(\d+)", req.headers.get("amz-sdk-request") or "")
        rec = {"action": req.call_name, "n": n, "what": what, "t": time.time(), "rule": rule_index,
               "attempt": int(m.group(1)) if m else None}
        self.fired.append(rec)
        if len(self.fired) > FAULT_FIRED_LIMIT:
            del self.fired[:FAULT_FIRED_LIMIT // 2]
        log("fault %s: %s #%d: %s" % (self.key, req.call_name, n, what))
        return rec

    def report(self):
        return {"scope": self.key, "seed": self.seed, "pid": self.pid, "rules": self.rules,
                "calls": dict(sorted(self.calls.items())), "fired": [dict(r) for r in self.fired]}


FaultPlan = collections.namedtuple("FaultPlan", "before after delay fault launch_at_most")


class Faults:
    """Fault injection by access key (scope): see POST /_sim/faults in the module docstring."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)  # notified when a pid is registered
        self.scopes = {}

    # ------------------------------------------------------------ the /_sim/faults API
    def post(self, data):
        scope, seed, pid, rules = parse_fault_rules(data)
        with self.cond:
            self.scopes[scope] = FaultScope(scope, seed, pid, rules)
            self.cond.notify_all()
        log("faults %s: %d rule(s), seed %d" % (scope, len(rules), seed))
        return {"scope": scope, "seed": seed, "pid": pid, "rules": rules}

    def set_pid(self, data):
        if not isinstance(data, dict):
            raise FaultRuleError("body: must be a JSON object")
        scope = check_scope(data.get("scope"))
        pid = check_pid(data.get("pid"), "pid")
        with self.cond:
            s = self.scopes.get(scope)
            if s is None:
                return None
            s.pid = pid
            self.cond.notify_all()
        log("faults %s: pid %d" % (scope, pid))
        return {"scope": scope, "pid": pid}

    def report(self, scope):
        with self.lock:
            if scope is None:
                return {"scopes": {k: s.report() for k, s in sorted(self.scopes.items())}}
            s = self.scopes.get(scope)
            return s.report() if s is not None else None

    def delete(self, scope):
        with self.cond:
            gone = self.scopes.pop(scope, None) is not None
            self.cond.notify_all()
        if gone:
            log("faults %s: deleted" % scope)
        return {"scope": scope, "deleted": gone}

    # ------------------------------------------------------------ applying them to a call
    def around(self, req, dispatch):
        """Answer req through dispatch(req), with the faults its access key's rules call for."""
        plan = self.plan(req)
        if plan is None:
            return dispatch(req)
        for rule, rec in plan.before:
            self.send_signal(req.access_key, rule, rec)
        if plan.delay:
            time.sleep(plan.delay)
        req.launch_at_most = plan.launch_at_most
        if plan.fault in ("throttle", "5xx", "capacity", "vcpu-quota", "unauthorized", "instance-not-found"):
            answer = fault_answer(req, plan.fault)
        else:
            answer = dispatch(req)
            if plan.fault == "lose-response":
                answer = fault_answer(req, "5xx")
        for rule, rec in plan.after:
            self.send_signal(req.access_key, rule, rec)
        return answer

    def plan(self, req):
        """Counts the call in its scope and decides its faults (under the lock, so that the random
        draws follow the call order); None when nothing is to be done."""
        with self.lock:
            scope = self.scopes.get(req.access_key) if req.access_key else None
            if scope is None:
                return None
            scope.calls[req.call_name] += 1
            n = scope.calls[req.call_name]
            before, after, delay, fault, at_most = [], [], 0.0, None, None
            for i, rule in enumerate(scope.rules):
                if not rule_matches(rule["action"], req) or not all(
                        k in req.params and v in ("*", req.params[k])
                        for k, v in rule.get("param", {}).items()):
                    continue
                scope.seen[i] += 1
                if "nth" in rule:
                    hit = scope.seen[i] == rule["nth"]
                elif "share" in rule:
                    hit = scope.rng.random() < rule["share"]  # one draw per matching share rule
                else:
                    hit = True
                if not hit:
                    continue
                if "signal" in rule and not scope.done[i]:
                    scope.done[i] = True
                    rec = scope.record(req, n, i, "signal %s %s" % (rule["signal"], rule["when"]))
                    (before if rule["when"] == "before" else after).append((rule, rec))
                elif "delay" in rule:
                    delay += rule["delay"]
                    scope.record(req, n, i, "delay %g" % rule["delay"])
                elif "launch_at_most" in rule:
                    at_most = rule["launch_at_most"] if at_most is None else min(at_most, rule["launch_at_most"])
                    scope.record(req, n, i, "launch at most %d" % rule["launch_at_most"])
                elif "fault" in rule and fault is None:
                    fault = rule["fault"]
                    if fault == "throttle-or-5xx":
                        fault = "throttle" if scope.rng.random() < 0.5 else "5xx"
                    scope.record(req, n, i, fault)
            if not (before or after or delay or fault or at_most is not None):
                return None
            return FaultPlan(before, after, delay, fault, at_most)

    def send_signal(self, key, rule, rec):
        pid = self.wait_pid(key, rule)
        if pid is None:
            result = "skipped: no pid registered within %g s" % FAULT_PID_WAIT
        else:
            try:
                os.kill(pid, FAULT_SIGNALS[rule["signal"]])
                result = "sent"
            except ProcessLookupError:
                result = "no such process"
            except PermissionError:
                result = "permission denied"
        with self.lock:
            rec["pid"], rec["result"] = pid, result
        log("fault %s: %s: SIG%s to pid %s: %s" % (key, rec["action"], rule["signal"], pid, result))

    def wait_pid(self, key, rule, timeout=FAULT_PID_WAIT):
        """The rule's pid, else its scope's (waiting up to `timeout` for one to be registered)."""
        if rule.get("pid"):
            return rule["pid"]
        end = time.time() + timeout
        with self.cond:
            while True:
                scope = self.scopes.get(key)
                if scope is not None and scope.pid:
                    return scope.pid
                left = end - time.time()
                if left <= 0 or scope is None:
                    return None
                self.cond.wait(left)


class Sim:
    def __init__(self, args):
        self.args = args
        u = urllib.parse.urlsplit(args.moto)
        self.moto_host = u.hostname or "127.0.0.1"
        self.moto_port = u.port or 80
        self.self_url = args.self_url or "http://127.0.0.1:%d" % args.port
        self.instances = {}
        self.invocations = {}
        self.sessions = {}  # SessionId -> Session (all of them, Terminated ones too)
        self.client_tokens = {}  # (region, action, ClientToken) -> (params, moto's answer)
        self.calls = collections.Counter()
        self.faults = Faults()
        self.lock = threading.Lock()
        self.xml_lock = threading.Lock()
        self.owner = str(os.getpid())
        os.makedirs(args.state_dir, exist_ok=True)
        self.shims = {}  # the tool's path on an instance -> the shim's path here
        for name, text, where in (("shutdown", SHUTDOWN_SHIM, "/usr/local/sbin/shutdown"),
                                  ("docker", DOCKER_SHIM, "/usr/local/sbin/docker"),
                                  ("curl", CURL_SHIM, "/usr/local/sbin/curl")):
            path = os.path.abspath(os.path.join(args.state_dir, name))
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
            self.shims[where] = path
        # Instances' own loopback addresses (see DOCKER_SHIM): 127.A.B.C, B.C counting up, A
        # this simulator's alone among those running on this machine (claim_loopback_net).
        self.loopback_net, self.loopback_lock = claim_loopback_net(args.port)
        self.loopbacks = 0

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
        return self.faults.around(req, self.dispatch)

    def dispatch(self, req):
        if req.service == "ec2" or (req.service == "?" and req.params.get("Action")):
            action = req.action
            if action == "GetConsoleOutput":
                inst = self.instances.get(req.params.get("InstanceId", ""))
                if inst is not None:
                    return self.console_response(inst)
            elif action in ("RunInstances", "DescribeInstances", "CreateVolume"):
                token = req.params.get("ClientToken") or ""
                if len(token) > 64 or not token.isascii():
                    return ec2_error(400, "InvalidParameterValue",
                                     "Value (%s) for parameter clientToken is invalid. The ClientToken may be up to 64 ASCII characters." % token)
                again = self.client_token_again(req) if action != "DescribeInstances" else None
                if again is not None:
                    return again
                if action == "RunInstances":
                    refused = self.launch_count(req)
                    if refused is not None:
                        return refused
                status, headers, body = self.forward(req)
                if status == 200 and action == "RunInstances":
                    self.launch(req, body)
                if status == 200 and action == "CreateVolume" and req.params.get("SnapshotId"):
                    self.ebs_restore(req.params["SnapshotId"], body)
                if status == 200 and action != "DescribeInstances" and req.params.get("ClientToken"):
                    with self.lock:
                        self.client_tokens[(req.region, action, req.params["ClientToken"])] = (
                            dict(req.params), (status, headers, body))
                if status == 200 and action == "DescribeInstances":
                    body = self.shutting_down_too(req, body)
                if status == 200:
                    body = self.rewrite_ips(body)
                return status, headers, body
            elif action in ("AttachVolume", "DetachVolume", "DeleteVolume"):
                status, headers, body = self.forward(req)
                if status == 200:
                    self.ebs_after(action, req.params)
                return status, headers, body
            elif action in ("CreateSnapshot", "DeleteSnapshot"):
                status, headers, body = self.forward(req)
                if status == 200:
                    self.ebs_snapshot(action, req.params, body)
                return status, headers, body
            elif action in ("TerminateInstances", "StopInstances", "StartInstances"):
                if action == "StartInstances":
                    ids = [v for k, v in sorted(req.params.items()) if re.fullmatch(r"InstanceId\.\d+", k)]
                    if any(self.instances[i].interrupted for i in ids if i in self.instances):
                        return ec2_error(400, "IncorrectInstanceState",
                                         "Only Amazon EC2 can restart an interrupted Spot Instance.")
                status, headers, body = self.forward(req)
                if status == 200:
                    ids = [v for k, v in sorted(req.params.items()) if re.fullmatch(r"InstanceId\.\d+", k)]
                    insts = [self.instances[i] for i in ids if i in self.instances]
                    if action == "TerminateInstances":
                        self.terminate(insts)
                        body = self.rewrite_ips(body)
                    else:
                        for inst in insts:
                            inst.interrupted = False
                        self.power(insts, action == "StartInstances")
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
            elif op == "ListCommandInvocations":
                return self.ssm_list_command_invocations(req)
            elif op == "StartSession":
                return self.ssm_start_session(req)
            elif op == "TerminateSession":
                return self.ssm_terminate_session(req)
        return self.forward(req)

    # ---------------------------------------------------------------- EC2
    def launch_count(self, req):
        """EC2 launches MaxCount instances when it has the capacity, and at least MinCount or
        none (InsufficientInstanceCapacity); moto launches MinCount. The request moto gets asks
        for as many as EC2 would launch: MaxCount, or fewer when POST /_sim/capacity set how
        many a RunInstances may launch at most (a launch_at_most fault rule). None, or the
        refusal."""
        try:
            low = int(req.params.get("MinCount", "1"))
            high = int(req.params.get("MaxCount", str(low)))
        except ValueError:
            return None  # moto says what is wrong with it
        limit = req.launch_at_most
        count = high if limit is None else min(high, limit)
        if count < low:
            return ec2_error(500, "InsufficientInstanceCapacity",
                             "We currently do not have sufficient capacity in the Availability Zone you requested.")
        if count == low:
            return None
        # MinCount where the request has it: its form body, or its query string.
        def with_count(text):
            form = urllib.parse.parse_qsl(text, keep_blank_values=True)
            if not any(k == "MinCount" for k, _ in form):
                form.append(("MinCount", str(count)))
            return urllib.parse.urlencode([(k, str(count) if k == "MinCount" else v) for k, v in form])
        path, _, query = req.raw_path.partition("?")
        if req.body:
            req.body = with_count(req.body.decode("utf-8", "replace")).encode()
        else:
            req.raw_path = path + "?" + with_count(query)
        req.params["MinCount"] = str(count)
        return None

    def client_token_again(self, req):
        """A RunInstances or CreateVolume whose ClientToken succeeded before (moto ignores the
        token): like AWS, the first answer again (nothing made), or
        IdempotentParameterMismatch when the parameters differ. None for a new token."""
        token = req.params.get("ClientToken")
        with self.lock:
            seen = self.client_tokens.get((req.region, req.action, token)) if token else None
        if seen is None:
            return None
        params, (status, headers, body) = seen
        if params != req.params:
            return ec2_error(400, "IdempotentParameterMismatch",
                             "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
        log("%s: ClientToken %s seen before: its first answer again" % (req.action, token))
        return status, headers, self.rewrite_ips(body)

    # ---------------------------------------------------------------- EBS volumes
    def ebs_dir(self):
        return os.path.abspath(os.path.join(self.args.state_dir, "ebs"))

    def ebs_attached_dir(self, instance_id):
        """Where an instance sees its attached volumes (LABSHIP_SIM_EBS_DIR): one link per
        volume, named by its id, to the volume's folder, and one named after the device it
        was attached as (dev-sdg for /dev/sdg), as a host's udev names its disks."""
        return os.path.join(self.ebs_dir(), "attached", instance_id)

    def ebs_snapshot(self, action, params, body):
        """CreateSnapshot: a copy of the volume's disk as it is (snapshots complete at once in
        moto); DeleteSnapshot: the copy goes."""
        if action == "CreateSnapshot":
            vol = params.get("VolumeId", "")
            m = re.search(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", body)
            if not m or not re.fullmatch(r"vol-[0-9a-f]{8,17}", vol):
                return
            snap = m.group(1).decode()
            disk = os.path.join(self.ebs_dir(), "volumes", vol)
            dest = os.path.join(self.ebs_dir(), "snapshots", snap)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.isdir(disk):
                subprocess.run(["cp", "-a", disk, dest], check=False, timeout=600)
            else:
                os.makedirs(dest, exist_ok=True)
            log("CreateSnapshot: %s of %s" % (snap, vol))
        else:
            snap = params.get("SnapshotId", "")
            if re.fullmatch(r"snap-[0-9a-f]{8,17}", snap):
                shutil.rmtree(os.path.join(self.ebs_dir(), "snapshots", snap), ignore_errors=True)
                log("DeleteSnapshot: %s removed" % snap)

    def ebs_restore(self, snap, body):
        """CreateVolume from a snapshot: the new volume's disk starts as the snapshot's copy."""
        m = re.search(rb"<volumeId>(vol-[0-9a-f]+)</volumeId>", body)
        src = os.path.join(self.ebs_dir(), "snapshots", snap)
        if not m or not re.fullmatch(r"snap-[0-9a-f]{8,17}", snap) or not os.path.isdir(src):
            return
        vol = m.group(1).decode()
        dest = os.path.join(self.ebs_dir(), "volumes", vol)
        if not os.path.exists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            subprocess.run(["cp", "-a", src, dest], check=False, timeout=600)
        log("CreateVolume: %s from snapshot %s" % (vol, snap))

    def ebs_after(self, action, params):
        """After moto applied AttachVolume / DetachVolume / DeleteVolume: the volume's folder
        (its disk, kept until DeleteVolume) appears in or leaves the instance's attached
        folder."""
        vol = params.get("VolumeId", "")
        if not re.fullmatch(r"vol-[0-9a-f]{8,17}", vol):
            return
        disk = os.path.join(self.ebs_dir(), "volumes", vol)
        if action == "AttachVolume":
            inst = params.get("InstanceId", "")
            if not re.fullmatch(r"i-[0-9a-f]{8,17}", inst):
                return
            os.makedirs(disk, exist_ok=True)
            where = self.ebs_attached_dir(inst)
            os.makedirs(where, exist_ok=True)
            link = os.path.join(where, vol)
            if not os.path.lexists(link):
                os.symlink(disk, link)
            device = re.fullmatch(r"/dev/((?:sd|xvd)[f-p])", params.get("Device", ""))
            if device:
                by_device = os.path.join(where, "dev-" + device.group(1))
                if os.path.lexists(by_device):
                    os.unlink(by_device)
                os.symlink(disk, by_device)
            log("AttachVolume: %s -> %s (%s)" % (vol, inst, disk))
            return
        attached = os.path.join(self.ebs_dir(), "attached")
        for inst in os.listdir(attached) if os.path.isdir(attached) else []:
            link = os.path.join(attached, inst, vol)
            if os.path.lexists(link):
                os.unlink(link)
                # The device's name goes with it.
                for name in os.listdir(os.path.join(attached, inst)):
                    by_device = os.path.join(attached, inst, name)
                    if name.startswith("dev-") and os.path.realpath(by_device) == os.path.realpath(disk):
                        os.unlink(by_device)
                log("%s: %s detached from %s" % (action, vol, inst))
        if action == "DeleteVolume":
            shutil.rmtree(disk, ignore_errors=True)
            log("DeleteVolume: %s and its disk removed" % vol)

    def launch(self, req, body):
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            log("RunInstances: cannot parse moto's answer: %s" % e)
            return
        ids = []  # (instance id, launch index)
        for item in root.iter():
            if local(item.tag) == "instancesSet":
                for it in item:
                    iid = child_text(it, "instanceId")
                    if iid:
                        index = child_text(it, "amiLaunchIndex")
                        ids.append((iid, int(index) if index and index.isdigit() else len(ids)))
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
        instance_tags = {}
        for k, v in req.params.items():
            m = re.fullmatch(r"TagSpecification\.(\d+)\.ResourceType", k)
            if m and v == "instance":
                n = m.group(1)
                for kk, vv in req.params.items():
                    mm = re.fullmatch(r"TagSpecification\.%s\.Tag\.(\d+)\.Key" % n, kk)
                    if mm:
                        instance_tags[vv] = req.params.get("TagSpecification.%s.Tag.%s.Value" % (n, mm.group(1)), "")
        deployment = instance_tags.get(DEPLOYMENT_TAG)
        # A job host (labship run --ec2): its container is labelled run-<run id>.
        if deployment is None and JOB_TAG in instance_tags:
            deployment = "run-" + instance_tags[JOB_TAG]
        # Seats launched together: each instance is the seat of its launch index (below).
        seats = instance_tags.get(LAUNCH_SEATS_TAG, "").split()
        class_name = instance_tags.get(CLASS_TAG)
        if deployment is None and not (class_name and seats):
            m = re.search(rb"%s=([A-Za-z0-9][A-Za-z0-9_.-]*)" % re.escape(LABEL_EC2_DEPLOYMENT.encode()), user_data)
            if m:
                deployment = m.group(1).decode()
        region = req.region or self.args.default_region
        for iid, index in ids:
            own = deployment
            if own is None and class_name and index < len(seats):
                own = "%s-%s" % (class_name, seats[index])
            inst = Instance(iid, own, region, user_data, self.args.state_dir, self.new_loopback(),
                            req.params.get("InstanceInitiatedShutdownBehavior") or "stop")
            inst.launch_index = index
            inst.spot = req.params.get("InstanceMarketOptions.MarketType") == "spot"
            inst.busy.acquire()  # released by the start thread
            with self.lock:
                self.instances[iid] = inst
            threading.Thread(target=self.start_container, args=(inst,), name="start-" + iid, daemon=True).start()
        log("RunInstances: %s (deployment %s, region %s, user-data %d bytes)" % (
            " ".join(i for i, _ in ids) or "(no ids)", deployment or " ".join(seats), region, len(user_data)))

    def new_loopback(self):
        """An address of 127.0.0.0/8 no other instance of this simulator has had."""
        with self.lock:
            n = self.loopbacks
            self.loopbacks += 1
        return "127.%d.%d.%d" % (self.loopback_net, (n // 254) % 256, n % 254 + 1)

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
                   "AWS_REGION=" + inst.region, "LABSHIP_SIM_INSTANCE_ID=" + inst.id,
                   "LABSHIP_WATCH_CONSOLE=/proc/1/fd/1", "LABSHIP_SIM_LOOPBACK=" + inst.address]
            # The host scripts' state (token env file, TLS key and certificate) is bind-mounted
            # into the Jupyter container by the engine, which resolves paths on this machine:
            # so the instance keeps it at the same absolute path here and in its container.
            host_state = os.path.abspath(os.path.join(inst.dir, "var-lib-labship"))
            os.makedirs(host_state, exist_ok=True)
            env.append("LABSHIP_STATE_DIR=" + host_state)
            # Attached EBS volumes: folders at the same path here and in the container (the
            # engine resolves a bind of one on this machine).
            ebs = self.ebs_dir()
            os.makedirs(self.ebs_attached_dir(inst.id), exist_ok=True)
            env.append("LABSHIP_SIM_EBS_DIR=" + self.ebs_attached_dir(inst.id))
            cmd = ["run", "-d", "--name", inst.container, *labels, "--network", "host", "--init",
                   "--log-driver", "json-file", "--log-opt", "max-size=20m",
                   "-v", "%s:/var/run/docker.sock" % self.args.docker_socket,
                   "-v", "%s:%s:ro" % (ud_file, USER_DATA_PATH),
                   "-v", "%s:%s" % (host_state, host_state),
                   "-v", "%s:%s" % (ebs, ebs),
                   *(x for where, shim in sorted(self.shims.items()) for x in ("-v", "%s:%s:ro" % (shim, where)))]
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
        if state in ("running", "stopped"):
            cp = docker("logs", "-t", inst.container, timeout=30)
            data = cp.stdout + cp.stderr if cp.returncode == 0 else b""
            # `docker logs` writes the container's stdout and stderr to its own two streams:
            # put the lines back in time order (stable for equal stamps).
            for raw in data.split(b"\n"):
                if not raw:
                    continue
                ts, _, text = raw.partition(b" ")
                t = parse_docker_ts(ts)
                if t is None or (inst.boot_at is not None and t < inst.boot_at):
                    continue  # an earlier boot's: EC2 shows the current boot's console
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
        """Public address (and DNS name) the instance's own loopback address for simulated
        instances in an EC2 XML answer,
        the state reason of a spot interruption, and shutting-down (not moto's terminated)
        for an instance whose containers are still going."""
        with self.lock:
            shutting = {i for i, inst in self.instances.items() if inst.shutting_down}
            sim_ids = {i for i, inst in self.instances.items() if inst.state != "removed"} | shutting
            address = {i: inst.address for i, inst in self.instances.items()}
            interrupted = {i for i, inst in self.instances.items() if inst.interrupted}
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
                ip = address[child_text(item, "instanceId")]
                for child in item:
                    name = local(child.tag)
                    if name in ("instanceState", "currentState") and child_text(item, "instanceId") in shutting:
                        for c in child:
                            if local(c.tag) == "code":
                                c.text, changed = "32", True
                            elif local(c.tag) == "name":
                                c.text = "shutting-down"
                    if name == "ipAddress" and child.text:
                        child.text, changed = ip, True
                    elif name == "dnsName" and child.text:
                        child.text, changed = ip, True
                # A spot interruption: EC2's reason, not the StopInstances moto applied.
                if child_text(item, "instanceId") in interrupted:
                    for child in item:
                        name = local(child.tag)
                        if name == "stateReason":
                            for c in child:
                                if local(c.tag) == "code":
                                    c.text, changed = "Server.SpotInstanceShutdown", True
                                elif local(c.tag) == "message":
                                    c.text = "Server.SpotInstanceShutdown: The instance was stopped because the Spot price exceeded the bid price or capacity was not available."
                        elif name == "reason":
                            child.text, changed = "Service initiated (spot interruption)", True
                for assoc in item.iter():
                    if local(assoc.tag) != "association":
                        continue
                    for c in assoc:
                        if local(c.tag) == "publicIp" and c.text:
                            c.text, changed = ip, True
                        elif local(c.tag) == "publicDnsName" and c.text:
                            c.text, changed = ip, True
            if not changed:
                return body
            return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)

    def power(self, instances, on, deadline=60.0):
        threads = []
        for inst in instances:
            t = threading.Thread(target=self.start_instance if on else self.stop_instance, args=(inst,), daemon=True)
            t.start()
            threads.append(t)
        end = time.time() + deadline
        for t in threads:
            t.join(max(0.0, end - time.time()))

    def deployment_containers(self, inst):
        """The containers of the instance's deployment, and those it ran itself."""
        ids = []
        if inst.deployment:
            cp = docker("ps", "-aq", "--filter", "label=%s=%s" % (LABEL_EC2_DEPLOYMENT, inst.deployment), timeout=20)
            ids += cp.stdout.decode().split()
        cp = docker("ps", "-aq", "--filter", "label=%s=%s" % (LABEL_ON_INSTANCE, inst.id), timeout=20)
        return list(dict.fromkeys(ids + cp.stdout.decode().split()))

    def remove_on_instance(self, inst):
        """The containers and volumes the instance made itself (a host of several seats:
        each seat's), and nothing of the same seats on another instance. The engine is
        shared: a volume of the same name that a container of a later instance of the seat
        uses is kept."""
        label = "label=%s=%s" % (LABEL_ON_INSTANCE, inst.id)
        cp = docker("ps", "-aq", "--filter", label, timeout=20)
        ids = cp.stdout.decode().split()
        if ids:
            r = docker("rm", "-f", "-v", *ids, timeout=60)
            log("%s: removed %d container(s) it ran%s" % (inst.id, len(ids), "" if r.returncode == 0 else ": " + short_err(r)[0]))
        cp = docker("volume", "ls", "-q", "--filter", label, timeout=20)
        vols = [v for v in sorted(set(cp.stdout.decode().split()))
                if not docker("ps", "-aq", "--filter", "volume=" + v, timeout=20).stdout.strip()]
        if vols:
            r = docker("volume", "rm", "-f", *vols, timeout=60)
            log("%s: removed volume(s) %s%s" % (inst.id, " ".join(vols), "" if r.returncode == 0 else ": " + short_err(r)[0]))
        return bool(ids or vols)

    def stop_instance(self, inst):
        """StopInstances: the host powers off; its disk (the container's file system, the state
        directory, the deployment's volumes) stays, its sessions end."""
        acquired = inst.busy.acquire(timeout=60)
        try:
            if inst.state != "running":
                return
            inst.state = "stopped"
            self.terminate_sessions_of(inst.id, "StopInstances")
            ids = self.deployment_containers(inst)
            if ids:
                docker("stop", "-t", "10", *ids, timeout=60)
            cp = docker("stop", "-t", "10", inst.container, timeout=60)
            log("%s: stopped container %s and %d of deployment %s%s" % (
                inst.id, inst.container, len(ids), inst.deployment,
                "" if cp.returncode == 0 else ": " + short_err(cp)[0]))
        finally:
            if acquired:
                inst.busy.release()

    def start_instance(self, inst):
        """StartInstances: the host boots again. Docker brings back the containers whose restart
        policy says so (always, unless-stopped); cloud-init does not run the user-data again
        (BOOT_SCRIPT finds its per-instance marker)."""
        acquired = inst.busy.acquire(timeout=60)
        try:
            if inst.state != "stopped":
                return
            for cid in self.deployment_containers(inst):
                cp = docker("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", cid, timeout=20)
                if cp.stdout.decode().strip() in ("always", "unless-stopped"):
                    docker("start", cid, timeout=60)
            cp = docker("start", inst.container, timeout=60)
            if cp.returncode != 0:
                inst.state = "failed"
                inst.error = "docker start failed: %s" % short_err(cp)[0]
                log("%s: %s" % (inst.id, inst.error))
                return
            cp = docker("inspect", "--format", "{{.State.StartedAt}}", inst.container, timeout=20)
            started = parse_docker_ts(cp.stdout.strip()) if cp.returncode == 0 else None
            with inst.lock:
                inst.boot_at = started or time.time()
                inst.started_at = inst.boot_at
                inst.extra = []
            inst.state = "running"
            log("%s: started container %s again" % (inst.id, inst.container))
        finally:
            if acquired:
                inst.busy.release()

    def as_ec2(self, inst, action):
        """EC2 acting on the instance itself (its power-off, a spot interruption or restart):
        `action` on it, told to moto in the instance's region, signed with the instances' key
        (never a fault scope). Returns (status, body)."""
        return self.ec2_call(inst.region, {"Action": action, "Version": "2016-11-15", "InstanceId.1": inst.id})

    def ec2_call(self, region, params):
        """An EC2 query call of the simulator's own to moto in `region`, signed with the
        instances' key. Returns (status, body)."""
        body = urllib.parse.urlencode(params).encode()
        cred = "Credential=%s/%s/%s/ec2/aws4_request" % (INSTANCE_ACCESS_KEY, time.strftime("%Y%m%d"), region)
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                   "Authorization": "AWS4-HMAC-SHA256 %s, SignedHeaders=host, Signature=0" % cred}
        status, _, answer = self.forward(Request("POST", "/", headers, body))
        return status, answer

    def shutting_down_too(self, req, body):
        """DescribeInstances filtered on instance-state-name with shutting-down and not
        terminated (moto has no instance-state-code filter: it answers 500): moto, which has the instances shown
        shutting-down as terminated already, leaves them out; they are added to the answer's
        first page as EC2 would list them (moto is asked for them by id, with the request's
        other filters and the state filter as terminated; rewrite_ips then says
        shutting-down)."""
        if req.params.get("NextToken"):
            return body
        filters = {}
        for k, v in req.params.items():
            m = re.fullmatch(r"Filter\.(\d+)\.Name", k)
            if m:
                filters.setdefault(int(m.group(1)), [None, []])[0] = v
            m = re.fullmatch(r"Filter\.(\d+)\.Value\.(\d+)", k)
            if m:
                filters.setdefault(int(m.group(1)), [None, []])[1].append(v)
        wanted = {n for n, (name, values) in filters.items()
                  if name == "instance-state-name" and "shutting-down" in values and "terminated" not in values}
        if not wanted:
            return body
        region = req.region or self.args.default_region
        asked = {v for k, v in req.params.items() if re.fullmatch(r"InstanceId\.\d+", k)}
        with self.lock:
            shutting = sorted(i for i, inst in self.instances.items()
                              if inst.shutting_down and inst.region == region and (not asked or i in asked))
        if not shutting:
            return body
        params = {"Action": "DescribeInstances", "Version": req.params.get("Version", "2016-11-15")}
        for j, n in enumerate(sorted(filters), 1):
            name, values = filters[n]
            if n in wanted:
                values = ["terminated"]
            params["Filter.%d.Name" % j] = name
            for m, v in enumerate(values, 1):
                params["Filter.%d.Value.%d" % (j, m)] = v
        for m, i in enumerate(shutting, 1):
            params["InstanceId.%d" % m] = i
        status, extra = self.ec2_call(region, params)
        if status != 200:
            log("DescribeInstances of the instances shutting down: moto answered %d" % status)
            return body
        with self.xml_lock:
            try:
                root, more = ET.fromstring(body), ET.fromstring(extra)
            except ET.ParseError as e:
                log("cannot parse a DescribeInstances answer to add the instances shutting down: %s" % e)
                return body
            ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
            ET.register_namespace("", ns)
            into = next((el for el in root.iter() if local(el.tag) == "reservationSet"), None)
            found = next((el for el in more.iter() if local(el.tag) == "reservationSet"), None)
            if into is None or found is None or len(found) == 0:
                return body
            listed = {child_text(it, "instanceId") for it in root.iter() if local(it.tag) == "item"} - {None}
            for reservation in list(found):
                ids = {child_text(it, "instanceId") for it in reservation.iter() if local(it.tag) == "item"} - {None}
                if ids & listed:
                    continue
                # Shutting down as this answer says it, whatever the instance is by the time
                # rewrite_ips reads the simulator's state again.
                for state in reservation.iter():
                    if local(state.tag) == "instanceState":
                        for c in state:
                            if local(c.tag) == "code":
                                c.text = "32"
                            elif local(c.tag) == "name":
                                c.text = "shutting-down"
                into.append(reservation)
            return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)

    def shutdown_from_host(self, inst):
        """`shutdown -h now` on the host: EC2 sees the power-off and stops (or terminates) the
        instance. moto is told first, with a request of the instance's own region; a
        terminated one is shutting-down until its containers are gone."""
        time.sleep(0.5)  # let the shim's request finish before its container goes
        if inst.state == "removed":
            return
        action = "TerminateInstances" if inst.shutdown_behavior == "terminate" else "StopInstances"
        terminating = action == "TerminateInstances" and not inst.shutting_down
        if terminating:
            inst.shutting_down = True  # remove_instance clears it once the host is gone
        try:
            status, answer = self.as_ec2(inst, action)
        except (OSError, http.client.HTTPException) as e:
            status, answer = None, str(e).encode()
        if status != 200:
            log("%s: shutdown from the host: moto %s -> %s %s" % (inst.id, action, status, answer[:200]))
            if terminating:
                inst.shutting_down = False
            return
        log("%s: shutdown from the host: %s" % (inst.id, action))
        if action == "TerminateInstances":
            self.remove_instance(inst, "shutdown from the host")
        else:
            self.stop_instance(inst)

    def interrupt(self, inst, capacity):
        """A spot interruption (InstanceInterruptionBehavior stop): EC2 stops the instance
        (moto is told, as the instance itself); until a start, DescribeInstances says
        Server.SpotInstanceShutdown. Without capacity, StartInstances is refused until
        POST /_sim/instances/ID/capacity."""
        status, answer = self.as_ec2(inst, "StopInstances")
        if status != 200:
            raise RuntimeError("moto StopInstances -> %d %s" % (status, answer[:200]))
        inst.interrupted = True
        self.terminate_sessions_of(inst.id, "spot interruption")
        self.stop_instance(inst)
        log("%s: spot interruption: stopped" % inst.id)
        if capacity:
            self.capacity_returns(inst)

    def capacity_returns(self, inst):
        """EC2 restarts an interrupted spot instance once capacity returns (moto is told, as
        the instance itself)."""
        if not inst.interrupted:
            return
        status, answer = self.as_ec2(inst, "StartInstances")
        if status != 200:
            raise RuntimeError("moto StartInstances -> %d %s" % (status, answer[:200]))
        inst.interrupted = False
        self.start_instance(inst)
        log("%s: spot capacity returned: EC2 started it again" % inst.id)

    def terminate(self, instances):
        """TerminateInstances: EC2 answers with the instances shutting-down and takes them
        down after; they are shutting-down until their containers are gone."""
        for inst in instances:
            if inst.state != "removed":
                inst.shutting_down = True  # remove_instance clears it once the host is gone
                threading.Thread(target=self.remove_instance, args=(inst, "TerminateInstances"),
                                 daemon=True).start()

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
            if inst.state in ("running", "stopped"):
                try:
                    inst.final_console = self.console_bytes(inst)
                except Exception as e:  # noqa: BLE001
                    log("%s: could not capture the console: %s" % (inst.id, e))
            inst.state = "removed"
            self.terminate_sessions_of(inst.id, why)
            cp = docker("rm", "-f", inst.container, timeout=30)
            if cp.returncode != 0 and b"No such container" not in cp.stderr:
                log("%s: docker rm -f %s: %s" % (inst.id, inst.container, short_err(cp)[0]))
            shutil.rmtree(inst.dir, ignore_errors=True)
            # Terminated: its volumes are detached (moto says so too), their disks stay.
            shutil.rmtree(self.ebs_attached_dir(inst.id), ignore_errors=True)
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
            if self.remove_on_instance(inst):
                time.sleep(1.0)  # as above
                self.remove_on_instance(inst)
            log("%s: %s: removed container %s (deployment %s)" % (inst.id, why, inst.container, inst.deployment))
        finally:
            inst.shutting_down = False  # gone: DescribeInstances may say terminated now
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

    def ssm_list_command_invocations(self, req):
        """The simulated invocations (moto never ran them), filtered by CommandId and
        InstanceId; with Details, each carries its plugin's output as AWS shows it (the first
        2,500 characters of standard output)."""
        data = req.json()
        with self.lock:
            invs = [inv for (cid, iid), inv in self.invocations.items()
                    if data.get("CommandId") in (None, cid) and data.get("InstanceId") in (None, iid)]
        out = []
        for inv in sorted(invs, key=lambda i: i.start):
            j = inv.as_json()
            item = {"CommandId": j["CommandId"], "InstanceId": j["InstanceId"], "Comment": j["Comment"],
                    "DocumentName": j["DocumentName"], "DocumentVersion": j["DocumentVersion"],
                    "RequestedDateTime": inv.start, "Status": j["Status"], "StatusDetails": j["StatusDetails"]}
            if data.get("Details"):
                item["CommandPlugins"] = [{
                    "Name": j["PluginName"], "Status": j["Status"], "StatusDetails": j["StatusDetails"],
                    "ResponseCode": j["ResponseCode"], "Output": j["StandardOutputContent"][:2500],
                    "StandardOutputUrl": "", "StandardErrorUrl": ""}]
            out.append(item)
        return json_response({"CommandInvocations": out})

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
                        "IPAddress": inst.address,
                        "ComputerName": "ip-%s.%s.compute.internal" % (inst.address.replace(".", "-"), inst.region)})
        return json_response({"InstanceInformationList": out})

    def ssm_start_session(self, req):
        data = req.json()
        target = data.get("Target")
        document = data.get("DocumentName")
        params = data.get("Parameters") or {}
        if not isinstance(target, str) or not target:
            return json_error(400, "ValidationException", "1 validation error detected: Value null at 'target' "
                              "failed to satisfy constraint: Member must not be null")
        if document != PORT_FORWARDING_DOCUMENT:
            return json_error(400, "InvalidDocument", "The simulator only has port forwarding sessions: "
                              "DocumentName must be %s, got %s." % (PORT_FORWARDING_DOCUMENT, json.dumps(document)))
        if not isinstance(params, dict):
            return json_error(400, "InvalidParameters", "Parameters must be a map.")
        unknown = sorted(set(params) - {"portNumber", "localPortNumber"})
        if unknown:
            return json_error(400, "InvalidParameters", "Parameter \"%s\" is not defined in %s." % (
                unknown[0], PORT_FORWARDING_DOCUMENT))
        bad = port_parameter(params, "portNumber", True, 1) or port_parameter(params, "localPortNumber", False, 0)
        if bad:
            return json_error(400, "InvalidParameters", bad)
        region = req.region or self.args.default_region
        inst = self.instances.get(target)
        if (inst is None or inst.region != region or inst.state != "running"
                or docker("inspect", "--format", "{{.State.Running}}", inst.container,
                          timeout=20).stdout.strip() != b"true"):
            log("StartSession: %s is not connected (%s)" % (
                target, "unknown here" if inst is None else "region %s, %s" % (inst.region, inst.state)))
            return json_error(400, "TargetNotConnected", "%s is not connected." % target)
        who = re.sub(r"[^A-Za-z0-9_.@-]", "", req.access_key or "") or "labship-sim"
        session = Session("%s-%s" % (who, secrets.token_hex(9)[:17]), target, inst.address, document,
                          {k: list(v) for k, v in params.items()}, data.get("Reason"), region, req.access_key)
        with self.lock:
            self.sessions[session.id] = session
        log("StartSession %s: %s port %s" % (session.id, target, params["portNumber"][0]))
        return json_response({
            "SessionId": session.id, "TokenValue": session.token,
            "StreamUrl": "wss://ssmmessages.%s.amazonaws.com/v1/data-channel/%s?role=publish_subscribe" % (
                region, session.id)})

    def ssm_terminate_session(self, req):
        sid = req.json().get("SessionId")
        if not isinstance(sid, str) or not sid:
            return json_error(400, "ValidationException", "1 validation error detected: Value null at 'sessionId' "
                              "failed to satisfy constraint: Member must not be null")
        with self.lock:
            session = self.sessions.get(sid)
            ended = session is not None and session.terminate()
        if ended:
            log("TerminateSession %s" % sid)
        return json_response({"SessionId": sid})

    def terminate_sessions_of(self, iid, why):
        with self.lock:
            ended = [s.id for s in self.sessions.values() if s.target == iid and s.terminate()]
        if ended:
            log("%s: %s: terminated session(s) %s" % (iid, why, " ".join(ended)))

    def session_report(self, sid=None, token=None):
        """GET /_sim/sessions[/ID[?token=VALUE]]: the JSON, or None for an unknown id."""
        with self.lock:
            if sid is None:
                return {"sessions": [s.as_json() for s in sorted(self.sessions.values(), key=lambda s: s.start)]}
            session = self.sessions.get(sid)
            if session is None:
                return None
            out = session.as_json()
            if token is not None:
                out["token_ok"] = hmac.compare_digest(token.encode(), session.token.encode())
            return out

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

    def imds(self, iid, method, path, headers):
        """The instance metadata service of `iid`, IMDSv2 only (as labship launches them): PUT
        /latest/api/token with a TTL gives a session token, which every GET must carry."""
        text = [("Content-Type", "text/plain")]
        inst = self.instances.get(iid)
        if inst is None:
            return 404, text, b"no simulated instance\n"
        if path == "/latest/api/token":
            ttl = headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if method != "PUT":
                return 405, text, b""
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return 400, text, b""
            token = base64.urlsafe_b64encode(os.urandom(30)).decode()
            with inst.lock:
                inst.imds_tokens[token] = time.time() + int(ttl)
            return 200, text + [("X-aws-ec2-metadata-token-ttl-seconds", ttl)], token.encode()
        if method != "GET":
            return 405, text, b""
        token = headers.get("X-aws-ec2-metadata-token", "")
        with inst.lock:
            valid = inst.imds_tokens.get(token, 0) > time.time()
        if not valid:
            return 401, text, b""
        answers = {"/latest/meta-data/instance-id": inst.id,
                   "/latest/meta-data/ami-launch-index": str(inst.launch_index),
                   "/latest/meta-data/placement/region": inst.region}
        if path not in answers:
            return 404, text, b""
        return 200, text, answers[path].encode()

    def list_instances(self):
        states = self.container_states()
        out = []
        for inst in list(self.instances.values()):
            out.append({"id": inst.id, "deployment": inst.deployment, "region": inst.region,
                        "address": inst.address,
                        "container": inst.container, "sim_state": inst.state,
                        "container_state": states.get(inst.id, "absent"), "error": inst.error,
                        "created": iso_now(inst.created), "spot": inst.spot,
                        "launch_index": inst.launch_index,
                        "interrupted": inst.interrupted})
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


def claim_loopback_net(port):
    """(A, its lock file, held open) for a simulator's instances' addresses 127.A.x.y: the first
    A from one its port picks that no other running simulator of this machine holds (an
    exclusive flock on /tmp/labship-sim-loopback-A.lock, released when the process ends)."""
    first = port % 200
    for k in range(200):
        net = 16 + (first + k) % 200
        path = "/tmp/labship-sim-loopback-%d.lock" % net
        try:
            # Another user's lock file can be read, not written (nor, under
            # fs.protected_regular, opened with O_CREAT): open an existing one read-only.
            try:
                f = open(path, "r")
            except FileNotFoundError:
                f = open(path, "a")
        except OSError:
            continue
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        return net, f
    raise SystemExit("labship-sim: 200 simulators hold every 127.A.0.0/16 of 127.16-215")


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


def xml_answer(status, rid, body):
    return status, [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", rid)], (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()


def ec2_error(status, code, message):
    """An EC2 (query protocol) error answer."""
    rid = str(uuid.uuid4())
    return xml_answer(status, rid, "<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors>"
                      "<RequestID>%s</RequestID></Response>" % (code, xml_escape(message), rid))


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
        self.access_key = m.group(1) if m else None
        self.region = m.group(3) if m else None
        self.launch_at_most = None  # a RunInstances in a scope with a launch_at_most rule
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
        m = re.fullmatch(r"/_sim/imds/(i-[0-9a-f]+)(/.*)", path)
        if m:
            return sim.imds(m.group(1), self.command, m.group(2), self.headers)
        m = re.fullmatch(r"/_sim/instances/(i-[0-9a-f]+)/(interrupt|capacity)", path)
        if m and self.command == "POST":
            inst = sim.instances.get(m.group(1))
            if inst is None:
                return json_ok({"error": "no simulated instance %s" % m.group(1)}, 404)
            if m.group(2) == "capacity":
                try:
                    sim.capacity_returns(inst)
                except (OSError, RuntimeError, http.client.HTTPException) as e:
                    return json_ok({"error": "the restart failed: %s" % e}, 502)
                return json_ok({"instance": inst.id, "capacity": True})
            if not inst.spot:
                return json_ok({"error": "%s is not a spot instance" % inst.id}, 400)
            try:
                opts = json.loads(body or b"{}")
            except ValueError:
                return json_ok({"error": "the body is not JSON"}, 400)
            capacity = opts.get("capacity", True) if isinstance(opts, dict) else True
            if not isinstance(capacity, bool):
                return json_ok({"error": "capacity: true or false"}, 400)
            try:
                sim.interrupt(inst, capacity)
            except (OSError, RuntimeError, http.client.HTTPException) as e:
                return json_ok({"error": "interruption failed: %s" % e}, 502)
            return json_ok({"instance": inst.id, "interrupted": True, "capacity": capacity})
        m = re.fullmatch(r"/_sim/instances/(i-[0-9a-f]+)/shutdown", path)
        if m and self.command == "POST":
            inst = sim.instances.get(m.group(1))
            if inst is None:
                return json_ok({"error": "no simulated instance %s" % m.group(1)}, 404)
            threading.Thread(target=sim.shutdown_from_host, args=(inst,), daemon=True).start()
            return json_ok({"instance": inst.id, "behavior": inst.shutdown_behavior}, 202)
        if (path == "/_sim/sessions" or path.startswith("/_sim/sessions/")) and self.command == "GET":
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query, keep_blank_values=True))
            sid = urllib.parse.unquote(path[len("/_sim/sessions/"):]) if path != "/_sim/sessions" else None
            out = sim.session_report(sid, query.get("token"))
            if out is None:
                return json_ok({"error": "no session %r" % sid}, 404)
            return json_ok(out)
        if path in ("/_sim/faults", "/_sim/faults/pid"):
            try:
                return self.faults_api(sim.faults, path, body)
            except FaultRuleError as e:
                return json_ok({"error": str(e)}, 400)
        return 404, [("Content-Type", "text/plain")], b"unknown simulator endpoint\n"

    def faults_api(self, faults, path, body):
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        scope = query.get("scope")
        if self.command == "POST":
            try:
                data = json.loads(body or b"null")
            except ValueError as e:
                raise FaultRuleError("body: not JSON: %s" % e) from None
            if path == "/_sim/faults":
                return json_ok(faults.post(data))
            out = faults.set_pid(data)
            if out is None:
                return json_ok({"error": "scope: no rules posted for %r" % data.get("scope")}, 404)
            return json_ok(out)
        if path == "/_sim/faults" and self.command == "GET":
            out = faults.report(scope)
            return json_ok(out) if out is not None else json_ok({"error": "scope: no rules posted for %r" % scope}, 404)
        if path == "/_sim/faults" and self.command == "DELETE":
            if not scope:
                raise FaultRuleError("scope: the query parameter is missing (DELETE /_sim/faults?scope=KEY)")
            return json_ok(faults.delete(scope))
        return json_ok({"error": "%s %s: no such simulator endpoint" % (self.command, path)}, 405)


def json_ok(obj, status=200):
    return status, [("Content-Type", "application/json")], (json.dumps(obj, indent=1) + "\n").encode()


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
