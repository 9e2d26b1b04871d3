"""A bounded fuzz run over every endpoint: no input gets a 5xx response.

Bodies come from the OpenAPI document's request schemas (through a small JSON Schema to
strategy translation below) and from arbitrary JSON, so both almost-valid requests and
nonsense reach the API.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.openapi import build_openapi
from tests.api.conftest import ADMIN, ClientFactory, create_application

DOCUMENT = build_openapi("test")
EXAMPLES = 200

# Endpoints whose handlers never read input; fuzzing them adds nothing.
SKIPPED_PATHS = {"/metrics", "/openapi.json", "/docs", "/health/live", "/health/ready"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["mobile-app", "apns", "fcm", "SYNCHRONOUS", "ACTIVE", "a\x00b", "\ud7ff"])
)
any_json = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["requestObject", "appId"]), children, max_size=5
        )
    ),
    max_leaves=20,
)


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Return values that mostly satisfy a pydantic JSON schema, with some violations."""
    schema = resolve(schema)
    if depth > 6:
        return st.none()
    if "anyOf" in schema:
        return st.one_of([from_schema(option, depth + 1) for option in schema["anyOf"]])
    if "enum" in schema:
        lower = [value.lower() for value in schema["enum"] if isinstance(value, str)]
        return st.sampled_from(schema["enum"]) | st.sampled_from(lower or [None])

    kind = schema.get("type")
    if kind == "object":
        return object_values(schema, depth)
    if kind == "array":
        items = from_schema(schema.get("items", {}), depth + 1)
        high = min(schema.get("maxItems", 5), 5)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=high)
    if kind == "string":
        return string_values(schema)
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "boolean":
        return st.booleans()
    return scalars


def object_values(schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    properties = schema.get("properties", {})
    if not properties:
        return st.dictionaries(st.text(max_size=8), scalars, max_size=3)

    required = set(schema.get("required", ()))
    fields = {}
    for name, field in properties.items():
        values = from_schema(field, depth + 1)
        fields[name] = values if name in required else st.none() | values
    return st.fixed_dictionaries(fields).map(
        lambda value: {key: item for key, item in value.items() if item is not None}
    )


def string_values(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if schema.get("format") == "date-time":
        return st.datetimes(timezones=st.just(UTC)).map(lambda value: value.isoformat())
    high = min(schema.get("maxLength", 80), 80)
    low = min(schema.get("minLength", 0), high)
    return st.text(min_size=low, max_size=high) | st.sampled_from(
        ["a" * 64, "mobile-app", "user-1"]
    )


def operations() -> list[tuple[str, str, dict[str, Any] | None]]:
    found = []
    for path, methods in DOCUMENT["paths"].items():
        if path in SKIPPED_PATHS:
            continue
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            schema = body.get("schema")
            found.append((method.upper(), path, schema))
    return found


OPERATIONS = operations()


def encode(value: Any) -> bytes:
    # The standard library encodes what orjson refuses (integers beyond 64 bits, lone
    # surrogates as \\udXXX escapes), which is exactly the input worth sending.
    return json.dumps(value).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    method, path, schema = draw(st.sampled_from(OPERATIONS))
    path = path.replace(
        "{id}",
        draw(
            st.sampled_from(["1", "0", "x", "99999999999999999999"])
            | st.integers(1, 2**63 - 1).map(str)
        ),
    )
    if schema is not None and draw(st.booleans()):
        body = encode(draw(from_schema(schema)))
    elif draw(st.booleans()):
        body = encode({"requestObject": draw(any_json)})
    else:
        body = draw(st.binary(max_size=64) | any_json.map(encode))
    return method, path, body


async def send(client: TestClient, method: str, path: str, body: bytes) -> int:
    headers = {"Content-Type": "application/json", **ADMIN}
    async with client.request(method, path, data=body, headers=headers) as response:
        await response.read()
        return response.status


async def test_fuzz_finds_no_server_errors(make_client: ClientFactory) -> None:
    client = await make_client(send_sync_timeout_s=0.2)
    await create_application(client)
    loop = asyncio.get_running_loop()
    failures: list[tuple[str, str, bytes, int]] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(requests())
    def check(request: tuple[str, str, bytes]) -> None:
        method, path, body = request
        status = asyncio.run_coroutine_threadsafe(send(client, method, path, body), loop).result(30)
        if status >= 500:
            failures.append((method, path, body, status))
        assert status < 500, (method, path, body[:300], status)

    await asyncio.to_thread(check)

    assert failures == []
