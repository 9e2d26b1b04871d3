"""Fake FCM: OAuth token endpoint, bearer check, message schema, size, success answer."""

from __future__ import annotations

import json
import time
import urllib.parse
from datetime import timedelta

import pytest
from pyreqwest.client import ClientBuilder

from tests.sandbox.h2client import H2TestConnection
from workers.sandbox.control import SandboxAdmin, SandboxProcess
from workers.sandbox.credentials import FcmServiceAccount

FCM_TOKEN = "dTokenPart1234567890:APA91bHsandboxTokenValue_with-dashes"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


async def request_token(
    conn: H2TestConnection, assertion: str, grant_type: str = JWT_BEARER
) -> tuple[int, dict[str, object]]:
    form = urllib.parse.urlencode({"grant_type": grant_type, "assertion": assertion})
    response = await conn.request(
        "/token", [("content-type", "application/x-www-form-urlencoded")], form.encode()
    )
    return response.status, response.json()


async def access_token(conn: H2TestConnection, account: FcmServiceAccount) -> str:
    status, body = await request_token(conn, account.assertion())
    assert status == 200, body
    return str(body["access_token"])


async def send_message(
    conn: H2TestConnection,
    bearer: str | None,
    body: object,
    project_id: str = "sandbox-project",
) -> tuple[int, dict[str, object]]:
    headers = [("content-type", "application/json")]
    if bearer is not None:
        headers.append(("authorization", f"Bearer {bearer}"))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await conn.request(f"/v1/projects/{project_id}/messages:send", headers, raw)
    return response.status, response.json()


def token_message(**fields: object) -> dict[str, object]:
    return {"message": {"token": FCM_TOKEN, **fields}}


def fcm_error_code(body: dict[str, object]) -> str | None:
    error = body["error"]
    assert isinstance(error, dict)
    for detail in error.get("details", []):
        if detail["@type"].endswith("FcmError"):
            return str(detail["errorCode"])
    return None


async def test_oauth_token_issued(fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount):
    status, body = await request_token(fcm_connection, fcm_app.assertion())

    assert status == 200
    assert body["expires_in"] == 3599
    assert body["token_type"] == "Bearer"
    assert str(body["access_token"]).startswith("ya29.")


async def test_oauth_accepts_sandbox_audience(
    sandbox: SandboxProcess, fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    assertion = fcm_app.assertion(audience=sandbox.urls.fcm_token_url)

    status, body = await request_token(fcm_connection, assertion)

    assert status == 200, body


async def test_oauth_accepts_cloud_platform_scope(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    assertion = fcm_app.assertion(scope="https://www.googleapis.com/auth/cloud-platform")

    status, body = await request_token(fcm_connection, assertion)

    assert status == 200, body


async def test_oauth_bad_signature_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    impostor = FcmServiceAccount.generate()
    forged = FcmServiceAccount(
        fcm_app.project_id,
        fcm_app.client_email,
        fcm_app.private_key_id,
        impostor.private_key_pem,
        impostor.public_key_pem,
    )

    status, body = await request_token(fcm_connection, forged.assertion())

    assert status == 400
    assert body == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}


async def test_oauth_unknown_account_rejected(
    fcm_connection: H2TestConnection, admin: SandboxAdmin
):
    status, body = await request_token(fcm_connection, FcmServiceAccount.generate().assertion())

    assert status == 400
    assert body["error"] == "invalid_grant"


async def test_oauth_wrong_audience_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    assertion = fcm_app.assertion(audience="https://example.invalid/token")

    status, body = await request_token(fcm_connection, assertion)

    assert status == 400
    assert body["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("issued_offset_s", "lifetime_s"),
    [(-7200, 3600), (0, 7200), (3600, 3600)],
    ids=["expired", "too-long-lived", "issued-in-future"],
)
async def test_oauth_bad_lifetime_rejected(
    fcm_connection: H2TestConnection,
    fcm_app: FcmServiceAccount,
    issued_offset_s: int,
    lifetime_s: int,
):
    assertion = fcm_app.assertion(issued_at=time.time() + issued_offset_s, lifetime_s=lifetime_s)

    status, body = await request_token(fcm_connection, assertion)

    assert status == 400
    assert body["error"] == "invalid_grant"
    assert "short-lived token" in str(body["error_description"])


async def test_oauth_wrong_scope_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    assertion = fcm_app.assertion(scope="https://www.googleapis.com/auth/userinfo.email")

    status, body = await request_token(fcm_connection, assertion)

    assert status == 400
    assert body["error"] == "invalid_scope"


async def test_oauth_wrong_grant_type_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    status, body = await request_token(
        fcm_connection, fcm_app.assertion(), grant_type="client_credentials"
    )

    assert status == 400
    assert body["error"] == "unsupported_grant_type"


async def test_send_accepted(fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount):
    bearer = await access_token(fcm_connection, fcm_app)

    status, body = await send_message(
        fcm_connection,
        bearer,
        token_message(data={"k": "v"}, notification={"title": "t", "body": "b"}),
    )

    assert status == 200
    assert str(body["name"]).startswith("projects/sandbox-project/messages/")


async def test_send_validate_only_not_counted(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount, admin: SandboxAdmin
):
    bearer = await access_token(fcm_connection, fcm_app)
    request = {"validate_only": True, **token_message()}

    status, body = await send_message(fcm_connection, bearer, request)

    assert status == 200
    assert body == {"name": "projects/sandbox-project/messages/fake_message_id"}
    assert admin.counters()["accepted"]["fcm"] == 0


async def test_send_without_bearer_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    status, body = await send_message(fcm_connection, None, token_message())

    assert status == 401
    assert body["error"]["status"] == "UNAUTHENTICATED"  # type: ignore[index]
    assert "missing required authentication" in body["error"]["message"]  # type: ignore[index]


async def test_send_with_unknown_bearer_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    status, body = await send_message(fcm_connection, "ya29.made-up", token_message())

    assert status == 401
    assert "invalid authentication credentials" in body["error"]["message"]  # type: ignore[index]


async def test_expired_access_token_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount, admin: SandboxAdmin
):
    bearer = await access_token(fcm_connection, fcm_app)

    admin.set_clock_offset(3600)
    status, body = await send_message(fcm_connection, bearer, token_message())

    assert status == 401
    assert body["error"]["status"] == "UNAUTHENTICATED"  # type: ignore[index]


async def test_other_project_rejected(fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount):
    bearer = await access_token(fcm_connection, fcm_app)

    status, body = await send_message(
        fcm_connection, bearer, token_message(), project_id="someone-else"
    )

    assert status == 403
    assert body["error"]["status"] == "PERMISSION_DENIED"  # type: ignore[index]


async def test_non_string_data_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    bearer = await access_token(fcm_connection, fcm_app)

    status, body = await send_message(
        fcm_connection, bearer, token_message(data={"a": "x", "count": 12})
    )

    assert status == 400
    error = body["error"]
    assert error["status"] == "INVALID_ARGUMENT"  # type: ignore[index]
    violations = [
        detail["fieldViolations"]
        for detail in error["details"]  # type: ignore[index]
        if detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    ]
    assert violations == [
        [
            {
                "field": "message.data[1].value",
                "description": "Invalid value at 'message.data[1].value' (TYPE_STRING), 12",
            }
        ]
    ]


@pytest.mark.parametrize(
    "message",
    [
        {"data": {"a": "b"}},
        {"token": FCM_TOKEN, "topic": "news"},
        {"token": FCM_TOKEN, "colour": "red"},
        {"token": FCM_TOKEN, "data": {"from": "x"}},
        {"token": FCM_TOKEN, "android": {"ttl": "forever"}},
        {"token": FCM_TOKEN, "android": {"ttl": "2419201s"}},
        {"token": FCM_TOKEN, "android": {"priority": "urgent"}},
        {"token": FCM_TOKEN, "android": {"notification": {"color": "red"}}},
        {"token": FCM_TOKEN, "webpush": {"fcm_options": {"link": "http://example.com"}}},
        {"token": "not a token!"},
    ],
    ids=[
        "no-target",
        "two-targets",
        "unknown-field",
        "reserved-data-key",
        "bad-ttl-format",
        "ttl-too-long",
        "bad-priority",
        "bad-color",
        "plain-http-link",
        "bad-token",
    ],
)
async def test_invalid_message_rejected(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount, message: dict[str, object]
):
    bearer = await access_token(fcm_connection, fcm_app)

    status, body = await send_message(fcm_connection, bearer, {"message": message})

    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"  # type: ignore[index]


async def test_snake_and_camel_case_accepted(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    bearer = await access_token(fcm_connection, fcm_app)
    message = token_message(
        android={"collapseKey": "c", "priority": "high", "ttl": "3.5s", "direct_boot_ok": True},
        fcmOptions={"analyticsLabel": "x"},
    )

    status, body = await send_message(fcm_connection, bearer, {"validateOnly": False, **message})

    assert status == 200, body


async def test_message_size_limit(fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount):
    bearer = await access_token(fcm_connection, fcm_app)
    small = token_message(data={"k": "x" * 4000})
    large = token_message(data={"k": "x" * 4100})

    small_status, _ = await send_message(fcm_connection, bearer, small)
    large_status, large_body = await send_message(fcm_connection, bearer, large)

    assert small_status == 200
    assert large_status == 400
    assert large_body["error"]["message"] == "Android message is too big"  # type: ignore[index]


async def test_topic_message_size_limit(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount
):
    bearer = await access_token(fcm_connection, fcm_app)

    status, _ = await send_message(
        fcm_connection, bearer, {"message": {"topic": "news", "data": {"k": "x" * 2100}}}
    )

    assert status == 400


@pytest.mark.parametrize(
    ("token", "status", "error_code"),
    [
        ("abc:unregistered", 404, "UNREGISTERED"),
        ("abc:mismatch", 403, "SENDER_ID_MISMATCH"),
        ("abc:invalid", 400, "INVALID_ARGUMENT"),
    ],
)
async def test_marker_tokens_rejected(
    fcm_connection: H2TestConnection,
    fcm_app: FcmServiceAccount,
    token: str,
    status: int,
    error_code: str,
):
    bearer = await access_token(fcm_connection, fcm_app)

    answer_status, body = await send_message(fcm_connection, bearer, {"message": {"token": token}})

    assert answer_status == status
    assert fcm_error_code(body) == error_code


async def test_send_over_http1(sandbox: SandboxProcess, fcm_app: FcmServiceAccount):
    ca_pem = sandbox.urls.ca_file.read_text()
    client = (
        ClientBuilder()
        .add_root_certificate_pem(ca_pem.encode())
        .http1_only()
        .timeout(timedelta(seconds=10))
        .build()
    )
    async with client:
        token_response = await (
            client.post(sandbox.urls.fcm_token_url)
            .form({"grant_type": JWT_BEARER, "assertion": fcm_app.assertion()})
            .build()
            .send()
        )
        bearer = (await token_response.json())["access_token"]
        send_response = await (
            client.post(f"{sandbox.urls.fcm_url}/v1/projects/sandbox-project/messages:send")
            .bearer_auth(bearer)
            .body_json(token_message())
            .build()
            .send()
        )
        body = await send_response.json()

    assert token_response.version == "HTTP/1.1"
    assert send_response.status == 200
    assert str(body["name"]).startswith("projects/sandbox-project/messages/")
