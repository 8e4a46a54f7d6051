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
# behind on the engine. Then the fault injector (POST /_sim/faults), with calls signed with the
# access key AKIDSELFTEST: throttling, a lost response, a signal, the same faults for the same seed,
# and that calls signed with another key are left alone. Exit 0 when every check passes.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

readonly DEP=simtest
readonly LABEL="dev.labship.ec2.deployment=$DEP"
readonly REGION="${AWS_DEFAULT_REGION:-eu-west-1}"
readonly TOKEN_RE='http://127\.0\.0\.1:8888/lab\?token=[0-9a-f]{48}'
readonly FKEY=AKIDSELFTEST                 # the fault scope: the access key of the faulted calls
readonly LOST_GROUP=labship-simtest-lost   # the security group made through a lost response

[ -s "$RIG_STATE/rig.env" ] || rig_die "no $RIG_STATE/rig.env: run tests/rig/servers.sh start first"
# shellcheck source=/dev/null
. "$RIG_STATE/rig.env"
[ -n "${LABSHIP_TEST_SIM_ENDPOINT:-}" ] || rig_die "rig.env has no LABSHIP_TEST_SIM_ENDPOINT (restart the servers)"
for t in jq curl docker base64; do command -v "$t" >/dev/null || rig_die "$t missing"; done

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION="$REGION"
unset AWS_PROFILE AWS_ENDPOINT_URL AWS_SESSION_TOKEN
SIM="$LABSHIP_TEST_SIM_ENDPOINT"
aws() { "$LABSHIP_RIG_VENV/bin/aws" --endpoint-url "$SIM" --output json "$@"; }
# The AWS CLI signing with the fault scope's key, with at most $1 attempts.
faws() {
    local attempts="$1"
    shift
    env AWS_ACCESS_KEY_ID="$FKEY" AWS_MAX_ATTEMPTS="$attempts" \
        "$LABSHIP_RIG_VENV/bin/aws" --endpoint-url "$SIM" --output json "$@"
}
# POST a JSON body to the simulator API ($1: path); prints the answer, fails on an HTTP error.
sim_post() { curl -fsS --max-time 30 -X POST -H 'Content-Type: application/json' --data "$2" "$SIM$1"; }

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
# names the access key (RAW_KEY, default testing), the service and the region). Prints the XML
# answer; arguments after the query go to curl.
raw_ec2() {
    local query="$1"
    shift
    curl -sS --max-time 30 -H "Authorization: AWS4-HMAC-SHA256 Credential=${RAW_KEY:-testing}/$(date -u +%Y%m%d)/$REGION/ec2/aws4_request, SignedHeaders=host, Signature=0" \
        -H 'Content-Type: application/x-www-form-urlencoded; charset=utf-8' \
        "$@" --data "Version=2016-11-15&$query" "$SIM/"
}

leftovers() {
    docker ps -aq --filter "label=$LABEL"
    docker volume ls -q --filter "label=$LABEL"
}

instance=""
sleeper=""
tmp="$(mktemp -d)"
# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$instance" ]; then
        rig_log "terminating $instance after the failure"
        aws ec2 terminate-instances --instance-ids "$instance" >/dev/null 2>&1 || true
    fi
    if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
    curl -sS --max-time 10 -X DELETE "$SIM/_sim/faults?scope=$FKEY" >/dev/null 2>&1 || true
    aws ec2 delete-security-group --group-name "$LOST_GROUP" >/dev/null 2>&1 || true
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
inv="$(aws ssm list-command-invocations --command-id "$cid" --details)"
[ "$(jq -r '.CommandInvocations[0].CommandPlugins[0].Output' <<<"$inv")" = hi ] ||
    fail "list-command-invocations --details: $inv"
ok "ssm list-command-invocations --details: the plugin's output"
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

# --- fault injection --------------------------------------------------------------------
fault_start=$SECONDS
fired() { curl -fsS --max-time 10 "$SIM/_sim/faults?scope=$FKEY"; }

code="$(curl -sS -o "$tmp/bad" -w '%{http_code}' -X POST --data \
    "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"ec2:DescribeRegions\",\"share\":2,\"fault\":\"throttle\"}]}" "$SIM/_sim/faults")"
if [ "$code" != 400 ] || ! jq -e '.error | startswith("rules[0].share:")' "$tmp/bad" >/dev/null; then
    fail "a bad rule set: HTTP $code, $(cat "$tmp/bad")"
fi
ok "faults: a bad rule set gets HTTP 400 naming the field ($(jq -r .error "$tmp/bad"))"

# (1) throttling, retried by the CLI, then its error; (5) another key meanwhile untouched.
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"seed\":1,\"rules\":[{\"action\":\"ec2:DescribeRegions\",\"share\":1.0,\"fault\":\"throttle\"}]}" >/dev/null ||
    fail "POST /_sim/faults"
if faws 2 ec2 describe-regions >"$tmp/out" 2>"$tmp/err"; then fail "describe-regions passed a share-1.0 throttle rule"; fi
grep -q 'RequestLimitExceeded' "$tmp/err" || fail "describe-regions under throttling: $(cat "$tmp/err")"
f="$(fired)"
jq -e '.calls == {"ec2:DescribeRegions": 2} and ([.fired[] | [.action, .n, .what, .attempt]]
        == [["ec2:DescribeRegions", 1, "throttle", 1], ["ec2:DescribeRegions", 2, "throttle", 2]])' <<<"$f" >/dev/null ||
    fail "fired after describe-regions under throttling: $f"
ok "faults: throttle share 1.0: the CLI retried once and failed with RequestLimitExceeded; fired lists both attempts"
aws ec2 describe-regions | jq -e '.Regions | length > 0' >/dev/null || fail "describe-regions with the key testing, while $FKEY is throttled"
jq -e '.calls == {"ec2:DescribeRegions": 2}' <<<"$(fired)" >/dev/null || fail "a call with another key was counted in the scope $FKEY"
ok "faults: a call signed with another key is untouched (and not counted in the scope)"

# (2) a lost response: the call is applied, the client gets an error.
aws ec2 delete-security-group --group-name "$LOST_GROUP" >/dev/null 2>&1 || true # an earlier failed run's
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"mutating\",\"share\":1.0,\"fault\":\"lose-response\"}]}" >/dev/null ||
    fail "POST /_sim/faults"
if faws 1 ec2 create-security-group --group-name "$LOST_GROUP" --description 'sim self-test' >"$tmp/out" 2>"$tmp/err"; then
    fail "create-security-group under lose-response succeeded: $(cat "$tmp/out")"
fi
grep -q 'InternalError' "$tmp/err" || fail "create-security-group under lose-response: $(cat "$tmp/err")"
aws ec2 describe-security-groups --group-names "$LOST_GROUP" | jq -e '.SecurityGroups | length == 1' >/dev/null ||
    fail "the security group of the lost response does not exist"
jq -e '[.fired[] | .what] == ["lose-response"]' <<<"$(fired)" >/dev/null || fail "fired after the lost response: $(fired)"
aws ec2 delete-security-group --group-name "$LOST_GROUP" >/dev/null || fail "delete-security-group $LOST_GROUP"
ok "faults: lose-response: the CLI got InternalError, the security group exists all the same (deleted again)"

# (3) SIGKILL to a registered pid after the call. The sleep is not our child (no job report
# from bash when it is killed): gone or a zombie afterwards means it died.
sleeper="$(sh -c 'sleep 60 </dev/null >/dev/null 2>&1 & echo $!')"
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"ec2:DescribeAvailabilityZones\",\"nth\":1,\"when\":\"after\",\"signal\":\"KILL\"}]}" >/dev/null ||
    fail "POST /_sim/faults"
sim_post /_sim/faults/pid "{\"scope\":\"$FKEY\",\"pid\":$sleeper}" >/dev/null || fail "POST /_sim/faults/pid"
faws 1 ec2 describe-availability-zones >/dev/null || fail "describe-availability-zones under a KILL-after rule"
gone=""
for _ in $(seq 20); do
    case "$(ps -o stat= -p "$sleeper" 2>/dev/null || true)" in '' | Z*) gone=1 && break ;; esac
    sleep 0.1
done
[ -n "$gone" ] || fail "pid $sleeper still runs after the KILL-after rule: $(fired)"
sleeper=""
jq -e '[.fired[] | [.what, .result]] == [["signal KILL after", "sent"]]' <<<"$(fired)" >/dev/null || fail "fired after the signal: $(fired)"
ok "faults: signal KILL after describe-availability-zones killed the registered pid; the call was answered"

# (4) the same seed gives the same faults for the same calls.
det_rules="{\"scope\":\"$FKEY\",\"seed\":7,\"rules\":[{\"action\":\"ec2:DescribeRegions\",\"share\":0.3,\"fault\":\"throttle-or-5xx\"}]}"
for run in 1 2; do
    sim_post /_sim/faults "$det_rules" >/dev/null || fail "POST /_sim/faults"
    codes=""
    for _ in $(seq 20); do
        codes+="$(RAW_KEY=$FKEY raw_ec2 Action=DescribeRegions -o /dev/null -w '%{http_code}') "
    done
    printf '%s\n' "$codes" >"$tmp/codes.$run"
    fired | jq -c '[.fired[] | [.n, .what]]' >"$tmp/fired.$run"
done
if ! { cmp -s "$tmp/fired.1" "$tmp/fired.2" && cmp -s "$tmp/codes.1" "$tmp/codes.2"; }; then
    fail "seed 7 gave different faults: $(cat "$tmp/fired.1" "$tmp/codes.1" "$tmp/fired.2" "$tmp/codes.2")"
fi
n_fired="$(jq length "$tmp/fired.1")"
want_codes="$(jq -r '[range(1; 21)] as $all | (map({(.[0] | tostring): (if .[1] == "throttle" then "503" else "500" end)}) | add // {}) as $m
    | $all | map($m[tostring] // "200") | join(" ")' "$tmp/fired.1") "
[ "$codes" = "$want_codes" ] || fail "HTTP statuses $codes do not match the fired list $(cat "$tmp/fired.1")"
if [ "$n_fired" -lt 1 ] || [ "$n_fired" -gt 19 ]; then fail "share 0.3 fired $n_fired times in 20 calls"; fi
ok "faults: seed 7, share 0.3: the same $n_fired faults in both runs of 20 calls ($(tr -d '\n' <"$tmp/codes.1"))"

curl -fsS --max-time 10 -X DELETE "$SIM/_sim/faults?scope=$FKEY" | jq -e '.deleted == true' >/dev/null || fail "DELETE /_sim/faults"
[ "$(curl -sS -o /dev/null -w '%{http_code}' "$SIM/_sim/faults?scope=$FKEY")" = 404 ] || fail "the scope is still there after DELETE"
ok "faults: scope deleted ($((SECONDS - fault_start)) s for the fault checks)"

rig_log "PASS: $passed checks"
