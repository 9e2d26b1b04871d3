"""Request models of the REST API and the AMQP ingest, in the original's JSON names.

Every request except the activation status callback arrives wrapped as
`{"requestObject": ...}`. Unknown fields are ignored, as the original's Jackson set-up does,
except inside the message body, which rejects them so that a misspelt field is not lost.
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.exceptions import RequestInvalid
from shared.message_body import MessageAttributes, MessageBody, Priority

MAX_ID_LENGTH = 255
MAX_ACTIVATION_ID_LENGTH = 37
MAX_TOKEN_LENGTH = 4096
MAX_ACTIVATIONS_PER_DEVICE = 100

# Fields whose values are secrets: a violation names the field but never echoes its value.
SECRET_FIELDS = frozenset({"privateKeyBase64", "clientSecret"})

# Maximum length of an invalidValue echoed in a violation. Longer strings are cut and end
# with an ellipsis.
MAX_ECHOED_VALUE_LENGTH = 200

PayloadT = TypeVar("PayloadT")


class Platform(enum.StrEnum):
    """A push provider as stored in push_device.platform."""

    APNS = "apns"
    FCM = "fcm"
    HMS = "hms"


# Platform names of the original before version 1.10; still accepted on input.
LEGACY_PLATFORMS = {"ios": Platform.APNS, "android": Platform.FCM, "huawei": Platform.HMS}


class Environment(enum.StrEnum):
    """An APNs environment."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ActivationStatus(enum.StrEnum):
    """PowerAuth activation states; only ACTIVE makes a device active."""

    CREATED = "CREATED"
    PENDING_COMMIT = "PENDING_COMMIT"
    ACTIVE = "ACTIVE"
    BLOCKED = "BLOCKED"
    REMOVED = "REMOVED"


class SendMode(enum.StrEnum):
    """Whether a send waits for the providers' outcomes."""

    SYNCHRONOUS = "SYNCHRONOUS"
    ASYNCHRONOUS = "ASYNCHRONOUS"


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ObjectRequest(BaseModel, Generic[PayloadT]):
    """The original's request envelope."""

    model_config = ConfigDict(extra="ignore")

    request_object: PayloadT = Field(alias="requestObject")


def lower_case(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class TokenRegistration(RequestModel):
    """Fields shared by the single and the multiple-activation registration."""

    app_id: str = Field(alias="appId", min_length=1, max_length=MAX_ID_LENGTH)
    token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)
    platform: Platform
    environment: Environment | None = None
    activation_status: ActivationStatus | None = Field(default=None, alias="activationStatus")
    user_id: str | None = Field(
        default=None, alias="userId", min_length=1, max_length=MAX_ID_LENGTH
    )

    @field_validator("platform", mode="before")
    @classmethod
    def accept_legacy_platform(cls, value: Any) -> Any:
        value = lower_case(value)
        return LEGACY_PLATFORMS.get(value, value) if isinstance(value, str) else value

    @field_validator("environment", mode="before")
    @classmethod
    def accept_any_case(cls, value: Any) -> Any:
        return lower_case(value)


class CreateDeviceRequest(TokenRegistration):
    """Register one push token for one activation (or, without one, for a user)."""

    activation_id: str | None = Field(
        default=None, alias="activationId", min_length=1, max_length=MAX_ACTIVATION_ID_LENGTH
    )

    @model_validator(mode="after")
    def require_user_without_activation(self) -> CreateDeviceRequest:
        if self.activation_id is None and self.user_id is None:
            raise ValueError("either activationId or userId must be given")
        return self


class CreateDeviceMultiRequest(TokenRegistration):
    """Register one push token for several activations (create/multi)."""

    activation_ids: list[str] = Field(
        alias="activationIds", min_length=1, max_length=MAX_ACTIVATIONS_PER_DEVICE
    )

    @field_validator("activation_ids")
    @classmethod
    def check_activation_ids(cls, value: list[str]) -> list[str]:
        for activation_id in value:
            if not 1 <= len(activation_id) <= MAX_ACTIVATION_ID_LENGTH:
                raise ValueError(
                    f"each activation id must have 1 to {MAX_ACTIVATION_ID_LENGTH} characters"
                )
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def require_apns_for_environment(self) -> CreateDeviceMultiRequest:
        if self.environment is not None and self.platform is not Platform.APNS:
            raise ValueError("environment may be set only for platform apns")
        return self


class UpdateDeviceStatusRequest(RequestModel):
    """The PowerAuth Server activation status callback (a raw body, no envelope)."""

    activation_id: str = Field(
        alias="activationId", min_length=1, max_length=MAX_ACTIVATION_ID_LENGTH
    )
    activation_status: ActivationStatus | None = Field(default=None, alias="activationStatus")


class DeleteDeviceRequest(RequestModel):
    """Remove every device of an application with the given token."""

    app_id: str = Field(alias="appId", min_length=1, max_length=MAX_ID_LENGTH)
    token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)


class PushMessage(RequestModel):
    """One message for one user's devices, or for one of them by activation."""

    user_id: str = Field(alias="userId", min_length=1, max_length=MAX_ID_LENGTH)
    activation_id: str | None = Field(
        default=None, alias="activationId", min_length=1, max_length=MAX_ACTIVATION_ID_LENGTH
    )
    priority: Priority = Priority.HIGH
    attributes: MessageAttributes = Field(default_factory=MessageAttributes)
    body: MessageBody


class SendMessageRequest(RequestModel):
    """Send one message."""

    app_id: str = Field(alias="appId", min_length=1, max_length=MAX_ID_LENGTH)
    mode: SendMode = SendMode.SYNCHRONOUS
    message: PushMessage


class SendMessageBatchRequest(RequestModel):
    """Send several messages; the maximum count is the PUSH_SEND_BATCH_MAX_MESSAGES setting."""

    app_id: str = Field(alias="appId", min_length=1, max_length=MAX_ID_LENGTH)
    mode: SendMode = SendMode.SYNCHRONOUS
    batch: list[PushMessage] = Field(min_length=1)


class CreateCampaignRequest(RequestModel):
    """Create a campaign; attributes and priority are additions to the original."""

    app_id: str = Field(alias="appId", min_length=1, max_length=MAX_ID_LENGTH)
    message: MessageBody
    attributes: MessageAttributes = Field(default_factory=MessageAttributes)
    priority: Priority = Priority.HIGH


class TestCampaignRequest(RequestModel):
    """Send a campaign's message to one user's devices."""

    __test__ = False  # not a pytest test class despite the name

    user_id: str = Field(alias="userId", min_length=1, max_length=MAX_ID_LENGTH)


UserIdList = list[str]


class ApplicationRequest(RequestModel):
    """A request that names only an application."""

    app_id: str = Field(alias="appId", min_length=1, max_length=MAX_ID_LENGTH)


class ApplicationDetailRequest(ApplicationRequest):
    """Read an application's configuration; each include flag adds one provider's fields."""

    include_apns: bool = Field(default=False, alias="includeApns")
    include_fcm: bool = Field(default=False, alias="includeFcm")
    include_hms: bool = Field(default=False, alias="includeHms")


class UpdateApnsRequest(ApplicationRequest):
    """Store APNs credentials: the .p8 key (base64) with its key id, team id and topic."""

    bundle: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    key_id: str = Field(alias="keyId", min_length=1, max_length=MAX_ID_LENGTH)
    team_id: str = Field(alias="teamId", min_length=1, max_length=MAX_ID_LENGTH)
    private_key_base64: str = Field(alias="privateKeyBase64", min_length=1, max_length=65_536)
    environment: Environment | None

    @field_validator("environment", mode="before")
    @classmethod
    def accept_any_case(cls, value: Any) -> Any:
        return lower_case(value)


class UpdateApnsLegacyRequest(UpdateApnsRequest):
    """The deprecated ios/update form, where environment may be left out."""

    environment: Environment | None = None


class UpdateFcmRequest(ApplicationRequest):
    """Store FCM credentials: the service-account JSON (base64) and the project id."""

    project_id: str = Field(alias="projectId", min_length=1, max_length=MAX_ID_LENGTH)
    private_key_base64: str = Field(alias="privateKeyBase64", min_length=1, max_length=65_536)


class UpdateHmsRequest(ApplicationRequest):
    """Store HMS credentials: project id and OAuth client id and secret."""

    project_id: str = Field(alias="projectId", min_length=1, max_length=MAX_ID_LENGTH)
    client_id: str = Field(alias="clientId", min_length=1, max_length=MAX_ID_LENGTH)
    client_secret: str = Field(alias="clientSecret", min_length=1, max_length=4096)


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_request(model: type[ModelT], data: Any, prefix: str = "") -> ModelT:
    """Validate data against a model; raise RequestInvalid naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestInvalid("Request validation failed", violations_of(error, prefix)) from None


def violations_of(error: ValidationError, prefix: str = "") -> list[dict[str, object]]:
    """Turn pydantic errors into the original's violations: fieldName, invalidValue, hint."""
    violations: list[dict[str, object]] = []
    for item in error.errors(include_url=False):
        field_name = field_path(item["loc"], prefix)
        violation: dict[str, object] = {"fieldName": field_name, "hint": item["msg"]}
        last = str(item["loc"][-1]) if item["loc"] else ""
        if last not in SECRET_FIELDS and item["type"] != "missing":
            echoed = echo_value(item.get("input"))
            if echoed is not None:
                violation["invalidValue"] = echoed
        violations.append(violation)
    return violations


def field_path(location: tuple[int | str, ...], prefix: str = "") -> str:
    path = prefix
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "request"


def echo_value(value: Any) -> str | int | float | bool | None:
    """Return a scalar input as it can be echoed safely; containers are left out."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_ECHOED_VALUE_LENGTH:
            return value[:MAX_ECHOED_VALUE_LENGTH] + "…"
        return value
    return None


# Levels of objects and arrays a request may nest; bodies need about six, extras a few more.
MAX_JSON_DEPTH = 32

NUL_HINT = "strings must not contain the NUL character (U+0000)"


def invalid(field: str, hint: str) -> RequestInvalid:
    return RequestInvalid("Request validation failed", [{"fieldName": field, "hint": hint}])


def decode_json(body: bytes) -> Any:
    """Parse a JSON request body; raise RequestInvalid for malformed JSON or NUL characters."""
    if not body.strip():
        raise invalid("request", "a JSON request body is required")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as failure:
        raise invalid("request", f"malformed JSON: {failure}") from None
    check_document(document, look_for_nul=b"\\u0000" in body or b"\x00" in body)
    return document


def check_document(document: Any, look_for_nul: bool) -> None:
    """Raise RequestInvalid for nesting deeper than MAX_JSON_DEPTH or a NUL in a string.

    PostgreSQL rejects U+0000 in TEXT and JSONB, and deeply nested values break
    serialisers further on (orjson stops at 255 levels, pydantic earlier), so both are
    rejected here. The walk is iterative, so no input can exhaust the Python stack.
    """
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth > MAX_JSON_DEPTH:
            raise invalid("request", f"JSON must not be nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if look_for_nul and "\x00" in key:
                    raise invalid("request", NUL_HINT)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif look_for_nul and isinstance(value, str) and "\x00" in value:
            raise invalid("request", NUL_HINT)
