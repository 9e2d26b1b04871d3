"""Helpers shared by the handlers: the service context, request parsing, parameters."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from api.envelope import read_json
from shared.context import ServiceContext
from shared.requests import ObjectRequest, invalid, parse_request

CONTEXT_KEY = web.AppKey("context", ServiceContext)

ModelT = TypeVar("ModelT", bound=BaseModel)

# Row ids are PostgreSQL BIGINTs.
MAX_ROW_ID = 2**63 - 1


def context_of(request: web.Request) -> ServiceContext:
    return request.app[CONTEXT_KEY]


def body_limit(request: web.Request) -> int:
    from api.routes import endpoint_of  # the route table imports the handlers

    settings = context_of(request).settings
    endpoint = endpoint_of(request)
    if endpoint is not None and endpoint.bulk_body:
        return settings.api_max_bulk_body_bytes
    return settings.api_max_body_bytes


async def read_object(request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse `{"requestObject": ...}` into the model; raise RequestInvalid."""
    document = await read_json(request, body_limit(request))
    envelope = parse_request(ObjectRequest[model], document)  # type: ignore[valid-type]
    payload: ModelT = envelope.request_object
    return payload


async def read_raw(request: web.Request, model: type[ModelT]) -> ModelT:
    """Parse a body without the envelope (the activation status callback)."""
    document = await read_json(request, body_limit(request))
    return parse_request(model, document)


async def read_user_ids(request: web.Request) -> list[str]:
    """Parse `{"requestObject": ["user1", ...]}`."""
    document = await read_json(request, body_limit(request))
    if not isinstance(document, dict) or "requestObject" not in document:
        raise invalid("requestObject", "Field required")
    users: Any = document["requestObject"]
    if not isinstance(users, list):
        raise invalid("requestObject", "must be a list of user ids")
    for index, user_id in enumerate(users):
        if not isinstance(user_id, str):
            raise invalid(f"requestObject[{index}]", "a user id must be a string")
    return users


def is_decimal(text: str) -> bool:
    """Return whether the text is ASCII digits only.

    str.isdigit() also accepts digits of other scripts (Arabic-Indic, superscripts), some of
    which int() rejects and others it reads as numbers the caller did not write.
    """
    return text.isascii() and text.isdigit() and len(text) <= 20


def path_id(request: web.Request, name: str = "id") -> int:
    """Return a numeric path parameter; raise RequestInvalid unless it is a row id."""
    text = request.match_info[name]
    if not is_decimal(text) or not 1 <= int(text) <= MAX_ROW_ID:
        raise invalid(name, f"must be a whole number from 1 to {MAX_ROW_ID}")
    return int(text)


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not is_decimal(text) or not low <= int(text) <= high:
        raise invalid(name, f"must be a whole number from {low} to {high}")
    return int(text)


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if text.lower() not in ("true", "false"):
        raise invalid(name, "must be true or false")
    return text.lower() == "true"


def query_text(request: web.Request, name: str) -> str:
    text = request.query.get(name)
    if not text:
        raise invalid(name, "Query parameter is required")
    if len(text) > 255 or "\x00" in text:
        raise invalid(name, "must have 1 to 255 characters")
    return text
