# ---- host setup: the standard Amazon Linux 2023 AMI (userdata/docker-al2023.sh) ----

# The AWS CLI v2 comes with the AMI; a minimal image may lack it.
setup_host() {
    if ! command -v aws >/dev/null 2>&1; then
        quiet dnf install -y awscli-2
    fi
}

# Docker is a package away. When Docker already answers, there is nothing to do.
setup_docker() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v docker >/dev/null 2>&1; then
        quiet dnf install -y docker
    fi
    quiet systemctl enable --now docker
    wait_for_docker
}
