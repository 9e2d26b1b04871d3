"""Schema checks of the FCM HTTP v1 SendMessageRequest body.

Google's proto-JSON parser accepts snake_case and lowerCamelCase field names, so both are
known here. Nested objects whose field lists change often (android.notification,
apns.payload, webpush.notification) are not checked for unknown names.

Size rule used by the sandbox (Google does not document which bytes count): the compact JSON
encoding of `message` without its target field must be at most 4096 bytes, 2048 for topic
and condition messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

MAX_MESSAGE_BYTES = 4096
MAX_TOPIC_MESSAGE_BYTES = 2048
MAX_TTL_S = 2_419_200
TARGET_FIELDS = ("token", "topic", "condition", "fid")

_REQUEST_FIELDS = frozenset({"message", "validate_only", "validateOnly"})
_MESSAGE_FIELDS = frozenset(
    {
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "fcmOptions",
        *TARGET_FIELDS,
    }
)
_NOTIFICATION_FIELDS = frozenset({"title", "body", "image"})
_ANDROID_FIELDS = frozenset(
    {
        "collapse_key",
        "collapseKey",
        "priority",
        "ttl",
        "restricted_package_name",
        "restrictedPackageName",
        "data",
        "notification",
        "fcm_options",
        "fcmOptions",
        "direct_boot_ok",
        "directBootOk",
        "bandwidth_constrained_ok",
        "bandwidthConstrainedOk",
        "restricted_satellite_ok",
        "restrictedSatelliteOk",
    }
)
_APNS_FIELDS = frozenset(
    {"headers", "payload", "fcm_options", "fcmOptions", "live_activity_token", "liveActivityToken"}
)
_WEBPUSH_FIELDS = frozenset({"headers", "data", "notification", "fcm_options", "fcmOptions"})

_TOKEN = re.compile(r"[A-Za-z0-9_\-:.]{1,4096}")
_TOPIC = re.compile(r"(/topics/)?[a-zA-Z0-9\-_.~%]+")
_DURATION = re.compile(r"([0-9]+)(\.[0-9]{1,9})?s")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_ANDROID_PRIORITIES = frozenset({"NORMAL", "HIGH"})
_RESERVED_DATA_KEYS = frozenset({"from", "message_type"})
_RESERVED_DATA_PREFIXES = ("google.", "gcm.")


class InvalidMessage(ValueError):
    """The send request breaks the schema; FCM answers 400 INVALID_ARGUMENT."""

    def __init__(
        self, message: str, field: str | None = None, error_code: str | None = "INVALID_ARGUMENT"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.error_code = error_code


@dataclass(slots=True)
class CheckedSendRequest:
    """The parts of a valid request the send endpoint needs."""

    token: str | None
    target: str
    validate_only: bool


def check_send_request(body: bytes) -> CheckedSendRequest:
    """Validate a SendMessageRequest body and return its target."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidMessage(
            f"Invalid JSON payload received. {error}", field="", error_code=None
        ) from error
    if not isinstance(request, dict):
        raise InvalidMessage("Invalid JSON payload received. Expected an object.", field="")
    _check_known_fields(request, _REQUEST_FIELDS, "")

    message = request.get("message")
    if not isinstance(message, dict):
        raise InvalidMessage("Request contains an invalid argument.", field="message")
    _check_known_fields(message, _MESSAGE_FIELDS, "message")
    target_field, target = _check_target(message)
    _check_data(message.get("data"), "message.data")
    _check_notification(message.get("notification"))
    _check_android(message.get("android"))
    _check_apns(message.get("apns"))
    _check_webpush(message.get("webpush"))
    _check_size(body, message, target_field)

    validate_only = bool(request.get("validate_only", request.get("validateOnly", False)))
    token = target if target_field == "token" else None
    return CheckedSendRequest(token, target, validate_only)


def _check_known_fields(value: dict[str, Any], known: frozenset[str], path: str) -> None:
    for name in value:
        if name not in known:
            location = f" at '{path}'" if path else ""
            raise InvalidMessage(
                f'Invalid JSON payload received. Unknown name "{name}"{location}: '
                "Cannot find field.",
                field=path,
                error_code=None,
            )


def _check_target(message: dict[str, Any]) -> tuple[str, str]:
    present = [name for name in TARGET_FIELDS if message.get(name) is not None]
    if not present:
        raise InvalidMessage("Recipient of the message is not set.", field="message")
    if len(present) > 1:
        raise InvalidMessage(
            f"Invalid value at 'message' (oneof), oneof field 'target' is already set. "
            f"Cannot set '{present[1]}'",
            field="message",
        )

    target_field = present[0]
    target = message[target_field]
    if not isinstance(target, str):
        raise InvalidMessage(
            f"Invalid value at 'message.{target_field}' (TYPE_STRING), {_json_text(target)}",
            field=f"message.{target_field}",
        )
    if target_field == "token" and not _TOKEN.fullmatch(target):
        raise InvalidMessage("The registration token is not a valid FCM registration token")
    if target_field == "topic" and not _TOPIC.fullmatch(target):
        raise InvalidMessage("Invalid topic name", field="message.topic")
    return target_field, target


def _check_data(data: Any, path: str) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise InvalidMessage(
            f"Invalid value at '{path}' (type.googleapis.com/google.protobuf.Struct)", field=path
        )
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            description = f"Invalid value at '{path}[{index}].value' (TYPE_STRING), " + _json_text(
                value
            )
            raise InvalidMessage(description, field=f"{path}[{index}].value", error_code=None)
        if key in _RESERVED_DATA_KEYS or key.startswith(_RESERVED_DATA_PREFIXES):
            raise InvalidMessage(f"Invalid data payload key: {key}", field=f"{path}[{index}].key")


def _check_notification(notification: Any) -> None:
    if notification is None:
        return
    _require_object(notification, "message.notification")
    _check_known_fields(notification, _NOTIFICATION_FIELDS, "message.notification")


def _check_android(android: Any) -> None:
    if android is None:
        return
    _require_object(android, "message.android")
    _check_known_fields(android, _ANDROID_FIELDS, "message.android")
    _check_data(android.get("data"), "message.android.data")

    priority = android.get("priority")
    if priority is not None and str(priority).upper() not in _ANDROID_PRIORITIES:
        raise InvalidMessage(
            "Invalid value at 'message.android.priority' "
            f"(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "
            f"{_json_text(priority)}",
            field="message.android.priority",
        )
    ttl = android.get("ttl")
    if ttl is not None:
        _check_ttl(ttl)

    notification = android.get("notification")
    if notification is not None:
        _require_object(notification, "message.android.notification")
        color = notification.get("color")
        if color is not None and not (isinstance(color, str) and _COLOR.fullmatch(color)):
            raise InvalidMessage(
                "Invalid color value: must be in the form #RRGGBB",
                field="message.android.notification.color",
            )


def _check_ttl(ttl: Any) -> None:
    match = _DURATION.fullmatch(ttl) if isinstance(ttl, str) else None
    if match is None:
        raise InvalidMessage(
            "Invalid value at 'message.android.ttl' "
            "(type.googleapis.com/google.protobuf.Duration), " + _json_text(ttl),
            field="message.android.ttl",
        )
    if int(match.group(1)) > MAX_TTL_S:
        raise InvalidMessage(
            f"TTL must be between 0s and {MAX_TTL_S}s", field="message.android.ttl"
        )


def _check_apns(apns: Any) -> None:
    if apns is None:
        return
    _require_object(apns, "message.apns")
    _check_known_fields(apns, _APNS_FIELDS, "message.apns")
    headers = apns.get("headers")
    if headers is not None:
        _check_string_map(headers, "message.apns.headers")
    payload = apns.get("payload")
    if payload is not None:
        _require_object(payload, "message.apns.payload")


def _check_webpush(webpush: Any) -> None:
    if webpush is None:
        return
    _require_object(webpush, "message.webpush")
    _check_known_fields(webpush, _WEBPUSH_FIELDS, "message.webpush")
    for name in ("headers", "data"):
        if webpush.get(name) is not None:
            _check_string_map(webpush[name], f"message.webpush.{name}")
    options = webpush.get("fcm_options") or webpush.get("fcmOptions") or {}
    link = options.get("link") if isinstance(options, dict) else None
    if link is not None and not str(link).startswith("https://"):
        raise InvalidMessage(
            "WebpushFcmOptions.link must be a HTTPS URL", field="message.webpush.fcm_options.link"
        )


def _check_string_map(value: Any, path: str) -> None:
    _require_object(value, path)
    for index, item in enumerate(value.values()):
        if not isinstance(item, str):
            raise InvalidMessage(
                f"Invalid value at '{path}[{index}].value' (TYPE_STRING), {_json_text(item)}",
                field=f"{path}[{index}].value",
                error_code=None,
            )


def _check_size(body: bytes, message: dict[str, Any], target_field: str) -> None:
    limit = MAX_MESSAGE_BYTES if target_field in ("token", "fid") else MAX_TOPIC_MESSAGE_BYTES
    # The whole body is larger than the counted part, so a small body needs no re-encoding.
    if len(body) <= limit:
        return
    counted = {name: value for name, value in message.items() if name not in TARGET_FIELDS}
    if len(orjson.dumps(counted)) > limit:
        raise InvalidMessage("Android message is too big", field="message")


def _require_object(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise InvalidMessage(
            f"Invalid value at '{path}': expected a JSON object, got {_json_text(value)}",
            field=path,
            error_code=None,
        )


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()
