"""Fake HMS: OAuth client credentials, bearer check, message checks and result codes."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.sandbox.h2client import H2TestConnection
from workers.sandbox.control import SandboxAdmin
from workers.sandbox.credentials import HmsClientCredentials


async def request_token(
    conn: H2TestConnection, client_id: str, client_secret: str
) -> tuple[int, dict[str, object]]:
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    )
    response = await conn.request(
        "/oauth2/v3/token", [("content-type", "application/x-www-form-urlencoded")], form.encode()
    )
    return response.status, response.json()


async def access_token(conn: H2TestConnection, client: HmsClientCredentials) -> str:
    status, body = await request_token(conn, client.client_id, client.client_secret)
    assert status == 200, body
    return str(body["access_token"])


async def send(
    conn: H2TestConnection,
    bearer: str | None,
    message: object,
    app_id: str,
    version: str = "v2",
) -> tuple[int, dict[str, object]]:
    headers = [("content-type", "application/json")]
    if bearer is not None:
        headers.append(("authorization", f"Bearer {bearer}"))
    body = json.dumps({"validate_only": False, "message": message}).encode()
    response = await conn.request(f"/{version}/{app_id}/messages:send", headers, body)
    return response.status, response.json()


async def test_oauth_token_issued(hms_connection: H2TestConnection, hms_app: HmsClientCredentials):
    status, body = await request_token(hms_connection, hms_app.client_id, hms_app.client_secret)

    assert status == 200
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"


async def test_oauth_wrong_secret_rejected(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials
):
    status, _ = await request_token(hms_connection, hms_app.client_id, "wrong")

    assert status == 400


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
async def test_send_accepted(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials, version: str
):
    bearer = await access_token(hms_connection, hms_app)
    message = {"data": '{"k":"v"}', "android": {"urgency": "HIGH"}, "token": ["tok-1", "tok-2"]}

    status, body = await send(hms_connection, bearer, message, hms_app.client_id, version)

    assert status == 200
    assert body["code"] == "80000000"
    assert body["msg"] == "Success"
    assert body["requestId"]


async def test_send_without_token_rejected(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials
):
    status, body = await send(hms_connection, None, {"token": ["t"]}, hms_app.client_id)

    assert status == 401
    assert body["code"] == "80200001"


async def test_expired_token_rejected(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials, admin: SandboxAdmin
):
    bearer = await access_token(hms_connection, hms_app)

    admin.set_clock_offset(3601)
    status, body = await send(hms_connection, bearer, {"token": ["t"]}, hms_app.client_id)

    assert status == 401
    assert body["code"] == "80200003"


async def test_other_app_id_rejected(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials
):
    bearer = await access_token(hms_connection, hms_app)

    status, body = await send(hms_connection, bearer, {"token": ["t"]}, "999")

    assert status == 401
    assert body["code"] == "80200001"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"token": ["t"], "data": {"k": "v"}}, "80100003"),
        ({"token": ["t"], "topic": "news"}, "80100003"),
        ({"data": "x"}, "80100003"),
        ({"token": ["t"], "android": {"collapse_key": 101}}, "80100003"),
        ({"token": [f"t{i}" for i in range(1001)]}, "80300010"),
        ({"token": []}, "80300010"),
        ({"token": ["t"], "data": "x" * 4100}, "80300008"),
    ],
    ids=[
        "data-not-string",
        "two-targets",
        "no-target",
        "collapse-key-range",
        "too-many-tokens",
        "no-tokens",
        "too-big",
    ],
)
async def test_invalid_message_rejected(
    hms_connection: H2TestConnection,
    hms_app: HmsClientCredentials,
    message: dict[str, object],
    code: str,
):
    bearer = await access_token(hms_connection, hms_app)

    status, body = await send(hms_connection, bearer, message, hms_app.client_id)

    assert status == 400
    assert body["code"] == code


async def test_invalid_marker_tokens(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials
):
    bearer = await access_token(hms_connection, hms_app)

    all_status, all_body = await send(
        hms_connection, bearer, {"token": ["a-invalid"]}, hms_app.client_id
    )
    partial_status, partial_body = await send(
        hms_connection, bearer, {"token": ["good", "b-invalid"]}, hms_app.client_id
    )

    assert (all_status, all_body["code"]) == (400, "80300007")
    assert (partial_status, partial_body["code"]) == (200, "80100000")
    assert json.loads(str(partial_body["msg"])) == {
        "success": 1,
        "failure": 1,
        "illegal_tokens": ["b-invalid"],
    }
