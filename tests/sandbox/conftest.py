"""Fixtures: one sandbox process for the session, reset before each test."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.sandbox.h2client import H2TestConnection
from workers.sandbox.control import SandboxAdmin, SandboxProcess
from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount, HmsClientCredentials


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxProcess]:
    process = SandboxProcess(extra_args=["--count-tokens", "--seed", "1"])
    process.start()
    yield process
    process.stop()


@pytest.fixture
def admin(sandbox: SandboxProcess) -> SandboxAdmin:
    sandbox.admin.reset(everything=True)
    sandbox.admin.update_settings(count_tokens=True)
    return sandbox.admin


@pytest.fixture(scope="session")
def client_ssl_context(sandbox: SandboxProcess) -> ssl.SSLContext:
    return sandbox.urls.ssl_context()


@pytest.fixture(scope="session")
def apns_key() -> ApnsSigningKey:
    return ApnsSigningKey.generate(team_id="TEAM000001", bundle_id="com.example.app")


@pytest.fixture(scope="session")
def fcm_account() -> FcmServiceAccount:
    return FcmServiceAccount.generate(project_id="sandbox-project")


@pytest.fixture(scope="session")
def hms_client() -> HmsClientCredentials:
    return HmsClientCredentials.generate()


@pytest.fixture
def apns_app(admin: SandboxAdmin, apns_key: ApnsSigningKey) -> ApnsSigningKey:
    admin.register_apns_key(apns_key)
    return apns_key


@pytest.fixture
def fcm_app(admin: SandboxAdmin, fcm_account: FcmServiceAccount) -> FcmServiceAccount:
    admin.register_fcm_account(fcm_account)
    return fcm_account


@pytest.fixture
def hms_app(admin: SandboxAdmin, hms_client: HmsClientCredentials) -> HmsClientCredentials:
    admin.register_hms_app(hms_client)
    return hms_client


@pytest.fixture
async def apns_connection(
    sandbox: SandboxProcess, client_ssl_context: ssl.SSLContext
) -> AsyncIterator[H2TestConnection]:
    async with H2TestConnection(sandbox.urls.apns_development_url, client_ssl_context) as conn:
        yield conn


@pytest.fixture
async def fcm_connection(
    sandbox: SandboxProcess, client_ssl_context: ssl.SSLContext
) -> AsyncIterator[H2TestConnection]:
    async with H2TestConnection(sandbox.urls.fcm_url, client_ssl_context) as conn:
        yield conn


@pytest.fixture
async def hms_connection(
    sandbox: SandboxProcess, client_ssl_context: ssl.SSLContext
) -> AsyncIterator[H2TestConnection]:
    async with H2TestConnection(sandbox.urls.hms_url, client_ssl_context) as conn:
        yield conn


def device_token() -> str:
    """Return a random 32-byte APNs device token as lowercase hex."""
    return secrets.token_hex(32)
