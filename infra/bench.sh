#!/usr/bin/env bash
# The full benchmarks on a release build: append throughput with 1 and 16 writers as a ratio to
# pgbench's single-row inserts on the same database, command-to-projection latency over NATS, and
# catalog command latency as the catalog grows, as a ratio to an identity command's; one
# connector holding 1,000 and 10,000 agent connections, as a ratio to bare connections with a ping loop
# (with offline detection and the resend after a restart); and
# createDeployment to RUNNING of three services, as a ratio to docker-compose up until healthy; and
# requests/s and p99 through the ingress, as ratios to nginx as the same reverse proxy and to the
# upstream hit directly; every read model replayed from a 100,000-event log, as a ratio to a COPY
# of those events; 200 deployments asked for at once on 10 simulated nodes, placed side by side
# as a ratio to one at a time; and the sizes of what ships (infra/release.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
admin=${NULLOPS_TEST_DATABASE_URL:-postgres://nullops:nullops@127.0.0.1:5432/nullops}
db="bench_$(date +%s)"
cargo build --release --bin nullops
# What ships and its sizes: the stripped binary, its debug file and the images.
bash infra/release.sh
bash infra/demo-images.sh target/x86_64-unknown-linux-gnu/release/nullops
# One database per benchmark: the catalog figures should not inherit the event benchmark's log.
psql "$admin" -qc "CREATE DATABASE $db"
psql "$admin" -qc "CREATE DATABASE ${db}_catalog"
psql "$admin" -qc "CREATE DATABASE ${db}_replay"
psql "$admin" -qc "CREATE DATABASE ${db}_placement"
trap 'for d in $db ${db}_catalog ${db}_replay ${db}_placement; do psql "$admin" -qc "DROP DATABASE $d"; done' EXIT
NULLOPS_NATS_URL=nats://127.0.0.1:4222 ./target/x86_64-unknown-linux-gnu/release/nullops bench events --database-url "${admin%/*}/$db" "$@"
NULLOPS_LOG=warn NULLOPS_NATS_URL=nats://127.0.0.1:4222 ./target/x86_64-unknown-linux-gnu/release/nullops bench catalog --database-url "${admin%/*}/${db}_catalog"
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench replay --database-url "${admin%/*}/${db}_replay" --events 100000
replay_dir=$(mktemp -d)
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench replay --sqlite-dir "$replay_dir" --events 100000
rm -rf "$replay_dir"
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench placement --database-url "${admin%/*}/${db}_placement" --requests 200 --nodes 10
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench nodes --agents 1000 --seconds 10
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench nodes --agents 10000 --seconds 20
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench deploy --rounds 7
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench ingress --rounds 5 --seconds 10
# One event to 1,000 and to 10,000 live subscribers (each process holds 10,000 sockets).
ulimit -n 65536 2>/dev/null || true
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench feeds --subscribers 1000 --rounds 5
NULLOPS_LOG=warn ./target/x86_64-unknown-linux-gnu/release/nullops bench feeds --subscribers 10000 --rounds 3
