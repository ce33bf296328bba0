"""What a user meets in their first week, walked in Chromium with real input: each test here
failed before its fix (issue 22)."""

import os
import re
import signal
import subprocess
import tempfile
import uuid

import pytest
from playwright.sync_api import expect

from conftest import BIN
import editor
from test_console import ADMIN, Api, Server, free_port, go, open_page, done, shot, sign_in, private_catalog

# Generous bounds: the machine may be busy; each wait ends as soon as the page shows the state.
LONG = 60_000


@pytest.fixture(scope="module")
def server():
    s = Server()
    private_catalog(Api(s, *ADMIN))
    yield s
    s.clean_up()


def project_running_api(admin, name):
    """A project on the local environment whose pipeline starts service api."""
    admin.ok('mutation($n: String!) { createProject(input: {name: $n, environments: ["local"], cpuMillis: 100, memoryMib: 32}) { name } }', n=name)
    admin.ok('mutation($n: String!) { savePipeline(project: $n, pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }', n=name)


def add_dialog(browser, server, path, button):
    """An admin's page at `path` with the dialog its `button` opens."""
    page = open_page(browser, server)
    sign_in(page, *ADMIN)
    page.goto(path)
    page.get_by_role("button", name=button).click()
    return page, page.get_by_role("dialog")


class StandaloneAgent:
    """A `nullops agent` process as a node of its own environment, on this machine's engine."""

    def __init__(self, admin, environment):
        self.port = free_port()
        self.scope = f"t{uuid.uuid4().hex[:8]}"
        made = admin.ok('mutation($e: String!, $p: Int!) { addNode(environment: $e, host: "127.0.0.1", port: $p) { token node { id } } }',
                        e=environment, p=self.port)["addNode"]
        self.node = made["node"]["id"]
        env = {**os.environ, "NULLOPS_AGENT_TOKEN": made["token"], "NULLOPS_AGENT_LISTEN": f"127.0.0.1:{self.port}", "NULLOPS_AGENT_SCOPE": self.scope,
               "NULLOPS_AGENT_DATA_DIR": tempfile.mkdtemp(prefix="nullops-agent-"), "NULLOPS_LOG": "warn"}
        self.proc = subprocess.Popen([BIN, "agent"], env=env, stdout=subprocess.DEVNULL)

    def pause(self):
        """The node goes silent, as a host that hangs or drops off the network does."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.resume()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_a_deployments_own_page_follows_the_loss_of_its_node(server, browser):
    admin = Api(server, *ADMIN)
    admin.ok('mutation { createEnvironment(input: {name: "edge", baseDomain: "localhost"}) { name } }')
    agent = StandaloneAgent(admin, "edge")
    try:
        node_status = lambda: admin.ok('{ nodes(environment: "edge") { status } }')["nodes"][0]["status"]
        admin.wait_for("the edge node online", lambda: node_status() == "ONLINE")
        admin.ok('mutation { createProject(input: {name: "edgeshop", environments: ["edge"], cpuMillis: 100, memoryMib: 32}) { name } }')
        admin.ok('mutation { savePipeline(project: "edgeshop", pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }')
        made = admin.ok('mutation { createDeployment(project: "edgeshop", environment: "edge", name: "lost") { id } }')["createDeployment"]["id"]
        state = lambda: admin.ok('query($id: ID!) { deployment(id: $id) { state } }', id=made)["deployment"]["state"]
        admin.wait_for("lost running", lambda: state() == "RUNNING", timeout=180)

        page = open_page(browser, server)
        sign_in(page, *ADMIN)
        page.goto(f"/#/deployments/{made}")
        expect(page.locator("#state")).to_have_attribute("data-state", "RUNNING", timeout=LONG)
        node_fact = page.locator("dt:has-text('Node') + dd")
        expect(node_fact).to_contain_text("online", ignore_case=True)

        # The node is lost with the page open: the page says so live, as the list does.
        agent.pause()
        expect(page.locator("#state")).to_have_attribute("data-state", "OFFLINE", timeout=LONG)
        expect(node_fact).to_contain_text("offline", ignore_case=True)
        # What is wanted and what was last seen stay apart: still wanted running, last seen running.
        expect(page.locator("#desired")).to_have_text("run")
        expect(page.locator("#observed")).to_have_text("running")
        # Its service's health is not claimed while nobody can look.
        expect(page.get_by_role("table", name="Services")).to_contain_text("node offline; last seen healthy")
        shot(page, "first-week-node-lost")
        # And back.
        agent.resume()
        expect(page.locator("#state")).to_have_attribute("data-state", "RUNNING", timeout=LONG)
        expect(node_fact).to_contain_text("online", ignore_case=True)
        done(page)
    finally:
        # Deleted while its agent still runs, so that nothing is left on the engine.
        agent.resume()
        for d in admin.ok('{ deployments(environment: "edge") { id actions } }')["deployments"]:
            if "DELETE" in d["actions"] or "CANCEL" in d["actions"]:
                admin.ok('mutation($id: ID!) { deleteDeployment(id: $id) { id } }', id=d["id"])
        admin.wait_for("the edge deployments gone", lambda: not admin.ok('{ deployments(environment: "edge") { id } }')["deployments"], timeout=180)
        agent.stop()


def test_the_editor_asks_before_an_unsaved_drawing_is_left_inside_the_app(server, browser):
    admin = Api(server, *ADMIN)
    admin.ok('mutation { createProject(input: {name: "drawing", environments: ["local"], cpuMillis: 200, memoryMib: 64}) { name } }')
    page = open_page(browser, server, width=1440, height=1000)
    sign_in(page, *ADMIN)
    page.goto("/#/projects/drawing/pipeline")
    expect(page.locator(".version-line")).to_contain_text("No version saved yet")
    assert editor.drag_from_palette(page, "api", 40, 60) == "api"
    expect(page.get_by_role("status").filter(has_text="Unsaved changes.")).to_be_visible()
    ask = page.get_by_role("alertdialog", name="Leave without saving?")

    # The navigation bar: asked; "Keep editing" keeps the drawing where it was.
    go(page, "Deployments")
    expect(ask).to_be_visible()
    shot(page, "first-week-leave-unsaved")
    ask.get_by_role("button", name="Keep editing").click()
    expect(ask).to_be_hidden()
    assert page.evaluate("location.hash") == "#/projects/drawing/pipeline"
    assert editor.node_ids(page) == ["api"]

    # The back button: asked too, and kept.
    page.go_back()
    expect(ask).to_be_visible()
    ask.get_by_role("button", name="Keep editing").click()
    assert editor.node_ids(page) == ["api"]
    expect(page.get_by_role("heading", name=re.compile("drawing"))).to_be_visible()

    # A link in the page, and leaving for real.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Projects").click()
    expect(ask).to_be_visible()
    ask.get_by_role("button", name="Leave without saving").click()
    expect(page.locator("#view h1")).to_have_text("Projects")
    assert page.evaluate("location.hash") == "#/projects"
    done(page)


def test_a_failing_health_check_is_visible_while_the_service_starts_and_no_path_is_assumed(server, browser):
    # The form assumes no path: HTTP asks for one the image serves.
    page, form = add_dialog(browser, server, "/#/catalog/services", "Add service")
    form.get_by_label("Health check").select_option("http")
    expect(form.get_by_label("Path", exact=True)).to_have_value("")
    form.get_by_role("button", name="Close").click()

    admin = Api(server, *ADMIN)
    admin.ok('mutation { createService(input: {name: "broken", registry: "private", image: "nullops/demo", tagMode: PINNED, tag: "v1", port: 8080, '
             'healthCheck: {httpPath: "/nope", intervalSeconds: 1, timeoutSeconds: 1, retries: 3}}) { name } }')
    admin.ok('mutation { createProject(input: {name: "probing", environments: ["local"], cpuMillis: 100, memoryMib: 32}) { name } }')
    admin.ok('mutation { savePipeline(project: "probing", pipeline: {nodes: [{id: "broken", service: "broken"}]}) { version } }')
    made = admin.ok('mutation { createDeployment(project: "probing", environment: "local", name: "probing") { id } }')["createDeployment"]["id"]
    page.goto(f"/#/deployments/{made}")
    # The step says what the probe gets while the service starts, live.
    step = page.locator(".step-node[data-step='broken']")
    expect(step).to_have_attribute("data-state", "RUNNING", timeout=LONG)
    expect(step).to_contain_text("not healthy yet: GET /nope answered 404", timeout=LONG)
    # The step's time runs from its start, not from its latest answer.
    steps = admin.ok('query($id: ID!) { deployment(id: $id) { steps { id startedAt changedAt detail } } }', id=made)["deployment"]["steps"]
    (broken,) = [s for s in steps if s["id"] == "broken"]
    assert broken["detail"].startswith("not healthy yet") and broken["startedAt"] < broken["changedAt"], broken
    shot(page, "first-week-probe-answer")
    admin.ok('mutation($id: ID!) { deleteDeployment(id: $id) { id } }', id=made)
    expect(page.locator("#state")).to_have_attribute("data-state", "CANCELLED", timeout=LONG)
    done(page)


def test_a_preview_link_that_could_never_deploy_is_refused_beside_its_rule(server, browser):
    admin = Api(server, *ADMIN)
    admin.ok('mutation { createProject(input: {name: "previewed", environments: ["local"], cpuMillis: 100, memoryMib: 32}) { name } }')
    page = open_page(browser, server)
    sign_in(page, *ADMIN)
    page.goto("/#/projects/previewed")
    previews = page.get_by_role("region", name="Pull-request previews")
    previews.get_by_role("button", name="Link a repository").click()
    form = page.get_by_role("dialog")
    form.get_by_label("Repository").fill("acme/shop")
    form.get_by_label("API URL").fill("http://127.0.0.1:9/github")
    # Service web admits only v* tags: a pr-<number> tag could never deploy it.
    form.get_by_label("Service").select_option("web")
    form.get_by_label("Tag rule").select_option("PR_NUMBER")
    form.get_by_label("Hook secret").fill("a-long-hook-secret")
    form.get_by_label("API token").fill("a-token")
    form.get_by_role("button", name="Link repository").click()
    error = form.locator(f"#{form.get_by_label('Tag rule').get_attribute('id')}-error")
    expect(error).to_contain_text("tag pattern v* does not admit pr-1")
    shot(page, "first-week-preview-rule-refused")
    assert admin.ok('{ repositoryLink(project: "previewed") { project } }')["repositoryLink"] is None
    done(page)


def test_actions_follow_access_live(server, browser):
    admin = Api(server, *ADMIN)
    admin.ok('mutation { createUser(username: "fay", password: "fay-password-1") { username } }')
    admin.ok('mutation { createTeam(name: "fayteam") { name } }')
    admin.ok('mutation { addTeamMember(team: "fayteam", username: "fay") { name } }')
    project_running_api(admin, "granted")
    admin.ok('mutation { grantAccess(team: "fayteam", target: {kind: PROJECT, name: "granted"}, access: FULL) { name } }')
    made = admin.ok('mutation { createDeployment(project: "granted", environment: "local", name: "granted") { id } }')["createDeployment"]["id"]
    page = open_page(browser, server)
    sign_in(page, "fay", "fay-password-1")
    page.goto(f"/#/deployments/{made}")
    expect(page.locator("[data-action='DELETE'], [data-action='CANCEL']").first).to_be_visible(timeout=LONG)
    facts = page.locator("dt:has-text('Your access') + dd")
    expect(facts).to_contain_text("full", ignore_case=True)

    # The grant is revoked with the page open: its actions go, and it says so.
    admin.ok('mutation { revokeAccess(team: "fayteam", target: {kind: PROJECT, name: "granted"}) { name } }')
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(facts).to_contain_text("no longer")
    expect(page.get_by_role("alert")).to_contain_text("Live updates stopped")
    shot(page, "first-week-access-revoked")
    done(page)
    admin.ok('mutation($id: ID!) { deleteDeployment(id: $id) { id } }', id=made)


def test_a_node_that_runs_deployments_says_why_it_cannot_be_removed_and_offers_no_button_that_must_fail(server, browser):
    admin = Api(server, *ADMIN)
    project_running_api(admin, "holder")
    made = [admin.ok('mutation($n: String!) { createDeployment(project: "holder", environment: "local", name: $n) { id } }', n=n)["createDeployment"]["id"]
            for n in ["holding-a", "holding-b"]]
    state = lambda i: admin.ok('query($id: ID!) { deployment(id: $id) { state } }', id=i)["deployment"]["state"]
    admin.wait_for("both placed", lambda: all(state(i) in ("DEPLOYING", "RUNNING") for i in made), timeout=120)
    page = open_page(browser, server)
    sign_in(page, *ADMIN)
    page.goto("/#/environments/local")
    page.get_by_role("button", name="Remove").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("cannot be removed yet")
    expect(dialog.get_by_role("link", name="holding-a")).to_be_visible()
    expect(dialog.get_by_role("link", name="holding-b")).to_be_visible()
    expect(dialog.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
    shot(page, "first-week-node-cannot-be-removed")
    dialog.get_by_role("link", name="holding-a").click()
    expect(page.get_by_role("heading", name="holding-a")).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    done(page)
    for i in made:
        admin.ok('mutation($id: ID!) { deleteDeployment(id: $id) { id } }', id=i)


def test_every_page_a_user_may_not_use_says_so_the_same_way(server, browser):
    admin = Api(server, *ADMIN)
    admin.ok('mutation { createUser(username: "rea", password: "rea-password-1") { username } }')
    admin.ok('mutation { createTeam(name: "readers") { name } }')
    admin.ok('mutation { addTeamMember(team: "readers", username: "rea") { name } }')
    project_running_api(admin, "looked")
    project_running_api(admin, "deployed")
    admin.ok('mutation { grantAccess(team: "readers", target: {kind: PROJECT, name: "looked"}, access: READ_ONLY) { name } }')
    admin.ok('mutation { grantAccess(team: "readers", target: {kind: PROJECT, name: "deployed"}, access: FULL) { name } }')
    page = open_page(browser, server)
    sign_in(page, "rea", "rea-password-1")
    refusal = page.locator(".refusal[data-code='FORBIDDEN']")
    for path, why in [("/#/audit", "audit history is for admins"), ("/#/health", "health"), ("/#/catalog/webhooks", "webhooks are for admins"),
                      ("/#/deployments/new?project=looked", "not deploy it")]:
        page.goto(path)
        expect(refusal).to_be_visible()
        expect(refusal.get_by_role("heading", level=1)).to_have_text("You may not use this page")
        expect(refusal).to_contain_text(why)
        # Never another page's form or an empty admin page behind it.
        expect(page.locator("#deploy-form")).to_have_count(0)
        shot(page, f"first-week-refusal-{path.split('/')[-1].split('?')[0]}")
        page.goto("/#/")
    # A project the user may deploy still opens its form.
    page.goto("/#/deployments/new?project=deployed")
    expect(page.locator("#deploy-form select[name='project']")).to_have_value("deployed")
    done(page)


def test_small_things_a_first_week_meets(server, browser):
    admin = Api(server, *ADMIN)
    page = open_page(browser, server)
    sign_in(page, *ADMIN)
    # A run's first log line says which run it is and how many steps it has.
    project_running_api(admin, "wording")
    made = admin.ok('mutation { createDeployment(project: "wording", environment: "local", name: "wording") { id } }')["createDeployment"]["id"]
    page.goto(f"/#/deployments/{made}")
    expect(page.locator(".log")).to_contain_text("run 1 started: 1 step", timeout=LONG)
    # The tag-pattern preview never shows an answer about what was typed before.
    page.goto("/#/catalog/services")
    page.get_by_role("button", name="Add service").click()
    form = page.get_by_role("dialog")
    form.get_by_label("Image", exact=True).fill("nullops/demo")
    form.get_by_label("Selectable by whoever deploys").check()
    form.get_by_label("Tag pattern").fill("v*")
    preview = form.locator("#tag-preview")
    expect(preview).to_contain_text("v1")
    form.get_by_label("Tag pattern").press_sequentially("9z", delay=20)
    expect(preview).not_to_contain_text("v1")
    expect(preview).to_contain_text("No tag of nullops/demo matches v*9z")
    form.get_by_role("button", name="Close").click()
    # A notice is dismissed with a click.
    page.evaluate("import('/lib/dom.js').then((m) => m.notify('A notice in the way'))")
    notice = page.locator(".notice", has_text="A notice in the way")
    expect(notice).to_be_visible()
    notice.click()
    expect(notice).to_have_count(0)
    done(page)
    admin.ok('mutation($id: ID!) { deleteDeployment(id: $id) { id } }', id=made)


def test_registry_credentials_the_registry_refuses_are_refused_when_saved(server, browser):
    page, form = add_dialog(browser, server, "/#/catalog/registries", "Add registry")
    form.get_by_label("Name", exact=True).fill("mistyped")
    form.get_by_label("URL").fill("http://127.0.0.1:5050")
    form.get_by_label("Username").fill("nullops")
    form.get_by_label("Password or token").fill("not-the-password")
    form.get_by_role("button", name="Add registry").click()
    error = form.locator(f"#{form.get_by_label('Password or token').get_attribute('id')}-error")
    expect(error).to_contain_text("refused these credentials")
    shot(page, "first-week-registry-refused")
    # Nothing typed is lost: corrected, it is saved.
    expect(form.get_by_label("URL")).to_have_value("http://127.0.0.1:5050")
    form.get_by_label("Password or token").fill("nullops")
    form.get_by_role("button", name="Add registry").click()
    expect(form).to_be_hidden()
    expect(page.locator("tr", has_text="mistyped")).to_contain_text("stored")
    done(page)


def plugin_containers(scope):
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=nullops.scope={scope}", "--filter", "label=nullops.plugin-run",
                          "--format", "{{.ID}}"], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_a_stop_during_a_plugin_step_leaves_no_plugin_container_running():
    own = Server()
    try:
        admin = Api(own, *ADMIN)
        private_catalog(admin, web=False)
        admin.ok("""mutation($s: JSON!) { createPlugin(input: {name: "script", registry: "private", repository: "nullops-test/script-plugin", tag: "1",
            parametersSchema: $s, timeoutSeconds: 600}) { name } }""", s={"type": "object", "properties": {"mode": {"type": "string"}}})
        admin.ok('mutation { createProject(input: {name: "sleepy", environments: ["local"], cpuMillis: 400, memoryMib: 128}) { name } }')
        admin.ok('mutation { savePipeline(project: "sleepy", pipeline: {nodes: [{id: "nap", plugin: "script", parameters: {mode: "sleep"}}]}) { version } }')
        node = admin.ok('{ nodes(environment: "local") { id } }')["nodes"][0]["id"]
        scope = "local-" + node.replace("-", "")[:12]
        made = admin.ok('mutation { createDeployment(project: "sleepy", environment: "local", name: "sleepy") { id } }')["createDeployment"]["id"]
        step = lambda: admin.ok('query($id: ID!) { deployment(id: $id) { steps { id state } } }', id=made)["deployment"]["steps"]
        admin.wait_for("the plugin step running", lambda: any(s["id"] == "nap" and s["state"] == "RUNNING" for s in step()), timeout=120)
        admin.wait_for("its container", lambda: plugin_containers(scope), timeout=60)
        # SIGTERM: the platform stops, and takes the plugin's container with it.
        own.stop()
        assert plugin_containers(scope) == [], "a plugin container outlived the platform's stop"
        # Started again, the interrupted run is rolled back and says so.
        own.start()
        admin = Api(own, *ADMIN)
        admin.wait_for("the interrupted run failed", lambda: admin.ok('query($id: ID!) { deployment(id: $id) { state } }', id=made)["deployment"]["state"] == "FAILED",
                       timeout=120)
    finally:
        own.clean_up()


def test_the_node_install_line_works_and_the_dialog_says_what_it_finds(server, browser):
    import requests
    admin = Api(server, *ADMIN)
    admin.ok('mutation { createEnvironment(input: {name: "installed", baseDomain: "localhost"}) { name } }')
    port = free_port()
    page = open_page(browser, server, width=1440, height=1000)
    sign_in(page, *ADMIN)
    page.goto("/#/environments/installed")
    page.get_by_role("button", name="Add node").click()
    form = page.get_by_role("dialog")
    form.get_by_label("Host name or IP address").fill("127.0.0.1")
    form.get_by_label("Agent port").fill(str(port))
    form.get_by_role("button", name=re.compile("^Add")).click()
    shown = page.get_by_role("dialog")
    expect(shown.locator("#node-command")).to_contain_text(f"-p 127.0.0.1:{port}:5000")
    load, run = shown.locator("#node-load").inner_text(), shown.locator("#node-command").inner_text()
    assert load == f"curl -fsS {server.base}/agent-image.tar | docker load", load
    assert f"--listen 127.0.0.1:{port}" in shown.locator("#node-agent-command").text_content()
    expect(shown.locator("#node-reach")).to_contain_text("Not reached yet")

    # On the node: the image comes from the server (here fetched as curl would), then the command runs.
    image = requests.get(f"{server.base}/agent-image.tar", timeout=300)
    assert image.status_code == 200 and image.headers["content-type"] == "application/x-tar"
    loaded = subprocess.run(["docker", "load"], input=image.content, capture_output=True, timeout=300)
    assert loaded.returncode == 0 and b"nullops/agent:" in loaded.stdout, loaded
    name = f"nullops-agent-{uuid.uuid4().hex[:8]}"
    command = run.replace("--name nullops-agent", f"--name {name}").replace("nullops-agent:/data", f"{name}:/data").replace("\\\n", " ")
    try:
        started = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        # Bound to the address given, not every interface.
        ports = subprocess.run(["docker", "port", name], capture_output=True, text=True, check=True).stdout
        assert f"127.0.0.1:{port}" in ports and "0.0.0.0" not in ports, ports
        expect(shown.locator("#node-reach")).to_contain_text("Connected: the agent at", timeout=LONG)
        shot(page, "first-week-node-installed")
        done(page)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def test_a_service_in_use_says_every_use_and_offers_no_delete_until_none_is_left(server, browser):
    """Issue 22, defect 12: deleting a service that pipelines start was accepted (the pipelines
    then could not deploy); it is refused naming every use, and the console lists them."""
    admin = Api(server, *ADMIN)
    admin.ok("""mutation { createService(input: {name: "shared", registry: "docker-hub", image: "library/nginx", tagMode: PINNED, tag: "1", port: 80}) { name } }""")
    users = ["user-one", "user-two"]
    for name in users:
        admin.ok('mutation($n: String!) { createProject(input: {name: $n, environments: ["local"], cpuMillis: 100, memoryMib: 32}) { name } }', n=name)
        admin.ok('mutation($n: String!) { savePipeline(project: $n, pipeline: {nodes: [{id: "s", service: "shared"}]}) { version } }', n=name)
    _, errors = admin.call('mutation { deleteService(name: "shared") }')
    assert errors[0]["extensions"]["code"] == "CONFLICT", errors
    assert errors[0]["message"] == ("service shared is in use by the latest pipeline of project user-one, the latest pipeline of project user-two; "
                                    "change or remove those first"), errors
    page = open_page(browser, server)
    sign_in(page, *ADMIN)
    page.goto("/#/catalog/services")
    page.get_by_role("button", name="Delete service shared").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Service shared cannot be deleted yet")
    for name in users:
        expect(dialog.get_by_role("link", name=f"the latest pipeline of project {name}")).to_be_visible()
    expect(dialog.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)
    shot(page, "first-week-service-in-use")
    dialog.get_by_role("link", name="the latest pipeline of project user-one").click()
    expect(page).to_have_url(re.compile(r"#/projects/user-one/pipeline$"))
    expect(page.get_by_role("dialog")).to_have_count(0)
    # Once no pipeline starts it, it is deleted after asking.
    for name in users:
        admin.ok('mutation($n: String!) { savePipeline(project: $n, pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }', n=name)
    page.goto("/#/catalog/services")
    page.get_by_role("button", name="Delete service shared").click()
    page.get_by_role("alertdialog").get_by_role("button", name="Delete shared").click()
    expect(page.get_by_role("button", name="Delete service shared")).to_have_count(0)
    done(page)
    assert "shared" not in [s["name"] for s in admin.ok("{ services { name } }")["services"]]
