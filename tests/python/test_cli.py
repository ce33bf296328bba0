"""The `nullops` CLI as a CI job drives it, against `nullops up` with the tests' private registry:
sign in once (the token saved with mode 0600) or pass NULLOPS_URL/NULLOPS_TOKEN; deploy and
wait (exit 0 with URLs that answer through the ingress), a failing pipeline (exit 1 with the
failure), a wait that runs out (exit 3), a bad token (exit 2, UNAUTHENTICATED); lists and gets
as the API's JSON; logs followed as they are written; delete and wait."""

import json
import os
import queue
import stat
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import BIN
from test_console import ADMIN, VERSION, Api, Server, free_port, private_catalog


@pytest.fixture(scope="module")
def server():
    s = Server()
    admin = Api(s, *ADMIN)
    private_catalog(admin, api_health=True)
    admin.ok("""mutation($s: JSON!) { createPlugin(input: {name: "script", registry: "private", repository: "nullops-test/script-plugin", tag: "1",
        parametersSchema: $s}) { name } }""", s={"type": "object", "properties": {"mode": {"type": "string"}}})
    pipelines = {
        "shop": {"nodes": [{"id": "api", "service": "api"}, {"id": "web", "service": "web"}]},
        "fails": {"nodes": [{"id": "api", "service": "api"}, {"id": "migrate", "plugin": "script", "parameters": {"mode": "fail"}}],
                  "edges": [{"from": "api", "to": "migrate"}]},
        "hangs": {"nodes": [{"id": "forever", "plugin": "script", "parameters": {"mode": "sleep"}}]},
        "slow": {"nodes": [{"id": "nap", "plugin": "script", "parameters": {"mode": "slow"}}, {"id": "api", "service": "api"}],
                 "edges": [{"from": "nap", "to": "api"}]},
    }
    for name, pipeline in pipelines.items():
        admin.ok("mutation($n: String!) { createProject(input: {name: $n, environments: [\"local\"], cpuMillis: 200, memoryMib: 256}) { name } }", n=name)
        admin.ok("mutation($n: String!, $i: PipelineInput!) { savePipeline(project: $n, pipeline: $i) { version } }", n=name, i=pipeline)
    yield s
    s.clean_up()


@pytest.fixture(scope="module")
def home():
    """A config directory of the tests' own: `login` writes there."""
    return tempfile.mkdtemp(prefix="nullops-cli-")


def cli(server, home, *args, token=None, stdin=None, timeout=300):
    env = {**os.environ, "XDG_CONFIG_HOME": home}
    env.pop("NULLOPS_URL", None)
    env.pop("NULLOPS_TOKEN", None)
    if token is not None:
        env.update(NULLOPS_URL=server.base, NULLOPS_TOKEN=token)
    return subprocess.run([BIN, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


def test_login_saves_a_token_only_its_owner_can_read(server, home):
    r = cli(server, home, "login", "--url", server.base, "--username", ADMIN[0], stdin=ADMIN[1] + "\n")
    assert r.returncode == 0, r.stderr
    assert f"Signed in to {server.base} as admin" in r.stdout
    path = os.path.join(home, "nullops", "config.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    who = cli(server, home, "whoami", "-o", "json")
    assert who.returncode == 0 and json.loads(who.stdout) == {"username": "admin", "role": "ADMIN"}, who
    # A wrong password changes nothing saved.
    before = open(path).read()
    bad = cli(server, home, "login", "--url", server.base, "--username", ADMIN[0], stdin="wrong-password\n")
    assert bad.returncode == 2 and bad.stderr.startswith("UNAUTHENTICATED: "), bad
    assert open(path).read() == before


class Recorder:
    """A server that is not NullOps: records the headers of every request it gets."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.headers = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                recorder.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.dumps({"data": None, "errors": [{"message": "who are you?", "extensions": {"code": "UNAUTHENTICATED"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_saved_token_goes_only_to_its_server_and_never_through_arguments_or_links(server):
    home = tempfile.mkdtemp(prefix="nullops-cli-")
    assert cli(server, home, "login", "--url", server.base, "--username", ADMIN[0], stdin=ADMIN[1] + "\n").returncode == 0
    saved = json.load(open(os.path.join(home, "nullops", "config.json")))["token"]
    # Another server named by --url or NULLOPS_URL gets no token from the file.
    other = Recorder()
    r = cli(server, home, "whoami", "--url", other.base)
    assert r.returncode == 2 and r.stderr.startswith("UNAUTHENTICATED: "), r
    env = {**os.environ, "XDG_CONFIG_HOME": home, "NULLOPS_URL": other.base}
    env.pop("NULLOPS_TOKEN", None)
    subprocess.run([BIN, "whoami"], env=env, capture_output=True, text=True, timeout=60)
    assert len(other.headers) == 2 and all("authorization" not in h for h in other.headers), other.headers
    assert all(saved not in json.dumps(h) for h in other.headers)
    other.server.shutdown()

    # A token in the arguments is refused, saying how to give it instead; stdin works.
    token = Api(server, *ADMIN).ok('mutation { createApiToken(name: "cli-stdin") { token } }')["createApiToken"]["token"]
    r = cli(server, home, "login", "--url", server.base, "--token", token)
    assert r.returncode == 2 and "--with-token" in r.stderr and token not in r.stderr, r
    r = cli(server, home, "login", "--url", server.base, "--with-token", stdin=token + "\n")
    assert r.returncode == 0 and "as admin" in r.stdout, r
    assert json.load(open(os.path.join(home, "nullops", "config.json")))["token"] == token

    # A symbolic link where the configuration goes is not written through.
    elsewhere = tempfile.mkdtemp(prefix="nullops-cli-target-")
    target = os.path.join(elsewhere, "stolen.json")
    linked = tempfile.mkdtemp(prefix="nullops-cli-linked-")
    os.makedirs(os.path.join(linked, "nullops"))
    os.symlink(target, os.path.join(linked, "nullops", "config.json"))
    r = cli(server, linked, "login", "--url", server.base, "--with-token", stdin=token + "\n")
    assert r.returncode == 2 and "symbolic link" in r.stderr, r
    assert not os.path.exists(target)


def test_a_bad_token_is_exit_2_with_the_apis_code(server, home):
    r = cli(server, home, "deployments", "ls", token="nat_not-a-token")
    assert r.returncode == 2
    assert r.stderr.startswith("UNAUTHENTICATED: "), r.stderr
    r = cli(server, home, "deployments", "ls", "-o", "json", token="nat_not-a-token")
    assert json.loads(r.stderr)["code"] == "UNAUTHENTICATED"
    r = cli(server, home, "deploy", "shop", "--env", "local", "--tag", "nonsense")
    assert r.returncode == 2 and "SERVICE=TAG" in r.stderr, r.stderr


def test_deploy_and_wait_exits_0_with_urls_that_answer_through_the_ingress(server, home):
    r = cli(server, home, "deploy", "shop", "--env", "local", "--name", "ci-1", "--tag", "web=v1", "--wait", "-o", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["name"], d["project"], d["environment"], d["state"]) == ("ci-1", "shop", "local", "RUNNING")
    assert {s["name"]: s["tag"] for s in d["services"]} == {"api": VERSION, "web": "v1"}
    for s in d["services"]:
        assert s["healthy"] is True, d
        # The URL's host names the service and deployment; the ingress routes by it.
        host = s["url"].split("//", 1)[1].split("/", 1)[0].split(":")[0]
        body = requests.get(f"http://127.0.0.1:{server.ingress_port}/", headers={"Host": host}, timeout=30)
        assert body.status_code == 200, (s, body.status_code, body.text)
    # Human output: its URLs.
    human = cli(server, home, "deployments", "get", "ci-1")
    assert human.returncode == 0 and "ci-1  RUNNING" in human.stdout and d["services"][0]["url"] in human.stdout, human.stdout
    listed = cli(server, home, "deployments", "ls", "--project", "shop", "-o", "json")
    assert [x["name"] for x in json.loads(listed.stdout)] == ["ci-1"]
    assert "ci-1" in cli(server, home, "deployments", "ls").stdout


def test_a_failing_pipeline_exits_1_with_the_failure(server, home):
    r = cli(server, home, "deploy", "fails", "--env", "local", "--name", "ci-broken", "--wait")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "FAILED: deployment ci-broken at step migrate: " in r.stderr and "migration 42 failed" in r.stderr, r.stderr
    as_json = cli(server, home, "deployments", "get", "ci-broken", "-o", "json")
    assert json.loads(as_json.stdout)["failure"]["step"] == "migrate"


def test_a_wait_that_runs_out_exits_3(server, home):
    r = cli(server, home, "deploy", "hangs", "--env", "local", "--name", "ci-hangs", "--wait", "--timeout", "3s")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "TIMEOUT: deployment ci-hangs is DEPLOYING after 3 s" in r.stderr
    gone = cli(server, home, "delete", "ci-hangs", "--wait", "-o", "json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["state"] in ("CANCELLED", "DELETED")


def test_logs_follow_prints_lines_as_they_are_written(server, home):
    made = cli(server, home, "deploy", "slow", "--env", "local", "--name", "ci-slow", "-o", "json")
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "XDG_CONFIG_HOME": home}
    follower = subprocess.Popen([BIN, "logs", "ci-slow", "-f"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        seen = []
        deadline = time.monotonic() + 240
        # The nap step takes 6 s: its end is written while the follower runs.
        while not any("every step succeeded" in line for line in seen):
            assert time.monotonic() < deadline, seen
            assert follower.poll() is None, (seen, follower.stderr.read())
            try:
                seen.append(lines.get(timeout=5))
            except queue.Empty:
                pass
        started = next(i for i, line in enumerate(seen) if "step nap started" in line)
        done = next(i for i, line in enumerate(seen) if "step nap succeeded" in line)
        assert started < done, seen
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    tail = cli(server, home, "logs", "ci-slow", "--tail", "2")
    assert tail.returncode == 0 and len(tail.stdout.strip().splitlines()) == 2, tail.stdout


def test_https_and_wss_through_a_tls_proxy_with_the_systems_trust(server, home):
    """Behind a TLS-terminating proxy (nginx here, with a certificate the test made and trusts
    through SSL_CERT_FILE), queries go over https and the live wait over wss."""
    tmp = tempfile.mkdtemp(prefix="nullops-cli-tls-")
    # A certificate authority of the test's own, and the proxy's certificate signed by it.
    ca, ca_key = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "ca-key.pem")
    cert, key, csr = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.csr")
    ext = os.path.join(tmp, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    for args in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=NullOps test CA", "-keyout", ca_key, "-out", ca],
                 ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key, "-out", csr],
                 ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", cert]):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{}}
http {{
  access_log off;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{
      proxy_pass {server.base};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
    proxy = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", tmp], stderr=subprocess.PIPE)
    try:
        token = Api(server, *ADMIN).ok('mutation { createApiToken(name: "ci-tls") { token } }')["createApiToken"]["token"]
        env = {**os.environ, "XDG_CONFIG_HOME": home, "NULLOPS_URL": f"https://localhost:{port}", "NULLOPS_TOKEN": token, "SSL_CERT_FILE": ca}
        run = lambda *args: subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=300)
        deadline = time.monotonic() + 30
        while (who := run("whoami")).returncode != 0:
            assert time.monotonic() < deadline and proxy.poll() is None, (who.stderr, proxy.stderr.read() if proxy.poll() is not None else "")
            time.sleep(0.2)
        assert who.stdout.strip() == "admin (admin)"
        r = run("deploy", "shop", "--env", "local", "--name", "ci-tls", "--tag", "web=v2", "--wait", "-o", "json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["state"] == "RUNNING"
        # Without trusting the certificate, the CLI refuses the server.
        untrusted = subprocess.run([BIN, "whoami"], env={**env, "SSL_CERT_FILE": os.devnull}, capture_output=True, text=True, timeout=60)
        assert untrusted.returncode == 2 and untrusted.stderr.startswith("NETWORK: "), untrusted.stderr
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)


def test_extend_clone_retry_and_tags(server, home):
    before = json.loads(cli(server, home, "deployments", "get", "ci-1", "-o", "json").stdout)
    extended = cli(server, home, "extend", "ci-1", "-o", "json")
    assert extended.returncode == 0, extended.stderr
    assert json.loads(extended.stdout)["expiresAt"] >= before["expiresAt"]
    cloned = cli(server, home, "clone", "ci-1", "--name", "ci-2", "--tag", "web=v2", "-o", "json")
    assert cloned.returncode == 0, cloned.stderr
    c = json.loads(cloned.stdout)
    assert (c["name"], {s["name"]: s["tag"] for s in c["services"]}["web"]) == ("ci-2", "v2")
    retried = cli(server, home, "retry", "ci-broken", "-o", "json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["attempt"] == 2
    refused = cli(server, home, "retry", "ci-1")
    assert refused.returncode == 2 and refused.stderr.split(":")[0] in ("CONFLICT", "INVALID_INPUT"), refused.stderr
    tags = cli(server, home, "tags", "web")
    assert tags.returncode == 0 and {"v1", "v2"} <= set(tags.stdout.split()), tags.stdout
    missing = cli(server, home, "deployments", "get", "no-such-deployment")
    assert missing.returncode == 2 and missing.stderr.startswith("NOT_FOUND: "), missing.stderr


def test_a_pacing_it_cannot_read_stops_the_start_saying_what_to_write():
    """`--pacing` (NULLOPS_PACING) changes the background processes' pauses; what it cannot read
    stops the server before it starts, with the stable code and the names it knows."""
    data = tempfile.mkdtemp(prefix="nullops-pacing-")
    for spec, said in [("reap_evry=1s", "there is no pause called \"reap_evry\"; the pauses are: node_grace, reap_every"),
                       ("reap_every=1ms", "reap_every must be between 100ms and 1m"),
                       ("webhook_max_pause=ten", "a duration is a whole number with ms, s, m or h")]:
        started = subprocess.run([BIN, "up", "--data-dir", data, "--listen", "127.0.0.1:0", "--pacing", spec],
                                 env={**os.environ, "NULLOPS_NO_DEMO": "true"}, capture_output=True, text=True, timeout=60)
        assert started.returncode == 2, (spec, started.returncode, started.stdout, started.stderr)
        assert "INVALID_PACING: " in started.stderr and said in started.stderr, started.stderr
        assert "NullOps is up" not in started.stdout, started.stdout
