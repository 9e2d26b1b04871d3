"""Campaign expansion: turn a campaign's users into one push_campaign_device row per device.

Each chunk of users is one INSERT … SELECT joining push_device on the campaign's
application. Invalidated tokens are skipped, and so are inactive devices for a personal
campaign. `ON CONFLICT DO NOTHING` gives each (platform, token) one row, so running the
expansion again (a redelivered job, a repeated send/live) never sends a device twice.
The rows are inserted already marked queued and published right away; if a publish is
lost, the sweeper publishes the rows after its grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from shared.queue import Publisher
from workers.delivery import COMPLETE_CAMPAIGNS, EXPANSION_LOCK_CLASS

logger = logging.getLogger(__name__)

# Each chunk joins its users against all devices of the application (a hash join over a
# scan of push_device), so larger chunks mean fewer scans.
USERS_PER_CHUNK = 100_000

# Chunks inserted at once, each on its own connection; the inserts are CPU-bound in
# PostgreSQL (index maintenance and foreign-key checks), so two use two cores.
PARALLEL_CHUNKS = 2

# Memory for the hash join of one chunk, so it does not spill to disk.
EXPANSION_WORK_MEM = "64MB"

# Delivery batches published at once; confirms are awaited together.
PUBLISH_WINDOW = 32

START = """
UPDATE push_campaign
SET state = 'sending', timestamp_sent = COALESCE(timestamp_sent, now())
WHERE id = $1 AND state IN ('created', 'sending', 'completed')
RETURNING app_id, attributes
"""

USER_ID_RANGE = "SELECT min(id), max(id) FROM push_campaign_user WHERE campaign_id = $1"

INSERT_DEVICES = """
WITH inserted AS (
    INSERT INTO push_campaign_device
        (campaign_id, device_registration_id, platform, token, timestamp_queued)
    SELECT $1, d.id, d.platform, d.push_token, now()
    FROM push_campaign_user AS u
    JOIN push_device AS d ON d.app_id = $2 AND d.user_id = u.user_id
    WHERE u.campaign_id = $1 AND u.id BETWEEN $3 AND $4
      AND d.timestamp_token_invalidated IS NULL
      AND (NOT $5 OR d.is_active)
    ON CONFLICT (campaign_id, platform, token) DO NOTHING
    RETURNING id
)
SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM inserted
"""


class CampaignExpander:
    """Expands campaigns; one expansion per campaign at a time across all workers."""

    def __init__(self, pool: asyncpg.Pool, publisher: Publisher) -> None:
        self.pool = pool
        self.publisher = publisher

    async def expand(self, campaign_id: int) -> int:
        """Expand the campaign and publish its rows; return the number of rows created."""
        async with self.pool.acquire() as connection:
            locked = await connection.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", EXPANSION_LOCK_CLASS, campaign_id
            )
            if not locked:
                logger.info("campaign=%s is being expanded by another worker", campaign_id)
                return 0
            try:
                created = await self.expand_locked(connection, campaign_id)
            finally:
                await connection.execute(
                    "SELECT pg_advisory_unlock($1, $2)", EXPANSION_LOCK_CLASS, campaign_id
                )
        await self.pool.fetch(COMPLETE_CAMPAIGNS, [campaign_id], EXPANSION_LOCK_CLASS)
        return created

    async def expand_locked(self, connection: asyncpg.Connection, campaign_id: int) -> int:
        started = time.perf_counter()
        campaign = await connection.fetchrow(START, campaign_id)
        if campaign is None:
            logger.info("campaign=%s not expanded: missing or cancelled", campaign_id)
            return 0

        personal = bool((campaign["attributes"] or {}).get("personal", False))
        first, last = await connection.fetchrow(USER_ID_RANGE, campaign_id)
        created = 0
        if first is not None:
            slots = asyncio.Semaphore(PARALLEL_CHUNKS)
            chunks = [
                self.expand_chunk(slots, campaign_id, campaign["app_id"], low, last, personal)
                for low in range(first, last + 1, USERS_PER_CHUNK)
            ]
            created = sum(await asyncio.gather(*chunks))

        logger.info(
            "campaign=%s app=%s expanded into %d devices in %.1f s",
            campaign_id,
            campaign["app_id"],
            created,
            time.perf_counter() - started,
        )
        return created

    async def expand_chunk(
        self,
        slots: asyncio.Semaphore,
        campaign_id: int,
        app_row_id: int,
        low: int,
        last: int,
        personal: bool,
    ) -> int:
        """Insert the rows of the users with ids low.. (one chunk) and publish them."""
        high = min(low + USERS_PER_CHUNK - 1, last)
        async with slots, self.pool.acquire() as connection, connection.transaction():
            await connection.execute(f"SET LOCAL work_mem = '{EXPANSION_WORK_MEM}'")
            ids: list[int] = await connection.fetchval(
                INSERT_DEVICES, campaign_id, app_row_id, low, high, personal
            )
        await self.publish(ids)
        return len(ids)

    async def publish(self, ids: list[int]) -> None:
        """Publish delivery batches of the new rows, several confirms in flight at once."""
        size = self.publisher.batch_size
        batches = [ids[start : start + size] for start in range(0, len(ids), size)]
        for start in range(0, len(batches), PUBLISH_WINDOW):
            window = batches[start : start + PUBLISH_WINDOW]
            await asyncio.gather(
                *(
                    self.publisher.publish(
                        self.publisher.names.delivery, {"kind": "campaign_device", "ids": batch}
                    )
                    for batch in window
                )
            )
