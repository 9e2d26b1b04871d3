"""A campaign survives a RabbitMQ restart in the middle of its delivery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.queue import Publisher, QueueNames
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.conftest import REPOSITORY
from tests.workers.conftest import (
    Rows,
    SandboxApplication,
    WorkerProcess,
    create_sandbox_application,
    sandbox_settings,
)
from tests.workers.test_worker_failures import (
    campaign_with_devices,
    wait_for_campaign,
    wait_for_sent,
)
from workers.sandbox.control import SandboxProcess

DEVICES = 1500


async def rabbitmqctl(*arguments: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(REPOSITORY / "deploy" / "local" / "services"),
        "rabbitmqctl",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


@pytest.fixture
async def application(
    rows: Rows, secret_box: SecretBox, provider_sandbox: SandboxProcess
) -> SandboxApplication:
    await provider_sandbox.admin.areset(everything=True)
    await provider_sandbox.admin.aupdate_settings(count_tokens=True)
    return await create_sandbox_application(rows, secret_box, provider_sandbox.admin)


async def test_campaign_completes_across_broker_restart(
    rows: Rows,
    pool: asyncpg.Pool,
    application: SandboxApplication,
    settings: Settings,
    provider_sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    worker_settings = sandbox_settings(
        settings,
        provider_sandbox,
        lease_s=5.0,
        sweep_interval_s=0.5,
        sweep_grace_s=5.0,
        delivery_batch_size=50,
        worker_prefetch=2,
    )
    await provider_sandbox.admin.aadd_fault("apns", None, latency_ms=20)
    campaign, tokens = await campaign_with_devices(rows, application.row_id, DEVICES)
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
    worker.start()
    publisher = await Publisher.open(
        worker_settings.amqp_url.get_secret_value(), QueueNames(worker_settings.queue_prefix), 50
    )
    await publisher.publish_campaign_job(campaign)
    await publisher.close()

    try:
        await wait_for_sent(pool, DEVICES // 5, timeout_s=60)
        await rabbitmqctl("stop_app")
        await asyncio.sleep(2)
        await rabbitmqctl("start_app")
        await wait_for_campaign(pool, campaign, timeout_s=120)
    finally:
        await rabbitmqctl("start_app")
        exit_code = worker.stop()

    counts = await provider_sandbox.admin.atoken_counts("apns", tokens)
    statuses = await pool.fetch("SELECT status, count(*) FROM push_campaign_device GROUP BY status")

    assert dict(statuses) == {1: DEVICES}
    assert all(counts.get(token, 0) >= 1 for token in tokens)
    # Batches in flight when the connection dropped are still recorded, so the
    # redelivered batches find their rows sent.
    assert sum(count - 1 for count in counts.values() if count > 1) == 0
    assert exit_code == 0, worker.log()[-2000:]
