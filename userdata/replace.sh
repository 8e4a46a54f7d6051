#!/bin/bash
# labship replace: sent through SSM RunCommand (AWS-RunShellScript) to put a new image in
# place of the running Jupyter container, keeping the workspace volume. Rendered by labship
# from userdata/replace.sh; every value below was validated and quoted. Markers go to
# stdout (the command's output) and to the console; the token is read again from SSM
# (a rotated one takes effect) and never printed. If the new container does not become
# ready, the old one is put back.
set -euo pipefail
set -o errtrace

# Plain assignments, as in boot.sh: the watchdog this script starts on a host of several
# seats sets each seat's in turn (take_seat).
# The deployment (on a host of several seats: the first seat, whose name the host's lock,
# watchdog and certificate take).
DEPLOYMENT={{DEPLOYMENT}}
# A host of several seats of a class: their names in slot order, and the one seat whose
# container this script puts in place (both empty: one deployment's host).
SEATS={{SEATS}}
readonly SEAT={{SEAT}}
readonly REGION={{REGION}}
readonly REGISTRY={{REGISTRY}}
readonly IMAGE={{IMAGE}}
CONTAINER={{CONTAINER}}
VOLUME={{VOLUME}}
readonly LABEL={{LABEL}}
readonly BIND={{BIND}}
readonly HOST_ADDR={{HOST_ADDR}}
PORT={{PORT}}
readonly CONTAINER_PORT={{CONTAINER_PORT}}
# Each seat's container's limits on a host several seats share (MiB, CPUs; empty: none).
readonly SEAT_MEMORY={{SEAT_MEMORY}} SEAT_CPUS={{SEAT_CPUS}}
readonly PULL_DEADLINE={{PULL_DEADLINE}}
readonly JUPYTER_DEADLINE={{JUPYTER_DEADLINE}}
# Idle stop and TTL in seconds (0: off): see the watchdog in common.sh.
readonly IDLE_STOP={{IDLE_STOP}}
readonly TTL={{TTL}}
# 1: the workspace lives on the deployment's data volume (see ensure_data in common.sh).
readonly DATA_VOLUME={{DATA_VOLUME}}
# The [data] inputs (inputs.tsv lines) and their id (see fetch_inputs in common.sh).
readonly INPUTS={{INPUTS}}
readonly INPUTS_ID={{INPUTS_ID}}
# 1: start a new container even if the running one has this image (a rotated token).
readonly RECREATE={{RECREATE}}
# 1: take the seat SEAT off this host instead (`down --seat`), the other seats staying.
readonly LEAVE={{LEAVE}}
readonly CONSOLE=${LABSHIP_CONSOLE:-/dev/console}

{{COMMON}}

# On a host of several seats, the seat this script is for, as the host serves it (its slot
# and port from the boot's record): its container, token, data volume and markers.
if [ -n "$SEAT" ]; then
    seat_line=$(host_seats | awk -v seat="$SEAT" '$1 == seat && !found { print; found = 1 }')
    if [ -z "$seat_line" ] && [ "$LEAVE" = 1 ]; then
        MARK_SEAT=$SEAT
        log "seat $SEAT already left this host"
        mark left
        exit 0
    fi
    if [ -z "$seat_line" ]; then
        PHASE=host
        MARK_SEAT=$SEAT
        fail "the seat $SEAT is not on this host (it serves $(host_seats | awk '{ print $1 }' | tr '\n' ' ')); a \`labship down --seat\` of it that was cut short took it off: run it again to finish"
    fi
    take_seat "$seat_line"
fi
readonly PREVIOUS="$CONTAINER-previous"

# `down --seat` of one seat of a host its class's seats share, the others staying: its
# containers and Docker volume go (the workspace stays on its data volume), its data volume
# is unmounted and forgotten by fstab (labship detaches it next), its token and state files
# go, and the watchdog stops watching it. Run again, it finds nothing left to do.
leave_seat() {
    local c
    PHASE=leave
    for c in "$CONTAINER" "$PREVIOUS"; do
        if docker container inspect "$c" >/dev/null 2>&1; then quiet docker rm -f "$c"; fi
    done
    if docker volume inspect "$VOLUME" >/dev/null 2>&1; then quiet docker volume rm "$VOLUME"; fi
    if [ -z "${LABSHIP_SIM_EBS_DIR:-}" ]; then
        if mountpoint -q "$DATA_MOUNT" 2>/dev/null; then quiet umount "$DATA_MOUNT"; fi
        if grep -qF " $DATA_MOUNT " "$FSTAB" 2>/dev/null; then
            { grep -vF " $DATA_MOUNT " "$FSTAB" || true; } >"$FSTAB.labship"
            cat "$FSTAB.labship" >"$FSTAB"
            rm -f "$FSTAB.labship"
        fi
    fi
    rm -rf "$TOKEN_ENV" "$STATE_DIR/$DEPLOYMENT.served" "$INPUTS_ROOT" "$INPUTS_ROOT.id"
    if [ -f "$HOST_SEATS" ]; then
        awk -v seat="$DEPLOYMENT" '$1 != seat' "$HOST_SEATS" >"$HOST_SEATS.tmp"
        mv "$HOST_SEATS.tmp" "$HOST_SEATS"
    fi
    log "seat $DEPLOYMENT left this host"
    mark left
}

# The rollback: the new container goes, the old one comes back under its name.
restore_previous() {
    docker rm -f "$CONTAINER" || true
    docker rename "$PREVIOUS" "$CONTAINER"
    docker start "$CONTAINER"
}

# The running container's limits, each for a new container given none of its own (a
# rotation; an `up` without --seats-per-instance).
keep_limits() {
    local memory='' nano=''
    read -r memory nano < <(docker container inspect --format \
        '{''{.HostConfig.Memory}} {''{.HostConfig.NanoCpus}}' "$CONTAINER" 2>/dev/null || true) || true
    if [ -z "$MEMORY_LIMIT" ] && [[ "$memory" =~ ^[1-9][0-9]*$ ]]; then
        MEMORY_LIMIT=$((memory / 1048576))
    fi
    if [ -z "$CPU_LIMIT" ] && [[ "$nano" =~ ^[1-9][0-9]*$ ]]; then
        CPU_LIMIT=$(awk -v n="$nano" 'BEGIN { printf "%.2f", n / 1e9 }')
    fi
}

# SSM ends a command that runs past its execution timeout (or is cancelled) with a signal:
# put the old container back then too.
trap 'fail "stopped by a signal (cancelled, or past its execution timeout)"' TERM INT HUP

log "replace: deployment $DEPLOYMENT, image $IMAGE${SEAT:+, seat of the host $HOST_ID}"
PHASE=host
# The first boot's user-data may not have run yet (cloud-init starts it late in the boot):
# let cloud-init finish, or the boot script would start the old image after this replace.
if command -v cloud-init >/dev/null 2>&1; then
    timeout "$LOCK_DEADLINE" cloud-init status --wait >/dev/null 2>&1 || true
fi
take_lock
if [ "$LEAVE" = 1 ]; then
    leave_seat
    exit 0
fi
# This script's idle stop and TTL from now on (the TTL still counts from the boot).
install_watch keep
PHASE=docker
if ! docker info >/dev/null 2>&1; then
    fail "docker does not answer on this host"
fi

PHASE=login
ecr_login
mark logged-in

PHASE=token
fetch_token
PHASE=tls
ensure_tls

PHASE=pull
pull_image
mark pulled

PHASE=data
ensure_data
PHASE=start
image_workdir
ensure_volume
have=$(container_identity)
# A replace that was cut short leaves the old container under $PREVIOUS: put it back if
# nothing took its name, otherwise it is stale.
if docker container inspect "$PREVIOUS" >/dev/null 2>&1; then
    if [ -z "$have" ]; then
        quiet docker rename "$PREVIOUS" "$CONTAINER"
        have=$(container_identity)
    else
        quiet docker rm -f "$PREVIOUS"
    fi
fi
want=$(docker image inspect --format '{''{.Id}}' "$IMAGE")
# A recreate (a rotated token) keeps the address the running container is published on.
if [ "$RECREATE" = 1 ] && [ -n "$have" ]; then
    published=${have##* }
    if [ "${published##*:}" = "$PORT" ]; then PUBLISH_BIND=${published%:*}; fi
fi
# A limit not given (a rotation, an `up` without --seats-per-instance): a new container
# keeps the running one's (a seat's on a host of several).
if [ -n "$have" ]; then keep_limits; fi
publish=$(publish_label)
publish=${publish#*=}
if [ "$have" = "$want true $(inputs_wanted) $publish" ] && [ "$RECREATE" != 1 ]; then
    log "container $CONTAINER already runs $IMAGE on $publish: nothing to replace"
else
    PHASE=data
    fetch_inputs
    PHASE=start
    if [ -n "$have" ]; then
        quiet docker stop "$CONTAINER"
        quiet docker rename "$CONTAINER" "$PREVIOUS"
        ROLLBACK=restore_previous
    fi
    sync_workspace
    run_container
fi
mark started

PHASE=jupyter
wait_jupyter
say_served
if [ -n "$ROLLBACK" ]; then
    ROLLBACK=
    docker rm "$PREVIOUS" >>"$LOG_FILE" 2>&1 || log "could not remove $PREVIOUS"
fi
keep_inputs
mark ready
