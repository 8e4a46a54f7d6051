# ---- labship: helpers shared by boot.sh and replace.sh (userdata/common.sh) ----
# Markers: one short line per step, "labship: <step> t=<unix secs.ms>", read back by
# labship from the serial console (boot) or the SSM output (replace). On failure:
# "labship: error phase=<step> <cause>". Nothing here prints a secret: the ECR password
# only ever travels through a pipe, and commands are never traced.

export LC_ALL=C
# The watchdog (LABSHIP_MODE=watch, below) never fails the way a boot does: no `set -e`, no
# error marker.
if [ "${LABSHIP_MODE:-}" = watch ]; then set +e; fi
readonly LOGIN_DEADLINE=180 DOCKER_DEADLINE=120
# How long a script waits for the data volume to be attached (see ensure_data).
readonly DATA_DEADLINE=${LABSHIP_DATA_DEADLINE:-600}
PHASE=begin
# A host may serve several seats of a class (SEATS: their names, in slot order; empty: the
# one deployment DEPLOYMENT). What is the host's (its lock, watchdog, certificate, image) is
# named after HOST_ID, the first seat; what is a seat's (container, volume, token, data
# volume, inputs, markers) after the seat, set by take_seat. With one deployment the two are
# the same name and every marker is as it always was.
readonly HOST_ID=$DEPLOYMENT FIRST_PORT=${PORT:-0} SEATS=${SEATS:-}
# The seat the markers name (take_seat sets it on a host of several seats).
MARK_SEAT=
# The subshell level of a seat's own shell (on_err's "a command substitution" is deeper).
SEAT_LEVEL=0
LAST_ERROR=
ROLLBACK=
SERVED_PATH=
TOKEN_SOURCE=
TLS_FINGERPRINT=
WORKDIR=
# Full command output goes to a log file on the host; the console gets markers and, on
# failure, the last lines of what failed.
LOG_FILE=${LABSHIP_LOG_FILE:-/var/log/labship-ec2.log}
if ! (umask 077 && : >>"$LOG_FILE") 2>/dev/null; then LOG_FILE=$(mktemp); fi
OUT=$(mktemp)
trap 'rm -f "$OUT" "$OUT.aws"' EXIT
# One labship script at a time on a host: the boot script and a replace (or two copies of
# one replace, when SendCommand's answer was lost and the call was sent again) take turns,
# and the later one then finds the work done ("already runs this image"). The lock is held
# until the script exits; it waits at most as long as a whole boot may take.
LOCK_FILE=${LABSHIP_LOCK_FILE:-/var/lib/labship-ec2.lock}
if ! (: >>"$LOCK_FILE") 2>/dev/null; then LOCK_FILE=/tmp/labship-ec2.lock; fi
readonly LOCK_DEADLINE=$((LOGIN_DEADLINE + DOCKER_DEADLINE + DATA_DEADLINE + PULL_DEADLINE + JUPYTER_DEADLINE))

now() {
    local t=${EPOCHREALTIME:-}
    if [ -n "$t" ]; then
        t=${t/,/.}
        printf '%s' "${t%???}"
    else
        date +%s
    fi
}

# A line for labship: stdout (cloud-init copies it to the console) and $CONSOLE if set.
say() {
    printf '%s\n' "$1"
    if [ -n "$CONSOLE" ] && [ -w "$CONSOLE" ]; then
        printf '%s\n' "$1" >>"$CONSOLE" 2>/dev/null || true
    fi
}

# "labship: seat=NAME ..." on a host of several seats, for the seat's own steps.
seat_word() { if [ -n "$MARK_SEAT" ]; then printf 'seat=%s ' "$MARK_SEAT"; fi; }

mark() { say "labship: $(seat_word)$1 t=$(now)"; }

log() { printf '%s %s\n' "$(now)" "$*" >>"$LOG_FILE"; }

# The last non-empty line of a file, short: its end is kept (that is where docker and
# aws say what went wrong). The docker CLI's closing "Run 'docker run --help' ..." is not it.
last_line() {
    local line
    line=$(grep -v -e '^[[:space:]]*$' -e "^Run 'docker .*--help' for more information" "$1" 2>/dev/null |
        tail -n 1 | tr -d '\r' | tr '\t' ' ' || true)
    line=${line#docker: }
    line=${line#Error response from daemon: }
    if [ "${#line}" -gt 150 ]; then line="...${line: -147}"; fi
    printf '%s' "$line"
}

fail() {
    trap - ERR
    local cause=$1
    if [ -n "$ROLLBACK" ]; then
        if "$ROLLBACK" >>"$LOG_FILE" 2>&1; then
            cause="$cause; restored the previous container"
        else
            cause="$cause; could not restore the previous container (see $LOG_FILE)"
        fi
    fi
    LAST_ERROR="phase=$PHASE $(printf '%s' "$cause" | tr '\r\n\t' '   ' | cut -c1-240)"
    say "labship: $(seat_word)error $LAST_ERROR"
    exit 1
}

# Unexpected failures. In a subshell ($(...)) only exit: the command that used it fails
# in turn and reports.
on_err() {
    if [ "$BASH_SUBSHELL" -gt "$SEAT_LEVEL" ]; then exit "$1"; fi
    fail "\`$(printf '%s' "$2" | cut -c1-100)\` exited $1"
}
if [ "${LABSHIP_MODE:-}" != watch ]; then trap 'on_err $? "$BASH_COMMAND"' ERR; fi

# Runs a command with its output in the log; on failure, fails with its last line.
quiet() {
    local rc=0
    "$@" >"$OUT" 2>&1 || rc=$?
    cat "$OUT" >>"$LOG_FILE"
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$OUT"
        fail "$1${2:+ $2} exited $rc: $(last_line "$OUT")"
    fi
}

# Sleeps 1, 2, ... 5 s between attempts, never past the deadline.
backoff() {
    local delay=$(($1 < 5 ? $1 : 5)) left=$(($2 - SECONDS))
    if [ "$left" -lt "$delay" ]; then delay=$left; fi
    if [ "$delay" -gt 0 ]; then sleep "$delay"; fi
}

take_lock() {
    if ! command -v flock >/dev/null 2>&1; then
        log "no flock on this host: running without the lock"
        return 0
    fi
    exec 9>>"$LOCK_FILE"
    if ! flock -w "$LOCK_DEADLINE" 9; then
        fail "another labship script on this host kept its lock for ${LOCK_DEADLINE}s"
    fi
}

wait_for_docker() {
    local deadline=$((SECONDS + DOCKER_DEADLINE))
    until docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "docker did not start within ${DOCKER_DEADLINE}s"
        fi
        sleep 2
    done
}

require_aws_cli() {
    if ! command -v aws >/dev/null 2>&1; then
        fail "this AMI needs the AWS CLI v2: 'aws' is not on PATH"
    fi
}

# One login attempt: the instance profile's credentials, piped (never printed).
login_once() {
    : >"$OUT.aws"
    aws ecr get-login-password --region "$REGION" 2>"$OUT.aws" |
        docker login --username AWS --password-stdin "$REGISTRY" >"$OUT" 2>&1
}

# The instance profile's credentials can take seconds to appear after boot (and a new
# role a little longer to propagate): retry any failure until LOGIN_DEADLINE.
ecr_login() {
    local deadline=$((SECONDS + LOGIN_DEADLINE)) n=0 why
    require_aws_cli
    until login_once; do
        n=$((n + 1))
        why=$(last_line "$OUT.aws")
        why=${why:-$(last_line "$OUT")}
        log "ecr login attempt $n: $why"
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "ECR login to $REGISTRY failed for ${LOGIN_DEADLINE}s: $why"
        fi
        backoff "$n" "$deadline"
    done
}

# labship launches the instance while the image is still being pushed, so "manifest
# unknown" / "not found" are normal at first: retry until PULL_DEADLINE. An auth error
# means the login expired or was refused: log in again before the next attempt.
pull_image() {
    local deadline=$((SECONDS + PULL_DEADLINE)) n=0 why
    until docker pull "$IMAGE" >"$OUT" 2>&1; do
        n=$((n + 1))
        why=$(last_line "$OUT")
        log "pull attempt $n: $why"
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "docker pull: $why (gave up after ${PULL_DEADLINE}s)"
        fi
        if grep -qiE 'unauthorized|authentication required|no basic auth|denied|expired' "$OUT"; then
            login_once || log "re-login failed: $(last_line "$OUT.aws")"
        fi
        backoff "$n" "$deadline"
    done
    cat "$OUT" >>"$LOG_FILE"
}

# Sets WORKDIR to the image's working directory (where the workspace volume goes).
# Go templates are written '{''{...}}': labship's renderer rejects a literal double brace.
image_workdir() {
    WORKDIR=$(docker image inspect --format '{''{.Config.WorkingDir}}' "$IMAGE") ||
        fail "docker image inspect $IMAGE failed"
    WORKDIR=${WORKDIR:-/home/jovyan}
}

# The workspace on the deployment's data volume (DATA_VOLUME=1): an encrypted EBS volume
# that outlives the instance, which labship attaches as /dev/sdf once the instance runs (the
# seat of slot N of a host of several seats: the Nth letter after f, /dev/sdg for slot 1).
# It is formatted (ext4, or XFS) only when it holds no file system at all, mounted at
# $DATA_MOUNT and put in /etc/fstab (later boots mount it before Docker starts), and the
# deployment's Docker volume binds its workspace folder. Until it is mounted that folder
# does not exist, so a container can never write to the root disk instead.
DATA_MOUNT=${LABSHIP_DATA_MOUNT:-/var/lib/labship-data/$DEPLOYMENT}
FSTAB=${LABSHIP_FSTAB:-/etc/fstab}
DATA_DIR=
DATA_REUSED=0
# The seat's slot on its host (0: the first, or the one deployment).
SLOT=0

# The device letter of the seat's data volume: f, then g, h, ... for the later slots.
data_letter() { local letters=fghijklmnop; printf '%s' "${letters:SLOT:1}"; }

# The data volume's block device (nothing while it is not attached): /dev/sdf or /dev/xvdf,
# or on Nitro hosts the EBS NVMe disk (serial vol...) that does not hold /. A host of
# several seats knows each seat's volume by its device name only (Amazon Linux's udev rules
# name the NVMe disks after it); a host of one seat has one data disk, as a deployment's.
data_device() {
    local dev root names letter
    letter=$(data_letter)
    read -ra names <<<"${LABSHIP_DATA_DEVICES:-/dev/sd$letter /dev/xvd$letter}"
    for dev in "${names[@]}"; do
        if [ -b "$dev" ]; then
            readlink -f "$dev"
            return 0
        fi
    done
    if [ "$SEATS" != "${SEATS%% *}" ]; then return 0; fi
    root=$(lsblk -no PKNAME "$(findmnt -no SOURCE /)" 2>/dev/null | head -n 1 || true)
    lsblk -dno NAME,SERIAL 2>/dev/null |
        awk -v root="$root" -v dev="${LABSHIP_DEV_DIR:-/dev}" \
            '$2 ~ /^vol/ && $1 != root { print dev "/" $1; exit }' || true
}

# The test rig's instance simulator has no block devices: there an attached volume is a
# folder, $LABSHIP_SIM_EBS_DIR/<volume id>, a link its AttachVolume makes, and
# $LABSHIP_SIM_EBS_DIR/dev-sdX, a link named after the device it was attached as.
sim_data_dir() {
    local f
    if [ -n "$SEATS" ]; then
        f="$LABSHIP_SIM_EBS_DIR/dev-sd$(data_letter)"
        if [ -e "$f" ]; then readlink -f "$f"; fi
        return 0
    fi
    for f in "$LABSHIP_SIM_EBS_DIR"/vol-*; do
        if [ -e "$f" ]; then
            readlink -f "$f"
            return 0
        fi
    done
}

# Whether the device reads, and its first MiB is all zeros (a new EBS volume).
blank_device() {
    local nonzero
    head -c 1 "$1" >/dev/null 2>&1 || return 1
    nonzero=$(head -c 1048576 "$1" 2>/dev/null | tr -d '\000' | wc -c) || return 1
    [ "$nonzero" = 0 ]
}

mount_data() {
    local dev=$1 rc=0 fstype uuid line
    mkdir -p "$DATA_MOUNT"
    if mountpoint -q "$DATA_MOUNT"; then return 0; fi
    # Exit status 2: no file system, no partition table, nothing (a new volume); but also a
    # device blkid could not read. So a format also needs the first MiB to read as zeros.
    blkid -p "$dev" >/dev/null 2>&1 || rc=$?
    if [ "$rc" = 2 ] && ! blank_device "$dev"; then
        fail "blkid finds no file system on the data volume $dev, but it is not blank (or cannot be read); nothing was formatted"
    fi
    if [ "$rc" = 2 ]; then
        # ext4, or XFS on a host without e2fsprogs (Amazon Linux 2023's root is XFS).
        if command -v mkfs.ext4 >/dev/null 2>&1; then
            log "formatting the new data volume $dev (ext4)"
            quiet mkfs.ext4 -q -L labship-data "$dev"
        else
            log "formatting the new data volume $dev (xfs)"
            quiet mkfs.xfs -q -L labship-data "$dev"
        fi
    elif [ "$rc" != 0 ]; then
        fail "blkid could not read the data volume $dev (exit $rc); nothing was formatted"
    fi
    fstype=$(blkid -o value -s TYPE "$dev" || true)
    uuid=$(blkid -o value -s UUID "$dev" || true)
    case "$fstype" in
        ext4 | xfs) ;;
        *) fail "the data volume $dev holds ${fstype:-something without a file system}, not the ext4 or XFS labship makes; it was left as it is" ;;
    esac
    # One line for the mount point (another volume's, from before, goes); mounted before
    # Docker starts at later boots, so the containers find their workspace.
    line="UUID=$uuid $DATA_MOUNT $fstype defaults,nofail,x-systemd.before=docker.service 0 2"
    # The seats of one host start side by side: one change of the file, and one mount (which
    # reads it), at a time.
    if [ -n "$SEATS" ] && command -v flock >/dev/null 2>&1; then
        exec 7>>"$LOCK_FILE.fstab"
        flock -w 60 7 || true
    fi
    if ! grep -qxF "$line" "$FSTAB" 2>/dev/null; then
        { grep -vF " $DATA_MOUNT " "$FSTAB" 2>/dev/null || true; printf '%s\n' "$line"; } >"$FSTAB.labship"
        cat "$FSTAB.labship" >"$FSTAB"
        rm -f "$FSTAB.labship"
    fi
    quiet mount "$DATA_MOUNT"
    if [ -n "$SEATS" ]; then exec 7>&-; fi
}

# Waits (DATA_DEADLINE) for the data volume, mounts it; sets DATA_DIR (the workspace folder
# on it) and DATA_REUSED (1: it already holds a workspace, from an earlier instance).
ensure_data() {
    if [ "$DATA_VOLUME" != 1 ]; then return 0; fi
    local deadline=$((SECONDS + DATA_DEADLINE)) found=
    while :; do
        if [ -n "${LABSHIP_SIM_EBS_DIR:-}" ]; then found=$(sim_data_dir); else found=$(data_device); fi
        if [ -n "$found" ]; then break; fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "no data volume was attached within ${DATA_DEADLINE}s; \`labship up\` again attaches it"
        fi
        sleep 1
    done
    if [ -n "${LABSHIP_SIM_EBS_DIR:-}" ]; then
        DATA_DIR=$found/workspace
    else
        mount_data "$found"
        DATA_DIR=$DATA_MOUNT/workspace
    fi
    if [ -n "$(ls -A "$DATA_DIR" 2>/dev/null || true)" ]; then DATA_REUSED=1; fi
    mkdir -p "$DATA_DIR"
    log "data volume: $found, workspace $DATA_DIR (reused: $DATA_REUSED)"
}

ensure_volume() {
    local bound
    if [ -n "$DATA_DIR" ]; then
        bound=$(docker volume inspect --format '{''{index .Options "device"}}' "$VOLUME" 2>/dev/null || true)
        if [ "$bound" = "$DATA_DIR" ]; then return 0; fi
        if docker volume inspect "$VOLUME" >/dev/null 2>&1; then
            fail "the Docker volume $VOLUME exists but is not on the data volume (${bound:-not bound}); nothing was changed"
        fi
        quiet docker volume create --label "$LABEL=$DEPLOYMENT" --opt type=none --opt o=bind \
            --opt device="$DATA_DIR" "$VOLUME"
        return 0
    fi
    if ! docker volume inspect "$VOLUME" >/dev/null 2>&1; then
        quiet docker volume create --label "$LABEL=$DEPLOYMENT" "$VOLUME"
    fi
}

# Files a new image brings into its working directory (a new notebook, a data set) are
# copied into the existing workspace volume; what is already there wins (cp -n never
# overwrites), so nobody's notebooks are touched. A fresh volume is filled by Docker itself.
sync_workspace() {
    if ! docker run --rm --user 0 --entrypoint cp -v "$VOLUME:/labship-workspace" \
        "$IMAGE" -Rnp "$WORKDIR/." /labship-workspace/ >>"$LOG_FILE" 2>&1; then
        log "could not copy the new image's files into $VOLUME; the workspace is unchanged"
    fi
}

# The Jupyter token is made by labship and sealed in SSM Parameter Store as a SecureString
# ($TOKEN_PARAMETER); the host reads it with its instance role into a root-only env file
# that every container of the deployment gets (JUPYTER_TOKEN). It is read again before
# each new container, so a rotated token takes effect, and it is never printed: not to the
# console, the log, the command's output, nor put in any command line.
TOKEN_PARAMETER="/labship/$DEPLOYMENT/token"
STATE_DIR=${LABSHIP_STATE_DIR:-/var/lib/labship}
TOKEN_ENV="$STATE_DIR/$DEPLOYMENT.env"
fetch_token() {
    local deadline=$((SECONDS + LOGIN_DEADLINE)) n=0 why value=
    require_aws_cli
    # A new role can take a few seconds to be usable: retry until LOGIN_DEADLINE.
    until value=$(aws ssm get-parameter --region "$REGION" --name "$TOKEN_PARAMETER" \
        --with-decryption --query Parameter.Value --output text 2>"$OUT.aws"); do
        n=$((n + 1))
        why=$(last_line "$OUT.aws")
        log "token read attempt $n: $why"
        # labship writes the parameter before it launches the host: gone is final.
        if grep -q 'ParameterNotFound' "$OUT.aws"; then
            fail "the token parameter $TOKEN_PARAMETER does not exist (run \`labship up --ec2\` again)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "could not read the token parameter $TOKEN_PARAMETER for ${LOGIN_DEADLINE}s: $why"
        fi
        backoff "$n" "$deadline"
    done
    if ! [[ "$value" =~ ^[0-9A-Za-z_-]{16,256}$ ]]; then
        fail "the parameter $TOKEN_PARAMETER does not hold a Jupyter token"
    fi
    (
        umask 077
        mkdir -p "$STATE_DIR"
        printf 'JUPYTER_TOKEN=%s\n' "$value" >"$TOKEN_ENV.tmp"
        mv "$TOKEN_ENV.tmp" "$TOKEN_ENV"
    )
}

# TLS: the host makes a key and a self-signed certificate once (they survive container
# replacements and reboots) in a root-owned directory; only the group $TLS_GID may read the
# key, and the container joins that group (--group-add) to serve HTTPS with it. The key never
# leaves the host. The certificate's SHA-256 fingerprint goes to the console, where labship
# reads it and pins it on every connection; the host's own checks pin its public key. The
# seats of one host serve its one certificate.
TLS_DIR="$STATE_DIR/tls/$HOST_ID"
TLS_GID=${LABSHIP_TLS_GID:-64000}
TLS_PIN=
ensure_tls() {
    local fp
    if ! command -v openssl >/dev/null 2>&1; then
        fail "this AMI needs openssl to make Jupyter's TLS certificate"
    fi
    if [ ! -s "$TLS_DIR/key.pem" ] || [ ! -s "$TLS_DIR/cert.pem" ]; then
        mkdir -p "$TLS_DIR"
        chmod 0750 "$TLS_DIR"
        quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -days 3650 -subj "/CN=labship $HOST_ID" \
            -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
            -keyout "$TLS_DIR/key.pem.tmp" -out "$TLS_DIR/cert.pem.tmp"
        chown "0:$TLS_GID" "$TLS_DIR" "$TLS_DIR/key.pem.tmp"
        chmod 0440 "$TLS_DIR/key.pem.tmp"
        chmod 0444 "$TLS_DIR/cert.pem.tmp"
        mv "$TLS_DIR/key.pem.tmp" "$TLS_DIR/key.pem"
        mv "$TLS_DIR/cert.pem.tmp" "$TLS_DIR/cert.pem"
    fi
    # Jupyter reads these from JUPYTER_CONFIG_PATH: Jupyter Server, and notebook < 7.
    printf '{"ServerApp": {"certfile": "/etc/labship-tls/cert.pem", "keyfile": "/etc/labship-tls/key.pem"}}\n' \
        >"$TLS_DIR/jupyter_server_config.json"
    printf '{"NotebookApp": {"certfile": "/etc/labship-tls/cert.pem", "keyfile": "/etc/labship-tls/key.pem"}}\n' \
        >"$TLS_DIR/jupyter_notebook_config.json"
    chmod 0444 "$TLS_DIR/jupyter_server_config.json" "$TLS_DIR/jupyter_notebook_config.json"
    fp=$(openssl x509 -in "$TLS_DIR/cert.pem" -noout -fingerprint -sha256) ||
        fail "openssl could not read $TLS_DIR/cert.pem"
    TLS_FINGERPRINT=${fp#*=}
    TLS_PIN=$(tls_pin) || fail "openssl could not hash the certificate's key"
}

# The SHA-256 of the certificate's public key, base64: what curl's --pinnedpubkey checks.
tls_pin() {
    openssl x509 -in "$TLS_DIR/cert.pem" -noout -pubkey | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64
}

# What a container must match to be kept: image, its inputs, and where it is published.
# Where the container is published: $BIND unless a recreate keeps the running one's.
PUBLISH_BIND=$BIND
publish_label() { printf '%s' "dev.labship.ec2.publish=$PUBLISH_BIND:$PORT"; }
container_identity() {
    docker container inspect --format \
        '{''{.Image}} {''{.State.Running}} {''{with index .Config.Labels "dev.labship.ec2.inputs"}}{''{.}}{''{else}}none{''{end}} {''{index .Config.Labels "dev.labship.ec2.publish"}}' \
        "$CONTAINER" 2>/dev/null || true
}

# The deployment's [data] inputs (INPUTS: inputs.tsv lines, kind, name, bucket region,
# address; INPUTS_ID what identifies them, `-` for "those the host has"): copied with the
# instance role into a folder of their own, made readable, and mounted read-only at
# <workdir>/inputs of each new container, whose label carries the id (other inputs: a new
# container). Copied again for every new container, so it gets the objects as they are now,
# and before the running container is touched: a copy that fails leaves it serving. The
# host's record of its inputs ($INPUTS_ROOT.id) and the copies of other inputs change only
# once the new container stays (keep_inputs), so a container put back still has its own.
INPUTS_ROOT="$STATE_DIR/inputs/$DEPLOYMENT"
inputs_wanted() {
    if [ "$INPUTS_ID" = - ]; then
        cat "$INPUTS_ROOT.id" 2>/dev/null || printf none
    else
        printf '%s' "$INPUTS_ID"
    fi
}
# One copy of the input $1 (the command after it), as `quiet` runs it, tried again while S3
# refuses it (until LOGIN_DEADLINE): a role the host was just moved to (a deployment gaining
# inputs) reaches its credentials seconds later. Any other failure is final at once.
copy_input() {
    local uri=$1 deadline=$((SECONDS + LOGIN_DEADLINE)) n=0
    shift
    until "$@" >"$OUT" 2>&1; do
        n=$((n + 1))
        cat "$OUT" >>"$LOG_FILE"
        if [ "$SECONDS" -ge "$deadline" ] ||
            ! grep -qE 'AccessDenied|Forbidden|\(403\)|Unable to locate credentials' "$OUT"; then
            tail -n 20 "$OUT"
            fail "could not copy the input $uri: $(last_line "$OUT")"
        fi
        log "input copy attempt $n refused: $(last_line "$OUT")"
        backoff "$n" "$deadline"
    done
    cat "$OUT" >>"$LOG_FILE"
}
# Copies the inputs listed on stdin (inputs.tsv lines: `file` or `folder`, the name under
# the folder, the bucket's region, the address) into the folder $1, with the instance role.
copy_inputs() {
    local kind name region uri
    mkdir -p "$1"
    while IFS=$'\t' read -r kind name region uri; do
        [ -n "$name" ] || continue
        case $kind in
        file) copy_input "$uri" aws s3 cp --only-show-errors --region "$region" "$uri" "$1/$name" ;;
        folder) copy_input "$uri" aws s3 cp --recursive --only-show-errors --region "$region" "$uri" "$1/$name/" ;;
        *) fail "unknown input kind $kind" ;;
        esac
        log "input $name copied"
    done
}
# The inputs' copy for the next container, made at $INPUTS_ROOT/$INPUTS_ID.new while the
# running container goes on; run_container puts it in place once that one is stopped.
fetch_inputs() {
    local dir="$INPUTS_ROOT/$INPUTS_ID"
    case $INPUTS_ID in - | none) return 0 ;; esac
    mkdir -p "$INPUTS_ROOT"
    rm -rf "$dir.new"
    copy_inputs "$dir.new" <<<"$INPUTS"
    chmod -R a+rX "$dir.new"
    log "inputs $INPUTS_ID copied"
}
# Once the container with the inputs it wanted runs for good (ready after a replace, which
# may still put the old one back; started at boot): the host's record of them, and no other
# inputs' copy left.
keep_inputs() {
    local id old
    id=$(inputs_wanted)
    mkdir -p "$INPUTS_ROOT"
    printf '%s\n' "$id" >"$INPUTS_ROOT.id"
    for old in "$INPUTS_ROOT"/*; do
        if [ -e "$old" ] && [ "${old##*/}" != "$id" ]; then rm -rf "$old"; fi
    done
}

# The new container's memory (MiB) and CPU limits: the script's (SEAT_MEMORY, SEAT_CPUS),
# or what a replace reads off the running container (keep_limits in replace.sh).
MEMORY_LIMIT=${SEAT_MEMORY:-} CPU_LIMIT=${SEAT_CPUS:-}

# A new container (fetch_inputs first; no container runs with the inputs' folder now).
run_container() {
    local id inputs=() limits=() dir="$INPUTS_ROOT/$INPUTS_ID"
    # A seat beside others: its own share of the host, so one runaway kernel cannot take
    # the host from the rest.
    if [ -n "$MEMORY_LIMIT" ]; then limits+=(--memory "${MEMORY_LIMIT}m"); fi
    if [ -n "$CPU_LIMIT" ]; then limits+=(--cpus "$CPU_LIMIT"); fi
    if [ -d "$dir.new" ]; then
        rm -rf "$dir"
        mv "$dir.new" "$dir"
    fi
    id=$(inputs_wanted)
    if [ "$id" != none ] && [ -d "$INPUTS_ROOT/$id" ]; then
        inputs=(-v "$INPUTS_ROOT/$id:$WORKDIR/inputs:ro")
    fi
    quiet docker run -d --name "$CONTAINER" --label "$LABEL=$DEPLOYMENT" \
        --label "$(publish_label)" --label "dev.labship.ec2.inputs=$id" --env-file "$TOKEN_ENV" \
        --group-add "$TLS_GID" -v "$TLS_DIR:/etc/labship-tls:ro" \
        -e JUPYTER_CONFIG_PATH=/etc/labship-tls \
        --restart unless-stopped --init -p "$PUBLISH_BIND:$PORT:$CONTAINER_PORT" \
        ${limits[@]+"${limits[@]}"} ${inputs[@]+"${inputs[@]}"} -v "$VOLUME:$WORKDIR" "$IMAGE"
}

# The newest URL with a token in a Jupyter log, preferring the 127.0.0.1 / localhost
# form of the newest token (Jupyter prints the container's hostname first).
newest_token_url() {
    local urls last local_url
    urls=$(grep -oE "https?://[^[:space:]\"'<>]*[?&]token=[^[:space:]\"'<>&]+" "$1" || true)
    [ -n "$urls" ] || return 0
    last=$(printf '%s\n' "$urls" | tail -n 1)
    local_url=$(printf '%s\n' "$urls" | grep -F -- "token=${last##*token=}" |
        grep -E '^https?://(127\.0\.0\.1|localhost|\[::1\])[:/]' | tail -n 1 || true)
    printf '%s' "${local_url:-$last}"
}

# Does Jupyter answer on the host port? /api/status needs the token (sent in a header
# read from stdin, so it is not in argv). A token set explicitly is logged as "...":
# then any HTTP answer below 500 will do.
jupyter_answers() {
    local tok=${1##*token=} path code
    path=${1#*://*/}
    path=/${path%%\?*}
    local status_url="https://$HOST_ADDR:$PORT${path%/*}/api/status"
    # The certificate is the host's own: its public key is pinned (its name is not checked).
    local tls=(-k --pinnedpubkey "sha256//$TLS_PIN")
    if [ "$tok" = "..." ]; then
        code=$(curl "${tls[@]}" -sS -o /dev/null -w '%{http_code}' --max-time 5 "$status_url" 2>/dev/null) || return 1
        case "$code" in
        [1-4][0-9][0-9]) return 0 ;;
        *) return 1 ;;
        esac
    else
        printf 'header = "Authorization: token %s"\n' "$tok" |
            curl "${tls[@]}" -fsS -o /dev/null --max-time 5 -K - "$status_url" >/dev/null 2>&1
    fi
}

container_state() {
    docker container inspect --format '{''{.State.Status}} {''{.RestartCount}} {''{.State.ExitCode}}' "$CONTAINER" 2>/dev/null ||
        printf 'missing 0 0'
}

# The path of a Jupyter URL (`/lab` of http://127.0.0.1:8888/lab?token=...), limited to
# characters that are safe on a console line.
url_path() {
    local rest=${1#*://} path=/
    if [[ "$rest" == */* ]]; then path=/${rest#*/}; fi
    path=${path%%\?*}
    if [[ "$path" =~ ^/[A-Za-z0-9._~/-]*$ ]]; then printf '%s' "$path"; else printf '/lab'; fi
}

# Waits until Jupyter answers, and says with whose token: the sealed one labship handed it
# (TOKEN_SOURCE=labship), or, for an image that sets its own, the one its log shows
# (TOKEN_SOURCE=image). Sets SERVED_PATH. Neither token is printed. Fails fast with the
# log's last lines if the container stops or restarts.
wait_jupyter() {
    local deadline=$((SECONDS + JUPYTER_DEADLINE)) state restarts url ours logged
    ours=$(sed -n 's/^JUPYTER_TOKEN=//p' "$TOKEN_ENV" 2>/dev/null || true)
    state=$(container_state)
    restarts=$(printf '%s' "$state" | cut -d' ' -f2)
    while :; do
        state=$(container_state)
        if [ "${state%% *}" != running ] || [ "$(printf '%s' "$state" | cut -d' ' -f2)" != "$restarts" ]; then
            docker logs --tail 20 "$CONTAINER" >"$OUT" 2>&1 || true
            tail -n 20 "$OUT" | redact_tokens
            fail "container stopped (${state%% *}, exit code ${state##* }): $(last_line "$OUT" | redact_tokens)"
        fi
        docker logs "$CONTAINER" >"$OUT" 2>&1 || true
        url=$(newest_token_url "$OUT")
        logged=${url##*token=}
        if [ "${url%%://*}" = http ]; then
            fail "Jupyter serves plain HTTP: the image overrides the host's TLS settings (its own certfile, or no JUPYTER_CONFIG_PATH support)"
        fi
        if [ -n "$url" ] && [ -n "$ours" ]; then
            # Jupyter logs a token it was given as "token=...".
            if { [ "$logged" = "..." ] || [ "$logged" = "$ours" ]; } &&
                jupyter_answers "${url%%token=*}token=$ours"; then
                SERVED_PATH=$(url_path "$url")
                TOKEN_SOURCE=labship
                return 0
            fi
        fi
        if [ -n "$url" ] && [ "$logged" != "..." ] && [ "$logged" != "$ours" ] &&
            jupyter_answers "$url"; then
            SERVED_PATH=$(url_path "$url")
            TOKEN_SOURCE=image
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            if [ -n "$url" ]; then
                fail "Jupyter logged its URL but did not answer on $HOST_ADDR:$PORT within ${JUPYTER_DEADLINE}s"
            fi
            fail "no Jupyter token URL in the log within ${JUPYTER_DEADLINE}s: $(last_line "$OUT" | redact_tokens)"
        fi
        sleep 1
    done
}

# Log lines may carry a token (an image's own): shown as **** on the console.
redact_tokens() { sed -E 's/([?&]token=)[A-Za-z0-9_-]+/\1****/g'; }

# The console line that ends a start: whose token Jupyter accepts, never the token.
say_served() {
    say "labship: $(seat_word)tls sha256=$TLS_FINGERPRINT"
    say "labship: $(seat_word)token path=$SERVED_PATH source=$TOKEN_SOURCE"
    printf '%s %s %s\n' "$SERVED_PATH" "$TOKEN_SOURCE" "$TLS_FINGERPRINT" >"$STATE_DIR/$DEPLOYMENT.served" || true
}

# ---- several seats on one host ----
# Makes the seat of a seats line, "NAME SLOT PORT" (of `script_seats` or `watched`), the one
# the functions above work on: its container, Docker volume, port, sealed token, data volume
# (mounted beside where the host's first seat's would be), inputs and markers. `one` (the
# one deployment): nothing to change.
take_seat() {
    local name
    if [ "$1" = one ]; then return 0; fi
    read -r name SLOT PORT <<<"$1"
    DEPLOYMENT=$name
    MARK_SEAT=$name
    CONTAINER=labship-ec2-$name
    VOLUME=labship-ec2-$name-work
    PUBLISH_BIND=$BIND
    TOKEN_PARAMETER=/labship/$name/token
    TOKEN_ENV=$STATE_DIR/$name.env
    DATA_MOUNT=${DATA_MOUNT%/*}/$name
    DATA_DIR=
    DATA_REUSED=0
    INPUTS_ROOT=$STATE_DIR/inputs/$name
    ROLLBACK=
    SERVED_PATH=
    TOKEN_SOURCE=
}

# The seats of the script, "NAME SLOT PORT" lines in slot order, the port the first seat's
# plus the slot (none: one deployment's host).
script_seats() {
    local name slot=0
    for name in $SEATS; do
        printf '%s %s %s\n' "$name" "$slot" $((FIRST_PORT + slot))
        slot=$((slot + 1))
    done
}

# The seats this host serves now: the boot's record of them, else the script's.
host_seats() {
    if [ -s "$HOST_SEATS" ]; then cat "$HOST_SEATS"; else script_seats; fi
}

# Whether this host serves several seats (its boot's record says so, whatever script runs).
seated() { [ -n "$SEATS" ] || [ -s "$HOST_SEATS" ]; }

# ---- idle stop and TTL: the watchdog ----
# IDLE_STOP and TTL are seconds (0: off), set by the template. The boot and replace scripts
# copy themselves to $HOST_SCRIPT, and `LABSHIP_MODE=watch bash $HOST_SCRIPT` runs
# watch_main instead of their body: one watchdog per deployment (a lock), started by them and,
# at every later boot, by a cloud-init per-boot hook, which also notes when the boot began
# ($BOOT_STAMP: the TTL counts from there) and has the watchdog say again on the console what
# Jupyter serves once it answers (a start from outside labship runs no other script).
# Activity, checked every IDLE_STOP/6 (5 to 60 s): a kernel busy or starting; the newest
# last_activity of the kernels and terminals and last_modified of the workspace's top-level
# entries (a saved notebook); the Jupyter container using more than a tenth of one CPU (a
# job in a terminal, a kernel's background work); a boot or replace script running (it holds
# the lock). Polling the API (an open browser tab, /api/status) is not activity. When Jupyter
# does not answer and the container's CPU cannot be read, the host's CPU decides. Idle for
# IDLE_STOP, or TTL after the boot: a marker on the console and `shutdown -h now` (the
# instance stops: RunInstances says InstanceInitiatedShutdownBehavior=stop). The TTL is also
# handed, three minutes later, to the system's own scheduled shutdown when the watchdog
# starts, so it holds if the watchdog dies.
HOST_SCRIPT="$STATE_DIR/$HOST_ID.host.sh"
BOOT_STAMP="$STATE_DIR/$HOST_ID.boot"
WATCH_PID="$STATE_DIR/$HOST_ID.watch.pid"
PER_BOOT="${LABSHIP_PER_BOOT_DIR:-/var/lib/cloud/scripts/per-boot}/labship-$HOST_ID.sh"
# The seats the watchdog watches, "NAME SLOT PORT" lines, written by the boot script: what
# the host serves, whichever script started the watchdog. (A replace of one seat of such a
# host names the host as its DEPLOYMENT, and the seat as SEAT: the watchdog, its hook and
# the certificate are the host's; a seat leaving removes its line.)
HOST_SEATS="$STATE_DIR/$HOST_ID.seats"
WATCH_CONSOLE=${LABSHIP_WATCH_CONSOLE:-/dev/console}

# Installs this script as $HOST_SCRIPT with the per-boot hook, and (re)starts the watchdog
# (on a host of several seats, the boot's first also records them in $HOST_SEATS)
# with this script's settings (`install_watch boot`: the boot began now; `keep`: the boot
# time stays). $0 is the script's file (cloud-init, SSM); `bash -c` has none but its text.
install_watch() {
    (umask 077 && mkdir -p "$STATE_DIR")
    mkdir -p "${PER_BOOT%/*}"
    if [ -n "${BASH_EXECUTION_STRING:-}" ]; then
        printf '%s\n' "$BASH_EXECUTION_STRING" >"$HOST_SCRIPT.tmp"
    elif [ -f "$0" ] && [ -r "$0" ]; then
        cat -- "$0" >"$HOST_SCRIPT.tmp"
    else
        log "cannot copy this script to $HOST_SCRIPT: no idle stop or TTL on this host"
        return 0
    fi
    chmod 0700 "$HOST_SCRIPT.tmp"
    mv "$HOST_SCRIPT.tmp" "$HOST_SCRIPT"
    if [ "${1:-}" = boot ] && [ -n "$SEATS" ]; then
        script_seats >"$HOST_SEATS.tmp"
        mv "$HOST_SEATS.tmp" "$HOST_SEATS"
    fi
    printf '#!/bin/bash\ndate +%%s >%q\nLABSHIP_MODE=watch LABSHIP_WATCH_ANNOUNCE=1 setsid bash %q </dev/null >>%q 2>&1 &\n' \
        "$BOOT_STAMP" "$HOST_SCRIPT" "$LOG_FILE" >"$PER_BOOT.tmp"
    chmod 0700 "$PER_BOOT.tmp"
    mv "$PER_BOOT.tmp" "$PER_BOOT"
    if [ "${1:-}" = boot ] || ! [[ "$(cat "$BOOT_STAMP" 2>/dev/null)" =~ ^[0-9]+$ ]]; then
        date +%s >"$BOOT_STAMP"
    fi
    local old
    old=$(cat "$WATCH_PID" 2>/dev/null || true)
    # Only the watchdog: a stale pid may be another process by now.
    if [[ "$old" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -qF -- "$HOST_SCRIPT"; then
        kill "$old" 2>/dev/null || true
    fi
    LABSHIP_MODE=watch setsid bash "$HOST_SCRIPT" </dev/null >>"$LOG_FILE" 2>&1 9>&- &
    log "watchdog started: idle stop ${IDLE_STOP}s, ttl ${TTL}s (0: off)"
}

watch_say() {
    local line
    line="labship: $1 t=$(now)"
    printf '%s\n' "$line"
    if [ -w "$WATCH_CONSOLE" ]; then printf '%s\n' "$line" >>"$WATCH_CONSOLE" 2>/dev/null || true; fi
}

# 90s, 45m, 8h, 2d: a span as labship's settings write it.
span() {
    local s=$1
    if [ $((s % 86400)) -eq 0 ]; then printf '%dd' $((s / 86400))
    elif [ $((s % 3600)) -eq 0 ]; then printf '%dh' $((s / 3600))
    elif [ $((s % 60)) -eq 0 ] || [ "$s" -ge 3600 ]; then printf '%dm' $((s / 60))
    else printf '%ds' "$s"; fi
}

# One page of Jupyter's API, with the sealed token (read from stdin by curl, never in argv).
jupyter_get() {
    printf 'header = "Authorization: token %s"\n' "$2" |
        curl -k --pinnedpubkey "sha256//$TLS_PIN" -sS --max-time 10 -K - \
            -w '\n%{http_code}' "https://$HOST_ADDR:$PORT$BASE_PATH/$1" 2>/dev/null
}

# Sets ACT to "busy" or to the newest activity (Unix seconds, 0: none); fails when Jupyter
# does not answer with the sealed token. Sets SERVED (path source fingerprint) when it
# answers.
jupyter_activity() {
    local tok out page t answer code
    tok=$(sed -n 's/^JUPYTER_TOKEN=//p' "$TOKEN_ENV" 2>/dev/null || true)
    [ -n "$tok" ] || return 1
    # The watchdog may start before the certificate exists (early in the first boot).
    if [ -z "$TLS_PIN" ]; then TLS_PIN=$(tls_pin 2>/dev/null) && [ -n "$TLS_PIN" ] || return 1; fi
    SERVED=$(cat "$STATE_DIR/$DEPLOYMENT.served" 2>/dev/null || true)
    BASE_PATH=${SERVED%% *}
    BASE_PATH=${BASE_PATH%/lab}
    BASE_PATH=${BASE_PATH%/tree}
    BASE_PATH=${BASE_PATH%/}
    out=
    for page in api/kernels api/terminals 'api/contents?content=1'; do
        answer=$(jupyter_get "$page" "$tok") || return 1
        code=${answer##*$'\n'}
        answer=${answer%$'\n'*}
        # Terminals may be turned off (404): none, then.
        if [ "$code" = 404 ] && [ "$page" = api/terminals ]; then continue; fi
        [ "$code" = 200 ] || return 1
        out+=$answer
    done
    if grep -Eq '"execution_state": *"(busy|starting)"' <<<"$out"; then
        ACT=busy
        return 0
    fi
    ACT=0
    while read -r t; do
        t=$(date -d "$t" +%s 2>/dev/null) || continue
        if [ "$t" -gt "$ACT" ]; then ACT=$t; fi
    done < <(grep -oE '"(last_activity|last_modified)": *"[^"]+"' <<<"$out" | sed -E 's/.*"([^"]+)"$/\1/')
}

# Whether the Jupyter container uses more than a tenth of one CPU (0: no, 1: yes, 2: unknown).
container_busy() {
    local pct
    pct=$(docker stats --no-stream --format '{''{.CPUPerc}}' "$CONTAINER" 2>/dev/null) || return 2
    pct=${pct%%[.%]*}
    [[ "$pct" =~ ^[0-9]+$ ]] || return 2
    [ "$pct" -ge 10 ] && return 1
    return 0
}

# Sets ACT to "busy" when the host's CPUs worked more than a tenth of one CPU since the last
# call.
CPU_PREV=
cpu_activity() {
    local _ user nice sys idle iow irq sirq steal busy total
    read -r _ user nice sys idle iow irq sirq steal _ </proc/stat
    total=$((user + nice + sys + idle + iow + irq + sirq + steal))
    busy=$((total - idle - iow))
    ACT=0
    if [ -n "$CPU_PREV" ] &&
        [ $(((busy - ${CPU_PREV% *}) * $(nproc) * 10)) -gt $((total - ${CPU_PREV#* })) ]; then
        ACT=busy
    fi
    CPU_PREV="$busy $total"
}

# What the watchdog watches: this host's seats ("NAME SLOT PORT" lines), or `one`, the one
# deployment.
watched() { if seated; then host_seats; else printf 'one\n'; fi; }


# ACT for this check (see the section's comment): busy when one seat is, else the newest
# activity of them all; the host's CPU decides for the seats whose Jupyter does not answer
# and whose container's CPU cannot be read.
activity() {
    local seats seat cpu answered busy=0 newest=0 host_cpu=0
    mapfile -t seats < <(watched)
    for seat in "${seats[@]}"; do
        take_seat "$seat"
        answered=0
        ACT=0
        if jupyter_activity; then answered=1; fi
        container_busy
        cpu=$?
        if [ "$cpu" = 1 ]; then ACT=busy; fi
        if [ "$answered" = 0 ] && [ "$cpu" = 2 ]; then host_cpu=1; fi
        if [ "$answered" = 0 ] && [ "$cpu" != 1 ]; then ACT=0; fi
        if [ "$ACT" = busy ]; then
            busy=1
        elif [ "$ACT" -gt "$newest" ]; then
            newest=$ACT
        fi
    done
    MARK_SEAT=
    ACT=$newest
    if [ "$host_cpu" = 1 ]; then
        cpu_activity
        if [ "$ACT" != busy ]; then ACT=$newest; fi
    fi
    if [ "$busy" = 1 ]; then ACT=busy; fi
    if command -v flock >/dev/null 2>&1 && ! flock -n "$LOCK_FILE" true 2>/dev/null; then ACT=busy; fi
}

# After a boot no other labship script may run: says what each seat's Jupyter serves as
# soon as it answers (looked at every second, for at most JUPYTER_DEADLINE).
announce() {
    local left=$JUPYTER_DEADLINE pending seat waiting
    mapfile -t pending < <(watched)
    while [ "$left" -gt 0 ] && [ "${#pending[@]}" -gt 0 ]; do
        waiting=()
        for seat in "${pending[@]}"; do
            take_seat "$seat"
            if jupyter_activity && [ "$(cut -d' ' -f2 <<<"$SERVED")" = labship ]; then
                watch_say "$(seat_word)tls sha256=$(cut -d' ' -f3 <<<"$SERVED")"
                watch_say "$(seat_word)token path=$(cut -d' ' -f1 <<<"$SERVED") source=labship"
            else
                waiting+=("$seat")
            fi
        done
        MARK_SEAT=
        pending=(${waiting[@]+"${waiting[@]}"})
        if [ "${#pending[@]}" -gt 0 ]; then sleep 1 8>&-; fi
        left=$((left - 1))
    done
}

watch_main() {
    local every booted last now said='' left nap
    # fd 8 holds the lock: no child that may outlive this process (a scheduled shutdown's
    # timer) gets it.
    exec 8>>"$STATE_DIR/$HOST_ID.watch.lock"
    flock -w 30 8 || exit 0
    booted=$(cat "$BOOT_STAMP" 2>/dev/null)
    [[ "$booted" =~ ^[0-9]+$ ]] || booted=$(date +%s)
    if [ "$TTL" -gt 0 ]; then
        left=$((booted + TTL - $(date +%s)))
        if [ "$left" -gt 0 ]; then shutdown -h "+$(((left + 59) / 60 + 3))" >/dev/null 2>&1 8>&-; fi
    else
        shutdown -c >/dev/null 2>&1 8>&-
    fi
    [ "$IDLE_STOP" -gt 0 ] || [ "$TTL" -gt 0 ] || exit 0
    printf '%s\n' "$$" >"$WATCH_PID"
    trap '[ "$(cat "$WATCH_PID" 2>/dev/null)" = "$$" ] && rm -f "$WATCH_PID"' EXIT
    every=$((IDLE_STOP > 0 ? IDLE_STOP / 6 : 60))
    if [ "$every" -gt 60 ]; then every=60; elif [ "$every" -lt 5 ]; then every=5; fi
    TLS_PIN=
    watch_say "watch idle-stop=$IDLE_STOP ttl=$TTL boot=$booted"
    # After a boot no other labship script may run: say what Jupyter serves as soon as it
    # answers (looked at every second, for at most JUPYTER_DEADLINE).
    if [ -n "${LABSHIP_WATCH_ANNOUNCE:-}" ]; then announce; fi
    last=$(date +%s)
    while :; do
        now=$(date +%s)
        if [ "$TTL" -gt 0 ] && [ "$now" -ge $((booted + TTL)) ]; then
            watch_say "ttl-stop ttl=$(span "$TTL")"
            shutdown -h now 8>&-
            exit 0
        fi
        activity
        if [ "$IDLE_STOP" -gt 0 ]; then
            if [ "$ACT" = busy ]; then
                last=$now
            elif [ "$ACT" -gt "$last" ]; then
                last=$((ACT > now ? now : ACT))
            fi
            if [ $((now - last)) -ge "$every" ]; then
                if [ "$said" != "$last" ]; then
                    said=$last
                    watch_say "idle since=$last"
                fi
            elif [ -n "$said" ]; then
                said=
                watch_say "active"
            fi
            if [ $((now - last)) -ge "$IDLE_STOP" ]; then
                watch_say "idle-stop idle=$(span $((now - last)))"
                shutdown -h now 8>&-
                exit 0
            fi
        fi
        nap=$every
        if [ "$TTL" -gt 0 ] && [ $((booted + TTL - now)) -lt "$nap" ]; then
            nap=$((booted + TTL - now))
            if [ "$nap" -lt 1 ]; then nap=1; fi
        fi
        sleep "$nap" 8>&-
    done
}

if [ "${LABSHIP_MODE:-}" = watch ]; then
    watch_main
    exit 0
fi
