"""Message endpoints (/push/message/*)."""

from __future__ import annotations

from aiohttp import web

from api.envelope import ok
from api.handlers.common import context_of, path_id, read_object
from api.metrics import ROWS_WRITTEN
from shared import messages
from shared.idempotency import check_key
from shared.requests import SendMessageBatchRequest, SendMessageRequest

IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    return None if key is None else check_key(key)


async def send_message(request: web.Request) -> web.Response:
    key = idempotency_key(request)
    payload = await read_object(request, SendMessageRequest)
    result = await messages.send_messages(context_of(request), payload, key)
    if not result.replayed:
        ROWS_WRITTEN.labels("push_message").inc(len(result.all_ids))
    return ok(result.to_response())


async def send_message_batch(request: web.Request) -> web.Response:
    key = idempotency_key(request)
    payload = await read_object(request, SendMessageBatchRequest)
    result = await messages.send_messages(context_of(request), payload, key)
    if not result.replayed:
        ROWS_WRITTEN.labels("push_message").inc(len(result.all_ids))
    return ok(result.to_response())


async def get_message(request: web.Request) -> web.Response:
    detail = await messages.get_message(context_of(request), path_id(request))
    return ok(detail)
