# ---- host setup: a custom AMI (userdata/docker-any.sh) ----

# Nothing is installed for the AWS CLI: which one suits the AMI is its maker's call.
setup_host() {
    require_aws_cli
}

# Install Docker with the package manager there is (Debian/Ubuntu: docker.io) and start
# it. When Docker already answers, there is nothing to do.
setup_docker() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v docker >/dev/null 2>&1; then
        if command -v dnf >/dev/null 2>&1; then
            quiet dnf install -y docker
        elif command -v yum >/dev/null 2>&1; then
            quiet yum install -y docker
        elif command -v apt-get >/dev/null 2>&1; then
            export DEBIAN_FRONTEND=noninteractive
            quiet apt-get update
            quiet apt-get install -y docker.io
        else
            fail "no docker, and no dnf, yum or apt-get to install it"
        fi
    fi
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        quiet systemctl enable --now docker
    elif command -v service >/dev/null 2>&1; then
        quiet service docker start
    fi
    wait_for_docker
}
