"""Quick load client: how many APNs or FCM sends per second a sandbox accepts.

    python -m workers.sandbox.load --provider apns --requests 50000 --concurrency 500

Starts its own sandbox process unless `--admin-url` names a running one, registers fresh
credentials, sends over HTTP/2 with pyreqwest and prints one JSON line with the rate. The
client shares the machine with the sandbox, so the figure is a floor for the sandbox alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import uvloop
from pyreqwest.client import Client, ClientBuilder

from workers.sandbox.control import SandboxAdmin, SandboxProcess, SandboxUrls
from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount

APNS_PAYLOAD = b'{"aps":{"alert":{"title":"Load","body":"Sandbox load test"}}}'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--provider", choices=["apns", "fcm"], default="apns")
    parser.add_argument("--requests", type=int, default=20_000, help="number of sends")
    parser.add_argument("--concurrency", type=int, default=500, help="sends in flight")
    parser.add_argument(
        "--connections", type=int, default=2, help="HTTP/2 connections (one client each)"
    )
    parser.add_argument("--admin-url", help="admin URL of a running sandbox to use")
    parser.add_argument("--sandbox-args", default="", help="extra sandbox flags, space-separated")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    process: SandboxProcess | None = None
    if arguments.admin_url:
        info = SandboxAdmin(arguments.admin_url).request("GET", "/info")
        info["admin_url"] = arguments.admin_url
        urls = SandboxUrls.from_ready_json(info)
    else:
        process = SandboxProcess(extra_args=arguments.sandbox_args.split())
        urls = process.start()
    try:
        result = uvloop.run(_run(arguments, urls))
    finally:
        if process is not None:
            process.stop()
    print(json.dumps(result))
    return 0 if result["failed"] == 0 else 1


async def _run(arguments: argparse.Namespace, urls: SandboxUrls) -> dict[str, Any]:
    admin = SandboxAdmin(urls.admin_url)
    clients = [_client(urls) for _ in range(arguments.connections)]
    if arguments.provider == "apns":
        url, headers, body = _prepare_apns(admin, urls)
    else:
        url, headers, body = await _prepare_fcm(admin, urls, clients[0])

    # A fixed suffix keeps generated tokens clear of the built-in markers (0000dead, 00000bad).
    token_suffix = "10ad10ad"
    statuses: Counter[int] = Counter()
    remaining = iter(range(arguments.requests))

    async def worker(client: Client) -> None:
        for index in remaining:
            token = (
                f"{index:056x}{token_suffix}"
                if arguments.provider == "apns"
                else f"load{index}:APA91b"
            )
            request_url = f"{url}/{token}" if arguments.provider == "apns" else url
            request_body = (
                body if arguments.provider == "apns" else body.replace(b"TOKEN", token.encode())
            )
            response = await (
                client.post(request_url).headers(headers).body_bytes(request_body).build().send()
            )
            await response.bytes()
            statuses[response.status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(arguments.concurrency)))
    elapsed_s = time.perf_counter() - started
    for client in clients:
        await client.close()

    ok = statuses.get(200, 0)
    return {
        "provider": arguments.provider,
        "requests": arguments.requests,
        "concurrency": arguments.concurrency,
        "connections": arguments.connections,
        "elapsed_s": round(elapsed_s, 3),
        "rate_per_s": round(arguments.requests / elapsed_s),
        "ok": ok,
        "failed": arguments.requests - ok,
        "statuses": dict(statuses),
    }


def _client(urls: SandboxUrls) -> Client:
    return (
        ClientBuilder()
        .add_root_certificate_pem(urls.ca_file.read_bytes())
        .http2(True)
        .http2_prior_knowledge()
        .max_connections(1)
        .timeout(timedelta(seconds=30))
        .build()
    )


def _prepare_apns(admin: SandboxAdmin, urls: SandboxUrls) -> tuple[str, dict[str, str], bytes]:
    key = ApnsSigningKey.generate(bundle_id="com.example.load")
    admin.register_apns_key(key)
    headers = {
        "authorization": "bearer " + key.provider_token(),
        "apns-topic": key.bundle_id,
        "apns-push-type": "alert",
        "apns-priority": "10",
    }
    return f"{urls.apns_url}/3/device", headers, APNS_PAYLOAD


async def _prepare_fcm(
    admin: SandboxAdmin, urls: SandboxUrls, client: Client
) -> tuple[str, dict[str, str], bytes]:
    account = FcmServiceAccount.generate(project_id="load-project")
    admin.register_fcm_account(account)
    response = await (
        client.post(urls.fcm_token_url)
        .form(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": account.assertion(),
            }
        )
        .build()
        .send()
    )
    access_token = (await response.json())["access_token"]
    headers = {"authorization": f"Bearer {access_token}", "content-type": "application/json"}
    body = json.dumps(
        {"message": {"token": "TOKEN", "data": {"id": secrets.token_hex(8)}}}
    ).encode()
    return f"{urls.fcm_url}/v1/projects/load-project/messages:send", headers, body


if __name__ == "__main__":
    sys.exit(main())
