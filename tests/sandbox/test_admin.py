"""Admin endpoint: counters, per-token counts, reset, registration errors, process control."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import device_token
from tests.sandbox.h2client import H2TestConnection
from tests.sandbox.test_apns import send
from workers.sandbox.control import (
    SandboxAdmin,
    SandboxAdminError,
    SandboxProcess,
    SandboxStartFailed,
)
from workers.sandbox.credentials import ApnsSigningKey, FcmServiceAccount


async def test_counters_track_accepts_and_rejections(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    repeated = device_token()
    once = device_token()
    for token in (repeated, repeated, once):
        await send(apns_connection, apns_app, token=token)
    await send(apns_connection, apns_app, token="abc")

    counters = admin.counters()
    counts = admin.token_counts("apns", [repeated, once, device_token()])

    assert counters["accepted"]["apns"] == 3
    assert counters["rejected"]["apns"] == {"BadDeviceToken": 1}
    assert counters["tokens"]["apns"] == {"distinct": 2, "accepted_more_than_once": 1}
    assert list(counts.values()) == [2, 1, 0]


async def test_reset_zeroes_counters(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    await send(apns_connection, apns_app)

    admin.reset()
    counters = admin.counters()

    assert counters["accepted"]["apns"] == 0
    assert counters["tokens"]["apns"]["distinct"] == 0
    assert admin.request("GET", "/apps")["apns"] != []


def test_reset_everything_drops_apps(apns_app: ApnsSigningKey, admin: SandboxAdmin):
    admin.add_fault("apns", "shutdown")

    admin.reset(everything=True)

    assert admin.request("GET", "/apps") == {"apns": [], "fcm": [], "hms": []}
    assert admin.request("GET", "/faults") == []


def test_registration_with_wrong_key_type_rejected(admin: SandboxAdmin):
    rsa_pem = FcmServiceAccount.generate().public_key_pem

    with pytest.raises(SandboxAdminError) as raised:
        admin.request(
            "POST",
            "/apps/apns",
            {"key_id": "K", "team_id": "T", "bundle_id": "b", "public_key_pem": rsa_pem},
        )

    assert raised.value.status == 400
    assert "EC P-256" in raised.value.body


def test_registration_without_bundle_rejected(admin: SandboxAdmin, apns_key: ApnsSigningKey):
    body = apns_key.registration()
    body["bundle_ids"] = []

    with pytest.raises(SandboxAdminError) as raised:
        admin.request("POST", "/apps/apns", body)

    assert raised.value.status == 400


def test_info_names_ca_file(sandbox: SandboxProcess, admin: SandboxAdmin):
    info = admin.request("GET", "/info")

    assert info["ca_file"] == str(sandbox.urls.ca_file)
    assert sandbox.urls.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_start_failure_reports_log():
    process = SandboxProcess(extra_args=["--no-such-flag"])

    with pytest.raises(SandboxStartFailed) as raised:
        process.start(timeout_s=20)

    assert "--no-such-flag" in str(raised.value)
