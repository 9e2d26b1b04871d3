"""A worker delivering through the real provider clients to the sandbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import pytest

from shared.queue import REJECTION_REASON_HEADER, Publisher, QueueNames
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.workers.conftest import (
    Rows,
    SandboxApplication,
    create_sandbox_application,
    sandbox_settings,
)
from workers.delivery_worker import Worker
from workers.retry_policy import DEFAULT_THROTTLE_DELAY_S
from workers.sandbox.control import SandboxProcess


@pytest.fixture
async def application(
    rows: Rows, secret_box: SecretBox, provider_sandbox: SandboxProcess
) -> SandboxApplication:
    await provider_sandbox.admin.areset(everything=True)
    await provider_sandbox.admin.aupdate_settings(count_tokens=True)
    return await create_sandbox_application(rows, secret_box, provider_sandbox.admin)


@pytest.fixture
async def worker_settings(settings: Settings, provider_sandbox: SandboxProcess) -> Settings:
    return sandbox_settings(
        settings, provider_sandbox, sweep_interval_s=0.3, max_attempts=2, retry_base_s=0.2
    )


@pytest.fixture
async def running_worker(worker_settings: Settings) -> AsyncIterator[Worker]:
    worker = Worker(worker_settings)
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    while not worker.consumers and not task.done():
        await asyncio.sleep(0.05)
    yield worker
    worker.stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def publisher(worker_settings: Settings) -> AsyncIterator[Publisher]:
    publisher = await Publisher.open(
        worker_settings.amqp_url.get_secret_value(), QueueNames(worker_settings.queue_prefix), 50
    )
    yield publisher
    await publisher.close()


async def wait_until_finished(pool: asyncpg.Pool, table: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while await pool.fetchval(f"SELECT count(*) FROM {table} WHERE status IN (0, 2)"):
        if time.monotonic() > deadline:
            rows = await pool.fetch(f"SELECT id, status, failure_reason FROM {table}")
            raise AssertionError(f"rows still open after {timeout_s} s: {rows[:5]}")
        await asyncio.sleep(0.1)


async def test_messages_delivered_to_every_provider(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    running_worker: Worker,
    publisher: Publisher,
    provider_sandbox: SandboxProcess,
) -> None:
    app = application.row_id
    apns_token = "ab" * 32
    fcm_token = "fcm-token-" + "x" * 140
    hms_token = "0" * 40 + "hms" * 30
    ids = [
        await rows.message(app, await rows.device(app, apns_token, platform="apns", user_id="u1")),
        await rows.message(app, await rows.device(app, fcm_token, platform="fcm", user_id="u2")),
        await rows.message(app, await rows.device(app, hms_token, platform="hms", user_id="u3")),
    ]

    await publisher.publish_delivery(pool, "message", ids)
    await wait_until_finished(pool, "push_message")
    stored = await pool.fetch("SELECT * FROM push_message ORDER BY id")
    counts = {
        "apns": await provider_sandbox.admin.atoken_counts("apns", [apns_token]),
        "fcm": await provider_sandbox.admin.atoken_counts("fcm", [fcm_token]),
        "hms": await provider_sandbox.admin.atoken_counts("hms", [hms_token]),
    }

    assert [row["status"] for row in stored] == [1, 1, 1], [r["failure_reason"] for r in stored]
    assert all(row["provider_message_id"] for row in stored)
    assert counts == {
        "apns": {apns_token: 1},
        "fcm": {fcm_token: 1},
        "hms": {hms_token: 1},
    }


async def test_unregistered_token_invalidates_device(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    running_worker: Worker,
    publisher: Publisher,
    provider_sandbox: SandboxProcess,
) -> None:
    app = application.row_id
    token = "cd" * 32
    await provider_sandbox.admin.aadd_fault("apns", "unregistered", token=token)
    device = await rows.device(app, token, platform="apns")
    message = await rows.message(app, device)

    await publisher.publish_delivery(pool, "message", [message])
    await wait_until_finished(pool, "push_message")
    stored = await rows.status_of("push_message", message)
    device_row = await rows.status_of("push_device", device)

    assert stored["status"] == -1
    assert stored["failure_reason"] == "Unregistered"
    assert device_row["timestamp_token_invalidated"] is not None


async def test_lost_publish_recovered_by_sweeper(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    running_worker: Worker,
) -> None:
    app = application.row_id
    device = await rows.device(app, "ef" * 32, platform="apns")
    message = await rows.message(app, device)

    await wait_until_finished(pool, "push_message")
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == 1


async def test_campaign_sent_once_per_device(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    running_worker: Worker,
    publisher: Publisher,
    provider_sandbox: SandboxProcess,
) -> None:
    app = application.row_id
    tokens = [f"{i:064x}" for i in range(1, 121)]
    for i, token in enumerate(tokens):
        await rows.device(
            app, token, platform="apns", user_id=f"user-{i % 60}", activation_id=f"act-{i}"
        )
    campaign = await rows.campaign(app, [f"user-{i}" for i in range(60)])

    await publisher.publish_campaign_job(campaign)
    await asyncio.sleep(0.5)
    await wait_until_finished(pool, "push_campaign_device")
    counts = await provider_sandbox.admin.atoken_counts("apns", tokens)
    stored = await rows.status_of("push_campaign", campaign)

    assert set(counts.values()) == {1}
    assert len(counts) == 120
    assert stored["state"] == "completed"


TOKENS = {"apns": "12" * 32, "fcm": "fcm-token-" + "y" * 140, "hms": "0" * 40 + "abc" * 30}


@pytest.mark.parametrize(
    ("provider", "fault", "status", "reason", "invalidated"),
    [
        ("apns", "bad_device_token", -1, "BadDeviceToken", True),
        ("apns", "device_token_not_for_topic", -1, "DeviceTokenNotForTopic", True),
        ("apns", "service_unavailable", -1, "ServiceUnavailable", False),
        ("apns", "internal_server_error", -1, "InternalServerError", False),
        ("fcm", "unregistered", -1, "UNREGISTERED", True),
        ("fcm", "unavailable", -1, "UNAVAILABLE", False),
        ("hms", "invalid_token", -1, "80300007", True),
    ],
)
async def test_provider_error_outcomes(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    running_worker: Worker,
    publisher: Publisher,
    provider_sandbox: SandboxProcess,
    provider: str,
    fault: str,
    status: int,
    reason: str,
    invalidated: bool,
) -> None:
    token = TOKENS[provider]
    await provider_sandbox.admin.aadd_fault(provider, fault, token=token)
    device = await rows.device(application.row_id, token, platform=provider)
    message = await rows.message(application.row_id, device)

    await publisher.publish_delivery(pool, "message", [message])
    await wait_until_finished(pool, "push_message")
    stored = await rows.status_of("push_message", message)
    device_row = await rows.status_of("push_device", device)

    assert stored["status"] == status
    assert stored["failure_reason"] == reason
    assert (device_row["timestamp_token_invalidated"] is not None) is invalidated
    if not invalidated:
        # Transient failures retried up to the attempt limit of these tests.
        assert stored["attempts"] == 2


@pytest.mark.parametrize(
    ("provider", "fault", "retry_after", "as_date"),
    [
        ("apns", "too_many_requests", "120", False),
        ("apns", "too_many_requests", "120", True),
        ("fcm", "quota_exceeded", "120", False),
        ("hms", "traffic_control", None, False),
    ],
)
async def test_throttling_honours_retry_after(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    running_worker: Worker,
    publisher: Publisher,
    provider_sandbox: SandboxProcess,
    provider: str,
    fault: str,
    retry_after: str | None,
    as_date: bool,
) -> None:
    token = TOKENS[provider]
    await provider_sandbox.admin.aadd_fault(
        provider, fault, token=token, retry_after=retry_after, retry_after_as_date=as_date
    )
    device = await rows.device(application.row_id, token, platform=provider)
    message = await rows.message(application.row_id, device)
    published_at = datetime.now(UTC)

    await publisher.publish_delivery(pool, "message", [message])
    stored = await wait_for_attempt(pool, message)

    expected = timedelta(seconds=int(retry_after or DEFAULT_THROTTLE_DELAY_S))
    assert stored["status"] == 0
    assert stored["attempts"] == 0
    assert published_at + expected - timedelta(seconds=2) <= stored["next_attempt_at"]
    assert stored["next_attempt_at"] <= datetime.now(UTC) + expected + timedelta(seconds=2)


async def test_rejected_credentials_keep_rows_pending(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    running_worker: Worker,
    publisher: Publisher,
    provider_sandbox: SandboxProcess,
) -> None:
    await provider_sandbox.admin.areset(everything=True)
    device = await rows.device(application.row_id, TOKENS["apns"], platform="apns")
    message = await rows.message(application.row_id, device)

    await publisher.publish_delivery(pool, "message", [message])
    stored = await wait_for_attempt(pool, message)
    device_row = await rows.status_of("push_device", device)

    assert stored["status"] == 0
    assert stored["attempts"] == 0
    assert stored["failure_reason"] == "InvalidProviderToken"
    assert device_row["timestamp_token_invalidated"] is None


async def wait_for_attempt(pool: asyncpg.Pool, message: int) -> asyncpg.Record:
    """Wait until the worker has tried the row once and recorded a reason."""
    deadline = time.monotonic() + 20
    while True:
        stored = await pool.fetchrow("SELECT * FROM push_message WHERE id = $1", message)
        if stored["failure_reason"] is not None and stored["status"] != 2:
            return stored
        assert time.monotonic() < deadline, "the worker never tried the row"
        await asyncio.sleep(0.05)


async def test_invalid_delivery_message_dead_lettered(
    running_worker: Worker, publisher: Publisher
) -> None:
    channel = await publisher.get_channel()
    await channel.default_exchange.publish(
        aio_pika.Message(b'{"kind": "nonsense", "ids": "x"}'),
        routing_key=publisher.names.delivery,
    )

    dead_channel = await publisher.connection.channel()
    dead = await dead_channel.get_queue(publisher.names.dead)
    deadline = time.monotonic() + 10
    while (message := await dead.get(fail=False)) is None:
        assert time.monotonic() < deadline, "nothing reached the dead-letter queue"
        await asyncio.sleep(0.05)
    await message.ack()

    assert message.body == b'{"kind": "nonsense", "ids": "x"}'
    assert "invalid delivery message" in str(message.headers[REJECTION_REASON_HEADER])
