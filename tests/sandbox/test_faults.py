"""Fault rules and built-in token markers for APNs, FCM and HMS."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from tests.sandbox.conftest import device_token
from tests.sandbox.h2client import H2TestConnection
from tests.sandbox.test_apns import PAYLOAD, apns_headers, send, warm_up
from tests.sandbox.test_fcm import FCM_TOKEN, access_token, fcm_error_code, send_message
from tests.sandbox.test_hms import access_token as hms_access_token
from tests.sandbox.test_hms import send as hms_send
from workers.sandbox.control import SandboxAdmin, SandboxAdminError
from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount, HmsClientCredentials


async def test_apns_unregistered_has_timestamp(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    token = device_token()
    admin.add_fault("apns", "unregistered", token=token)
    before_ms = int(time.time() * 1000)

    status, body, _ = await send(apns_connection, apns_app, token=token)
    other_status, _, _ = await send(apns_connection, apns_app)

    assert status == 410
    assert body["reason"] == "Unregistered"
    assert isinstance(body["timestamp"], int)
    assert body["timestamp"] >= before_ms
    assert other_status == 200


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [
        ("bad_device_token", 400, "BadDeviceToken"),
        ("expired_token", 410, "ExpiredToken"),
        ("device_token_not_for_topic", 400, "DeviceTokenNotForTopic"),
        ("internal_server_error", 500, "InternalServerError"),
        ("service_unavailable", 503, "ServiceUnavailable"),
        ("shutdown", 503, "Shutdown"),
    ],
)
async def test_apns_fault_outcomes(
    apns_connection: H2TestConnection,
    apns_app: ApnsSigningKey,
    admin: SandboxAdmin,
    outcome: str,
    status: int,
    reason: str,
):
    admin.add_fault("apns", outcome)

    answer_status, body, _ = await send(apns_connection, apns_app)

    assert answer_status == status
    assert body["reason"] == reason


async def test_apns_too_many_requests_retry_after_seconds(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    admin.add_fault("apns", "too_many_requests", retry_after=30)

    status, body, headers = await send(apns_connection, apns_app)

    assert status == 429
    assert body == {"reason": "TooManyRequests"}
    assert headers["retry-after"] == "30"


async def test_apns_too_many_requests_retry_after_date(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    admin.add_fault("apns", "too_many_requests", retry_after=120, retry_after_as_date=True)

    status, _, headers = await send(apns_connection, apns_app)

    retry_at = email.utils.parsedate_to_datetime(headers["retry-after"]).timestamp()
    assert status == 429
    assert time.time() + 60 < retry_at < time.time() + 180


async def test_fault_count_limits_rule(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    token = device_token()
    admin.add_fault("apns", "too_many_requests", token=token, count=2)

    statuses = [(await send(apns_connection, apns_app, token=token))[0] for _ in range(3)]

    assert statuses == [429, 429, 200]
    assert admin.request("GET", "/faults") == []


async def test_fault_probability_affects_share(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    await warm_up(apns_connection, apns_app)
    admin.add_fault("apns", "internal_server_error", probability=0.5)

    streams = [
        apns_connection.start_request(
            f"/3/device/{device_token()}", apns_headers(apns_app), PAYLOAD
        )
        for _ in range(200)
    ]
    statuses = [(await apns_connection.response(stream)).status for stream in streams]

    assert 0 < statuses.count(500) < 200
    assert statuses.count(500) + statuses.count(200) == 200


async def test_removed_fault_stops_applying(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    rule_id = admin.add_fault("apns", "service_unavailable")

    first, _, _ = await send(apns_connection, apns_app)
    admin.remove_fault(rule_id)
    second, _, _ = await send(apns_connection, apns_app)

    assert (first, second) == (503, 200)


async def test_latency_delays_only_matching_token(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    await warm_up(apns_connection, apns_app)
    slow_token = device_token()
    admin.add_fault("apns", token=slow_token, latency_ms=300)
    order: list[str] = []

    async def timed_send(label: str, token: str) -> None:
        await send(apns_connection, apns_app, token=token)
        order.append(label)

    await asyncio.gather(timed_send("slow", slow_token), timed_send("fast", device_token()))

    assert order == ["fast", "slow"]


async def test_apns_markers(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    dead = "a" * 56 + "0000dead"
    bad = "a" * 56 + "00000bad"

    dead_status, dead_body, _ = await send(apns_connection, apns_app, token=dead)
    bad_status, bad_body, _ = await send(apns_connection, apns_app, token=bad)
    admin.update_settings(markers=False)
    unmarked_status, _, _ = await send(apns_connection, apns_app, token=dead)

    assert (dead_status, dead_body["reason"]) == (410, "Unregistered")
    assert (bad_status, bad_body["reason"]) == (400, "BadDeviceToken")
    assert unmarked_status == 200


@pytest.mark.parametrize(
    ("outcome", "status", "error_code"),
    [
        ("unregistered", 404, "UNREGISTERED"),
        ("quota_exceeded", 429, "QUOTA_EXCEEDED"),
        ("unavailable", 503, "UNAVAILABLE"),
        ("internal", 500, "INTERNAL"),
        ("sender_id_mismatch", 403, "SENDER_ID_MISMATCH"),
    ],
)
async def test_fcm_fault_outcomes(
    fcm_connection: H2TestConnection,
    fcm_app: FcmServiceAccount,
    admin: SandboxAdmin,
    outcome: str,
    status: int,
    error_code: str,
):
    bearer = await access_token(fcm_connection, fcm_app)
    admin.add_fault("fcm", outcome, token=FCM_TOKEN, retry_after=60)

    answer_status, body = await send_message(
        fcm_connection, bearer, {"message": {"token": FCM_TOKEN}}
    )

    assert answer_status == status
    assert fcm_error_code(body) == error_code


async def test_fcm_quota_exceeded_has_retry_after(
    fcm_connection: H2TestConnection, fcm_app: FcmServiceAccount, admin: SandboxAdmin
):
    bearer = await access_token(fcm_connection, fcm_app)
    admin.add_fault("fcm", "quota_exceeded", retry_after=60)

    response = await fcm_connection.request(
        "/v1/projects/sandbox-project/messages:send",
        [("authorization", f"Bearer {bearer}"), ("content-type", "application/json")],
        b'{"message": {"token": "abc"}}',
    )

    detail_types = [detail["@type"] for detail in response.json()["error"]["details"]]
    assert response.status == 429
    assert response.headers["retry-after"] == "60"
    assert "type.googleapis.com/google.rpc.QuotaFailure" in detail_types


async def test_hms_traffic_control(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials, admin: SandboxAdmin
):
    bearer = await hms_access_token(hms_connection, hms_app)
    admin.add_fault("hms", "traffic_control")

    status, body = await hms_send(hms_connection, bearer, {"token": ["t"]}, hms_app.client_id)

    assert status == 503
    assert body["code"] != "80000000"


async def test_hms_invalid_token_fault(
    hms_connection: H2TestConnection, hms_app: HmsClientCredentials, admin: SandboxAdmin
):
    bearer = await hms_access_token(hms_connection, hms_app)
    admin.add_fault("hms", "invalid_token", token="dead-device")

    status, body = await hms_send(
        hms_connection, bearer, {"token": ["dead-device"]}, hms_app.client_id
    )

    assert status == 400
    assert body["code"] == "80300007"


@pytest.mark.parametrize(
    "rule",
    [
        {"provider": "apns", "outcome": "quota_exceeded"},
        {"provider": "gcm", "outcome": "unregistered"},
        {"provider": "fcm", "outcome": "unregistered", "probability": 2},
        {"provider": "fcm", "outcome": "unregistered", "count": 0},
    ],
    ids=["outcome-of-other-provider", "unknown-provider", "probability-above-1", "zero-count"],
)
def test_invalid_fault_rule_rejected(admin: SandboxAdmin, rule: dict[str, object]):
    with pytest.raises(SandboxAdminError) as raised:
        admin.request("POST", "/faults", rule)

    assert raised.value.status == 400
