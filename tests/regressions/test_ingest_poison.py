"""AMQP requests whose processing raises an exception that the ingest consumer does not catch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.ingest.test_ingest import APP_ID, Backend, application, backend, worker
from tests.workers.conftest import SandboxApplication, provider_sandbox

__all__ = ["application", "backend", "provider_sandbox", "worker"]

# With the envelope around it this nesting is deeper than the 255 levels that orjson
# serialises, so the idempotency hash raises TypeError("Recursion limit reached"). Deeper
# extras fail earlier, in pydantic's model_dump, with a ValueError that is handled.
EXTRAS_DEPTH = 254
# contains_nul recurses once per nesting level, so a NUL at this depth raises RecursionError.
NUL_DEPTH = 990


def deep_extras_body() -> bytes:
    extras: dict[str, Any] = {"leaf": 1}
    for _ in range(EXTRAS_DEPTH):
        extras = {"a": extras}
    request = {
        "requestObject": {
            "appId": APP_ID,
            "mode": "ASYNCHRONOUS",
            "message": {"userId": "alice", "body": {"title": "Hi", "extras": extras}},
        }
    }
    # The standard library encoder has no depth limit of 255, unlike orjson.
    return json.dumps(request).encode()


def deep_nul_body() -> bytes:
    return b'{"requestObject":' + b"[" * NUL_DEPTH + b'"\\u0000"' + b"]" * NUL_DEPTH + b"}"


@pytest.mark.parametrize(
    ("body", "message_id"),
    [(deep_extras_body(), "deep-extras-1"), (deep_nul_body(), None)],
    ids=["deep-extras", "deep-nul"],
)
async def test_deeply_nested_request_dead_lettered(
    application: SandboxApplication, backend: Backend, body: bytes, message_id: str | None
) -> None:
    correlation_id = await backend.publish("push.message.send", body, message_id=message_id)

    reply = await backend.reply(correlation_id, timeout_s=10)
    dead = await backend.dead_letter(timeout_s=10)

    assert reply["status"] == "ERROR"
    assert reply["responseObject"]["code"] == "ERROR_REQUEST"
    assert dead.body == body
