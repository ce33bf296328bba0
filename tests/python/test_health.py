"""The platform health page, on two servers sharing PostgreSQL and NATS: while the server that
runs the projections is stopped (SIGSTOP), what the other appends is not applied, and the page
shows the lag rising; once it runs again, the lag falls back to nothing, live."""

import os
import re
import secrets
import signal
import subprocess
import time
import uuid

import pytest
import requests
from playwright.sync_api import expect

from conftest import BIN
from test_console import ADMIN, Api, done, free_port, open_page, shot, sign_in
from test_production import PG, psql


class Base:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"


def start(env, port):
    ingress = free_port()
    proc = subprocess.Popen([BIN, "server", "--listen", f"127.0.0.1:{port}", "--ingress-listen", f"127.0.0.1:{ingress}"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until = time.monotonic() + 120
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        assert proc.poll() is None and time.monotonic() < until, "the server did not start"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pair():
    database = f"health_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {database}")
    env = {"NULLOPS_DATABASE_URL": f"{PG}/{database}", "NULLOPS_NATS_URL": "nats://127.0.0.1:4222", "NULLOPS_NATS_PREFIX": database,
           "NULLOPS_MASTER_KEY": secrets.token_hex(32), "NULLOPS_ADMIN_PASSWORD": ADMIN[1], "NULLOPS_LOG": "warn"}
    first_port, second_port = free_port(), free_port()
    # The first holds the projections' leases; the second waits for them.
    first = start(env, first_port)
    second = start(env, second_port)
    yield first, Base(second_port)
    for proc in (first, second):
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=30)
    psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_the_lag_rises_while_the_projections_are_stopped_and_falls_when_they_catch_up(pair, browser):
    first, second = pair
    admin = Api(second, *ADMIN)
    page = open_page(browser, second)
    sign_in(page, *ADMIN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Health").click()
    catalog = page.get_by_role("region", name="Read models").get_by_role("row").filter(has=page.locator("code", has_text=re.compile("^catalog$")))
    expect(catalog).to_contain_text("caught up")

    first.send_signal(signal.SIGSTOP)
    for i in range(3):
        # Appended at once; not visible until a projection applies it.
        _, errors = admin.call('mutation($n: String!) { createTeam(name: $n) { name } }', n=f"late-{i}")
        assert not errors or errors[0]["extensions"]["code"] == "NOT_YET_VISIBLE", errors
    expect(catalog.locator("[data-lag=catalog]")).to_have_text(re.compile(r"^[3-9]|\d\d+$"), timeout=60_000)
    expect(catalog).not_to_contain_text("caught up")
    shot(page, "health-lagging")

    first.send_signal(signal.SIGCONT)
    expect(catalog).to_contain_text("caught up", timeout=60_000)
    expect(catalog.locator("[data-lag=catalog]")).to_have_text("0")
    assert {t["name"] for t in admin.ok("{ teams { name } }")["teams"]} >= {"late-0", "late-1", "late-2"}
    shot(page, "health-caught-up")
    done(page)
