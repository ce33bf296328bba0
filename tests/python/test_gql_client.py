"""A real third-party GraphQL client (gql) against the real nullops binary: login over HTTP,
a mutation, and the matching event over a graphql-transport-ws subscription. Runs in embedded
mode and in Postgres + NATS mode."""

import asyncio

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.requests import RequestsHTTPTransport
from gql.transport.websockets import WebsocketsTransport

from conftest import ADMIN_PASSWORD


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
            deadline = asyncio.get_running_loop().time() + 60
            i = 0
            while True:
                create = gql(create_query)
                create.variable_values = {"n": f"py-{i}"}
                i += 1
                result = await asyncio.to_thread(http_client(server, token).execute, create)
                created.append(result["createApiToken"]["apiToken"]["id"])
                try:
                    event = await asyncio.wait_for(asyncio.shield(received), timeout=0.5)
                    break
                except asyncio.TimeoutError:
                    if asyncio.get_running_loop().time() > deadline:
                        pytest.fail(f"no subscription event after {i} mutations in 60 s")
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
