"""A real third-party GraphQL client (gql) against the real nullops binary: login over HTTP,
a mutation, and the matching event over a graphql-transport-ws subscription. Runs in embedded
mode and in Postgres + NATS mode."""

import asyncio
import os
import queue
import subprocess
import tempfile
import threading
import uuid

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.requests import RequestsHTTPTransport
from gql.transport.websockets import WebsocketsTransport

BIN = os.environ.get("NULLOPS_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "nullops"))
ADMIN_PASSWORD = "python-admin-password"
PG_ADMIN = os.environ.get("NULLOPS_TEST_DATABASE_URL", "postgres://nullops:nullops@127.0.0.1:5432/nullops")


def start(mode):
    env = {**os.environ, "NULLOPS_ADMIN_PASSWORD": ADMIN_PASSWORD, "NULLOPS_LOG": "warn"}
    if mode == "embedded":
        args = ["up", "--data-dir", tempfile.mkdtemp(prefix="nullops-py-")]
    else:
        name = "py_" + uuid.uuid4().hex
        subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name}"], check=True)
        env.update(NULLOPS_DATABASE_URL=PG_ADMIN.rsplit("/", 1)[0] + "/" + name, NULLOPS_NATS_PREFIX=name)
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


def http_client(addr, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(transport=RequestsHTTPTransport(url=f"http://{addr}/graphql", headers=headers, timeout=20))


def login(addr, username, password):
    request = gql("mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { username role } } }")
    request.variable_values = {"u": username, "p": password}
    result = http_client(addr).execute(request)
    assert result["login"]["user"] == {"username": username, "role": "ADMIN"}
    return result["login"]["token"]


def test_login_mutation_and_subscription(server):
    token = login(server, "admin", ADMIN_PASSWORD)
    create_query = "mutation($n: String!) { createApiToken(name: $n) { apiToken { id name } } }"
    subscription = gql('subscription { auditEvents(filter: { eventType: "api_token.created" }) { eventType actor stream } }')
    ws = WebsocketsTransport(
        url=f"ws://{server}/graphql",
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )

    async def run():
        async with Client(transport=ws) as session:
            received = asyncio.get_running_loop().create_future()

            async def listen():
                async for event in session.subscribe(subscription):
                    if not received.done():
                        received.set_result(event)

            listener = asyncio.create_task(listen())
            # The subscription may register just after a mutation; repeat (bounded) until one lands.
            created = []
            for i in range(20):
                create = gql(create_query)
                create.variable_values = {"n": f"py-{i}"}
                result = await asyncio.to_thread(http_client(server, token).execute, create)
                created.append(result["createApiToken"]["apiToken"]["id"])
                try:
                    event = await asyncio.wait_for(asyncio.shield(received), timeout=0.5)
                    break
                except asyncio.TimeoutError:
                    continue
            else:
                pytest.fail("no subscription event after 20 mutations")
            listener.cancel()
            return event, created

    event, created = asyncio.run(run())
    entry = event["auditEvents"]
    assert entry["eventType"] == "api_token.created"
    assert entry["actor"] == "user:admin"
    assert entry["stream"].removeprefix("apitoken-") in created


def test_errors_carry_codes(server):
    with pytest.raises(TransportQueryError) as err:
        http_client(server).execute(gql("{ me { username } }"))
    assert err.value.errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    with pytest.raises(TransportQueryError) as err:
        http_client(server).execute(gql('mutation { login(username: "admin", password: "wrong-password") { token } }'))
    assert err.value.errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert err.value.errors[0]["message"] == "invalid username or password"


def test_subscription_refuses_a_bad_token(server):
    ws = WebsocketsTransport(
        url=f"ws://{server}/graphql",
        init_payload={"Authorization": "Bearer nos_not-a-real-token"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )

    async def run():
        async with Client(transport=ws) as session:
            async for _ in session.subscribe(gql("subscription { auditEvents { eventType } }")):
                pass

    with pytest.raises(Exception) as err:
        asyncio.run(run())
    # The server closes the socket, with the reason (async-graphql uses close code 1002 here).
    cause = err.value.__cause__ or err.value.__context__
    close = getattr(cause, "rcvd", None)
    assert close is not None and close.code in (1002, 4403), repr(cause)
    assert close.reason == "this token is not valid"
