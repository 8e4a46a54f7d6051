#!/usr/bin/env bash
# The by-hand way to what `labship up --ec2` does, as a person scripts it with the aws CLI and
# the docker CLI, one step after the other: ECR repository, login, build, tag, push, instance
# role (reused when it exists), default VPC, security group, AMI from SSM, RunInstances with
# the user-data, then the console until the token URL appears, then a check that it answers.
# tests/bench/up_ec2.py runs it with the same context, build args, image reference and
# user-data script as labship (from `labship up --ec2 --dry-run`), so the instance does the
# same work on both sides and only the laptop-side orchestration differs.
#
#   bash tests/bench/manual_ec2.sh up   STATE_DIR   # prints the URL on stdout
#   bash tests/bench/manual_ec2.sh down STATE_DIR   # removes what `up` recorded; idempotent
#   bash tests/bench/manual_ec2.sh iam  STATE_DIR   # only the instance role and profile
#
# STATE_DIR/steps gets one "STEP SECONDS" line per step of `up` (or `down`);
# STATE_DIR/created one "KIND ID" line per resource made, written as soon as it exists, so
# `down` cleans up after a failed `up` too. `down` removes the AWS resources; local images
# stay, as `labship down` leaves them.
#
# Environment:
#   AWS_CLI          the aws CLI (v1 or v2)            AWS_ENDPOINT  --endpoint-url of every call
#   AWS_DEFAULT_REGION                                  WAIT          seconds for the token (900)
#   NAME             deployment name (security group labship-NAME, tags)
#   CONTEXT          build context (folder)             BASE_IMAGE    the BASE_IMAGE build arg
#   IMAGE            REGISTRY/REPOSITORY:TAG to push and to run (the one in the user-data)
#   PORT             Jupyter's port on the instance     ALLOW_CIDR    who may reach it
#   USER_DATA        the user-data script (file)
#   AMI_PARAMETER    SSM parameter naming the AMI       INSTANCE_TYPE
#   ROOT_DEVICE      root device name                   ROOT_GIB      root volume size
#   ROLE             instance role and profile name     ROLE_PATH     its IAM path (/)
#   TRUST_POLICY     the role's trust policy (file)
set -euo pipefail
: "${NAME:=}" "${AWS_CLI:=aws}"

usage() {
    printf 'usage: %s up|down|iam STATE_DIR\n' "$0" >&2
    exit 2
}
[ $# -eq 2 ] || usage
readonly ACTION=$1 S=$2
mkdir -p "$S"
readonly STEPS="$S/steps" CREATED="$S/created"
: >"$STEPS"
touch "$CREATED"

# Every aws call is bounded; the endpoint is the rig's (or AWS when AWS_ENDPOINT is empty).
aws_() {
    if [ -n "${AWS_ENDPOINT:-}" ]; then
        timeout 120 "$AWS_CLI" --endpoint-url "$AWS_ENDPOINT" "$@"
    else
        timeout 120 "$AWS_CLI" "$@"
    fi
}

# step NAME CMD...: runs CMD, appends "NAME SECONDS" to $STEPS.
step() {
    local name=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    "$@"
    t1=$EPOCHREALTIME
    awk -v n="$name" -v a="${t0/,/.}" -v b="${t1/,/.}" 'BEGIN { printf "%s %.3f\n", n, b - a }' >>"$STEPS"
}

created() { printf '%s %s\n' "$1" "$2" >>"$CREATED"; }
die() {
    printf 'manual_ec2: %s\n' "$*" >&2
    exit 1
}

# ---- up ---------------------------------------------------------------------------------

# Set by cmd_up from IMAGE, and by the steps.
REGISTRY='' REPO='' LOCAL='' VPC='' SG='' AMI='' IID='' IP='' URL=''

ecr_repository() {
    aws_ ecr create-repository --repository-name "$REPO" \
        --image-scanning-configuration scanOnPush=true >/dev/null
    created repository "$REPO"
}

ecr_login() {
    aws_ ecr get-login-password |
        timeout 60 docker login --username AWS --password-stdin "$REGISTRY" >"$S/login.log" 2>&1
}

build() {
    created image "$LOCAL"
    DOCKER_BUILDKIT=0 timeout 1800 docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -t "$LOCAL" "$CONTEXT" >"$S/build.log" 2>&1 || {
        tail -n 20 "$S/build.log" >&2
        die "docker build failed"
    }
}

tag() {
    created image "$IMAGE"
    docker tag "$LOCAL" "$IMAGE"
}

push() {
    timeout 1800 docker push "$IMAGE" >"$S/push.log" 2>&1 || {
        tail -n 20 "$S/push.log" >&2
        die "docker push failed"
    }
}

# The instance role and profile: reused when the profile exists with the role in it.
iam() {
    local have
    have=$(aws_ iam get-instance-profile --instance-profile-name "$ROLE" \
        --query 'InstanceProfile.Roles[].RoleName' --output text 2>/dev/null || true)
    if printf '%s\n' "$have" | tr '\t' '\n' | grep -qxF "$ROLE"; then
        return 0
    fi
    aws_ iam create-role --role-name "$ROLE" --path "${ROLE_PATH:-/}" \
        --assume-role-policy-document "file://$TRUST_POLICY" >/dev/null 2>"$S/iam.err" ||
        grep -q EntityAlreadyExists "$S/iam.err" || die "create-role: $(cat "$S/iam.err")"
    aws_ iam attach-role-policy --role-name "$ROLE" \
        --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly
    aws_ iam attach-role-policy --role-name "$ROLE" \
        --policy-arn arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore
    aws_ iam create-instance-profile --instance-profile-name "$ROLE" --path "${ROLE_PATH:-/}" \
        >/dev/null 2>"$S/iam.err" ||
        grep -q EntityAlreadyExists "$S/iam.err" || die "create-instance-profile: $(cat "$S/iam.err")"
    aws_ iam add-role-to-instance-profile --instance-profile-name "$ROLE" --role-name "$ROLE" \
        2>"$S/iam.err" || grep -q LimitExceeded "$S/iam.err" ||
        die "add-role-to-instance-profile: $(cat "$S/iam.err")"
}

default_vpc() {
    VPC=$(aws_ ec2 describe-vpcs --filters Name=is-default,Values=true \
        --query 'Vpcs[0].VpcId' --output text)
    if [ -z "$VPC" ] || [ "$VPC" = None ]; then die "no default VPC"; fi
}

security_group() {
    SG=$(aws_ ec2 create-security-group --group-name "labship-$NAME" \
        --description "Jupyter for $NAME" --vpc-id "$VPC" --query GroupId --output text)
    created security-group "$SG"
}

ingress() {
    aws_ ec2 authorize-security-group-ingress --group-id "$SG" --protocol tcp \
        --port "$PORT" --cidr "$ALLOW_CIDR" >/dev/null
}

ami() {
    AMI=$(aws_ ssm get-parameter --name "$AMI_PARAMETER" --query Parameter.Value --output text)
}

run_instance() {
    local tags="{Key=Name,Value=labship-$NAME},{Key=labship:deployment,Value=$NAME}"
    IID=$(aws_ ec2 run-instances --image-id "$AMI" --instance-type "$INSTANCE_TYPE" --count 1 \
        --iam-instance-profile "Name=$ROLE" --security-group-ids "$SG" \
        --user-data "file://$USER_DATA" \
        --metadata-options HttpTokens=required,HttpPutResponseHopLimit=1,HttpEndpoint=enabled \
        --block-device-mappings "DeviceName=$ROOT_DEVICE,Ebs={VolumeSize=$ROOT_GIB,VolumeType=gp3,Encrypted=true,DeleteOnTermination=true}" \
        --tag-specifications "ResourceType=instance,Tags=[$tags]" "ResourceType=volume,Tags=[$tags]" \
        --query 'Instances[0].InstanceId' --output text)
    [[ "$IID" == i-* ]] || die "run-instances answered '$IID'"
    created instance "$IID"
}

# The console until the user-data relays Jupyter's URL (every 2 s, like labship).
wait_console() {
    local deadline=$((SECONDS + ${WAIT:-900})) out line
    while :; do
        # The CLI decodes the base64 Output itself (botocore); older setups may need base64 -d.
        out=$(aws_ ec2 get-console-output --instance-id "$IID" --query Output --output text 2>/dev/null || true)
        if line=$(printf '%s\n' "$out" | grep -oE 'labship: error .*' | tail -n 1) && [ -n "$line" ]; then
            die "the instance failed: $line"
        fi
        line=$(printf '%s\n' "$out" | grep -oE 'token=[0-9a-f]{32,}' | tail -n 1 || true)
        if [ -n "$line" ]; then
            URL="/lab?$line"
            # Kept for the benchmark: the markers' times give the instance's own share.
            printf '%s\n' "$out" >"$S/console"
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "no token on the console of $IID after ${WAIT:-900}s"
        # As often as labship reads it.
        sleep 1
    done
}

public_ip() {
    IP=$(aws_ ec2 describe-instances --instance-ids "$IID" \
        --query 'Reservations[0].Instances[0].PublicIpAddress' --output text)
    if [ -z "$IP" ] || [ "$IP" = None ]; then die "$IID has no public IP"; fi
    URL="http://$IP:$PORT$URL"
}

check_url() {
    local deadline=$((SECONDS + 60))
    until curl -fsS -o /dev/null --max-time 5 "${URL%/lab\?*}/api/status?${URL#*\?}"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$URL does not answer"
        sleep 0.5
    done
}

cmd_up() {
    REGISTRY=${IMAGE%%/*}
    REPO=${IMAGE#*/}
    REPO=${REPO%:*}
    LOCAL="$REPO:${IMAGE##*:}"
    step ecr-create-repository ecr_repository
    step ecr-login ecr_login
    step docker-build build
    step docker-tag tag
    step docker-push push
    step iam iam
    step describe-vpcs default_vpc
    step create-security-group security_group
    step authorize-ingress ingress
    step ssm-ami ami
    step run-instances run_instance
    step console-token wait_console
    step describe-instances public_ip
    step check-url check_url
    printf '%s\n' "$URL"
}

# ---- down -------------------------------------------------------------------------------

terminate() {
    local ids
    ids=$(awk '$1 == "instance" { print $2 }' "$CREATED" | tr '\n' ' ')
    [ -n "${ids// /}" ] || return 0
    # shellcheck disable=SC2086 # one id per word
    aws_ ec2 terminate-instances --instance-ids $ids >/dev/null
    # shellcheck disable=SC2086
    timeout 600 "$AWS_CLI" ${AWS_ENDPOINT:+--endpoint-url "$AWS_ENDPOINT"} \
        ec2 wait instance-terminated --instance-ids $ids
}

delete_groups() {
    local kind sg deadline
    while read -r kind sg; do
        [ "$kind" = security-group ] || continue
        deadline=$((SECONDS + 180))
        until aws_ ec2 delete-security-group --group-id "$sg" 2>"$S/sg.err" </dev/null; do
            if grep -q InvalidGroup.NotFound "$S/sg.err"; then break; fi
            if ! grep -q DependencyViolation "$S/sg.err" || [ "$SECONDS" -ge "$deadline" ]; then
                die "delete-security-group $sg: $(cat "$S/sg.err")"
            fi
            sleep 5
        done
    done <"$CREATED"
}

delete_repositories() {
    local kind repo
    while read -r kind repo; do
        [ "$kind" = repository ] || continue
        aws_ ecr delete-repository --repository-name "$repo" --force >/dev/null 2>"$S/repo.err" </dev/null ||
            grep -q RepositoryNotFoundException "$S/repo.err" ||
            die "delete-repository $repo: $(cat "$S/repo.err")"
    done <"$CREATED"
}

cmd_down() {
    step terminate-and-wait terminate
    step delete-security-group delete_groups
    step delete-repository delete_repositories
}

case "$ACTION" in
up) cmd_up ;;
down) cmd_down ;;
iam) step iam iam ;;
*) usage ;;
esac
