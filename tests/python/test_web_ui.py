"""The web UI in a real browser (headless Chromium over the DevTools protocol): sign in, see the
admin view, create a user and watch it arrive live in the audit history, create an API token, sign
out; as a team member, see a project, a service's versions from the real registry, and set a
secret that never shows again. Every wait is bounded."""

import base64
import json
import re
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
import requests
from websockets.sync.client import connect

from conftest import ADMIN_PASSWORD, BIN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def until(check, what, timeout):
    """Polls `check` until it is true, failing after `timeout` seconds: the one way these tests wait."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="nullops-chromium-")
        # Its own session, so the whole process tree can be killed and none keeps our pipes open.
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--window-size=1100,900", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        until(lambda: os.path.exists(port_file) and open(port_file).read().strip(), "Chromium's DevTools port", 30)
        port = open(port_file).read().split()[0]
        import urllib.request
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(p for p in pages if p["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.next_id = 0

    def call(self, method, session=None, **params):
        """A DevTools command, to this page or, with `session`, to an attached target."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}))
        while True:
            message = json.loads(self.ws.recv(timeout=15))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression, what, timeout=30):
        # Until the page has loaded, the elements are missing: that is "not yet", not a failure.
        until(lambda: self.js(f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"), what, timeout)

    def fill_and_submit(self, form_id, **values):
        self.js("{const f = document.getElementById(%s); %s f.requestSubmit();}" % (
            json.dumps(form_id), "".join(f"f.elements[{json.dumps(k)}].value = {json.dumps(v)};" for k, v in values.items())))

    def text_of_tab(self, url, expected, timeout=30):
        """Opens `url` in a new tab, as a user following a link would, and waits until its text holds `expected`."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        text = lambda: self.call("Runtime.evaluate", session=session, expression="document.body ? document.body.innerText : ''",
                                 returnByValue=True)["result"].get("value") or ""
        seen = [""]
        def shows_expected():
            seen[0] = text()
            return expected in seen[0]
        try:
            until(shows_expected, f"{expected!r} at {url}", timeout)
            return seen[0]
        except AssertionError as e:
            raise AssertionError(f"{e}; the tab shows: {seen[0]!r}") from None
        finally:
            self.call("Target.closeTarget", targetId=target)

    def screenshot(self, path):
        open(path, "wb").write(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        try:
            self.ws.close()
        finally:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    assert CHROMIUM, "chromium is needed (infra/setup.sh installs it)"
    b = Browser()
    yield b
    b.close()


def visible(element_id):
    return f"!document.getElementById({json.dumps(element_id)}).hidden"


def sign_in(browser, server, username, password):
    browser.call("Page.navigate", url=f"http://{server}/")
    browser.wait_for(visible("login-view"), "the sign-in form")
    browser.fill_and_submit("login-form", username=username, password=password)


def test_sign_in_create_user_watch_it_live_and_sign_out(server, browser):
    browser.call("Page.navigate", url=f"http://{server}/")
    browser.wait_for(visible("login-view"), "the sign-in form")

    browser.fill_and_submit("login-form", username="admin", password="wrong-password")
    browser.wait_for("document.getElementById('login-error').textContent.length > 0", "an error")
    assert browser.js("document.getElementById('login-error').textContent") == "invalid username or password"

    browser.fill_and_submit("login-form", username="admin", password=ADMIN_PASSWORD)
    browser.wait_for(visible("admin") + " && document.querySelectorAll('#audit-list tr').length > 0", "the admin view")
    assert browser.js("document.getElementById('whoami').textContent") == "admin (admin)"
    assert browser.js(visible("login-view")) is False

    # A user created in the form shows in the list, and its event arrives live at the top of the
    # audit history through the subscription (the page is not reloaded). The subscription opens
    # after the history loads, so create users until one arrives (bounded).
    for i in range(60):
        name = f"qa-{i}"
        browser.fill_and_submit("user-form", username=name, password="qa-password-1", role="USER")
        browser.wait_for("[...document.querySelectorAll('#user-list td')].some(t => t.textContent === %s)" % json.dumps(name), f"user {name} listed")
        try:
            browser.wait_for("document.querySelector('#audit-list tr td:last-child').textContent === %s" % json.dumps(f"user-{name}"), "live row", timeout=1)
            break
        except AssertionError:
            continue
    else:
        pytest.fail("no live audit row after 60 users")
    assert browser.js("document.querySelector('#audit-list tr td:nth-child(3)').textContent") == "user.registered"
    # The signed-in admin is not offered to disable themself; the new user is.
    assert browser.js("[...document.querySelectorAll('#user-list tr')].find(r => r.cells[0].textContent === 'admin').querySelector('button') === null") is True

    browser.fill_and_submit("token-form", name="ci")
    browser.wait_for(visible("new-token"), "the new token")
    assert "nop_" in browser.js("document.getElementById('new-token').textContent")
    browser.wait_for("document.getElementById('token-list').textContent.includes('ci')", "the token listed")

    if os.environ.get("NULLOPS_UI_SCREENSHOT"):
        browser.screenshot(os.environ["NULLOPS_UI_SCREENSHOT"])

    browser.js("document.getElementById('logout').click(); true")
    browser.wait_for(visible("login-view"), "the sign-in form after signing out")


def graphql(server, query, variables=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.post(f"http://{server}/graphql", json={"query": query, "variables": variables or {}}, headers=headers, timeout=20)
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


def test_a_team_member_sees_versions_and_sets_a_secret_that_never_shows(server, browser):
    fixtures = os.path.join(os.path.dirname(__file__), "..", "fixtures", "push-images.sh")
    subprocess.run([fixtures, "ui-test/web", "v1.0.0", "v1.1.0", "nightly"], check=True)
    admin = graphql(server, 'mutation { login(username: "admin", password: "%s") { token } }' % ADMIN_PASSWORD)["login"]["token"]
    for query in [
        'mutation { createUser(username: "dana", password: "dana-password-1") { username } }',
        'mutation { createRegistry(input: {name: "local", url: "http://127.0.0.1:5050", username: "nullops", password: "nullops"}) { name } }',
        'mutation { createService(input: {name: "web", registry: "local", image: "ui-test/web", tagMode: SELECTABLE, tagPattern: "v*", port: 80}) { name } }',
        'mutation { createEnvironment(input: {name: "staging", baseDomain: "qa.example.com"}) { name } }',
        'mutation { createProject(input: {name: "shop", environments: ["staging"], cpuMillis: 1000, memoryMib: 512}) { name } }',
        'mutation { createTeam(name: "builders") { name } }',
        'mutation { addTeamMember(team: "builders", username: "dana") { name } }',
        'mutation { grantAccess(team: "builders", target: {kind: PROJECT, name: "shop"}, access: FULL) { name } }',
    ]:
        graphql(server, query, token=admin)

    sign_in(browser, server, "dana", "dana-password-1")
    row = "document.querySelector('#project-list tr[data-project=\"shop\"]')"
    browser.wait_for(row, "project shop listed")
    assert browser.js(f"{row}.cells[2].textContent") == "FULL"
    assert browser.js(visible("admin")) is False, "no admin view for a team member"

    # Versions come live from the registry, filtered by the service's pattern, newest first. (The
    # services list loads on its own: wait for the row.)
    browser.wait_for("document.querySelector('#service-list tr[data-service=\"web\"] button')", "service web listed")
    browser.js("document.querySelector('#service-list tr[data-service=\"web\"] button').click(); true")
    browser.wait_for("document.querySelector('#service-list tr[data-service=\"web\"] .versions').textContent.startsWith('v')", "versions")
    assert browser.js("document.querySelector('#service-list tr[data-service=\"web\"] .versions').textContent") == "v1.1.0, v1.0.0"

    # A secret set in the form is listed by name; its value is nowhere on the page.
    browser.js("""{const f = %s.querySelector('.secret-form');
        f.elements.name.value = 'DB_PASSWORD'; f.elements.value.value = 'ui-secret-value-42'; f.requestSubmit();}""" % row)
    browser.wait_for(f"{row} && {row}.querySelector('.secret-names').textContent === 'DB_PASSWORD'", "the secret listed")
    assert "ui-secret-value-42" not in browser.js("document.documentElement.outerHTML")
    assert browser.js(f"{row}.querySelector('.secret-form').elements.value.value") == ""


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_admin_adds_a_node_and_watches_it_come_online(server, browser):
    token = graphql(server, 'mutation { login(username: "admin", password: "%s") { token } }' % ADMIN_PASSWORD)["login"]["token"]
    graphql(server, 'mutation { createEnvironment(input: {name: "staging", baseDomain: "qa.example.com"}) { name } }', token=token)
    sign_in(browser, server, "admin", ADMIN_PASSWORD)
    browser.wait_for(visible("admin"), "the admin view")

    # The token and the agent's run command are shown once, in the page.
    port = free_port()
    browser.fill_and_submit("node-form", environment="staging", host="127.0.0.1", port=str(port))
    browser.wait_for(visible("node-credentials"), "the new node's token")
    shown = browser.js("document.getElementById('node-credentials').textContent")
    node_token = browser.js("document.querySelector('#node-credentials code').textContent")
    assert node_token.startswith("nat_") and "docker run" in shown and f"-p {port}:5000" in shown
    row = "[...document.querySelectorAll('#node-list tr')].find(r => r.cells[1].textContent === %s)" % json.dumps(f"127.0.0.1:{port}")
    browser.wait_for(f"{row}.cells[2].textContent === 'PENDING' || {row}.cells[2].textContent === 'OFFLINE'", "the node listed, not yet online")

    # An agent started with that token: the row turns ONLINE by itself.
    data_dir = tempfile.mkdtemp(prefix="nullops-py-agent-")
    env = {**os.environ, "NULLOPS_AGENT_TOKEN": node_token, "NULLOPS_AGENT_SCOPE": "py" + uuid.uuid4().hex[:12], "NULLOPS_LOG": "warn"}
    agent = subprocess.Popen([BIN, "agent", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
                             env=env, stdout=subprocess.DEVNULL)
    try:
        browser.wait_for(f"{row}.cells[2].textContent === 'ONLINE'", "the node online, live", timeout=20)
        browser.js(f"[...{row}.querySelectorAll('button')].find(b => b.textContent === 'Disable').click(); true")
        browser.wait_for(f"{row}.cells[2].textContent === 'DISABLED'", "the node disabled")
    finally:
        agent.terminate()
        agent.wait(timeout=20)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def embedded_server():
    """`nullops up` with its local node: something to deploy on."""
    from conftest import start
    proc, addr = start("embedded")
    yield addr
    proc.terminate()
    proc.wait(timeout=30)


def test_a_user_deploys_watches_it_come_up_live_and_deletes_it(embedded_server, browser):
    server = embedded_server
    token = graphql(server, 'mutation { login(username: "admin", password: "%s") { token } }' % ADMIN_PASSWORD)["login"]["token"]
    until(lambda: graphql(server, '{ nodes(environment: "local") { status } }', token=token)["nodes"][0]["status"] == "ONLINE",
          "the local node online", 30)
    for q in [
        'mutation { createRegistry(input: {name: "local", url: "http://127.0.0.1:5050", username: "nullops", password: "nullops"}) { name } }',
        'mutation { createService(input: {name: "web", registry: "local", image: "nullops/demo", tagMode: SELECTABLE, tagPattern: "v*", port: 8080,'
        ' healthCheck: {httpPath: "/healthz", intervalSeconds: 1}}) { name } }',
        'mutation { createProject(input: {name: "shop", environments: ["local"], cpuMillis: 20, memoryMib: 64}) { name } }',
        'mutation { savePipeline(project: "shop", pipeline: {nodes: [{id: "web", service: "web"}]}) { version } }',
    ]:
        graphql(server, q, token=token)

    sign_in(browser, server, "admin", ADMIN_PASSWORD)
    # The version picker lists the registry's tags of the selectable service.
    browser.wait_for("[...document.querySelectorAll('#deploy-tags select option')].some(o => o.value === 'v2')", "web's versions")
    browser.js("document.querySelector('#deploy-tags select').value = 'v2'; true")
    browser.fill_and_submit("deploy-form", name="from-the-ui")
    # The deployment opens and comes up live: its steps, its log, RUNNING.
    browser.wait_for("document.getElementById('deployment-title').textContent === 'from-the-ui: RUNNING'", "the deployment running, live", timeout=60)
    assert "web (service web): succeeded" in browser.js("document.getElementById('deployment-steps').textContent")
    browser.wait_for("document.getElementById('deployment-log').textContent.includes('every step succeeded')", "the pipeline's log, live")
    row = "[...document.querySelectorAll('#deployment-list tr')].find(r => r.cells[0].textContent === 'from-the-ui')"
    browser.wait_for(f"{row}.cells[3].textContent.includes('web:v2')", "the deployment listed with its version")
    link = browser.js(f"{row}.querySelector('a').href")
    assert re.fullmatch(r"http://web\.from-the-ui\.local\.localhost:\d+/", link), link
    # The link works in the browser as it is: *.localhost is loopback, the ingress routes by name.
    browser.text_of_tab(link, "nullops demo v2")

    browser.js(f"[...{row}.querySelectorAll('button')].find(b => b.textContent === 'Delete').click(); true")
    browser.wait_for("document.getElementById('deployment-title').textContent === 'from-the-ui: DELETED'", "the deployment deleted, live", timeout=30)
    # (Another query string: the browser may keep the earlier page of the same URL in its cache.)
    page = browser.text_of_tab(link + "?after-delete", "404 Not Found")
    assert "No service is deployed at web.from-the-ui.local.localhost" in page
