#!/usr/bin/env bash
# Reproduces every figure of docs/BENCHMARKS.md in one run on this machine: installs the peers
# (nginx with libnginx-mod-nchan, pushpin) and nats-server from Debian's packages when missing,
# uses the PostgreSQL on 127.0.0.1:5432 (or starts a private one), builds release binaries and
# runs each scenario of lingr-bench, writing every output to bench/results/<date>/ and the
# summary lines to bench/results/<date>/summary.txt, then draws the plots.
#
#   bench/run.sh [--quick]     (--quick: 1,000 observers instead of 10,000 and the most, for a try)
#
# It takes about 45 minutes with a cold release build. Nothing of it runs in the test command except a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_nats_server
ensure_test_postgres
for package in nginx libnginx-mod-nchan pushpin; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        echo "== installing $package from Debian's packages"
        apt_install "$package"
    fi
done
# Debian starts the packages' own services on install; the benchmark runs private instances,
# and the system ones would only take memory and ports.
as_root service nginx stop >/dev/null 2>&1 || true
as_root service pushpin stop >/dev/null 2>&1 || true

echo "== building lingr and lingr-bench (release)"
cargo build --quiet --release --locked -p lingr -p lingr-bench
ulimit -n "$(ulimit -Hn)"

out="bench/results/$(date -u +%Y-%m-%d)"
mkdir -p "$out"
bench=target/release/lingr-bench
big=10000
most=19000
if [ "${1:-}" = "--quick" ]; then big=1000; most=2000; fi

run() {
    local name=$1; shift
    echo "== $name: $bench $*"
    # A scenario that fails runs once more, its failed output kept beside as <name>-failed.txt
    # (a lingr cluster whose roles could not set up their streams, JetStream requests timing
    # out for 30 s, failed two scenarios of one run and passed right after); one that fails
    # again is recorded as such, and the others still run.
    if ! "$bench" "$@" 2>&1 | tee "$out/$name.txt"; then
        mv "$out/$name.txt" "$out/$name-failed.txt"
        echo "== $name failed (its output is in $name-failed.txt); once more"
        "$bench" "$@" 2>&1 | tee "$out/$name.txt" || echo "FAILED: $bench $*" | tee -a "$out/$name.txt"
    fi
    grep '^summary' "$out/$name.txt" | sed "s/^summary /summary name=$name /" >>"$out/summary.txt" || true
}
: >"$out/summary.txt"

# Scenarios 1, 2 and 6: held observes and fan-out, the same generator against each server.
for target in lingr nchan pushpin; do
    run "fanout-1000-$target" fanout --target "$target" --observers 1000 --rounds 5
    run "fanout-$big-$target" fanout --target "$target" --observers "$big" --rounds 5
done
# The same comet on one runtime thread instead of one per core (lingr --worker-threads 1).
run "fanout-$big-lingr-1-thread" fanout --target lingr --observers "$big" --rounds 5 --comet-threads 1
# Rounds 12 s apart instead of back to back: a chat room's events come further apart than a
# server's per-connection timers run, so most answers follow a hold longer than those.
for target in lingr nchan; do
    run "fanout-$big-$target-paused" fanout --target "$target" --observers "$big" --rounds 4 --pause 12
done
# Each server on a core of its own and the client on the others, instead of both on every
# core: a server of several threads then no longer takes turns with the client on each. The
# comet starts on its core, so it picks one connection runtime for it, as in a pod of one
# CPU, and nginx runs one worker for it. The CPUs are those this run may use, which in a
# container need not start at 0.
allowed=()
IFS=, read -ra parts <<<"$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)"
for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then
        mapfile -t -O "${#allowed[@]}" allowed < <(seq "${part%-*}" "${part#*-}")
    else
        allowed+=("$part")
    fi
done
if [ "${#allowed[@]}" -ge 2 ]; then
    server_cpu=${allowed[-1]}
    client_cpus=$(IFS=,; echo "${allowed[*]:0:${#allowed[@]}-1}")
    for target in lingr nchan; do
        run "fanout-$big-$target-pinned" fanout --target "$target" --observers "$big" --rounds 5 \
            --server-cpus "$server_cpu" --client-cpus "$client_cpus"
    done
else
    echo "== skipping the pinned fan-outs: this run may use one CPU"
fi
run "fanout-$most-lingr" fanout --target lingr --observers "$most" --rounds 5
run "fanout-$most-nchan" fanout --target nchan --observers "$most" --rounds 5
# Scenario 1 at scale: 100,000 across six comets (a process opens at most 20,000 files), in ten
# rooms that publish at once.
if [ "${1:-}" != "--quick" ]; then
    run fanout-100000-lingr fanout --target lingr --observers 100000 --comets 6 --rooms 10 --rounds 3
fi
# Scenario 3: many rooms at a steady say rate, observers in some; each comet's cost against
# the rooms it serves (one comet serves nobody).
if [ "${1:-}" = "--quick" ]; then
    run rooms rooms --rooms 1000 --observed-rooms 20 --comets 2 --rate 200 --duration 10
else
    run rooms rooms --rooms 10000 --observed-rooms 100 --comets 2 --rate 500 --duration 30
fi
# Scenario 3b: enters into a room growing to 20,000, and a herd of 20,000 stale observes on a
# comet just started.
run "enter-$((big * 2))" enter --occupants "$((big * 2))"
run "herd-$((big * 2))" herd --observers "$((big * 2))" --events 5000
# Scenario 4: says through the api.
run say-1000 say --rate 1000 --duration 20
# History keeping up at 5,000 events a second (the rate the api reaches is printed).
run say-5000 say --rate 5000 --duration 20 --writers 200
# Scenario 5: say latency against comet replicas, ours and the synchronous fan-out.
run replicas replicas --replicas 1,2,4,8,16 --rate 200 --duration 10

python3 bench/plot.py "$out/summary.txt" docs/benchmarks
echo "== figures in $out; plots in docs/benchmarks/"
