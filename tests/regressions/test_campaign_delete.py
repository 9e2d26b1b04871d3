"""Deleting a sending campaign while a worker has claimed its rows."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import asyncpg

from shared import campaigns
from shared.secrets import SecretBox
from tests.workers.conftest import Rows
from workers.claim import RowKind
from workers.credentials import CredentialStore
from workers.delivery import CAMPAIGN_STATE_TTL_S, Deliverer
from workers.fcm_quota import FcmQuota
from workers.providers.base import (
    ApplicationCredentials,
    Outcome,
    PreparedPayload,
    ProviderClient,
    SendResult,
)
from workers.retry_policy import RetryPolicy

DEVICES = 20


class GatedClient(ProviderClient):
    """Records every send; the first send waits until the test opens the gate."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.first_send_started = asyncio.Event()
        self.gate = asyncio.Event()

    async def send(
        self, token: str, payload: PreparedPayload, *, apns_id: str, environment: str | None
    ) -> SendResult:
        self.sent.append(token)
        if len(self.sent) == 1:
            self.first_send_started.set()
            await self.gate.wait()
        return SendResult(Outcome.SENT, provider_message_id=f"id-{token}")

    async def aclose(self) -> None:
        pass


class GatedRegistry:
    def __init__(self, client: GatedClient) -> None:
        self.client = client

    def client_for(self, credentials: ApplicationCredentials, platform: str) -> ProviderClient:
        return self.client


async def test_deleted_campaign_stops_claimed_rows(
    rows: Rows, pool: asyncpg.Pool, secret_box: SecretBox
) -> None:
    app = await rows.app()
    users = [f"user-{index}" for index in range(DEVICES)]
    devices = [
        await rows.device(app, f"token-{index}", user_id=users[index]) for index in range(DEVICES)
    ]
    campaign = await rows.campaign(app, users)
    row_ids = [
        await pool.fetchval(
            "INSERT INTO push_campaign_device (campaign_id, device_registration_id, platform,"
            " token) VALUES ($1, $2, 'fcm', $3) RETURNING id",
            campaign,
            device,
            f"token-{index}",
        )
        for index, device in enumerate(devices)
    ]
    client = GatedClient()
    # One send at a time, so the batch is still in progress when the campaign is deleted.
    deliverer = Deliverer(
        pool,
        GatedRegistry(client),  # type: ignore[arg-type]
        CredentialStore(pool, secret_box),
        FcmQuota(pool, messages_per_minute=600_000),
        RetryPolicy(),
        lease_s=30,
        concurrency=1,
        notify_channel="push_message_done",
        rng=random.Random(7),
    )

    delivery = asyncio.create_task(deliverer.deliver(RowKind.CAMPAIGN_DEVICE, row_ids))
    await asyncio.wait_for(client.first_send_started.wait(), 10)
    deleted = await campaigns.delete_campaign(SimpleNamespace(pool=pool), campaign)  # type: ignore[arg-type]
    # The worker re-reads a campaign's state at most once per CAMPAIGN_STATE_TTL_S.
    await asyncio.sleep(CAMPAIGN_STATE_TTL_S + 0.2)
    client.gate.set()
    await asyncio.wait_for(delivery, 30)

    assert deleted is True
    assert len(client.sent) == 1
