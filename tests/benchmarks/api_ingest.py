"""Benchmark of the REST API's ingest: single sends and 500-message batch sends.

Builds a database of its own on the local PostgreSQL (`deploy/local/services start`),
starts `push-server api` on a free loopback port with a queue prefix of its own, registers
one device, then drives the API with h2load (HTTP/1.1, keep-alive): single sends with 64
and with 16 connections, then batch sends with 8. Each request's latency comes from
h2load's log file. No worker runs, so the rows stay PENDING.
Ends with one JSON line of figures.

    python -m tests.benchmarks.api_ingest            # 20,000 sends, 400 batches of 500
    python -m tests.benchmarks.api_ingest --smoke    # 2,000 sends, 20 batches
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson

from shared.migrations import migrate
from tests.conftest import read_env_file, with_database

API_KEY = "benchmark-key-" + uuid.uuid4().hex
APP_ID = "benchmark-app"
BATCH_SIZE = 500
# Concurrent connections of the single-send runs: one saturating run, one below saturation.
SEND_CLIENTS = (64, 16)


def setting(name: str) -> str:
    value = os.environ.get(name) or read_env_file().get(name)
    if not value:
        sys.exit(f"{name} is not set: run deploy/local/services start first")
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_api(database_url: str, amqp_url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    environment = {
        **os.environ,
        "PUSH_DATABASE_URL": database_url,
        "PUSH_AMQP_URL": amqp_url,
        "PUSH_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "PUSH_API_PORT": str(port),
        "PUSH_QUEUE_PREFIX": prefix,
        "PUSH_API_KEYS": f"benchmark:admin:{digest}",
        "PUSH_DATABASE_POOL_SIZE": "20",
        "PUSH_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "shared.cli", "api"]
    return subprocess.Popen(command, env=environment)


async def wait_until_ready(base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _attempt in range(100):
            try:
                async with session.get(f"{base_url}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not become ready within 10 s")


async def prepare(base_url: str) -> None:
    """Create the application and one device of user-1."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    device = {
        "appId": APP_ID,
        "token": "ab" * 32,
        "platform": "apns",
        "activationId": "activation-1",
        "activationStatus": "ACTIVE",
        "userId": "user-1",
    }
    async with aiohttp.ClientSession(base_url, headers=headers) as session:
        for path, body in (
            ("/admin/app/create", {"appId": APP_ID}),
            ("/push/device/create", device),
        ):
            async with session.post(path, json={"requestObject": body}) as response:
                if response.status != 200:
                    raise RuntimeError(
                        f"{path} returned {response.status}: {await response.text()}"
                    )


def write_bodies(folder: Path) -> tuple[Path, Path]:
    message = {"userId": "user-1", "body": {"title": "Hello", "body": "A benchmark message"}}
    single = folder / "send.json"
    single.write_bytes(
        orjson.dumps(
            {"requestObject": {"appId": APP_ID, "mode": "ASYNCHRONOUS", "message": message}}
        )
    )
    batch = folder / "batch.json"
    batch.write_bytes(
        orjson.dumps(
            {
                "requestObject": {
                    "appId": APP_ID,
                    "mode": "ASYNCHRONOUS",
                    "batch": [message] * BATCH_SIZE,
                }
            }
        )
    )
    return single, batch


def run_h2load(url: str, body: Path, requests: int, clients: int, log: Path) -> dict[str, Any]:
    """Run h2load and return requests/s and latency percentiles from its per-request log."""
    command = [
        "h2load", "--h1", "-n", str(requests), "-c", str(clients), "-d", str(body),
        "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {API_KEY}",
        "--log-file", str(log), url,
    ]  # fmt: skip
    started = time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - started

    # Each log line: start time (µs), HTTP status, request duration (µs).
    lines = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    statuses = [int(parts[1]) for parts in lines]
    durations = sorted(int(parts[2]) / 1000 for parts in lines)
    failed = sum(1 for status in statuses if status != 200)
    if failed or len(lines) != requests:
        raise RuntimeError(f"{failed} of {len(lines)} requests failed; h2load said:\n{output}")
    return {
        "requests": requests,
        "clients": clients,
        "requests_per_s": round(requests / elapsed, 1),
        "p50_ms": round(durations[len(durations) // 2], 2),
        "p99_ms": round(durations[int(len(durations) * 0.99) - 1], 2),
    }


async def create_database(base_url: str) -> tuple[str, str]:
    name = f"push_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(base_url, name)
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    return name, url


async def drop_database(base_url: str, name: str) -> None:
    admin = await asyncpg.connect(base_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def delete_queues(amqp_url: str, prefix: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for suffix in ("delivery", "campaign", "ingest", "dead"):
            await channel.queue_delete(f"{prefix}.{suffix}")
        for suffix in ("dead", "ingest"):
            await channel.exchange_delete(f"{prefix}.{suffix}")


async def run(sends: int, batches: int) -> dict[str, Any]:
    if shutil.which("h2load") is None:
        sys.exit("h2load is missing: apt-get install nghttp2-client")
    base_database_url = setting("PUSH_DATABASE_URL")
    amqp_url = setting("PUSH_AMQP_URL")
    prefix = f"bench.{uuid.uuid4().hex[:10]}"
    name, database_url = await create_database(base_database_url)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    api = start_api(database_url, amqp_url, prefix, port)
    try:
        await wait_until_ready(base_url)
        await prepare(base_url)
        with tempfile.TemporaryDirectory() as folder:
            single, batch = write_bodies(Path(folder))
            send_url = f"{base_url}/push/message/send"
            send_figures = {
                f"clients_{clients}": await asyncio.to_thread(
                    run_h2load,
                    send_url,
                    single,
                    sends,
                    clients,
                    Path(folder) / f"send-{clients}.log",
                )
                for clients in SEND_CLIENTS
            }
            batch_figures = await asyncio.to_thread(
                run_h2load,
                f"{base_url}/push/message/batch/send",
                batch,
                batches,
                8,
                Path(folder) / "batch.log",
            )
    finally:
        api.terminate()
        api.wait(30)
        await delete_queues(amqp_url, prefix)
        await drop_database(base_database_url, name)

    batch_figures["messages_per_s"] = round(batch_figures["requests_per_s"] * BATCH_SIZE)
    return {"single_send": send_figures, "batch_send": batch_figures, "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a short run that checks the setup")
    arguments = parser.parse_args()
    sends, batches = (2_000, 20) if arguments.smoke else (20_000, 400)
    figures = asyncio.run(run(sends, batches))
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
