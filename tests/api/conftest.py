"""Fixtures of the API tests: the real API over the test database and the local broker."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import build_app, build_authenticator
from shared.context import ServiceContext, open_context
from shared.settings import Settings

ADMIN_KEY = "admin-key-0123456789abcdef0123456789abcdef"
SENDER_KEY = "sender-key-0123456789abcdef0123456789abcdef"
REGISTRAR_KEY = "registrar-key-0123456789abcdef0123456789abcd"

APP_ID = "mobile-app"
APNS_TOKEN = "a" * 64
FCM_TOKEN = "fcm-token_0123456789:abcdefghijklmnopqrstuvwxyz"
HMS_TOKEN = "IQAAAACy0hms0123456789abcdefABCDEF"


def key_entry(name: str, roles: str, key: str) -> str:
    return f"{name}:{roles}:{hashlib.sha256(key.encode()).hexdigest()}"


API_KEYS = ",".join(
    (
        key_entry("admin", "admin", ADMIN_KEY),
        key_entry("backend", "sender", SENDER_KEY),
        key_entry("mobile", "registrar", REGISTRAR_KEY),
    )
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def basic(name: str, key: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = bearer(ADMIN_KEY)


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """The test settings with API keys, short SYNCHRONOUS timeouts and create/multi on."""
    return settings.model_copy(
        update={
            "send_sync_timeout_s": 2.0,
            "send_sync_poll_s": 0.2,
            "registration_multiple_activations_enabled": True,
        }
    )


ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(api_settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[ClientFactory]:
    """Return a factory of API clients; each runs the real app over its own context."""
    closers: list[Callable[[], Awaitable[None]]] = []

    async def factory(**changes: Any) -> TestClient:
        from pydantic import SecretStr

        update = {"api_keys": SecretStr(API_KEYS), **changes}
        settings = api_settings.model_copy(update=update)
        manager = open_context(settings)
        context = await manager.__aenter__()
        app = build_app(context, build_authenticator(settings))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        client.app_context = context  # type: ignore[attr-defined]

        async def close() -> None:
            await client.close()
            await manager.__aexit__(None, None, None)

        closers.append(close)
        return client

    yield factory
    for close in reversed(closers):
        await close()


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient:
    return await make_client()


def context_of(client: TestClient) -> ServiceContext:
    context: ServiceContext = client.app_context  # type: ignore[attr-defined]
    return context


async def call(
    client: TestClient,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    expect: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send a JSON request as admin (unless the headers replace the key); return status and JSON."""
    sent_headers = {"Content-Type": "application/json", **ADMIN, **(headers or {})}
    data = None if body is None else orjson.dumps(body)
    async with client.request(method, path, data=data, headers=sent_headers) as response:
        document = orjson.loads(await response.read())
        if expect is not None:
            assert response.status == expect, document
        return response.status, document


async def create_application(client: TestClient, app_id: str = APP_ID) -> None:
    await call(
        client, "POST", "/admin/app/create", {"requestObject": {"appId": app_id}}, expect=200
    )


async def register(
    client: TestClient,
    activation_id: str | None,
    user_id: str,
    token: str = APNS_TOKEN,
    platform: str = "apns",
    status: str = "ACTIVE",
    app_id: str = APP_ID,
) -> None:
    request: dict[str, Any] = {
        "appId": app_id,
        "token": token,
        "platform": platform,
        "userId": user_id,
        "activationStatus": status,
    }
    if activation_id is not None:
        request["activationId"] = activation_id
    await call(client, "POST", "/push/device/create", {"requestObject": request}, expect=200)


async def read_queue(amqp_url: str, queue: str) -> list[dict[str, Any]]:
    """Drain a queue without waiting and return the JSON bodies."""
    bodies = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue, ensure=True)
        while True:
            message = await declared.get(fail=False, no_ack=True)
            if message is None:
                return bodies
            bodies.append(orjson.loads(message.body))


class FakePowerAuth:
    """A loopback fake of PowerAuth Server's activation status and application list calls."""

    def __init__(self) -> None:
        self.activations: dict[str, dict[str, Any]] = {}
        self.applications: list[str] = []
        self.requests: list[tuple[str, Any]] = []
        self.correlation_ids: list[str | None] = []
        self.authorizations: list[str | None] = []
        self.fail = False
        self.server: TestServer | None = None

    async def activation_status(self, request: web.Request) -> web.Response:
        document = await request.json()
        self.requests.append((request.path, document))
        self.correlation_ids.append(request.headers.get("X-Correlation-ID"))
        self.authorizations.append(request.headers.get("Authorization"))
        if self.fail:
            return web.json_response({"status": "ERROR"}, status=500)
        activation_id = document["requestObject"]["activationId"]
        found = self.activations.get(activation_id, {"activationStatus": "REMOVED"})
        return web.json_response(
            {"status": "OK", "responseObject": {"activationId": activation_id, **found}}
        )

    async def application_list(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, await request.json()))
        if self.fail:
            return web.json_response({"status": "ERROR"}, status=500)
        applications = [
            {"applicationId": app_id, "applicationName": app_id} for app_id in self.applications
        ]
        return web.json_response({"status": "OK", "responseObject": {"applications": applications}})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def powerauth() -> AsyncIterator[FakePowerAuth]:
    fake = FakePowerAuth()
    app = web.Application()
    app.router.add_post("/rest/v3/activation/status", fake.activation_status)
    app.router.add_post("/rest/v3/application/list", fake.application_list)
    fake.server = TestServer(app, host="127.0.0.1")
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.fixture(autouse=True)
async def delete_dead_exchange(amqp_url: str, queue_prefix: str) -> AsyncIterator[None]:
    """Delete the dead-letter and ingest exchanges the topology declares for this test."""
    yield
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for name in (f"{queue_prefix}.dead", f"{queue_prefix}.ingest"):
            channel = await connection.channel()
            await channel.exchange_delete(name)
