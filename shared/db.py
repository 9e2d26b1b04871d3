"""PostgreSQL access: the asyncpg pool with JSON codecs."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson

from shared.settings import mask_url

logger = logging.getLogger(__name__)

# Row status values shared by push_message and push_campaign_device.
PENDING = 0
SENT = 1
SENDING = 2
FAILED = -1


def encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def init_connection(connection: asyncpg.Connection) -> None:
    """Register orjson codecs so JSON and JSONB columns read and write Python objects."""
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=encode_json,
            decoder=orjson.loads,
            schema="pg_catalog",
            format="text",
        )


async def create_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, **options: Any
) -> asyncpg.Pool:
    """Open a connection pool; fails at once when the database cannot be reached."""
    logger.info("connecting to PostgreSQL at %s (pool of %d)", mask_url(database_url), max_size)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        **options,
    )
    return pool
