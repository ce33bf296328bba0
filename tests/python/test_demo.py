"""The main job out of the box: a fresh `nullops up` (the README's first command) offers the demo,
built from the binary's own example images into the local Docker engine with no registry to set
up, and a newcomer goes from the start page to a running deployment's URL in a few clicks."""

import re

import pytest
from playwright.sync_api import expect

from test_console import ADMIN, Server, done, open_page, shot, sign_in


@pytest.fixture(scope="module")
def demo_server():
    s = Server(demo=True)
    yield s
    s.clean_up()


def test_a_fresh_install_deploys_the_demo_in_a_few_clicks(demo_server, browser):
    page = open_page(browser, demo_server)
    sign_in(page, *ADMIN)
    page.get_by_role("link", name="Deploy the demo").click()
    form = page.locator("#deploy-form")
    expect(form.locator(".pinned")).to_contain_text("nullops.local/demo/api:v1")
    picker = form.get_by_label("web version")
    expect(picker).to_be_enabled()
    picker.select_option("v2")
    shot(page, "demo-1-deploy")
    form.get_by_role("button", name="Deploy").click()
    expect(page.locator("#state")).to_have_attribute("data-state", "RUNNING", timeout=240_000)
    shot(page, "demo-2-running")
    with page.context.expect_page() as opened:
        page.get_by_role("link", name=re.compile(r"^http:\/\/web\.")).click()
    site = opened.value
    expect(site.locator("body")).to_contain_text("NullOps demo: web v2", timeout=30_000)
    site.close()
    done(page)
