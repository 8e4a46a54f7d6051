# ---- host setup: the ECS-optimized Amazon Linux 2023 AMI (userdata/docker-ecs.sh) ----

# The ECS agent would try to join a cluster ("default"): stop it and keep it from
# starting (--no-block: it is ordered after cloud-init, which runs this script).
setup_host() {
    if [ -d /run/systemd/system ] && systemctl cat ecs.service >/dev/null 2>&1; then
        quiet systemctl mask --now --no-block ecs.service
    fi
    if ! command -v aws >/dev/null 2>&1; then
        quiet dnf install -y awscli-2
    fi
}

# Docker is preinstalled; make sure it runs. When Docker already answers, nothing to do.
setup_docker() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    quiet systemctl enable --now docker
    wait_for_docker
}
