#!/usr/bin/env bash
# The cost of observability, on a release build, in one run: append throughput (16 writers, as
# its ratio to pgbench in the same round, which takes the machine's noise out), command-to-read-
# model p99, and requests/s through the ingress, each with traces on (OTLP/HTTP to a local sink,
# 10% of traces sampled) against traces off. Metrics are always on: what is measured is the
# platform as shipped, with and without tracing. Prints each figure and the ratio on / off.
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
psql "$admin" -qc "CREATE DATABASE ${db}_off"
psql "$admin" -qc "CREATE DATABASE ${db}_on"
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
trap 'kill $sink 2>/dev/null; psql "$admin" -qc "DROP DATABASE ${db}_off"; psql "$admin" -qc "DROP DATABASE ${db}_on"; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
traces_on=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(cat "$work/sink.port")" OTEL_SERVICE_NAME=bench OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1)
export NULLOPS_LOG=warn NULLOPS_NATS_URL=nats://127.0.0.1:4222

result() { grep "^RESULT $1=" "$2" | cut -d= -f2; }
"$binary" bench events --database-url "${admin%/*}/${db}_off" --seconds "$seconds" --commands 1000 >"$work/events_off"
env "${traces_on[@]}" "$binary" bench events --database-url "${admin%/*}/${db}_on" --seconds "$seconds" --commands 1000 >"$work/events_on"
"$binary" bench ingress --rounds 3 --seconds "$seconds" >"$work/ingress_off"
env "${traces_on[@]}" "$binary" bench ingress --rounds 3 --seconds "$seconds" >"$work/ingress_on"
rps() { awk '/nullops ingress/ { print $3 }' "$1"; }

report() { # NAME OFF ON WHICH-IS-BETTER
  awk -v n="$1" -v off="$2" -v on="$3" -v better="$4" 'BEGIN {
    r = on / off
    printf "  %-34s off %10.2f   on %10.2f   on/off %.3fx  (%s is better)\n", n, off, on, r, better
    printf "RESULT observability_%s_ratio=%.3f\n", n, r }'
}
echo "== the cost of traces (10% sampled, OTLP/HTTP) with metrics on, release build =="
report append_vs_pgbench_16_writers "$(result append_ratio_writers_16 "$work/events_off")" "$(result append_ratio_writers_16 "$work/events_on")" higher
report command_to_read_model_p99_ms "$(result command_to_projection_p99_ms "$work/events_off")" "$(result command_to_projection_p99_ms "$work/events_on")" lower
report ingress_requests_per_second "$(rps "$work/ingress_off")" "$(rps "$work/ingress_on")" higher
