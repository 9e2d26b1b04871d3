"""Administration endpoints: applications and APNs, FCM and HMS credentials."""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.secrets import SecretBox
from tests.api.conftest import APP_ID, ClientFactory, FakePowerAuth, call, create_application


def pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


APNS_KEY = pem(ec.generate_private_key(ec.SECP256R1()))
RSA_KEY = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def service_account(**changes: Any) -> dict[str, Any]:
    account = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "0123abcd",
        "private_key": RSA_KEY.decode(),
        "client_email": "push@demo-project.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    account.update(changes)
    return {key: value for key, value in account.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def apns_body(**changes: Any) -> dict[str, Any]:
    request = {
        "appId": APP_ID,
        "bundle": "com.example.app",
        "keyId": "KEY123",
        "teamId": "TEAM42",
        "privateKeyBase64": b64(APNS_KEY),
        "environment": "production",
    }
    request.update(changes)
    return {"requestObject": {key: value for key, value in request.items() if value is not None}}


def fcm_body(account: dict[str, Any] | None = None) -> dict[str, Any]:
    document = orjson.dumps(account or service_account())
    return {
        "requestObject": {
            "appId": APP_ID,
            "projectId": "demo-project",
            "privateKeyBase64": b64(document),
        }
    }


HMS_BODY = {
    "requestObject": {
        "appId": APP_ID,
        "projectId": "hms-project",
        "clientId": "10203040",
        "clientSecret": "hms-secret-value",
    }
}


async def credentials(pool: asyncpg.Pool) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM push_app_credentials WHERE app_id = $1", APP_ID)


async def test_create_and_list(client: TestClient) -> None:
    await create_application(client)
    status, document = await call(
        client, "POST", "/admin/app/create", {"requestObject": {"appId": "second"}}
    )

    _status, listed = await call(client, "GET", "/admin/app/list")

    assert status == 200
    assert document["responseObject"] == {"appId": "second"}
    assert listed["responseObject"]["applicationList"] == [
        {"appId": APP_ID, "apns": False, "fcm": False, "hms": False},
        {"appId": "second", "apns": False, "fcm": False, "hms": False},
    ]


async def test_create_twice_is_rejected(client: TestClient) -> None:
    await create_application(client)

    status, document = await call(
        client, "POST", "/admin/app/create", {"requestObject": {"appId": APP_ID}}
    )

    assert status == 400
    assert document["responseObject"] == {
        "code": "ERROR_GENERIC",
        "message": "Application already exists",
    }


async def test_apns_update_stores_encrypted_key(
    client: TestClient, pool: asyncpg.Pool, secret_box: SecretBox
) -> None:
    await create_application(client)
    before = await credentials(pool)

    status, document = await call(client, "POST", "/admin/app/apns", apns_body())

    assert status == 200
    assert document == {"status": "OK"}
    row = await credentials(pool)
    assert row["ios_bundle"] == "com.example.app"
    assert row["ios_key_id"] == "KEY123"
    assert row["ios_team_id"] == "TEAM42"
    assert row["ios_environment"] == "production"
    assert APNS_KEY not in row["ios_private_key"]
    assert secret_box.decrypt(row["ios_private_key"], "ios_private_key") == APNS_KEY
    assert row["timestamp_last_updated"] > before["timestamp_last_updated"]


async def test_apns_update_requires_environment_on_new_path(client: TestClient) -> None:
    await create_application(client)

    status, document = await call(client, "PUT", "/admin/app/apns", apns_body(environment=None))
    legacy, _document = await call(
        client, "PUT", "/admin/app/ios/update", apns_body(environment=None)
    )

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "requestObject.environment"
    assert legacy == 200


async def test_apns_key_must_be_p256(client: TestClient) -> None:
    await create_application(client)
    cases = [
        b64(b"not a key"),
        b64(RSA_KEY),
        b64(pem(ec.generate_private_key(ec.SECP384R1()))),
        "!!!",
    ]

    for case in cases:
        status, document = await call(
            client, "POST", "/admin/app/apns", apns_body(privateKeyBase64=case)
        )
        assert status == 400
        assert document["responseObject"]["code"] == "ERROR_GENERIC"
        assert case not in orjson.dumps(document).decode()


async def test_fcm_update_checks_service_account(
    client: TestClient, pool: asyncpg.Pool, secret_box: SecretBox
) -> None:
    await create_application(client)

    status, _document = await call(client, "POST", "/admin/app/fcm", fcm_body())

    assert status == 200
    row = await credentials(pool)
    assert row["android_project_id"] == "demo-project"
    stored = orjson.loads(secret_box.decrypt(row["android_private_key"], "android_private_key"))
    assert stored["client_email"] == "push@demo-project.iam.gserviceaccount.com"


async def test_fcm_rejects_broken_service_accounts(client: TestClient) -> None:
    await create_application(client)
    cases = [
        service_account(client_email=None),
        service_account(type="authorized_user"),
        service_account(private_key=APNS_KEY.decode()),
        service_account(private_key="garbage"),
    ]

    for account in cases:
        status, document = await call(client, "POST", "/admin/app/fcm", fcm_body(account))
        assert status == 400, account
        assert document["responseObject"]["code"] == "ERROR_GENERIC"


async def test_hms_update_encrypts_secret(
    client: TestClient, pool: asyncpg.Pool, secret_box: SecretBox
) -> None:
    await create_application(client)

    await call(client, "PUT", "/admin/app/hms", HMS_BODY, expect=200)

    row = await credentials(pool)
    assert row["hms_project_id"] == "hms-project"
    assert row["hms_client_id"] == "10203040"
    assert secret_box.decrypt(row["hms_client_secret"], "hms_client_secret") == b"hms-secret-value"


async def test_detail_includes_groups_but_no_secrets(client: TestClient) -> None:
    await create_application(client)
    await call(client, "POST", "/admin/app/apns", apns_body(), expect=200)
    await call(client, "POST", "/admin/app/fcm", fcm_body(), expect=200)
    await call(client, "POST", "/admin/app/hms", HMS_BODY, expect=200)

    _status, bare = await call(
        client, "POST", "/admin/app/detail", {"requestObject": {"appId": APP_ID}}
    )
    _status, full = await call(
        client,
        "POST",
        "/admin/app/detail",
        {
            "requestObject": {
                "appId": APP_ID,
                "includeApns": True,
                "includeFcm": True,
                "includeHms": True,
            }
        },
    )

    assert bare["responseObject"] == {
        "application": {"appId": APP_ID, "apns": True, "fcm": True, "hms": True}
    }
    answer = full["responseObject"]
    assert answer["apnsBundle"] == "com.example.app"
    assert answer["apnsKeyId"] == "KEY123"
    assert answer["apnsTeamId"] == "TEAM42"
    assert answer["apnsEnvironment"] == "production"
    assert answer["fcmProjectId"] == "demo-project"
    assert answer["hmsProjectId"] == "hms-project"
    text = orjson.dumps(full).decode()
    assert "hms-secret-value" not in text
    assert "PRIVATE KEY" not in text
    assert b64(APNS_KEY)[:40] not in text


async def test_detail_of_unknown_application(client: TestClient) -> None:
    status, document = await call(
        client, "POST", "/admin/app/detail", {"requestObject": {"appId": "nope"}}
    )

    assert status == 400
    assert document["responseObject"]["message"] == "Application with given ID does not exist"


async def test_remove_on_new_and_deprecated_paths(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    await call(client, "POST", "/admin/app/apns", apns_body(), expect=200)
    await call(client, "POST", "/admin/app/fcm", fcm_body(), expect=200)
    await call(client, "POST", "/admin/app/hms", HMS_BODY, expect=200)

    await call(client, "DELETE", f"/admin/app/apns?appId={APP_ID}", expect=200)
    await call(
        client,
        "POST",
        "/admin/app/android/remove",
        {"requestObject": {"appId": APP_ID}},
        expect=200,
    )
    await call(
        client,
        "DELETE",
        "/admin/app/huawei/remove",
        {"requestObject": {"appId": APP_ID}},
        expect=200,
    )

    row = await credentials(pool)
    for column in (
        "ios_private_key",
        "ios_bundle",
        "android_private_key",
        "android_project_id",
        "hms_client_id",
        "hms_client_secret",
        "hms_project_id",
    ):
        assert row[column] is None, column


async def test_deprecated_update_paths_write_same_columns(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)

    await call(client, "POST", "/admin/app/android/update", fcm_body(), expect=200)
    await call(client, "POST", "/admin/app/huawei/update", HMS_BODY, expect=200)
    await call(client, "DELETE", f"/admin/app/fcm?appId={APP_ID}", expect=200)
    await call(client, "DELETE", f"/admin/app/hms?appId={APP_ID}", expect=200)
    await call(
        client, "POST", "/admin/app/ios/remove", {"requestObject": {"appId": APP_ID}}, expect=200
    )

    row = await credentials(pool)
    assert row["android_private_key"] is None
    assert row["hms_client_secret"] is None


async def test_credential_update_for_unknown_application(client: TestClient) -> None:
    status, document = await call(client, "POST", "/admin/app/hms", HMS_BODY)
    remove, _document = await call(client, "DELETE", "/admin/app/hms?appId=nope")
    missing, _document = await call(client, "DELETE", "/admin/app/hms")

    assert status == 400
    assert document["responseObject"]["message"] == "Application with given ID does not exist"
    assert remove == 400
    assert missing == 400


async def test_secret_values_never_echoed_in_violations(client: TestClient) -> None:
    body = {
        "requestObject": {"appId": APP_ID, "projectId": "p", "clientId": "c", "clientSecret": 12345}
    }

    status, document = await call(client, "POST", "/admin/app/hms", body)

    assert status == 400
    violation = document["responseObject"]["violations"][0]
    assert violation["fieldName"] == "requestObject.clientSecret"
    assert "invalidValue" not in violation


async def test_unconfigured_list_asks_powerauth(
    make_client: ClientFactory, powerauth: FakePowerAuth
) -> None:
    client = await make_client(powerauth_url=powerauth.url)
    await create_application(client)
    powerauth.applications = [APP_ID, "pa-only-1", "pa-only-2"]

    status, document = await call(client, "GET", "/admin/app/unconfigured/list")

    assert status == 200
    assert document["responseObject"]["applicationList"] == [
        {"appId": "pa-only-1"},
        {"appId": "pa-only-2"},
    ]
    assert powerauth.requests[0][0] == "/rest/v3/application/list"


async def test_unconfigured_list_needs_powerauth(client: TestClient) -> None:
    status, document = await call(client, "GET", "/admin/app/unconfigured/list")

    assert status == 400
    assert "PUSH_POWERAUTH_URL" in document["responseObject"]["message"]
