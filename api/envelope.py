"""The original's response envelope and the reading of JSON request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from shared.exceptions import BodyTooLarge, UnsupportedMediaType
from shared.requests import decode_json

JSON_TYPES = ("application/json", "application/octet-stream", "text/plain", "")

READ_CHUNK_BYTES = 256 * 1024


def default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_response(document: dict[str, Any], status: int = 200) -> web.Response:
    body = orjson.dumps(document, default=default, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")


def ok(response_object: Any = None, **top_level: Any) -> web.Response:
    """Return `{"status": "OK"}` with an optional responseObject and top-level fields."""
    document: dict[str, Any] = {"status": "OK"}
    document.update(top_level)
    if response_object is not None:
        document["responseObject"] = response_object
    return json_response(document)


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """Return the original's error envelope."""
    response_object: dict[str, Any] = {"code": code, "message": message}
    response_object.update(extra)
    return json_response({"status": "ERROR", "responseObject": response_object}, status)


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    """Read the body up to limit_bytes; raise BodyTooLarge beyond it."""
    if request.content_length is not None:
        if request.content_length > limit_bytes:
            raise BodyTooLarge(limit_bytes)
        # The declared length is within the limit, and aiohttp reads no more than it.
        return await request.read()
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(READ_CHUNK_BYTES)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge(limit_bytes)
        chunks.append(chunk)


async def read_json(request: web.Request, limit_bytes: int) -> Any:
    """Read and parse a JSON body; raise RequestInvalid for malformed JSON or NUL characters."""
    media_type = request.content_type.lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {media_type} is not supported; send application/json"
        )
    body = await read_body(request, limit_bytes)
    return decode_json(body)
