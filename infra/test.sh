#!/usr/bin/env bash
# Runs every test of NullOps: installs and starts what they need (infra/setup.sh), checks the
# formatting and lints (cargo fmt, cargo clippy -D warnings), then the Rust suites (unit,
# conformance on both stores, the binary end to end in both modes), the third-party GraphQL
# client tests, and short runs of the benchmarks so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."

bash infra/setup.sh
INFRA_DIR=${NULLOPS_INFRA_DIR:-/var/lib/nullops-infra}
export NULLOPS_TEST_DATABASE_URL=${NULLOPS_TEST_DATABASE_URL:-postgres://nullops:nullops@127.0.0.1:5432/nullops}

# Databases left by earlier runs' tests.
psql "$NULLOPS_TEST_DATABASE_URL" -qAtc \
  "SELECT format('DROP DATABASE %I;', datname) FROM pg_database WHERE datname ~ '^(t|py)_[0-9a-f]{32}$'" |
  psql "$NULLOPS_TEST_DATABASE_URL" -q >/dev/null

# One build from scratch, as CI does: no incremental data to write, and the many statically
# linked test binaries linked by lld (setup.sh installs it), several times faster than ld.bfd.
export CARGO_INCREMENTAL=0
if command -v ld.lld >/dev/null 2>&1; then
  export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-fuse-ld=lld"
fi

mkdir -p target
started=$SECONDS
phase() { echo "== $1 ($((SECONDS - started)) s in)"; }

# Style first: cheap, and a failure here needs no servers to explain.
phase "format"
cargo fmt --all --check
# Lints and the build side by side: clippy checks into a target of its own, so neither waits
# for the other's lock.
phase "lints and build"
CARGO_TARGET_DIR=target/clippy cargo clippy --workspace --all-targets -- -D warnings > target/ci-clippy.log 2>&1 &
clippy=$!
cargo build --bins --tests --workspace
# From this build, side by side: the agent and server images, the image agents run in the
# tests, and the demo service and example plugin images (pushed to the local registry).
phase "images"
bin=target/x86_64-unknown-linux-gnu/debug/nullops
images=()
# (And what infra/release.sh ships, split from this build: a binary without its debug
# information that runs, and the file that holds it.)
for step in "infra/agent-image.sh $bin" "infra/server-image.sh $bin" "tests/fixtures/busybox-image.sh" "infra/demo-images.sh $bin" "tests/fixtures/deploy-images.sh" "infra/split-debug.sh $bin target/dist-check"; do
  # shellcheck disable=SC2086 # each step is a script and its argument
  bash $step > "target/ci-image-${#images[@]}.log" 2>&1 &
  images+=($!)
done
for i in "${!images[@]}"; do
  wait "${images[$i]}" || { cat "target/ci-image-$i.log"; echo "building images failed"; exit 1; }
done
wait "$clippy" || { cat target/ci-clippy.log; echo "clippy found problems"; exit 1; }

# How busy the cores are now, in percent (over 3 s of /proc/stat): another load on the
# machine decides whether the suites can share it.
busy_percent() {
  local _ u n s i w q sq rest t1 i1 t2 i2
  read -r _ u n s i w q sq rest < /proc/stat
  t1=$((u + n + s + i + w + q + sq)) i1=$((i + w))
  sleep 3
  read -r _ u n s i w q sq rest < /proc/stat
  t2=$((u + n + s + i + w + q + sq)) i2=$((i + w))
  echo $((100 * ((t2 - t1) - (i2 - i1)) / (t2 - t1 > 0 ? t2 - t1 : 1)))
}

# Each benchmark starts, measures once at the smallest size and exits, so none can rot (its
# figures mean nothing here; they come from infra/bench.sh, release build, full rounds). Those
# that need no Docker engine run beside the suites; those that deploy on the machine's engine
# run after them, when the suites' containers no longer hold the node's room.
bench_smoke() {
  local bench=./target/x86_64-unknown-linux-gnu/debug/nullops bench_db replay_dir
  bench_db="bench_$(date +%s)"
  psql "$NULLOPS_TEST_DATABASE_URL" -qc "CREATE DATABASE $bench_db"
  NULLOPS_NATS_URL=nats://127.0.0.1:4222 $bench bench events \
    --database-url "${NULLOPS_TEST_DATABASE_URL%/*}/$bench_db" --seconds 1 --rounds 1 --commands 50
  NULLOPS_LOG=warn NULLOPS_NATS_URL=nats://127.0.0.1:4222 $bench bench catalog \
    --database-url "${NULLOPS_TEST_DATABASE_URL%/*}/$bench_db" --sizes 10 --commands 10
  NULLOPS_LOG=warn $bench bench replay \
    --database-url "${NULLOPS_TEST_DATABASE_URL%/*}/$bench_db" --events 2000 --rounds 1
  replay_dir=$(mktemp -d)
  NULLOPS_LOG=warn $bench bench replay --sqlite-dir "$replay_dir" --events 2000 --rounds 1
  rm -rf "$replay_dir"
  NULLOPS_LOG=warn $bench bench placement \
    --database-url "${NULLOPS_TEST_DATABASE_URL%/*}/$bench_db" --requests 60 --nodes 3 --rounds 1
  psql "$NULLOPS_TEST_DATABASE_URL" -qc "DROP DATABASE $bench_db"
  NULLOPS_LOG=warn $bench bench nodes --agents 20 --seconds 1
  # Fails unless every one of 2,000 subscribers gets the event (infra/bench.sh runs 10,000).
  NULLOPS_LOG=warn $bench bench feeds --subscribers 2000 --rounds 1
}
bench_smoke_on_the_engine() {
  local bench=./target/x86_64-unknown-linux-gnu/debug/nullops
  NULLOPS_LOG=warn $bench bench deploy --rounds 1
  NULLOPS_LOG=warn $bench bench ingress --rounds 1 --seconds 1 --connections 8
}

# The Rust suites, the browser and client suite (split across the cores a module per worker)
# and the benchmark smoke runs side by side: most of each is waiting on servers, Docker and
# Chromium, and together they keep both cores busy throughout (the load average stays above
# 4), so every test here already runs with both cores busy and must hold so: a token one
# server returned, a throttle count, a revoked grant, without the tests waiting longer. On a
# machine something else already keeps busy they run one after the other.
phase "Rust and Python suites, beside the benchmark smoke runs"
python_suite() {
  # The websockets transport of gql leaves a closed socket to the garbage collector on teardown.
  # Short tracebacks: what CI keeps of the output then holds every failure, not just the first.
  NULLOPS_BIN="$PWD/$bin" "$INFRA_DIR/venv/bin/pytest" -q --tb=short --durations=12 "$@" -W ignore::pytest.PytestUnraisableExceptionWarning tests/python
}
busy=$(busy_percent)
rust_status=0 python_status=0 bench_status=0
if [ "$busy" -lt 50 ]; then
  echo "the cores are ${busy}% busy: the suites run side by side"
  cargo nextest run --workspace --no-fail-fast > target/ci-rust.log 2>&1 &
  rust=$!
  python_suite -n 2 --dist loadfile > target/ci-python.log 2>&1 &
  python=$!
  bench_smoke > target/ci-bench.log 2>&1 &
  benches=$!
  wait "$rust" || rust_status=$?
  wait "$python" || python_status=$?
  wait "$benches" || bench_status=$?
  cat target/ci-rust.log target/ci-python.log target/ci-bench.log
else
  echo "the cores are ${busy}% busy with something else: the suites run one after the other"
  cargo nextest run --workspace --no-fail-fast || rust_status=$?
  python_suite || python_status=$?
  bench_smoke || bench_status=$?
fi
[ "$rust_status" -eq 0 ] || { echo "the Rust suites failed"; exit "$rust_status"; }
[ "$python_status" -eq 0 ] || { echo "the Python suite failed"; exit "$python_status"; }
[ "$bench_status" -eq 0 ] || { echo "a benchmark smoke run failed"; exit "$bench_status"; }
phase "the benchmark smoke runs that deploy on the machine's engine"
bench_smoke_on_the_engine || { echo "a benchmark smoke run failed"; exit 1; }

# On request (NULLOPS_TEST_UNDER_LOAD=1), the API suites (both storage modes, several servers
# sharing one store) once more with stress-ng keeping both cores busy on top: the harshest
# check of consistency under load, left out of the 12-minute run the suites above already
# load.
if [ "${NULLOPS_TEST_UNDER_LOAD:-0}" = 1 ]; then
  phase "the API suites again under stress-ng"
  stress-ng --cpu 2 --timeout 600 --quiet &
  burner=$!
  under_load=0
  # The whole workspace's selection, as above, so that nothing is built again for another feature set.
  cargo nextest run --workspace -E 'binary_id(nullops::e2e) & test(/^(graphql_api|live_access)::/)' --no-fail-fast || under_load=$?
  kill "$burner" 2>/dev/null || true
  wait "$burner" 2>/dev/null || true
  [ "$under_load" -eq 0 ] || { echo "the API suites failed with both cores busy"; exit "$under_load"; }
fi
phase "done"
