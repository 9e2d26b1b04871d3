"""Coalescing of delivery publishes from many concurrent requests.

Each send request writes its rows and then needs their ids published. Publishing per
request costs one broker confirm each, so the ids of concurrent callers are sent together,
as in a database's group commit. At most
MAX_FLUSHES_PER_KIND flushes run at a time, and ids that arrive meanwhile go out in the
next one. An idle process adds no delay: the flush starts on the next loop turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Literal

import aio_pika
import aiormq
import asyncpg

from shared.exceptions import PublishFailed
from shared.queue import MARK_UNQUEUED, Publisher

logger = logging.getLogger(__name__)

DeliveryKind = Literal["message", "campaign_device"]

# Seconds that the readiness check waits for the broker.
BROKER_CHECK_TIMEOUT_S = 5.0

# Flushes in flight per delivery kind. Two keep the broker busy while the next batch
# gathers; more would split the batches again under load.
MAX_FLUSHES_PER_KIND = 2

Waiter = tuple[Sequence[int], "asyncio.Future[None]"]


class DeliveryPublisher:
    """Publishes row ids with `Publisher`, merging the ids of concurrent callers."""

    def __init__(self, publisher: Publisher, pool: asyncpg.Pool) -> None:
        self.publisher = publisher
        self.pool = pool
        self._buffers: dict[str, list[Waiter]] = {"message": [], "campaign_device": []}
        self._flush_tasks: set[asyncio.Task[None]] = set()
        self._flushing: dict[str, int] = {"message": 0, "campaign_device": 0}

    async def publish_delivery(self, kind: DeliveryKind, ids: Sequence[int]) -> None:
        """Publish row ids and mark their rows queued; raise PublishFailed.

        Returns after the broker confirmed every chunk and timestamp_queued was set.
        """
        if not ids:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        buffer = self._buffers[kind]
        buffer.append((ids, future))
        if len(buffer) == 1 and self._flushing[kind] < MAX_FLUSHES_PER_KIND:
            loop.call_soon(self._start_flush, kind)
        await future

    async def publish_campaign_job(self, campaign_id: int) -> None:
        """Publish one campaign expansion job; raise PublishFailed."""
        await self.publisher.publish_campaign_job(campaign_id)

    async def check(self) -> None:
        """Raise PublishFailed unless the broker confirms a passive queue declaration."""
        try:
            channel = await self.publisher.get_channel()
            await asyncio.wait_for(
                channel.declare_queue(self.publisher.names.delivery, passive=True),
                BROKER_CHECK_TIMEOUT_S,
            )
        except (
            aio_pika.exceptions.AMQPError,
            aiormq.exceptions.AMQPError,
            ConnectionError,
            RuntimeError,
            TimeoutError,
        ) as error:
            raise PublishFailed(f"RabbitMQ check failed: {error!r}") from error

    async def close(self) -> None:
        """Wait for flushes in progress, then close the broker connection."""
        if self._flush_tasks:
            await asyncio.gather(*self._flush_tasks, return_exceptions=True)
        await self.publisher.close()

    def _start_flush(self, kind: str) -> None:
        waiting = self._buffers[kind]
        if not waiting or self._flushing[kind] >= MAX_FLUSHES_PER_KIND:
            return
        self._buffers[kind] = []
        self._flushing[kind] += 1
        task = asyncio.get_running_loop().create_task(self._flush(kind, waiting))
        self._flush_tasks.add(task)
        task.add_done_callback(lambda done: self._flush_done(kind, done))

    def _flush_done(self, kind: str, task: asyncio.Task[None]) -> None:
        self._flush_tasks.discard(task)
        self._flushing[kind] -= 1
        # Ids that arrived during this flush go out now.
        self._start_flush(kind)

    async def _flush(self, kind: str, waiting: list[Waiter]) -> None:
        ids = [row_id for chunk, _future in waiting for row_id in chunk]
        try:
            await self._publish_chunks(kind, ids)
        except (PublishFailed, OSError) as error:
            failure = error if isinstance(error, PublishFailed) else PublishFailed(repr(error))
            await self._mark_unqueued(kind, ids)
            for _chunk, future in waiting:
                if not future.done():
                    future.set_exception(failure)
            return
        for _chunk, future in waiting:
            if not future.done():
                future.set_result(None)

    async def _mark_unqueued(self, kind: str, ids: list[int]) -> None:
        """Clear timestamp_queued of rows whose publish failed, so the sweeper takes them now.

        Rows are written already marked queued, which saves an UPDATE of every row after
        each confirmed publish.
        """
        try:
            await self.pool.execute(MARK_UNQUEUED[kind], ids)
        except (asyncpg.PostgresError, OSError) as error:
            # The rows keep their mark; the sweeper publishes them after its grace period.
            logger.warning(
                "clearing the queued mark of %d %s rows failed: %r", len(ids), kind, error
            )

    async def _publish_chunks(self, kind: str, ids: list[int]) -> None:
        size = self.publisher.batch_size
        chunks = [ids[start : start + size] for start in range(0, len(ids), size)]
        await asyncio.gather(
            *(
                self.publisher.publish(self.publisher.names.delivery, {"kind": kind, "ids": chunk})
                for chunk in chunks
            )
        )
