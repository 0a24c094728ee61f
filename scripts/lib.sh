# Shared by scripts/run and scripts/test: install what is missing from Debian's packages.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@"
}

ensure_nats_server() {
    if ! command -v nats-server >/dev/null; then
        echo "== installing nats-server from Debian's packages"
        apt_install nats-server
    fi
}
