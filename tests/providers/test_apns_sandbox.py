"""APNs client against the sandbox: accepted sends, each error class, provider token retry."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

import pytest

from shared.message_body import MessageAttributes, MessageBody, Priority
from tests.providers.sandbox_apps import apns_credentials, transport_factory
from workers.providers.apns import ApnsClient
from workers.providers.base import (
    Outcome,
    PreparedPayload,
    ProviderEndpoints,
    apns_id_for,
    build_payload,
)
from workers.providers.tokens import ApnsTokenCache
from workers.sandbox.control import SandboxProcess

ONE_HOUR_AND_A_BIT_S = 3700
FIFTY_EIGHT_MINUTES_S = 58 * 60


def device_token() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def payload() -> PreparedPayload:
    body = MessageBody(title="Hello", body="Grüße 😀", badge=1, sound="default")
    return build_payload("apns", body, MessageAttributes(), Priority.HIGH)


@pytest.fixture
async def client(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints
) -> AsyncIterator[ApnsClient]:
    credentials = apns_credentials(sandbox)
    apns = ApnsClient.from_credentials(
        credentials, endpoints, transport_factory(endpoints), ApnsTokenCache()
    )
    yield apns
    await apns.aclose()


async def test_send_accepted(
    sandbox: SandboxProcess, client: ApnsClient, payload: PreparedPayload
) -> None:
    apns_id = apns_id_for("message", 1)

    result = await client.send(device_token(), payload, apns_id=apns_id, environment=None)

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == apns_id
    assert sandbox.admin.counters()["accepted"]["apns"] == 1


async def test_silent_send_accepted_with_background_checks(
    sandbox: SandboxProcess, client: ApnsClient
) -> None:
    sandbox.admin.update_settings(background_priority_check=True)
    silent = build_payload(
        "apns", MessageBody(extras={"k": "v"}), MessageAttributes(silent=True), Priority.HIGH
    )

    result = await client.send(
        device_token(), silent, apns_id=apns_id_for("message", 2), environment=None
    )

    assert result.outcome is Outcome.SENT


async def test_development_device_goes_to_development_host(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    # A key registered for production only is refused by the development host, so an
    # accepted send proves the client picked the development URL.
    credentials = apns_credentials(
        sandbox, environment="development", app_environment="development"
    )
    client = ApnsClient.from_credentials(
        credentials, endpoints, transport_factory(endpoints), ApnsTokenCache()
    )
    try:
        result = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 3), environment="development"
        )
        production = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 4), environment="production"
        )
    finally:
        await client.aclose()

    assert result.outcome is Outcome.SENT
    assert production.outcome is Outcome.CREDENTIALS
    assert production.reason == "BadEnvironmentKeyIdInToken"


@pytest.mark.parametrize(
    ("fault", "outcome", "reason", "status"),
    [
        ("unregistered", Outcome.TOKEN_INVALID, "Unregistered", 410),
        ("expired_token", Outcome.TOKEN_INVALID, "ExpiredToken", 410),
        ("bad_device_token", Outcome.TOKEN_INVALID, "BadDeviceToken", 400),
        ("device_token_not_for_topic", Outcome.TOKEN_INVALID, "DeviceTokenNotForTopic", 400),
        ("too_many_requests", Outcome.THROTTLED, "TooManyRequests", 429),
        ("internal_server_error", Outcome.TRANSIENT, "InternalServerError", 500),
        ("service_unavailable", Outcome.TRANSIENT, "ServiceUnavailable", 503),
        ("shutdown", Outcome.TRANSIENT, "Shutdown", 503),
    ],
)
async def test_error_mapped_to_outcome(
    sandbox: SandboxProcess,
    client: ApnsClient,
    payload: PreparedPayload,
    fault: str,
    outcome: Outcome,
    reason: str,
    status: int,
) -> None:
    token = device_token()
    sandbox.admin.add_fault("apns", fault, token=token)

    result = await client.send(token, payload, apns_id=apns_id_for("message", 5), environment=None)

    assert result.outcome is outcome
    assert result.reason == reason
    assert result.status == status


async def test_unregistered_carries_timestamp(
    sandbox: SandboxProcess, client: ApnsClient, payload: PreparedPayload
) -> None:
    token = device_token()
    sandbox.admin.add_fault("apns", "unregistered", token=token)

    before = time.time()
    result = await client.send(token, payload, apns_id=apns_id_for("message", 6), environment=None)

    assert result.token_invalid_since is not None
    assert abs(result.token_invalid_since.timestamp() - before) < 60


async def test_too_many_requests_reads_retry_after(
    sandbox: SandboxProcess, client: ApnsClient, payload: PreparedPayload
) -> None:
    token = device_token()
    sandbox.admin.add_fault("apns", "too_many_requests", token=token, retry_after=30)

    result = await client.send(token, payload, apns_id=apns_id_for("message", 7), environment=None)

    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after_s == 30.0


async def test_oversized_payload_rejected_by_builder() -> None:
    from workers.providers.base import PayloadTooLarge

    with pytest.raises(PayloadTooLarge):
        build_payload("apns", MessageBody(body="ж" * 2100), MessageAttributes(), Priority.HIGH)


class SettableClock:
    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def __call__(self) -> float:
        return time.time() + self.offset_s


async def test_expired_provider_token_renewed_and_retried(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    # A token signed 58 minutes ago binds the connection. Then the sandbox clock moves
    # 200 s ahead, so the sandbox returns ExpiredProviderToken. The client must sign a
    # new token and retry once on a new connection, because on the old one the sandbox
    # returns TooManyProviderTokenUpdates (a token change within 20 minutes).
    sandbox.admin.update_settings(strict_token_updates=True)
    clock = SettableClock(-FIFTY_EIGHT_MINUTES_S)
    tokens = ApnsTokenCache(clock=clock, lifetime_s=2 * ONE_HOUR_AND_A_BIT_S)
    credentials = apns_credentials(sandbox)
    client = ApnsClient.from_credentials(
        credentials, endpoints, transport_factory(endpoints), tokens
    )
    try:
        first = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 8), environment=None
        )
        stale = client.signer.current
        clock.offset_s = 0.0
        sandbox.admin.set_clock_offset(200)

        result = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 9), environment=None
        )
    finally:
        await client.aclose()

    assert first.outcome is Outcome.SENT
    assert result.outcome is Outcome.SENT
    assert stale is not None
    assert client.signer.current is not None
    assert client.signer.current.value != stale.value
    assert sandbox.admin.counters()["rejected"]["apns"] == {"ExpiredProviderToken": 1}


async def test_expired_provider_token_retried_only_once(
    sandbox: SandboxProcess, client: ApnsClient, payload: PreparedPayload
) -> None:
    # With the sandbox clock an hour ahead every new token is expired as well.
    sandbox.admin.set_clock_offset(ONE_HOUR_AND_A_BIT_S)

    result = await client.send(
        device_token(), payload, apns_id=apns_id_for("message", 9), environment=None
    )

    assert result.outcome is Outcome.CREDENTIALS
    assert result.reason == "ExpiredProviderToken"
    assert sandbox.admin.counters()["rejected"]["apns"] == {"ExpiredProviderToken": 2}


async def test_provider_token_reused_across_sends(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    tokens = ApnsTokenCache()
    credentials = apns_credentials(sandbox)
    client = ApnsClient.from_credentials(
        credentials, endpoints, transport_factory(endpoints), tokens
    )
    used_tokens = set()
    try:
        for row in range(20):
            result = await client.send(
                device_token(), payload, apns_id=apns_id_for("message", row), environment=None
            )
            assert result.outcome is Outcome.SENT
            used_tokens.add(client.lanes["production"].token)
    finally:
        await client.aclose()

    assert len(used_tokens) == 1
    assert len(tokens.signers) == 1


async def test_unknown_key_is_credentials(
    sandbox: SandboxProcess, client: ApnsClient, payload: PreparedPayload
) -> None:
    sandbox.admin.reset(everything=True)

    result = await client.send(
        device_token(), payload, apns_id=apns_id_for("message", 10), environment=None
    )

    assert result.outcome is Outcome.CREDENTIALS
    assert result.reason == "InvalidProviderToken"
