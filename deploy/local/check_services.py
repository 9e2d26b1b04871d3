"""Check that the local PostgreSQL and RabbitMQ accept the PUSH_* settings.

Run by `deploy/local/services check` with the project venv. Besides logging in, it declares
and deletes a quorum queue, because the queue topology uses quorum queues and they need the
feature flags that a new RabbitMQ node enables by default.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aio_pika
import asyncpg

CHECK_QUEUE_NAME = "push.local-stack-check"


async def check_database(url: str) -> str:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        version: str = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    return version


async def check_quorum_queue(url: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            CHECK_QUEUE_NAME, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.delete(if_unused=False, if_empty=False)


async def main() -> int:
    database_url = os.environ["PUSH_DATABASE_URL"]
    amqp_url = os.environ["PUSH_AMQP_URL"]

    version = await check_database(database_url)
    print(f"postgresql: login as the push role works, server version {version}")

    await check_quorum_queue(amqp_url)
    print("rabbitmq: login as the push user works, a quorum queue was declared and deleted")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
