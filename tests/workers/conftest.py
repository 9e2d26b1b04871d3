"""Factories for worker tests: applications, devices, messages and campaigns as rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import pytest


@dataclass
class Rows:
    """Creates rows in the test database with sensible defaults."""

    pool: asyncpg.Pool

    async def app(self, app_id: str = "app", **columns: Any) -> int:
        names = ["app_id", *columns]
        placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        row_id: int = await self.pool.fetchval(
            f"INSERT INTO push_app_credentials ({', '.join(names)}) VALUES ({placeholders})"
            " RETURNING id",
            app_id,
            *columns.values(),
        )
        return row_id

    async def device(
        self,
        app: int,
        token: str,
        *,
        user_id: str = "user-1",
        platform: str = "fcm",
        activation_id: str | None = None,
        is_active: bool = True,
        environment: str | None = None,
        invalidated: bool = False,
        registered_at: datetime | None = None,
    ) -> int:
        row_id: int = await self.pool.fetchval(
            "INSERT INTO push_device (app_id, user_id, platform, push_token, activation_id,"
            " is_active, environment, timestamp_token_invalidated, timestamp_last_registered)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END,"
            " coalesce($9, now())) RETURNING id",
            app,
            user_id,
            platform,
            token,
            activation_id,
            is_active,
            environment,
            invalidated,
            registered_at,
        )
        return row_id

    async def message(
        self,
        app: int,
        device: int | None,
        body: dict[str, Any] | None = None,
        *,
        user_id: str = "user-1",
        silent: bool = False,
        queued: bool = False,
    ) -> int:
        row_id: int = await self.pool.fetchval(
            "INSERT INTO push_message (app_id, device_registration_id, user_id, message_body,"
            " silent, timestamp_queued) VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)"
            " RETURNING id",
            app,
            device,
            user_id,
            body or {"title": "Hello", "body": "World"},
            silent,
            queued,
        )
        return row_id

    async def campaign(
        self,
        app: int,
        users: list[str],
        *,
        body: dict[str, Any] | None = None,
        personal: bool = False,
        state: str = "sending",
    ) -> int:
        campaign_id: int = await self.pool.fetchval(
            "INSERT INTO push_campaign (app_id, message, attributes, state)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            app,
            body or {"title": "Sale", "body": "Everything must go"},
            {"silent": False, "personal": personal},
            state,
        )
        await self.pool.executemany(
            "INSERT INTO push_campaign_user (campaign_id, user_id) VALUES ($1, $2)",
            [(campaign_id, user) for user in users],
        )
        return campaign_id

    async def status_of(self, table: str, row_id: int) -> asyncpg.Record:
        record: asyncpg.Record = await self.pool.fetchrow(
            f"SELECT * FROM {table} WHERE id = $1", row_id
        )
        return record


@pytest.fixture
def rows(pool: asyncpg.Pool) -> Rows:
    return Rows(pool)
