"""Benchmark of the APNs client path against the sandbox: provider token, payload, classification.

No database or queue: one process builds one payload and sends it to many device tokens
through `ApnsClient.send`, keeping `--in-flight` notifications outstanding, and ends with
one JSON line of figures. A bare pyreqwest loop over the same connection settings runs
too, which separates the client's own overhead from the sandbox's limit. aioapns (at
its default ten connections) runs last when it is installed.

    python -m tests.benchmarks.transport            # 50,000 notifications
    python -m tests.benchmarks.transport --smoke    # 2,000, to check that it runs

The sandbox is a Python process on the same machine, so on a small machine it competes
with the client for CPU and its rate caps the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop

from shared.message_body import MessageAttributes, MessageBody, Priority
from workers.providers.apns import ApnsClient
from workers.providers.base import (
    ApplicationCredentials,
    ProviderEndpoints,
    apns_id_for,
    build_payload,
)
from workers.providers.tokens import ApnsTokenCache
from workers.providers.transport import Http2Transport, Http2TransportFactory
from workers.sandbox.control import SandboxProcess, SandboxUrls
from workers.sandbox.credentials import ApnsSigningKey

SMOKE_NOTIFICATIONS = 2_000
WARM_UP_NOTIFICATIONS = 1_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.transport",
        description="Measure APNs notifications per second through ApnsClient against the sandbox.",
    )
    parser.add_argument("--notifications", type=int, default=50_000, help="notifications to send")
    parser.add_argument("--in-flight", type=int, default=1_000, help="notifications outstanding")
    parser.add_argument(
        "--connections", type=int, default=1, help="maximum HTTP/2 connections of the client"
    )
    parser.add_argument("--smoke", action="store_true", help=f"send {SMOKE_NOTIFICATIONS} only")
    parser.add_argument(
        "--skip-bare", action="store_true", help="skip the bare pyreqwest comparison loop"
    )
    return parser


def endpoints_for(urls: SandboxUrls) -> ProviderEndpoints:
    return ProviderEndpoints(
        apns_production_url=urls.apns_url,
        apns_development_url=urls.apns_development_url,
        ca_file=urls.ca_file,
    )


def credentials_for(key: ApnsSigningKey) -> ApplicationCredentials:
    return ApplicationCredentials(
        id=1,
        app_id="benchmark",
        timestamp_last_updated=datetime.now(UTC),
        apns_key_id=key.key_id,
        apns_team_id=key.team_id,
        apns_bundle=key.bundle_id,
        apns_private_key=key.private_key_pem.encode(),
    )


async def run_with_limit(
    count: int, in_flight: int, send: Callable[[int], Awaitable[str]]
) -> tuple[float, Counter[str]]:
    """Run `send(i)` for i in range(count), `in_flight` at a time; return seconds and outcomes."""
    outcomes: Counter[str] = Counter()
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            outcomes[await send(index)] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started, outcomes


async def measure_client(
    urls: SandboxUrls, key: ApnsSigningKey, arguments: argparse.Namespace, tokens: list[str]
) -> dict[str, Any]:
    endpoints = endpoints_for(urls)
    factory = Http2TransportFactory(ca_file=urls.ca_file, max_connections=arguments.connections)
    client = ApnsClient.from_credentials(credentials_for(key), endpoints, factory, ApnsTokenCache())
    body = MessageBody(title="Benchmark", body="Your payment of 10 € arrived", badge=1)
    payload = build_payload("apns", body, MessageAttributes(), Priority.HIGH)

    async def send(index: int) -> str:
        result = await client.send(
            tokens[index], payload, apns_id=apns_id_for("message", index), environment=None
        )
        return str(result.outcome)

    try:
        await run_with_limit(min(WARM_UP_NOTIFICATIONS, len(tokens)), arguments.in_flight, send)
        seconds, outcomes = await run_with_limit(len(tokens), arguments.in_flight, send)
        transport = client.lanes["production"].transport
        connections = len(transport.pool) if isinstance(transport, Http2Transport) else None
    finally:
        await client.aclose()
    return {
        "seconds": round(seconds, 3),
        "per_second": round(len(tokens) / seconds),
        "outcomes": dict(outcomes),
        "connections": connections,
    }


async def measure_bare_pyreqwest(
    urls: SandboxUrls, key: ApnsSigningKey, arguments: argparse.Namespace, tokens: list[str]
) -> dict[str, Any]:
    """Send the same requests with pyreqwest directly: no client logic, one token."""
    from pyreqwest.client import ClientBuilder

    client = (
        ClientBuilder()
        .http2_prior_knowledge()
        .add_root_certificate_pem(urls.ca_file.read_bytes())
        .build()
    )
    headers = {
        "authorization": "bearer " + key.provider_token(),
        "apns-topic": key.bundle_id,
        "apns-push-type": "alert",
        "apns-priority": "10",
    }
    body = orjson.dumps({"aps": {"alert": {"title": "Benchmark", "body": "bare"}}})
    base = urls.apns_url + "/3/device/"

    async def send(index: int) -> str:
        response = (
            await client.post(base + tokens[index]).headers(headers).body_bytes(body).build().send()
        )
        await response.bytes()
        return str(response.status)

    try:
        await run_with_limit(min(WARM_UP_NOTIFICATIONS, len(tokens)), arguments.in_flight, send)
        seconds, outcomes = await run_with_limit(len(tokens), arguments.in_flight, send)
    finally:
        await client.close()
    return {
        "seconds": round(seconds, 3),
        "per_second": round(len(tokens) / seconds),
        "statuses": dict(outcomes),
    }


async def measure_aioapns(
    urls: SandboxUrls, key: ApnsSigningKey, arguments: argparse.Namespace, tokens: list[str]
) -> dict[str, Any] | None:
    """Send the same notifications with aioapns at its default ten connections, if installed."""
    try:
        from aioapns import APNs, NotificationRequest, PushType
        from aioapns.connection import APNsProductionClientProtocol
    except ImportError:
        return None

    address = urlsplit(urls.apns_url)

    class SandboxProtocol(APNsProductionClientProtocol):
        # aioapns has no URL setting; its protocol class names the host and port.
        APNS_SERVER = address.hostname or "127.0.0.1"
        APNS_PORT = address.port or 443

    client = APNs(
        key=key.private_key_pem,
        key_id=key.key_id,
        team_id=key.team_id,
        topic=key.bundle_id,
        ssl_context=urls.ssl_context(),
    )
    client.pool.protocol_class = SandboxProtocol
    message = {"aps": {"alert": {"title": "Benchmark", "body": "Your payment of 10 € arrived"}}}

    async def send(index: int) -> str:
        request = NotificationRequest(
            device_token=tokens[index],
            message=message,
            notification_id=apns_id_for("message", index),
            push_type=PushType.ALERT,
        )
        result = await client.send_notification(request)
        return str(result.status)

    try:
        await run_with_limit(min(WARM_UP_NOTIFICATIONS, len(tokens)), arguments.in_flight, send)
        seconds, outcomes = await run_with_limit(len(tokens), arguments.in_flight, send)
    finally:
        client.pool.close()
    return {
        "seconds": round(seconds, 3),
        "per_second": round(len(tokens) / seconds),
        "statuses": dict(outcomes),
    }


async def run(arguments: argparse.Namespace) -> dict[str, Any]:
    count = SMOKE_NOTIFICATIONS if arguments.smoke else arguments.notifications
    tokens = [secrets.token_hex(32) for _ in range(count)]

    sandbox = SandboxProcess()
    await sandbox.astart()
    try:
        await sandbox.admin.aupdate_settings(markers=False)
        key = ApnsSigningKey.generate()
        await sandbox.admin.aregister_apns_key(key)

        client = await measure_client(sandbox.urls, key, arguments, tokens)
        bare = (
            None
            if arguments.skip_bare
            else await measure_bare_pyreqwest(sandbox.urls, key, arguments, tokens)
        )
        aioapns = await measure_aioapns(sandbox.urls, key, arguments, tokens)
        accepted = (await sandbox.admin.acounters())["accepted"]["apns"]
    finally:
        await sandbox.astop()

    return {
        "benchmark": "apns_client_path",
        "notifications": count,
        "in_flight": arguments.in_flight,
        "max_connections": arguments.connections,
        "client": client,
        "bare_pyreqwest": bare,
        "aioapns": aioapns,
        "sandbox_accepted": accepted,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    figures = uvloop.run(run(arguments))
    print(orjson.dumps(figures).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
