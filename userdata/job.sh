#!/bin/bash
# labship job host: the user-data of an instance that runs one job (`labship run --ec2`)
# and then ends itself. Rendered by labship from userdata/job.sh; every value below was
# validated and quoted. It powers the host off at its deadline whatever happens (RunInstances
# set InstanceInitiatedShutdownBehavior=terminate, so power-off is termination), sets Docker
# up, logs in to ECR with the instance profile, pulls the image, fetches the job (runner,
# job.json, the notebook, the list of inputs) and the inputs from S3 with the instance role,
# runs the job's container to its end, and puts the executed notebook, outputs/, the
# runner's progress log and last `.labship-host.json` (how the host ended) at JOB_URI; then
# it powers off. Progress lines (`LABSHIP-JOB {...}`) and markers go to the console. No
# credential enters the job's container (IMDSv2, hop limit 1) and no secret is printed.
set -euo pipefail
set -o errtrace

readonly HOST_KIND={{HOST_KIND}}
readonly DEPLOYMENT={{DEPLOYMENT}}
readonly REGION={{REGISTRY_REGION}}
readonly REGISTRY={{REGISTRY}}
readonly IMAGE={{IMAGE}}
readonly PULL_DEADLINE={{PULL_DEADLINE}}
readonly JUPYTER_DEADLINE=1
# The run's folder in S3 (ends with /), its bucket's region, the job's deadline in seconds
# and the host's own, in minutes from boot (pull, inputs and upload included).
readonly JOB_URI={{JOB_URI}}
readonly JOB_REGION={{JOB_REGION}}
readonly TIMEOUT={{TIMEOUT}}
readonly HOST_DEADLINE_MIN={{HOST_DEADLINE_MIN}}
# Kept out of the host's deadline for what comes after the job: the upload of its results,
# and the runner's grace (its container is killed 40 s past the job's time).
readonly UPLOAD_ALLOWANCE=1800 JOB_GRACE=60
readonly CONTAINER="labship-$DEPLOYMENT"
readonly CONSOLE=
# Not used by a job host: the helpers read them where they are defined.
readonly BIND=127.0.0.1 INPUTS='' INPUTS_ID=none

# The host's own deadline, first: whatever happens below, it powers off by then. No
# deadline, no job: it powers off now. (From the helpers on, the EXIT trap below does it.)
trap 'shutdown -h now' EXIT
STARTED_AT=$(date +%s)
readonly STARTED_AT
if ! shutdown -h "+$HOST_DEADLINE_MIN" >/dev/null 2>&1; then
    echo "labship: error phase=host could not schedule the host's power-off"
    exit 1
fi

{{COMMON}}

{{HOST_SETUP}}

readonly SPEC_DIR=/var/lib/labship/job/spec
# Under the state folder: what is bind-mounted into the job's container must be there.
readonly INPUTS_DIR="$STATE_DIR/job/inputs"
readonly RESULTS=/var/lib/labship/job/results
EXIT_CODE=null
JOB_TIMEOUT=null
OOM=false
KILLED=false
UPLOADED=false

# Puts the results at JOB_URI with the host's log (a few attempts; links are not results,
# and are never followed). Never fails: UPLOADED says how it went.
upload_results() {
    local n
    find "$RESULTS" \( -type l -o -name '*.part' \) -delete 2>/dev/null
    cp "$LOG_FILE" "$RESULTS/.labship-host.log" 2>/dev/null || true
    for n in 1 2 3; do
        if aws s3 cp --recursive --only-show-errors --no-follow-symlinks --region "$JOB_REGION" \
            "$RESULTS/" "$JOB_URI" >>"$LOG_FILE" 2>&1; then
            UPLOADED=true
            break
        fi
        log "upload attempt $n failed"
        sleep "$n"
    done
}

# A JSON string of printable ASCII (a cut may split a character; the console's text may
# hold anything).
json_string() {
    local s
    s=$(printf '%s' "$1" | tr -cd '[:print:]')
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# How the host ended, put last: labship waits for it. A few attempts; never fails.
put_end() {
    local n
    case $EXIT_CODE in '' | *[!0-9-]*) EXIT_CODE=null ;; esac
    case $OOM in true | false) ;; *) OOM=false ;; esac
    case $JOB_TIMEOUT in '' | *[!0-9]*) JOB_TIMEOUT=null ;; esac
    printf '{"host_exit":%d,"exit_code":%s,"oom_killed":%s,"killed":%s,"uploaded":%s,"job_timeout":%s,"phase":%s,"error":%s}\n' \
        "$1" "$EXIT_CODE" "$OOM" "$KILLED" "$UPLOADED" "$JOB_TIMEOUT" "$(json_string "$PHASE")" "$(json_string "$LAST_ERROR")" \
        >"$SPEC_DIR.end.json"
    for n in 1 2 3; do
        if aws s3 cp --only-show-errors --region "$JOB_REGION" "$SPEC_DIR.end.json" \
            "${JOB_URI}.labship-host.json" >>"$LOG_FILE" 2>&1; then
            return 0
        fi
        log "upload of .labship-host.json, attempt $n, failed"
        sleep "$n"
    done
}

# The end, whatever came before: results up, how it ended, then power off (which
# terminates the host). At the deadline, the power-off's TERM says so.
finish() {
    local rc=$?
    trap - EXIT ERR TERM
    set +e
    rm -f "$OUT" "$OUT.aws" "$OUT.job" "$OUT.job.failed"
    mkdir -p "$RESULTS" "$(dirname "$SPEC_DIR")"
    local phase=$PHASE
    PHASE=upload
    upload_results
    PHASE=$phase
    put_end "$rc"
    mark ended
    shutdown -h now
}
trap finish EXIT

# The seconds the job may run when it starts $1 seconds after the host's deadline was set:
# its timeout, or what the deadline leaves once the upload and the grace are kept aside,
# when the pull and the inputs took that long (the job is then cut short by its own runner,
# which saves the notebook as far as it ran, rather than by the power-off, which could cut
# the upload of its results). 0: nothing is left. The runner is told the same end as a time
# (LABSHIP_JOB_END_BY, Unix seconds), as it starts a little later than the host decides.
job_time() {
    local left=$((HOST_DEADLINE_MIN * 60 - $1 - UPLOAD_ALLOWANCE - JOB_GRACE))
    if [ "$left" -lt 0 ]; then
        left=0
    fi
    if [ "$left" -lt "$TIMEOUT" ]; then
        echo "$left"
    else
        echo "$TIMEOUT"
    fi
}
trap 'LAST_ERROR="phase=$PHASE the host reached its deadline (${HOST_DEADLINE_MIN} minutes)"; exit 124' TERM

mark begin
log "job host: run $DEPLOYMENT, image $IMAGE, host kind $HOST_KIND, deadline ${TIMEOUT}s"

PHASE=host
setup_host
PHASE=docker
setup_docker
mark docker-ready

# The staged job, with the host's role. A new role's credentials may take a moment to reach
# the host (as the registry login allows for): attempts until the login's deadline. Run in
# the background, it never fails (ERR would fire there): it leaves $OUT.job.failed instead.
copy_job() {
    local deadline=$((SECONDS + LOGIN_DEADLINE)) n=0
    until aws s3 cp --recursive --only-show-errors --region "$JOB_REGION" \
        "${JOB_URI}.labship-job/" "$SPEC_DIR/"; do
        n=$((n + 1))
        if [ "$SECONDS" -ge "$deadline" ]; then
            : >"$OUT.job.failed"
            return 0
        fi
        sleep "$((n < 5 ? n : 5))"
    done
}

PHASE=login
require_aws_cli
mkdir -p "$SPEC_DIR" "$INPUTS_DIR" "$RESULTS"
rm -f "$OUT.job.failed"
# The staged job comes down while the registry login and the pull go on.
copy_job >"$OUT.job" 2>&1 &
JOB_COPY=$!
ecr_login
PHASE=pull
pull_image
mark pulled

PHASE=data
wait "$JOB_COPY" || true
cat "$OUT.job" >>"$LOG_FILE"
if [ -e "$OUT.job.failed" ] || [ ! -s "$SPEC_DIR/job.json" ]; then
    fail "aws s3 cp ${JOB_URI}.labship-job/ failed for ${LOGIN_DEADLINE}s: $(last_line "$OUT.job")"
fi
copy_inputs "$INPUTS_DIR" <"$SPEC_DIR/inputs.tsv"
chmod -R a+rX "$INPUTS_DIR"
mark inputs

PHASE=start
# No time left: the job's end.
no_time_left() {
    if [ "$(job_time "$SECONDS")" -eq 0 ]; then
        fail "no time is left for the job: the pull and the inputs took ${SECONDS}s of the host's ${HOST_DEADLINE_MIN} minutes"
    fi
}
no_time_left
# The working folder the job's runner was told (labship read it from the image).
WORKDIR=$(cat "$SPEC_DIR/workdir")
[ -n "$WORKDIR" ] || fail "the staged job has no working folder"
# Each input mounted read-only at inputs/<name>, as a local run mounts them: the job reads
# them and cannot change them, they take no second copy on the host's disk, and an image's
# own inputs/ keeps its other files.
# (--mount's fields quoted as CSV: a name may hold a comma or a colon.)
csv_field() { printf '"%s"' "${1//\"/\"\"}"; }
# The names are the job's list of inputs (a name may begin with a dot).
MOUNTS=()
while IFS=$'\t' read -r _ INPUT _; do
    [ -n "$INPUT" ] || continue
    [ -e "$INPUTS_DIR/$INPUT" ] || fail "the input $INPUT was not copied"
    MOUNTS+=(--mount "type=bind,$(csv_field "source=$INPUTS_DIR/$INPUT"),$(csv_field "target=$WORKDIR/inputs/$INPUT"),readonly")
done <"$SPEC_DIR/inputs.tsv"
quiet docker create --name "$CONTAINER" --label "dev.labship.ec2.deployment=$DEPLOYMENT" \
    -e "LABSHIP_JOB_END_BY=$((STARTED_AT + HOST_DEADLINE_MIN * 60 - UPLOAD_ALLOWANCE - JOB_GRACE))" \
    ${MOUNTS[@]+"${MOUNTS[@]}"} "$IMAGE" \
    python /tmp/labship-job/runner.py /tmp/labship-job/job.json
quiet docker cp "$SPEC_DIR/." "$CONTAINER:/tmp/labship-job"
no_time_left
JOB_TIMEOUT=$(job_time "$SECONDS")
if [ "$JOB_TIMEOUT" -lt "$TIMEOUT" ]; then
    log "the job gets ${JOB_TIMEOUT}s of its ${TIMEOUT}s: the pull and the inputs took ${SECONDS}s"
fi
mark job-started

PHASE=job
# The runner ends itself at its deadline; the container is killed a little after, should
# it not. Its progress lines go to the job's log and to the console (for labship), but for
# a failed cell's error, which is the job's own and only goes to S3. (A job that fails is an
# outcome, not the host's error.)
{ timeout --kill-after=10 "$((JOB_TIMEOUT + 30))" docker start -a "$CONTAINER" 2>&1 |
    tee -a "$LOG_FILE" | grep --line-buffered '^LABSHIP-JOB ' | tee "$RESULTS/.labship-job.log" |
    grep --line-buffered -v '"event": "failed"'; } || true
# How it ended, in one look: running (still, past its deadline), exit code, killed for memory.
STATE=$(docker inspect --format '{''{.State.Running}} {''{.State.ExitCode}} {''{.State.OOMKilled}}' \
    "$CONTAINER" 2>>"$LOG_FILE") || STATE="false null false"
read -r RUNNING EXIT_CODE OOM <<<"$STATE"
if [ "$RUNNING" = true ]; then
    docker kill "$CONTAINER" >>"$LOG_FILE" 2>&1 || true
    KILLED=true
    EXIT_CODE=$(docker inspect --format '{''{.State.ExitCode}}' "$CONTAINER" 2>>"$LOG_FILE") || EXIT_CODE=null
fi
mark job-ended

PHASE=results
docker cp "$CONTAINER:/tmp/labship-job-out/." "$RESULTS/" >>"$LOG_FILE" 2>&1 || log "no executed notebook"
docker cp "$CONTAINER:$WORKDIR/outputs" "$RESULTS/outputs" >>"$LOG_FILE" 2>&1 || log "no outputs/"
PHASE=finished
