"""Payload builders: each message field on each provider, limits and the token splice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from shared.message_body import MessageAttributes, MessageBody, Priority
from workers.providers.base import (
    InvalidMessage,
    PayloadTooLarge,
    build_payload,
    is_expired,
)
from workers.providers.payloads import MAX_TTL_S

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOUD = MessageAttributes()
SILENT = MessageAttributes(silent=True)

FULL_BODY = {
    "title": "Payment",
    "titleLocKey": "T_KEY",
    "titleLocArgs": ["a", "b"],
    "body": "You received 10 €",
    "bodyLocKey": "B_KEY",
    "bodyLocArgs": ["c"],
    "badge": 7,
    "sound": "chime.caf",
    "icon": "ic_pay",
    "category": "PAYMENT",
    "collapseKey": "42",
    "validUntil": (NOW + timedelta(hours=1)).isoformat(),
    "extras": {"text": "x", "number": 3, "flag": True, "nested": {"k": [1, 2]}, "none": None},
    "subtitle": "Card ending 1234",
    "image": "https://example.com/a.png",
    "threadId": "payments",
    "mutableContent": True,
    "interruptionLevel": "time-sensitive",
    "channelId": "payments",
}


def message(**fields: Any) -> MessageBody:
    return MessageBody.model_validate(fields)


def apns(
    body: MessageBody, attributes: MessageAttributes = LOUD, priority: Priority = Priority.HIGH
) -> tuple[dict[str, Any], dict[str, str]]:
    payload = build_payload("apns", body, attributes, priority, now=NOW)
    return orjson.loads(payload.body_for("ab" * 32)), dict(payload.headers)


def fcm(
    body: MessageBody, attributes: MessageAttributes = LOUD, priority: Priority = Priority.HIGH
) -> dict[str, Any]:
    payload = build_payload("fcm", body, attributes, priority, now=NOW)
    request: dict[str, Any] = orjson.loads(payload.body_for("fcm-token:APA91b"))
    return request["message"]


def hms(
    body: MessageBody, attributes: MessageAttributes = LOUD, priority: Priority = Priority.HIGH
) -> dict[str, Any]:
    payload = build_payload("hms", body, attributes, priority, now=NOW)
    request: dict[str, Any] = orjson.loads(payload.body_for("hms-token"))
    assert request["validate_only"] is False
    return request["message"]


# --- APNs -------------------------------------------------------------------------


def test_apns_maps_every_alert_field() -> None:
    payload, _headers = apns(message(**FULL_BODY))
    alert = payload["aps"]["alert"]

    assert alert["title"] == "Payment"
    assert alert["subtitle"] == "Card ending 1234"
    assert alert["body"] == "You received 10 €"
    assert alert["title-loc-key"] == "T_KEY"
    assert alert["title-loc-args"] == ["a", "b"]
    assert alert["loc-key"] == "B_KEY"
    assert alert["loc-args"] == ["c"]


def test_apns_maps_aps_fields() -> None:
    payload, _headers = apns(message(**FULL_BODY))
    aps = payload["aps"]

    assert aps["badge"] == 7
    assert aps["sound"] == "chime.caf"
    assert aps["category"] == "PAYMENT"
    assert aps["thread-id"] == "payments"
    assert aps["mutable-content"] == 1
    assert aps["interruption-level"] == "time-sensitive"
    assert "content-available" not in aps


def test_apns_collapse_key_as_thread_id() -> None:
    payload, headers = apns(message(body="b", collapseKey="news"))

    assert payload["aps"]["thread-id"] == "news"
    assert headers["apns-collapse-id"] == "news"


def test_apns_extras_are_custom_keys_beside_aps() -> None:
    payload, _headers = apns(message(**FULL_BODY))

    assert payload["text"] == "x"
    assert payload["number"] == 3
    assert payload["flag"] is True
    assert payload["nested"] == {"k": [1, 2]}
    assert "none" not in payload
    assert "text" not in payload["aps"]


def test_apns_extras_reject_aps_key() -> None:
    with pytest.raises(InvalidMessage, match="aps"):
        apns(message(body="b", extras={"aps": {}}))


def test_apns_headers_for_alert_push() -> None:
    body = message(**FULL_BODY)
    _payload, headers = apns(body)

    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-expiration"] == str(int((NOW + timedelta(hours=1)).timestamp()))
    assert headers["apns-collapse-id"] == "42"


def test_apns_normal_priority_is_5() -> None:
    _payload, headers = apns(message(body="b"), priority=Priority.NORMAL)

    assert headers["apns-priority"] == "5"


def test_apns_silent_push_is_background_with_priority_5() -> None:
    payload, headers = apns(message(**FULL_BODY), SILENT, Priority.HIGH)

    assert headers["apns-push-type"] == "background"
    assert headers["apns-priority"] == "5"
    assert payload["aps"] == {"content-available": 1}
    assert payload["text"] == "x"


def test_apns_omits_optional_headers_when_unset() -> None:
    _payload, headers = apns(message(body="b"))

    assert "apns-expiration" not in headers
    assert "apns-collapse-id" not in headers


def test_apns_payload_is_shared_by_all_devices() -> None:
    payload = build_payload("apns", message(body="b"), LOUD, Priority.HIGH)

    assert payload.body_for("aa" * 32) is payload.body_for("bb" * 32)


def test_apns_size_limit_counts_utf8_bytes() -> None:
    # 1,400 characters of 3-byte text fit the character limits but not 4096 bytes.
    with pytest.raises(PayloadTooLarge) as caught:
        apns(message(body="€" * 1400))

    assert caught.value.size > 4096
    assert caught.value.limit == 4096


def test_apns_size_limit_accepts_payload_at_limit() -> None:
    overhead = len(orjson.dumps({"aps": {"alert": {"body": ""}}}))
    payload, _headers = apns(message(body="a" * (4096 - overhead)))

    assert len(orjson.dumps(payload)) == 4096


def test_apns_size_limit_with_emoji() -> None:
    with pytest.raises(PayloadTooLarge):
        apns(message(body="😀" * 1100))


def test_apns_collapse_key_over_64_bytes_rejected() -> None:
    # 22 three-byte characters: 22 characters but 66 bytes.
    with pytest.raises(InvalidMessage, match="collapseKey"):
        apns(message(body="b", collapseKey="€" * 22))


# --- FCM --------------------------------------------------------------------------


def test_fcm_token_is_spliced_into_message() -> None:
    payload = build_payload("fcm", message(**FULL_BODY), LOUD, Priority.HIGH, now=NOW)

    first = orjson.loads(payload.body_for("token-one"))
    second = orjson.loads(payload.body_for('needs "quoting"'))

    assert first["message"]["token"] == "token-one"
    assert second["message"]["token"] == 'needs "quoting"'
    assert first["message"]["android"] == second["message"]["android"]


def test_fcm_empty_message_still_has_token() -> None:
    message_dict = fcm(message(), SILENT)

    assert message_dict["token"] == "fcm-token:APA91b"


def test_fcm_android_notification_fields() -> None:
    notification = fcm(message(**FULL_BODY))["android"]["notification"]

    assert notification["title"] == "Payment"
    assert notification["body"] == "You received 10 €"
    assert notification["title_loc_key"] == "T_KEY"
    assert notification["title_loc_args"] == ["a", "b"]
    assert notification["body_loc_key"] == "B_KEY"
    assert notification["body_loc_args"] == ["c"]
    assert notification["icon"] == "ic_pay"
    assert notification["sound"] == "chime.caf"
    assert notification["tag"] == "PAYMENT"
    assert notification["image"] == "https://example.com/a.png"
    assert notification["channel_id"] == "payments"
    assert notification["notification_count"] == 7
    assert notification["notification_priority"] == "PRIORITY_HIGH"


def test_fcm_android_delivery_priority_follows_message_priority() -> None:
    assert fcm(message(body="b"), priority=Priority.HIGH)["android"]["priority"] == "HIGH"
    assert fcm(message(body="b"), priority=Priority.NORMAL)["android"]["priority"] == "NORMAL"

    normal = fcm(message(body="b"), priority=Priority.NORMAL)["android"]["notification"]
    assert normal["notification_priority"] == "PRIORITY_DEFAULT"


def test_fcm_ttl_is_seconds_string() -> None:
    android = fcm(message(body="b", validUntil=(NOW + timedelta(hours=1)).isoformat()))["android"]

    assert android["ttl"] == "3600s"


def test_fcm_ttl_capped_at_four_weeks() -> None:
    android = fcm(message(body="b", validUntil=(NOW + timedelta(days=90)).isoformat()))["android"]

    assert android["ttl"] == f"{MAX_TTL_S}s"


def test_fcm_ttl_absent_without_valid_until() -> None:
    assert "ttl" not in fcm(message(body="b"))["android"]


def test_fcm_collapse_key() -> None:
    assert fcm(message(body="b", collapseKey="news"))["android"]["collapse_key"] == "news"


def test_fcm_data_values_are_strings() -> None:
    data = fcm(message(**FULL_BODY))["data"]

    assert data == {
        "text": "x",
        "number": "3",
        "flag": "true",
        "nested": '{"k":[1,2]}',
    }


def test_fcm_reserved_data_key_rejected() -> None:
    with pytest.raises(InvalidMessage, match="reserved"):
        fcm(message(body="b", extras={"google.c.a": "1"}))
    with pytest.raises(InvalidMessage, match="reserved"):
        fcm(message(body="b", extras={"from": "x"}))


def test_fcm_apns_block_for_ios_devices() -> None:
    apns_block = fcm(message(**FULL_BODY))["apns"]

    assert apns_block["headers"]["apns-push-type"] == "alert"
    assert apns_block["headers"]["apns-priority"] == "10"
    assert apns_block["headers"]["apns-collapse-id"] == "42"
    assert apns_block["payload"]["aps"]["alert"]["title"] == "Payment"
    assert apns_block["payload"]["aps"]["badge"] == 7
    assert apns_block["payload"]["aps"]["category"] == "PAYMENT"


def test_fcm_silent_is_data_only() -> None:
    message_dict = fcm(message(**FULL_BODY), SILENT)

    assert "notification" not in message_dict["android"]
    assert message_dict["data"]["text"] == "x"
    assert message_dict["apns"]["headers"]["apns-push-type"] == "background"
    assert message_dict["apns"]["headers"]["apns-priority"] == "5"
    assert message_dict["apns"]["payload"]["aps"] == {"content-available": 1}


def test_fcm_size_limit_counts_utf8_bytes() -> None:
    with pytest.raises(PayloadTooLarge):
        fcm(message(body="ž" * 1100))


def test_fcm_size_limit_with_non_latin_extras() -> None:
    with pytest.raises(PayloadTooLarge):
        fcm(message(body="b", extras={"text": "漢字" * 700}), SILENT)


# --- HMS --------------------------------------------------------------------------


def test_hms_token_is_an_array() -> None:
    assert hms(message(body="b"))["token"] == ["hms-token"]


def test_hms_android_notification_fields() -> None:
    notification = hms(message(**FULL_BODY))["android"]["notification"]

    assert notification["title"] == "Payment"
    assert notification["body"] == "You received 10 €"
    assert notification["title_loc_key"] == "T_KEY"
    assert notification["title_loc_args"] == ["a", "b"]
    assert notification["body_loc_key"] == "B_KEY"
    assert notification["body_loc_args"] == ["c"]
    assert notification["icon"] == "ic_pay"
    assert notification["sound"] == "chime.caf"
    assert notification["tag"] == "PAYMENT"
    assert notification["image"] == "https://example.com/a.png"
    assert notification["channel_id"] == "payments"
    assert notification["importance"] == "HIGH"
    assert notification["click_action"] == {"type": 1}
    assert notification["badge"] == {"set_num": 7}


def test_hms_urgency_follows_priority() -> None:
    assert hms(message(body="b"), priority=Priority.HIGH)["android"]["urgency"] == "HIGH"
    normal = hms(message(body="b"), priority=Priority.NORMAL)["android"]

    assert normal["urgency"] == "NORMAL"
    assert normal["notification"]["importance"] == "NORMAL"


def test_hms_numeric_collapse_key_is_integer() -> None:
    assert hms(message(body="b", collapseKey="42"))["android"]["collapse_key"] == 42


def test_hms_non_numeric_collapse_key_is_left_out() -> None:
    assert "collapse_key" not in hms(message(body="b", collapseKey="news"))["android"]
    assert "collapse_key" not in hms(message(body="b", collapseKey="101"))["android"]


def test_hms_ttl_is_seconds_string() -> None:
    android = hms(message(body="b", validUntil=(NOW + timedelta(minutes=5)).isoformat()))["android"]

    assert android["ttl"] == "300s"


def test_hms_data_is_json_string_of_extras() -> None:
    data = hms(message(**FULL_BODY))["data"]

    assert orjson.loads(data) == {"text": "x", "number": 3, "flag": True, "nested": {"k": [1, 2]}}


def test_hms_silent_has_no_notification() -> None:
    message_dict = hms(message(**FULL_BODY), SILENT)

    assert "notification" not in message_dict["android"]
    assert "data" in message_dict


def test_hms_size_limit_counts_utf8_bytes() -> None:
    with pytest.raises(PayloadTooLarge):
        hms(message(body="Ω" * 2100))


# --- shared -----------------------------------------------------------------------


def test_unknown_platform_raises_value_error() -> None:
    with pytest.raises(ValueError, match="webpush"):
        build_payload("webpush", message(body="b"), LOUD, Priority.HIGH)


def test_is_expired_compares_valid_until() -> None:
    assert is_expired(message(validUntil=(NOW - timedelta(seconds=1)).isoformat()), NOW)
    assert is_expired(message(validUntil=NOW.isoformat()), NOW)
    assert not is_expired(message(validUntil=(NOW + timedelta(seconds=1)).isoformat()), NOW)
    assert not is_expired(message(body="b"), NOW)


@pytest.mark.parametrize("platform", ["apns", "fcm", "hms"])
def test_payload_records_expiry_and_silence(platform: str) -> None:
    body = message(body="b", validUntil=(NOW + timedelta(hours=1)).isoformat())
    payload = build_payload(platform, body, SILENT, Priority.HIGH, now=NOW)

    assert payload.expires_at == NOW + timedelta(hours=1)
    assert payload.silent is True
