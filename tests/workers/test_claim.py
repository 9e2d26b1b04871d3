"""Claiming rows with a lease and recording outcomes in one statement per batch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.db import FAILED, PENDING, SENDING, SENT
from tests.workers.conftest import Rows
from workers.claim import RowKind, RowUpdate, TokenInvalidation, claim, invalidate_tokens, record


async def test_claim_takes_due_pending_rows(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1", platform="fcm")
    due = await rows.message(app, device)
    later = await rows.message(app, device)
    await pool.execute(
        "UPDATE push_message SET next_attempt_at = now() + interval '1 hour' WHERE id = $1", later
    )

    claimed = await claim(pool, RowKind.MESSAGE, [due, later], lease_s=30)
    stored = await rows.status_of("push_message", due)

    assert [row.id for row in claimed] == [due]
    assert claimed[0].token == "token-1"
    assert claimed[0].platform == "fcm"
    assert claimed[0].attempts == 1
    assert stored["status"] == SENDING
    assert stored["lease_expires_at"] > datetime.now(UTC)


async def test_claimed_row_not_claimed_again(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    message = await rows.message(app, device)

    first = await claim(pool, RowKind.MESSAGE, [message], lease_s=30)
    second = await claim(pool, RowKind.MESSAGE, [message], lease_s=30)

    assert len(first) == 1
    assert second == []


async def test_concurrent_claims_never_share_rows(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    ids = [await rows.message(app, device) for _ in range(200)]

    results = await asyncio.gather(
        *(claim(pool, RowKind.MESSAGE, ids, lease_s=30) for _ in range(5))
    )
    claimed = [row.id for result in results for row in result]

    assert sorted(claimed) == sorted(ids)


async def test_expired_lease_claimed_again(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    message = await rows.message(app, device)
    await claim(pool, RowKind.MESSAGE, [message], lease_s=30)
    await pool.execute(
        "UPDATE push_message SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        message,
    )

    again = await claim(pool, RowKind.MESSAGE, [message], lease_s=30)

    assert [row.id for row in again] == [message]
    assert again[0].attempts == 2


async def test_claim_without_device_has_no_token(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    message = await rows.message(app, device)
    await pool.execute("DELETE FROM push_device WHERE id = $1", device)

    claimed = await claim(pool, RowKind.MESSAGE, [message], lease_s=30)

    assert claimed[0].device_id is None
    assert claimed[0].token is None


async def test_claim_campaign_device_joins_campaign(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1", platform="hms")
    campaign = await rows.campaign(app, ["user-1"], personal=True)
    row_id = await pool.fetchval(
        "INSERT INTO push_campaign_device (campaign_id, device_registration_id, platform, token)"
        " VALUES ($1, $2, 'hms', 'token-1') RETURNING id",
        campaign,
        device,
    )

    claimed = await claim(pool, RowKind.CAMPAIGN_DEVICE, [row_id], lease_s=30)

    assert claimed[0].campaign_id == campaign
    assert claimed[0].app_row_id == app
    assert claimed[0].attributes.personal is True
    assert claimed[0].body["title"] == "Sale"


async def test_record_writes_every_row_once(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    sent, failed, retried = [await rows.message(app, device) for _ in range(3)]
    await claim(pool, RowKind.MESSAGE, [sent, failed, retried], lease_s=30)
    retry_at = datetime.now(UTC) + timedelta(minutes=5)

    await record(
        pool,
        RowKind.MESSAGE,
        [
            RowUpdate(sent, SENT, provider_message_id="apns-id-1"),
            RowUpdate(failed, FAILED, reason="BadDeviceToken"),
            RowUpdate(
                retried,
                PENDING,
                reason="ServiceUnavailable",
                next_attempt_at=retry_at,
                attempt_given_back=True,
            ),
        ],
    )
    sent_row = await rows.status_of("push_message", sent)
    failed_row = await rows.status_of("push_message", failed)
    retried_row = await rows.status_of("push_message", retried)

    assert sent_row["status"] == SENT
    assert sent_row["provider_message_id"] == "apns-id-1"
    assert sent_row["timestamp_sent"] is not None
    assert failed_row["status"] == FAILED
    assert failed_row["failure_reason"] == "BadDeviceToken"
    assert retried_row["status"] == PENDING
    assert retried_row["next_attempt_at"] == retry_at
    assert retried_row["attempts"] == 0
    assert retried_row["lease_expires_at"] is None


async def test_record_skips_rows_no_longer_sending(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    message = await rows.message(app, device)
    await claim(pool, RowKind.MESSAGE, [message], lease_s=30)
    await record(pool, RowKind.MESSAGE, [RowUpdate(message, SENT, provider_message_id="first")])

    await record(pool, RowKind.MESSAGE, [RowUpdate(message, FAILED, reason="late")])
    stored = await rows.status_of("push_message", message)

    assert stored["status"] == SENT
    assert stored["provider_message_id"] == "first"


async def test_old_410_does_not_invalidate_new_registration(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    registered = datetime.now(UTC)
    device = await rows.device(app, "a" * 64, platform="apns", registered_at=registered)
    other = await rows.device(app, "b" * 64, platform="apns", user_id="user-2")

    await invalidate_tokens(
        pool,
        [
            TokenInvalidation(device, "a" * 64, registered - timedelta(days=1)),
            TokenInvalidation(other, "b" * 64, datetime.now(UTC) + timedelta(seconds=1)),
        ],
    )
    kept = await rows.status_of("push_device", device)
    invalidated = await rows.status_of("push_device", other)

    assert kept["timestamp_token_invalidated"] is None
    assert invalidated["timestamp_token_invalidated"] is not None


async def test_invalidation_skips_changed_token(rows: Rows, pool: asyncpg.Pool) -> None:
    app = await rows.app()
    device = await rows.device(app, "new-token")

    await invalidate_tokens(pool, [TokenInvalidation(device, "old-token", None)])
    stored = await rows.status_of("push_device", device)

    assert stored["timestamp_token_invalidated"] is None


async def test_claim_skips_locked_rows(rows: Rows, pool: asyncpg.Pool, database_url: str) -> None:
    app = await rows.app()
    device = await rows.device(app, "token-1")
    locked, free = await rows.message(app, device), await rows.message(app, device)
    holder = await asyncpg.connect(database_url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute("SELECT id FROM push_message WHERE id = $1 FOR UPDATE", locked)

    claimed = await asyncio.wait_for(claim(pool, RowKind.MESSAGE, [locked, free], 30), 5)
    await transaction.rollback()
    await holder.close()

    assert [row.id for row in claimed] == [free]
