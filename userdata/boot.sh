#!/bin/bash
# labship user-data: runs once, as root, on the instance's first boot (cloud-init).
# Rendered by labship from userdata/boot.sh; every value below was validated and quoted.
# It sets up Docker, logs in to ECR with the instance profile, reads the deployment's
# sealed Jupyter token from SSM, pulls the image (which may still be on its way), runs
# Jupyter on the workspace volume and reports each step on the serial console, where
# labship reads the "labship: ..." markers. No secret is ever printed.
set -euo pipefail
set -o errtrace

readonly HOST_KIND={{HOST_KIND}}
# The deployment (on a host of several seats: the first seat; take_seat sets each in turn).
DEPLOYMENT={{DEPLOYMENT}}
# A host of several seats of a class: their names, in slot order (empty: one deployment).
SEATS={{SEATS}}
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
# cloud-init already copies stdout to the console.
readonly CONSOLE=

{{COMMON}}

{{HOST_SETUP}}

mark begin
log "boot: deployment $DEPLOYMENT, image $IMAGE, host kind $HOST_KIND${SEATS:+, seats $SEATS}"

# One seat's Jupyter, once the host has Docker, the login, the certificate and the image: its
# data volume, its Docker volume and its container, then its token URL.
start_seat() {
    PHASE=data
    ensure_data
    PHASE=start
    image_workdir
    ensure_volume
    # Re-running this script keeps a container that already runs this image.
    local want have publish
    want=$(docker image inspect --format '{''{.Id}}' "$IMAGE")
    have=$(container_identity)
    publish=$(publish_label)
    publish=${publish#*=}
    if [ "$have" = "$want true $(inputs_wanted) $publish" ]; then
        log "container $CONTAINER already runs $IMAGE"
    elif [ "$have" = "$want false $(inputs_wanted) $publish" ]; then
        quiet docker start "$CONTAINER"
    else
        PHASE=data
        fetch_inputs
        PHASE=start
        if [ -n "$have" ]; then quiet docker rm -f "$CONTAINER"; fi
        # A kept data volume's workspace gets the image's new files; a new one is filled by
        # Docker from the image.
        if [ "$DATA_REUSED" = 1 ]; then sync_workspace; fi
        run_container
    fi
    # No container to go back to: the host's inputs are this one's from now on, ready or
    # not (a token rotation after a slow first start keeps them).
    keep_inputs
    mark started

    PHASE=jupyter
    wait_jupyter
    say_served
    mark ready
}

# The seats of a host of several start side by side, each in a shell of its own that reads
# its own token: one that fails says so with its name (seat=NAME error ...) and the others go
# on. The script fails when one did.
start_seats() {
    local seats seat pids=() pid failed=0
    mapfile -t seats < <(script_seats)
    for seat in "${seats[@]}"; do
        (
            SEAT_LEVEL=$BASH_SUBSHELL
            take_seat "$seat"
            PHASE=token
            OUT=$(mktemp)
            trap 'rm -f "$OUT" "$OUT.aws"' EXIT
            fetch_token
            start_seat
        ) </dev/null &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=$((failed + 1))
    done
    if [ "$failed" -gt 0 ]; then
        log "$failed of the seats ${SEATS} did not start"
        exit 1
    fi
}

PHASE=host
take_lock
# The first boot: the TTL counts from here (later boots: the per-boot hook). The watchdog
# runs from now on, so that a boot that fails still stops when nothing happens.
install_watch boot

PHASE=host
setup_host
PHASE=docker
setup_docker
mark docker-ready

PHASE=login
ecr_login
mark logged-in

# One deployment's token is read before the pull (a missing one stops the boot at once); the
# seats of a host of several each read theirs.
if [ -z "$SEATS" ]; then
    PHASE=token
    fetch_token
fi
PHASE=tls
ensure_tls

PHASE=pull
pull_image
mark pulled

if [ -z "$SEATS" ]; then start_seat; else start_seats; fi
