"""Run the demo against a running stack: `python -m demo --size small`.

Reads PUSH_DATABASE_URL (for the report) and PUSH_DEMO_API_KEY (an admin key of the API)
from the environment. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

import aiohttp
import asyncpg
import orjson

from demo.amqp_traffic import AmqpTally, send_amqp_burst
from demo.client import PushApi
from demo.data import SIZES, generate
from demo.report import Check, check_campaign, check_messages, describe
from demo.traffic import create_application, create_campaign, register_devices, send_burst
from workers.sandbox.control import SandboxAdmin

logger = logging.getLogger("demo")

PROGRESS_INTERVAL_S = 1.0


def say(text: str) -> None:
    print(text, flush=True)


async def wait_until_ready(api_url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{api_url}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API at {api_url} was not ready within {timeout_s:.0f} s")
            await asyncio.sleep(0.5)


async def follow_campaign(api: PushApi, campaign_id: int, timeout_s: float) -> float:
    """Print progress until the campaign completes; return its duration in seconds."""
    started = time.monotonic()
    last_line = 0.0
    interactive = sys.stdout.isatty()
    while True:
        progress = await api.get(f"/push/campaign/{campaign_id}/progress")
        elapsed = time.monotonic() - started
        counts = progress.get("counts", {})
        line = (
            f"campaign {campaign_id}: {progress.get('state')},"
            f" {progress.get('devices', 0)} devices,"
            f" sent {counts.get('sent', 0)}, failed {counts.get('failed', 0)},"
            f" pending {counts.get('pending', 0)}, sending {counts.get('sending', 0)},"
            f" {progress.get('ratePerSecond', 0):.0f}/s,"
            f" about {progress.get('estimatedSecondsLeft', 0) or 0:.0f} s left"
        )
        if interactive:
            print("\r" + line.ljust(140), end="", flush=True)
        elif elapsed - last_line >= 5:
            say(line)
            last_line = elapsed
        if progress.get("state") == "completed":
            if interactive:
                print(flush=True)
            return elapsed
        if elapsed > timeout_s:
            raise TimeoutError(f"campaign {campaign_id} did not complete in {timeout_s:.0f} s")
        await asyncio.sleep(PROGRESS_INTERVAL_S)


async def wait_for_messages(pool: asyncpg.Pool, ids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await pool.fetchval(
        "SELECT count(*) FROM push_message WHERE id = ANY($1::bigint[]) AND status IN (0, 2)", ids
    ):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)


async def run(arguments: argparse.Namespace) -> dict[str, Any]:
    api_key = os.environ["PUSH_DEMO_API_KEY"]
    sandbox = SandboxAdmin(arguments.sandbox_admin_url)
    await wait_until_ready(arguments.api_url)
    api = PushApi(arguments.api_url, api_key, connections=arguments.concurrency)
    pool = await asyncpg.create_pool(os.environ["PUSH_DATABASE_URL"], min_size=1, max_size=4)
    try:
        return await run_demo(arguments, api, sandbox, pool)
    finally:
        await api.close()
        await pool.close()


async def run_demo(
    arguments: argparse.Namespace, api: PushApi, sandbox: SandboxAdmin, pool: asyncpg.Pool
) -> dict[str, Any]:
    await create_application(api, sandbox)
    devices = generate(SIZES[arguments.size], seed=arguments.seed)
    user_ids = sorted({device.user_id for device in devices})
    say(f"registering {len(devices)} devices of {len(user_ids)} users through the API")
    seconds = await register_devices(api, devices, arguments.concurrency, lambda done: None)
    say(f"registered {len(devices)} devices in {seconds:.1f} s ({len(devices) / seconds:.0f}/s)")

    await asyncio.to_thread(sandbox.reset)
    campaign_id = await create_campaign(api, user_ids)
    await api.call("POST", f"/push/campaign/send/live/{campaign_id}")
    say(f"campaign {campaign_id} to {len(user_ids)} users started")
    campaign_seconds = await follow_campaign(api, campaign_id, arguments.timeout)
    campaign = await check_campaign(pool, sandbox, campaign_id, len(devices))

    await asyncio.to_thread(sandbox.reset)
    tally, amqp = await asyncio.gather(
        send_burst(api, user_ids, arguments.seed),
        send_amqp_burst(
            os.environ["PUSH_AMQP_URL"], arguments.queue_prefix, pool, user_ids, arguments.seed
        ),
    )
    message_ids = tally.message_ids + amqp.message_ids
    await wait_for_messages(pool, message_ids, timeout_s=120)
    messages = await check_messages(pool, sandbox, message_ids)

    for line in describe(f"campaign {campaign_id}", campaign):
        say(line)
    say(
        f"direct sends: {tally.requests} requests for {tally.messages} messages"
        f" ({len(tally.message_ids)} rows for the targeted devices)"
    )
    say(
        f"AMQP sends: {amqp.requests} requests ({amqp.with_reply} with a reply),"
        f" {amqp.replies} replies, {amqp.errors} error replies, {len(amqp.message_ids)} rows;"
        f" {amqp.republished} republished with the same message_id,"
        f" {amqp.republish_mismatches} answered differently"
    )
    for line in describe("direct sends (HTTP and AMQP)", messages):
        say(line)
    return summary(campaign, messages, campaign_seconds, amqp)


def summary(campaign: Check, messages: Check, seconds: float, amqp: AmqpTally) -> dict[str, Any]:
    finished = campaign.sent + campaign.failed
    return {
        "devices": campaign.expected,
        "sent": campaign.sent,
        "failed": campaign.failed,
        "lost": campaign.lost + campaign.open,
        "duplicates": campaign.duplicates,
        "unmarked_invalid": campaign.unmarked_invalid,
        "seconds": round(seconds, 1),
        "rate": round(finished / seconds, 1) if seconds > 0 else 0,
        "messages": messages.expected,
        "messages_sent": messages.sent,
        "messages_failed": messages.failed,
        "messages_lost": messages.lost + messages.open,
        "messages_duplicates": messages.duplicates,
        "amqp_requests": amqp.requests,
        "amqp_replies_missing": amqp.with_reply - amqp.replies,
        "amqp_republish_mismatches": amqp.republish_mismatches,
        "ok": campaign.ok
        and messages.ok
        and amqp.replies == amqp.with_reply
        and amqp.errors == 0
        and amqp.republish_mismatches == 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--api-url", default="http://127.0.0.1:8080", help="the API's base URL")
    parser.add_argument(
        "--sandbox-admin-url", default="http://127.0.0.1:56005", help="the sandbox admin endpoint"
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="default",
        help="small: 3,000 devices; default: 150,000; 1m: 1,000,000",
    )
    parser.add_argument(
        "--queue-prefix",
        default=os.environ.get("PUSH_QUEUE_PREFIX", "push"),
        help="queue prefix of the stack, for the AMQP ingest exchange",
    )
    parser.add_argument("--seed", type=int, default=20261204, help="seed of the demo data")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="API requests in flight while registering devices",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds the campaign may take before the demo gives up",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    result = asyncio.run(run(arguments))
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
