"""The interface of the provider clients that the delivery workers use.

A worker builds a payload once per message or campaign (`build_payload`), asks the
registry for the application's client (`ProviderRegistry.client_for`) and calls
`ProviderClient.send` per device. `send` turns every provider reply, network failure
and timeout into a `SendResult` whose `outcome` the worker records.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.providers.payloads import (
    InvalidMessage,
    PayloadError,
    PayloadTooLarge,
    Platform,
    PreparedPayload,
    build_payload,
    is_expired,
)

if TYPE_CHECKING:
    from shared.settings import Settings
    from workers.providers.transport import TransportFactory

__all__ = [
    "ApplicationCredentials",
    "CredentialsError",
    "CredentialsInvalid",
    "CredentialsMissing",
    "EnvironmentMismatch",
    "InvalidMessage",
    "Outcome",
    "PayloadError",
    "PayloadTooLarge",
    "Platform",
    "PreparedPayload",
    "ProviderClient",
    "ProviderEndpoints",
    "ProviderRegistry",
    "SendResult",
    "apns_id_for",
    "build_payload",
    "is_expired",
]

logger = logging.getLogger(__name__)

# Fixed namespace of the apns-id UUIDs; changing it would give retries of rows that are
# in flight during an upgrade a different apns-id.
APNS_ID_NAMESPACE = uuid.UUID("6c3f2a0e-4b1d-5e8a-9f27-1d0c5b7e3a94")

APNS_ENVIRONMENTS = frozenset({"development", "production"})

# A client replaced by newer credentials is closed after this delay, so sends already
# in flight on it can finish. It is longer than the transport's request timeout.
RETIRED_CLIENT_GRACE_S = 60.0


class Outcome(enum.StrEnum):
    """The classified result of one provider call."""

    SENT = "sent"
    TOKEN_INVALID = "token_invalid"
    MESSAGE_REJECTED = "message_rejected"
    TRANSIENT = "transient"
    THROTTLED = "throttled"
    CREDENTIALS = "credentials"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one provider call and the provider's reply details.

    `reason` is the provider's reason ("BadDeviceToken", "UNREGISTERED", "80300007") or
    one of ours ("timeout", "connection_error", "environment_mismatch").
    `token_invalid_since` is the APNs 410 timestamp; the worker applies a 410 only when
    it is newer than the device's last registration.
    """

    outcome: Outcome
    reason: str | None = None
    provider_message_id: str | None = None
    retry_after_s: float | None = None
    token_invalid_since: datetime | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class ApplicationCredentials:
    """One application's provider credentials, secrets already decrypted.

    Every provider's fields are optional; a missing one makes `client_for` raise
    CredentialsMissing for that provider.
    """

    id: int
    app_id: str
    timestamp_last_updated: datetime | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_bundle: str | None = None
    apns_private_key: bytes | None = field(default=None, repr=False)
    apns_environment: str | None = None
    fcm_project_id: str | None = None
    fcm_service_account: bytes | None = field(default=None, repr=False)
    hms_project_id: str | None = None
    hms_client_id: str | None = None
    hms_client_secret: str | None = field(default=None, repr=False)


class CredentialsError(Exception):
    """The application's credentials for a provider cannot be used; the outcome is credentials."""


class CredentialsMissing(CredentialsError):
    """The application has no credentials for the provider."""


class CredentialsInvalid(CredentialsError):
    """The stored credentials cannot be parsed (bad PEM key, bad service-account JSON)."""


class EnvironmentMismatch(Exception):
    """A development APNs device of an application that sends only to production."""


class ProviderClient(abc.ABC):
    """A client for one application on one provider."""

    @abc.abstractmethod
    async def send(
        self, token: str, payload: PreparedPayload, *, apns_id: str, environment: str | None
    ) -> SendResult:
        """Send one payload to one device.

        Never raises for provider errors, network failures or timeouts: they become
        outcomes (network failures and timeouts are transient). `apns_id` is used by
        APNs only, and `environment` is the device's APNs environment.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the client's connections."""


def apns_id_for(kind: str, row_id: int) -> str:
    """Return the apns-id of a row: the same UUID for every retry of that row.

    `kind` is "message" or "campaign_device", so rows of the two tables never share one.
    """
    return str(uuid.uuid5(APNS_ID_NAMESPACE, f"{kind}:{row_id}"))


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    """Provider base URLs, the extra CA file and the default APNs environment."""

    apns_production_url: str = "https://api.push.apple.com"
    apns_development_url: str = "https://api.sandbox.push.apple.com"
    apns_default_environment: str = "production"
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    hms_url: str = "https://push-api.cloud.huawei.com"
    hms_token_url: str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    ca_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderEndpoints:
        return cls(
            apns_production_url=settings.apns_production_url,
            apns_development_url=settings.apns_development_url,
            apns_default_environment=settings.apns_default_environment,
            fcm_url=settings.fcm_url,
            fcm_token_url=settings.fcm_token_url,
            hms_url=settings.hms_url,
            hms_token_url=settings.hms_token_url,
            ca_file=settings.ca_file,
        )


ClientKey = tuple[int, Platform, datetime | None]


class ProviderRegistry:
    """Provider clients per application, rebuilt when the credentials change.

    Clients are cached per (application row id, platform, timestamp_last_updated): a
    credentials update gives a new timestamp, so the next `client_for` builds a new
    client and closes the old one.
    """

    def __init__(self, endpoints: ProviderEndpoints, transport_factory: TransportFactory) -> None:
        self.endpoints = endpoints
        self.transport_factory = transport_factory
        self.clients: dict[ClientKey, ProviderClient] = {}
        self.retired: dict[asyncio.Task[None], ProviderClient] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **transport_options: Any) -> ProviderRegistry:
        """Build a registry with the HTTP/2 transport trusting settings.ca_file."""
        from workers.providers.transport import Http2TransportFactory

        endpoints = ProviderEndpoints.from_settings(settings)
        factory = Http2TransportFactory(ca_file=endpoints.ca_file, **transport_options)
        return cls(endpoints, factory)

    def client_for(self, credentials: ApplicationCredentials, platform: str) -> ProviderClient:
        """Return the application's client for `platform`, building it on first use.

        Raises CredentialsMissing or CredentialsInvalid (outcome credentials) and
        ValueError for an unknown platform.
        """
        key: ClientKey = (credentials.id, Platform(platform), credentials.timestamp_last_updated)
        client = self.clients.get(key)
        if client is not None:
            return client

        client = self.build_client(credentials, Platform(platform))
        self.retire_stale(key)
        self.clients[key] = client
        return client

    def build_client(
        self, credentials: ApplicationCredentials, platform: Platform
    ) -> ProviderClient:
        # Imported here because each client module imports this one.
        if platform is Platform.APNS:
            from workers.providers.apns import ApnsClient

            return ApnsClient.from_credentials(credentials, self.endpoints, self.transport_factory)
        if platform is Platform.FCM:
            from workers.providers.fcm import FcmClient

            return FcmClient.from_credentials(credentials, self.endpoints, self.transport_factory)
        from workers.providers.hms import HmsClient

        return HmsClient.from_credentials(credentials, self.endpoints, self.transport_factory)

    def retire_stale(self, key: ClientKey) -> None:
        """Close the clients of older credentials of the same application and platform."""
        stale = [old for old in self.clients if old[:2] == key[:2] and old != key]
        for old in stale:
            logger.info(
                "credentials of application %s changed; rebuilding its %s client", key[0], key[1]
            )
            client = self.clients.pop(old)
            task = asyncio.create_task(self.close_later(client))
            self.retired[task] = client
            task.add_done_callback(self.forget_retired)

    def forget_retired(self, task: asyncio.Task[None]) -> None:
        self.retired.pop(task, None)

    async def close_later(self, client: ProviderClient) -> None:
        await asyncio.sleep(RETIRED_CLIENT_GRACE_S)
        await client.aclose()

    async def aclose(self) -> None:
        """Close every client now, retired ones included."""
        clients = list(self.clients.values()) + list(self.retired.values())
        for task in list(self.retired):
            task.cancel()
        self.retired.clear()
        self.clients.clear()
        for client in clients:
            await client.aclose()
