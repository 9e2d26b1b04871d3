"""Payload builders: the unified message mapped once to APNs, FCM HTTP v1 and HMS.

A campaign builds its payload once and sends it to every device, so everything that
does not depend on the device is encoded here. At send time the APNs client only adds
`apns-id` and `apns-topic`, and the FCM and HMS clients splice the JSON-quoted token
between two pre-encoded byte strings (`PreparedPayload.body_for`).

The mapping follows the PowerAuth Push Server with its defects fixed:
- FCM `android.ttl` is a duration string in seconds ("86400s"); the original passed
  seconds to a setter that takes milliseconds.
- FCM `data` values that are not strings are JSON-encoded; the original used Java
  `toString()` and failed on null.
- FCM `android.priority` and HMS `android.urgency` (the delivery priority) follow the
  message priority; the original set only the display priority.
- A silent APNs push is sent with `apns-priority: 5`, because Apple rejects background
  pushes with priority 10, and its `aps` carries only `content-available`.
- A non-numeric collapse key is left out of the HMS message instead of failing it,
  because HMS accepts only integers from -1 to 100.
- The badge reaches Android as `notification_count` (FCM) and `badge.set_num` (HMS).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.message_body import MessageAttributes, MessageBody, Priority

# Body limits in UTF-8 bytes. APNs counts the whole body (4096 bytes for alert and
# background pushes). HMS rejects a message over 4 KB with code 80300008.
# NOTE: Google does not document which bytes of an FCM message count toward its 4096;
# this builder takes the strict reading (the whole message without the token, the
# sandbox's rule), so a text near the limit, sent in both the android and the apns
# block, can be rejected here although FCM might accept it.
APNS_MAX_BODY_BYTES = 4096
FCM_MAX_MESSAGE_BYTES = 4096
HMS_MAX_MESSAGE_BYTES = 4096

# FCM and HMS accept a TTL of at most four weeks.
MAX_TTL_S = 2_419_200

APNS_MAX_COLLAPSE_ID_BYTES = 64

# FCM rejects these data keys: the exact names and any key starting with a prefix.
FCM_RESERVED_DATA_KEYS = frozenset({"from", "message_type"})
FCM_RESERVED_DATA_PREFIXES = ("google.", "gcm.")

HMS_MIN_COLLAPSE_KEY = -1
HMS_MAX_COLLAPSE_KEY = 100

# HMS click_action type 1 opens the app's launcher activity, as the original sends.
HMS_CLICK_ACTION_START_APP = 1


class Platform(enum.StrEnum):
    """Provider names as stored in the `platform` column."""

    APNS = "apns"
    FCM = "fcm"
    HMS = "hms"


class PayloadError(Exception):
    """A message cannot be turned into a provider payload; the worker records message_rejected."""

    reason = "invalid_message"


class InvalidMessage(PayloadError):
    """The message has a value the provider does not accept (reserved key, bad collapse id)."""


class PayloadTooLarge(PayloadError):
    """The encoded payload is over the provider's size limit in UTF-8 bytes."""

    reason = "payload_too_large"

    def __init__(self, platform: str, size: int, limit: int) -> None:
        super().__init__(
            f"{platform} payload is {size} bytes, over the limit of {limit} bytes;"
            " shorten the text or the extras"
        )
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class PreparedPayload:
    """A provider payload encoded once, ready to send to any device of one platform.

    For APNs, `body_prefix` is the whole body and `headers` the request headers that
    do not depend on the device. For FCM and HMS the device token goes between
    `body_prefix` and `body_suffix`.
    """

    platform: Platform
    body_prefix: bytes
    body_suffix: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    silent: bool = False
    expires_at: datetime | None = None

    def body_for(self, token: str) -> bytes:
        """Return the request body for one device."""
        if self.platform is Platform.APNS:
            return self.body_prefix
        return self.body_prefix + orjson.dumps(token) + self.body_suffix


def is_expired(body: MessageBody, now: datetime | None = None) -> bool:
    """Return whether the message's validUntil has passed, so it must not be sent."""
    if body.valid_until is None:
        return False
    current = now if now is not None else datetime.now(UTC)
    return body.valid_until <= current


def build_payload(
    platform: str,
    body: MessageBody,
    attributes: MessageAttributes,
    priority: Priority,
    *,
    now: datetime | None = None,
) -> PreparedPayload:
    """Build the provider payload for `platform` ("apns", "fcm" or "hms").

    `now` fixes the moment the FCM and HMS TTL is counted from (default: the clock).
    Raises InvalidMessage or PayloadTooLarge, which the worker records as
    message_rejected, and ValueError for an unknown platform.
    """
    current = now if now is not None else datetime.now(UTC)
    match Platform(platform):
        case Platform.APNS:
            return build_apns_payload(body, attributes, priority)
        case Platform.FCM:
            return build_fcm_payload(body, attributes, priority, current)
        case Platform.HMS:
            return build_hms_payload(body, attributes, priority, current)


# --- APNs -------------------------------------------------------------------------


def apns_alert(body: MessageBody) -> dict[str, Any]:
    alert = {
        "title": body.title,
        "subtitle": body.subtitle,
        "body": body.body,
        "title-loc-key": body.title_loc_key,
        "title-loc-args": body.title_loc_args,
        "loc-key": body.body_loc_key,
        "loc-args": body.body_loc_args,
    }
    return {key: value for key, value in alert.items() if value is not None}


def apns_aps(body: MessageBody, attributes: MessageAttributes) -> dict[str, Any]:
    """Build the `aps` dictionary; a silent push carries only content-available."""
    if attributes.silent:
        return {"content-available": 1}

    aps: dict[str, Any] = {}
    alert = apns_alert(body)
    if alert:
        aps["alert"] = alert
    if body.badge is not None:
        aps["badge"] = body.badge
    if body.sound is not None:
        aps["sound"] = body.sound
    if body.category is not None:
        aps["category"] = body.category

    # The original used the collapse key as thread-id; threadId now sets it directly.
    thread_id = body.thread_id if body.thread_id is not None else body.collapse_key
    if thread_id is not None:
        aps["thread-id"] = thread_id
    if body.mutable_content:
        aps["mutable-content"] = 1
    if body.interruption_level is not None:
        aps["interruption-level"] = body.interruption_level.value
    return aps


def apns_custom_keys(extras: dict[str, Any] | None) -> dict[str, Any]:
    """Return the extras as top-level keys beside `aps`, without null values."""
    if not extras:
        return {}
    if "aps" in extras:
        raise InvalidMessage("extras must not contain the key 'aps', which APNs reserves")
    return {key: value for key, value in extras.items() if value is not None}


def apns_expiration(valid_until: datetime | None) -> str | None:
    if valid_until is None:
        return None
    return str(int(valid_until.timestamp()))


def apns_headers(
    body: MessageBody, attributes: MessageAttributes, priority: Priority
) -> tuple[tuple[str, str], ...]:
    """Build the device-independent APNs headers (not apns-id, apns-topic, authorization)."""
    push_type = "background" if attributes.silent else "alert"
    # Apple requires priority 5 for background pushes.
    high = priority is Priority.HIGH and not attributes.silent
    headers = [("apns-push-type", push_type), ("apns-priority", "10" if high else "5")]

    expiration = apns_expiration(body.valid_until)
    if expiration is not None:
        headers.append(("apns-expiration", expiration))

    if body.collapse_key is not None:
        size = len(body.collapse_key.encode())
        if size > APNS_MAX_COLLAPSE_ID_BYTES:
            raise InvalidMessage(
                f"collapseKey is {size} bytes; APNs accepts at most"
                f" {APNS_MAX_COLLAPSE_ID_BYTES} bytes"
            )
        headers.append(("apns-collapse-id", body.collapse_key))
    return tuple(headers)


def apns_payload_dict(body: MessageBody, attributes: MessageAttributes) -> dict[str, Any]:
    payload = apns_custom_keys(body.extras)
    payload["aps"] = apns_aps(body, attributes)
    return payload


def build_apns_payload(
    body: MessageBody, attributes: MessageAttributes, priority: Priority
) -> PreparedPayload:
    encoded = orjson.dumps(apns_payload_dict(body, attributes))
    if len(encoded) > APNS_MAX_BODY_BYTES:
        raise PayloadTooLarge(Platform.APNS, len(encoded), APNS_MAX_BODY_BYTES)

    return PreparedPayload(
        platform=Platform.APNS,
        body_prefix=encoded,
        headers=apns_headers(body, attributes, priority),
        silent=attributes.silent,
        expires_at=body.valid_until,
    )


# --- shared by FCM and HMS --------------------------------------------------------


def ttl_seconds(valid_until: datetime | None, now: datetime) -> int | None:
    """Return the TTL in whole seconds until validUntil, capped at four weeks."""
    if valid_until is None:
        return None
    remaining = int((valid_until - now).total_seconds())
    return min(max(remaining, 0), MAX_TTL_S)


def drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def splice_token(envelope_prefix: bytes, message: dict[str, Any]) -> tuple[bytes, bytes]:
    """Split `{..."message": {"token": <token>, ...}}` into the bytes around the token.

    `envelope_prefix` ends just before the quoted token; the message's other fields
    follow the token.
    """
    encoded = orjson.dumps(message)
    if encoded == b"{}":
        return envelope_prefix, b"}}"
    return envelope_prefix, b"," + encoded[1:] + b"}"


# --- FCM HTTP v1 ------------------------------------------------------------------


def fcm_data_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def fcm_data(extras: dict[str, Any] | None) -> dict[str, str] | None:
    """Return the extras as FCM's string map, JSON-encoding values that are not strings."""
    if not extras:
        return None
    data: dict[str, str] = {}
    for key, value in extras.items():
        if key in FCM_RESERVED_DATA_KEYS or key.startswith(FCM_RESERVED_DATA_PREFIXES):
            raise InvalidMessage(
                f"extras key {key!r} is reserved by FCM (from, message_type and keys"
                " starting with google. or gcm.)"
            )
        if value is not None:
            data[key] = fcm_data_value(value)
    return data or None


def fcm_android_notification(body: MessageBody, priority: Priority) -> dict[str, Any]:
    notification_priority = "PRIORITY_HIGH" if priority is Priority.HIGH else "PRIORITY_DEFAULT"
    return drop_none(
        {
            "title": body.title,
            "body": body.body,
            "title_loc_key": body.title_loc_key,
            "title_loc_args": body.title_loc_args,
            "body_loc_key": body.body_loc_key,
            "body_loc_args": body.body_loc_args,
            "icon": body.icon,
            "sound": body.sound,
            # The original maps category to tag; kept so existing apps behave the same.
            "tag": body.category,
            "image": body.image,
            "channel_id": body.channel_id,
            "notification_count": body.badge,
            "notification_priority": notification_priority,
        }
    )


def fcm_android(
    body: MessageBody, attributes: MessageAttributes, priority: Priority, now: datetime
) -> dict[str, Any]:
    android: dict[str, Any] = {"priority": priority.value}
    if body.collapse_key is not None:
        android["collapse_key"] = body.collapse_key

    ttl = ttl_seconds(body.valid_until, now)
    if ttl is not None:
        android["ttl"] = f"{ttl}s"

    if not attributes.silent:
        android["notification"] = fcm_android_notification(body, priority)
    return android


def fcm_apns(
    body: MessageBody, attributes: MessageAttributes, priority: Priority
) -> dict[str, Any]:
    """Build the apns block FCM forwards to iOS devices; extras arrive through `data`."""
    headers = dict(apns_headers(body, attributes, priority))
    return {"headers": headers, "payload": {"aps": apns_aps(body, attributes)}}


def check_size(platform: Platform, part: dict[str, Any], limit: int) -> None:
    size = len(orjson.dumps(part))
    if size > limit:
        raise PayloadTooLarge(platform, size, limit)


def build_fcm_payload(
    body: MessageBody, attributes: MessageAttributes, priority: Priority, now: datetime
) -> PreparedPayload:
    data = fcm_data(body.extras)
    android = fcm_android(body, attributes, priority, now)
    apns = fcm_apns(body, attributes, priority)

    message = drop_none({"data": data, "android": android, "apns": apns})
    check_size(Platform.FCM, message, FCM_MAX_MESSAGE_BYTES)
    prefix, suffix = splice_token(b'{"message":{"token":', message)
    return PreparedPayload(
        platform=Platform.FCM,
        body_prefix=prefix,
        body_suffix=suffix,
        silent=attributes.silent,
        expires_at=body.valid_until,
    )


# --- HMS (Huawei Push Kit v2) -----------------------------------------------------


def hms_collapse_key(collapse_key: str | None) -> int | None:
    """Return the collapse key as HMS's integer, or None when it is not one HMS accepts."""
    if collapse_key is None:
        return None
    try:
        value = int(collapse_key)
    except ValueError:
        return None
    if not HMS_MIN_COLLAPSE_KEY <= value <= HMS_MAX_COLLAPSE_KEY:
        return None
    return value


def hms_android_notification(body: MessageBody, priority: Priority) -> dict[str, Any]:
    notification = drop_none(
        {
            "title": body.title,
            "body": body.body,
            "title_loc_key": body.title_loc_key,
            "title_loc_args": body.title_loc_args,
            "body_loc_key": body.body_loc_key,
            "body_loc_args": body.body_loc_args,
            "icon": body.icon,
            "sound": body.sound,
            "tag": body.category,
            "image": body.image,
            "channel_id": body.channel_id,
            "importance": "HIGH" if priority is Priority.HIGH else "NORMAL",
            "click_action": {"type": HMS_CLICK_ACTION_START_APP},
        }
    )
    if body.badge is not None:
        notification["badge"] = {"set_num": body.badge}
    return notification


def hms_android(
    body: MessageBody, attributes: MessageAttributes, priority: Priority, now: datetime
) -> dict[str, Any]:
    android: dict[str, Any] = {"urgency": priority.value}

    collapse_key = hms_collapse_key(body.collapse_key)
    if collapse_key is not None:
        android["collapse_key"] = collapse_key

    ttl = ttl_seconds(body.valid_until, now)
    if ttl is not None:
        android["ttl"] = f"{ttl}s"

    if not attributes.silent:
        android["notification"] = hms_android_notification(body, priority)
    return android


def build_hms_payload(
    body: MessageBody, attributes: MessageAttributes, priority: Priority, now: datetime
) -> PreparedPayload:
    extras = drop_none(body.extras) if body.extras else {}
    message: dict[str, Any] = {"android": hms_android(body, attributes, priority, now)}
    if extras:
        # HMS takes data as one string, usually serialised JSON, as the original sends.
        message["data"] = orjson.dumps(extras).decode()

    check_size(Platform.HMS, message, HMS_MAX_MESSAGE_BYTES)

    prefix, suffix = splice_token(b'{"validate_only":false,"message":{"token":[', message)
    return PreparedPayload(
        platform=Platform.HMS,
        body_prefix=prefix,
        body_suffix=b"]" + suffix,
        silent=attributes.silent,
        expires_at=body.valid_until,
    )
