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
# information, RunCommand), SSM port forwarding sessions through the stand-in
# session-manager-plugin (tests/rig/ssm-plugin: `aws ssm start-session` with the plugin, a
# request through the local port to a web server on the instance, TerminateSession, the plugin
# invoked as labship does, its refusals), the call counts, and that TerminateInstances leaves
# nothing behind on the engine (and ends the instance's sessions). Then the fault injector (POST /_sim/faults), with calls signed with the
# access key AKIDSELFTEST: throttling, a lost response, a signal, the same faults for the same seed,
# and that calls signed with another key are left alone. Exit 0 when every check passes.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

readonly DEP=simtest
readonly LABEL="dev.labship.ec2.deployment=$DEP"
readonly REGION="${AWS_DEFAULT_REGION:-eu-west-1}"
readonly TOKEN_RE='http://127\.0\.0\.1:8888/lab\?token=[0-9a-f]{48}'
PROBE="probe-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" # served by the instance on PROBE_PORT
PROBE_PORT="$(rig_free_port)"
SAME_PORT="$(rig_free_port)" # published by two instances at once, each on its own address
readonly PROBE PROBE_PORT SAME_PORT
readonly DEP2=simtest-b LABEL2="dev.labship.ec2.deployment=simtest-b"
readonly FKEY=AKIDSELFTEST                 # the fault scope: the access key of the faulted calls
readonly LOST_GROUP=labship-simtest-lost   # the security group made through a lost response
readonly PLUGIN_DIR="$RIG_DIR/ssm-plugin"  # the stand-in session-manager-plugin
readonly PFS=AWS-StartPortForwardingSession

[ -s "$RIG_STATE/rig.env" ] || rig_die "no $RIG_STATE/rig.env: run tests/rig/servers.sh start first"
# shellcheck source=/dev/null
. "$RIG_STATE/rig.env"
[ -n "${LABSHIP_TEST_SIM_ENDPOINT:-}" ] || rig_die "rig.env has no LABSHIP_TEST_SIM_ENDPOINT (restart the servers)"
for t in jq curl docker base64 timeout; do command -v "$t" >/dev/null || rig_die "$t missing"; done
# Every request is bounded (a later --max-time of a caller wins): a hung answer fails its step
# instead of the whole stage's bound.
curl() { command curl --max-time 60 "$@"; }

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
# terminate-instances $1 as EC2 answers it: shutting-down at once, terminated (its containers
# gone) within 60 s.
# Meanwhile a describe-instances filtered on the states of a live instance lists it
# shutting-down (one filtered on running does not, nor one with another filter it fails), as
# EC2 does.
terminate() {
    local answer state listed running other seen=0 deadline=$((SECONDS + 60))
    answer="$(aws ec2 terminate-instances --instance-ids "$1")" || fail "terminate-instances $1"
    state="$(jq -r '.TerminatingInstances[0].CurrentState.Name' <<<"$answer")"
    [ "$state" = shutting-down ] || fail "terminate-instances $1 answered $state, not shutting-down"
    while :; do
        listed="$(aws ec2 describe-instances --filters Name=instance-state-name,Values=pending,running,shutting-down,stopping,stopped |
            jq -r --arg id "$1" '[.Reservations[].Instances[] | select(.InstanceId == $id) | .State.Name] | join(",")')" ||
            fail "describe-instances --filters (live states)"
        running="$(aws ec2 describe-instances --filters Name=instance-state-name,Values=running |
            jq -r --arg id "$1" '[.Reservations[].Instances[] | select(.InstanceId == $id)] | length')" ||
            fail "describe-instances --filters (running)"
        other="$(aws ec2 describe-instances --filters Name=instance-state-name,Values=shutting-down \
            Name=tag:labship:deployment,Values=not-this-one |
            jq -r --arg id "$1" '[.Reservations[].Instances[] | select(.InstanceId == $id)] | length')" ||
            fail "describe-instances --filters (shutting-down, another tag)"
        [ "$other" = 0 ] || fail "$1 is listed by a filter on a tag it does not have"
        state="$(aws ec2 describe-instances --instance-ids "$1" | jq -r '.Reservations[0].Instances[0].State.Name')" ||
            fail "describe-instances $1"
        [ "$running" = 0 ] || fail "$1 is listed as running while it shuts down"
        case "$listed" in
        shutting-down) seen=1 ;;
        '') ;;
        *) fail "$1 is listed as $listed by a filter on the live states while it shuts down" ;;
        esac
        [ "$state" != terminated ] || break
        [ -n "$listed" ] || fail "$1 is $state but left out by a filter on shutting-down"
        [ "$state" = shutting-down ] || fail "$1 is $state while it shuts down"
        [ "$SECONDS" -lt "$deadline" ] || fail "$1 still $state 60 s after terminate-instances"
        sleep 0.2
    done
    [ "$seen" = 1 ] || fail "$1 was never listed shutting-down by a filter on that state"
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

# A raw SSM JSON call ($1: the operation, $2: the JSON body). Prints the answer, then a line
# with the HTTP status.
raw_ssm() {
    curl -sS --max-time 30 -w '\n%{http_code}\n' -H "X-Amz-Target: AmazonSSM.$1" \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=testing/$(date -u +%Y%m%d)/$REGION/ssm/aws4_request, SignedHeaders=host, Signature=0" \
        --data "$2" "$SIM/"
}
# The plugin's log events: jq -s over them (arguments: jq's, the filter last).
plugin_log() { jq -s -c "$@" "$LABSHIP_SSM_PLUGIN_LOG"; }
# Waits (at most $3 s) until the file $2 has the line $1 while the process $4 runs.
wait_line() {
    local deadline=$((SECONDS + $3))
    until grep -qxF -- "$1" "$2" 2>/dev/null; do
        kill -0 "$4" 2>/dev/null || fail "process $4 ended before printing '$1': $(cat "$2" "${2%.out}.err" 2>/dev/null)"
        [ "$SECONDS" -lt "$deadline" ] || fail "no line '$1' within $3 s in $2: $(cat "$2")"
        sleep 0.1
    done
}
# Waits (at most $2 s) until the process $1 (a child of this shell) ends; its exit status in
# $exit_rc. Fails (status 1) on the timeout.
exit_rc=""
wait_exit() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
    exit_rc=0
    wait "$1" || exit_rc=$?
}

# One instance of the deployment running the user-data file $1; prints RunInstances' answer.
run_instance() {
    aws ec2 run-instances --image-id ami-12345678 --instance-type t3.micro --count 1 \
        --user-data "file://$1" "${@:2}" \
        --tag-specifications "ResourceType=instance,Tags=[{Key=labship:deployment,Value=$DEP}]"
}

leftovers() {
    docker ps -aq --filter "label=$LABEL"
    docker volume ls -q --filter "label=$LABEL"
}

instance=""
instance2=""
batch=""
sleeper=""
bg_pids=""
tmp="$(mktemp -d)"
export LABSHIP_SSM_PLUGIN_LOG="$tmp/plugin.log"
# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
    local rc=$?
    local i
    for i in $instance $instance2 $batch; do
        if [ "$rc" -ne 0 ]; then
            rig_log "terminating $i after the failure"
            aws ec2 terminate-instances --instance-ids "$i" >/dev/null 2>&1 || true
        fi
    done
    if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
    # The AWS CLIs and stand-in plugins this test started (by pid: the plugins' from their log).
    for p in $bg_pids $(jq -s -r 'group_by(.pid)[] | select(all(.event != "exit")) | .[0].pid' \
        "$LABSHIP_SSM_PLUGIN_LOG" 2>/dev/null || true); do
        kill "$p" 2>/dev/null || true
    done
    curl -sS --max-time 10 -X DELETE "$SIM/_sim/faults?scope=$FKEY" >/dev/null 2>&1 || true
    aws ec2 delete-security-group --group-name "$LOST_GROUP" >/dev/null 2>&1 || true
    rm -rf "$tmp"
    exit "$rc"
}
trap on_exit EXIT
# run.sh's bound (timeout) sends TERM: say where the test was before the EXIT trap cleans up.
trap 'rig_log "stopped by SIGTERM at line $LINENO (after $passed checks)"; exit 143' TERM

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
docker run -d --name labship-ec2-$DEP-probe --label $LABEL --init -p 127.0.0.1:$PROBE_PORT:8000 \\
    $LABSHIP_TEST_BASE_IMAGE sh -c 'mkdir -p /tmp/probe && cd /tmp/probe && echo $PROBE >probe.txt &&
        head -c 3000000 /dev/urandom >big.bin && exec python3 -m http.server 8000' >/dev/null
docker run -d --name labship-ec2-$DEP-same --label $LABEL --init -p $SAME_PORT:8000 \\
    $LABSHIP_TEST_BASE_IMAGE sh -c 'mkdir -p /tmp/s && cd /tmp/s && echo $DEP >id && exec python3 -m http.server 8000' >/dev/null
self=none
for _ in \$(seq 100); do self=\$(curl -fsS --max-time 2 http://127.0.0.1:$SAME_PORT/id 2>/dev/null) && break; self=none; sleep 0.2; done
echo "labship: self \$self"
echo "labship: token http://127.0.0.1:8888/lab?token=\$(od -An -N24 -tx1 /dev/urandom | tr -d ' \\n')"
EOF

# --- launch -----------------------------------------------------------------------------
out="$(run_instance "$tmp/user-data.sh")" || fail "run-instances"
instance="$(jq -r '.Instances[0].InstanceId' <<<"$out")"
[[ "$instance" == i-* ]] || fail "run-instances gave no instance id: $out"
ok "run-instances: $instance"
ip="$(jq -r '.Instances[0].PublicIpAddress' <<<"$out")"
address="$(curl -fsS "$SIM/_sim/instances" | jq -r --arg i "$instance" '.[] | select(.id == $i) | .address')"
if ! [[ "$ip" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || [ "$ip" = 127.0.0.1 ] || [ "$ip" != "$address" ]; then
    fail "run-instances answer: public IP $ip, not the instance's own loopback address ($address)"
fi
ok "run-instances answer: public IP $ip, the instance's own loopback address"

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
got="$(jq -r '.Reservations[0].Instances[0].PublicIpAddress' <<<"$out")"
[ "$got" = "$ip" ] || fail "describe-instances: PublicIpAddress=$got, run-instances said $ip"
ok "describe-instances: PublicIpAddress $ip, PublicDnsName $(jq -r '.Reservations[0].Instances[0].PublicDnsName' <<<"$out")"

# --- what the user-data made on the engine ----------------------------------------------
[ "$(docker inspect --format '{{.State.Running}}' "labship-ec2-$DEP" 2>/dev/null)" = true ] ||
    fail "container labship-ec2-$DEP is not running"
[ -n "$(docker volume ls -q --filter "label=$LABEL")" ] || fail "no volume with label $LABEL"
ok "the user-data's container and volume exist on the engine (docker-outside-of-docker)"

# --- SSM --------------------------------------------------------------------------------
out="$(aws ssm describe-instance-information --filters "Key=InstanceIds,Values=$instance")"
jq -e --arg ip "$ip" '.InstanceInformationList[0] | .PingStatus == "Online" and .IPAddress == $ip' <<<"$out" >/dev/null ||
    fail "describe-instance-information: $out"
ok "ssm describe-instance-information: Online, at $ip"
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

# --- SSM port forwarding sessions (the stand-in session-manager-plugin) -------------------
ssm_start=$SECONDS
out="$(raw_ssm StartSession '{"Target":"i-0000000000000dead","DocumentName":"'$PFS'","Parameters":{"portNumber":["80"]}}')"
if ! { [ "$(tail -n 1 <<<"$out")" = 400 ] && jq -e '. == {"__type": "TargetNotConnected",
        "message": "i-0000000000000dead is not connected."}' <<<"$(head -n 1 <<<"$out")" >/dev/null; }; then
    fail "StartSession on an unknown instance: $out"
fi
out="$(raw_ssm StartSession '{"Target":"'"$instance"'","DocumentName":"AWS-StartSSHSession"}')"
jq -e '.__type == "InvalidDocument"' <<<"$(head -n 1 <<<"$out")" >/dev/null || fail "StartSession, another document: $out"
out="$(raw_ssm StartSession '{"Target":"'"$instance"'","DocumentName":"'$PFS'","Parameters":{"portNumber":[80]}}')"
jq -e '.__type == "InvalidParameters"' <<<"$(head -n 1 <<<"$out")" >/dev/null || fail "StartSession, a numeric portNumber: $out"
ok "ssm StartSession: TargetNotConnected (unknown instance), InvalidDocument, InvalidParameters"

# (1) The AWS CLI's way: it calls StartSession, then runs the plugin (first on PATH).
[ "$(PATH="$PLUGIN_DIR:$PATH" session-manager-plugin --version)" = 1.2.764.0 ] || fail "the stand-in is not first on PATH"
local_port="$(rig_free_port)"
env PATH="$PLUGIN_DIR:$PATH" "$LABSHIP_RIG_VENV/bin/aws" --endpoint-url "$SIM" ssm start-session --target "$instance" \
    --document-name $PFS --parameters "portNumber=$PROBE_PORT,localPortNumber=$local_port" \
    >"$tmp/cli.out" 2>"$tmp/cli.err" &
cli_pid=$!
bg_pids+=" $cli_pid"
wait_line 'Waiting for connections...' "$tmp/cli.out" 30 "$cli_pid"
sid="$(sed -n 's/^Starting session with SessionId: //p' "$tmp/cli.out")"
[[ "$sid" =~ ^testing-[0-9a-f]{17}$ ]] || fail "start-session: no SessionId line: $(cat "$tmp/cli.out")"
grep -qxF "Port $local_port opened for sessionId $sid." "$tmp/cli.out" || fail "start-session: no 'Port ... opened' line: $(cat "$tmp/cli.out")"
got=""
for _ in $(seq 50); do # the instance's web server may still be starting
    got="$(curl -sS --max-time 5 "http://127.0.0.1:$local_port/probe.txt" 2>/dev/null)" && break
    sleep 0.2
done
[ "$got" = "$PROBE" ] || fail "GET through the forwarded port $local_port: '$got'"
want="$(docker exec "labship-ec2-$DEP-probe" sha256sum /tmp/probe/big.bin | cut -c1-64)"
[ "$(curl -fsS --max-time 20 "http://127.0.0.1:$local_port/big.bin" | sha256sum | cut -c1-64)" = "$want" ] ||
    fail "3 MB through the forwarded port: different bytes"
grep -qxF "Connection accepted for session [$sid]" "$tmp/cli.out" || fail "no 'Connection accepted' line: $(cat "$tmp/cli.out")"
ok "ssm start-session (AWS CLI + stand-in plugin): $sid, a file and 3 MB from the instance's port $PROBE_PORT through 127.0.0.1:$local_port"
s="$(curl -fsS "$SIM/_sim/sessions/$sid")"
jq -e --arg i "$instance" --arg p "$PROBE_PORT" --arg l "$local_port" '.State == "Connected" and .Target == $i
        and .Parameters == {"portNumber": [$p], "localPortNumber": [$l]} and .EndDate == null and (has("TokenValue") | not)' \
    <<<"$s" >/dev/null || fail "/_sim/sessions/$sid: $s"
# shellcheck disable=SC2016 # jq variables
plugin_log --arg s "$sid" --arg sim "$SIM" --arg r "$REGION" --argjson p "$PROBE_PORT" --argjson l "$local_port" \
    '[.[] | select(.session_id == $s and .event == "start")][0]
        | .argv[1:] == ["AWS_SSM_START_SESSION_RESPONSE", $r, "StartSession", "", .argv[5], $sim]
          and .env_has_response and .port == $p and .local_port == $l' | grep -qx true ||
    fail "the plugin's start event: $(cat "$LABSHIP_SSM_PLUGIN_LOG")"
ok "the CLI ran the plugin with the response in \$AWS_SSM_START_SESSION_RESPONSE (argv: the name); /_sim/sessions: Connected, no token"
aws ssm terminate-session --session-id "$sid" | jq -e --arg s "$sid" '.SessionId == $s' >/dev/null || fail "terminate-session $sid"
wait_exit "$cli_pid" 5 || fail "start-session still runs 5 s after terminate-session: $(cat "$tmp/cli.out" "$tmp/cli.err")"
[ "$exit_rc" = 0 ] || fail "start-session exited $exit_rc after terminate-session: $(cat "$tmp/cli.err")"
curl -fsS "$SIM/_sim/sessions" | jq -e --arg s "$sid" '[.sessions[] | select(.SessionId == $s and .State == "Terminated" and .EndDate != null)] | length == 1' \
    >/dev/null || fail "/_sim/sessions after terminate-session: $(curl -fsS "$SIM/_sim/sessions")"
# shellcheck disable=SC2016 # jq variables
plugin_log --arg s "$sid" '[.[] | select(.session_id == $s) | .event] == ["start", "listening", "connection", "connection", "exit"]
        and ([.[] | select(.session_id == $s and .event == "exit")][0] | .why == "terminated" and .rc == 0)' | grep -qx true ||
    fail "the plugin's events: $(cat "$LABSHIP_SSM_PLUGIN_LOG")"
out="$(raw_ssm TerminateSession '{"SessionId":"'"$sid"'"}')"
[ "$(tail -n 1 <<<"$out")" = 200 ] || fail "TerminateSession of a terminated session: $out"
ok "terminate-session: the plugin (and the CLI) exited 0 by itself; /_sim/sessions shows Terminated; terminating again is fine"

# (2) labship's way: StartSession itself, then the plugin with the response in the environment.
out="$(raw_ssm StartSession '{"Target":"'"$instance"'","DocumentName":"'$PFS'","Parameters":{"portNumber":["'"$PROBE_PORT"'"]}}')"
resp="$(head -n 1 <<<"$out")"
token="$(jq -r .TokenValue <<<"$resp")"
sid2="$(jq -r .SessionId <<<"$resp")"
if ! { [ "$(tail -n 1 <<<"$out")" = 200 ] && [[ "$sid2" =~ ^testing-[0-9a-f]{17}$ ]] && [ "${#token}" -ge 80 ] &&
    [ "$(jq -r .StreamUrl <<<"$resp")" = "wss://ssmmessages.$REGION.amazonaws.com/v1/data-channel/$sid2?role=publish_subscribe" ]; }; then
    fail "raw StartSession: $out"
fi
req='{"Target":"'"$instance"'","DocumentName":"'$PFS'","Parameters":{"portNumber":["'"$PROBE_PORT"'"]}}'
# The plugin when it should exit by itself: bounded, so a hang fails here and says so (exit 124).
plugin() { timeout --kill-after=5 30 "$PLUGIN_DIR/session-manager-plugin" "$@"; }
rc=0
plugin "$resp" "$REGION" StartSession "" "$req" "$SIM" >"$tmp/p.out" 2>"$tmp/p.err" || rc=$?
if [ "$rc" != 2 ] || ! grep -q 'must come through the environment' "$tmp/p.err"; then
    fail "the plugin with the response in argv: exit $rc, $(cat "$tmp/p.err")"
fi
bad="$(jq -c '.TokenValue = "x" + .TokenValue[1:]' <<<"$resp")"
rc=0
AWS_SSM_START_SESSION_RESPONSE="$bad" plugin AWS_SSM_START_SESSION_RESPONSE "$REGION" StartSession "" "$req" "$SIM" \
    >>"$tmp/p.out" 2>>"$tmp/p.err" || rc=$?
if [ "$rc" != 1 ] || ! grep -q 'is not the one StartSession gave' "$tmp/p.err"; then
    fail "the plugin with a wrong token: exit $rc, $(cat "$tmp/p.err")"
fi
ok "the plugin refuses the response in argv (exit 2) and a wrong token (exit 1)"
AWS_SSM_START_SESSION_RESPONSE="$resp" "$PLUGIN_DIR/session-manager-plugin" AWS_SSM_START_SESSION_RESPONSE "$REGION" StartSession "" "$req" "$SIM" \
    >"$tmp/p2.out" 2>"$tmp/p2.err" &
p2_pid=$!
bg_pids+=" $p2_pid"
wait_line 'Waiting for connections...' "$tmp/p2.out" 20 "$p2_pid"
p2_port="$(sed -n "s/^Port \([0-9]*\) opened for sessionId $sid2\.\$/\1/p" "$tmp/p2.out")"
[ "$(curl -sS --max-time 5 "http://127.0.0.1:${p2_port:-0}/probe.txt")" = "$PROBE" ] || fail "GET through the plugin's port ${p2_port:-?}"
ok "the plugin as labship runs it: a port of its choice ($p2_port), the instance's file through it"

# (3) A plugin too old (or unparseable) for the environment variable: the CLI passes the
# response in argv, and the stand-in refuses.
rc=0
env PATH="$PLUGIN_DIR:$PATH" LABSHIP_SSM_PLUGIN_VERSION=1.2.0.0-labship-stand-in "$LABSHIP_RIG_VENV/bin/aws" --endpoint-url "$SIM" \
    ssm start-session --target "$instance" --document-name $PFS --parameters "portNumber=$PROBE_PORT" \
    >"$tmp/old.out" 2>"$tmp/old.err" || rc=$?
sid3="$(plugin_log -r '[.[] | select(.event == "exit" and .why == "refused: response in argv")][-1].session_id')"
if [ "$rc" = 0 ] || ! [[ "$sid3" =~ ^testing- ]] || [ "$sid3" = "$sid2" ]; then
    fail "start-session with an old plugin version: exit $rc, $(cat "$tmp/old.err")"
fi
ok "with a plugin version it cannot parse, the CLI passes the response in argv: refused (exit 2, session $sid3)"
for f in "$LABSHIP_SSM_PLUGIN_LOG" "$tmp"/*.out "$tmp"/*.err; do
    if grep -qF -- "${token:-none}" "$f"; then fail "the session token is in $f"; fi
done
grep -q '"argv": \[[^]]*<redacted>' "$LABSHIP_SSM_PLUGIN_LOG" || fail "no redacted argv in the plugin log"
ok "the token is nowhere in the plugin's log and output (the argv JSON is logged with the token redacted) ($((SECONDS - ssm_start)) s for the session checks)"

# --- call counts ------------------------------------------------------------------------
calls="$(curl -fsS "$SIM/_sim/calls")"
for c in '"ec2:RunInstances"] == 1' '"ssm:SendCommand"] == 1' '"ecr:GetAuthorizationToken"] == 1' \
    '"ec2:GetConsoleOutput"] >= 2' '"ssm:GetCommandInvocation"] >= 1' '"ec2:DescribeInstances"] == 1'; do
    jq -e ".[$c" <<<"$calls" >/dev/null || fail "call counts: expected .[$c in $calls"
done
ok "call counts: $(jq -c . <<<"$calls")"

# --- one RunInstances for two seats: each asks IMDSv2 for its launch index ------------------
cat >"$tmp/imds.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
url=http://169.254.169.254/latest
code=$(curl -sS -o /dev/null -w '%{http_code}' "$url/meta-data/ami-launch-index")
token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$url/api/token")
index=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$url/meta-data/ami-launch-index")
id=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$url/meta-data/instance-id")
echo "labship: imds index=$index id=$id without-token=$code"
EOF
out="$(aws ec2 run-instances --image-id ami-12345678 --instance-type t3.micro --count 1:2 \
    --user-data "file://$tmp/imds.sh" \
    --tag-specifications "ResourceType=instance,Tags=[{Key=labship:class,Value=$DEP-c},{Key=labship:launch-seats,Value=a b}]")" ||
    fail "run-instances --count 1:2"
batch="$(jq -r '[.Instances[].InstanceId] | join(" ")' <<<"$out")"
for i in $batch; do
    index="$(jq -r --arg i "$i" '.Instances[] | select(.InstanceId == $i) | .AmiLaunchIndex' <<<"$out")"
    deadline=$((SECONDS + 60))
    until aws ec2 get-console-output --instance-id "$i" | jq -r '.Output // ""' | grep -q 'labship: imds '; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$i: no IMDS line on its console after 60 s"
        sleep 1
    done
    line="$(aws ec2 get-console-output --instance-id "$i" | jq -r '.Output' | grep -o 'labship: imds .*')"
    [ "$line" = "labship: imds index=$index id=$i without-token=401" ] || fail "$i (launch index $index): $line"
    seat="$(curl -fsS "$SIM/_sim/instances" | jq -r --arg i "$i" '.[] | select(.id == $i) | .deployment')"
    [ "$seat" = "$DEP-c-$(cut -d' ' -f$((index + 1)) <<<"a b")" ] || fail "$i (launch index $index) is the simulator's $seat"
done
[ "$(wc -w <<<"$batch")" = 2 ] || fail "run-instances --count 1:2 gave $batch"
ok "one run-instances of 1 to 2, two instances: each reads its own id and launch index from IMDSv2 (none without a token) and is its seat"
# Capacity for one instance a launch (a scope's launch_at_most rule): at least two is refused,
# and nothing is launched.
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"ec2:RunInstances\",\"launch_at_most\":1}]}" >/dev/null ||
    fail "POST /_sim/faults (launch_at_most)"
before="$(curl -fsS "$SIM/_sim/instances" | jq length)"
if AWS_ACCESS_KEY_ID=$FKEY aws ec2 run-instances --image-id ami-12345678 --instance-type t3.micro --count 2 >"$tmp/refused" 2>&1 ||
    ! grep -q InsufficientInstanceCapacity "$tmp/refused"; then
    fail "run-instances --count 2 with capacity for 1: $(cat "$tmp/refused")"
fi
curl -fsS --max-time 10 -X DELETE "$SIM/_sim/faults?scope=$FKEY" >/dev/null || fail "DELETE /_sim/faults"
[ "$(curl -fsS "$SIM/_sim/instances" | jq length)" = "$before" ] || fail "a refused run-instances launched something"
ok "with capacity for one instance a launch, run-instances --count 2 is refused (InsufficientInstanceCapacity) and launches nothing"
# An instance EC2 does not know yet (the instance-not-found fault, once): create-tags is
# refused with InvalidInstanceID.NotFound naming it and tags nothing; the next call tags it.
first="${batch%% *}"
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"ec2:CreateTags\",\"nth\":1,\"fault\":\"instance-not-found\"}]}" >/dev/null ||
    fail "POST /_sim/faults (instance-not-found)"
if faws 1 ec2 create-tags --resources "$first" --tags Key=selftest,Value=1 >"$tmp/unknown" 2>&1 ||
    ! grep -q "InvalidInstanceID.NotFound.*$first" "$tmp/unknown"; then
    fail "create-tags with the instance-not-found fault: $(cat "$tmp/unknown")"
fi
tagged() { aws ec2 describe-instances --instance-ids "$first" | jq -r '[.Reservations[].Instances[].Tags[]? | select(.Key == "selftest")] | length'; }
[ "$(tagged)" = 0 ] || fail "create-tags refused as instance-not-found tagged $first"
faws 1 ec2 create-tags --resources "$first" --tags Key=selftest,Value=1 || fail "create-tags after the fault"
[ "$(tagged)" = 1 ] || fail "create-tags after the fault did not tag $first"
curl -fsS --max-time 10 -X DELETE "$SIM/_sim/faults?scope=$FKEY" >/dev/null || fail "DELETE /_sim/faults"
ok "create-tags of an instance EC2 does not know yet (instance-not-found) is refused with InvalidInstanceID.NotFound naming it, and the next one tags it"
# shellcheck disable=SC2086 # ids, one per word
aws ec2 terminate-instances --instance-ids $batch >/dev/null || fail "terminate-instances $batch"
deadline=$((SECONDS + 60))
until [ "$(curl -fsS "$SIM/_sim/instances" | jq --arg b "$batch" '[.[] | select(.id as $i | $b | split(" ") | index($i))
        | select(.container_state != "absent")] | length')" = 0 ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the containers of $batch are still there 60 s after terminate-instances"
    sleep 0.5
done
batch=""

# --- each instance its own address -------------------------------------------------------
# Two instances publish one port at once (the first with no address, the second on 0.0.0.0):
# each serves its own file on its own address, and each host's curl of 127.0.0.1 (localhost)
# reaches its own (instance-sim.py's DOCKER_SHIM and CURL_SHIM).
[ "$(docker port "labship-ec2-$DEP-probe" 8000/tcp)" = "$ip:$PROBE_PORT" ] ||
    fail "the probe's 127.0.0.1:$PROBE_PORT is published at $(docker port "labship-ec2-$DEP-probe" 8000/tcp), not $ip:$PROBE_PORT"
grep -qF "cloud-init[2179]: labship: self $DEP" <<<"$console" || fail "the host's curl of 127.0.0.1:$SAME_PORT did not reach its own container"
cat >"$tmp/user-data-b.sh" <<UD
#!/bin/bash
set -euo pipefail
docker run -d --name labship-ec2-$DEP2 --label $LABEL2 --init -p 0.0.0.0:$SAME_PORT:8000 \\
    $LABSHIP_TEST_BASE_IMAGE sh -c 'mkdir -p /tmp/s && cd /tmp/s && echo $DEP2 >id && exec python3 -m http.server 8000' >/dev/null
self=none
for _ in \$(seq 100); do self=\$(curl -fsS --max-time 2 http://localhost:$SAME_PORT/id 2>/dev/null) && break; self=none; sleep 0.2; done
echo "labship: self \$self"
echo "labship: ready"
UD
out="$(aws ec2 run-instances --image-id ami-12345678 --instance-type t3.micro --count 1 \
    --user-data "file://$tmp/user-data-b.sh" \
    --tag-specifications "ResourceType=instance,Tags=[{Key=labship:deployment,Value=$DEP2}]")" || fail "run-instances (second)"
instance2="$(jq -r '.Instances[0].InstanceId' <<<"$out")"
ip2="$(jq -r '.Instances[0].PublicIpAddress' <<<"$out")"
if ! [[ "$ip2" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || [ "$ip2" = "$ip" ] || [ "$ip2" = 127.0.0.1 ]; then
    fail "the second instance's public IP is $ip2 (the first's: $ip)"
fi
deadline=$((SECONDS + 120))
until aws ec2 get-console-output --instance-id "$instance2" | jq -r '.Output // ""' >"$tmp/console-b" &&
    grep -q 'labship: ready' "$tmp/console-b"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the second instance is not ready after 120 s: $(cat "$tmp/console-b")"
    sleep 1
done
grep -qF "cloud-init[2179]: labship: self $DEP2" "$tmp/console-b" || fail "the second host's curl of localhost:$SAME_PORT: $(cat "$tmp/console-b")"
[ "$(curl -fsS --max-time 10 "http://$ip:$SAME_PORT/id")" = "$DEP" ] || fail "$ip:$SAME_PORT does not serve the first instance's file"
[ "$(curl -fsS --max-time 10 "http://$ip2:$SAME_PORT/id")" = "$DEP2" ] || fail "$ip2:$SAME_PORT does not serve the second instance's file"
ok "two instances publish port $SAME_PORT at once, each on its own address ($ip, $ip2), and each host's 127.0.0.1 / localhost is its own"
terminate "$instance2"
[ -z "$(docker ps -aq --filter "label=$LABEL2")" ] || fail "the second instance's container is left"
[ "$(curl -fsS --max-time 10 "http://$ip:$SAME_PORT/id")" = "$DEP" ] || fail "the first instance's port went with the second"
instance2=""
ok "the second instance terminated; the first still serves its port"

# --- terminate --------------------------------------------------------------------------
terminate "$instance"
left="$(leftovers)"
[ -z "$left" ] || fail "left after terminate-instances (label $LABEL): $left"
[ -z "$(docker ps -aq --filter "name=^labship-sim-$instance\$")" ] || fail "labship-sim-$instance still exists"
ok "terminate-instances answered shutting-down, then terminated once the instance container and the deployment's container and volume were removed"
state="$(curl -fsS "$SIM/_sim/instances" | jq -r --arg i "$instance" '.[] | select(.id == $i) | .sim_state + "/" + .container_state')"
[ "$state" = removed/absent ] || fail "/_sim/instances: $instance is $state"
aws ec2 get-console-output --instance-id "$instance" | jq -r '.Output' | grep -Eq "$TOKEN_RE" ||
    fail "the console is gone after terminate"
ok "/_sim/instances shows it removed; its last console stays readable"
wait_exit "$p2_pid" 5 || fail "the plugin of session $sid2 still runs 5 s after terminate-instances"
[ "$exit_rc" = 0 ] || fail "the plugin of session $sid2 exited $exit_rc after terminate-instances: $(cat "$tmp/p2.err")"
curl -fsS "$SIM/_sim/sessions" | jq -e --arg a "$sid2" --arg b "$sid3" '[.sessions[] | select(.SessionId == ($a, $b)) | .State] == ["Terminated", "Terminated"]' \
    >/dev/null || fail "/_sim/sessions after terminate-instances: $(curl -fsS "$SIM/_sim/sessions")"
ok "terminate-instances terminated the instance's sessions; the plugin exited 0 by itself"
instance=""

# --- stop and start ---------------------------------------------------------------------
# A host whose container restarts with Docker (unless-stopped) and keeps a file on its volume,
# and a second seat's container and volume (another deployment's label, as a host of several
# seats has): they are the instance's all the same.
SEAT2="$DEP-seat2"
cat >"$tmp/user-data-2.sh" <<EOF
#!/bin/bash
set -euo pipefail
echo "labship: boot-run $DEP"
docker volume create --label $LABEL labship-ec2-$DEP-work >/dev/null
docker run -d --name labship-ec2-$DEP --label $LABEL --init --restart unless-stopped \\
    -v labship-ec2-$DEP-work:/work $LABSHIP_TEST_BASE_IMAGE sleep 3600 >/dev/null
docker volume create --label dev.labship.ec2.deployment=$SEAT2 labship-ec2-$SEAT2-work >/dev/null
docker run -d --name labship-ec2-$SEAT2 --label dev.labship.ec2.deployment=$SEAT2 --init --restart unless-stopped \\
    -v labship-ec2-$SEAT2-work:/work $LABSHIP_TEST_BASE_IMAGE sleep 3600 >/dev/null
echo "labship: started-2"
EOF
out="$(run_instance "$tmp/user-data-2.sh")" || fail "run-instances (stop/start)"
instance="$(jq -r '.Instances[0].InstanceId' <<<"$out")"
deadline=$((SECONDS + 60))
until aws ec2 get-console-output --instance-id "$instance" --latest | jq -r '.Output // ""' | grep -q 'labship: started-2'; do
    [ "$SECONDS" -lt "$deadline" ] || fail "stop/start: the user-data did not finish in 60 s"
    sleep 1
done
docker exec "labship-ec2-$DEP" sh -c 'echo kept > /work/notebook.txt' || fail "writing to the volume"
aws ec2 stop-instances --instance-ids "$instance" >/dev/null || fail "stop-instances"
[ "$(aws ec2 describe-instances --instance-ids "$instance" | jq -r '.Reservations[0].Instances[0].State.Name')" = stopped ] ||
    fail "describe-instances after stop-instances: not stopped"
[ "$(docker inspect --format '{{.State.Running}}' "labship-sim-$instance")" = false ] || fail "the instance container still runs after stop"
[ "$(docker inspect --format '{{.State.Running}}' "labship-ec2-$DEP")" = false ] || fail "the deployment's container still runs after stop"
[ "$(docker inspect --format '{{.State.Running}}' "labship-ec2-$SEAT2")" = false ] || fail "the second seat's container still runs after stop"
[ -n "$(docker volume ls -q --filter "label=$LABEL")" ] || fail "stop-instances removed the volume"
ok "stop-instances: stopped in EC2, the host and its containers (a second seat's too) stopped, the volume kept"
aws ec2 start-instances --instance-ids "$instance" >/dev/null || fail "start-instances"
[ "$(aws ec2 describe-instances --instance-ids "$instance" | jq -r '.Reservations[0].Instances[0].State.Name')" = running ] ||
    fail "describe-instances after start-instances: not running"
[ "$(docker inspect --format '{{.State.Running}}' "labship-sim-$instance")" = true ] || fail "the instance container did not start again"
[ "$(docker inspect --format '{{.State.Running}}' "labship-ec2-$DEP")" = true ] || fail "the unless-stopped container did not start again"
[ "$(docker inspect --format '{{.State.Running}}' "labship-ec2-$SEAT2")" = true ] || fail "the second seat's container did not start again"
[ "$(docker exec "labship-ec2-$DEP" cat /work/notebook.txt)" = kept ] || fail "the file on the volume is gone after stop/start"
sleep 2
runs="$(docker logs "labship-sim-$instance" 2>&1 | grep -c 'labship: boot-run' || true)"
[ "$runs" = 1 ] || fail "the user-data ran $runs times across stop/start (cloud-init runs it once)"
ok "start-instances: running again, the unless-stopped container back with the volume's file, the user-data not run again"
# EBS: a volume attached to the host is a folder it finds in $LABSHIP_SIM_EBS_DIR; its files
# stay through detach and attach; the same client token makes one volume.
az="$(aws ec2 describe-instances --instance-ids "$instance" | jq -r '.Reservations[0].Instances[0].Placement.AvailabilityZone')"
new_volume() {
    aws ec2 create-volume --availability-zone "$az" --size 1 --volume-type gp3 --encrypted \
        --client-token "selftest-$instance" \
        --tag-specifications "ResourceType=volume,Tags=[{Key=labship:deployment,Value=$DEP}]" | jq -r .VolumeId
}
vol="$(new_volume)"
[[ "$vol" =~ ^vol-[0-9a-f]+$ ]] || fail "create-volume: $vol"
[ "$(new_volume)" = "$vol" ] || fail "create-volume with the same client token made another volume than $vol"
long_token="selftest-$(printf '%057d' 0)"
if aws ec2 create-volume --availability-zone "$az" --size 1 --client-token "$long_token" >/dev/null 2>"$tmp/long.err" ||
    ! grep -q InvalidParameterValue "$tmp/long.err"; then
    fail "create-volume with a client token of ${#long_token} characters: not refused ($(cat "$tmp/long.err"))"
fi
ebs_of() { docker exec "labship-sim-$instance" sh -c 'ls "$LABSHIP_SIM_EBS_DIR" | tr "\n" " "'; }
aws ec2 attach-volume --volume-id "$vol" --instance-id "$instance" --device /dev/sdf >/dev/null || fail "attach-volume"
[ "$(ebs_of)" = "dev-sdf $vol " ] || fail "the host does not see $vol (and dev-sdf) in LABSHIP_SIM_EBS_DIR: '$(ebs_of)'"
docker exec "labship-sim-$instance" sh -c "echo on-ebs > \"\$LABSHIP_SIM_EBS_DIR/$vol/f.txt\"" || fail "writing to $vol"
# (moto 5.2 fails DetachVolume without InstanceId with a 500; AWS does not need it.)
aws ec2 detach-volume --volume-id "$vol" --instance-id "$instance" >/dev/null || fail "detach-volume"
[ -z "$(ebs_of)" ] || fail "the host still sees '$(ebs_of)' after detach-volume"
# Again as another device: the host finds it under that name (a host of several seats' way).
aws ec2 attach-volume --volume-id "$vol" --instance-id "$instance" --device /dev/sdg >/dev/null || fail "attach-volume again"
[ "$(ebs_of)" = "dev-sdg $vol " ] || fail "attached as /dev/sdg, the host sees '$(ebs_of)'"
[ "$(docker exec "labship-sim-$instance" sh -c "cat \"\$LABSHIP_SIM_EBS_DIR/dev-sdg/f.txt\"")" = on-ebs ] ||
    fail "the file on $vol is gone after detach and attach"
[ "$(aws ec2 describe-volumes --volume-ids "$vol" | jq -r '.Volumes[0].Attachments[0].InstanceId')" = "$instance" ] ||
    fail "describe-volumes does not show $vol attached to $instance"
ok "EBS: create-volume (idempotent by client token, one over 64 characters refused), attach-volume shows $vol to the host by id and device name, its file survives detach and attach as another device"
state_of() { aws ec2 describe-instances --instance-ids "$1" | jq -r '.Reservations[0].Instances[0].State.Name'; }
console_of() { aws ec2 get-console-output --instance-id "$1" --latest | jq -r '.Output // ""'; }
# A shutdown scheduled on the host, then cancelled; cloud-init's per-boot hook for the next boot.
docker exec "labship-sim-$instance" shutdown -h +5 >/dev/null || fail "shutdown -h +5 on the host"
docker exec "labship-sim-$instance" test -s /run/labship-sim-shutdown.pid || fail "shutdown +5 scheduled nothing"
docker exec "labship-sim-$instance" shutdown -c >/dev/null || fail "shutdown -c on the host"
! docker exec "labship-sim-$instance" test -e /run/labship-sim-shutdown.pid || fail "shutdown -c left the schedule"
[ "$(state_of "$instance")" = running ] || fail "a cancelled shutdown stopped the instance"
docker exec "labship-sim-$instance" sh -c 'mkdir -p /var/lib/cloud/scripts/per-boot &&
    printf "#!/bin/bash\necho labship: per-boot-ran\n" >/var/lib/cloud/scripts/per-boot/10-selftest &&
    chmod 0755 /var/lib/cloud/scripts/per-boot/10-selftest' || fail "writing a per-boot hook"
ok "shutdown on the host: +5 schedules, -c cancels, the instance keeps running"
# The host powers itself off: EC2 stops the instance (the default shutdown behaviour).
docker exec "labship-sim-$instance" shutdown -h now >/dev/null || fail "shutdown -h now on the host"
deadline=$((SECONDS + 60))
until [ "$(state_of "$instance")" = stopped ] &&
    [ "$(docker inspect --format '{{.State.Running}}' "labship-sim-$instance")" = false ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "shutdown -h now on the host: still $(state_of "$instance") after 60 s"
    sleep 1
done
ok "shutdown -h now on the host: the instance stopped (InstanceInitiatedShutdownBehavior stop)"
aws ec2 start-instances --instance-ids "$instance" >/dev/null || fail "start-instances (after a shutdown)"
deadline=$((SECONDS + 30))
until console_of "$instance" | grep -q 'labship: per-boot-ran'; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the per-boot hook did not run at the start: $(console_of "$instance" | tail -n 5)"
    sleep 1
done
if console_of "$instance" | grep -q 'labship: boot-run'; then
    fail "the console still shows the first boot after a start"
fi
ok "start-instances: the per-boot hook ran, the console shows the current boot only"
terminate "$instance"
[ -z "$(leftovers)" ] || fail "left after terminating the stopped-and-started instance: $(leftovers)"
seat2_left="$(docker ps -aq --filter "label=dev.labship.ec2.deployment=$SEAT2"; docker volume ls -q --filter "label=dev.labship.ec2.deployment=$SEAT2")"
[ -z "$seat2_left" ] || fail "left of the second seat after terminating its instance: $seat2_left"
ok "terminate-instances after stop/start leaves nothing (of either seat)"
disk="$RIG_STATE/sim/ebs/volumes/$vol"
[ ! -e "$RIG_STATE/sim/ebs/attached/$instance" ] || fail "terminate-instances left the attachment of $vol"
[ "$(cat "$disk/f.txt")" = on-ebs ] || fail "terminate-instances took the disk of $vol"
[ "$(aws ec2 describe-volumes --volume-ids "$vol" | jq -r '.Volumes[0].State')" = available ] || fail "$vol is not available after the termination"
# A snapshot carries the disk to a volume in another zone.
snap="$(aws ec2 create-snapshot --volume-id "$vol" | jq -r .SnapshotId)"
[[ "$snap" =~ ^snap-[0-9a-f]+$ ]] || fail "create-snapshot: $snap"
copy="$(aws ec2 create-volume --availability-zone "${az%?}b" --snapshot-id "$snap" --volume-type gp3 | jq -r .VolumeId)"
[ "$(cat "$RIG_STATE/sim/ebs/volumes/$copy/f.txt")" = on-ebs ] || fail "the volume $copy made from $snap lacks the file"
aws ec2 delete-snapshot --snapshot-id "$snap" >/dev/null || fail "delete-snapshot"
[ ! -e "$RIG_STATE/sim/ebs/snapshots/$snap" ] || fail "delete-snapshot left $snap's copy"
aws ec2 delete-volume --volume-id "$copy" >/dev/null || fail "delete-volume $copy"
aws ec2 delete-volume --volume-id "$vol" >/dev/null || fail "delete-volume"
[ ! -e "$disk" ] || fail "delete-volume left the disk of $vol"
ok "EBS: terminate-instances detaches $vol and keeps its disk; a snapshot carries it to a volume in ${az%?}b; delete-volume and delete-snapshot remove them"
instance=""

# A host launched to terminate itself (InstanceInitiatedShutdownBehavior terminate).
printf '#!/bin/bash\necho "labship: started-3"\n' >"$tmp/user-data-3.sh"
out="$(run_instance "$tmp/user-data-3.sh" --instance-initiated-shutdown-behavior terminate)" || fail "run-instances (terminate on shutdown)"
instance="$(jq -r '.Instances[0].InstanceId' <<<"$out")"
deadline=$((SECONDS + 60))
until console_of "$instance" | grep -q 'labship: started-3'; do
    [ "$SECONDS" -lt "$deadline" ] || fail "terminate on shutdown: the user-data did not run in 60 s"
    sleep 1
done
docker exec "labship-sim-$instance" shutdown -h now >/dev/null || fail "shutdown -h now (terminate)"
deadline=$((SECONDS + 60))
until [ "$(state_of "$instance")" = terminated ] && [ -z "$(leftovers)" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "shutdown with behaviour terminate: $(state_of "$instance"), left: $(leftovers)"
    sleep 1
done
ok "shutdown -h now on a host launched with shutdown behaviour terminate: terminated, nothing left"
instance=""

# A spot instance: an injected interruption stops it (with EC2's reason); without capacity a
# start is refused until capacity returns.
printf '#!/bin/bash\necho "labship: started-4"\n' >"$tmp/user-data-4.sh"
out="$(run_instance "$tmp/user-data-4.sh" --instance-initiated-shutdown-behavior stop \
    --instance-market-options 'MarketType=spot,SpotOptions={SpotInstanceType=persistent,InstanceInterruptionBehavior=stop}')" ||
    fail "run-instances (spot)"
instance="$(jq -r '.Instances[0].InstanceId' <<<"$out")"
[ "$(jq -r '.Instances[0].InstanceLifecycle' <<<"$out")" = spot ] || fail "run-instances (spot): $out"
deadline=$((SECONDS + 60))
until console_of "$instance" | grep -q 'labship: started-4'; do
    [ "$SECONDS" -lt "$deadline" ] || fail "spot: the user-data did not run in 60 s"
    sleep 1
done
sim_post "/_sim/instances/$instance/interrupt" '{"capacity": false}' | jq -e '.interrupted == true and .capacity == false' >/dev/null ||
    fail "POST /_sim/instances/$instance/interrupt"
reason_of() { aws ec2 describe-instances --instance-ids "$1" | jq -r '.Reservations[0].Instances[0].StateReason.Code'; }
[ "$(state_of "$instance")" = stopped ] || fail "spot interruption: $(state_of "$instance"), not stopped"
[ "$(reason_of "$instance")" = Server.SpotInstanceShutdown ] || fail "spot interruption: state reason $(reason_of "$instance")"
[ "$(docker inspect --format '{{.State.Running}}' "labship-sim-$instance")" = false ] || fail "the interrupted host still runs"
if aws ec2 start-instances --instance-ids "$instance" >/dev/null 2>"$tmp/start.err"; then
    fail "start-instances of an interrupted spot instance succeeded (only EC2 restarts it)"
fi
grep -q IncorrectInstanceState "$tmp/start.err" || fail "start of an interrupted instance: $(cat "$tmp/start.err")"
sim_post "/_sim/instances/$instance/capacity" '{}' >/dev/null || fail "POST .../capacity"
[ "$(state_of "$instance")" = running ] || fail "spot: $(state_of "$instance") once capacity returned"
[ "$(docker inspect --format '{{.State.Running}}' "labship-sim-$instance")" = true ] || fail "the host did not start again"
[ "$(reason_of "$instance")" != Server.SpotInstanceShutdown ] || fail "the interruption reason stayed after the restart"
code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$SIM/_sim/instances/i-0000000000000000/interrupt")"
[ "$code" = 404 ] || fail "interrupting an unknown instance: HTTP $code"
terminate "$instance"
ok "spot: an interruption stops the instance (StateReason Server.SpotInstanceShutdown); start-instances is refused; EC2 restarts it when capacity returns"
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

# (2b) a rule for one parameter value only, answered as EC2 without capacity (a describe stands
# in for RunInstances here: the rule matches by the call's parameters, not its meaning).
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"ec2:DescribeInstanceTypes\",\"param\":{\"InstanceType.1\":\"t3.medium\"},\"fault\":\"capacity\"}]}" >/dev/null ||
    fail "POST /_sim/faults"
if faws 1 ec2 describe-instance-types --instance-types t3.medium >"$tmp/out" 2>"$tmp/err"; then
    fail "describe-instance-types t3.medium passed a capacity rule for it: $(cat "$tmp/out")"
fi
grep -q 'InsufficientInstanceCapacity' "$tmp/err" || fail "the capacity fault: $(cat "$tmp/err")"
faws 1 ec2 describe-instance-types --instance-types t3a.medium | jq -e '.InstanceTypes | length == 1' >/dev/null ||
    fail "describe-instance-types t3a.medium under a rule for t3.medium only"
jq -e '[.fired[] | .what] == ["capacity"]' <<<"$(fired)" >/dev/null || fail "fired after the capacity rule: $(fired)"
ok "faults: a param rule matches its value only; capacity answers InsufficientInstanceCapacity"

# (2b') the account's vCPU quota on the first matching call only ("nth": 1), EC2 without
# capacity on the others: only the first fault rule that fires applies.
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"ec2:DescribeInstanceTypes\",\"param\":{\"InstanceType.1\":\"t3.medium\"},\"nth\":1,\"fault\":\"vcpu-quota\"},{\"action\":\"ec2:DescribeInstanceTypes\",\"param\":{\"InstanceType.1\":\"t3.medium\"},\"fault\":\"capacity\"}]}" >/dev/null ||
    fail "POST /_sim/faults"
if faws 1 ec2 describe-instance-types --instance-types t3.medium >"$tmp/out" 2>"$tmp/err"; then
    fail "describe-instance-types t3.medium passed a vcpu-quota rule for it: $(cat "$tmp/out")"
fi
grep -q 'VcpuLimitExceeded' "$tmp/err" || fail "the vcpu-quota fault: $(cat "$tmp/err")"
if faws 1 ec2 describe-instance-types --instance-types t3.medium >"$tmp/out" 2>"$tmp/err"; then
    fail "describe-instance-types t3.medium passed a capacity rule for it: $(cat "$tmp/out")"
fi
grep -q 'InsufficientInstanceCapacity' "$tmp/err" || fail "the capacity fault after the quota's one: $(cat "$tmp/err")"
jq -e '[.fired[] | .what] == ["vcpu-quota", "capacity"]' <<<"$(fired)" >/dev/null || fail "fired after the vcpu-quota rule: $(fired)"
ok "faults: vcpu-quota answers VcpuLimitExceeded; nth 1 fires once, and the next rule answers the next call"

# (2c) a parameter rule with the value "*" matches any call that has the parameter, and a delay
# of 0 only records it: how a test sees that one describe named several instances.
sim_post /_sim/faults "{\"scope\":\"$FKEY\",\"rules\":[{\"action\":\"ec2:DescribeInstanceTypes\",\"param\":{\"InstanceType.2\":\"*\"},\"delay\":0}]}" >/dev/null ||
    fail "POST /_sim/faults"
faws 1 ec2 describe-instance-types --instance-types t3.medium >/dev/null || fail "describe-instance-types t3.medium"
faws 1 ec2 describe-instance-types --instance-types t3.medium t3a.medium | jq -e '.InstanceTypes | length == 2' >/dev/null ||
    fail "describe-instance-types of two types under a delay-0 rule"
jq -e '[.fired[] | .what] == ["delay 0"]' <<<"$(fired)" >/dev/null || fail "fired after the \"*\" rule: $(fired)"
ok "faults: a param rule with \"*\" matches any value of a parameter that is there"

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
