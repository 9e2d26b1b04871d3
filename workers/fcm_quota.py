"""The FCM per-project quota, shared by every worker through a token bucket in PostgreSQL.

FCM allows a project a fixed number of messages a minute (600,000 by default). The bucket
holds up to one minute of quota and refills continuously, so workers on any number of
machines together never send faster than the quota. A batch takes its tokens with one
statement.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

CREATE_BUCKET = """
INSERT INTO push_rate_limit (name, tokens) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING
"""

TAKE_TOKENS = """
WITH available AS (
    SELECT name,
           LEAST($2::float8,
                 tokens + EXTRACT(EPOCH FROM clock_timestamp() - timestamp_updated) * $3::float8)
               AS tokens
    FROM push_rate_limit
    WHERE name = $1
    FOR UPDATE
), granted AS (
    SELECT name, tokens, LEAST($4::int, floor(tokens)::int) AS count FROM available
)
UPDATE push_rate_limit AS r
SET tokens = g.tokens - g.count, timestamp_updated = clock_timestamp()
FROM granted AS g
WHERE r.name = g.name
RETURNING g.count, g.tokens
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """How many sends a batch may make now, and how long the rest must wait."""

    count: int
    wait_s: float


class FcmQuota:
    """Takes send permits from the per-project bucket."""

    def __init__(self, pool: asyncpg.Pool, messages_per_minute: int) -> None:
        self.pool = pool
        self.capacity = float(messages_per_minute)
        self.rate_per_s = messages_per_minute / 60.0
        self.known_buckets: set[str] = set()

    async def take(self, project_id: str, wanted: int) -> Grant:
        """Take up to `wanted` permits for the project."""
        name = f"fcm:{project_id}"
        if name not in self.known_buckets:
            await self.pool.execute(CREATE_BUCKET, name, self.capacity)
            self.known_buckets.add(name)

        record = await self.pool.fetchrow(TAKE_TOKENS, name, self.capacity, self.rate_per_s, wanted)
        if record is None:
            # The bucket row was deleted (a cleanup, a restored database): without it every
            # send would count as throttled forever, so it is created again.
            await self.pool.execute(CREATE_BUCKET, name, self.capacity)
            record = await self.pool.fetchrow(
                TAKE_TOKENS, name, self.capacity, self.rate_per_s, wanted
            )
        granted = int(record["count"]) if record else 0
        missing = wanted - granted
        wait_s = missing / self.rate_per_s if missing > 0 else 0.0
        return Grant(granted, wait_s)
