"""Prometheus metrics, scraped by a real Prometheus (Debian's package) and asked in PromQL: after
a known number of commands, a deployment and a wrk burst through the ingress, its answers match
what was done. `/metrics` on the API listener needs an admin's bearer token."""

import os
import re
import subprocess
import tempfile
import time

import pytest
import requests

from test_console import ADMIN, Api, Server, free_port, private_catalog

PROMETHEUS = "/usr/bin/prometheus"


class Prometheus:
    def __init__(self, target):
        self.dir = tempfile.mkdtemp(prefix="nullops-prometheus-")
        self.port = free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
                    f"  - job_name: nullops\n    static_configs:\n      - targets: ['{target}']\n")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.dir}/data",
                                      f"--web.listen-address=127.0.0.1:{self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"

    def query(self, promql):
        """The instant vector's single value, or None when it is empty."""
        body = requests.get(f"{self.base}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def up(self):
        try:
            return self.query('up{job="nullops"}') == 1
        except requests.RequestException:
            return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def platform():
    metrics_port = free_port()
    server = Server(extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    prometheus = Prometheus(f"127.0.0.1:{metrics_port}")
    admin = Api(server, *ADMIN)
    admin.wait_for("Prometheus scraping the platform", prometheus.up, timeout=120)
    yield server, prometheus, metrics_port
    prometheus.stop()
    server.clean_up()


def settles(admin, prometheus, promql, expected, timeout=60):
    """Waits for Prometheus's answer to be `expected` (it scrapes every second)."""
    return admin.wait_for(f"{promql} == {expected}", lambda: prometheus.query(promql) == expected, timeout=timeout)


def test_prometheus_answers_match_what_was_done(platform):
    server, prometheus, _ = platform
    admin = Api(server, *ADMIN)
    catalog = 'sum(nullops_commands_total{aggregate="catalog",outcome="%s"}) or vector(0)'
    ok0, refused0 = prometheus.query(catalog % "ok"), prometheus.query(catalog % "refused")
    for i in range(5):
        admin.ok('mutation($n: String!) { createTeam(name: $n) { name } }', n=f"team-{i}")
    for i in range(3):
        _, errors = admin.call('mutation($n: String!) { createTeam(name: $n) { name } }', n=f"team-{i}")
        assert errors[0]["extensions"]["code"] == "CONFLICT"
    settles(admin, prometheus, catalog % "ok", ok0 + 5)
    settles(admin, prometheus, catalog % "refused", refused0 + 3)
    assert prometheus.query('sum(nullops_command_duration_seconds_count{aggregate="catalog"})') >= ok0 + 8

    # The node's gauges: one online agent, and a deployment's reservation while it runs.
    private_catalog(admin, web=False)
    admin.ok('mutation { createProject(input: {name: "shop", environments: ["local"], cpuMillis: 300, memoryMib: 96}) { name } }')
    admin.ok('mutation { savePipeline(project: "shop", pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }')
    settles(admin, prometheus, 'nullops_agents{state="online"}', 1)
    made = admin.ok('mutation { createDeployment(project: "shop", environment: "local", name: "m1") { id } }')["createDeployment"]["id"]
    d = admin.wait_for("m1 running", lambda: (x := admin.ok('query($id: ID!) { deployment(id: $id) { state services { name url } } }', id=made)["deployment"])
                       and x["state"] == "RUNNING" and x, timeout=240)
    settles(admin, prometheus, 'nullops_deployments{state="running"}', 1)
    settles(admin, prometheus, 'sum(nullops_node_cpu_millicores{measure="reserved"})', 300)
    settles(admin, prometheus, 'sum(nullops_node_memory_bytes{measure="reserved"})', 96 * 1024 * 1024)
    assert prometheus.query("nullops_deployment_time_to_running_seconds_count") == 1

    # A wrk burst through the ingress: the counter says exactly how many it answered.
    host = d["services"][0]["url"].split("//", 1)[1].split("/", 1)[0].split(":")[0]
    ingress = 'sum(nullops_ingress_requests_total{deployment="m1",environment="local"}) or vector(0)'
    before = prometheus.query(ingress)
    out = subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-H", f"Host: {host}", f"http://127.0.0.1:{server.ingress_port}/"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    sent = int(re.search(r"(\d+) requests in", out).group(1))
    assert sent > 0, out
    # wrk counts the answers it read before its time ran out; each of its 4 connections may have
    # had one more on the way, which the ingress answered and counted.
    within = lambda v: v is not None and before + sent <= v <= before + sent + 4
    counted = admin.wait_for(f"{ingress} in [{before + sent}, {before + sent + 4}]", lambda: (lambda v: v if within(v) else None)(prometheus.query(ingress)), timeout=60)
    # By status class, they add up to the same (a busy machine may answer some 502s).
    answered_2xx = prometheus.query('sum(nullops_ingress_requests_total{deployment="m1",class="2xx"})')
    other = prometheus.query('sum(nullops_ingress_requests_total{deployment="m1",class!="2xx"}) or vector(0)')
    assert answered_2xx > 0 and answered_2xx + other == counted, (answered_2xx, other, counted)
    # A host that names nothing is counted without its name.
    requests.get(f"http://127.0.0.1:{server.ingress_port}/", headers={"Host": "x.nothing.local.example"}, timeout=10)
    assert settles(admin, prometheus, 'sum(nullops_ingress_requests_total{deployment="",class="4xx"})', 1)


def test_the_apis_metrics_need_an_admins_token(platform):
    server, _, _ = platform
    assert requests.get(f"{server.base}/metrics", timeout=10).status_code == 401
    admin = Api(server, *ADMIN)
    token = admin.ok('mutation { createApiToken(name: "scraper") { token } }')["createApiToken"]["token"]
    answer = requests.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/openmetrics-text"), answer.text[:200]
    assert "nullops_commands_total" in answer.text and answer.text.endswith("# EOF\n")
    admin.ok('mutation { createUser(username: "dev", password: "dev-password-1") { username } }')
    dev = requests.post(f"{server.base}/graphql", json={"query": 'mutation { login(username: "dev", password: "dev-password-1") { token } }'}, timeout=30).json()
    refused = requests.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {dev['data']['login']['token']}"}, timeout=10)
    assert refused.status_code == 403


def test_the_console_draws_nodes_deployments_and_the_platforms_health_live(platform, browser):
    from playwright.sync_api import expect

    from test_console import done, open_page, shot, sign_in
    server, _, _ = platform
    admin = Api(server, *ADMIN)
    if not any(p["name"] == "shop" for p in admin.ok("{ projects { name } }")["projects"]):
        private_catalog(admin, web=False)
        admin.ok('mutation { createProject(input: {name: "shop", environments: ["local"], cpuMillis: 300, memoryMib: 96}) { name } }')
        admin.ok('mutation { savePipeline(project: "shop", pipeline: {nodes: [{id: "api", service: "api"}]}) { version } }')
    made = admin.ok('mutation { createDeployment(project: "shop", environment: "local", name: "charts") { id } }')["createDeployment"]["id"]
    d = admin.wait_for("charts running", lambda: (x := admin.ok('query($id: ID!) { deployment(id: $id) { state services { url } } }', id=made)["deployment"])
                       and x["state"] == "RUNNING" and x, timeout=240)
    page = open_page(browser, server)
    sign_in(page, *ADMIN)

    # A node's CPU and memory: samples arrive every 10 s and the chart grows by itself.
    page.goto("/#/environments/local")
    cpu = page.get_by_role("region", name="Usage over the last hour").locator("figure").filter(has_text="CPU of").first
    expect(cpu).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=60_000)
    first = int(cpu.get_attribute("data-points"))
    expect(cpu).not_to_have_attribute("data-points", str(first), timeout=60_000)
    assert int(cpu.get_attribute("data-points")) > first
    expect(cpu.locator("path[data-series=reserved]")).to_be_visible()
    shot(page, "charts-node")

    # A deployment's services and its traffic through the ingress.
    host = d["services"][0]["url"].split("//", 1)[1].split("/", 1)[0].split(":")[0]
    for _ in range(20):
        requests.get(f"http://127.0.0.1:{server.ingress_port}/", headers={"Host": host}, timeout=10)
    page.goto(f"/#/deployments/{made}")
    charts = page.get_by_role("region", name="Usage and traffic")
    expect(charts.locator("figure").filter(has_text="CPU by service")).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=60_000)
    traffic = charts.locator("figure").filter(has_text="Requests per second")
    expect(traffic).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=60_000)
    expect(traffic.get_by_role("img")).to_have_attribute("aria-label", re.compile(r"requests/s \d"))
    shot(page, "charts-deployment")

    # The platform's health: every read model, caught up, and the commands decided.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Health").click()
    lag = page.get_by_role("region", name="Read models")
    expect(lag.get_by_role("row").filter(has_text="deployments")).to_contain_text("caught up")
    expect(page.get_by_role("region", name="Commands").locator("figure")).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=60_000)
    shot(page, "charts-health")
    done(page)
