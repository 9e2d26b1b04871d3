"""AMQP ingest end to end: requests published to RabbitMQ, delivered to the sandbox."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

from shared.queue import REJECTION_REASON_HEADER, QueueNames
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.workers.conftest import (
    Rows,
    SandboxApplication,
    create_sandbox_application,
    provider_sandbox,
    rows,
    sandbox_settings,
)
from workers.delivery_worker import Worker
from workers.sandbox.control import SandboxProcess

__all__ = ["provider_sandbox", "rows"]

APP_ID = "ingest-app"
APNS_TOKEN = "5a" * 32
FCM_TOKEN = "ingest-fcm-" + "z" * 140


@pytest.fixture
async def application(
    rows: Rows, secret_box: SecretBox, provider_sandbox: SandboxProcess
) -> SandboxApplication:
    await provider_sandbox.admin.areset(everything=True)
    await provider_sandbox.admin.aupdate_settings(count_tokens=True)
    app = await create_sandbox_application(rows, secret_box, provider_sandbox.admin, APP_ID)
    await rows.device(app.row_id, APNS_TOKEN, platform="apns", user_id="alice")
    await rows.device(app.row_id, FCM_TOKEN, platform="fcm", user_id="alice", activation_id="a2")
    return app


@pytest.fixture
async def worker(settings: Settings, provider_sandbox: SandboxProcess) -> AsyncIterator[Worker]:
    worker = Worker(sandbox_settings(settings, provider_sandbox, sweep_interval_s=0.5))
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    while worker.ingest is None and not task.done():
        await asyncio.sleep(0.05)
    yield worker
    worker.stop.set()
    await asyncio.wait_for(task, 30)


class Backend:
    """A publishing backend with an exclusive reply queue."""

    def __init__(self, connection: AbstractRobustConnection, names: QueueNames) -> None:
        self.connection = connection
        self.names = names
        self.received: dict[str, dict[str, Any]] = {}

    async def open(self) -> None:
        self.channel: AbstractChannel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.get_exchange(self.names.ingest_exchange)
        self.replies: AbstractQueue = await self.channel.declare_queue(exclusive=True)

    async def publish(
        self,
        request_type: str | None,
        body: bytes | dict[str, Any],
        *,
        message_id: str | None = None,
        reply: bool = True,
    ) -> str:
        correlation_id = uuid.uuid4().hex
        await self.exchange.publish(
            aio_pika.Message(
                body if isinstance(body, bytes) else orjson.dumps(body),
                type=request_type,
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=self.replies.name if reply else None,
                content_type="application/json",
            ),
            routing_key=self.names.ingest,
        )
        return correlation_id

    async def reply(self, correlation_id: str, timeout_s: float = 20) -> dict[str, Any]:
        """Wait for the reply to one request; replies to others are kept for later."""
        deadline = time.monotonic() + timeout_s
        while correlation_id not in self.received:
            assert time.monotonic() < deadline, f"no reply for correlation id {correlation_id}"
            message = await self.replies.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            self.received[message.correlation_id or ""] = orjson.loads(message.body)
        return self.received.pop(correlation_id)

    async def dead_letter(self, timeout_s: float = 10) -> aio_pika.abc.AbstractIncomingMessage:
        queue = await self.channel.get_queue(self.names.dead)
        deadline = time.monotonic() + timeout_s
        while (message := await queue.get(fail=False)) is None:
            assert time.monotonic() < deadline, "nothing reached the dead-letter queue"
            await asyncio.sleep(0.05)
        await message.ack()
        return message


@pytest.fixture
async def backend(settings: Settings, worker: Worker) -> AsyncIterator[Backend]:
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    backend = Backend(connection, QueueNames(settings.queue_prefix))
    await backend.open()
    yield backend
    await connection.close()


def send_body(mode: str = "ASYNCHRONOUS", user_id: str = "alice", app_id: str = APP_ID) -> dict:
    return {
        "requestObject": {
            "appId": app_id,
            "mode": mode,
            "message": {"userId": user_id, "body": {"title": "Hi", "body": "From AMQP 🐇"}},
        }
    }


async def wait_finished(pool: asyncpg.Pool, ids: list[int]) -> list[asyncpg.Record]:
    deadline = time.monotonic() + 20
    while True:
        rows = await pool.fetch(
            "SELECT id, status FROM push_message WHERE id = ANY($1::bigint[]) ORDER BY id", ids
        )
        if rows and all(row["status"] in (1, -1) for row in rows):
            return rows
        assert time.monotonic() < deadline, "messages not finished"
        await asyncio.sleep(0.1)


async def test_send_delivered_and_answered(
    application: SandboxApplication,
    backend: Backend,
    pool: asyncpg.Pool,
    provider_sandbox: SandboxProcess,
) -> None:
    correlation_id = await backend.publish("push.message.send", send_body())

    answer = await backend.reply(correlation_id)
    ids = answer["responseObject"]["messageIds"]
    finished = await wait_finished(pool, ids)
    counts = await provider_sandbox.admin.atoken_counts("apns", [APNS_TOKEN])

    assert answer["status"] == "OK"
    assert answer["responseObject"]["mode"] == "ASYNCHRONOUS"
    assert len(ids) == 2
    assert [row["status"] for row in finished] == [1, 1]
    assert counts == {APNS_TOKEN: 1}


async def test_synchronous_batch_answers_counters(
    application: SandboxApplication, backend: Backend
) -> None:
    body = {
        "requestObject": {
            "appId": APP_ID,
            "mode": "SYNCHRONOUS",
            "batch": [
                {"userId": "alice", "body": {"body": "one"}},
                {"userId": "alice", "body": {"body": "two"}, "attributes": {"silent": True}},
                {"userId": "nobody", "body": {"body": "three"}},
            ],
        }
    }

    correlation_id = await backend.publish("push.message.batch.send", body)
    answer = (await backend.reply(correlation_id))["responseObject"]

    assert answer["mode"] == "SYNCHRONOUS"
    assert answer["apns"] == {"sent": 2, "failed": 0, "pending": 0, "total": 2}
    assert answer["fcm"] == {"sent": 2, "failed": 0, "pending": 0, "total": 2}
    assert len(answer["messageIds"]) == 4


async def test_campaign_send_live(
    application: SandboxApplication, backend: Backend, rows: Rows, pool: asyncpg.Pool
) -> None:
    campaign = await rows.campaign(application.row_id, ["alice"], state="created")

    correlation_id = await backend.publish(
        "push.campaign.send.live", {"requestObject": {"campaignId": campaign}}
    )
    answer = await backend.reply(correlation_id)
    deadline = time.monotonic() + 20
    while await pool.fetchval("SELECT state FROM push_campaign WHERE id = $1", campaign) != (
        "completed"
    ):
        assert time.monotonic() < deadline, "campaign not completed"
        await asyncio.sleep(0.1)
    devices = await pool.fetchval("SELECT count(*) FROM push_campaign_device WHERE status = 1")

    assert answer == {"status": "OK"}
    assert devices == 2


async def test_republished_request_writes_once(
    application: SandboxApplication, backend: Backend, pool: asyncpg.Pool
) -> None:
    first = await backend.publish("push.message.send", send_body(), message_id="order-1042")
    second = await backend.publish("push.message.send", send_body(), message_id="order-1042")

    first_answer = await backend.reply(first)
    second_answer = await backend.reply(second)
    rows = await pool.fetchval("SELECT count(*) FROM push_message")

    assert (
        first_answer["responseObject"]["messageIds"]
        == (second_answer["responseObject"]["messageIds"])
    )
    assert rows == 2


async def test_request_without_reply_to_processed(
    application: SandboxApplication, backend: Backend, pool: asyncpg.Pool
) -> None:
    await backend.publish("push.message.send", send_body(), reply=False)

    deadline = time.monotonic() + 20
    while await pool.fetchval("SELECT count(*) FROM push_message WHERE status = 1") < 2:
        assert time.monotonic() < deadline, "messages not sent"
        await asyncio.sleep(0.1)
    replies = await backend.replies.get(fail=False)

    assert replies is None


@pytest.mark.parametrize(
    ("request_type", "body", "code", "reason_part"),
    [
        ("push.message.send", b"{not json", "ERROR_REQUEST", "malformed JSON"),
        ("push.message.explode", send_body(), "ERROR_REQUEST", "unknown request type"),
        (None, send_body(), "ERROR_REQUEST", "unknown request type"),
        (
            "push.message.send",
            {"requestObject": {"appId": APP_ID, "message": {"body": {"body": "x"}}}},
            "ERROR_REQUEST",
            "requestObject.message.userId",
        ),
        ("push.message.send", send_body(app_id="no-such-app"), "ERROR_GENERIC", "not found"),
        (
            "push.campaign.send.live",
            {"requestObject": {"campaignId": 999999}},
            "ERROR_GENERIC",
            "does not exist",
        ),
        (
            "push.campaign.send.live",
            {"requestObject": {"campaignId": True}},
            "ERROR_REQUEST",
            "requestObject.campaignId",
        ),
        (
            "push.message.send",
            b'{"x": "' + b"y" * (2 * 1024 * 1024) + b'"}',
            "ERROR_REQUEST",
            "larger than the limit",
        ),
    ],
)
async def test_invalid_request_dead_lettered(
    application: SandboxApplication,
    backend: Backend,
    pool: asyncpg.Pool,
    request_type: str | None,
    body: bytes | dict[str, Any],
    code: str,
    reason_part: str,
) -> None:
    correlation_id = await backend.publish(request_type, body)

    answer = await backend.reply(correlation_id)
    dead = await backend.dead_letter()
    reason = str(dead.headers[REJECTION_REASON_HEADER])

    assert answer["status"] == "ERROR"
    assert answer["responseObject"]["code"] == code
    assert reason.startswith(code)
    assert reason_part.lower() in (reason + orjson.dumps(answer).decode()).lower()
    assert dead.correlation_id == correlation_id
    assert await pool.fetchval("SELECT count(*) FROM push_message") == 0


async def test_invalid_message_id_rejected(
    application: SandboxApplication, backend: Backend
) -> None:
    correlation_id = await backend.publish(
        "push.message.send", send_body(), message_id="order\x01id"
    )

    answer = await backend.reply(correlation_id)

    assert answer["responseObject"]["violations"][0]["fieldName"] == "message_id"
