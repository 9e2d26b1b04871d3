"""FCM and HMS clients against the sandbox: accepted sends, errors, access-token refresh."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from shared.message_body import MessageAttributes, MessageBody, Priority
from tests.providers.sandbox_apps import fcm_credentials, hms_credentials, transport_factory
from workers.providers.base import Outcome, PreparedPayload, ProviderEndpoints, build_payload
from workers.providers.fcm import FcmClient
from workers.providers.hms import HmsClient
from workers.sandbox.control import SandboxProcess

NO_APNS_ID = ""
FULL_BODY = MessageBody.model_validate(
    {
        "title": "Hello",
        "body": "Grüße 😀 你好",
        "badge": 2,
        "sound": "default",
        "icon": "ic_push",
        "category": "NEWS",
        "collapseKey": "7",
        "extras": {"id": 42, "kind": "news", "nested": {"a": [1]}},
        "channelId": "news",
    }
)


def fcm_token() -> str:
    return "c" + secrets.token_hex(10) + ":APA91b" + secrets.token_urlsafe(100)


def hms_token() -> str:
    return "IQAAAACy" + secrets.token_hex(40)


@pytest.fixture
async def fcm_client(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints
) -> AsyncIterator[FcmClient]:
    credentials, _account = fcm_credentials(sandbox)
    client = FcmClient.from_credentials(credentials, endpoints, transport_factory(endpoints))
    yield client
    await client.aclose()


@pytest.fixture
async def hms_client(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints
) -> AsyncIterator[HmsClient]:
    credentials = hms_credentials(sandbox)
    client = HmsClient.from_credentials(credentials, endpoints, transport_factory(endpoints))
    yield client
    await client.aclose()


def payload(
    platform: str, silent: bool = False, priority: Priority = Priority.HIGH
) -> PreparedPayload:
    return build_payload(platform, FULL_BODY, MessageAttributes(silent=silent), priority)


# --- FCM --------------------------------------------------------------------------


@pytest.mark.parametrize("silent", [False, True])
@pytest.mark.parametrize("priority", [Priority.HIGH, Priority.NORMAL])
async def test_fcm_send_accepted(
    sandbox: SandboxProcess, fcm_client: FcmClient, silent: bool, priority: Priority
) -> None:
    result = await fcm_client.send(
        fcm_token(), payload("fcm", silent, priority), apns_id=NO_APNS_ID, environment=None
    )

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("projects/sandbox-project/messages/")
    assert sandbox.admin.counters()["accepted"]["fcm"] == 1


async def test_fcm_access_token_reused(sandbox: SandboxProcess, fcm_client: FcmClient) -> None:
    for _ in range(5):
        result = await fcm_client.send(
            fcm_token(), payload("fcm"), apns_id=NO_APNS_ID, environment=None
        )
        assert result.outcome is Outcome.SENT

    assert fcm_client.tokens.current is not None
    assert sandbox.admin.counters()["accepted"]["fcm"] == 5


async def test_fcm_refreshes_refused_access_token(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints
) -> None:
    credentials, account = fcm_credentials(sandbox)
    client = FcmClient.from_credentials(credentials, endpoints, transport_factory(endpoints))
    try:
        first = await client.send(fcm_token(), payload("fcm"), apns_id=NO_APNS_ID, environment=None)
        old_token = client.tokens.current
        # Registering the account again makes the sandbox forget its access tokens.
        sandbox.admin.register_fcm_account(account)

        second = await client.send(
            fcm_token(), payload("fcm"), apns_id=NO_APNS_ID, environment=None
        )
    finally:
        await client.aclose()

    assert first.outcome is Outcome.SENT
    assert second.outcome is Outcome.SENT
    assert client.tokens.current is not None
    assert client.tokens.current != old_token


async def test_fcm_unknown_service_account_is_credentials(
    sandbox: SandboxProcess, fcm_client: FcmClient
) -> None:
    sandbox.admin.reset(everything=True)

    result = await fcm_client.send(
        fcm_token(), payload("fcm"), apns_id=NO_APNS_ID, environment=None
    )

    assert result.outcome is Outcome.CREDENTIALS
    assert result.reason == "access_token_unavailable"


@pytest.mark.parametrize(
    ("fault", "outcome", "reason"),
    [
        ("unregistered", Outcome.TOKEN_INVALID, "UNREGISTERED"),
        ("invalid_token", Outcome.TOKEN_INVALID, "INVALID_ARGUMENT"),
        ("sender_id_mismatch", Outcome.TOKEN_INVALID, "SENDER_ID_MISMATCH"),
        ("quota_exceeded", Outcome.THROTTLED, "QUOTA_EXCEEDED"),
        ("unavailable", Outcome.TRANSIENT, "UNAVAILABLE"),
        ("internal", Outcome.TRANSIENT, "INTERNAL"),
        ("third_party_auth_error", Outcome.CREDENTIALS, "THIRD_PARTY_AUTH_ERROR"),
    ],
)
async def test_fcm_error_mapped_to_outcome(
    sandbox: SandboxProcess, fcm_client: FcmClient, fault: str, outcome: Outcome, reason: str
) -> None:
    token = fcm_token()
    sandbox.admin.add_fault("fcm", fault, token=token, retry_after=45)

    result = await fcm_client.send(token, payload("fcm"), apns_id=NO_APNS_ID, environment=None)

    assert result.outcome is outcome
    assert result.reason == reason


@pytest.mark.parametrize("fault", ["quota_exceeded", "unavailable"])
async def test_fcm_retry_after_read(
    sandbox: SandboxProcess, fcm_client: FcmClient, fault: str
) -> None:
    token = fcm_token()
    sandbox.admin.add_fault("fcm", fault, token=token, retry_after=45)

    result = await fcm_client.send(token, payload("fcm"), apns_id=NO_APNS_ID, environment=None)

    assert result.retry_after_s == 45.0


async def test_fcm_sandbox_accepts_every_field(
    sandbox: SandboxProcess, fcm_client: FcmClient
) -> None:
    # The sandbox checks field names, data value types, TTL format and enum values.
    body = MessageBody.model_validate(
        {
            **FULL_BODY.to_json_dict(),
            "titleLocKey": "T",
            "titleLocArgs": ["x"],
            "bodyLocKey": "B",
            "bodyLocArgs": ["y"],
            "validUntil": "2099-01-01T00:00:00Z",
            "subtitle": "sub",
            "image": "https://example.com/i.png",
            "threadId": "t",
            "mutableContent": True,
            "interruptionLevel": "passive",
        }
    )
    prepared = build_payload("fcm", body, MessageAttributes(), Priority.NORMAL)

    result = await fcm_client.send(fcm_token(), prepared, apns_id=NO_APNS_ID, environment=None)

    assert result.outcome is Outcome.SENT


# --- HMS --------------------------------------------------------------------------


@pytest.mark.parametrize("silent", [False, True])
async def test_hms_send_accepted(
    sandbox: SandboxProcess, hms_client: HmsClient, silent: bool
) -> None:
    result = await hms_client.send(
        hms_token(), payload("hms", silent), apns_id=NO_APNS_ID, environment=None
    )

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id is not None
    assert sandbox.admin.counters()["accepted"]["hms"] == 1


@pytest.mark.parametrize(
    ("fault", "outcome", "reason"),
    [
        ("invalid_token", Outcome.TOKEN_INVALID, "80300007"),
        ("traffic_control", Outcome.THROTTLED, "80300013"),
        ("internal_error", Outcome.TRANSIENT, "81000001"),
        ("not_permitted", Outcome.CREDENTIALS, "80300002"),
    ],
)
async def test_hms_error_mapped_to_outcome(
    sandbox: SandboxProcess, hms_client: HmsClient, fault: str, outcome: Outcome, reason: str
) -> None:
    token = hms_token()
    sandbox.admin.add_fault("hms", fault, token=token)

    result = await hms_client.send(token, payload("hms"), apns_id=NO_APNS_ID, environment=None)

    assert result.outcome is outcome
    assert result.reason == reason


async def test_hms_partial_success_marks_token_invalid(
    sandbox: SandboxProcess, hms_client: HmsClient
) -> None:
    sandbox.admin.update_settings(markers=True)

    result = await hms_client.send(
        hms_token() + "-invalid", payload("hms"), apns_id=NO_APNS_ID, environment=None
    )

    assert result.outcome is Outcome.TOKEN_INVALID


async def test_hms_expired_access_token_refreshed(
    sandbox: SandboxProcess, hms_client: HmsClient
) -> None:
    first = await hms_client.send(hms_token(), payload("hms"), apns_id=NO_APNS_ID, environment=None)
    old_token = hms_client.tokens.current
    # An hour later the sandbox returns 80200003 (token expired) for the cached token.
    sandbox.admin.set_clock_offset(3700)

    second = await hms_client.send(
        hms_token(), payload("hms"), apns_id=NO_APNS_ID, environment=None
    )

    assert first.outcome is Outcome.SENT
    assert second.outcome is Outcome.SENT
    assert hms_client.tokens.current != old_token


async def test_hms_wrong_secret_is_credentials(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints
) -> None:
    credentials = hms_credentials(sandbox)
    wrong = HmsClient.from_credentials(
        type(credentials)(
            id=credentials.id,
            app_id=credentials.app_id,
            hms_project_id=credentials.hms_project_id,
            hms_client_id=credentials.hms_client_id,
            hms_client_secret="not-the-secret",
        ),
        endpoints,
        transport_factory(endpoints),
    )
    try:
        result = await wrong.send(hms_token(), payload("hms"), apns_id=NO_APNS_ID, environment=None)
    finally:
        await wrong.aclose()

    assert result.outcome is Outcome.CREDENTIALS
    assert result.reason == "access_token_unavailable"
