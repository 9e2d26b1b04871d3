"""Fixtures: one sandbox process per test module, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workers.providers.base import ProviderEndpoints
from workers.sandbox.control import SandboxProcess


@pytest.fixture(scope="module")
def sandbox_process() -> Iterator[SandboxProcess]:
    with SandboxProcess() as process:
        yield process


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> SandboxProcess:
    """The module's sandbox, reset to no apps, no faults and default connection policies.

    The built-in token markers are off, so random device tokens never hit one.
    """
    sandbox_process.admin.reset(everything=True)
    sandbox_process.admin.update_settings(markers=False)
    return sandbox_process


@pytest.fixture
def endpoints(sandbox: SandboxProcess) -> ProviderEndpoints:
    urls = sandbox.urls
    return ProviderEndpoints(
        apns_production_url=urls.apns_url,
        apns_development_url=urls.apns_development_url,
        fcm_url=urls.fcm_url,
        fcm_token_url=urls.fcm_token_url,
        hms_url=urls.hms_url,
        hms_token_url=urls.hms_token_url,
        ca_file=urls.ca_file,
    )
