"""Gestures on the pipeline editor with real mouse input: a palette entry dragged onto the
canvas, a node's output port dragged onto another node, a parameter typed in the inspector."""

from playwright.sync_api import expect


def node(page, node_id):
    return page.locator(f".canvas .enode[data-node-id='{node_id}']")


def node_ids(page):
    return sorted(page.locator(".canvas .enode:not(.enode-ghost)").evaluate_all("els => els.map(e => e.dataset.nodeId)"))


def edges(page):
    return sorted(page.locator(".canvas g.edge:not(.diff-removed)").evaluate_all("els => els.map(e => e.dataset.edge)"))


def drag_from_palette(page, name, x, y):
    """Drags palette entry `name` to (x, y) inside the canvas; returns the new node's id."""
    before = set(node_ids(page))
    entry = page.locator(f".palette-item[data-name='{name}']").bounding_box()
    canvas = page.locator(".canvas").bounding_box()
    page.mouse.move(entry["x"] + entry["width"] / 2, entry["y"] + 12)
    page.mouse.down()
    page.mouse.move(canvas["x"] + x, canvas["y"] + y, steps=10)
    page.mouse.up()
    expect(page.locator(".canvas .enode:not(.enode-ghost)")).to_have_count(len(before) + 1)
    (added,) = set(node_ids(page)) - before
    return added


def connect(page, source, target):
    """Drags from `source`'s output port onto `target`."""
    port = node(page, source).locator(".port-out").bounding_box()
    onto = node(page, target).bounding_box()
    page.mouse.move(port["x"] + port["width"] / 2, port["y"] + port["height"] / 2)
    page.mouse.down()
    page.mouse.move(onto["x"] + onto["width"] / 3, onto["y"] + onto["height"] / 2, steps=10)
    page.mouse.up()


def select(page, node_id):
    node(page, node_id).click()
    expect(page.locator(".inspector h2")).to_have_text(f"Node {node_id}")


def rename(page, old, new):
    select(page, old)
    field = page.locator(".inspector").get_by_label("Id", exact=True)
    field.fill(new)
    field.press("Enter")
    expect(node(page, new)).to_be_visible()


def set_parameter(page, node_id, name, value):
    select(page, node_id)
    page.locator(f".inspector [data-field='parameters.{name}']").fill(value)
