"""An idle platform is idle: with deployments running and nobody connected, the local agent
leaves its Docker engine alone between changes. A proxy on the engine's socket (the agent's
DOCKER_HOST) counts every API request the agent makes over 30 idle seconds."""

import os
import socket
import tempfile
import threading

from test_console import ADMIN, Api, Server, private_catalog

ENGINE = "/var/run/docker.sock"
IDLE_SECONDS = 30
# At most one call a second on average (the reconcile's 30 s tick costs a handful).
BOUND = IDLE_SECONDS


class CountingProxy:
    """A Unix socket in front of the engine's; counts HTTP request heads (bodies skipped by
    Content-Length; a chunked or upgraded connection is passed through uncounted after its head)."""

    def __init__(self):
        self.path = os.path.join(tempfile.mkdtemp(prefix="nullops-engine-"), "docker.sock")
        self.requests = 0
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def count(self):
        with self.lock:
            return self.requests

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(ENGINE)
            threading.Thread(target=self.up, args=(client, engine), daemon=True).start()
            threading.Thread(target=self.down, args=(engine, client), daemon=True).start()

    def up(self, client, engine):
        try:
            self.relay_up(client, engine)
        except OSError:
            # Either side closed while the other still spoke (a stream the agent dropped).
            pass

    def relay_up(self, client, engine):
        head, body_left, opaque = b"", 0, False
        while True:
            data = client.recv(65536)
            if not data:
                engine.shutdown(socket.SHUT_WR)
                return
            rest = data
            while rest and not opaque:
                if body_left:
                    skip = min(body_left, len(rest))
                    body_left, rest = body_left - skip, rest[skip:]
                    continue
                end = (head + rest).find(b"\r\n\r\n")
                if end < 0:
                    head, rest = head + rest, b""
                    continue
                whole = head + rest
                head, rest = b"", whole[end + 4:]
                with self.lock:
                    self.requests += 1
                headers = whole[:end].decode("latin-1").lower().split("\r\n")[1:]
                fields = dict(h.split(":", 1) for h in headers if ":" in h)
                body_left = int(fields.get("content-length", "0").strip() or 0)
                opaque = "chunked" in fields.get("transfer-encoding", "") or "upgrade" in fields
            engine.sendall(data)

    @staticmethod
    def down(engine, client):
        try:
            while True:
                data = engine.recv(65536)
                if not data:
                    client.close()
                    return
                client.sendall(data)
        except OSError:
            # The agent closed its end (a stream it no longer follows).
            client.close()


def test_an_idle_agent_leaves_its_engine_alone():
    proxy = CountingProxy()
    server = Server(env={"DOCKER_HOST": f"unix://{proxy.path}"})
    try:
        admin = Api(server, *ADMIN)
        admin.wait_for("the local node online", lambda: admin.ok('{ nodes(environment: "local") { status } }')["nodes"][0]["status"] == "ONLINE")
        private_catalog(admin, api_health=True, web=False)
        admin.ok('mutation { createProject(input: {name: "idle", environments: ["local"], cpuMillis: 100, memoryMib: 32}) { name } }')
        admin.ok('mutation { savePipeline(project: "idle", pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }')
        ids = [admin.ok('mutation($n: String!) { createDeployment(project: "idle", environment: "local", name: $n) { id } }', n=f"idle-{i}")["createDeployment"]["id"]
               for i in range(3)]
        # Running, probed healthy, and their use reported: everything a running deployment does.
        def settled():
            states = [admin.ok('query($id: ID!) { deployment(id: $id) { state } }', id=i)["deployment"]["state"] for i in ids]
            usage = admin.ok('{ nodes(environment: "local") { usage { containers { deployment } } } }')["nodes"][0]["usage"]
            return states == ["RUNNING"] * 3 and usage and len({c["deployment"] for c in usage["containers"]}) == 3
        admin.wait_for("three running deployments with their use reported", settled, timeout=180)
        before = proxy.count()
        assert before > 0, "the agent reached its engine through the proxy"
        # The measurement window: nothing changes, nobody is connected.
        admin.session.close()
        threading.Event().wait(IDLE_SECONDS)
        calls = proxy.count() - before
        print(f"[idle figure] engine calls in {IDLE_SECONDS} idle s with 3 running deployments: {calls}")
        assert calls <= BOUND, f"{calls} engine calls in {IDLE_SECONDS} idle seconds"
        # Quiet, not stopped: the deployments still run.
        assert Api(server, *ADMIN).ok('query($id: ID!) { deployment(id: $id) { state } }', id=ids[0])["deployment"]["state"] == "RUNNING"
    finally:
        server.clean_up()
