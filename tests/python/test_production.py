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

from test_console import ADMIN, Api, free_port, private_catalog
from conftest import BIN
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
        # The tests' registry is on this machine (conftest allows loopback for the processes it starts).
        "NULLOPS_ALLOWED_PRIVATE_TARGETS": os.environ["NULLOPS_ALLOWED_PRIVATE_TARGETS"],
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
        yield base, metrics, receiver, name, env
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        receiver.server.shutdown()
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_the_server_image_serves_its_api_metrics_traces_and_json_logs(container):
    base, metrics, receiver, name, _ = container
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


def test_in_production_one_deployment_is_one_trace_across_the_server_and_the_agent_container(container):
    base, _, receiver, _, _ = container
    admin = Api(base, *ADMIN)
    scope = f"t{uuid.uuid4().hex[:8]}"
    agent_port, agent_metrics = free_port(), free_port()
    admin.ok('mutation { createEnvironment(input: {name: "prod", baseDomain: "localhost", cleanupAfterSeconds: 3600}) { name } }')
    made = admin.ok('mutation($p: Int!) { addNode(environment: "prod", host: "127.0.0.1", port: $p) { token node { id } } }', p=agent_port)["addNode"]
    agent = f"nullops-agent-{scope}"
    env = {"NULLOPS_AGENT_TOKEN": made["token"], "NULLOPS_AGENT_LISTEN": f"127.0.0.1:{agent_port}", "NULLOPS_AGENT_SCOPE": scope,
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "nullops-agent", "OTEL_BSP_SCHEDULE_DELAY": "200",
           "NULLOPS_METRICS_LISTEN": f"127.0.0.1:{agent_metrics}"}
    args = ["docker", "run", "-d", "--name", agent, "--network", "host", "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{agent}:/data"]
    args += [a for k, v in env.items() for a in ("-e", f"{k}={v}")] + ["nullops/agent:latest"]
    subprocess.run(args, check=True, capture_output=True)
    try:
        admin.wait_for("the node online", lambda: admin.ok('{ nodes(environment: "prod") { status } }')["nodes"][0]["status"] == "ONLINE", timeout=120)
        private_catalog(admin, api_health=True, web=False)
        admin.ok('mutation { createProject(input: {name: "shop", environments: ["prod"], cpuMillis: 300, memoryMib: 96}) { name } }')
        admin.ok('mutation { savePipeline(project: "shop", pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }')
        trace = uuid.uuid4().hex
        answer = admin.session.post(admin.url, json={"query": 'mutation { createDeployment(project: "shop", environment: "prod", name: "p1") { id } }'},
                                    headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}, timeout=60).json()
        assert not answer.get("errors"), answer
        deployment = answer["data"]["createDeployment"]["id"]
        state = lambda: admin.ok('query($id: ID!) { deployment(id: $id) { state } }', id=deployment)["deployment"]["state"]
        admin.wait_for("p1 running", lambda: state() == "RUNNING", timeout=240)
        wanted = {("nullops-server", "graphql"), ("nullops-server", "saga.react"), ("nullops-server", "connector.send"), ("nullops-server", "connector.record"),
                  ("nullops-agent", "agent.run"), ("nullops-agent", "agent.pull"), ("nullops-agent", "agent.start"), ("nullops-agent", "agent.probe")}
        spans = admin.wait_for("both processes' spans", lambda: (s := receiver.of_trace(trace)) and wanted <= {(x["service"], x["name"]) for x in s} and s, timeout=120)
        by_id = {s["id"]: s for s in spans}
        run = next(s for s in spans if s["name"] == "agent.run")
        # The agent's run is a child of the server's placement, across the wire.
        assert by_id[run["parent"]]["service"] == "nullops-server", by_id.get(run["parent"])
        # The agent serves its own metrics (its image pulls, timed).
        text = requests.get(f"http://127.0.0.1:{agent_metrics}/metrics", timeout=10).text
        assert "# TYPE nullops_image_pull_duration_seconds histogram" in text and text.endswith("# EOF\n"), text[-500:]
        admin.ok('mutation($id: ID!) { deleteDeployment(id: $id) { id } }', id=deployment)
        admin.wait_for("p1 gone", lambda: state() == "DELETED", timeout=240)
    finally:
        subprocess.run(["docker", "rm", "-f", agent], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", agent], capture_output=True)
        leftovers = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=nullops.scope={scope}"], capture_output=True, text=True).stdout.split()
        if leftovers:
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


def test_the_connector_and_the_ingress_serve_their_own_metrics(container):
    _, _, _, _, env = container
    for command in (["connector"], ["ingress", "--ingress-listen", f"127.0.0.1:{free_port()}"]):
        port = free_port()
        proc = subprocess.Popen([BIN, *command, "--metrics-listen", f"127.0.0.1:{port}"], env={**os.environ, **env, "NULLOPS_LOG": "warn"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            until = time.monotonic() + 60
            while True:
                try:
                    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                    break
                except requests.RequestException:
                    assert proc.poll() is None and time.monotonic() < until, f"{command[0]} serves no metrics"
                    time.sleep(0.2)
            assert "# TYPE nullops_ingress_request_duration_seconds histogram" in text and text.endswith("# EOF\n"), (command, text[-300:])
        finally:
            proc.terminate()
            proc.wait(timeout=30)
