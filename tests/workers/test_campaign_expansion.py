"""Campaign expansion into campaign devices."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from shared.queue import Publisher, QueueNames
from shared.settings import Settings
from tests.workers.conftest import Rows
from workers.campaign_expansion import CampaignExpander


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    publisher = await Publisher.open(
        settings.amqp_url.get_secret_value(), QueueNames(settings.queue_prefix), 3
    )
    yield publisher
    await publisher.close()


async def queued_ids(publisher: Publisher) -> list[int]:
    channel = await publisher.connection.channel()
    queue = await channel.get_queue(publisher.names.delivery)
    ids: list[int] = []
    while (message := await queue.get(fail=False, timeout=2)) is not None:
        body = orjson.loads(message.body)
        assert body["kind"] == "campaign_device"
        assert len(body["ids"]) <= 3
        ids.extend(body["ids"])
        await message.ack()
    await channel.close()
    return sorted(ids)


async def test_expansion_creates_one_row_per_device(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    other_app = await rows.app("other")
    await rows.device(app, "a-1", user_id="alice", activation_id="act-1")
    await rows.device(app, "a-2", user_id="alice", activation_id="act-2", platform="hms")
    await rows.device(app, "b-1", user_id="bob", invalidated=True)
    await rows.device(app, "c-1", user_id="carol", is_active=False)
    await rows.device(other_app, "a-9", user_id="alice")
    campaign = await rows.campaign(app, ["alice", "bob", "carol", "nobody"])

    created = await CampaignExpander(pool, publisher).expand(campaign)
    stored = await pool.fetch(
        "SELECT platform, token, status, timestamp_queued FROM push_campaign_device"
        " WHERE campaign_id = $1 ORDER BY token",
        campaign,
    )

    assert created == 3
    assert [(row["platform"], row["token"]) for row in stored] == [
        ("fcm", "a-1"),
        ("hms", "a-2"),
        ("fcm", "c-1"),
    ]
    assert all(row["timestamp_queued"] is not None for row in stored)
    assert len(await queued_ids(publisher)) == 3


async def test_personal_campaign_skips_inactive(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    await rows.device(app, "active", user_id="alice")
    await rows.device(app, "blocked", user_id="bob", is_active=False)
    campaign = await rows.campaign(app, ["alice", "bob"], personal=True)

    await CampaignExpander(pool, publisher).expand(campaign)
    tokens = await pool.fetch("SELECT token FROM push_campaign_device")

    assert [row["token"] for row in tokens] == ["active"]


async def test_repeated_expansion_adds_nothing(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    for i in range(10):
        await rows.device(app, f"token-{i}", user_id=f"user-{i}")
    campaign = await rows.campaign(app, [f"user-{i}" for i in range(10)])
    expander = CampaignExpander(pool, publisher)

    first = await expander.expand(campaign)
    await pool.execute("UPDATE push_campaign SET state = 'sending'")
    second = await expander.expand(campaign)
    count = await pool.fetchval("SELECT count(*) FROM push_campaign_device")

    assert first == 10
    assert second == 0
    assert count == 10
    assert len(await queued_ids(publisher)) == 10


async def test_token_shared_by_users_sent_once(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    await rows.device(app, "shared", user_id="alice", activation_id="act-1")
    await rows.device(app, "shared", user_id="bob", activation_id="act-2")
    campaign = await rows.campaign(app, ["alice", "bob"])

    created = await CampaignExpander(pool, publisher).expand(campaign)

    assert created == 1


async def test_cancelled_campaign_not_expanded(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    await rows.device(app, "token", user_id="alice")
    campaign = await rows.campaign(app, ["alice"], state="cancelled")

    created = await CampaignExpander(pool, publisher).expand(campaign)

    assert created == 0
    assert await pool.fetchval("SELECT count(*) FROM push_campaign_device") == 0


async def test_campaign_without_devices_completes(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    campaign = await rows.campaign(app, ["nobody"])

    await CampaignExpander(pool, publisher).expand(campaign)
    stored = await rows.status_of("push_campaign", campaign)

    assert stored["state"] == "completed"
    assert stored["sent"] is True
