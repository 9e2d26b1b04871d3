"""`push-server worker`: consume delivery batches and campaign jobs, run the sweeper.

A worker acks a delivery message only after the batch's outcomes are recorded, and keeps
at most PUSH_WORKER_PREFETCH messages of PUSH_DELIVERY_BATCH_SIZE ids each, which bounds
the rows in flight (and the duplicates a killed worker can cause) per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from prometheus_client import start_http_server

from shared.context import open_context
from shared.db import create_pool
from shared.exceptions import PublishFailed, PushServerError
from shared.logs import configure_logging
from shared.message_waiter import MESSAGE_DONE_CHANNEL
from shared.queue import REJECTION_REASON_HEADER, Publisher, QueueNames, connect, declare_topology
from shared.secrets import SecretBox
from shared.settings import Settings, load_settings
from workers.campaign_expansion import CampaignExpander
from workers.claim import RowKind
from workers.credentials import CredentialStore
from workers.delivery import Deliverer
from workers.fcm_quota import FcmQuota
from workers.ingest import IngestConsumer
from workers.providers.base import ProviderRegistry
from workers.retry_policy import RetryPolicy
from workers.sweeper import Sweeper

logger = logging.getLogger(__name__)

# Seconds a failing batch waits before it goes back to the queue, so a database outage
# does not turn into a hot redelivery loop.
FAILED_BATCH_DELAY_S = 1.0


class InvalidQueueMessage(PushServerError):
    """A queue message body is not what its queue carries."""


@dataclass(slots=True)
class WorkerStats:
    """Counts for the shutdown summary line."""

    batches: int = 0
    rows: int = 0
    failed_batches: int = 0
    campaigns: int = 0
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)


def parse_delivery(body: bytes) -> tuple[RowKind, list[int]]:
    """Parse `{"kind": ..., "ids": [...]}`, raising InvalidQueueMessage when it is not that."""
    try:
        data = orjson.loads(body)
        kind = RowKind(data["kind"])
        ids = [int(value) for value in data["ids"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InvalidQueueMessage(f"invalid delivery message: {error}") from None
    return kind, ids


def parse_campaign_job(body: bytes) -> int:
    try:
        return int(orjson.loads(body)["campaignId"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InvalidQueueMessage(f"invalid campaign job: {error}") from None


class Worker:
    """One worker process: its consumers, its sweeper and their shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ingest: IngestConsumer | None = None
        self.batches: set[asyncio.Task[Any]] = set()
        self.ingest_context: contextlib.AsyncExitStack | None = None
        self.names = QueueNames(settings.queue_prefix)
        self.stop = asyncio.Event()
        self.stats = WorkerStats()
        self.consumers: list[tuple[AbstractQueue, str]] = []

    async def start(self) -> None:
        settings = self.settings
        self.pool = await create_pool(
            settings.database_url.get_secret_value(), max_size=settings.database_pool_size
        )
        self.connection: AbstractRobustConnection = await connect(
            settings.amqp_url.get_secret_value()
        )
        self.publisher = Publisher(self.connection, self.names, settings.delivery_batch_size)
        await declare_topology(await self.publisher.get_channel(), self.names)

        self.registry = ProviderRegistry.from_settings(settings)
        policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base_delay_s=settings.retry_base_s,
            max_delay_s=settings.retry_max_s,
            credentials_delay_s=settings.credentials_retry_s,
            credentials_max_wait_s=settings.credentials_max_wait_s,
        )
        self.deliverer = Deliverer(
            self.pool,
            self.registry,
            CredentialStore(self.pool, SecretBox.from_settings(settings)),
            FcmQuota(self.pool, settings.fcm_messages_per_minute),
            policy,
            lease_s=settings.lease_s,
            concurrency=settings.worker_concurrency,
            notify_channel=MESSAGE_DONE_CHANNEL,
        )
        self.expander = CampaignExpander(self.pool, self.publisher)
        self.sweeper = Sweeper(
            self.pool,
            self.publisher,
            interval_s=settings.sweep_interval_s,
            grace_s=settings.sweep_grace_s,
        )
        await self.consume(self.names.delivery, settings.worker_prefetch, self.on_delivery)
        await self.consume(self.names.campaign, 1, self.on_campaign_job)
        if settings.worker_ingest_enabled:
            await self.start_ingest()

    async def start_ingest(self) -> None:
        """Run the AMQP ingest consumer in this process, with its own request context."""
        self.ingest_context = contextlib.AsyncExitStack()
        context = await self.ingest_context.enter_async_context(open_context(self.settings))
        self.ingest = IngestConsumer(context, self.connection, self.settings.ingest_prefetch)
        await self.ingest.start()

    async def consume(
        self,
        queue_name: str,
        prefetch: int,
        handler: Callable[[AbstractIncomingMessage], Awaitable[None]],
    ) -> None:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=True)
        tag = await queue.consume(self.track(handler))
        self.consumers.append((queue, tag))

    def track(
        self, handler: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        """Wrap a handler so shutdown can wait for the messages in progress."""

        async def tracked(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.stats.in_flight.add(task)
            try:
                await handler(message)
            finally:
                self.stats.in_flight.discard(task)

        return tracked

    async def on_delivery(self, message: AbstractIncomingMessage) -> None:
        try:
            kind, ids = parse_delivery(message.body)
        except InvalidQueueMessage as error:
            await self.dead_letter(message, str(error))
            return

        # The batch runs in a task of its own, shielded: when the broker connection drops,
        # aio-pika cancels the consumer callback, but sends the providers already accepted
        # must still be recorded, or the redelivered batch would send them again. Only
        # shutdown cancels the batch itself, which releases its rows.
        batch = asyncio.create_task(self.deliverer.deliver(kind, ids))
        self.batches.add(batch)
        batch.add_done_callback(self.batches.discard)
        try:
            report = await asyncio.shield(batch)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as error:
            self.stats.failed_batches += 1
            logger.warning(
                "batch of %d %s rows failed, back to the queue in %.0f s: %s",
                len(ids),
                kind,
                FAILED_BATCH_DELAY_S,
                error,
            )
            await asyncio.sleep(FAILED_BATCH_DELAY_S)
            await message.nack(requeue=True)
            return

        self.stats.batches += 1
        self.stats.rows += report.claimed
        await message.ack()

    async def on_campaign_job(self, message: AbstractIncomingMessage) -> None:
        try:
            campaign_id = parse_campaign_job(message.body)
        except InvalidQueueMessage as error:
            await self.dead_letter(message, str(error))
            return

        try:
            await self.expander.expand(campaign_id)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, PublishFailed) as error:
            logger.warning(
                "campaign=%s expansion failed, back to the queue: %s", campaign_id, error
            )
            await asyncio.sleep(FAILED_BATCH_DELAY_S)
            await message.nack(requeue=True)
            return

        self.stats.campaigns += 1
        await message.ack()

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Move an unusable message to the dead-letter queue with the reason in a header."""
        logger.error("dead-lettering a message from %s: %s", message.routing_key, reason)
        channel = await self.publisher.get_channel()
        exchange = await channel.get_exchange(self.names.dead_exchange)
        headers = dict(message.headers or {})
        headers[REJECTION_REASON_HEADER] = reason
        await exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=message.routing_key or "",
        )
        await message.ack()

    async def run(self, install_signal_handlers: bool = True) -> None:
        """Run until SIGTERM or SIGINT (or `stop` is set), then shut down gracefully."""
        if install_signal_handlers:
            loop = asyncio.get_running_loop()
            for signal_number in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signal_number, self.stop.set)

        await self.start()
        sweeper = asyncio.create_task(self.sweeper.run(self.stop))
        logger.info(
            "worker started: queues %s and %s, prefetch %d",
            self.names.delivery,
            self.names.campaign,
            self.settings.worker_prefetch,
        )
        await self.stop.wait()
        await self.shutdown(sweeper, self.settings.shutdown_grace_s)

    async def shutdown(self, sweeper: asyncio.Task[None], grace_s: float) -> None:
        """Stop consuming, let messages in progress finish within the grace period."""
        started = time.monotonic()
        for queue, tag in self.consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if self.ingest is not None:
            await self.ingest.stop(grace_s)

        pending = set(self.stats.in_flight)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=grace_s)

        # Batches still running are cancelled, which releases their rows; the release must
        # finish before the pool closes.
        batches = list(self.batches)
        for batch in batches:
            batch.cancel()
        for task in pending:
            task.cancel()
        await asyncio.gather(*batches, *pending, return_exceptions=True)
        await sweeper

        if self.ingest_context is not None:
            await self.ingest_context.aclose()
        await self.registry.aclose()
        await self.connection.close()
        await self.pool.close()
        logger.info(
            "worker stopped after %.1f s: %d batches, %d rows, %d failed batches,"
            " %d campaigns expanded, %d cancelled in progress",
            time.monotonic() - started,
            self.stats.batches,
            self.stats.rows,
            self.stats.failed_batches,
            self.stats.campaigns,
            len(pending),
        )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="push-server worker", description=__doc__)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of the Prometheus endpoint (default PUSH_WORKER_METRICS_PORT; 0 turns it off)",
    )
    arguments = parser.parse_args(argv)
    configure_logging()

    try:
        settings: Settings = load_settings()
    except PushServerError as error:
        logger.error("%s", error)
        return 2

    metrics_port = (
        settings.worker_metrics_port if arguments.metrics_port is None else arguments.metrics_port
    )
    if metrics_port:
        start_http_server(metrics_port, addr=settings.api_host)

    try:
        import uvloop

        uvloop.run(Worker(settings).run())
    except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError) as error:
        logger.error("worker failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
