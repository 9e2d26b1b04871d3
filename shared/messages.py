"""Sending messages: device selection, row writing, publishing and SYNCHRONOUS waiting.

A send writes one PENDING push_message row per target device with an INSERT ... SELECT
that concurrent requests share (`shared.message_writer`), publishes the row ids, and
responds. The API never calls a provider: workers claim the rows from the queue.

Device selection for each message: the user's devices of the application (only the one
with the activation id, when given), without invalidated tokens, and for personal messages
only active devices. A user without devices is not an error: the counters stay at zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.applications import CREDENTIALS_NOT_FOUND, find_application_id
from shared.context import ServiceContext
from shared.exceptions import ApplicationNotFound, MessageNotFound, PublishFailed, RequestInvalid
from shared.idempotency import claim, hash_request, store
from shared.message_waiter import MESSAGE_DONE_CHANNEL, count_statuses
from shared.message_writer import WriteRequest, WrittenRows, write_requests
from shared.requests import (
    Platform,
    PushMessage,
    SendMessageBatchRequest,
    SendMessageRequest,
    SendMode,
)

__all__ = ["MESSAGE_DONE_CHANNEL", "SendResult", "get_message", "send_messages"]

logger = logging.getLogger(__name__)

STATUS_NAMES = {0: "PENDING", 1: "SENT", 2: "SENDING", -1: "FAILED"}

MESSAGE_STATUSES = "SELECT id, status FROM push_message WHERE id = ANY($1::bigint[])"

MESSAGE_DETAIL = """
SELECT m.id, a.app_id, m.user_id, m.activation_id, d.platform, m.status, m.attempts,
       m.failure_reason, m.priority, m.silent, m.personal, m.timestamp_created,
       m.timestamp_queued, m.next_attempt_at, m.timestamp_sent, m.provider_message_id
FROM push_message AS m
JOIN push_app_credentials AS a ON a.id = m.app_id
LEFT JOIN push_device AS d ON d.id = m.device_registration_id
WHERE m.id = $1
"""


@dataclass(slots=True)
class SendResult:
    """The rows one send request created, by provider, and their counters once known."""

    mode: SendMode
    message_ids: dict[str, list[int]] = field(default_factory=dict)
    counters: dict[str, dict[str, int]] | None = None
    replayed: bool = False

    @property
    def all_ids(self) -> list[int]:
        return sorted(row_id for ids in self.message_ids.values() for row_id in ids)

    def to_stored(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "messageIds": self.message_ids}

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> SendResult:
        return cls(SendMode(stored["mode"]), dict(stored["messageIds"]), replayed=True)

    def to_response(self) -> dict[str, Any]:
        """Return the original's responseObject plus the messageIds addition."""
        response: dict[str, Any] = {"mode": self.mode.value}
        if self.counters is not None:
            response.update(self.counters)
        response["messageIds"] = self.all_ids
        return response


def check_batch_size(context: ServiceContext, request: SendMessageBatchRequest) -> None:
    limit = context.settings.send_batch_max_messages
    if len(request.batch) > limit:
        raise RequestInvalid(
            "Request validation failed",
            [
                {
                    "fieldName": "requestObject.batch",
                    "hint": f"Too many messages in batch: {len(request.batch)},"
                    f" the limit is {limit} (PUSH_SEND_BATCH_MAX_MESSAGES)",
                }
            ],
        )


async def send_messages(
    context: ServiceContext,
    request: SendMessageRequest | SendMessageBatchRequest,
    idempotency_key: str | None = None,
    *,
    require_publish: bool = False,
) -> SendResult:
    """Write the rows of a send or batch send, publish them, and wait in SYNCHRONOUS mode.

    Raises ApplicationNotFound, RequestInvalid and IdempotencyKeyReused. A failed publish
    does not fail the request: the rows are committed and the sweeper publishes them.
    With `require_publish` (the AMQP ingest, which acks only after a confirmed publish)
    it raises PublishFailed instead, and a replayed request publishes its rows again.
    """
    if isinstance(request, SendMessageBatchRequest):
        check_batch_size(context, request)
        messages = request.batch
    else:
        messages = [request.message]

    if idempotency_key is None:
        written = await context.writer.write(WriteRequest(request.app_id, messages))
        result = to_result(request.app_id, request.mode, written)
    else:
        result = await insert_once(context, request, messages, idempotency_key)

    if require_publish:
        await context.publisher.publish_delivery("message", result.all_ids)
    elif not result.replayed:
        await publish_rows(context, result.all_ids)
    if result.mode is SendMode.SYNCHRONOUS:
        await context.waiter.wait(result.all_ids, context.settings.send_sync_timeout_s)
        result.counters = await read_counters(context.pool, result.message_ids)
    return result


def to_result(app_id: str, mode: SendMode, written: WrittenRows) -> SendResult:
    """Return the rows written for a request by provider; raise ApplicationNotFound."""
    if not written.app_found:
        raise ApplicationNotFound(CREDENTIALS_NOT_FOUND)
    result = SendResult(mode)
    for row_id, platform in written.rows:
        result.message_ids.setdefault(platform, []).append(row_id)
    if not result.message_ids:
        logger.warning("no device found for the messages of app=%s", app_id)
    return result


async def insert_once(
    context: ServiceContext,
    request: SendMessageRequest | SendMessageBatchRequest,
    messages: list[PushMessage],
    idempotency_key: str,
) -> SendResult:
    """Insert the rows unless the key was used before; the claim and rows commit together."""
    app_row_id = await find_application_id(context.pool, request.app_id, CREDENTIALS_NOT_FOUND)
    request_hash = hash_request(request.model_dump(mode="json", by_alias=True))
    async with context.pool.acquire() as connection, connection.transaction():
        stored = await claim(
            connection,
            app_row_id,
            idempotency_key,
            request_hash,
            context.settings.idempotency_ttl_s,
        )
        if stored is not None:
            logger.info("replaying send of app=%s for a repeated Idempotency-Key", request.app_id)
            return SendResult.from_stored(stored)
        written = await write_requests(
            connection, [WriteRequest(request.app_id, messages, idempotency_key)]
        )
        result = to_result(request.app_id, request.mode, written[0])
        await store(connection, app_row_id, idempotency_key, result.to_stored())
    return result


async def publish_rows(context: ServiceContext, ids: list[int]) -> None:
    try:
        await context.publisher.publish_delivery("message", ids)
    except PublishFailed as error:
        # The rows stay PENDING with timestamp_queued NULL, so the sweeper publishes them.
        logger.warning("publishing %d message ids failed, the sweeper will: %s", len(ids), error)


async def read_counters(
    pool: asyncpg.Pool, message_ids: dict[str, list[int]]
) -> dict[str, dict[str, int]]:
    """Return sent, failed, pending and total per provider; unfinished rows are pending."""
    ids = [row_id for chunk in message_ids.values() for row_id in chunk]
    rows = await pool.fetch(MESSAGE_STATUSES, ids) if ids else []
    status_by_id = {row["id"]: row["status"] for row in rows}
    return {
        platform.value: count_statuses(
            [status_by_id.get(row_id, 0) for row_id in message_ids.get(platform.value, [])]
        )
        for platform in Platform
    }


async def get_message(context: ServiceContext, message_id: int) -> dict[str, Any]:
    """Return a message's delivery state; raise MessageNotFound."""
    row = await context.pool.fetchrow(MESSAGE_DETAIL, message_id)
    if row is None:
        raise MessageNotFound(f"Message {message_id} does not exist")
    detail = {
        "id": row["id"],
        "appId": row["app_id"],
        "userId": row["user_id"],
        "activationId": row["activation_id"],
        "platform": row["platform"],
        "status": STATUS_NAMES[row["status"]],
        "attempts": row["attempts"],
        "failureReason": row["failure_reason"],
        "priority": row["priority"],
        "silent": row["silent"],
        "personal": row["personal"],
        "timestampCreated": row["timestamp_created"],
        "timestampQueued": row["timestamp_queued"],
        "nextAttemptAt": row["next_attempt_at"] if row["status"] == 0 else None,
        "timestampSent": row["timestamp_sent"],
        "providerMessageId": row["provider_message_id"],
    }
    return {key: value for key, value in detail.items() if value is not None}
