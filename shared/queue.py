"""RabbitMQ topology and publishing, declared in one place.

Queues (durable quorum queues, so they survive a broker restart and replicate in a
cluster), named `<prefix>.<name>` with the PUSH_QUEUE_PREFIX setting:
- `delivery`: batches of row ids, body `{"kind": "message" | "campaign_device", "ids": [...]}`.
- `campaign`: campaign expansion jobs, body `{"campaignId": N}`.
- `ingest`: send requests published by backends.
- `dead`: messages that cannot be parsed or validated, reason in the `x-rejection-reason`
  header; they are never retried in a loop.

A queue message only wakes a worker: the database row is the truth, and the sweeper
re-publishes rows whose message was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared.exceptions import PublishFailed
from shared.settings import mask_url

logger = logging.getLogger(__name__)

# Quorum queues redeliver a message that keeps failing at most this many times, then
# dead-letter it. Set explicitly because RabbitMQ 4 changed the default to 20 and 3.x
# had no limit.
DELIVERY_LIMIT = 20

REJECTION_REASON_HEADER = "x-rejection-reason"


@dataclass(frozen=True, slots=True)
class QueueNames:
    """Queue and exchange names under one prefix."""

    prefix: str

    @property
    def delivery(self) -> str:
        return f"{self.prefix}.delivery"

    @property
    def campaign(self) -> str:
        return f"{self.prefix}.campaign"

    @property
    def ingest(self) -> str:
        return f"{self.prefix}.ingest"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def ingest_exchange(self) -> str:
        return f"{self.prefix}.ingest"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"


def quorum_arguments(names: QueueNames) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": names.dead_exchange,
    }


async def declare_topology(channel: AbstractChannel, names: QueueNames) -> None:
    """Declare every exchange and queue; declaring again with the same arguments is a no-op."""
    dead_exchange = await channel.declare_exchange(
        names.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(
        names.dead, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dead_exchange)

    for name in (names.delivery, names.campaign):
        await channel.declare_queue(name, durable=True, arguments=quorum_arguments(names))

    ingest_exchange = await channel.declare_exchange(
        names.ingest_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    ingest = await channel.declare_queue(
        names.ingest, durable=True, arguments=quorum_arguments(names)
    )
    await ingest.bind(ingest_exchange, routing_key=names.ingest)


async def connect(amqp_url: str) -> AbstractRobustConnection:
    """Connect with automatic reconnection; the first attempt fails if the broker is down."""
    logger.info("connecting to RabbitMQ at %s", mask_url(amqp_url))
    return await aio_pika.connect_robust(amqp_url, fail_fast=True)


MARK_QUEUED = {
    "message": "UPDATE push_message SET timestamp_queued = now() WHERE id = ANY($1::bigint[])",
    "campaign_device": (
        "UPDATE push_campaign_device SET timestamp_queued = now() WHERE id = ANY($1::bigint[])"
    ),
}


MARK_UNQUEUED = {
    "message": "UPDATE push_message SET timestamp_queued = NULL WHERE id = ANY($1::bigint[])",
    "campaign_device": (
        "UPDATE push_campaign_device SET timestamp_queued = NULL WHERE id = ANY($1::bigint[])"
    ),
}


class Publisher:
    """Publishes delivery batches and campaign jobs with publisher confirms."""

    def __init__(
        self, connection: AbstractRobustConnection, names: QueueNames, batch_size: int
    ) -> None:
        self.connection = connection
        self.names = names
        self.batch_size = batch_size
        self.channel: AbstractChannel | None = None

    @classmethod
    async def open(cls, amqp_url: str, names: QueueNames, batch_size: int) -> Publisher:
        connection = await connect(amqp_url)
        publisher = cls(connection, names, batch_size)
        channel = await publisher.get_channel()
        await declare_topology(channel, names)
        return publisher

    async def get_channel(self) -> AbstractChannel:
        if self.channel is None or self.channel.is_closed:
            # on_return_raises turns a mandatory message that no queue took into an error
            # instead of a silent success.
            self.channel = await self.connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        return self.channel

    async def publish(self, queue: str, body: dict[str, Any], **properties: Any) -> None:
        """Publish one persistent message and wait for the broker's confirm."""
        message = aio_pika.Message(
            orjson.dumps(body),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            **properties,
        )
        try:
            channel = await self.get_channel()
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            raise PublishFailed(f"publish to {queue} failed: {error!r}") from error

    async def publish_delivery(
        self,
        pool: asyncpg.Pool | asyncpg.Connection,
        kind: str,
        ids: Sequence[int],
        *,
        mark_queued: bool = True,
    ) -> None:
        """Publish row ids in batches, marking each batch's rows queued once confirmed.

        `mark_queued=False` is for rows already marked by the statement that selected them.
        """
        for start in range(0, len(ids), self.batch_size):
            chunk = list(ids[start : start + self.batch_size])
            await self.publish(self.names.delivery, {"kind": kind, "ids": chunk})
            if mark_queued:
                await pool.execute(MARK_QUEUED[kind], chunk)

    async def publish_campaign_job(self, campaign_id: int) -> None:
        await self.publish(self.names.campaign, {"campaignId": campaign_id})

    async def delivery_queue_empty(self) -> bool:
        """Return whether the delivery queue has no ready messages (a passive declare)."""
        try:
            channel = await self.connection.channel()
            try:
                queue = await channel.declare_queue(self.names.delivery, passive=True)
                return (queue.declaration_result.message_count or 0) == 0
            finally:
                await channel.close()
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as error:
            raise PublishFailed(
                f"reading the depth of {self.names.delivery} before publishing failed: {error!r}"
            ) from error

    async def is_healthy(self) -> bool:
        return not self.connection.is_closed

    async def close(self) -> None:
        await self.connection.close()
