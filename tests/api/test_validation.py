"""Bad input never gets a 5xx: malformed JSON, wrong types, NUL, sizes, content types."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from aiohttp.test_utils import TestClient

from tests.api.conftest import ADMIN, APP_ID, ClientFactory, call, create_application


async def raw_post(
    client: TestClient, path: str, data: bytes, content_type: str = "application/json"
) -> tuple[int, dict]:
    headers = {"Content-Type": content_type, **ADMIN}
    async with client.post(path, data=data, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


async def test_malformed_json_is_400(client: TestClient) -> None:
    status, document = await raw_post(client, "/push/message/send", b'{"requestObject": ')

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_REQUEST"


async def test_empty_body_is_400(client: TestClient) -> None:
    status, _document = await raw_post(client, "/push/device/create", b"")

    assert status == 400


async def test_missing_envelope_is_400(client: TestClient) -> None:
    status, document = await call(client, "POST", "/push/device/create", {"appId": APP_ID})

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "requestObject"


async def test_wrong_types_name_each_field(client: TestClient) -> None:
    body = {
        "requestObject": {"appId": 5, "token": ["x"], "platform": "windows", "activationId": "a"}
    }

    status, document = await call(client, "POST", "/push/device/create", body)

    assert status == 400
    violations = {item["fieldName"]: item for item in document["responseObject"]["violations"]}
    assert set(violations) == {
        "requestObject.appId",
        "requestObject.token",
        "requestObject.platform",
    }
    assert violations["requestObject.appId"]["invalidValue"] == 5
    assert violations["requestObject.platform"]["invalidValue"] == "windows"
    assert "invalidValue" not in violations["requestObject.token"]


async def test_nul_characters_are_rejected(client: TestClient) -> None:
    await create_application(client)
    body = (
        b'{"requestObject": {"appId": "mobile-app",'
        b' "message": {"userId": "a\\u0000b", "body": {}}}}'
    )

    status, document = await raw_post(client, "/push/message/send", body)

    assert status == 400
    assert "NUL" in document["responseObject"]["violations"][0]["hint"]


async def test_huge_numbers_are_400(client: TestClient) -> None:
    body = (
        b'{"requestObject": {"appId": "a", "message": {"userId": "u", "body": {"badge": 1'
        + b"0" * 400
        + b"}}}}"
    )

    status, _document = await raw_post(client, "/push/message/send", body)
    out_of_range, _document = await call(
        client,
        "POST",
        "/push/message/send",
        {"requestObject": {"appId": "a", "message": {"userId": "u", "body": {"badge": 2**40}}}},
    )

    assert status == 400
    assert out_of_range == 400


async def test_wrong_content_type_is_415(client: TestClient) -> None:
    status, document = await raw_post(
        client, "/push/device/create", b"appId=x", "application/x-www-form-urlencoded"
    )

    assert status == 415
    assert document["status"] == "ERROR"


async def test_body_over_limit_is_413(make_client: ClientFactory) -> None:
    client = await make_client(api_max_body_bytes=2048, api_max_bulk_body_bytes=4096)
    big = orjson.dumps({"requestObject": {"appId": "x" * 3000}})
    users = orjson.dumps({"requestObject": ["u" * 100] * 30})
    too_many_users = orjson.dumps({"requestObject": ["u" * 100] * 50})

    status, document = await raw_post(client, "/admin/app/create", big)
    bulk_status, _document = await raw_post(client, "/push/campaign/1/user/add", users)
    bulk_over, _document = await raw_post(client, "/push/campaign/1/user/add", too_many_users)

    assert status == 413
    assert "2048" in document["responseObject"]["message"]
    assert bulk_status == 400  # within the bulk limit; the campaign does not exist
    assert bulk_over == 413


async def test_unknown_fields_are_ignored(client: TestClient) -> None:
    status, _document = await call(
        client,
        "POST",
        "/admin/app/create",
        {"requestObject": {"appId": "x", "colour": "blue"}, "extra": 1},
    )

    assert status == 200


async def test_long_invalid_value_is_cut(client: TestClient) -> None:
    status, document = await call(
        client, "POST", "/admin/app/create", {"requestObject": {"appId": "y" * 1000}}
    )

    assert status == 400
    assert len(document["responseObject"]["violations"][0]["invalidValue"]) <= 201


async def test_path_id_must_be_number(client: TestClient) -> None:
    status, document = await call(client, "GET", "/push/campaign/abc/detail")
    zero, _document = await call(client, "GET", "/push/campaign/0/detail")
    page, _document = await call(client, "GET", "/push/campaign/1/user/list?page=-1")

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "id"
    assert zero == 400
    assert page == 400


async def test_chunked_body_over_limit_is_413(make_client: ClientFactory) -> None:
    client = await make_client(api_max_body_bytes=2048)

    async def chunks(count: int) -> AsyncIterator[bytes]:
        yield b'{"requestObject": {"appId": "'
        for _index in range(count):
            yield b"x" * 100
        yield b'"}}'

    headers = {"Content-Type": "application/json", **ADMIN}
    async with client.post("/admin/app/create", data=chunks(40), headers=headers) as response:
        too_large = response.status
    async with client.post("/admin/app/create", data=chunks(1), headers=headers) as response:
        accepted = response.status

    assert too_large == 413
    assert accepted == 200
