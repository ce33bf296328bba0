"""The pipeline editor in Chromium with real mouse drags and keys, against `nullops up` with the
tests' private registry: a pipeline drawn only by dragging, a cycle refused as it is drawn, a
missing parameter marked on its node, versions with their diff drawn on the canvas, a version
opened read-only, undo and redo, the keyboard alone, and a dry run that finds a missing tag and
an unset secret and then answers where the deployment would go, appending only an audit entry.

The tests run in file order on one server, as one story. Screenshots go to NULLOPS_SHOTS."""

import re
import subprocess
import time
import uuid

import pytest
from playwright.sync_api import expect

import editor
from editor import node
from test_console import ADMIN, DEPLOY, REGISTRY, VERSION, Api, Server, done, open_page, private_catalog, report, shot, sign_in


SCHEMA = {"type": "object", "required": ["url"], "properties": {
    "url": {"type": "string", "description": "An http:// URL inside the deployment's network"},
    "expect_status": {"type": "integer", "minimum": 100, "maximum": 599},
    "timeout_secs": {"type": "integer", "minimum": 1, "default": 60}}}


@pytest.fixture(scope="module")
def server():
    s = Server()
    admin = Api(s, *ADMIN)
    private_catalog(admin)
    admin.ok("""mutation($s: JSON!) { createPlugin(input: {name: "http-check", registry: "private", repository: "nullops/http-check", tag: "%s",
        description: "Waits until a URL answers", parametersSchema: $s, joinsDeploymentNetwork: true}) { name } }""" % VERSION, s=SCHEMA)
    admin.ok("""mutation { createProject(input: {name: "shop", environments: ["local"], cpuMillis: 200, memoryMib: 256}) { name } }""")
    yield s
    s.clean_up()


def signed_in(browser, server):
    page = open_page(browser, server, width=1440, height=1000)
    sign_in(page, *ADMIN)
    return page


def test_a_pipeline_drawn_only_by_dragging_is_saved_and_comes_back_after_a_reload(server, browser):
    page = signed_in(browser, server)
    page.goto("/#/projects/shop/pipeline")
    expect(page.locator(".version-line")).to_contain_text("No version saved yet")
    # Five nodes, with a parallel branch: the api's check runs beside web, and smoke after both.
    assert editor.drag_from_palette(page, "api", 40, 60) == "api"
    assert editor.drag_from_palette(page, "http-check", 260, 40) == "http-check"
    assert editor.drag_from_palette(page, "web", 260, 160) == "web"
    assert editor.drag_from_palette(page, "http-check", 470, 160) == "http-check-2"
    assert editor.drag_from_palette(page, "http-check", 650, 100) == "http-check-3"
    for a, b in [("api", "http-check"), ("api", "web"), ("web", "http-check-2"), ("http-check", "http-check-3"), ("http-check-2", "http-check-3")]:
        editor.connect(page, a, b)
    assert editor.edges(page) == sorted(["api>http-check", "api>web", "web>http-check-2", "http-check>http-check-3", "http-check-2>http-check-3"])

    # A required parameter left empty: the node says so, and a save is refused.
    expect(node(page, "http-check")).to_have_class(re.compile("has-problem"))
    expect(node(page, "http-check")).to_contain_text("url")
    page.get_by_role("button", name="Save as version 1").click()
    expect(page.locator("#view")).to_contain_text("Not saved: fix the 3 problems marked on the nodes first")

    # A cycle is refused as it is drawn: http-check-3 already runs after api.
    editor.connect(page, "http-check-3", "api")
    expect(page.locator(".canvas-status")).to_contain_text("Edge refused: it would make a cycle")
    assert len(editor.edges(page)) == 5

    # The plugin's form: its schema's fields, checked as typed; expression help offers the
    # outputs of the nodes upstream only.
    editor.select(page, "http-check")
    inspector = page.locator(".inspector")
    expect(inspector.get_by_label(re.compile("^url"))).to_be_visible()
    inspector.locator("[data-field='parameters.expect_status']").fill("abc")
    expect(inspector).to_contain_text("Use a whole number.")
    inspector.locator("[data-field='parameters.expect_status']").fill("200")
    expect(inspector).not_to_contain_text("Use a whole number.")
    insert = inspector.get_by_label("Insert a reference into url")
    options = insert.locator("option").all_text_contents()
    assert "api: its host" in options and not any(o.startswith("web") for o in options), options
    insert.select_option(label="api: its host")
    url = inspector.locator("[data-field='parameters.url']")
    expect(url).to_have_value("${{ nodes.api.outputs.host }}")
    url.fill("http://${{ nodes.api.outputs.host }}:8080/healthz")
    expect(node(page, "http-check")).not_to_have_class(re.compile("has-problem"))
    editor.set_parameter(page, "http-check-2", "url", "http://web:8080/healthz")
    editor.set_parameter(page, "http-check-3", "url", "http://api:8080/healthz")
    expect(page.locator(".canvas .enode.has-problem")).to_have_count(0)
    shot(page, "editor-01-drawn")

    page.get_by_label("Message").fill("five steps, two at once")
    page.get_by_role("button", name="Save as version 1").click()
    expect(page.locator("tr", has_text="version 1")).to_contain_text("five steps, two at once")
    drawn = {n: node(page, n).bounding_box() for n in editor.node_ids(page)}

    page.reload()
    expect(node(page, "http-check-3")).to_be_visible()
    assert editor.node_ids(page) == sorted(["api", "http-check", "web", "http-check-2", "http-check-3"])
    assert len(editor.edges(page)) == 5
    expect(page.locator(".version-line")).to_contain_text("Version 1")
    # Where they were drawn, relative to each other (the view is fitted again on load).
    again = {n: node(page, n).bounding_box() for n in drawn}
    assert (again["web"]["y"] > again["http-check"]["y"]) == (drawn["web"]["y"] > drawn["http-check"]["y"])
    assert (again["http-check-3"]["x"] > again["web"]["x"]) == (drawn["http-check-3"]["x"] > drawn["web"]["x"])
    editor.select(page, "http-check")
    expect(page.locator(".inspector [data-field='parameters.url']")).to_have_value("http://${{ nodes.api.outputs.host }}:8080/healthz")
    done(page)


def test_undo_redo_and_the_keyboard_alone(server, browser):
    page = signed_in(browser, server)
    page.goto("/#/projects/shop/pipeline")
    expect(node(page, "api")).to_be_visible()
    # Add from the palette by keyboard, move with arrows, delete, undo, redo.
    page.locator(".palette-item[data-name='web']").focus()
    page.keyboard.press("Enter")
    expect(node(page, "web-2")).to_be_focused()
    before = node(page, "web-2").bounding_box()
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    assert node(page, "web-2").bounding_box()["y"] > before["y"]
    # An edge by keyboard: the inspector's "Runs after" boxes; a box that would make a cycle is off.
    inspector = page.locator(".inspector")
    inspector.get_by_label("api", exact=True).check()
    assert "api>web-2" in editor.edges(page)
    page.get_by_role("button", name="Fit").click()
    editor.select(page, "api")
    expect(inspector.get_by_label("web-2", exact=True)).to_be_disabled()
    node(page, "web-2").focus()
    page.keyboard.press("Delete")
    expect(node(page, "web-2")).to_have_count(0)
    assert "api>web-2" not in editor.edges(page)
    page.keyboard.press("Control+z")
    expect(node(page, "web-2")).to_be_visible()
    assert "api>web-2" in editor.edges(page)
    page.keyboard.press("Control+Shift+z")
    expect(node(page, "web-2")).to_have_count(0)
    page.get_by_role("button", name="Undo").click()
    expect(node(page, "web-2")).to_be_visible()
    # Dragging a node moves it; undo puts it back.
    box = node(page, "web-2").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 12)
    page.mouse.down()
    page.mouse.move(box["x"] + 160, box["y"] + 92, steps=6)
    page.mouse.up()
    moved = node(page, "web-2").bounding_box()
    assert moved["x"] > box["x"] + 50
    page.get_by_role("button", name="Undo").click()
    assert abs(node(page, "web-2").bounding_box()["x"] - box["x"]) < 2
    done(page)


def test_a_changed_parameter_is_version_2_and_the_diff_is_drawn_on_the_canvas(server, browser):
    page = signed_in(browser, server)
    page.goto("/#/projects/shop/pipeline")
    editor.set_parameter(page, "http-check-2", "url", "http://web:8080/ready")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.locator("tr", has_text="version 2")).to_be_visible()

    page.get_by_role("link", name="Open version 2 read-only").click()
    expect(page).to_have_url(re.compile(r"pipeline\?version=2$"))
    expect(node(page, "http-check-2")).to_have_class(re.compile("diff-changed"))
    expect(node(page, "api")).not_to_have_class(re.compile("diff-"))
    changed = page.locator("section", has=page.get_by_role("heading", name="What changed"))
    expect(changed).to_contain_text("node http-check-2")
    # Only the field that changed, not the node twice with its digest.
    expect(changed.locator("tr", has_text="node http-check-2")).to_contain_text(re.compile(r"url: \S+ → http://web:8080/ready"))
    expect(changed).not_to_contain_text("sha256")
    shot(page, "editor-02-diff")

    page.get_by_role("link", name="Open version 1 read-only").click()
    expect(page).to_have_url(re.compile(r"pipeline\?version=1$"))
    expect(page.locator(".version-line")).to_contain_text("read-only")
    expect(page.locator(".palette")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Save"))).to_have_count(0)
    editor.select(page, "http-check-2")
    url = page.locator(".inspector [data-field='parameters.url']")
    expect(url).to_have_value("http://web:8080/healthz")
    expect(url).to_have_attribute("readonly", "")
    # Dragging does not move anything here.
    box = node(page, "api").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 12)
    page.mouse.down()
    page.mouse.move(box["x"] + 160, box["y"] + 92, steps=4)
    page.mouse.up()
    assert abs(node(page, "api").bounding_box()["x"] - box["x"]) < 2

    # A new version started from version 1.
    page.get_by_role("link", name="Start a new version from this one").click()
    expect(page.locator(".version-line")).to_contain_text("started from version 1")
    page.get_by_role("button", name="Save as version 3").click()
    expect(page.locator("tr", has_text="version 3")).to_be_visible()
    admin = Api(server, *ADMIN)
    v3 = admin.ok('{ project(name: "shop") { pipelineVersion(version: 3) { basedOn nodes { id parameters } } } }')["project"]["pipelineVersion"]
    assert v3["basedOn"] == 1
    assert {n["id"]: n["parameters"] for n in v3["nodes"]}["http-check-2"] == {"url": "http://web:8080/healthz"}
    done(page)


def audit_positions(admin):
    return [e for e in admin.ok("{ auditLog(page: {first: 20}) { entries { position eventType } } }")["auditLog"]["entries"]]


def test_a_dry_run_finds_a_missing_tag_and_an_unset_secret_then_says_where_it_would_go(server, browser):
    admin = Api(server, *ADMIN)
    page = signed_in(browser, server)
    page.goto("/#/projects/shop/pipeline")
    editor.set_parameter(page, "http-check-3", "url", "http://api:8080/?key=${{ secrets.SMOKE_KEY }}")
    # The editor knows the secret is not set; the dry run says it too, with the tag web lacks.
    expect(node(page, "http-check-3")).to_have_class(re.compile("has-problem"))
    before = audit_positions(admin)
    page.locator("#dry-run").get_by_role("button", name="Dry run").click()
    problems = page.get_by_role("list", name="Problems found")
    expect(problems.locator("[data-code='MISSING_TAG']")).to_contain_text("choose a tag for service web")
    expect(problems.locator("[data-code='UNKNOWN_SECRET']")).to_contain_text("SMOKE_KEY")
    expect(page.locator("#dry-run-verdict")).to_contain_text("Not ready")
    expect(page.locator(".dry-run-result")).to_contain_text("together: http-check, web")
    shot(page, "editor-03-dry-run-problems")

    # Nothing but the audit entry was appended.
    admin.wait_for("the dry run's audit entry", lambda: audit_positions(admin)[0]["eventType"] == "pipeline.dry_run", timeout=30)
    after = audit_positions(admin)
    new = [e for e in after if e["position"] not in {b["position"] for b in before}]
    assert [e["eventType"] for e in new] == ["pipeline.dry_run"], new
    assert admin.ok('{ project(name: "shop") { pipeline { version } } }')["project"]["pipeline"]["version"] == 3

    # Fixed: the secret set, a tag chosen. Now the answer names a node with room.
    admin.ok('mutation { setSecret(project: "shop", name: "SMOKE_KEY", value: "dry-run-secret-value") { name } }')
    page.get_by_label("Tag of web").fill("v1")
    page.locator("#dry-run").get_by_role("button", name="Dry run").click()
    expect(page.locator("#dry-run-verdict")).to_have_text("Ready: it would deploy now.", timeout=30_000)
    expect(page.locator("#dry-run-admission")).to_contain_text(re.compile(r"fits on node \S+:\d+ now"))
    assert "dry-run-secret-value" not in page.content()
    shot(page, "editor-04-dry-run-ready")
    done(page)


def define_check(admin, schema):
    admin.ok("""mutation($s: JSON!) { updatePlugin(input: {name: "http-check", registry: "private", repository: "nullops/http-check", tag: "%s",
        description: "Waits until a URL answers", parametersSchema: $s, joinsDeploymentNetwork: true}) { name } }""" % VERSION, s=schema)


def test_the_servers_problems_are_marked_on_the_nodes_they_name(server, browser):
    admin = Api(server, *ADMIN)
    page = signed_in(browser, server)
    page.goto("/#/projects/shop/pipeline")
    expect(node(page, "api")).to_be_visible()
    editor.set_parameter(page, "http-check-2", "url", "http://web:8080/live")
    # Meanwhile an admin makes the plugin require a parameter this drawing does not give.
    define_check(admin, {**SCHEMA, "required": ["url", "method"], "properties": {**SCHEMA["properties"], "method": {"enum": ["GET", "HEAD"]}}})
    try:
        page.get_by_role("button", name="Save as version 4").click()
        expect(page.locator("#view")).to_contain_text("Not saved: 3 problems, marked on the nodes")
        for n in ["http-check", "http-check-2", "http-check-3"]:
            expect(node(page, n)).to_have_class(re.compile("has-problem"))
            expect(node(page, n)).to_contain_text("plugin http-check needs the parameter method")
        expect(node(page, "api")).not_to_have_class(re.compile("has-problem"))
        shot(page, "editor-05-server-problems")
        # The API says the same, field by field.
        data, errors = admin.call('mutation($i: PipelineInput!) { savePipeline(project: "shop", pipeline: $i) { version } }',
                                  i={"nodes": [{"id": "x", "plugin": "http-check", "parameters": {"expect_status": "ok"}}]})
        assert errors[0]["extensions"]["code"] == "INVALID_INPUT"
        found = {(p["node"], p["field"], p["code"]) for p in errors[0]["extensions"]["problems"]}
        assert {("x", "parameters.url", "MISSING_PARAMETER"), ("x", "parameters.method", "MISSING_PARAMETER"),
                ("x", "parameters.expect_status", "BAD_PARAMETER")} <= found, found
        assert admin.ok('{ project(name: "shop") { pipeline { version } } }')["project"]["pipeline"]["version"] == 3
    finally:
        define_check(admin, SCHEMA)
    done(page)


def docker(*args):
    subprocess.run(["docker", *args], check=True, capture_output=True)


def test_a_plugin_added_to_a_pipeline_is_on_the_node_before_any_deployment_which_then_pulls_nothing(server, browser):
    admin = Api(server, *ADMIN)
    # An image of the example plugin the node has never held (a label of its own makes its
    # manifest new): only the registry has it.
    tag = f"prefetch-{uuid.uuid4().hex[:8]}"
    repository = f"{REGISTRY}/nullops/http-check"
    subprocess.run(["docker", "build", "-q", "--label", f"nullops.test={tag}", "-t", f"{repository}:{tag}", "-"],
                   input=f"FROM {repository}:{VERSION}\n", text=True, check=True, capture_output=True)
    docker("push", "-q", f"{repository}:{tag}")
    pushed = subprocess.run(["docker", "image", "inspect", "-f", "{{index .RepoDigests 0}}", f"{repository}:{tag}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    docker("rmi", f"{repository}:{tag}")
    assert subprocess.run(["docker", "image", "inspect", pushed], capture_output=True).returncode != 0, "the node must not hold it yet"
    try:
        admin.ok("""mutation($s: JSON!, $t: String!) { createPlugin(input: {name: "fresh-check", registry: "private", repository: "nullops/http-check", tag: $t,
            parametersSchema: $s, joinsDeploymentNetwork: true}) { name } }""", s=SCHEMA, t=tag)
        admin.ok("""mutation { createProject(input: {name: "warm", environments: ["local"], cpuMillis: 200, memoryMib: 256}) { name } }""")
        saved = admin.ok("""mutation($i: PipelineInput!) { savePipeline(project: "warm", pipeline: $i) { nodes { id image { digest } } } }""",
                         i={"nodes": [{"id": "api", "service": "api"}, {"id": "check", "plugin": "fresh-check", "parameters": {"url": "http://api:8080/healthz"}}],
                            "edges": [{"from": "api", "to": "check"}]})["savePipeline"]
        digest = next(n for n in saved["nodes"] if n["id"] == "check")["image"]["digest"]
        assert digest and digest.startswith("sha256:"), saved
        wanted = f"{repository}@{digest}"
        assert wanted == pushed, (wanted, pushed)

        def held():
            nodes = admin.ok('{ nodes(environment: "local") { images { image present } } }')["nodes"]
            return any(i["image"] == wanted and i["present"] for n in nodes for i in n["images"])
        admin.wait_for(f"the node to hold {wanted}", held, timeout=180)

        page = signed_in(browser, server)
        page.goto("/#/environments/local")
        images = page.locator(".node-images").first
        images.locator("summary").click()
        expect(images.locator("li", has_text=wanted)).to_have_attribute("data-present", "true")
        shot(page, "editor-07-node-images")
        done(page)

        made = admin.ok('mutation { createDeployment(project: "warm", environment: "local", name: "warm-1") { id } }')["createDeployment"]["id"]
        admin.wait_for("warm-1 RUNNING", lambda: admin.ok("query($id: ID!) { deployment(id: $id) { state } }", id=made)["deployment"]["state"] == "RUNNING",
                       timeout=DEPLOY // 1000)
        lines = [line["text"] for line in admin.ok('query($id: ID!) { deployment(id: $id) { logs(service: "pipeline", tail: 500) { text } } }', id=made)["deployment"]["logs"]]
        assert any("check" in line for line in lines), lines
        assert not any(line.startswith("pulled image") for line in lines), lines
        admin.ok("mutation($id: ID!) { deleteDeployment(id: $id) { id } }", id=made)
    finally:
        subprocess.run(["docker", "rmi", "-f", f"{repository}:{tag}", wanted], capture_output=True)


def drag_frames(page, node_id, moves=30):
    """Drags node `node_id` in `moves` steps; the durations of the editor's drag frames (ms)."""
    target = node(page, node_id)
    target.scroll_into_view_if_needed()
    # Where it is once the canvas has settled (a busy machine may still be laying it out).
    box, deadline = target.bounding_box(), time.monotonic() + 10
    while time.monotonic() < deadline:
        page.wait_for_timeout(100)
        again = target.bounding_box()
        if again == box:
            break
        box = again
    page.evaluate("performance.clearMeasures('editor:drag-frame')")
    page.mouse.move(box["x"] + 30, box["y"] + 10)
    page.mouse.down()
    for i in range(1, moves + 1):
        page.mouse.move(box["x"] + 30 + i * 4, box["y"] + 10 + i * 3)
    page.mouse.up()
    frames = sorted(page.evaluate("performance.getEntriesByName('editor:drag-frame').map(e => e.duration)"))
    assert frames, "no drag frame measured"
    return frames


def shown_ms(page):
    """How long the editor took to draw the pipeline it loaded (layout included), in ms."""
    return page.evaluate("performance.getEntriesByName('editor:load').at(-1)?.duration ?? null")


def test_a_hundred_node_pipeline_stays_responsive(server, browser):
    """The editor's figures, as ratios to the five-node pipeline measured in the same run: the
    time to draw the pipeline, and the time of one drag frame."""
    admin = Api(server, *ADMIN)
    admin.ok("""mutation { createProject(input: {name: "big", environments: ["local"], cpuMillis: 4000, memoryMib: 4096}) { name } }""")
    nodes = [{"id": f"step-{i}", "plugin": "http-check", "parameters": {"url": f"http://api:8080/{i}"}} for i in range(100)]
    edges = [{"from": f"step-{i}", "to": f"step-{i + 1 + (i % 3)}"} for i in range(96)]
    admin.ok('mutation($i: PipelineInput!) { savePipeline(project: "big", pipeline: $i) { version } }', i={"nodes": nodes, "edges": edges})
    page = signed_in(browser, server)
    small, big = [], []

    def leave_for(path, moved):
        # A measured drag moved a node: the editor asks before that drawing is left.
        page.goto(path)
        if moved:
            page.get_by_role("alertdialog", name="Leave without saving?").get_by_role("button", name="Leave without saving").click()

    for round in range(3):
        leave_for("/#/projects/shop/pipeline", moved=round > 0)
        expect(node(page, "http-check-3")).to_be_attached()
        small.append((shown_ms(page), drag_frames(page, "api")))
        leave_for("/#/projects/big/pipeline", moved=True)
        expect(node(page, "step-99")).to_be_attached()
        big.append((shown_ms(page), drag_frames(page, "step-0")))
    median = lambda xs: sorted(xs)[len(xs) // 2]
    small_shown, big_shown = median([s for s, _ in small]), median([s for s, _ in big])
    small_frame = median([f for _, fs in small for f in fs])
    big_frame, big_worst = median([f for _, fs in big for f in fs]), max(f for _, fs in big for f in fs)
    report("editor: pipeline drawn, 5 nodes / 100 nodes (ms), ratio", f"{small_shown:.1f} / {big_shown:.1f}, {big_shown / max(small_shown, 0.1):.1f}x")
    report("editor: drag frame median, 5 nodes / 100 nodes (ms), ratio; worst at 100", f"{small_frame:.2f} / {big_frame:.2f}, {big_frame / max(small_frame, 0.01):.2f}x; {big_worst:.2f}")
    shot(page, "editor-06-hundred-nodes")
    done(page)
