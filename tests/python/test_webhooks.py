"""Webhooks out, received by a real HTTP server in the test and verified with the
`standardwebhooks` library: every event of a deployment's life in order, CloudEvents 1.0 with
valid signatures; a receiver that is down gets the backlog after; a rotated secret signs what
comes next; the server SIGKILLed mid-delivery loses nothing (duplicates keep their id)."""

import json
import os
import re
import subprocess
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect
from standardwebhooks import Webhook

from conftest import BIN
from test_console import ADMIN, Api, Server, done, field_error, free_port, open_page, private_catalog, shot, sign_in

LIFE = ["io.nullops.deployment.created", "io.nullops.deployment.running", "io.nullops.deployment.deleted"]


class Receiver:
    """An HTTP endpoint that keeps what it is sent; `down` makes it answer 503, `slow` wait."""

    def __init__(self):
        self.got = []
        self.down = False
        self.slow = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                with receiver.lock:
                    receiver.got.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "down": receiver.down})
                time.sleep(receiver.slow)
                self.send_response(503 if receiver.down else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, subject=None):
        """What it answered 2xx to, in arrival order, as (headers, CloudEvent)."""
        with self.lock:
            out = [(g["headers"], json.loads(g["body"])) for g in self.got if not g["down"]]
        return [(h, e) for h, e in out if subject is None or e["subject"] == subject]


@pytest.fixture(scope="module")
def server():
    s = Server()
    admin = Api(s, *ADMIN)
    private_catalog(admin, web=False)
    admin.ok("""mutation { createProject(input: {name: "shop", environments: ["local"], cpuMillis: 200, memoryMib: 128}) { name } }""")
    admin.ok("""mutation { createProject(input: {name: "other", environments: ["local"], cpuMillis: 200, memoryMib: 128}) { name } }""")
    for project in ["shop", "other"]:
        admin.ok('mutation($p: String!) { savePipeline(project: $p, pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }', p=project)
    yield s
    s.clean_up()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def hook(server, receiver):
    admin = Api(server, *ADMIN)
    made = admin.ok("""mutation($u: String!) { createWebhook(input: {url: $u, events: [DEPLOYMENT_CREATED, DEPLOYMENT_RUNNING, DEPLOYMENT_DELETED],
        project: "shop"}) { secret webhook { id url events project } } }""", u=receiver.url)["createWebhook"]
    assert made["secret"].startswith("whsec_")
    return {"id": made["webhook"]["id"], "secret": made["secret"]}


def life(admin, name):
    """Creates deployment `name` of shop, waits for RUNNING, deletes it, waits for it to go."""
    made = admin.ok('mutation($n: String!) { createDeployment(project: "shop", environment: "local", name: $n) { id } }', n=name)["createDeployment"]["id"]
    state = lambda: admin.ok("query($id: ID!) { deployment(id: $id) { state } }", id=made)["deployment"]["state"]
    admin.wait_for(f"{name} RUNNING", lambda: state() == "RUNNING", timeout=240)
    admin.ok("mutation($id: ID!) { deleteDeployment(id: $id) { id } }", id=made)
    admin.wait_for(f"{name} gone", lambda: state() == "DELETED", timeout=240)
    return made


def first_of_each(events):
    """Event types in the order they first arrived (a repeat keeps its id)."""
    seen = []
    for _, e in events:
        if e["type"] not in seen:
            seen.append(e["type"])
    return seen


def test_bad_endpoints_and_events_are_refused_beside_their_field(server, receiver):
    admin = Api(server, *ADMIN)
    for url in ["ftp://ci.example.com/", "http://user:pw@ci.example.com/", "not a url"]:
        _, errors = admin.call('mutation($u: String!) { createWebhook(input: {url: $u, events: [NODE_ONLINE]}) { secret } }', u=url)
        assert errors[0]["extensions"]["code"] == "INVALID_INPUT" and errors[0]["extensions"]["field"] == "url", errors
    _, errors = admin.call('mutation($u: String!) { createWebhook(input: {url: $u, events: []}) { secret } }', u=receiver.url)
    assert errors[0]["extensions"]["field"] == "events", errors
    _, errors = admin.call('mutation($u: String!) { createWebhook(input: {url: $u, events: [NODE_ONLINE], project: "nope"}) { secret } }', u=receiver.url)
    assert errors[0]["extensions"]["code"] == "NOT_FOUND", errors
    member = admin.ok('mutation { createUser(username: "dev", password: "dev-password-1") { username } }')
    assert member
    dev = Api(server, "dev", "dev-password-1")
    _, errors = dev.call("{ webhooks { id } }")
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"


def test_a_receiver_gets_every_event_of_a_deployments_life_in_order_signed(server, receiver, hook):
    admin = Api(server, *ADMIN)
    made = life(admin, "hooked-1")
    subject = f"deployment/{made}"
    admin.wait_for("three deliveries", lambda: len(first_of_each(receiver.accepted(subject))) == 3, timeout=120)
    got = receiver.accepted(subject)
    assert first_of_each(got) == LIFE
    verifier = Webhook(hook["secret"])
    for g in [g for g in receiver.got if not g["down"] and json.loads(g["body"])["subject"] == subject]:
        verifier.verify(g["body"], g["headers"])
    for headers, event in got:
        assert headers["webhook-id"] == event["id"]
        assert headers["content-type"] == "application/cloudevents+json"
        assert (event["specversion"], event["source"], event["datacontenttype"]) == ("1.0", "nullops", "application/json")
        d = event["data"]["details"]["deployment"]
        assert (d["id"], d["name"], d["project"], d["environment"]) == (made, "hooked-1", "shop", "local")
        # Who caused it: the admin asked for it; the platform reported it running and gone.
        assert event["data"]["actor"] == ("user:admin" if event["type"] == LIFE[0] else "system"), event
    running = next(e for _, e in got if e["type"] == "io.nullops.deployment.running")
    assert running["data"]["details"]["deployment"]["urls"]["api"].startswith("http://api.hooked-1.local.localhost")
    # Each attempt is visible to admins.
    deliveries = admin.ok("query($id: ID!) { webhook(id: $id) { deliveries { eventId event state attempts { status error } } } }", id=hook["id"])["webhook"]["deliveries"]
    mine = [d for d in deliveries if d["eventId"] in {e["id"] for _, e in got}]
    assert len(mine) == 3 and all(d["state"] == "DELIVERED" and d["attempts"][-1]["status"] == 204 for d in mine), mine
    # And to the CLI.
    token = admin.ok('mutation { createApiToken(name: "hooks") { token } }')["createApiToken"]["token"]
    env = {**os.environ, "NULLOPS_URL": server.base, "NULLOPS_TOKEN": token}
    listed = subprocess.run([BIN, "webhooks", "ls", "-o", "json"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and [w["url"] for w in json.loads(listed.stdout)] == [receiver.url], listed
    table = subprocess.run([BIN, "webhooks", "deliveries", hook["id"]], env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "io.nullops.deployment.running" in table.stdout and "DELIVERED" in table.stdout, table.stdout
    # Another project's deployment is not told (the webhook is shop's).
    assert not [e for _, e in receiver.accepted() if e["data"]["details"].get("deployment", {}).get("project") == "other"]


def test_a_receiver_down_gets_the_backlog_after(server, receiver, hook):
    admin = Api(server, *ADMIN)
    receiver.down = True
    try:
        made = life(admin, "hooked-2")
        # Refused five times while down, pausing longer after each refusal: with the tests'
        # pacing 0.1 + 0.2 + 0.4 + 0.8 + 1 s.
        def refused_often():
            deliveries = admin.ok("query($id: ID!) { webhook(id: $id) { deliveries { subject attempts { status at } } } }", id=hook["id"])["webhook"]["deliveries"]
            return next((d["attempts"] for d in deliveries
                         if d["subject"] == f"deployment/{made}" and len(d["attempts"]) >= 5 and d["attempts"][0]["status"] == 503), None)
        attempts = admin.wait_for("the first delivery refused five times", refused_often, timeout=180)
        at = sorted(datetime.fromisoformat(a["at"]) for a in attempts)[:5]
        gaps = [(b - a).total_seconds() for a, b in zip(at, at[1:])]
        # Each pause at least the pacing's, and the later ones longer than the first.
        assert all(g >= 0.09 for g in gaps) and gaps[-1] > gaps[0], gaps
    finally:
        receiver.down = False
    admin.wait_for("the backlog", lambda: len(first_of_each(receiver.accepted(f"deployment/{made}"))) == 3, timeout=180)
    assert first_of_each(receiver.accepted(f"deployment/{made}")) == LIFE


def test_a_rotated_secret_signs_what_comes_next(server, receiver, hook):
    admin = Api(server, *ADMIN)
    rotated = admin.ok("mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }", id=hook["id"])["rotateWebhookSecret"]["secret"]
    assert rotated != hook["secret"]
    made = life(admin, "hooked-3")
    subject = f"deployment/{made}"
    admin.wait_for("three deliveries", lambda: len(first_of_each(receiver.accepted(subject))) == 3, timeout=120)
    for g in [g for g in receiver.got if not g["down"] and json.loads(g["body"])["subject"] == subject]:
        Webhook(rotated).verify(g["body"], g["headers"])
        with pytest.raises(Exception):
            Webhook(hook["secret"]).verify(g["body"], g["headers"])
    hook["secret"] = rotated


def test_a_server_killed_mid_delivery_loses_nothing(server, receiver, hook):
    admin = Api(server, *ADMIN)
    receiver.slow = 5.0
    try:
        made = admin.ok('mutation { createDeployment(project: "shop", environment: "local", name: "hooked-4") { id } }')["createDeployment"]["id"]
        subject = f"deployment/{made}"
        state = lambda api: api.ok("query($id: ID!) { deployment(id: $id) { state } }", id=made)["deployment"]["state"]
        admin.wait_for("hooked-4 RUNNING", lambda: state(admin) == "RUNNING", timeout=240)
        # Its running event is on its way (the receiver holds it): kill the server now.
        def running_in_flight():
            with receiver.lock:
                return any(json.loads(g["body"])["subject"] == subject and json.loads(g["body"])["type"] == LIFE[1] for g in receiver.got)
        admin.wait_for("the running event in flight", running_in_flight, timeout=120)
        server.proc.kill()
        server.proc.wait(timeout=30)
        server.start()
    finally:
        receiver.slow = 0.0
    admin = Api(server, *ADMIN)
    admin.wait_for("created and running delivered", lambda: first_of_each(receiver.accepted(subject))[:2] == LIFE[:2], timeout=180)
    deliveries = admin.ok("query($id: ID!) { webhook(id: $id) { deliveries { subject event state } } }", id=hook["id"])["webhook"]["deliveries"]
    admin.wait_for("both recorded delivered", lambda: all(
        d["state"] == "DELIVERED" for d in admin.ok("query($id: ID!) { webhook(id: $id) { deliveries { subject state } } }", id=hook["id"])["webhook"]["deliveries"]
        if d["subject"] == subject), timeout=120)
    assert {d["event"] for d in deliveries if d["subject"] == subject} >= set(LIFE[:2])
    # A repeat is the same event: same id, same body.
    by_id = {}
    with receiver.lock:
        for g in [g for g in receiver.got if json.loads(g["body"])["subject"] == subject]:
            by_id.setdefault(g["headers"]["webhook-id"], set()).add(g["body"])
    assert all(len(bodies) == 1 for bodies in by_id.values()), by_id


def test_an_admin_adds_a_webhook_in_the_console_and_sees_its_deliveries(server, receiver, browser):
    page = open_page(browser, server, width=1280, height=900)
    sign_in(page, *ADMIN)
    page.goto("/#/catalog/webhooks")
    page.get_by_role("button", name="Add webhook").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("URL").fill(receiver.url + "/console")
    dialog.get_by_label("deployment created").check()
    dialog.get_by_label("Only project").select_option("other")
    dialog.get_by_role("button", name="Add webhook").click()
    secret = page.locator("#webhook-secret")
    expect(secret).to_have_text(re.compile(r"^whsec_"))
    signing = secret.text_content()
    shot(page, "webhooks-01-secret-once")
    page.get_by_role("dialog").get_by_role("button", name="Done").click()
    row = page.locator("tr", has_text=receiver.url + "/console")
    expect(row).to_contain_text("deployment created")
    expect(row).to_contain_text("project other")

    admin = Api(server, *ADMIN)
    admin.ok('mutation { createDeployment(project: "other", environment: "local", name: "told-in-console") { id } }')
    admin.wait_for("the console's webhook told", lambda: any(
        g["headers"].get("webhook-id") and json.loads(g["body"])["data"]["details"]["deployment"]["name"] == "told-in-console" for g in receiver.got), timeout=120)
    got = next(g for g in receiver.got if json.loads(g["body"])["data"]["details"]["deployment"]["name"] == "told-in-console")
    Webhook(signing).verify(got["body"], got["headers"])
    page.get_by_role("button", name=f"Deliveries to {receiver.url}/console").click()
    deliveries = page.get_by_role("dialog")
    refresh = deliveries.get_by_role("button", name="Refresh")
    expect(deliveries).to_contain_text("deployment.created")
    # What it is about, in words, not a stream id.
    expect(deliveries).to_contain_text("deployment told-in-console (other in local)")

    def answered():
        refresh.click()
        return "answered 204" in deliveries.inner_text()
    admin.wait_for("the attempt shown", answered, timeout=60)
    shot(page, "webhooks-02-deliveries")
    done(page)


class Hanging:
    """An endpoint that accepts connections and never answers: the worst a receiver can do."""

    def __init__(self):
        import socket
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.held = []
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hooks"
        threading.Thread(target=self.hold, daemon=True).start()

    def hold(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_a_hanging_endpoint_with_a_backlog_does_not_hold_up_another(server, receiver):
    admin = Api(server, *ADMIN)
    hanging = Hanging()
    stuck = admin.ok('mutation($u: String!) { createWebhook(input: {url: $u, events: [PIPELINE_SAVED]}) { webhook { id } } }', u=hanging.url)["createWebhook"]["webhook"]["id"]
    try:
        # A backlog of twelve subjects for the hanging endpoint: each attempt hangs until its timeout.
        for i in range(12):
            admin.ok('mutation($p: String!) { createProject(input: {name: $p, environments: ["local"], cpuMillis: 200, memoryMib: 128}) { name } }', p=f"backlog-{i}")
            admin.ok('mutation($p: String!) { savePipeline(project: $p, pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }', p=f"backlog-{i}")
        admin.wait_for("the hanging endpoint held by several attempts", lambda: len(hanging.held) >= 2, timeout=60)
        healthy = admin.ok('mutation($u: String!) { createWebhook(input: {url: $u, events: [PIPELINE_SAVED], project: "shop"}) { webhook { id } } }',
                           u=receiver.url)["createWebhook"]["webhook"]["id"]
        saved = time.monotonic()
        admin.ok('mutation { savePipeline(project: "shop", pipeline: {nodes: [{id: "api-2", service: "api"}]}, message: "told at once") { version } }')
        told = lambda: [e for _, e in receiver.accepted() if "pipeline" in e["type"]]
        admin.wait_for("the healthy endpoint told", told, timeout=60)
        took = time.monotonic() - saved
        print(f"[webhooks figure] a healthy endpoint beside a hanging one with a backlog was told in {took:.2f} s")
        # Every attempt at the hanging endpoint hangs for its 10 s timeout: sharing send slots with
        # it, the healthy endpoint would wait for one to end.
        assert took < 8, f"told after {took:.1f} s"
        # The hanging endpoint holds only its own share of sends.
        assert len(hanging.held) <= 4, len(hanging.held)
        admin.ok("mutation($id: ID!) { deleteWebhook(id: $id) }", id=healthy)
    finally:
        admin.ok("mutation($id: ID!) { deleteWebhook(id: $id) }", id=stuck)
        hanging.close()


def test_a_failed_delivery_says_why_in_our_words(server):
    admin = Api(server, *ADMIN)
    port = free_port()  # nothing listens there
    made = admin.ok('mutation($u: String!) { createWebhook(input: {url: $u, events: [PIPELINE_SAVED], project: "other"}) { webhook { id } } }',
                    u=f"http://127.0.0.1:{port}/hooks")["createWebhook"]["webhook"]["id"]
    try:
        admin.ok('mutation { savePipeline(project: "other", pipeline: {nodes: [{id: "api-3", service: "api"}]}) { version } }')
        errors = lambda: [a["error"] for d in admin.ok("query($id: ID!) { webhook(id: $id) { deliveries { attempts { error } } } }", id=made)["webhook"]["deliveries"]
                          for a in d["attempts"]]
        said = admin.wait_for("a failed attempt", errors, timeout=60)
        assert said[0] == "connection refused: nothing listens at its address", said
    finally:
        admin.ok("mutation($id: ID!) { deleteWebhook(id: $id) }", id=made)


def test_calls_go_only_where_an_admin_allows_and_the_console_says_why(browser):
    """Issue 22, defect 20. A webhook saved for `localhost` while the admin allowed that name is
    not called once the allowance is withdrawn: a name is judged each time it is resolved for a
    connection, not once when it was saved. The attempt says why in our words. The console
    refuses the platform's own address, and the cloud's metadata service, beside the URL field."""
    receiver = Receiver()
    s = Server(env={"NULLOPS_ALLOWED_PRIVATE_TARGETS": "localhost"})
    try:
        admin = Api(s, *ADMIN)
        admin.ok("""mutation { createProject(input: {name: "egress", environments: ["local"], cpuMillis: 200, memoryMib: 128}) { name } }""")
        admin.ok("""mutation { createService(input: {name: "web", registry: "docker-hub", image: "library/nginx", tagMode: PINNED, tag: "1", port: 80}) { name } }""")
        url = f"http://localhost:{receiver.server.server_address[1]}/hooks"
        made = admin.ok('mutation($u: String!) { createWebhook(input: {url: $u, events: [PIPELINE_SAVED]}) { webhook { id } } }', u=url)["createWebhook"]["webhook"]["id"]
        save = lambda n: admin.ok('mutation($n: String!) { savePipeline(project: "egress", pipeline: {nodes: [{id: $n, service: "web"}]}) { version } }', n=n)
        attempts = lambda: [a for d in admin.ok("query($id: ID!) { webhook(id: $id) { deliveries { attempts { status error } } } }", id=made)["webhook"]["deliveries"]
                            for a in d["attempts"]]
        save("first")
        admin.wait_for("the first save told", lambda: len(receiver.accepted()) == 1, timeout=60)
        # The admin withdraws the allowance.
        s.stop()
        s.env["NULLOPS_ALLOWED_PRIVATE_TARGETS"] = ""
        s.start()
        admin = Api(s, *ADMIN)
        save("second")
        refused = admin.wait_for("an attempt refused", lambda: [a for a in attempts() if a["status"] is None], timeout=60)
        assert refused[0]["error"].startswith("not called: localhost (") and " is a loopback address: " in refused[0]["error"], refused
        assert refused[0]["error"].endswith("NullOps calls such addresses only where its server allows them by name or range (NULLOPS_ALLOWED_PRIVATE_TARGETS)"), refused
        assert len(receiver.accepted()) == 1, "nothing reached the receiver"

        page = open_page(browser, s, width=1280, height=900)
        sign_in(page, *ADMIN)
        page.goto("/#/catalog/webhooks")
        page.get_by_role("button", name="Add webhook").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("URL").fill(f"http://127.0.0.1:{s.port}/graphql")
        dialog.get_by_label("pipeline saved").check()
        dialog.get_by_role("button", name="Add webhook").click()
        error = field_error(page, "URL", dialog)
        expect(error).to_contain_text(f"127.0.0.1 port {s.port} is NullOps itself (its API, ingress, agent or metrics): it never calls itself")
        shot(page, "webhooks-03-own-address-refused")
        dialog.get_by_label("URL").fill("http://169.254.169.254/latest/meta-data/")
        dialog.get_by_role("button", name="Add webhook").click()
        expect(error).to_contain_text("169.254.169.254 is a link-local address")
        expect(error).to_contain_text("NULLOPS_ALLOWED_PRIVATE_TARGETS")
        shot(page, "webhooks-04-metadata-refused")
        done(page)
        assert [w["url"] for w in admin.ok("{ webhooks { url } }")["webhooks"]] == [url], "nothing more stored"
    finally:
        receiver.server.shutdown()
        s.clean_up()
