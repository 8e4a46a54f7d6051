#!/usr/bin/env bash
# Self-test of the EC2 instance simulator (tests/rig/instance-sim.py). Run by hand, with the
# rig servers running; not part of the cargo test suite:
#
#   bash tests/rig/setup.sh && bash tests/rig/servers.sh start
#   bash tests/rig/sim-selftest.sh
#
# Uses the rig venv's AWS CLI (v1) against $LABSHIP_TEST_SIM_ENDPOINT: launches one instance
# whose user-data logs in to the rig registry with `aws ecr get-login-password | docker login`,
# starts a labelled `sleep` container (and volume) from the offline base image and prints a
# Jupyter-like token URL; then checks the console output, the public IP, SSM (instance
# information, RunCommand), the call counts, and that TerminateInstances leaves nothing
# behind on the engine. Exit 0 when every check passes.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

readonly DEP=simtest
readonly LABEL="dev.labship.ec2.deployment=$DEP"
readonly REGION="${AWS_DEFAULT_REGION:-eu-west-1}"
readonly TOKEN_RE='http://127\.0\.0\.1:8888/lab\?token=[0-9a-f]{48}'

[ -s "$RIG_STATE/rig.env" ] || rig_die "no $RIG_STATE/rig.env: run tests/rig/servers.sh start first"
# shellcheck source=/dev/null
. "$RIG_STATE/rig.env"
[ -n "${LABSHIP_TEST_SIM_ENDPOINT:-}" ] || rig_die "rig.env has no LABSHIP_TEST_SIM_ENDPOINT (restart the servers)"
for t in jq curl docker base64; do command -v "$t" >/dev/null || rig_die "$t missing"; done

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION="$REGION"
unset AWS_PROFILE AWS_ENDPOINT_URL AWS_SESSION_TOKEN
SIM="$LABSHIP_TEST_SIM_ENDPOINT"
aws() { "$LABSHIP_RIG_VENV/bin/aws" --endpoint-url "$SIM" --output json "$@"; }

passed=0
ok() {
    passed=$((passed + 1))
    rig_log "ok   $*"
}
fail() {
    rig_log "FAIL $*"
    rig_log "last lines of $RIG_STATE/sim.log:"
    tail -n 30 "$RIG_STATE/sim.log" >&2 || true
    exit 1
}

# A raw EC2 Query call (moto and the simulator do not check signatures; the credential scope
# names the service and region). Prints the XML answer.
raw_ec2() {
    curl -sS --max-time 30 -H "Authorization: AWS4-HMAC-SHA256 Credential=testing/$(date -u +%Y%m%d)/$REGION/ec2/aws4_request, SignedHeaders=host, Signature=0" \
        -H 'Content-Type: application/x-www-form-urlencoded; charset=utf-8' \
        --data "Version=2016-11-15&$1" "$SIM/"
}

leftovers() {
    docker ps -aq --filter "label=$LABEL"
    docker volume ls -q --filter "label=$LABEL"
}

instance=""
tmp="$(mktemp -d)"
# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$instance" ]; then
        rig_log "terminating $instance after the failure"
        aws ec2 terminate-instances --instance-ids "$instance" >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap on_exit EXIT

# A previous failed run may have left the deployment's container and volume.
if [ -n "$(leftovers)" ]; then
    rig_log "removing what an earlier run left with label $LABEL"
    # shellcheck disable=SC2046 # ids, one per word
    docker rm -f -v $(docker ps -aq --filter "label=$LABEL") >/dev/null 2>&1 || true
    # shellcheck disable=SC2046
    docker volume rm -f $(docker volume ls -q --filter "label=$LABEL") >/dev/null 2>&1 || true
fi

curl -fsS "$SIM/_sim/health" >/dev/null || fail "GET /_sim/health"
ok "simulator answers on $SIM"
curl -fsS -X POST "$SIM/_sim/calls/reset" >/dev/null || fail "POST /_sim/calls/reset"

cat >"$tmp/user-data.sh" <<EOF
#!/bin/bash
set -euo pipefail
echo "labship: begin $DEP"
if docker info >/dev/null 2>&1; then echo "labship: docker-ready"; else echo "labship: error no docker"; exit 1; fi
aws ecr get-login-password --region $REGION | docker login --username AWS --password-stdin $LABSHIP_TEST_REGISTRY
echo "labship: logged-in $LABSHIP_TEST_REGISTRY"
echo "a line on stderr" >&2
docker volume create --label $LABEL labship-ec2-$DEP-work >/dev/null
docker run -d --name labship-ec2-$DEP --label $LABEL --init \\
    -v labship-ec2-$DEP-work:/work $LABSHIP_TEST_BASE_IMAGE sleep 3600 >/dev/null
echo "labship: started labship-ec2-$DEP"
echo "labship: token http://127.0.0.1:8888/lab?token=\$(od -An -N24 -tx1 /dev/urandom | tr -d ' \\n')"
EOF

# --- launch -----------------------------------------------------------------------------
out="$(aws ec2 run-instances --image-id ami-12345678 --instance-type t3.micro --count 1 \
    --user-data "file://$tmp/user-data.sh" \
    --tag-specifications "ResourceType=instance,Tags=[{Key=labship:deployment,Value=$DEP}]")" ||
    fail "run-instances"
instance="$(jq -r '.Instances[0].InstanceId' <<<"$out")"
[[ "$instance" == i-* ]] || fail "run-instances gave no instance id: $out"
ok "run-instances: $instance"
[ "$(jq -r '.Instances[0].PublicIpAddress' <<<"$out")" = 127.0.0.1 ] || fail "run-instances answer: public IP is not 127.0.0.1"
ok "run-instances answer: public IP 127.0.0.1"

# --- console ----------------------------------------------------------------------------
console=""
deadline=$((SECONDS + 120))
while :; do
    console="$(aws ec2 get-console-output --instance-id "$instance" --latest | jq -r '.Output // ""')"
    if grep -Eq "$TOKEN_RE" <<<"$console"; then break; fi
    if grep -q 'labship: error' <<<"$console"; then fail "the user-data reported an error:"$'\n'"$console"; fi
    [ "$SECONDS" -lt "$deadline" ] || fail "no token line on the console after 120 s; console:"$'\n'"$console"
    sleep 1
done
ok "console shows the token line after $((SECONDS - deadline + 120)) s"
printf '%s\n' "$console" | sed 's/^/    | /' >&2
grep -Eq '^\[ *[0-9]+\.[0-9]{6}\] cloud-init\[2179\]: labship: token http://127\.0\.0\.1:8888/lab\?token=[0-9a-f]{48}$' <<<"$console" ||
    fail "token line not in cloud-init journal format"
ok "token line has the cloud-init console format"
for want in 'labship: docker-ready' 'Login Succeeded' "labship: logged-in $LABSHIP_TEST_REGISTRY" 'a line on stderr'; do
    grep -qF "cloud-init[2179]: $want" <<<"$console" || fail "console lacks '$want'"
done
ok "console has the user-data's stdout and stderr (docker login against the rig registry worked)"

xml="$(raw_ec2 "Action=GetConsoleOutput&InstanceId=$instance")"
grep -q '<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>' <<<"$xml" || fail "raw GetConsoleOutput XML: $xml"
b64="$(sed -n 's:.*<output>\([^<]*\)</output>.*:\1:p' <<<"$xml")"
base64 -d <<<"$b64" | grep -Eq "$TOKEN_RE" || fail "raw GetConsoleOutput: <output> does not decode to the token line"
ok "raw GetConsoleOutput: XML shape and base64 <output>"

# --- describe-instances -----------------------------------------------------------------
out="$(aws ec2 describe-instances --instance-ids "$instance")"
ip="$(jq -r '.Reservations[0].Instances[0].PublicIpAddress' <<<"$out")"
[ "$ip" = 127.0.0.1 ] || fail "describe-instances: PublicIpAddress=$ip"
ok "describe-instances: PublicIpAddress 127.0.0.1, PublicDnsName $(jq -r '.Reservations[0].Instances[0].PublicDnsName' <<<"$out")"

# --- what the user-data made on the engine ----------------------------------------------
[ "$(docker inspect --format '{{.State.Running}}' "labship-ec2-$DEP" 2>/dev/null)" = true ] ||
    fail "container labship-ec2-$DEP is not running"
[ -n "$(docker volume ls -q --filter "label=$LABEL")" ] || fail "no volume with label $LABEL"
ok "the user-data's container and volume exist on the engine (docker-outside-of-docker)"

# --- SSM --------------------------------------------------------------------------------
out="$(aws ssm describe-instance-information --filters "Key=InstanceIds,Values=$instance")"
[ "$(jq -r '.InstanceInformationList[0].PingStatus' <<<"$out")" = Online ] || fail "describe-instance-information: $out"
ok "ssm describe-instance-information: Online"
cid="$(aws ssm send-command --instance-ids "$instance" --document-name AWS-RunShellScript \
    --parameters 'commands=["echo hi"]' | jq -r '.Command.CommandId')"
if [ -z "$cid" ] || [ "$cid" = null ]; then fail "send-command gave no CommandId"; fi
deadline=$((SECONDS + 30))
while :; do
    inv="$(aws ssm get-command-invocation --command-id "$cid" --instance-id "$instance" 2>/dev/null || true)"
    status="$(jq -r '.Status // ""' <<<"${inv:-{\}}")"
    case "$status" in Success | Failed | TimedOut | Cancelled) break ;; esac
    [ "$SECONDS" -lt "$deadline" ] || fail "command $cid still '$status' after 30 s"
    sleep 0.5
done
if [ "$status" != Success ] || [ "$(jq -r .StandardOutputContent <<<"$inv")" != hi ] ||
    [ "$(jq -r .ResponseCode <<<"$inv")" != 0 ]; then
    fail "get-command-invocation: $inv"
fi
ok "ssm send-command + get-command-invocation: Success, stdout 'hi'"
aws ec2 get-console-output --instance-id "$instance" | jq -r '.Output' | grep -qx hi ||
    fail "the command's output is not on the console"
ok "the command's output is appended to the console"

# --- call counts ------------------------------------------------------------------------
calls="$(curl -fsS "$SIM/_sim/calls")"
for c in '"ec2:RunInstances"] == 1' '"ssm:SendCommand"] == 1' '"ecr:GetAuthorizationToken"] == 1' \
    '"ec2:GetConsoleOutput"] >= 2' '"ssm:GetCommandInvocation"] >= 1' '"ec2:DescribeInstances"] == 1'; do
    jq -e ".[$c" <<<"$calls" >/dev/null || fail "call counts: expected .[$c in $calls"
done
ok "call counts: $(jq -c . <<<"$calls")"

# --- terminate --------------------------------------------------------------------------
aws ec2 terminate-instances --instance-ids "$instance" >/dev/null || fail "terminate-instances"
left="$(leftovers)"
[ -z "$left" ] || fail "left after terminate-instances (label $LABEL): $left"
[ -z "$(docker ps -aq --filter "name=^labship-sim-$instance\$")" ] || fail "labship-sim-$instance still exists"
ok "terminate-instances removed the instance container and the deployment's container and volume"
state="$(curl -fsS "$SIM/_sim/instances" | jq -r --arg i "$instance" '.[] | select(.id == $i) | .sim_state + "/" + .container_state')"
[ "$state" = removed/absent ] || fail "/_sim/instances: $instance is $state"
aws ec2 get-console-output --instance-id "$instance" | jq -r '.Output' | grep -Eq "$TOKEN_RE" ||
    fail "the console is gone after terminate"
ok "/_sim/instances shows it removed; its last console stays readable"
instance=""

rig_log "PASS: $passed checks"
