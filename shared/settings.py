"""Settings: one typed object read from `PUSH_*` environment variables at start-up."""

from __future__ import annotations

import base64
import binascii
import functools
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.exceptions import SettingsError

MASTER_KEY_BYTES = 32


def decode_master_key(encoded: str, variable: str = "") -> bytes:
    """Decode a base64 master key and check that it is 32 bytes (AES-256)."""
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{variable}is not valid base64") from error
    if len(key) != MASTER_KEY_BYTES:
        raise ValueError(
            f"{variable}must decode to {MASTER_KEY_BYTES} bytes, got {len(key)};"
            " generate one with: openssl rand -base64 32"
        )
    return key


def mask_url(url: str) -> str:
    """Return the URL with its password replaced by ***, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class DatabaseSettings(BaseSettings):
    """The part of the settings that `push-server migrate` needs."""

    model_config = SettingsConfigDict(env_prefix="PUSH_", extra="ignore", frozen=True)

    database_url: SecretStr = Field(
        description="PostgreSQL URL, postgresql://user:password@host:port/database"
    )

    @field_validator("database_url")
    @classmethod
    def check_database_url(cls, value: SecretStr) -> SecretStr:
        check_url(value.get_secret_value(), ("postgresql", "postgres"))
        return value

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in ("database_url", "amqp_url") and isinstance(value, SecretStr):
                yield name, mask_url(value.get_secret_value())
            else:
                yield name, value


class Settings(DatabaseSettings):
    """Everything the API and the workers read from the environment."""

    amqp_url: SecretStr = Field(description="RabbitMQ URL, amqp://user:password@host:port/vhost")
    master_key: SecretStr = Field(description="base64 of 32 random bytes; encrypts secrets")
    master_key_id: str = Field(
        default="1", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    previous_master_keys: Annotated[SecretStr, NoDecode] = Field(
        default=SecretStr(""), description="id:base64 pairs, comma-separated"
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_keys: SecretStr = Field(
        default=SecretStr(""), description="name:role[+role]:sha256-hex entries, comma-separated"
    )
    auth_disabled: bool = False
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)

    apns_production_url: str = "https://api.push.apple.com"
    apns_development_url: str = "https://api.sandbox.push.apple.com"
    apns_default_environment: str = Field(
        default="production", pattern=r"^(development|production)$"
    )
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    hms_url: str = "https://push-api.cloud.huawei.com"
    hms_token_url: str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    ca_file: Path | None = None
    powerauth_url: str | None = None
    powerauth_client_token: str = ""
    powerauth_client_secret: SecretStr = Field(
        default=SecretStr(""), description="HTTP Basic password for PowerAuth Server"
    )

    queue_prefix: str = Field(default="push", pattern=r"^[A-Za-z0-9_.-]+$")
    # REST API behaviour (names follow the original's powerauth.push.service.* properties).
    application_name: str = "powerauth-push"
    application_display_name: str = "PowerAuth Push Server"
    application_environment: str = ""
    registration_multiple_activations_enabled: bool = False
    powerauth_timeout_s: float = Field(default=10.0, gt=0)
    send_batch_max_messages: int = Field(default=500, ge=1, le=100_000)
    send_sync_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    send_sync_poll_s: float = Field(default=1.0, gt=0)
    idempotency_ttl_s: float = Field(default=86_400.0, gt=0)
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    api_max_bulk_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    database_pool_size: int = Field(default=10, ge=1, le=500)
    worker_prefetch: int = Field(default=8, ge=1, le=1000)
    delivery_batch_size: int = Field(default=500, ge=1, le=10_000)
    worker_concurrency: int = Field(default=1000, ge=1, le=100_000)
    lease_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=3600.0, gt=0)
    credentials_max_wait_s: float = Field(default=86_400.0, gt=0)
    credentials_retry_s: float = Field(default=60.0, gt=0)
    fcm_messages_per_minute: int = Field(default=600_000, ge=1)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    ingest_prefetch: int = Field(default=128, ge=1, le=10_000)
    worker_ingest_enabled: bool = True
    sweep_grace_s: float = Field(default=60.0, gt=0)

    @field_validator("master_key")
    @classmethod
    def check_master_key(cls, value: SecretStr) -> SecretStr:
        decode_master_key(value.get_secret_value())
        return value

    @field_validator("previous_master_keys")
    @classmethod
    def check_previous_master_keys(cls, value: SecretStr) -> SecretStr:
        parse_previous_master_keys(value.get_secret_value())
        return value

    @field_validator("amqp_url")
    @classmethod
    def check_amqp_url(cls, value: SecretStr) -> SecretStr:
        check_url(value.get_secret_value(), ("amqp", "amqps"))
        return value

    @field_validator("ca_file")
    @classmethod
    def check_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @property
    def master_keys(self) -> dict[str, bytes]:
        """All readable master keys by id, the current one included."""
        keys = parse_previous_master_keys(self.previous_master_keys.get_secret_value())
        keys[self.master_key_id] = decode_master_key(
            self.master_key.get_secret_value(), "PUSH_MASTER_KEY"
        )
        return keys


def check_url(url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be a URL like {schemes[0]}://user:password@host:port/name")


def parse_previous_master_keys(text: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for entry in filter(None, (item.strip() for item in text.split(","))):
        key_id, separator, encoded = entry.partition(":")
        if not separator or not key_id:
            raise ValueError("each entry must be id:base64, for example old1:AAAA…")
        keys[key_id] = decode_master_key(encoded, f"entry {key_id!r} ")
    return keys


SettingsT = TypeVar("SettingsT", bound=DatabaseSettings)


def describe_errors(error: ValidationError) -> str:
    """Turn pydantic's errors into lines that name each PUSH_ variable."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = f"PUSH_{field.upper()}"
        problem = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            problem = "is missing"
        model_field = Settings.model_fields.get(field)
        description = model_field.description if model_field else None
        expected = f" (expected: {description})" if description else ""
        lines.append(f"{variable} {problem}{expected}")
    return "; ".join(lines)


def load_settings(kind: type[SettingsT] = Settings, **overrides: Any) -> SettingsT:  # type: ignore[assignment]
    """Read the settings, raising SettingsError that names each bad variable."""
    try:
        return kind(**overrides)
    except ValidationError as error:
        raise SettingsError(f"invalid settings: {describe_errors(error)}") from None


@functools.cache
def get_settings() -> Settings:
    """Return the process-wide settings, loaded once."""
    return load_settings()
