"""Benchmark of campaign expansion: users into push_campaign_device rows, published.

Builds a database of its own on the local PostgreSQL (`deploy/local/services start`) and
fills it with COPY (devices at 1.5 per user, the demo's mix). Then it times
`CampaignExpander.expand` for each size: the chunked INSERT … SELECT and the publishing of
the delivery batches to RabbitMQ under a queue prefix of its own. Ends with one JSON line
of figures.

    python -m tests.benchmarks.expansion            # 100,000 and 1,000,000 devices
    python -m tests.benchmarks.expansion --smoke    # 10,000 devices, to check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

import aio_pika
import asyncpg
import orjson

from shared.db import create_pool
from shared.migrations import migrate
from shared.queue import Publisher, QueueNames
from tests.conftest import read_env_file, with_database
from workers.campaign_expansion import CampaignExpander

DEVICES_PER_USER = 1.5


def setting(name: str) -> str:
    value = os.environ.get(name) or read_env_file().get(name)
    if not value:
        sys.exit(f"{name} is not set: run deploy/local/services start first")
    return value


def platform_of(index: int) -> str:
    """Return the platform of a device: 60% APNs, 35% FCM, 5% HMS, as in the demo."""
    share = index % 20
    if share < 12:
        return "apns"
    if share < 19:
        return "fcm"
    return "hms"


async def fill(pool: asyncpg.Pool, app: int, devices: int) -> int:
    """Insert the devices and a campaign with all their users; return the campaign id."""
    users = int(devices / DEVICES_PER_USER)
    records = (
        (
            app,
            f"{index % users:08d}",
            platform_of(index),
            f"{index:064x}",
            f"activation-{index}",
            True,
        )
        for index in range(devices)
    )
    async with pool.acquire() as connection:
        await connection.copy_records_to_table(
            "push_device",
            records=records,
            columns=["app_id", "user_id", "platform", "push_token", "activation_id", "is_active"],
        )
        campaign: int = await connection.fetchval(
            "INSERT INTO push_campaign (app_id, message, state) VALUES ($1, $2, 'sending')"
            " RETURNING id",
            app,
            {"title": "Sale", "body": "Everything must go"},
        )
        await connection.copy_records_to_table(
            "push_campaign_user",
            records=((campaign, f"{user:08d}") for user in range(users)),
            columns=["campaign_id", "user_id"],
        )
        await connection.execute("ANALYZE")
    return campaign


async def measure(pool: asyncpg.Pool, publisher: Publisher, devices: int) -> dict[str, Any]:
    app = await pool.fetchval(
        "INSERT INTO push_app_credentials (app_id) VALUES ($1) RETURNING id", f"bench-{devices}"
    )
    started = time.perf_counter()
    campaign = await fill(pool, app, devices)
    fill_seconds = time.perf_counter() - started

    started = time.perf_counter()
    created = await CampaignExpander(pool, publisher).expand(campaign)
    seconds = time.perf_counter() - started
    assert created == devices, f"expected {devices} rows, expansion created {created}"
    return {
        "devices": devices,
        "seconds": round(seconds, 2),
        "rows_per_second": round(devices / seconds),
        "fill_seconds": round(fill_seconds, 2),
    }


async def run(sizes: list[int]) -> list[dict[str, Any]]:
    base_url = setting("PUSH_DATABASE_URL")
    name = f"push_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    names = QueueNames(f"bench.{uuid.uuid4().hex[:8]}")
    publisher = await Publisher.open(setting("PUSH_AMQP_URL"), names, 500)
    pool = await create_pool(with_database(base_url, name), max_size=4)
    try:
        async with pool.acquire() as connection:
            await migrate(connection)
        return [await measure(pool, publisher, size) for size in sizes]
    finally:
        await pool.close()
        channel = await publisher.connection.channel()
        for queue in (names.delivery, names.campaign, names.ingest, names.dead):
            try:
                await channel.queue_delete(queue)
            except aio_pika.exceptions.ChannelClosed:
                channel = await publisher.connection.channel()
        await publisher.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.expansion")
    parser.add_argument("--smoke", action="store_true", help="one run of 10,000 devices")
    arguments = parser.parse_args()
    sizes = [10_000] if arguments.smoke else [100_000, 1_000_000]

    results = asyncio.run(run(sizes))
    for result in results:
        print(
            f"{result['devices']} devices expanded in {result['seconds']} s"
            f" ({result['rows_per_second']} rows/s)",
            flush=True,
        )
    figures = {f"expansion_{r['devices']}_seconds": r["seconds"] for r in results}
    print(orjson.dumps({"benchmark": "expansion", **figures, "runs": results}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
