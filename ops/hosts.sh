#!/usr/bin/env bash
# Drain rate by host count: tidings workers as separate hosts, each in a network namespace with its own veth pair,
# reaching PostgreSQL and the sandbox provider only over it (tests/it/hosts.rs makes and deletes them; this runs
# its ignored measurement, hosts::drain_rate_by_host_count). For each host count, MESSAGES messages are enqueued
# and drained by that many hosts of CONCURRENCY slots each, against the sandbox answering after LATENCY_MS; the
# drain is timed in the database, from the first attempt's start to the last `sent` event.
#
# Needs root, iproute2 and the PostgreSQL of DATABASE_URL (default: .cargo/config.toml's, 127.0.0.1:5432).
#
#   bash ops/hosts.sh                                 # 1, 2 and 4 hosts, 5000 messages, 32 slots, 50 ms
#   HOSTS=1,2,4,8 MESSAGES=20000 REPEAT=3 bash ops/hosts.sh
#   TIDINGS_BIN=/path/to/tidings bash ops/hosts.sh    # use that worker binary instead of building a release one
#
# With 50 ms answers a host drains at most CONCURRENCY / 0.05 s messages per second (640/s with 32 slots), so the
# rate should grow with hosts until the database, or this machine's CPUs, are the limit. The hosts share the
# machine's cores with PostgreSQL and with the harness (forwarders and sandbox, a debug build): see ops/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "hosts.sh: needs root (ip netns add)" >&2
    exit 1
fi
if ! command -v ip >/dev/null 2>&1; then
    echo "hosts.sh: needs ip (Debian: apt-get install iproute2)" >&2
    exit 1
fi

if [ -z "${TIDINGS_BIN:-}" ]; then
    cargo build --release --bin tidings
    TIDINGS_BIN=$PWD/target/release/tidings
fi
export TIDINGS_BIN
export TIDINGS_HOSTS=${HOSTS:-1,2,4}
export TIDINGS_HOSTS_MESSAGES=${MESSAGES:-5000}
export TIDINGS_HOSTS_CONCURRENCY=${CONCURRENCY:-32}
export TIDINGS_HOSTS_LATENCY_MS=${LATENCY_MS:-50}

# Build the harness first, so that its compiler output does not mix with the figures.
cargo test --test it --no-run --quiet
for run in $(seq 1 "${REPEAT:-1}"); do
    [ "${REPEAT:-1}" = 1 ] || echo "run $run"
    cargo test --quiet --test it hosts::drain_rate_by_host_count -- --exact --ignored --nocapture 2>&1 |
        grep -E '^(hosts|SKIPPED)|panicked|FAILED|failed'
done
