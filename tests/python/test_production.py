"""The production install: the nullops/server image (FROM scratch around the static binary) runs
`nullops server` against the PostgreSQL and NATS JetStream the tests run, answers its API, serves
its metrics on the metrics address, sends its traces to an OTLP endpoint and writes JSON logs
that name them; the layout's Prometheus configuration is valid."""

import os
import secrets
import subprocess
import time
import uuid

import pytest
import requests

from test_console import ADMIN, Api, free_port
from test_traces import Receiver

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
PG = os.environ.get("NULLOPS_TEST_PG", "postgres://nullops:nullops@127.0.0.1:5432")


def psql(sql):
    subprocess.run(["psql", f"{PG}/nullops", "-qc", sql], check=True, capture_output=True)


class Base:
    """What the Api helper needs of a server: its base URL."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def container():
    database = f"prod_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {database}")
    receiver = Receiver()
    port, ingress, metrics = free_port(), free_port(), free_port()
    name = f"nullops-server-{uuid.uuid4().hex[:8]}"
    env = {
        "NULLOPS_DATABASE_URL": f"{PG}/{database}", "NULLOPS_NATS_URL": "nats://127.0.0.1:4222", "NULLOPS_NATS_PREFIX": database,
        "NULLOPS_MASTER_KEY": secrets.token_hex(32), "NULLOPS_ADMIN_PASSWORD": ADMIN[1],
        "NULLOPS_LISTEN": f"127.0.0.1:{port}", "NULLOPS_INGRESS_LISTEN": f"127.0.0.1:{ingress}", "NULLOPS_METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "nullops-server", "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    args = ["docker", "run", "-d", "--name", name, "--network", "host"] + [a for k, v in env.items() for a in ("-e", f"{k}={v}")] + ["nullops/server:latest"]
    subprocess.run(args, check=True, capture_output=True)
    base = Base(port)
    try:
        deadline_ok = lambda: requests.get(f"{base.base}/readyz", timeout=5).status_code == 200
        until = time.monotonic() + 120
        while True:
            try:
                if deadline_ok():
                    break
            except requests.RequestException:
                pass
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True).stdout.strip()
            assert state == "true", subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout[-3000:]
            assert time.monotonic() < until, "the server did not become ready"
            time.sleep(0.2)
        yield base, metrics, receiver, name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        receiver.server.shutdown()
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_the_server_image_serves_its_api_metrics_traces_and_json_logs(container):
    base, metrics, receiver, name = container
    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", "nullops/server:latest"], capture_output=True, text=True, check=True).stdout)
    assert size < 200 * 1024 * 1024, f"the image holds only the binary and the CA roots: {size} bytes"
    admin = Api(base, *ADMIN)
    trace = uuid.uuid4().hex
    made = admin.session.post(admin.url, json={"query": 'mutation { createTeam(name: "ops") { name } }'},
                              headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}, timeout=30).json()
    assert made == {"data": {"createTeam": {"name": "ops"}}}, made
    text = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=10).text
    assert 'nullops_commands_total{aggregate="catalog",outcome="ok"}' in text and text.endswith("# EOF\n")
    wanted = {"graphql", "command", "store.append"}
    spans = admin.wait_for("the request's spans", lambda: (s := receiver.of_trace(trace)) and wanted <= {x["name"] for x in s} and s, timeout=60)
    assert {s["service"] for s in spans} == {"nullops-server"}
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout.splitlines()
    assert logs and all(line.startswith("{") or not line.strip() or line.startswith("NullOps") or line.startswith("Metrics") for line in logs), logs[:5]


def test_the_production_prometheus_configuration_is_valid():
    out = subprocess.run(["promtool", "check", "config", os.path.join(ROOT, "infra", "production", "prometheus.yml")], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS" in out.stdout + out.stderr, out.stdout + out.stderr
