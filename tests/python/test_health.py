"""The platform health page, on two servers sharing PostgreSQL and NATS: while the server that
runs the projections is stopped (SIGSTOP), what the other appends is not applied, and the page
shows the lag rising, and a read model rebuilt meanwhile shows as being rebuilt (and /readyz says
not ready); once it runs again, the lag falls back to nothing and the rebuild ends, live."""

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
    yield first, Base(second_port), env
    for proc in (first, second):
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=30)
    psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_the_lag_rises_while_the_projections_are_stopped_and_falls_when_they_catch_up(pair, browser):
    first, second, env = pair
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
    # An admin rebuilds the audit read model meanwhile: until it has replayed the log, what it
    # holds is partial, and the page and /readyz say so.
    rebuilt = subprocess.run([BIN, "projections", "rebuild", "audit"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert rebuilt.returncode == 0, rebuilt.stderr
    audit = page.get_by_role("region", name="Read models").get_by_role("row").filter(has=page.locator("code", has_text=re.compile("^audit$")))
    expect(audit.locator("[data-rebuilding=audit]")).to_contain_text("being rebuilt from the log", timeout=60_000)
    ready = requests.get(second.base + "/readyz", timeout=10)
    assert ready.status_code == 503 and "audit" in ready.text and "rebuilt from the event log" in ready.text, (ready.status_code, ready.text)
    shot(page, "health-lagging")
    # A query it answers says so, and how far it has got, instead of answering from a partial
    # table; queries on other read models answer.
    _, errors = admin.call("{ auditLog { entries { stream } } }")
    assert errors and errors[0]["extensions"]["code"] == "UNAVAILABLE", errors
    progress = re.search(r"the audit read model is being rebuilt from the event log.*rebuilding \((\d+) of (\d+) events\)$", errors[0]["message"])
    assert progress and int(progress[1]) <= int(progress[2]) and int(progress[2]) > 0, errors
    assert admin.ok("{ users { username } }")["users"]
    # So does the audit page, in words.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Not available just now")).to_be_visible()
    expect(page.locator("#view")).to_contain_text("UNAVAILABLE")
    expect(page.locator("#view")).to_contain_text(re.compile(r"audit read model is being rebuilt .* rebuilding \(\d+ of \d+ events\)"))
    shot(page, "audit-rebuilding")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Health").click()

    first.send_signal(signal.SIGCONT)
    expect(catalog).to_contain_text("caught up", timeout=60_000)
    expect(catalog.locator("[data-lag=catalog]")).to_have_text("0")
    expect(audit).to_contain_text("caught up", timeout=60_000)
    # Whole again: its queries answer.
    assert admin.ok("{ auditLog { entries { stream } } }")["auditLog"]["entries"]
    assert requests.get(second.base + "/readyz", timeout=10).status_code == 200
    assert {t["name"] for t in admin.ok("{ teams { name } }")["teams"]} >= {"late-0", "late-1", "late-2"}
    shot(page, "health-caught-up")
    done(page)
