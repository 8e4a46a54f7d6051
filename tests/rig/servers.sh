#!/usr/bin/env bash
# Start/stop the local stand-ins for AWS used by the labship tests, on free loopback ports:
#   moto_server          (AWS API emulator, from the rig venv; see setup.sh)
#   Debian docker-registry (Docker registry v2 API with htpasswd basic auth)
#   instance-sim.py      (EC2 instance simulator: a proxy in front of moto that runs each
#                         launched instance's user-data in a container of the sim host image,
#                         serves its console output, SSM RunCommand, 127.0.0.1 public IPs)
#
#   bash tests/rig/servers.sh start|stop|status
#
# The registry's only user is AWS with password 123456789012-auth-token: exactly what moto's
# ECR GetAuthorizationToken hands out (base64 "AWS:123456789012-auth-token"), so the product's
# real ECR login flow works against it unchanged. Docker treats 127.0.0.0/8 registries as
# insecure (plain HTTP) by default, so the engine pushes there without TLS.
#
# State lives in ${LABSHIP_RIG_STATE:-/tmp/labship-rig}: pid files, logs, the registry config
# and rig.env, which exports
#   LABSHIP_TEST_AWS_ENDPOINT (moto itself)  LABSHIP_TEST_REGISTRY  LABSHIP_TEST_REGISTRY_USER
#   LABSHIP_TEST_REGISTRY_PASSWORD  LABSHIP_TEST_BASE_IMAGE  LABSHIP_RIG_VENV  LABSHIP_RIG_STATE
#   LABSHIP_TEST_SIM_ENDPOINT (the instance simulator, in front of the same moto)
#   LABSHIP_TEST_SIM_HOST_IMAGE (the image it runs instances in; tests/rig/sim-host.sh)
#
# start: a no-op when all servers already run and answer (rig.env is left as it is; only the
#        simulator is restarted when the sim host image changed meanwhile).
# stop:  stops all (by pid file, bounded; the simulator removes its instance containers and
#        their deployment containers/volumes on SIGTERM) and deletes the registry's storage;
#        keeps the logs.
# status: exit 0 when all run and answer, 1 otherwise.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

exec 3>&1 1>&2

readonly REGISTRY_BIN=/usr/bin/docker-registry
readonly REGISTRY_USER=AWS
readonly REGISTRY_PASSWORD=123456789012-auth-token
readonly WAIT_SECONDS="${LABSHIP_RIG_WAIT_SECONDS:-30}"
readonly S="$RIG_STATE"
readonly ENV_FILE="$S/rig.env"
SIM_IMAGE="" # the sim host image tag (tests/rig/sim-host.sh), set by cmd_start

port_of() { cat "$S/$1.port" 2>/dev/null || true; }
pid_of() { cat "$S/$1.pid" 2>/dev/null || true; }

# The command-line fragment that identifies each of our servers (guards against pid reuse).
needle() {
    case "$1" in
    moto) printf '%s' "$RIG_VENV/bin/moto_server" ;;
    registry) printf '%s' "$REGISTRY_BIN serve $S/registry.yml" ;;
    sim) printf '%s' "$RIG_DIR/instance-sim.py --port" ;;
    esac
}

health_url() {
    case "$1" in
    moto) printf 'http://127.0.0.1:%s/moto-api/' "$2" ;;
    registry) printf 'http://127.0.0.1:%s/v2/' "$2" ;;
    sim) printf 'http://127.0.0.1:%s/_sim/health' "$2" ;;
    esac
}

server_ok() {
    local name="$1" pid port
    pid="$(pid_of "$name")"
    port="$(port_of "$name")"
    [ -n "$pid" ] && [ -n "$port" ] && rig_pid_matches "$pid" "$(needle "$name")" &&
        rig_http_answers "$(health_url "$name" "$port")"
}

healthy() { [ -s "$ENV_FILE" ] && server_ok moto && server_ok registry && server_ok sim; }

# Stop the named servers (by pid file, after checking the pid is still ours): SIGTERM to all,
# wait up to 10 s (30 s when the simulator is among them: it removes its containers first),
# then SIGKILL what is left.
stop_servers() {
    local name pid i pids=() alive tries=50
    case " $* " in *" sim "*) tries=150 ;; esac
    for name in "$@"; do
        pid="$(pid_of "$name")"
        if [ -n "$pid" ] && rig_pid_matches "$pid" "$(needle "$name")"; then
            rig_log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < tries && ${#pids[@]} > 0; i++)); do
        alive=()
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
        done
        pids=("${alive[@]}")
        [ "${#pids[@]}" -eq 0 ] || sleep 0.2
    done
    for pid in "${pids[@]}"; do
        rig_log "pid $pid ignored SIGTERM for $((tries / 5)) s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for ((i = 0; i < 25; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
    done
    for name in "$@"; do
        rm -f "$S/$name.pid" "$S/$name.port"
    done
}

# Containers of simulated instances a killed simulator left (label dev.labship.sim.rig = its
# state dir), with the containers and volumes their user-data made (dev.labship.ec2.deployment).
remove_sim_leftovers() {
    local names dep
    command -v docker >/dev/null 2>&1 || return 0
    names="$(docker ps -aq --filter "label=dev.labship.sim.rig=$S/sim" 2>/dev/null || true)"
    [ -n "$names" ] || return 0
    rig_log "removing containers a stopped simulator left: $(printf '%s' "$names" | tr '\n' ' ')"
    # shellcheck disable=SC2086 # one id per word
    for dep in $(docker inspect --format '{{index .Config.Labels "dev.labship.sim.deployment"}}' $names 2>/dev/null | sort -u); do
        # shellcheck disable=SC2046 # ids, one per word
        docker rm -f -v $(docker ps -aq --filter "label=dev.labship.ec2.deployment=$dep") >/dev/null 2>&1 || true
        # shellcheck disable=SC2046
        docker volume rm -f $(docker volume ls -q --filter "label=dev.labship.ec2.deployment=$dep") >/dev/null 2>&1 || true
    done
    # shellcheck disable=SC2086
    docker rm -f $names >/dev/null 2>&1 || true
}

stop_all() {
    stop_servers sim registry moto
    remove_sim_leftovers
    rm -rf --one-file-system "$S/sim"
    local storage
    storage="$(cat "$S/registry.storage" 2>/dev/null || true)"
    # Only ever delete a directory this script created (mktemp pattern below).
    if [ -n "$storage" ] && [ -d "$storage" ] && [[ "$(basename "$storage")" == labship-registry.* ]]; then
        rm -rf --one-file-system "$storage"
    fi
    rm -f "$S/registry.storage" "$S/registry.yml" "$S/htpasswd" "$ENV_FILE"
}

# Launch "$@" in the background with its output in $S/NAME.log; record pid and port.
# The servers ignore SIGHUP and start with SIGINT ignored (moto installs its own SIGINT
# handler, so a Ctrl-C to run.sh's whole process group may end it; run.sh stops the servers
# then anyway). Otherwise they live until `stop` (SIGTERM by pid).
launch() {
    local name="$1" port="$2"
    shift 2
    (
        trap '' HUP INT
        # Close every inherited descriptor above 2 (our lock on fd 9, the caller's stdout on
        # fd 3, pipes of whatever started us), so nobody waits on a long-lived server.
        local fd n
        for fd in /proc/"$BASHPID"/fd/*; do
            n="${fd##*/}"
            if [ "$n" -gt 2 ] 2>/dev/null; then exec {n}>&-; fi
        done
        exec "$@"
    ) >"$S/$name.log" 2>&1 </dev/null &
    printf '%s\n' "$!" >"$S/$name.pid"
    printf '%s\n' "$port" >"$S/$name.port"
}

# Start NAME with a fresh free port, retrying (a port can be taken between pick and bind).
start_server() {
    local name="$1" attempt port pid
    for attempt in 1 2 3; do
        port="$(rig_free_port)"
        case "$name" in
        moto)
            launch moto "$port" env MOTO_IAM_LOAD_MANAGED_POLICIES=true \
                "$RIG_VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
            ;;
        registry)
            write_registry_config "$port"
            launch registry "$port" "$REGISTRY_BIN" serve "$S/registry.yml"
            ;;
        sim)
            launch sim "$port" env \
                LABSHIP_SIM_MOTO_URL="http://127.0.0.1:$(port_of moto)" \
                LABSHIP_SIM_HOST_IMAGE="$SIM_IMAGE" \
                LABSHIP_SIM_SELF_URL="http://127.0.0.1:$port" \
                "$RIG_VENV/bin/python" "$RIG_DIR/instance-sim.py" --port "$port" --state-dir "$S/sim"
            ;;
        esac
        pid="$(pid_of "$name")"
        if rig_wait_http "$(health_url "$name" "$port")" "$WAIT_SECONDS" "$pid" &&
            rig_pid_matches "$pid" "$(needle "$name")"; then
            rig_log "$name is up on 127.0.0.1:$port (pid $pid)"
            return 0
        fi
        rig_log "$name did not come up on port $port (attempt $attempt); log tail:"
        tail -n 15 "$S/$name.log" >&2 || true
        stop_servers "$name"
    done
    return 1
}

write_registry_config() {
    local port="$1" storage secret
    storage="$(cat "$S/registry.storage" 2>/dev/null || true)"
    if [ -z "$storage" ] || [ ! -d "$storage" ]; then
        storage="$(mktemp -d "${TMPDIR:-/tmp}/labship-registry.XXXXXX")"
        printf '%s\n' "$storage" >"$S/registry.storage"
    fi
    if [ ! -s "$S/htpasswd" ]; then
        htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASSWORD" >"$S/htpasswd.tmp"
        mv "$S/htpasswd.tmp" "$S/htpasswd"
    fi
    secret="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    cat >"$S/registry.yml" <<EOF
# Generated by tests/rig/servers.sh
version: 0.1
log:
  level: info
  fields:
    service: labship-rig-registry
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: $secret
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: labship-rig
    path: $S/htpasswd
EOF
}

write_env_file() {
    local base="$1" sim_image="$2"
    {
        printf '# Generated by tests/rig/servers.sh start; source it (bash).\n'
        printf 'export LABSHIP_TEST_AWS_ENDPOINT=%q\n' "http://127.0.0.1:$(port_of moto)"
        printf 'export LABSHIP_TEST_REGISTRY=%q\n' "127.0.0.1:$(port_of registry)"
        printf 'export LABSHIP_TEST_REGISTRY_USER=%q\n' "$REGISTRY_USER"
        printf 'export LABSHIP_TEST_REGISTRY_PASSWORD=%q\n' "$REGISTRY_PASSWORD"
        printf 'export LABSHIP_TEST_BASE_IMAGE=%q\n' "$base"
        printf 'export LABSHIP_TEST_SIM_ENDPOINT=%q\n' "http://127.0.0.1:$(port_of sim)"
        printf 'export LABSHIP_TEST_SIM_HOST_IMAGE=%q\n' "$sim_image"
        printf 'export LABSHIP_RIG_VENV=%q\n' "$RIG_VENV"
        printf 'export LABSHIP_RIG_STATE=%q\n' "$S"
    } >"$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_start() {
    local base
    if healthy; then
        # Keep rig.env untouched unless the base image recipe changed meanwhile; restart only
        # the simulator when its host image changed.
        base="$(bash "$RIG_DIR/offline-base.sh")"
        SIM_IMAGE="$(bash "$RIG_DIR/sim-host.sh")"
        if ! grep -qxF "export LABSHIP_TEST_SIM_HOST_IMAGE=$(printf '%q' "$SIM_IMAGE")" "$ENV_FILE"; then
            rig_log "the sim host image changed to $SIM_IMAGE: restarting the simulator"
            stop_servers sim
            remove_sim_leftovers
            start_server sim || { stop_all; rig_die "instance-sim failed to start (log: $S/sim.log)"; }
        fi
        if grep -qxF "export LABSHIP_TEST_BASE_IMAGE=$(printf '%q' "$base")" "$ENV_FILE" &&
            grep -qxF "export LABSHIP_TEST_SIM_ENDPOINT=$(printf '%q' "http://127.0.0.1:$(port_of sim)")" "$ENV_FILE"; then
            rig_log "servers already running (moto :$(port_of moto), registry :$(port_of registry), sim :$(port_of sim)); $ENV_FILE unchanged"
        else
            write_env_file "$base" "$SIM_IMAGE"
            rig_log "servers already running; updated $ENV_FILE (base $base, sim :$(port_of sim))"
        fi
        return 0
    fi
    [ -x "$RIG_VENV/bin/moto_server" ] || rig_die "no moto_server in $RIG_VENV (run tests/rig/setup.sh)"
    [ -x "$REGISTRY_BIN" ] || rig_die "$REGISTRY_BIN missing (run tests/rig/setup.sh)"
    command -v htpasswd >/dev/null || rig_die "htpasswd missing (run tests/rig/setup.sh)"

    [ -f "$RIG_DIR/instance-sim.py" ] || rig_die "$RIG_DIR/instance-sim.py missing"

    base="$(bash "$RIG_DIR/offline-base.sh")"
    SIM_IMAGE="$(bash "$RIG_DIR/sim-host.sh")"

    stop_all # clean up whatever a partial or crashed earlier run left
    start_server moto || { stop_all; rig_die "moto_server failed to start (log: $S/moto.log)"; }
    start_server registry || { stop_all; rig_die "docker-registry failed to start (log: $S/registry.log)"; }
    start_server sim || { stop_all; rig_die "instance-sim failed to start (log: $S/sim.log)"; }
    write_env_file "$base" "$SIM_IMAGE"
    rig_log "wrote $ENV_FILE"
}

cmd_stop() {
    stop_all
    rig_log "servers stopped"
}

cmd_status() {
    if healthy; then
        rig_log "running: moto :$(port_of moto), registry :$(port_of registry), sim :$(port_of sim); env file $ENV_FILE"
        return 0
    fi
    rig_log "not running (or not healthy)"
    return 1
}

action="${1:-}"
case "$action" in
start | stop | status) ;;
*)
    printf 'usage: %s start|stop|status\n' "$0" >&2
    exit 2
    ;;
esac

mkdir -p "$S"
chmod 700 "$S"
exec 9>"$S/lock"
flock -w 120 9 || rig_die "timed out waiting for another servers.sh on $S"
"cmd_$action"
