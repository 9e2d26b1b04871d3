"""Factories for worker tests: applications, devices, messages and campaigns as rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from shared.secrets import SecretBox
from shared.settings import Settings
from workers.sandbox.control import SandboxAdmin, SandboxProcess
from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount, HmsClientCredentials


@dataclass
class Rows:
    """Creates rows in the test database with sensible defaults."""

    pool: asyncpg.Pool

    async def app(self, app_id: str = "app", **columns: Any) -> int:
        names = ["app_id", *columns]
        placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        row_id: int = await self.pool.fetchval(
            f"INSERT INTO push_app_credentials ({', '.join(names)}) VALUES ({placeholders})"
            " RETURNING id",
            app_id,
            *columns.values(),
        )
        return row_id

    async def device(
        self,
        app: int,
        token: str,
        *,
        user_id: str = "user-1",
        platform: str = "fcm",
        activation_id: str | None = None,
        is_active: bool = True,
        environment: str | None = None,
        invalidated: bool = False,
        registered_at: datetime | None = None,
    ) -> int:
        row_id: int = await self.pool.fetchval(
            "INSERT INTO push_device (app_id, user_id, platform, push_token, activation_id,"
            " is_active, environment, timestamp_token_invalidated, timestamp_last_registered)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END,"
            " coalesce($9, now())) RETURNING id",
            app,
            user_id,
            platform,
            token,
            activation_id,
            is_active,
            environment,
            invalidated,
            registered_at,
        )
        return row_id

    async def message(
        self,
        app: int,
        device: int | None,
        body: dict[str, Any] | None = None,
        *,
        user_id: str = "user-1",
        silent: bool = False,
        queued: bool = False,
    ) -> int:
        row_id: int = await self.pool.fetchval(
            "INSERT INTO push_message (app_id, device_registration_id, user_id, message_body,"
            " silent, timestamp_queued) VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)"
            " RETURNING id",
            app,
            device,
            user_id,
            body or {"title": "Hello", "body": "World"},
            silent,
            queued,
        )
        return row_id

    async def campaign(
        self,
        app: int,
        users: list[str],
        *,
        body: dict[str, Any] | None = None,
        personal: bool = False,
        state: str = "sending",
    ) -> int:
        campaign_id: int = await self.pool.fetchval(
            "INSERT INTO push_campaign (app_id, message, attributes, state)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            app,
            body or {"title": "Sale", "body": "Everything must go"},
            {"silent": False, "personal": personal},
            state,
        )
        await self.pool.executemany(
            "INSERT INTO push_campaign_user (campaign_id, user_id) VALUES ($1, $2)",
            [(campaign_id, user) for user in users],
        )
        return campaign_id

    async def status_of(self, table: str, row_id: int) -> asyncpg.Record:
        record: asyncpg.Record = await self.pool.fetchrow(
            f"SELECT * FROM {table} WHERE id = $1", row_id
        )
        return record


@pytest.fixture
def rows(pool: asyncpg.Pool) -> Rows:
    return Rows(pool)


@pytest.fixture(scope="session")
def provider_sandbox() -> Iterator[SandboxProcess]:
    """One sandbox for the worker tests, counting accepted sends per token."""
    process = SandboxProcess(extra_args=["--count-tokens", "--seed", "3"])
    process.start()
    yield process
    process.stop()


@dataclass
class SandboxApplication:
    """An application whose credentials are stored encrypted and known to the sandbox."""

    row_id: int
    apns: ApnsSigningKey
    fcm: FcmServiceAccount
    hms: HmsClientCredentials


async def create_sandbox_application(
    rows: Rows, box: SecretBox, admin: SandboxAdmin, app_id: str = "demo-app"
) -> SandboxApplication:
    """Generate real-format credentials, store them encrypted and register them."""
    apns = ApnsSigningKey.generate(bundle_id="com.example.push")
    fcm = FcmServiceAccount.generate(project_id=f"project-{app_id}")
    hms = HmsClientCredentials.generate()
    await admin.aregister_apns_key(apns)
    await admin.aregister_fcm_account(fcm)
    await admin.aregister_hms_app(hms)
    row_id = await rows.app(
        app_id,
        ios_key_id=apns.key_id,
        ios_team_id=apns.team_id,
        ios_bundle=apns.bundle_id,
        ios_private_key=box.encrypt(apns.private_key_pem.encode(), "ios_private_key"),
        android_project_id=fcm.project_id,
        android_private_key=box.encrypt(
            orjson.dumps(fcm.service_account_info()), "android_private_key"
        ),
        hms_project_id=hms.client_id,
        hms_client_id=hms.client_id,
        hms_client_secret=box.encrypt(hms.client_secret.encode(), "hms_client_secret"),
    )
    return SandboxApplication(row_id, apns, fcm, hms)


def sandbox_settings(settings: Settings, sandbox: SandboxProcess, **overrides: Any) -> Settings:
    """The test settings pointed at the sandbox's URLs and CA."""
    urls = sandbox.urls
    values = {
        "apns_production_url": urls.apns_url,
        "apns_development_url": urls.apns_development_url,
        "fcm_url": urls.fcm_url,
        "fcm_token_url": urls.fcm_token_url,
        "hms_url": urls.hms_url,
        "hms_token_url": urls.hms_token_url,
        "ca_file": urls.ca_file,
        "worker_metrics_port": 0,
        **overrides,
    }
    return settings.model_copy(update=values)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The PUSH_ variables that make a child process load the same settings."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PUSH_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        environment[f"PUSH_{name.upper()}"] = str(value)
    return environment


class WorkerProcess:
    """A `push-server worker` child process with its log in a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "worker", "--metrics-port", "0"],
                env=settings_environment(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> int:
        """Send SIGTERM and return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
