"""The FCM quota bucket shared through PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg

from workers.fcm_quota import FcmQuota


async def test_grants_up_to_capacity(pool: asyncpg.Pool) -> None:
    quota = FcmQuota(pool, messages_per_minute=60)

    first = await quota.take("project-a", 50)
    second = await quota.take("project-a", 50)

    assert first.count == 50
    assert first.wait_s == 0
    assert second.count == 10
    assert 39 < second.wait_s <= 40


async def test_projects_have_separate_buckets(pool: asyncpg.Pool) -> None:
    quota = FcmQuota(pool, messages_per_minute=10)

    await quota.take("project-a", 10)
    other = await quota.take("project-b", 10)

    assert other.count == 10


async def test_bucket_shared_by_processes(pool: asyncpg.Pool) -> None:
    workers = [FcmQuota(pool, messages_per_minute=100) for _ in range(4)]

    grants = await asyncio.gather(*(worker.take("project-a", 40) for worker in workers))

    assert sum(grant.count for grant in grants) == 100


async def test_bucket_refills(pool: asyncpg.Pool) -> None:
    quota = FcmQuota(pool, messages_per_minute=6000)
    await quota.take("project-a", 6000)
    await pool.execute(
        "UPDATE push_rate_limit SET timestamp_updated = timestamp_updated - interval '1 second'"
    )

    refilled = await quota.take("project-a", 1000)

    assert 100 <= refilled.count <= 110


async def test_deleted_bucket_created_again(pool: asyncpg.Pool) -> None:
    quota = FcmQuota(pool, messages_per_minute=60)
    await quota.take("project-a", 1)
    await pool.execute("DELETE FROM push_rate_limit")

    grant = await quota.take("project-a", 5)

    assert grant.count == 5
