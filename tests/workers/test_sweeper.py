"""The sweeper re-publishes rows the queue lost, and only one sweeper is active."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from shared.queue import Publisher, QueueNames
from shared.settings import Settings
from tests.workers.conftest import Rows
from workers.sweeper import SWEEPER_LOCK_KEY, Sweeper


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    publisher = await Publisher.open(
        settings.amqp_url.get_secret_value(), QueueNames(settings.queue_prefix), 100
    )
    yield publisher
    await publisher.close()


async def drain(publisher: Publisher) -> list[dict[str, object]]:
    """Take every message waiting in the delivery queue."""
    channel = await publisher.connection.channel()
    queue = await channel.get_queue(publisher.names.delivery)
    bodies = []
    while (message := await queue.get(fail=False, timeout=2)) is not None:
        bodies.append(orjson.loads(message.body))
        await message.ack()
    await channel.close()
    return bodies


def published_ids(bodies: list[dict[str, object]], kind: str) -> list[int]:
    return sorted(i for body in bodies if body["kind"] == kind for i in body["ids"])  # type: ignore[attr-defined]


async def test_sweep_publishes_lost_rows(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    lost = await rows.message(app, device)
    queued = await rows.message(app, device, queued=True)
    sweeper = Sweeper(pool, publisher, interval_s=1, grace_s=60)

    async with pool.acquire() as connection:
        count = await sweeper.sweep(connection)
    bodies = await drain(publisher)
    lost_row = await rows.status_of("push_message", lost)

    assert count == 1
    assert published_ids(bodies, "message") == [lost]
    assert lost_row["timestamp_queued"] is not None
    assert queued not in published_ids(bodies, "message")


async def test_sweep_publishes_due_retries_and_expired_leases(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    retry = await rows.message(app, device, queued=True)
    expired = await rows.message(app, device, queued=True)
    not_due = await rows.message(app, device)
    await pool.execute("UPDATE push_message SET next_attempt_at = now() WHERE id = $1", retry)
    await pool.execute(
        "UPDATE push_message SET status = 2, lease_expires_at = now() - interval '1 second',"
        " timestamp_queued = now() - interval '1 minute' WHERE id = $1",
        expired,
    )
    await pool.execute(
        "UPDATE push_message SET next_attempt_at = now() + interval '1 hour' WHERE id = $1",
        not_due,
    )
    sweeper = Sweeper(pool, publisher, interval_s=1, grace_s=60)

    async with pool.acquire() as connection:
        await sweeper.sweep(connection)
        again = await sweeper.sweep(connection)
    bodies = await drain(publisher)

    assert published_ids(bodies, "message") == sorted([retry, expired])
    assert again == 0


async def test_sweep_covers_campaign_devices(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    campaign = await rows.campaign(app, ["user-1"])
    row_id = await pool.fetchval(
        "INSERT INTO push_campaign_device (campaign_id, platform, token) VALUES ($1, 'fcm', 't')"
        " RETURNING id",
        campaign,
    )
    sweeper = Sweeper(pool, publisher, interval_s=1, grace_s=60)

    async with pool.acquire() as connection:
        await sweeper.sweep(connection)
    bodies = await drain(publisher)

    assert published_ids(bodies, "campaign_device") == [row_id]


async def test_only_one_sweeper_active(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher, database_url: str
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    lost = await rows.message(app, device)
    holder = await asyncpg.connect(database_url)
    await holder.execute("SELECT pg_advisory_lock($1)", SWEEPER_LOCK_KEY)
    stop = asyncio.Event()
    sweeper = Sweeper(pool, publisher, interval_s=0.1, grace_s=60)

    task = asyncio.create_task(sweeper.run(stop))
    await asyncio.sleep(0.5)
    blocked = await rows.status_of("push_message", lost)
    await holder.close()
    await asyncio.sleep(0.5)
    stop.set()
    await task
    taken_over = await rows.status_of("push_message", lost)

    assert blocked["timestamp_queued"] is None
    assert taken_over["timestamp_queued"] is not None


async def test_failed_publish_leaves_row_unqueued(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    lost = await rows.message(app, device)
    sweeper = Sweeper(pool, publisher, interval_s=1, grace_s=60)
    await publisher.connection.close()

    async with pool.acquire() as connection:
        with pytest.raises(Exception, match="publish"):
            await sweeper.sweep(connection)
    stored = await rows.status_of("push_message", lost)

    assert stored["timestamp_queued"] is None
    assert stored["status"] == 0


async def test_sweep_completes_finished_campaign(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    finished = await rows.campaign(app, ["user-1"])
    not_started = await rows.campaign(app, ["user-2"])
    await pool.execute(
        "INSERT INTO push_campaign_device (campaign_id, platform, token, status)"
        " VALUES ($1, 'fcm', 't', 1)",
        finished,
    )
    sweeper = Sweeper(pool, publisher, interval_s=1, grace_s=60)

    async with pool.acquire() as connection:
        await sweeper.sweep(connection)
    states = dict(await pool.fetch("SELECT id, state FROM push_campaign"))

    assert states[finished] == "completed"
    assert states[not_started] == "sending"


async def test_stale_rows_wait_while_queue_has_backlog(
    rows: Rows, pool: asyncpg.Pool, publisher: Publisher
) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    stale = await rows.message(app, device, queued=True)
    await pool.execute(
        "UPDATE push_message SET next_attempt_at = now() - interval '20 minutes',"
        " timestamp_queued = now() - interval '10 minutes' WHERE id = $1",
        stale,
    )
    await publisher.publish(publisher.names.delivery, {"kind": "message", "ids": [999999]})
    sweeper = Sweeper(pool, publisher, interval_s=1, grace_s=60)

    async with pool.acquire() as connection:
        during_backlog = await sweeper.sweep(connection)
        await drain(publisher)
        after_backlog = await sweeper.sweep(connection)

    assert during_backlog == 0
    assert after_backlog == 1
