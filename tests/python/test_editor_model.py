"""Unit tests of the pipeline editor's model (frontend/views/editor/model.js), run in Chromium:
the module is imported from the running binary, as the console imports it, and each test is a
given / when / then in JavaScript whose findings are checked here."""

import pytest

from conftest import start


@pytest.fixture(scope="module")
def page(browser):
    proc, addr = start("embedded")
    p = browser.new_page()
    # The sign-in page: any page of the server makes its modules same-origin imports.
    p.goto(f"http://{addr}/")
    yield p
    p.close()
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def run(page, body):
    """Runs `body` (JavaScript with `m`, the model module, in scope) and returns its value."""
    return page.evaluate(f"async () => {{ const m = await import('/views/editor/model.js'); {body} }}")


def test_edits_that_arrive_together_under_one_key_are_one_step_to_undo(page):
    got = run(page, """
        const h = new m.History(3);
        // given three keystrokes in one field within a second, then a move
        h.record('s0', 'params:a', 0); h.record('s1', 'params:a', 400); h.record('s2', 'params:a', 900);
        h.record('s3', 'move:a', 950);
        const steps = h.past.slice();
        // when undone twice
        const first = h.undo('now'); const second = h.undo(first);
        // then the typing went back in one step, and redo comes forward again
        const again = h.redo(second);
        // a key used again after a pause is a new step
        const later = new m.History(); later.record('a', 'k', 0); later.record('b', 'k', 1500);
        return { steps, first, second, again, canRedo: h.canRedo, later: later.past };
    """)
    assert got["steps"] == ["s0", "s3"]
    assert (got["first"], got["second"], got["again"]) == ("s3", "s0", "s3")
    assert got["canRedo"] is True
    assert got["later"] == ["a", "b"]


def test_history_keeps_its_limit_and_a_new_edit_ends_what_could_be_redone(page):
    got = run(page, """
        const h = new m.History(2);
        h.record('a'); h.record('b'); h.record('c');
        const kept = h.past.slice();
        h.undo('d');
        h.record('e');
        return { kept, canRedo: h.canRedo, nothing: new m.History().undo('x') };
    """)
    assert got["kept"] == ["b", "c"]
    assert got["canRedo"] is False
    assert got["nothing"] is None


def test_nodes_get_free_ids_and_snapped_places_right_of_the_others(page):
    got = run(page, """
        const model = m.emptyModel();
        const a = m.addNode(model, 'SERVICE', 'web');
        const b = m.addNode(model, 'SERVICE', 'web');
        const c = m.addNode(model, 'PLUGIN', 'create-db', { x: 103, y: 51 });
        return { ids: model.nodes.map((n) => n.id), a: [a.x, a.y], b: [b.x, b.y], c: [c.x, c.y], params: c.parameters };
    """)
    assert got["ids"][0] == "web" and got["ids"][1] != "web" and got["ids"][1].startswith("web")
    assert got["b"][0] > got["a"][0] and got["b"][1] == got["a"][1]
    assert got["c"] == [104, 48]
    assert got["params"] == {}


def test_edges_that_would_loop_or_repeat_are_refused_with_the_reason(page):
    got = run(page, """
        const model = m.emptyModel();
        for (const s of ['db', 'api', 'web']) m.addNode(model, 'SERVICE', s);
        const ok = [m.addEdge(model, 'db', 'api'), m.addEdge(model, 'api', 'web')];
        return { ok, cycle: m.addEdge(model, 'web', 'db'), self: m.addEdge(model, 'db', 'db'),
                 twice: m.addEdge(model, 'db', 'api'), edges: model.edges.length };
    """)
    assert got["ok"] == [None, None]
    assert got["cycle"] == "it would make a cycle: web already runs after db (db → api → web)"
    assert got["self"] == "an edge cannot lead from a node to itself"
    assert got["twice"] == "api already runs after db"
    assert got["edges"] == 2


def test_a_rename_follows_every_edge_and_expression_and_a_removal_takes_the_edges(page):
    got = run(page, """
        const model = m.emptyModel();
        m.addNode(model, 'SERVICE', 'db');
        const seed = m.addNode(model, 'PLUGIN', 'seed');
        seed.parameters = { url: 'postgres://${{ nodes.db.outputs.host }}:${{nodes.db.outputs.port}}/x', other: '${{ nodes.dbx.outputs.host }}' };
        m.addEdge(model, 'db', 'seed');
        const refusals = [m.idRefusal(model, 'db', 'seed'), m.idRefusal(model, 'db', 'Bad Id'), m.idRefusal(model, 'db', 'db'), m.idRefusal(model, 'db', 'pg')];
        m.rename(model, 'db', 'pg');
        const renamed = { edges: model.edges, params: seed.parameters };
        m.removeNode(model, 'pg');
        return { refusals, renamed, left: model.nodes.map((n) => n.id), edges: model.edges };
    """)
    assert got["refusals"][0] == "Node seed already exists."
    assert got["refusals"][1].startswith("Use 1 to 63")
    assert got["refusals"][2:] == [None, None]
    assert got["renamed"]["edges"] == [{"from": "pg", "to": "seed"}]
    assert got["renamed"]["params"] == {"url": "postgres://${{ nodes.pg.outputs.host }}:${{nodes.pg.outputs.port}}/x",
                                        "other": "${{ nodes.dbx.outputs.host }}"}
    assert got["left"] == ["seed"] and got["edges"] == []


def test_the_browser_finds_the_problems_the_server_would(page):
    got = run(page, """
        const services = new Map([['db', {}]]);
        const plugins = new Map([['seed', { parametersSchema: { type: 'object', properties: { sql: { type: 'string' } }, required: ['sql'] } }]]);
        const model = { nodes: [
            { id: 'db', kind: 'SERVICE', service: 'db', x: 0, y: 0 },
            { id: 'Bad', kind: 'SERVICE', service: 'nope', x: 0, y: 0 },
            { id: 'seed', kind: 'PLUGIN', plugin: 'seed', parameters: { sql: '${{ secrets.MISSING }} ${{ nodes.db.outputs.host }} ${{ oops }}' }, x: 0, y: 0 },
            { id: 'late', kind: 'PLUGIN', plugin: 'seed', parameters: {}, x: 0, y: 0 },
          ], edges: [] };
        return m.localProblems(model, { services, plugins, secrets: ['KNOWN'] }).map((p) => `${p.node}.${p.field}:${p.code}`);
    """)
    assert "Bad.id:BAD_NODE_ID" in got
    assert "Bad.service:UNKNOWN_SERVICE" in got
    assert "seed.parameters.sql:UNKNOWN_SECRET" in got
    assert "seed.parameters.sql:NOT_UPSTREAM" in got
    assert "seed.parameters.sql:BAD_EXPRESSION" in got
    assert any(p.startswith("late.") for p in got), got
    assert not any(p.startswith("db.") for p in got), got


def test_a_version_round_trips_through_the_model_keeping_its_layout(page):
    got = run(page, """
        const version = { nodes: [{ id: 'db', kind: 'SERVICE', service: 'db' }, { id: 'seed', kind: 'PLUGIN', plugin: 'seed', parameters: { n: 1 } }],
                          edges: [{ from: 'db', to: 'seed' }], layout: [{ node: 'db', x: 500, y: 300 }] };
        const model = m.fromVersion(version);
        const draft = m.toDraft(model);
        version.nodes[1].parameters.n = 2;
        return { draft, keptApart: model.nodes[1].parameters.n };
    """)
    assert got["draft"]["nodes"] == [{"id": "db", "service": "db"}, {"id": "seed", "plugin": "seed", "parameters": {"n": 1}}]
    assert got["draft"]["edges"] == [{"from": "db", "to": "seed"}]
    layout = {p["node"]: (p["x"], p["y"]) for p in got["draft"]["layout"]}
    assert layout["db"] == (500, 300)
    assert "seed" in layout
    assert got["keptApart"] == 1


def test_the_view_zooms_within_its_limits_fits_everything_and_reveals_by_the_least_move(page):
    got = run(page, """
        const view = { x: 0, y: 0, zoom: 1 };
        const far = m.zoomed(view, 100, { x: 0, y: 0 });
        const near = m.zoomed(view, 0.001, { x: 0, y: 0 });
        const around = m.zoomed(view, 2, { x: 100, y: 100 });
        const nodes = [{ x: 0, y: 0 }, { x: 4000, y: 0 }];
        const fit = m.fitted(nodes, 800, 600);
        const small = m.fitted([{ x: 10, y: 10 }], 800, 600);
        const moved = m.revealed(view, { x: 900, y: 10 }, 800, 600);
        const still = m.revealed(view, { x: 100, y: 100 }, 800, 600);
        return { far: far.zoom, near: near.zoom, around, fit, small: small.zoom, moved, still };
    """)
    assert got["far"] == 2 and got["near"] == 0.3
    # The point under the cursor stays where it is.
    assert got["around"] == {"zoom": 2, "x": -100, "y": -100}
    assert got["fit"]["zoom"] < 1
    assert got["small"] == 1
    assert got["moved"]["x"] == 800 - 24 - 184 - 900 and got["moved"]["y"] == 14
    assert got["still"] == {"x": 0, "y": 0, "zoom": 1}
