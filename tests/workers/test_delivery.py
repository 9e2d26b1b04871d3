"""Batch delivery with fake provider clients at the network seam."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.db import FAILED, PENDING, SENT
from shared.secrets import SecretBox
from tests.workers.conftest import Rows
from workers.claim import RowKind
from workers.credentials import CredentialStore
from workers.delivery import Deliverer
from workers.fcm_quota import FcmQuota
from workers.providers.base import (
    ApplicationCredentials,
    CredentialsMissing,
    Outcome,
    PreparedPayload,
    ProviderClient,
    SendResult,
)
from workers.retry_policy import RetryPolicy

CHANNEL = "push_message_done"


class FakeClient(ProviderClient):
    """Replays a result per token and records every send."""

    def __init__(self, results: dict[str, SendResult]) -> None:
        self.results = results
        self.sent: list[tuple[str, PreparedPayload, str]] = []

    async def send(
        self, token: str, payload: PreparedPayload, *, apns_id: str, environment: str | None
    ) -> SendResult:
        self.sent.append((token, payload, apns_id))
        return self.results.get(token, SendResult(Outcome.SENT, provider_message_id=f"id-{token}"))

    async def aclose(self) -> None:
        pass


@dataclass
class FakeRegistry:
    client: FakeClient
    missing: set[str] = field(default_factory=set)

    def client_for(self, credentials: ApplicationCredentials, platform: str) -> ProviderClient:
        if platform in self.missing:
            raise CredentialsMissing(f"application {credentials.app_id} has no {platform} key")
        return self.client


@pytest.fixture
def client() -> FakeClient:
    return FakeClient({})


@pytest.fixture
def registry(client: FakeClient) -> FakeRegistry:
    return FakeRegistry(client)


@pytest.fixture
def deliverer(pool: asyncpg.Pool, registry: FakeRegistry, secret_box: SecretBox) -> Deliverer:
    return Deliverer(
        pool,
        registry,  # type: ignore[arg-type]
        CredentialStore(pool, secret_box),
        FcmQuota(pool, messages_per_minute=600_000),
        RetryPolicy(),
        lease_s=30,
        concurrency=50,
        notify_channel=CHANNEL,
        rng=random.Random(7),
    )


async def test_batch_sent_and_recorded(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    devices = [await rows.device(app, f"token-{i}", user_id=f"user-{i}") for i in range(30)]
    ids = [await rows.message(app, device) for device in devices]

    report = await deliverer.deliver(RowKind.MESSAGE, ids)
    stored = await pool.fetch("SELECT status, provider_message_id FROM push_message ORDER BY id")

    assert report.claimed == 30
    assert report.outcomes == {"sent": 30}
    assert {row["status"] for row in stored} == {SENT}
    assert stored[0]["provider_message_id"] == "id-token-0"
    assert len(client.sent) == 30


async def test_payload_built_once_per_body(
    rows: Rows, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    devices = [await rows.device(app, f"token-{i}", user_id=f"user-{i}") for i in range(5)]
    ids = [await rows.message(app, device) for device in devices]

    await deliverer.deliver(RowKind.MESSAGE, ids)

    assert len({id(payload) for _token, payload, _apns_id in client.sent}) == 1


async def test_token_invalid_marks_device(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "gone-token")
    message = await rows.message(app, device)
    client.results["gone-token"] = SendResult(Outcome.TOKEN_INVALID, reason="UNREGISTERED")

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)
    device_row = await rows.status_of("push_device", device)

    assert stored["status"] == FAILED
    assert stored["failure_reason"] == "UNREGISTERED"
    assert device_row["timestamp_token_invalidated"] is not None


async def test_apns_410_older_than_registration_ignored(
    rows: Rows, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    token = "a" * 64
    device = await rows.device(app, token, platform="apns")
    message = await rows.message(app, device)
    client.results[token] = SendResult(
        Outcome.TOKEN_INVALID,
        reason="Unregistered",
        token_invalid_since=datetime.now(UTC) - timedelta(days=3),
    )

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)
    device_row = await rows.status_of("push_device", device)

    assert stored["status"] == FAILED
    assert device_row["timestamp_token_invalidated"] is None


async def test_removed_device_fails_without_send(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    message = await rows.message(app, device)
    await pool.execute("DELETE FROM push_device")

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == FAILED
    assert stored["failure_reason"] == "device_removed"
    assert client.sent == []


async def test_invalidated_token_not_sent(
    rows: Rows, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1", invalidated=True)
    message = await rows.message(app, device)

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == FAILED
    assert stored["failure_reason"] == "token_invalidated"
    assert client.sent == []


async def test_expired_message_not_sent(
    rows: Rows, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    message = await rows.message(app, device, {"body": "late", "validUntil": past})

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == FAILED
    assert stored["failure_reason"] == "expired"
    assert client.sent == []


async def test_transient_goes_back_to_pending(
    rows: Rows, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    message = await rows.message(app, device)
    client.results["token-1"] = SendResult(Outcome.TRANSIENT, reason="UNAVAILABLE")

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == PENDING
    assert stored["attempts"] == 1
    assert stored["next_attempt_at"] > datetime.now(UTC)


async def test_missing_credentials_retry_later(
    rows: Rows, deliverer: Deliverer, registry: FakeRegistry, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1", platform="hms")
    message = await rows.message(app, device)
    registry.missing.add("hms")

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == PENDING
    assert stored["attempts"] == 0
    assert stored["failure_reason"].startswith("credentials")
    assert client.sent == []


async def test_guard_protects_tokens_of_misconfigured_app(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    tokens = [f"{i:064x}" for i in range(25)]
    devices = [
        await rows.device(app, token, platform="apns", user_id=f"user-{i}")
        for i, token in enumerate(tokens)
    ]
    ids = [await rows.message(app, device) for device in devices]
    for token in tokens[:15]:
        client.results[token] = SendResult(Outcome.TOKEN_INVALID, reason="BadDeviceToken")

    report = await deliverer.deliver(RowKind.MESSAGE, ids)
    invalidated = await pool.fetchval(
        "SELECT count(*) FROM push_device WHERE timestamp_token_invalidated IS NOT NULL"
    )
    pending = await pool.fetchval("SELECT count(*) FROM push_message WHERE status = 0")

    assert report.outcomes["credentials"] == 15
    assert invalidated == 0
    assert pending == 15


async def test_fcm_quota_delays_excess(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app(android_project_id="project-q")
    deliverer.quota = FcmQuota(pool, messages_per_minute=10)
    devices = [await rows.device(app, f"token-{i}", user_id=f"user-{i}") for i in range(15)]
    ids = [await rows.message(app, device) for device in devices]

    report = await deliverer.deliver(RowKind.MESSAGE, ids)
    throttled = await pool.fetch("SELECT * FROM push_message WHERE status = 0")

    assert report.outcomes == {"sent": 10, "throttled": 5}
    assert len(client.sent) == 10
    assert {row["failure_reason"] for row in throttled} == {"fcm_quota"}
    assert all(row["attempts"] == 0 for row in throttled)


async def test_finished_messages_notified(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer, database_url: str
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    ids = [await rows.message(app, device) for _ in range(3)]
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda *args: received.put_nowait(args[3]))

    await deliverer.deliver(RowKind.MESSAGE, ids)
    payload = await asyncio.wait_for(received.get(), 5)
    await listener.close()

    assert sorted(int(value) for value in payload.split(",")) == ids


async def test_campaign_completes_after_last_row(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    campaign = await rows.campaign(app, ["user-1"])
    row_id = await pool.fetchval(
        "INSERT INTO push_campaign_device (campaign_id, device_registration_id, platform, token)"
        " VALUES ($1, $2, 'fcm', 'token-1') RETURNING id",
        campaign,
        device,
    )

    await deliverer.deliver(RowKind.CAMPAIGN_DEVICE, [row_id])
    stored = await rows.status_of("push_campaign", campaign)

    assert stored["state"] == "completed"
    assert stored["sent"] is True
    assert stored["timestamp_completed"] is not None


async def test_cancelled_campaign_rows_fail(
    rows: Rows, pool: asyncpg.Pool, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    campaign = await rows.campaign(app, ["user-1"], state="cancelled")
    row_id = await pool.fetchval(
        "INSERT INTO push_campaign_device (campaign_id, device_registration_id, platform, token)"
        " VALUES ($1, $2, 'fcm', 'token-1') RETURNING id",
        campaign,
        device,
    )

    await deliverer.deliver(RowKind.CAMPAIGN_DEVICE, [row_id])
    stored = await rows.status_of("push_campaign_device", row_id)

    assert stored["status"] == FAILED
    assert stored["failure_reason"] == "cancelled"
    assert client.sent == []


async def test_oversized_message_rejected(
    rows: Rows, deliverer: Deliverer, client: FakeClient
) -> None:
    app = await rows.app()
    device = await rows.device(app, "a" * 64, platform="apns")
    message = await rows.message(app, device, {"body": "x", "extras": {"blob": "y" * 5000}})

    await deliverer.deliver(RowKind.MESSAGE, [message])
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == FAILED
    assert stored["failure_reason"] == "payload_too_large"
    assert client.sent == []
