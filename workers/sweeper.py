"""The sweeper: re-publishes rows that the queue does not hold.

It covers a lost publish, a crashed worker (expired lease), a broker restart and
scheduled retries with one query per table. Exactly one sweeper is active across all
workers: the one holding a PostgreSQL advisory lock on its own connection. When that
connection drops, the lock is released and another worker's sweeper takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from shared.exceptions import PublishFailed
from shared.queue import MARK_UNQUEUED, Publisher
from workers.delivery import EXPANSION_LOCK_CLASS

logger = logging.getLogger(__name__)

SWEEPER_LOCK_KEY = 0x7075_7368_7377_6570  # "pushswep"

# Rows re-published per table and pass; the next pass takes the rest.
SWEEP_LIMIT = 20_000

# A PENDING row is due for publishing when it is due for sending and was not queued since
# it became due, or was queued longer ago than the grace period (the message may be lost).
# A SENDING row is due when its lease expired and it was not queued since. The rows are
# marked queued in the same statement. Rows locked by a claim are skipped, because waiting
# for them could deadlock and the claim is handling them.
DUE_ROWS = """
WITH due AS (
    SELECT id FROM {table}
    WHERE status IN (0, 2)
      AND next_attempt_at <= now()
      AND (
          status = 0 AND (timestamp_queued IS NULL
                          OR timestamp_queued < next_attempt_at
                          OR $3 AND timestamp_queued < now() - make_interval(secs => $1))
          OR status = 2 AND lease_expires_at < now()
                        AND (timestamp_queued IS NULL OR timestamp_queued < lease_expires_at)
      )
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} AS t SET timestamp_queued = now()
FROM due
WHERE t.id = due.id
RETURNING t.id
"""

COMPLETE_SENDING_CAMPAIGNS = """
UPDATE push_campaign AS p
SET state = 'completed', sent = true, timestamp_completed = now()
WHERE p.state = 'sending'
  AND NOT EXISTS (
      SELECT 1 FROM push_campaign_device AS cd WHERE cd.campaign_id = p.id AND cd.status IN (0, 2)
  )
  AND EXISTS (SELECT 1 FROM push_campaign_device AS cd WHERE cd.campaign_id = p.id)
  AND pg_try_advisory_xact_lock($1, p.id::int)
RETURNING p.id
"""

TABLES = {"message": "push_message", "campaign_device": "push_campaign_device"}


class Sweeper:
    """Runs the sweep every interval while it holds the sweeper lock."""

    def __init__(
        self, pool: asyncpg.Pool, publisher: Publisher, *, interval_s: float, grace_s: float
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.interval_s = interval_s
        self.grace_s = grace_s

    async def run(self, stop: asyncio.Event) -> None:
        """Try to become the active sweeper, then sweep until `stop` is set."""
        while not stop.is_set():
            try:
                await self.run_while_locked(stop)
            except (asyncpg.PostgresError, OSError, PublishFailed) as error:
                logger.warning("sweeper paused for %.0f s: %s", self.interval_s, error)
            await wait_or_stop(stop, self.interval_s)

    async def run_while_locked(self, stop: asyncio.Event) -> None:
        async with self.pool.acquire() as connection:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", SWEEPER_LOCK_KEY):
                return
            logger.info("this worker's sweeper is now the active one")
            try:
                while not stop.is_set():
                    await self.sweep(connection)
                    await wait_or_stop(stop, self.interval_s)
            finally:
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await connection.execute("SELECT pg_advisory_unlock($1)", SWEEPER_LOCK_KEY)

    async def sweep(self, connection: asyncpg.Connection) -> int:
        """Publish every due row once and complete finished campaigns; return the count."""
        # A row queued longer ago than the grace period counts as lost only once the
        # delivery queue has drained: during a large campaign the backlog itself is older
        # than the grace period, and re-publishing it would only add duplicate messages.
        queue_drained = await self.publisher.delivery_queue_empty()
        published = 0
        for kind, table in TABLES.items():
            rows = await connection.fetch(
                DUE_ROWS.format(table=table), self.grace_s, SWEEP_LIMIT, queue_drained
            )
            ids = [row["id"] for row in rows]
            if ids:
                await self.publish(connection, kind, ids)
                logger.info("sweeper re-published %d %s rows", len(ids), kind)
                published += len(ids)

        # Two workers finishing a campaign's last rows at the same moment can each miss the
        # other's rows in their completion check, so the sweeper checks again.
        for record in await connection.fetch(COMPLETE_SENDING_CAMPAIGNS, EXPANSION_LOCK_CLASS):
            logger.info("campaign=%s completed", record["id"])
        return published

    async def publish(self, connection: asyncpg.Connection, kind: str, ids: list[int]) -> None:
        """Publish rows already marked queued; on failure, clear the mark for the next pass."""
        try:
            await self.publisher.publish_delivery(connection, kind, ids, mark_queued=False)
        except PublishFailed:
            await connection.execute(MARK_UNQUEUED[kind], ids)
            raise


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
