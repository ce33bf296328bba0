"""Traces: the platform exports OpenTelemetry spans over OTLP/HTTP (protobuf) when
OTEL_EXPORTER_OTLP_ENDPOINT is set. A receiver in the test decodes them with the official
protobuf definitions (opentelemetry-proto) and checks the span tree of one createDeployment sent
with a traceparent: gateway, command and append, the read-model wait, the saga, the connector,
the agent's run, pull, start and probe, and its plugin. No attribute carries the project's
secret. JSON logs name the trace and span."""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from test_console import ADMIN, VERSION, Api, Server, private_catalog

MARKER = "s3cret-" + uuid.uuid4().hex
TRACE_ID = uuid.uuid4().hex
PARENT = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP endpoint keeping every span it is sent."""

    def __init__(self):
        self.spans = []
        self.raw = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.raw.append(body)
                    for resource in request.resource_spans:
                        service = {a.key: a.value.string_value for a in resource.resource.attributes}.get("service.name")
                        for scope in resource.scope_spans:
                            for s in scope.spans:
                                receiver.spans.append({"service": service, "name": s.name, "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                                                       "parent": s.parent_span_id.hex(), "start": s.start_time_unix_nano,
                                                       "attributes": {a.key: str(a.value) for a in s.attributes}})
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_trace(self, trace):
        with self.lock:
            return [s for s in self.spans if s["trace"] == trace]


@pytest.fixture(scope="module")
def traced():
    receiver = Receiver()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "nullops-test", "OTEL_BSP_SCHEDULE_DELAY": "200", "NULLOPS_LOG_FORMAT": "json",
           "NULLOPS_LOG": "info,sqlx=warn"}
    server = Server(env=env)
    yield server, receiver
    server.clean_up()
    receiver.server.shutdown()


def test_one_create_deployment_is_one_trace_from_the_api_to_the_container(traced):
    server, receiver = traced
    admin = Api(server, *ADMIN)
    private_catalog(admin, api_health=True, web=False)
    admin.ok('mutation { createProject(input: {name: "shop", environments: ["local"], cpuMillis: 300, memoryMib: 128}) { name } }')
    admin.ok('mutation($v: String!) { setSecret(project: "shop", name: "TOKEN", value: $v) { name } }', v=MARKER)
    admin.ok("""mutation { createPlugin(input: {name: "http-check", registry: "private", repository: "nullops/http-check", tag: "%s",
        parametersSchema: {type: "object"}, joinsDeploymentNetwork: true}) { name } }""" % VERSION)
    # The secret reaches the plugin (in its URL) and must reach no span.
    admin.ok("""mutation { savePipeline(project: "shop", pipeline: {nodes: [{id: "api", service: "api"},
        {id: "check", plugin: "http-check", parameters: {url: "http://${{ nodes.api.outputs.host }}:${{ nodes.api.outputs.port }}/healthz?token=${{ secrets.TOKEN }}"}}],
        edges: [{from: "api", to: "check"}]}) { version } }""")
    traceparent = f"00-{TRACE_ID}-{PARENT}-01"
    answer = admin.session.post(admin.url, json={"query": 'mutation { createDeployment(project: "shop", environment: "local", name: "t1") { id } }'},
                                headers={"traceparent": traceparent}, timeout=60).json()
    assert not answer.get("errors"), answer
    made = answer["data"]["createDeployment"]["id"]
    admin.wait_for("t1 running", lambda: admin.ok('query($id: ID!) { deployment(id: $id) { state } }', id=made)["deployment"]["state"] == "RUNNING", timeout=240)

    wanted = {"graphql", "command", "store.append", "read_models.wait", "saga.react", "connector.send", "agent.run", "agent.service", "agent.pull",
              "agent.start", "agent.probe", "agent.plugin", "connector.record"}
    try:
        spans = admin.wait_for("the trace's spans", lambda: (s := receiver.of_trace(TRACE_ID)) and wanted <= {x["name"] for x in s} and s, timeout=120)
    except AssertionError:
        got = {x["name"] for x in receiver.of_trace(TRACE_ID)}
        with receiver.lock:
            traces = {x["trace"] for x in receiver.spans}
        raise AssertionError(f"missing {sorted(wanted - got)}; got {sorted(got)}; {len(traces)} traces seen")
    by_id = {s["id"]: s for s in spans}
    root = [s for s in spans if s["name"] == "graphql"]
    assert len(root) == 1 and root[0]["parent"] == PARENT, "the caller's span is the request's parent"
    # One tree: every span's parent is in the trace, up to the caller's.
    for s in spans:
        assert s["parent"] == PARENT or s["parent"] in by_id, (s["name"], s["parent"])
    chain = lambda s: [s["name"]] + (chain(by_id[s["parent"]]) if s["parent"] in by_id else [])
    run = next(s for s in spans if s["name"] == "agent.run")
    assert chain(run)[-1] == "graphql" and "connector.send" not in chain(run) and "saga.react" in chain(run), chain(run)
    assert {s["service"] for s in spans} == {"nullops-test"}
    # JSON log lines written inside the trace name it and their span.
    logged = []
    while not server.lines.empty():
        line = server.lines.get_nowait()
        if line.startswith("{"):
            logged.append(json.loads(line))
    joined = [entry for entry in logged if entry.get("trace_id") == TRACE_ID]
    assert joined and all(entry["span_id"] in by_id for entry in joined), [entry["fields"] for entry in logged[-5:]]
    assert all(MARKER not in json.dumps(entry) for entry in logged)
    # No span, attribute or export carries the secret.
    assert all(MARKER not in json.dumps(s) for s in receiver.spans)
    with receiver.lock:
        assert all(MARKER.encode() not in body for body in receiver.raw)
