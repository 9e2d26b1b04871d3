"""Provider credentials registered in a running sandbox, and transports that trust it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from workers.providers.base import ApplicationCredentials, ProviderEndpoints
from workers.providers.transport import Http2TransportFactory
from workers.sandbox.control import SandboxProcess
from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount, HmsClientCredentials


def transport_factory(endpoints: ProviderEndpoints, **options: Any) -> Http2TransportFactory:
    return Http2TransportFactory(ca_file=endpoints.ca_file, **options)


def apns_credentials(
    sandbox: SandboxProcess, environment: str | None = None, app_environment: str | None = None
) -> ApplicationCredentials:
    """Register a new APNs key (for `environment`, both when None) and return its credentials."""
    key = ApnsSigningKey.generate()
    sandbox.admin.register_apns_key(key, environment)
    return ApplicationCredentials(
        id=1,
        app_id="apns-app",
        timestamp_last_updated=datetime.now(UTC),
        apns_key_id=key.key_id,
        apns_team_id=key.team_id,
        apns_bundle=key.bundle_id,
        apns_private_key=key.private_key_pem.encode(),
        apns_environment=app_environment,
    )


def fcm_credentials(sandbox: SandboxProcess) -> tuple[ApplicationCredentials, FcmServiceAccount]:
    account = FcmServiceAccount.generate("sandbox-project")
    sandbox.admin.register_fcm_account(account)
    credentials = ApplicationCredentials(
        id=2,
        app_id="fcm-app",
        timestamp_last_updated=datetime.now(UTC),
        fcm_project_id=account.project_id,
        fcm_service_account=orjson.dumps(account.service_account_info()),
    )
    return credentials, account


def hms_credentials(sandbox: SandboxProcess) -> ApplicationCredentials:
    client = HmsClientCredentials.generate()
    sandbox.admin.register_hms_app(client)
    return ApplicationCredentials(
        id=3,
        app_id="hms-app",
        timestamp_last_updated=datetime.now(UTC),
        hms_project_id=client.client_id,
        hms_client_id=client.client_id,
        hms_client_secret=client.client_secret,
    )
