"""The Idempotency-Key store of send requests (push_idempotency), keyed by (application, key).

A request that carries a key claims it in the transaction that writes its rows and stores
what a retry needs. A retry with the same key and the same request gets that stored result
and writes nothing; the same key with another request is rejected. Keys expire after
PUSH_IDEMPOTENCY_TTL_S; an expired key is claimed again as if it were new.
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import orjson

from shared.exceptions import IdempotencyKeyReused, RequestInvalid

MAX_KEY_LENGTH = 255

# Inserts the key, or takes over an expired one. A concurrent claim of the same key waits
# here until the first transaction ends, then sees the stored result (no row returned).
CLAIM_KEY = """
INSERT INTO push_idempotency AS k (app_id, idempotency_key, request_hash, response, expires_at)
VALUES ($1, $2, $3, '{}'::jsonb, now() + make_interval(secs => $4))
ON CONFLICT (app_id, idempotency_key) DO UPDATE
SET request_hash = excluded.request_hash, response = excluded.response,
    timestamp_created = now(), expires_at = excluded.expires_at
WHERE k.expires_at <= now()
RETURNING true
"""

READ_KEY = """
SELECT request_hash, response FROM push_idempotency WHERE app_id = $1 AND idempotency_key = $2
"""

STORE_RESPONSE = """
UPDATE push_idempotency SET response = $3 WHERE app_id = $1 AND idempotency_key = $2
"""


def check_key(key: str) -> str:
    """Return the key if it is usable; raise RequestInvalid otherwise."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise RequestInvalid(
            "Request validation failed",
            [
                {
                    "fieldName": "Idempotency-Key",
                    "hint": f"must be 1 to {MAX_KEY_LENGTH} printable characters",
                }
            ],
        )
    return key


def hash_request(request: Any) -> str:
    """Return a SHA-256 hex digest of a request's canonical JSON."""
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def claim(
    connection: asyncpg.Connection, app_row_id: int, key: str, request_hash: str, ttl_s: float
) -> dict[str, Any] | None:
    """Claim a key inside the caller's transaction.

    Returns None when the caller owns the key and must do the work, or the stored result
    of the first request with this key. Raises IdempotencyKeyReused when that first request
    differs from this one.
    """
    claimed = await connection.fetchval(CLAIM_KEY, app_row_id, key, request_hash, ttl_s)
    if claimed:
        return None
    row = await connection.fetchrow(READ_KEY, app_row_id, key)
    if row["request_hash"] != request_hash:
        raise IdempotencyKeyReused(
            "Idempotency-Key was already used with a different request; use a new key"
        )
    response: dict[str, Any] = row["response"]
    return response


async def store(
    connection: asyncpg.Connection, app_row_id: int, key: str, response: dict[str, Any]
) -> None:
    """Store the result of the request that owns the key, inside its transaction."""
    await connection.execute(STORE_RESPONSE, app_row_id, key, response)


async def delete_expired(pool: asyncpg.Pool) -> int:
    """Delete expired keys; return how many were deleted."""
    result = await pool.execute("DELETE FROM push_idempotency WHERE expires_at <= now()")
    return int(result.split()[-1])
