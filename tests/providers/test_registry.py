"""apns-id stability, APNs environment resolution and the client registry's cache."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.message_body import MessageAttributes, MessageBody, Priority
from shared.settings import load_settings
from tests.providers.keys import apns_key_pem, service_account_json
from workers.providers.apns import ApnsClient, resolve_environment
from workers.providers.base import (
    ApplicationCredentials,
    CredentialsInvalid,
    CredentialsMissing,
    EnvironmentMismatch,
    Outcome,
    ProviderEndpoints,
    ProviderRegistry,
    apns_id_for,
    build_payload,
)
from workers.providers.fcm import FcmClient
from workers.providers.hms import HmsClient
from workers.providers.transport import HttpResponse, Transport

UPDATED = datetime(2026, 12, 1, tzinfo=UTC)


class UnusedTransport(Transport):
    """A transport that records closing and fails every request."""

    def __init__(self) -> None:
        self.closed = False

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        raise AssertionError(f"unexpected request {method} {url}")

    async def aclose(self) -> None:
        self.closed = True


def credentials(**fields: object) -> ApplicationCredentials:
    pem, _public = apns_key_pem()
    service_account, _public_pem = service_account_json("project-1")
    values: dict[str, object] = {
        "id": 7,
        "app_id": "mobile-app",
        "timestamp_last_updated": UPDATED,
        "apns_key_id": "KEY1234567",
        "apns_team_id": "TEAM123456",
        "apns_bundle": "com.example.app",
        "apns_private_key": pem,
        "fcm_project_id": "project-1",
        "fcm_service_account": service_account,
        "hms_project_id": "101",
        "hms_client_id": "client",
        "hms_client_secret": "secret",
    }
    values.update(fields)
    return ApplicationCredentials(**values)  # type: ignore[arg-type]


def test_apns_id_is_stable_per_row() -> None:
    first = apns_id_for("message", 12345)

    assert apns_id_for("message", 12345) == first
    assert apns_id_for("message", 12346) != first
    assert apns_id_for("campaign_device", 12345) != first
    assert str(uuid.UUID(first)) == first
    assert uuid.UUID(first).version == 5


@pytest.mark.parametrize(
    ("device", "application", "default", "expected"),
    [
        (None, None, "production", "production"),
        (None, None, "development", "development"),
        (None, "development", "production", "development"),
        ("production", "development", "development", "production"),
        ("production", None, "production", "production"),
        ("development", "development", "production", "development"),
        ("development", None, "development", "development"),
    ],
)
def test_apns_environment_resolution(
    device: str | None, application: str | None, default: str, expected: str
) -> None:
    assert resolve_environment(device, application, default) == expected


def test_development_device_of_production_app_mismatch() -> None:
    with pytest.raises(EnvironmentMismatch):
        resolve_environment("development", "production", "development")
    with pytest.raises(EnvironmentMismatch):
        resolve_environment("development", None, "production")


async def test_environment_mismatch_is_message_rejected() -> None:
    registry = ProviderRegistry(ProviderEndpoints(), UnusedTransport)
    client = registry.client_for(credentials(apns_environment="production"), "apns")
    payload = build_payload("apns", MessageBody(body="b"), MessageAttributes(), Priority.HIGH)

    result = await client.send(
        "ab" * 32, payload, apns_id=apns_id_for("message", 1), environment="development"
    )

    assert result.outcome is Outcome.MESSAGE_REJECTED
    assert result.reason == "environment_mismatch"
    await registry.aclose()


async def test_registry_builds_each_platform_client() -> None:
    registry = ProviderRegistry(ProviderEndpoints(), UnusedTransport)
    app = credentials()

    assert isinstance(registry.client_for(app, "apns"), ApnsClient)
    assert isinstance(registry.client_for(app, "fcm"), FcmClient)
    assert isinstance(registry.client_for(app, "hms"), HmsClient)
    await registry.aclose()


async def test_registry_caches_client_until_credentials_change() -> None:
    registry = ProviderRegistry(ProviderEndpoints(), UnusedTransport)
    app = credentials()

    first = registry.client_for(app, "hms")
    assert registry.client_for(app, "hms") is first

    updated = credentials(timestamp_last_updated=datetime(2026, 12, 2, tzinfo=UTC))
    second = registry.client_for(updated, "hms")
    assert second is not first
    assert registry.client_for(updated, "hms") is second
    assert len(registry.clients) == 1
    assert len(registry.retired) == 1

    await registry.aclose()
    assert isinstance(first, HmsClient) and isinstance(first.transport, UnusedTransport)
    assert first.transport.closed


@pytest.mark.parametrize(
    ("platform", "missing"),
    [
        ("apns", {"apns_private_key": None}),
        ("apns", {"apns_bundle": None}),
        ("fcm", {"fcm_service_account": None}),
        ("hms", {"hms_client_secret": None}),
    ],
)
async def test_registry_missing_credentials(platform: str, missing: dict[str, object]) -> None:
    registry = ProviderRegistry(ProviderEndpoints(), UnusedTransport)

    with pytest.raises(CredentialsMissing):
        registry.client_for(credentials(**missing), platform)


async def test_registry_invalid_credentials() -> None:
    registry = ProviderRegistry(ProviderEndpoints(), UnusedTransport)

    with pytest.raises(CredentialsInvalid):
        registry.client_for(credentials(apns_private_key=b"garbage"), "apns")
    with pytest.raises(CredentialsInvalid):
        registry.client_for(credentials(fcm_service_account=b"{}"), "fcm")


def test_credentials_repr_hides_secrets() -> None:
    text = repr(credentials())

    assert "PRIVATE KEY" not in text
    assert "secret" not in text


async def test_registry_from_settings_reads_endpoints(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(b"")
    settings = load_settings(
        database_url="postgresql://push@127.0.0.1/push",
        amqp_url="amqp://push@127.0.0.1/",
        master_key=base64.b64encode(bytes(32)).decode(),
        apns_production_url="https://127.0.0.1:1",
        apns_default_environment="development",
        fcm_token_url="https://127.0.0.1:2/token",
        ca_file=ca_file,
    )

    registry = ProviderRegistry.from_settings(settings)

    assert registry.endpoints.apns_production_url == "https://127.0.0.1:1"
    assert registry.endpoints.apns_default_environment == "development"
    assert registry.endpoints.fcm_token_url == "https://127.0.0.1:2/token"
    assert registry.endpoints.ca_file == ca_file
    await registry.aclose()
