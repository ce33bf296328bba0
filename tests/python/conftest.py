"""Starts the real nullops binary for the Python tests, in embedded or Postgres + NATS mode."""

import os
import queue
import subprocess
import tempfile
import threading
import uuid

import pytest

BIN = os.environ.get("NULLOPS_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "x86_64-unknown-linux-gnu", "debug", "nullops"))
ADMIN_PASSWORD = "python-admin-password"
# Registries, webhook receivers and forges stand in on loopback in these tests: every platform
# they start allows it (a test that needs a stricter platform sets its own).
os.environ.setdefault("NULLOPS_ALLOWED_PRIVATE_TARGETS", "127.0.0.0/8,::1,localhost")
# The background processes' pauses, quicker than in production so that the tests do not wait
# real minutes for what they check (a webhook's failing endpoint is tried again after 100 ms,
# doubling up to 1 s; a preview's missing tag is looked for every 500 ms).
TEST_PACING = "webhook_first_pause=100ms,webhook_max_pause=1s,preview_tag_poll=500ms"
os.environ.setdefault("NULLOPS_PACING", TEST_PACING)
PG_ADMIN = os.environ.get("NULLOPS_TEST_DATABASE_URL", "postgres://nullops:nullops@127.0.0.1:5432/nullops")


def start(mode):
    env = {**os.environ, "NULLOPS_ADMIN_PASSWORD": ADMIN_PASSWORD, "NULLOPS_LOG": "warn", "NULLOPS_INGRESS_LISTEN": "127.0.0.1:0"}
    if mode == "embedded":
        args = ["up", "--data-dir", tempfile.mkdtemp(prefix="nullops-py-")]
    else:
        name = "py_" + uuid.uuid4().hex
        subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name}"], check=True)
        env.update(NULLOPS_DATABASE_URL=PG_ADMIN.rsplit("/", 1)[0] + "/" + name, NULLOPS_NATS_PREFIX=name,
                   NULLOPS_MASTER_KEY=os.urandom(32).hex())
        args = ["server"]
    proc = subprocess.Popen([BIN, *args, "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    while True:
        line = lines.get(timeout=60)
        if line.startswith("NullOps is up: http://"):
            return proc, line.split("http://", 1)[1].split("/", 1)[0]


@pytest.fixture(params=["embedded", "postgres_nats"])
def server(request):
    proc, addr = start(request.param)
    yield addr
    proc.terminate()
    assert proc.wait(timeout=20) == 0


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, driven by Playwright (no browser download). Per module: Playwright's
    synchronous API runs an event loop in this thread while it is started, which the asyncio
    clients of the other tests cannot share. In a network namespace of its own (browser_net.py),
    so that the Docker networks the tests make do not drop its requests."""
    from playwright.sync_api import sync_playwright
    from browser_net import chromium_launch_options
    with sync_playwright() as p:
        b = p.chromium.launch(**chromium_launch_options())
        yield b
        b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test says what each page it had open showed, said and fetched (a test
    module lists its pages in PAGES), and saves each one's picture beside the screenshots, so a
    failure seen once in CI can be read afterwards."""
    outcome = yield
    report = outcome.get_result()
    pages = getattr(item.module, "PAGES", None)
    if pages is None or report.when != "call":
        return
    if report.failed:
        shots = getattr(item.module, "SHOTS", tempfile.gettempdir())
        for i, page in enumerate(pages):
            if page.is_closed():
                continue
            try:
                path = os.path.join(shots, f"failed-{item.name}-{i}.png")
                page.screenshot(path=path, full_page=True)
                dialogs = page.evaluate("() => [...document.querySelectorAll('dialog')].map((d) => `${d.open ? 'open' : 'closed'}: ${d.innerText.slice(0, 200)}`)")
                report.sections.append((f"page {i}", f"url {page.url}\npicture {path}\ndialogs {dialogs}\nstory {getattr(page, 'story', [])[-40:]}\nerrors {getattr(page, 'errors', [])}"))
            except Exception as e:  # the page may be gone with the failure
                report.sections.append((f"page {i}", f"could not be read: {e}"))
    pages.clear()
