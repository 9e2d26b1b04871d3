"""Fake APNs: provider token checks, header checks, device token and payload checks."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.sandbox.conftest import device_token
from tests.sandbox.h2client import H2TestConnection
from workers.sandbox.control import SandboxAdmin
from workers.sandbox.credentials import ApnsSigningKey

PAYLOAD = b'{"aps":{"alert":"hello"}}'


def apns_headers(
    key: ApnsSigningKey,
    provider_token: str | None = None,
    topic: str | None = None,
    push_type: str | None = "alert",
    extra: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    headers = [
        ("authorization", "bearer " + (provider_token or key.provider_token())),
        ("apns-topic", topic or key.bundle_id),
    ]
    if push_type is not None:
        headers.append(("apns-push-type", push_type))
    return headers + (extra or [])


async def send(
    conn: H2TestConnection,
    key: ApnsSigningKey,
    token: str | None = None,
    body: bytes = PAYLOAD,
    **header_options: object,
) -> tuple[int, dict[str, object], dict[str, str]]:
    response = await conn.request(
        f"/3/device/{token or device_token()}",
        apns_headers(key, **header_options),  # type: ignore[arg-type]
        body,
    )
    payload = response.json() if response.body else {}
    return response.status, payload, response.headers


async def warm_up(conn: H2TestConnection, key: ApnsSigningKey) -> None:
    """Authenticate the connection so the sandbox raises its stream limit above 1."""
    status, body, _ = await send(conn, key)
    assert status == 200, body
    await conn.wait_for_stream_limit(lambda limit: limit > 1)


async def test_valid_send_accepted(apns_connection: H2TestConnection, apns_app: ApnsSigningKey):
    apns_id = str(uuid.uuid4())
    status, body, headers = await send(
        apns_connection, apns_app, extra=[("apns-id", apns_id), ("apns-priority", "10")]
    )

    assert status == 200
    assert body == {}
    assert headers["apns-id"] == apns_id
    assert uuid.UUID(headers["apns-unique-id"])


async def test_apns_id_generated_when_absent(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    status, _, headers = await send(apns_connection, apns_app)

    assert status == 200
    assert uuid.UUID(headers["apns-id"])


async def test_production_answer_has_no_unique_id(
    sandbox, client_ssl_context, apns_app: ApnsSigningKey
):
    async with H2TestConnection(sandbox.urls.apns_url, client_ssl_context) as conn:
        status, _, headers = await send(conn, apns_app)

    assert status == 200
    assert "apns-unique-id" not in headers


async def test_der_signature_accepted(apns_connection: H2TestConnection, apns_app: ApnsSigningKey):
    status, body, _ = await send(
        apns_connection, apns_app, provider_token=apns_app.provider_token(der_signature=True)
    )

    assert status == 200, body


async def test_bad_signature_rejected(apns_connection: H2TestConnection, apns_app: ApnsSigningKey):
    impostor = ApnsSigningKey.generate(team_id=apns_app.team_id)
    forged = ApnsSigningKey(
        apns_app.key_id,
        apns_app.team_id,
        apns_app.bundle_id,
        impostor.private_key_pem,
        impostor.public_key_pem,
    )

    status, body, headers = await send(
        apns_connection, apns_app, provider_token=forged.provider_token()
    )

    assert status == 403
    assert body == {"reason": "InvalidProviderToken"}
    assert headers["content-type"] == "application/json"


async def test_unknown_key_id_rejected(apns_connection: H2TestConnection, admin: SandboxAdmin):
    unregistered = ApnsSigningKey.generate()

    status, body, _ = await send(apns_connection, unregistered)

    assert status == 403
    assert body == {"reason": "InvalidProviderToken"}


async def test_missing_provider_token_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    response = await apns_connection.request(
        f"/3/device/{device_token()}", [("apns-topic", apns_app.bundle_id)], PAYLOAD
    )

    assert response.status == 403
    assert response.json() == {"reason": "MissingProviderToken"}


async def test_expired_provider_token_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    old_token = apns_app.provider_token(issued_at=time.time() - 3700)

    status, body, _ = await send(apns_connection, apns_app, provider_token=old_token)

    assert status == 403
    assert body == {"reason": "ExpiredProviderToken"}


async def test_cached_token_expires_with_clock(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    token = apns_app.provider_token()
    first_status, _, _ = await send(apns_connection, apns_app, provider_token=token)

    admin.set_clock_offset(3700)
    second_status, body, _ = await send(apns_connection, apns_app, provider_token=token)

    assert first_status == 200
    assert second_status == 403
    assert body == {"reason": "ExpiredProviderToken"}


async def test_future_provider_token_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    future_token = apns_app.provider_token(issued_at=time.time() + 600)

    status, body, _ = await send(apns_connection, apns_app, provider_token=future_token)

    assert status == 403
    assert body == {"reason": "InvalidProviderToken"}


async def test_team_switch_on_connection_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    other_team = ApnsSigningKey.generate(team_id="TEAM000002", bundle_id="com.example.other")
    admin.register_apns_key(other_team)

    first_status, _, _ = await send(apns_connection, apns_app)
    second_status, body, _ = await send(apns_connection, other_team)

    assert first_status == 200
    assert second_status == 403
    assert body == {"reason": "InvalidProviderToken"}


async def test_other_team_on_new_connection_accepted(
    sandbox, client_ssl_context, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    other_team = ApnsSigningKey.generate(team_id="TEAM000002", bundle_id="com.example.other")
    admin.register_apns_key(other_team)

    async with H2TestConnection(sandbox.urls.apns_development_url, client_ssl_context) as conn:
        status, body, _ = await send(conn, other_team)

    assert status == 200, body


async def test_strict_token_updates_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    admin.update_settings(strict_token_updates=True)
    first = apns_app.provider_token(issued_at=time.time() - 10)
    second = apns_app.provider_token(issued_at=time.time() - 5)

    first_status, _, _ = await send(apns_connection, apns_app, provider_token=first)
    second_status, body, _ = await send(apns_connection, apns_app, provider_token=second)

    assert first_status == 200
    assert second_status == 429
    assert body == {"reason": "TooManyProviderTokenUpdates"}


async def test_environment_scoped_key_rejected_elsewhere(
    sandbox, client_ssl_context, admin: SandboxAdmin
):
    production_key = ApnsSigningKey.generate()
    admin.register_apns_key(production_key, environment="production")

    async with H2TestConnection(sandbox.urls.apns_development_url, client_ssl_context) as conn:
        status, body, _ = await send(conn, production_key)

    assert status == 403
    assert body == {"reason": "BadEnvironmentKeyIdInToken"}


@pytest.mark.parametrize(
    ("topic", "push_type", "reason"),
    [
        ("com.example.unknown", "alert", "TopicDisallowed"),
        ("com.example.app.voip", "alert", "BadTopic"),
        ("com.example.app", "voip", "BadTopic"),
        ("com.example.app", "complication", "BadTopic"),
    ],
)
async def test_wrong_topic_rejected(
    apns_connection: H2TestConnection,
    apns_app: ApnsSigningKey,
    topic: str,
    push_type: str,
    reason: str,
):
    status, body, _ = await send(apns_connection, apns_app, topic=topic, push_type=push_type)

    assert status == 400
    assert body == {"reason": reason}


@pytest.mark.parametrize(
    ("topic", "push_type"),
    [
        ("com.example.app.voip", "voip"),
        ("com.example.app.complication", "complication"),
        ("com.example.app.push-type.liveactivity", "liveactivity"),
        ("com.example.app.voip", None),
    ],
)
async def test_topic_suffix_for_push_type_accepted(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, topic: str, push_type: str | None
):
    status, body, _ = await send(apns_connection, apns_app, topic=topic, push_type=push_type)

    assert status == 200, body


async def test_missing_topic_rejected(apns_connection: H2TestConnection, apns_app: ApnsSigningKey):
    response = await apns_connection.request(
        f"/3/device/{device_token()}",
        [("authorization", "bearer " + apns_app.provider_token())],
        PAYLOAD,
    )

    assert response.status == 400
    assert response.json() == {"reason": "MissingTopic"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([("apns-priority", "7")], "BadPriority"),
        ([("apns-id", "not-a-uuid")], "BadMessageId"),
        ([("apns-id", "")], "BadMessageId"),
        ([("apns-expiration", "tomorrow")], "BadExpirationDate"),
        ([("apns-collapse-id", "x" * 65)], "BadCollapseId"),
        ([("apns-topic", "com.example.app")], "DuplicateHeaders"),
        ([("apns-priority", "10"), ("apns-priority", "5")], "DuplicateHeaders"),
    ],
)
async def test_bad_header_rejected(
    apns_connection: H2TestConnection,
    apns_app: ApnsSigningKey,
    extra: list[tuple[str, str]],
    reason: str,
):
    status, body, _ = await send(apns_connection, apns_app, extra=extra)

    assert status == 400
    assert body == {"reason": reason}


async def test_invalid_push_type_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    status, body, _ = await send(apns_connection, apns_app, push_type="banner")

    assert status == 400
    assert body == {"reason": "InvalidPushType"}


async def test_collapse_id_of_64_bytes_accepted(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    status, body, _ = await send(apns_connection, apns_app, extra=[("apns-collapse-id", "c" * 64)])

    assert status == 200, body


async def test_background_needs_priority_5(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    body = b'{"aps":{"content-available":1}}'
    priority_10_status, priority_10_body, _ = await send(
        apns_connection,
        apns_app,
        body=body,
        push_type="background",
        extra=[("apns-priority", "10")],
    )
    priority_5_status, _, _ = await send(
        apns_connection,
        apns_app,
        body=body,
        push_type="background",
        extra=[("apns-priority", "5")],
    )

    assert priority_10_status == 400
    assert priority_10_body == {"reason": "BadPriority"}
    assert priority_5_status == 200


@pytest.mark.parametrize(
    "token",
    ["abc", "zz" * 32, "a" * 63, "a" * 66],
)
async def test_bad_device_token_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, token: str
):
    status, body, _ = await send(apns_connection, apns_app, token=token)

    assert status == 400
    assert body == {"reason": "BadDeviceToken"}


async def test_longer_tokens_accepted_when_allowed(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    admin.update_settings(apns_token_lengths=[64, 160])

    status, body, _ = await send(apns_connection, apns_app, token="ab" * 80)

    assert status == 200, body


async def test_empty_device_token_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    response = await apns_connection.request("/3/device/", apns_headers(apns_app), PAYLOAD)

    assert response.status == 400
    assert response.json() == {"reason": "MissingDeviceToken"}


async def test_bad_path_and_method_rejected(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    bad_path = await apns_connection.request("/2/device/x", apns_headers(apns_app), PAYLOAD)
    bad_method = await apns_connection.request(
        f"/3/device/{device_token()}", apns_headers(apns_app), method="GET"
    )

    assert (bad_path.status, bad_path.json()) == (404, {"reason": "BadPath"})
    assert (bad_method.status, bad_method.json()) == (405, {"reason": "MethodNotAllowed"})


async def test_payload_size_limits(apns_connection: H2TestConnection, apns_app: ApnsSigningKey):
    def payload(size: int) -> bytes:
        prefix = b'{"aps":{"alert":"'
        suffix = b'"}}'
        return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix

    at_limit, _, _ = await send(apns_connection, apns_app, body=payload(4096))
    over_limit, over_body, _ = await send(apns_connection, apns_app, body=payload(4097))
    voip_at_limit, _, _ = await send(
        apns_connection,
        apns_app,
        body=payload(5120),
        topic="com.example.app.voip",
        push_type="voip",
    )
    voip_over, voip_body, _ = await send(
        apns_connection,
        apns_app,
        body=payload(5121),
        topic="com.example.app.voip",
        push_type="voip",
    )

    assert at_limit == 200
    assert (over_limit, over_body) == (413, {"reason": "PayloadTooLarge"})
    assert voip_at_limit == 200
    assert (voip_over, voip_body) == (413, {"reason": "PayloadTooLarge"})


async def test_empty_payload_rejected(apns_connection: H2TestConnection, apns_app: ApnsSigningKey):
    status, body, _ = await send(apns_connection, apns_app, body=b"")

    assert status == 400
    assert body == {"reason": "PayloadEmpty"}


async def test_error_echoes_request_apns_id(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    apns_id = str(uuid.uuid4())

    status, _, headers = await send(
        apns_connection, apns_app, token="abc", extra=[("apns-id", apns_id)]
    )

    assert status == 400
    assert headers["apns-id"] == apns_id
