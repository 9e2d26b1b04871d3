"""Several worker processes on one campaign, one of them killed with SIGKILL mid-batch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from shared.queue import Publisher, QueueNames
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.workers.conftest import (
    Rows,
    SandboxApplication,
    WorkerProcess,
    create_sandbox_application,
    sandbox_settings,
)
from workers.sandbox.control import SandboxProcess

DEVICES = 1500


@pytest.fixture
async def application(
    rows: Rows, secret_box: SecretBox, provider_sandbox: SandboxProcess
) -> SandboxApplication:
    await provider_sandbox.admin.areset(everything=True)
    await provider_sandbox.admin.aupdate_settings(count_tokens=True)
    return await create_sandbox_application(rows, secret_box, provider_sandbox.admin)


@pytest.fixture
def worker_settings(settings: Settings, provider_sandbox: SandboxProcess) -> Settings:
    # A short lease and sweep interval, so the killed worker's rows come back quickly;
    # small batches and prefetch bound what the killed worker holds.
    return sandbox_settings(
        settings,
        provider_sandbox,
        lease_s=3.0,
        sweep_interval_s=0.5,
        sweep_grace_s=5.0,
        delivery_batch_size=50,
        worker_prefetch=2,
    )


async def campaign_with_devices(rows: Rows, app: int, count: int) -> tuple[int, list[str]]:
    tokens = [f"{i:064x}" for i in range(1, count + 1)]
    await rows.pool.executemany(
        "INSERT INTO push_device (app_id, user_id, platform, push_token, activation_id,"
        " is_active) VALUES ($1, $2, 'apns', $3, $4, true)",
        [(app, f"user-{i}", token, f"act-{i}") for i, token in enumerate(tokens)],
    )
    campaign = await rows.campaign(app, [f"user-{i}" for i in range(count)])
    return campaign, tokens


async def wait_for_sent(pool: asyncpg.Pool, at_least: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (
        await pool.fetchval("SELECT count(*) FROM push_campaign_device WHERE status = 1") < at_least
    ):
        assert time.monotonic() < deadline, f"fewer than {at_least} rows sent in {timeout_s} s"
        await asyncio.sleep(0.05)


async def wait_for_campaign(pool: asyncpg.Pool, campaign: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (
        await pool.fetchval("SELECT state FROM push_campaign WHERE id = $1", campaign)
        != "completed"
    ):
        open_rows = await pool.fetchval(
            "SELECT count(*) FROM push_campaign_device WHERE status IN (0, 2)"
        )
        assert time.monotonic() < deadline, f"campaign not completed, {open_rows} rows open"
        await asyncio.sleep(0.2)


async def test_killed_worker_loses_nothing(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    worker_settings: Settings,
    provider_sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    await provider_sandbox.admin.aadd_fault("apns", None, latency_ms=20)
    campaign, tokens = await campaign_with_devices(rows, application.row_id, DEVICES)
    workers = [WorkerProcess(worker_settings, tmp_path / f"worker-{i}.log") for i in range(2)]
    for worker in workers:
        worker.start()
    publisher = await Publisher.open(
        worker_settings.amqp_url.get_secret_value(), QueueNames(worker_settings.queue_prefix), 50
    )

    try:
        await publisher.publish_campaign_job(campaign)
        await wait_for_sent(pool, DEVICES // 5, timeout_s=60)
        workers[0].kill()
        await wait_for_campaign(pool, campaign, timeout_s=90)
    finally:
        exit_code = workers[1].stop()
        await publisher.close()

    counts = await provider_sandbox.admin.atoken_counts("apns", tokens)
    statuses = await pool.fetch("SELECT status, count(*) FROM push_campaign_device GROUP BY status")
    duplicates = sum(count - 1 for count in counts.values() if count > 1)

    assert dict(statuses) == {1: DEVICES}
    assert all(counts.get(token, 0) >= 1 for token in tokens)
    # A killed worker can repeat at most the rows it held: prefetch times batch size.
    assert duplicates <= 2 * 50
    assert exit_code == 0
    assert "worker stopped" in workers[1].log()


async def test_two_workers_send_each_device_once(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    worker_settings: Settings,
    provider_sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    campaign, tokens = await campaign_with_devices(rows, application.row_id, DEVICES)
    workers = [WorkerProcess(worker_settings, tmp_path / f"worker-{i}.log") for i in range(2)]
    for worker in workers:
        worker.start()
    publisher = await Publisher.open(
        worker_settings.amqp_url.get_secret_value(), QueueNames(worker_settings.queue_prefix), 50
    )

    try:
        await publisher.publish_campaign_job(campaign)
        await publisher.publish_campaign_job(campaign)
        await wait_for_campaign(pool, campaign, timeout_s=90)
    finally:
        exit_codes = [worker.stop() for worker in workers]
        await publisher.close()

    counts = await provider_sandbox.admin.atoken_counts("apns", tokens)

    assert set(counts.values()) == {1}
    assert len(counts) == DEVICES
    assert exit_codes == [0, 0]
    assert all("batches" in worker.log() for worker in workers)


async def test_sigterm_releases_unfinished_rows(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    worker_settings: Settings,
    provider_sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    await provider_sandbox.admin.aadd_fault("apns", None, latency_ms=5000)
    campaign, _tokens = await campaign_with_devices(rows, application.row_id, 200)
    worker = WorkerProcess(
        worker_settings.model_copy(update={"shutdown_grace_s": 0.5}), tmp_path / "worker.log"
    )
    worker.start()
    publisher = await Publisher.open(
        worker_settings.amqp_url.get_secret_value(), QueueNames(worker_settings.queue_prefix), 50
    )
    await publisher.publish_campaign_job(campaign)
    await publisher.close()

    deadline = time.monotonic() + 30
    while not await pool.fetchval("SELECT count(*) FROM push_campaign_device WHERE status = 2"):
        assert time.monotonic() < deadline, "the worker never claimed a row"
        await asyncio.sleep(0.05)
    exit_code = worker.stop()
    statuses = await pool.fetch(
        "SELECT status, attempts, lease_expires_at FROM push_campaign_device"
    )

    assert exit_code == 0
    assert {row["status"] for row in statuses} == {0}
    assert {row["attempts"] for row in statuses} == {0}
    assert "released" in worker.log()
    assert "worker stopped" in worker.log()
