#!/usr/bin/env bash
# The cost of observability, on a release build, in one run: append throughput (16 writers, as
# its ratio to pgbench in the same round, which takes the machine's noise out), command-to-read-
# model p99, and requests/s through the ingress, each with nothing recorded (NULLOPS_METRICS=off,
# no traces), with metrics, and with metrics and traces (OTLP/HTTP to a local sink, 10% of
# traces sampled). Prints each figure and its ratios to the first.
# Usage: bench-observability.sh [BINARY]   (default: the release build, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh >/dev/null
binary=${1:-}
if [ -z "$binary" ]; then
  cargo build --release --bin nullops
  binary=target/x86_64-unknown-linux-gnu/release/nullops
fi
seconds=${NULLOPS_BENCH_SECONDS:-3}
admin=${NULLOPS_TEST_DATABASE_URL:-postgres://nullops:nullops@127.0.0.1:5432/nullops}
db="bench_obs_$(date +%s)"
for run in off metrics on; do psql "$admin" -qc "CREATE DATABASE ${db}_$run"; done
work=$(mktemp -d)
# A sink that takes every export and answers 200, as a collector would.
python3 -c '
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()' >"$work/sink.port" &
sink=$!
trap 'kill $sink 2>/dev/null; for run in off metrics on; do psql "$admin" -qc "DROP DATABASE ${db}_$run"; done; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
traces_on=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(cat "$work/sink.port")" OTEL_SERVICE_NAME=bench OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
export NULLOPS_LOG=warn NULLOPS_NATS_URL=nats://127.0.0.1:4222

result() { grep "^RESULT $1=" "$2" | cut -d= -f2; }
rps() { awk '/nullops ingress/ { print $3 }' "$1"; }
# Each setting runs the same benchmarks, the settings interleaved round by round (the machine's
# drift hits them alike); each figure is the median of its rounds.
rounds=${NULLOPS_BENCH_ROUNDS:-3}
declare -A setting=([off]="NULLOPS_METRICS=off" [metrics]="NULLOPS_METRICS=on" [on]="NULLOPS_METRICS=on ${traces_on[*]}")
for round in $(seq 1 "$rounds"); do
  for run in off metrics on; do
    # shellcheck disable=SC2086
    env ${setting[$run]} "$binary" bench events --database-url "${admin%/*}/${db}_$run" --seconds 1 --commands 2000 >"$work/events_${run}_$round"
    # shellcheck disable=SC2086
    env ${setting[$run]} "$binary" bench ingress --rounds 1 --seconds "$seconds" >"$work/ingress_${run}_$round"
  done
done
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
figure() { # KIND RUN: the median over rounds
  for round in $(seq 1 "$rounds"); do
    case $1 in
      append) result append_ratio_writers_16 "$work/events_${2}_$round" ;;
      p99) result command_to_projection_p99_ms "$work/events_${2}_$round" ;;
      rps) rps "$work/ingress_${2}_$round" ;;
    esac
  done | median
}

report() { # NAME OFF METRICS ON BETTER
  awk -v n="$1" -v off="$2" -v m="$3" -v on="$4" -v better="$5" 'BEGIN {
    printf "  %-30s nothing %9.2f   metrics %9.2f (%.3fx)   metrics+traces %9.2f (%.3fx)   (%s is better)\n", n, off, m, m / off, on, on / off, better
    printf "RESULT observability_%s_metrics_ratio=%.3f\nRESULT observability_%s_metrics_traces_ratio=%.3f\n", n, m / off, n, on / off }'
}
echo "== the cost of observability (traces 10% sampled, OTLP/HTTP), release build, medians of $rounds interleaved rounds, ratios to nothing recorded =="
report append_vs_pgbench_16 "$(figure append off)" "$(figure append metrics)" "$(figure append on)" higher
report command_to_model_p99_ms "$(figure p99 off)" "$(figure p99 metrics)" "$(figure p99 on)" lower
report ingress_requests_per_s "$(figure rps off)" "$(figure rps metrics)" "$(figure rps on)" higher
