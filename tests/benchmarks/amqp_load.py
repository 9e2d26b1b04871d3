"""AMQP ingest throughput, measured beside HTTP ingest by `python -m tests.benchmarks.ingest`.

A `push-server ingest` process consumes the benchmark's ingest queue. The benchmark publishes
send requests to the ingest exchange (publisher confirms, a window of requests in flight)
and times until every request's row is in push_message: single sends first, then batches.
The requests carry no reply_to, as a fire-and-forget backend would send them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from shared.queue import QueueNames
from tests.benchmarks.common import (
    ResourceSampler,
    ServerProcess,
    Services,
    fixed_group,
    postgres_groups,
    rabbitmq_group,
)

# Publishes awaiting their broker confirm at once.
PUBLISH_WINDOW = 256
ROWS_TIMEOUT_S = 300.0


async def publish_all(
    exchange: aio_pika.abc.AbstractExchange,
    routing_key: str,
    request_type: str,
    body: bytes,
    count: int,
) -> None:
    for start in range(0, count, PUBLISH_WINDOW):
        window = min(PUBLISH_WINDOW, count - start)
        await asyncio.gather(
            *(
                exchange.publish(aio_pika.Message(body, type=request_type), routing_key=routing_key)
                for _ in range(window)
            )
        )


async def wait_for_rows(connection: asyncpg.Connection, expected: int) -> None:
    deadline = time.monotonic() + ROWS_TIMEOUT_S
    while await connection.fetchval("SELECT count(*) FROM push_message") < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {expected} rows after {ROWS_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)


async def run_load(
    services: Services,
    channel: aio_pika.abc.AbstractChannel,
    connection: asyncpg.Connection,
    sampler_groups: dict[str, Any],
    load: tuple[str, str, bytes, int, int],
) -> dict[str, Any]:
    """Publish one kind of request and time it until its rows are written."""
    name, request_type, body, requests, messages_per_request = load
    names = QueueNames(services.prefix)
    exchange = await channel.get_exchange(names.ingest_exchange)
    rows_before = await connection.fetchval("SELECT count(*) FROM push_message")
    messages = requests * messages_per_request

    sampler = ResourceSampler(sampler_groups)
    sampler.start()
    started = time.perf_counter()
    await publish_all(exchange, names.ingest, request_type, body, requests)
    published = time.perf_counter() - started
    await wait_for_rows(connection, rows_before + messages)
    seconds = time.perf_counter() - started
    sampler.stop()

    cpu = sampler.summary(messages)
    figures: dict[str, Any] = {
        "requests": requests,
        "messages": messages,
        "seconds": round(seconds, 2),
        "publish_seconds": round(published, 2),
        "requests_per_second": round(requests / seconds, 1),
        "messages_per_second": round(messages / seconds),
        **cpu,
    }
    print(f"{name}: {figures}", flush=True)
    return figures


async def measure_amqp(
    services: Services,
    environment: dict[str, str],
    folder: Path,
    single_body: bytes,
    batch_body: bytes,
    batch_size: int,
    smoke: bool,
) -> dict[str, Any]:
    """Run `push-server ingest` and measure single and batch requests over AMQP."""
    ingest = ServerProcess("ingest", ["ingest"], environment, folder / "ingest.log")
    ingest.start()
    try:
        await ingest.wait_for_log("AMQP ingest consuming")
        groups = {
            "ingest": fixed_group([ingest.pid]),
            **postgres_groups(services.database_url, services.database_name),
            "rabbitmq": rabbitmq_group(services.amqp_url),
        }
        loads = [
            ("amqp_single", "push.message.send", single_body, 500 if smoke else 20_000, 1),
            ("amqp_batch", "push.message.batch.send", batch_body, 10 if smoke else 200, batch_size),
        ]
        broker = await aio_pika.connect(services.amqp_url)
        database = await asyncpg.connect(services.database_url)
        try:
            channel = await broker.channel(publisher_confirms=True)
            return {
                load[0]: await run_load(services, channel, database, groups, load) for load in loads
            }
        finally:
            await database.close()
            await broker.close()
    finally:
        ingest.stop()
