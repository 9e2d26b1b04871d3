"""The main job's path at the small size: API, two workers and the sandbox as processes.

The demo registers devices, runs a campaign and a burst of direct sends through the API
and over AMQP;
the test asserts the demo's invariants: every campaign device accepted by the sandbox
exactly once or failed with a reason, invalid tokens marked on their devices, every direct
message accepted as often as it was sent.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from demo.__main__ import run_demo, wait_until_ready
from demo.client import PushApi
from shared.settings import Settings
from tests.workers.conftest import provider_sandbox, sandbox_settings, settings_environment
from workers.sandbox.control import SandboxProcess

__all__ = ["provider_sandbox"]


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
        return port


@pytest.fixture
def api_key() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def stack(
    settings: Settings,
    provider_sandbox: SandboxProcess,
    api_key: str,
    pool: asyncpg.Pool,
    tmp_path: Path,
) -> Iterator[str]:
    """Start the API and two workers; yield the API's base URL."""
    port = free_port()
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    stack_settings = sandbox_settings(
        settings,
        provider_sandbox,
        api_port=port,
        api_keys=f"demo:admin:{digest}",
        sweep_interval_s=1.0,
    )
    environment = settings_environment(stack_settings)
    commands = {
        "api": ["api"],
        "worker-1": ["worker", "--metrics-port", "0"],
        "worker-2": ["worker", "--metrics-port", "0"],
    }
    processes = []
    for name, command in commands.items():
        log = (tmp_path / f"{name}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "shared.cli", *command],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    yield f"http://127.0.0.1:{port}"
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))


async def test_demo_small_keeps_invariants(
    stack: str,
    api_key: str,
    provider_sandbox: SandboxProcess,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    await provider_sandbox.admin.areset(everything=True)
    await provider_sandbox.admin.aupdate_settings(count_tokens=True)
    await wait_until_ready(stack)
    api = PushApi(stack, api_key, connections=16)
    arguments = argparse.Namespace(
        size="small", seed=7, concurrency=16, timeout=300.0, queue_prefix=settings.queue_prefix
    )

    try:
        result = await run_demo(arguments, api, provider_sandbox.admin, pool)
    finally:
        await api.close()
    invalidated = await pool.fetchval(
        "SELECT count(*) FROM push_device WHERE timestamp_token_invalidated IS NOT NULL"
    )

    assert result["devices"] > 2500
    assert result["sent"] + result["failed"] == result["devices"]
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    assert result["unmarked_invalid"] == 0
    # The sandbox rejects about 2% of the demo tokens as unregistered or bad.
    assert 0.01 * result["devices"] < result["failed"] < 0.04 * result["devices"]
    assert invalidated == result["failed"]
    assert result["messages"] > 0
    assert result["messages_lost"] == 0
    assert result["messages_duplicates"] == 0
    assert result["amqp_requests"] > 0
    assert result["amqp_replies_missing"] == 0
    assert result["amqp_republish_mismatches"] == 0
    assert result["ok"] is True


async def test_stack_rejects_unknown_api_key(stack: str) -> None:
    await wait_until_ready(stack)

    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{stack}/push/message/send",
            json={"requestObject": {}},
            headers={"Authorization": "Bearer not-a-key"},
        )

    assert response.status == 401
