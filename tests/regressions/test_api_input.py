"""Inputs for which the REST API returns 500, or which it accepts although they are invalid."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.api.conftest import (
    ADMIN_KEY,
    APP_ID,
    FCM_TOKEN,
    HMS_TOKEN,
    basic,
    bearer,
    call,
    create_application,
)

# A PKCS#8 EC private key on secp112r1, a curve that OpenSSL parses but `cryptography`
# does not support, so loading it raises UnsupportedAlgorithm instead of ValueError.
# Made with: openssl ecparam -name secp112r1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt
SECP112R1_KEY = b"""-----BEGIN PRIVATE KEY-----
ME4CAQAwEAYHKoZIzj0CAQYFK4EEAAYENzA1AgEBBA6sNuE03+6Us3nztxcfLqEg
Ax4ABKW3JHmnqr45I9QDGSdVpkNBzJx/7BLoXjfSR30=
-----END PRIVATE KEY-----
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_superscript_digit_path_id_answers_400(client: TestClient) -> None:
    status, document = await call(client, "GET", "/push/message/%C2%B2")

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_REQUEST"


async def test_superscript_digit_page_size_answers_400(client: TestClient) -> None:
    status, document = await call(client, "GET", "/push/campaign/1/user/list?size=%C2%B2")

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "size"


async def raw_request(client: TestClient, header: bytes) -> bytes:
    """Send GET /admin/app/list with one raw header line; return the status line."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"GET /admin/app/list HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + header
        + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return status_line


async def test_non_utf8_bearer_key_answers_401(client: TestClient) -> None:
    status_line = await raw_request(client, b"Authorization: Bearer \xff\xfe\xfd")

    assert status_line.split()[1] == b"401"


async def test_non_ascii_basic_user_answers_401(client: TestClient) -> None:
    status, document = await call(client, "GET", "/admin/app/list", headers=basic("dém", ADMIN_KEY))

    assert status == 401
    assert document["responseObject"]["code"] == "ERROR_UNAUTHORIZED"


async def test_apns_key_on_unsupported_curve_answers_400(client: TestClient) -> None:
    await create_application(client)
    request = {
        "appId": APP_ID,
        "bundle": "com.example.app",
        "keyId": "KEY123",
        "teamId": "TEAM42",
        "privateKeyBase64": b64(SECP112R1_KEY),
        "environment": "production",
    }

    status, document = await call(client, "POST", "/admin/app/apns", {"requestObject": request})

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"


async def test_fcm_key_on_unsupported_curve_answers_400(client: TestClient) -> None:
    await create_application(client)
    account = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "0123abcd",
        "private_key": SECP112R1_KEY.decode(),
        "client_email": "push@demo-project.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    request = {
        "appId": APP_ID,
        "projectId": "demo-project",
        "privateKeyBase64": b64(orjson.dumps(account)),
    }

    status, document = await call(client, "POST", "/admin/app/fcm", {"requestObject": request})

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"


@pytest.mark.parametrize(("platform", "token"), [("fcm", FCM_TOKEN), ("hms", HMS_TOKEN)])
async def test_token_with_trailing_newline_rejected(
    client: TestClient, platform: str, token: str
) -> None:
    await create_application(client)
    request = {
        "appId": APP_ID,
        "token": token + "\n",
        "platform": platform,
        "activationId": "activation-1",
        "activationStatus": "ACTIVE",
        "userId": "user-1",
    }

    status, document = await call(client, "POST", "/push/device/create", {"requestObject": request})

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "requestObject.token"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"a": value}
    return value


async def post_raw(client: TestClient, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **bearer(ADMIN_KEY)}
    async with client.post(path, data=body, headers=headers) as response:
        return response.status, orjson.loads(await response.read())


@pytest.mark.parametrize("depth", [254, 300])
async def test_deeply_nested_extras_answers_400(client: TestClient, depth: int) -> None:
    await create_application(client)
    request = {
        "appId": APP_ID,
        "mode": "ASYNCHRONOUS",
        "message": {"userId": "user-1", "body": {"title": "Hi", "extras": nested(depth)}},
    }
    # The standard library encoder has no depth limit of 255, unlike orjson.
    body = json.dumps({"requestObject": request}).encode()

    status, document = await post_raw(client, "/push/message/send", body)

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_REQUEST"


async def test_deeply_nested_nul_answers_400(client: TestClient) -> None:
    depth = 990
    body = b'{"requestObject":' + b"[" * depth + b'"\\u0000"' + b"]" * depth + b"}"

    status, document = await post_raw(client, "/push/message/send", body)

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_REQUEST"
