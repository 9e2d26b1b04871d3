"""The unique constraints, foreign keys and ON DELETE rules of the six tables."""

from __future__ import annotations

import asyncpg
import pytest

INSERT_DEVICE = (
    "INSERT INTO push_device (app_id, activation_id, platform, push_token)"
    " VALUES ($1, $2, 'fcm', $3) RETURNING id"
)


async def create_app(pool: asyncpg.Pool, app_id: str = "app") -> int:
    row_id: int = await pool.fetchval(
        "INSERT INTO push_app_credentials (app_id) VALUES ($1) RETURNING id", app_id
    )
    return row_id


async def test_app_id_unique(pool: asyncpg.Pool) -> None:
    await create_app(pool)

    with pytest.raises(asyncpg.UniqueViolationError):
        await create_app(pool)


async def test_one_device_per_activation(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)
    await pool.execute(INSERT_DEVICE, app, "activation-1", "token-a")

    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(INSERT_DEVICE, app, "activation-1", "token-b")


async def test_same_activation_in_two_apps_allowed(pool: asyncpg.Pool) -> None:
    first = await create_app(pool, "first")
    second = await create_app(pool, "second")

    await pool.execute(INSERT_DEVICE, first, "activation-1", "token-a")
    await pool.execute(INSERT_DEVICE, second, "activation-1", "token-a")

    assert await pool.fetchval("SELECT count(*) FROM push_device") == 2


async def test_token_without_activation_unique(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)
    await pool.execute(INSERT_DEVICE, app, None, "token-a")

    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(INSERT_DEVICE, app, None, "token-a")


async def test_one_token_for_many_activations_allowed(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)

    await pool.execute(INSERT_DEVICE, app, "activation-1", "shared-token")
    await pool.execute(INSERT_DEVICE, app, "activation-2", "shared-token")

    assert await pool.fetchval("SELECT count(*) FROM push_device") == 2


async def test_campaign_user_unique(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)
    campaign = await pool.fetchval(
        "INSERT INTO push_campaign (app_id, message) VALUES ($1, '{}') RETURNING id", app
    )
    insert_user = "INSERT INTO push_campaign_user (campaign_id, user_id) VALUES ($1, 'u1')"
    await pool.execute(insert_user, campaign)

    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(insert_user, campaign)


async def test_campaign_device_unique_per_platform_token(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)
    campaign = await pool.fetchval(
        "INSERT INTO push_campaign (app_id, message) VALUES ($1, '{}') RETURNING id", app
    )
    insert = "INSERT INTO push_campaign_device (campaign_id, platform, token) VALUES ($1, $2, 't')"
    await pool.execute(insert, campaign, "fcm")
    await pool.execute(insert, campaign, "hms")

    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(insert, campaign, "fcm")


async def test_deleted_device_leaves_message_without_device(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)
    device = await pool.fetchval(INSERT_DEVICE, app, "activation-1", "token-a")
    message = await pool.fetchval(
        "INSERT INTO push_message (device_registration_id, user_id, app_id, message_body)"
        " VALUES ($1, 'u1', $2, $3) RETURNING id",
        device,
        app,
        {"body": "hello"},
    )

    await pool.execute("DELETE FROM push_device WHERE id = $1", device)
    row = await pool.fetchrow("SELECT * FROM push_message WHERE id = $1", message)

    assert row["device_registration_id"] is None
    assert row["message_body"] == {"body": "hello"}
    assert row["status"] == 0


async def test_deleted_app_cascades(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)
    device = await pool.fetchval(INSERT_DEVICE, app, "activation-1", "token-a")
    await pool.execute(
        "INSERT INTO push_message (device_registration_id, user_id, app_id, message_body)"
        " VALUES ($1, 'u1', $2, '{}')",
        device,
        app,
    )
    campaign = await pool.fetchval(
        "INSERT INTO push_campaign (app_id, message) VALUES ($1, '{}') RETURNING id", app
    )
    await pool.execute(
        "INSERT INTO push_campaign_device (campaign_id, device_registration_id, platform, token)"
        " VALUES ($1, $2, 'fcm', 'token-a')",
        campaign,
        device,
    )

    await pool.execute("DELETE FROM push_app_credentials WHERE id = $1", app)

    for table in ("push_device", "push_message", "push_campaign", "push_campaign_device"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_unknown_status_rejected(pool: asyncpg.Pool) -> None:
    app = await create_app(pool)

    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO push_message (user_id, app_id, message_body, status)"
            " VALUES ('u1', $1, '{}', 7)",
            app,
        )


async def test_every_addition_has_comment(pool: asyncpg.Pool) -> None:
    additions = {
        "push_app_credentials": [
            "ios_environment",
            "hms_project_id",
            "hms_client_id",
            "hms_client_secret",
            "timestamp_created",
            "timestamp_last_updated",
        ],
        "push_device": ["environment", "timestamp_last_registered", "timestamp_token_invalidated"],
        "push_message": [
            "app_id",
            "priority",
            "attempts",
            "next_attempt_at",
            "lease_expires_at",
            "timestamp_queued",
            "timestamp_sent",
            "failure_reason",
            "provider_message_id",
            "idempotency_key",
        ],
        "push_campaign": ["attributes", "priority", "state", "timestamp_completed"],
        "push_campaign_device": [
            "device_registration_id",
            "attempts",
            "next_attempt_at",
            "lease_expires_at",
            "timestamp_queued",
            "timestamp_sent",
            "failure_reason",
            "provider_message_id",
        ],
    }
    for table, columns in additions.items():
        for column in columns:
            comment = await pool.fetchval(
                "SELECT col_description($1::regclass, attnum) FROM pg_attribute"
                " WHERE attrelid = $1::regclass AND attname = $2",
                table,
                column,
            )
            assert comment, f"{table}.{column} has no comment"
