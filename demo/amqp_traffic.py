"""Demo traffic over AMQP: send requests published to the push.ingest exchange.

Single and batch sends, with and without replies, each with a message_id. A few requests
are published a second time with the same message_id, and the check expects the same
reply and no new rows.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import orjson

from demo.traffic import APP_ID, BODIES
from shared.queue import QueueNames

REPLY_TIMEOUT_S = 120.0


@dataclass
class AmqpTally:
    """Counts of the AMQP burst: requests published, replies received, rows written."""

    requests: int = 0
    with_reply: int = 0
    replies: int = 0
    errors: int = 0
    republished: int = 0
    republish_mismatches: int = 0
    message_keys: list[str] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)


def request_body(rng: random.Random, user_ids: Sequence[str], batch: int | None) -> bytes:
    def message() -> dict[str, Any]:
        return {
            "userId": rng.choice(user_ids),
            "priority": rng.choice(["HIGH", "NORMAL"]),
            "attributes": {"silent": False, "personal": rng.random() < 0.3},
            "body": rng.choice(BODIES),
        }

    request: dict[str, Any] = {"appId": APP_ID, "mode": rng.choice(["ASYNCHRONOUS", "SYNCHRONOUS"])}
    if batch is None:
        request["message"] = message()
    else:
        request["batch"] = [message() for _ in range(batch)]
    return orjson.dumps({"requestObject": request})


class ReplyCollector:
    """Collects replies by correlation id from one exclusive queue."""

    def __init__(self) -> None:
        self.replies: dict[str, dict[str, Any]] = {}
        self.arrived = asyncio.Event()

    async def on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.replies[message.correlation_id or ""] = orjson.loads(message.body)
            self.arrived.set()

    async def wait_for(self, correlation_ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not correlation_ids <= self.replies.keys() and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 1.0)
            except TimeoutError:
                pass


async def send_amqp_burst(
    amqp_url: str, queue_prefix: str, pool: asyncpg.Pool, user_ids: Sequence[str], seed: int
) -> AmqpTally:
    """Publish the AMQP requests, wait for the replies, and collect the rows they wrote."""
    rng = random.Random(seed + 1)
    tally = AmqpTally()
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        names = QueueNames(queue_prefix)
        exchange = await channel.get_exchange(names.ingest_exchange, ensure=False)
        collector = ReplyCollector()
        replies = await channel.declare_queue(exclusive=True)
        await replies.consume(collector.on_reply)

        plan = [(None, True)] * 100 + [(None, False)] * 50 + [(50, True)] * 10 + [(50, False)] * 5
        expected: dict[str, str] = {}
        republish: list[tuple[str, bytes, str, str]] = []
        for batch, reply in plan:
            key = f"demo-{uuid.uuid4().hex}"
            body = request_body(rng, user_ids, batch)
            request_type = "push.message.send" if batch is None else "push.message.batch.send"
            correlation_id = await publish(
                exchange, names.ingest, request_type, body, key, replies.name, reply
            )
            tally.requests += 1
            tally.message_keys.append(key)
            if reply:
                tally.with_reply += 1
                expected[correlation_id] = key
                if len(republish) < 10:
                    republish.append((request_type, body, key, correlation_id))

        await collector.wait_for(set(expected), REPLY_TIMEOUT_S)
        second: dict[str, str] = {}
        for request_type, body, key, first_correlation in republish:
            correlation_id = await publish(
                exchange, names.ingest, request_type, body, key, replies.name, True
            )
            second[correlation_id] = first_correlation
        await collector.wait_for(set(second), REPLY_TIMEOUT_S)

    tally_replies(tally, collector, expected, second)
    tally.message_ids = await rows_of(pool, tally.message_keys)
    return tally


async def publish(
    exchange: aio_pika.abc.AbstractExchange,
    routing_key: str,
    request_type: str,
    body: bytes,
    key: str,
    reply_queue: str,
    reply: bool,
) -> str:
    correlation_id = uuid.uuid4().hex
    await exchange.publish(
        aio_pika.Message(
            body,
            type=request_type,
            message_id=key,
            correlation_id=correlation_id if reply else None,
            reply_to=reply_queue if reply else None,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=routing_key,
    )
    return correlation_id


def tally_replies(
    tally: AmqpTally,
    collector: ReplyCollector,
    expected: dict[str, str],
    second: dict[str, str],
) -> None:
    for correlation_id in expected:
        answer = collector.replies.get(correlation_id)
        if answer is None:
            continue
        tally.replies += 1
        if answer.get("status") != "OK":
            tally.errors += 1
    for correlation_id, first_correlation in second.items():
        tally.republished += 1
        first = collector.replies.get(first_correlation, {}).get("responseObject", {})
        again = collector.replies.get(correlation_id, {}).get("responseObject", {})
        if first.get("messageIds") != again.get("messageIds"):
            tally.republish_mismatches += 1


async def rows_of(pool: asyncpg.Pool, keys: list[str], timeout_s: float = 60.0) -> list[int]:
    """Return the rows written for the message ids, once every request has been consumed.

    Every consumed request stores its message_id in the idempotency store, also when it
    found no device, so all are done when every key is stored.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        consumed = await pool.fetchval(
            "SELECT count(*) FROM push_idempotency WHERE idempotency_key = ANY($1::text[])", keys
        )
        if consumed >= len(keys):
            break
        await asyncio.sleep(0.5)
    rows = await pool.fetch(
        "SELECT id FROM push_message WHERE idempotency_key = ANY($1::text[])", keys
    )
    return sorted(row["id"] for row in rows)
