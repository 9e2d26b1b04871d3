"""The unified message: the content a backend sends, independent of the provider.

Field names are the PowerAuth Push Server's JSON names, so existing clients send the
same bodies. `subtitle`, `image`, `threadId`, `mutableContent`, `interruptionLevel` and
`channelId` are additions that the original could not express.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A provider payload is at most 4 KiB (APNs alert, FCM, HMS), so no single text field
# can usefully be longer. The payload builders check the encoded size exactly.
MAX_TEXT_LENGTH = 4096
MAX_LOC_ARGS = 32


class Priority(enum.StrEnum):
    """Delivery priority; HIGH is the original's default."""

    HIGH = "HIGH"
    NORMAL = "NORMAL"


class InterruptionLevel(enum.StrEnum):
    """APNs interruption levels (iOS 15 and later)."""

    PASSIVE = "passive"
    ACTIVE = "active"
    TIME_SENSITIVE = "time-sensitive"
    CRITICAL = "critical"


class MessageBody(BaseModel):
    """The visible content of a notification, mapped to each provider by the payload builders."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    title: str | None = Field(default=None, max_length=MAX_TEXT_LENGTH)
    title_loc_key: str | None = Field(default=None, alias="titleLocKey", max_length=256)
    title_loc_args: list[str] | None = Field(
        default=None, alias="titleLocArgs", max_length=MAX_LOC_ARGS
    )
    body: str | None = Field(default=None, max_length=MAX_TEXT_LENGTH)
    body_loc_key: str | None = Field(default=None, alias="bodyLocKey", max_length=256)
    body_loc_args: list[str] | None = Field(
        default=None, alias="bodyLocArgs", max_length=MAX_LOC_ARGS
    )
    badge: int | None = Field(default=None, ge=0, le=2_147_483_647)
    sound: str | None = Field(default=None, max_length=256)
    icon: str | None = Field(default=None, max_length=256)
    category: str | None = Field(default=None, max_length=256)
    collapse_key: str | None = Field(default=None, alias="collapseKey", max_length=64)
    valid_until: datetime | None = Field(default=None, alias="validUntil")
    extras: dict[str, Any] | None = None
    subtitle: str | None = Field(default=None, max_length=MAX_TEXT_LENGTH)
    image: str | None = Field(default=None, max_length=2048)
    thread_id: str | None = Field(default=None, alias="threadId", max_length=256)
    mutable_content: bool | None = Field(default=None, alias="mutableContent")
    interruption_level: InterruptionLevel | None = Field(default=None, alias="interruptionLevel")
    channel_id: str | None = Field(default=None, alias="channelId", max_length=256)

    @field_validator("valid_until")
    @classmethod
    def require_timezone(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone, for example 2026-12-31T23:59:59Z")
        return value

    @field_validator("image")
    @classmethod
    def require_https_image(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """Return the body in its API form (camelCase, no null fields) for storage."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class MessageAttributes(BaseModel):
    """Delivery flags of a message: silent (no alert) and personal (active devices only)."""

    model_config = ConfigDict(extra="forbid")

    silent: bool = False
    personal: bool = False
