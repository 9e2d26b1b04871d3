"""Outcome table: provider replies and the outcomes the worker records."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from workers.providers import apns, fcm, hms
from workers.providers.base import Outcome
from workers.providers.outcomes import (
    APNS_REASONS,
    CONFIGURATION_SUSPECT_REASONS,
    FCM_ERROR_CODES,
    classify_apns,
    classify_fcm,
    classify_hms,
)
from workers.providers.transport import HttpResponse, parse_retry_after

APNS_ID = "6f1c3c8e-1d2b-5a4f-8e7d-0c9b8a7f6e5d"


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (200, None, Outcome.SENT),
        (410, "Unregistered", Outcome.TOKEN_INVALID),
        (410, "ExpiredToken", Outcome.TOKEN_INVALID),
        (400, "BadDeviceToken", Outcome.TOKEN_INVALID),
        (400, "DeviceTokenNotForTopic", Outcome.TOKEN_INVALID),
        (400, "TopicDisallowed", Outcome.TOKEN_INVALID),
        (403, "ExpiredProviderToken", Outcome.CREDENTIALS),
        (403, "InvalidProviderToken", Outcome.CREDENTIALS),
        (403, "MissingProviderToken", Outcome.CREDENTIALS),
        (403, "Forbidden", Outcome.CREDENTIALS),
        (403, None, Outcome.CREDENTIALS),
        (429, "TooManyRequests", Outcome.THROTTLED),
        (429, None, Outcome.THROTTLED),
        (500, "InternalServerError", Outcome.TRANSIENT),
        (503, "ServiceUnavailable", Outcome.TRANSIENT),
        (503, "Shutdown", Outcome.TRANSIENT),
        (502, None, Outcome.TRANSIENT),
        (413, "PayloadTooLarge", Outcome.MESSAGE_REJECTED),
        (400, "BadCollapseId", Outcome.MESSAGE_REJECTED),
        (400, "SomethingNew", Outcome.MESSAGE_REJECTED),
        (400, "BadTopic", Outcome.CREDENTIALS),
    ],
)
def test_apns_classification(status: int, reason: str | None, outcome: Outcome) -> None:
    assert classify_apns(status, reason) is outcome


def test_apns_credentials_reasons_never_invalidate_tokens() -> None:
    for reason in ("ExpiredProviderToken", "InvalidProviderToken", "MissingProviderToken"):
        assert APNS_REASONS[reason] is Outcome.CREDENTIALS


@pytest.mark.parametrize(
    ("status", "error_code", "token_rejected", "outcome"),
    [
        (200, None, False, Outcome.SENT),
        (404, "UNREGISTERED", False, Outcome.TOKEN_INVALID),
        (403, "SENDER_ID_MISMATCH", False, Outcome.TOKEN_INVALID),
        (429, "QUOTA_EXCEEDED", False, Outcome.THROTTLED),
        (503, "UNAVAILABLE", False, Outcome.TRANSIENT),
        (500, "INTERNAL", False, Outcome.TRANSIENT),
        (401, "THIRD_PARTY_AUTH_ERROR", False, Outcome.CREDENTIALS),
        (400, "INVALID_ARGUMENT", False, Outcome.MESSAGE_REJECTED),
        (400, "INVALID_ARGUMENT", True, Outcome.TOKEN_INVALID),
        (401, None, False, Outcome.CREDENTIALS),
        (403, None, False, Outcome.CREDENTIALS),
        (404, None, False, Outcome.CREDENTIALS),
        (400, "UNSPECIFIED_ERROR", False, Outcome.MESSAGE_REJECTED),
        (503, None, False, Outcome.TRANSIENT),
    ],
)
def test_fcm_classification(
    status: int, error_code: str | None, token_rejected: bool, outcome: Outcome
) -> None:
    assert classify_fcm(status, error_code, token_rejected) is outcome


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (200, "80000000", Outcome.SENT),
        (200, "80100000", Outcome.TOKEN_INVALID),
        (400, "80300007", Outcome.TOKEN_INVALID),
        (400, "80300008", Outcome.MESSAGE_REJECTED),
        (400, "80100003", Outcome.MESSAGE_REJECTED),
        (401, "80200001", Outcome.CREDENTIALS),
        (401, "80200003", Outcome.CREDENTIALS),
        (403, "80300002", Outcome.CREDENTIALS),
        (500, "81000001", Outcome.TRANSIENT),
        (503, None, Outcome.THROTTLED),
        (503, "80300013", Outcome.THROTTLED),
        (502, None, Outcome.TRANSIENT),
        (200, "99999999", Outcome.TRANSIENT),
    ],
)
def test_hms_classification(status: int, code: str | None, outcome: Outcome) -> None:
    assert classify_hms(status, code) is outcome


def test_configuration_suspects_are_token_invalid() -> None:
    assert CONFIGURATION_SUSPECT_REASONS == {
        "BadDeviceToken",
        "DeviceTokenNotForTopic",
        "TopicDisallowed",
        "SENDER_ID_MISMATCH",
    }
    for reason in CONFIGURATION_SUSPECT_REASONS:
        table = APNS_REASONS if reason in APNS_REASONS else FCM_ERROR_CODES
        assert table[reason] is Outcome.TOKEN_INVALID


def test_apns_410_carries_timestamp() -> None:
    body = orjson.dumps({"reason": "Unregistered", "timestamp": 1_790_000_000_123})
    result = apns.read_response(HttpResponse(410, {"apns-id": APNS_ID}, body), APNS_ID)

    assert result.outcome is Outcome.TOKEN_INVALID
    assert result.reason == "Unregistered"
    assert result.token_invalid_since == datetime.fromtimestamp(1_790_000_000.123, UTC)
    assert result.status == 410


def test_apns_success_returns_apns_id() -> None:
    result = apns.read_response(HttpResponse(200, {"apns-id": APNS_ID}, b""), APNS_ID)

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == APNS_ID
    assert result.reason is None


def test_apns_429_reads_retry_after() -> None:
    body = orjson.dumps({"reason": "TooManyRequests"})
    result = apns.read_response(HttpResponse(429, {"retry-after": "30"}, body), APNS_ID)

    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after_s == 30.0


def test_apns_error_without_json_body_uses_status() -> None:
    result = apns.read_response(HttpResponse(503, {}, b"<html>"), APNS_ID)

    assert result.outcome is Outcome.TRANSIENT
    assert result.reason == "http_503"


def fcm_error(status: int, rpc_status: str, message: str, details: list[object]) -> bytes:
    return orjson.dumps(
        {"error": {"code": status, "message": message, "status": rpc_status, "details": details}}
    )


def test_fcm_error_code_read_from_details() -> None:
    body = fcm_error(
        404,
        "NOT_FOUND",
        "Requested entity was not found.",
        [{"@type": fcm.FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}],
    )
    result = fcm.read_response(HttpResponse(404, {}, body))

    assert result.outcome is Outcome.TOKEN_INVALID
    assert result.reason == "UNREGISTERED"


def test_fcm_invalid_token_text_means_token_invalid() -> None:
    body = fcm_error(
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        [{"@type": fcm.FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"}],
    )
    result = fcm.read_response(HttpResponse(400, {}, body))

    assert result.outcome is Outcome.TOKEN_INVALID
    assert result.reason == "INVALID_ARGUMENT"


def test_fcm_field_violation_on_payload_rejects_message() -> None:
    body = fcm_error(
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
        [
            {
                "@type": fcm.BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": "message.data[0].value", "description": "x"}],
            }
        ],
    )
    result = fcm.read_response(HttpResponse(400, {}, body))

    assert result.outcome is Outcome.MESSAGE_REJECTED
    assert result.reason == "INVALID_ARGUMENT"


def test_fcm_field_violation_on_token_means_token_invalid() -> None:
    body = fcm_error(
        400,
        "INVALID_ARGUMENT",
        "Request contains an invalid argument.",
        [
            {"@type": fcm.FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"},
            {"@type": fcm.BAD_REQUEST_TYPE, "fieldViolations": [{"field": "message.token"}]},
        ],
    )

    assert fcm.read_response(HttpResponse(400, {}, body)).outcome is Outcome.TOKEN_INVALID


def test_fcm_quota_exceeded_reads_retry_after() -> None:
    body = fcm_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded",
        [{"@type": fcm.FCM_ERROR_TYPE, "errorCode": "QUOTA_EXCEEDED"}],
    )
    result = fcm.read_response(HttpResponse(429, {"retry-after": "60"}, body))

    assert result.outcome is Outcome.THROTTLED
    assert result.retry_after_s == 60.0


def test_fcm_success_returns_message_name() -> None:
    body = orjson.dumps({"name": "projects/p/messages/0:1%2"})
    result = fcm.read_response(HttpResponse(200, {}, body))

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == "projects/p/messages/0:1%2"


def test_fcm_unparsable_error_uses_status() -> None:
    result = fcm.read_response(HttpResponse(503, {}, b"Service Unavailable"))

    assert result.outcome is Outcome.TRANSIENT
    assert result.reason == "http_503"


def test_hms_reads_code_from_200_body() -> None:
    body = orjson.dumps({"code": "80300007", "msg": "All the tokens are invalid", "requestId": "r"})
    result = hms.read_response(HttpResponse(200, {}, body))

    assert result.outcome is Outcome.TOKEN_INVALID
    assert result.reason == "80300007"


def test_hms_success_returns_request_id() -> None:
    body = orjson.dumps({"code": "80000000", "msg": "Success", "requestId": "157440"})
    result = hms.read_response(HttpResponse(200, {}, body))

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == "157440"
    assert result.reason is None


def test_retry_after_accepts_seconds_and_http_date() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now=1767225600.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:00 GMT", now=1767225660.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
