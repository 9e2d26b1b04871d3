"""The resources of the request logic in one process: pool, publisher, settings, clients.

The REST API and the AMQP ingest consumer open one `ServiceContext` at start-up with
`open_context` and pass it to the functions of `shared.devices`, `shared.messages`,
`shared.campaigns` and `shared.applications`, which do not depend on HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from shared.db import create_pool
from shared.delivery_publisher import DeliveryPublisher
from shared.message_waiter import MessageWaiter
from shared.message_writer import MessageWriter
from shared.powerauth import PowerAuthClient
from shared.queue import Publisher, QueueNames
from shared.secrets import SecretBox
from shared.settings import Settings


@dataclass(slots=True)
class ServiceContext:
    """The shared resources of one API or ingest process."""

    settings: Settings
    pool: asyncpg.Pool
    publisher: DeliveryPublisher
    secret_box: SecretBox
    powerauth: PowerAuthClient | None
    waiter: MessageWaiter
    writer: MessageWriter


async def keep_session(_connection: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query when a connection returns to the pool.

    The request logic leaves no session state on pooled connections (no SET, LISTEN or advisory
    locks; its temporary table is dropped on commit), so the default reset would cost one
    round trip per request for nothing. asyncpg still rolls back an open transaction.
    """


@contextlib.asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[ServiceContext]:
    """Open the pool, the broker connection, the LISTEN connection and the PowerAuth client."""
    database_url = settings.database_url.get_secret_value()
    pool = await create_pool(database_url, max_size=settings.database_pool_size, reset=keep_session)
    publisher: DeliveryPublisher | None = None
    powerauth = (
        PowerAuthClient(
            settings.powerauth_url,
            settings.powerauth_timeout_s,
            settings.powerauth_client_token,
            settings.powerauth_client_secret.get_secret_value(),
        )
        if settings.powerauth_url
        else None
    )
    waiter = MessageWaiter(database_url, pool, settings.send_sync_poll_s)
    writer = MessageWriter(pool)
    try:
        publisher = DeliveryPublisher(
            await Publisher.open(
                settings.amqp_url.get_secret_value(),
                QueueNames(settings.queue_prefix),
                settings.delivery_batch_size,
            ),
            pool,
        )
        await waiter.start()
        yield ServiceContext(
            settings=settings,
            pool=pool,
            publisher=publisher,
            secret_box=SecretBox.from_settings(settings),
            powerauth=powerauth,
            waiter=waiter,
            writer=writer,
        )
    finally:
        await writer.close()
        await waiter.close()
        if powerauth is not None:
            await powerauth.close()
        if publisher is not None:
            await publisher.close()
        await pool.close()
