"""Device registration rules, status updates and removal, through the real API."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.api.conftest import (
    APNS_TOKEN,
    APP_ID,
    FCM_TOKEN,
    HMS_TOKEN,
    ClientFactory,
    FakePowerAuth,
    call,
    create_application,
    register,
)


def create_body(**fields: Any) -> dict[str, Any]:
    request = {
        "appId": APP_ID,
        "token": APNS_TOKEN,
        "platform": "apns",
        "activationId": "act-1",
        "activationStatus": "ACTIVE",
        "userId": "user-1",
    }
    request.update(fields)
    return {"requestObject": {key: value for key, value in request.items() if value is not None}}


async def devices(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM push_device ORDER BY id")


async def test_create_stores_device(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)

    status, document = await call(client, "POST", "/push/device/create", create_body())

    assert status == 200
    assert document == {"status": "OK"}
    rows = await devices(pool)
    assert len(rows) == 1
    assert rows[0]["activation_id"] == "act-1"
    assert rows[0]["user_id"] == "user-1"
    assert rows[0]["platform"] == "apns"
    assert rows[0]["is_active"] is True


async def test_create_normalises_apns_token(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    raw = "<" + " ".join(["ABCDEF01"] * 8) + ">"

    await call(client, "POST", "/push/device/create", create_body(token=raw), expect=200)

    assert (await devices(pool))[0]["push_token"] == "abcdef01" * 8


async def test_create_accepts_legacy_platform_names(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)

    await call(client, "POST", "/push/device/create", create_body(platform="ios"), expect=200)
    await call(
        client,
        "POST",
        "/push/device/create",
        create_body(platform="Android", token=FCM_TOKEN, activationId="act-2"),
        expect=200,
    )
    await call(
        client,
        "POST",
        "/push/device/create",
        create_body(platform="huawei", token=HMS_TOKEN, activationId="act-3"),
        expect=200,
    )

    assert [row["platform"] for row in await devices(pool)] == ["apns", "fcm", "hms"]


async def test_create_rejects_malformed_tokens(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    cases = [
        ("apns", "not-hex-at-all"),
        ("apns", "ab" * 8),
        ("fcm", "short"),
        ("hms", "has space " * 3),
    ]

    for platform, token in cases:
        status, document = await call(
            client, "POST", "/push/device/create", create_body(platform=platform, token=token)
        )
        assert status == 400, (platform, token)
        assert document["responseObject"]["code"] == "ERROR_REQUEST"
        assert document["responseObject"]["violations"][0]["fieldName"] == "requestObject.token"

    assert await devices(pool) == []


async def test_environment_is_lower_case_and_apns_only(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)

    await call(
        client, "POST", "/push/device/create", create_body(environment="DEVELOPMENT"), expect=200
    )
    await call(
        client,
        "POST",
        "/push/device/create",
        create_body(
            platform="fcm", token=FCM_TOKEN, activationId="act-2", environment="production"
        ),
        expect=200,
    )

    rows = await devices(pool)
    assert rows[0]["environment"] == "development"
    assert rows[1]["environment"] is None


async def test_unknown_application_is_rejected(client: TestClient) -> None:
    status, document = await call(client, "POST", "/push/device/create", create_body())

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"
    assert document["responseObject"]["message"] == "Application with given ID does not exist"


async def test_reregistration_updates_the_row(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    await call(client, "POST", "/push/device/create", create_body(), expect=200)
    first = (await devices(pool))[0]
    await pool.execute("UPDATE push_device SET timestamp_token_invalidated = now()")

    await call(client, "POST", "/push/device/create", create_body(token="b" * 64), expect=200)

    rows = await devices(pool)
    assert len(rows) == 1
    assert rows[0]["id"] == first["id"]
    assert rows[0]["push_token"] == "b" * 64
    assert rows[0]["timestamp_token_invalidated"] is None
    assert rows[0]["timestamp_last_registered"] > first["timestamp_last_registered"]


async def test_token_moves_to_new_activation(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    await call(client, "POST", "/push/device/create", create_body(), expect=200)

    await call(
        client,
        "POST",
        "/push/device/create",
        create_body(activationId="act-2", userId="user-2"),
        expect=200,
    )

    rows = await devices(pool)
    assert [(row["activation_id"], row["user_id"]) for row in rows] == [("act-2", "user-2")]


async def test_same_token_in_other_application_stays(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)
    await create_application(client, "other-app")
    await call(client, "POST", "/push/device/create", create_body(), expect=200)

    await call(client, "POST", "/push/device/create", create_body(appId="other-app"), expect=200)

    assert len(await devices(pool)) == 2


async def test_registration_without_activation_keys_on_token(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)

    await register(client, None, "user-1")
    await register(client, None, "user-2")

    rows = await devices(pool)
    assert len(rows) == 1
    assert rows[0]["activation_id"] is None
    assert rows[0]["user_id"] == "user-2"


async def test_registration_needs_activation_or_user(client: TestClient) -> None:
    await create_application(client)

    status, document = await call(
        client, "POST", "/push/device/create", create_body(activationId=None, userId=None)
    )

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_REQUEST"


async def test_concurrent_identical_registrations_make_one_row(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)

    results = await asyncio.gather(
        *(call(client, "POST", "/push/device/create", create_body()) for _ in range(20))
    )

    assert [status for status, _document in results] == [200] * 20
    assert len(await devices(pool)) == 1


async def test_removed_activation_is_rejected(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)

    status, document = await call(
        client, "POST", "/push/device/create", create_body(activationStatus="REMOVED")
    )

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"
    assert await devices(pool) == []


async def test_without_powerauth_status_and_user_are_required(client: TestClient) -> None:
    await create_application(client)

    status, document = await call(
        client, "POST", "/push/device/create", create_body(activationStatus=None, userId=None)
    )

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_REQUEST"
    assert "PUSH_POWERAUTH_URL" in document["responseObject"]["violations"][0]["hint"]


async def test_powerauth_lookup_fills_status_and_user(
    make_client: ClientFactory, powerauth: FakePowerAuth, pool: asyncpg.Pool
) -> None:
    client = await make_client(powerauth_url=powerauth.url)
    await create_application(client)
    powerauth.activations["act-1"] = {"activationStatus": "BLOCKED", "userId": "pa-user"}

    await call(
        client,
        "POST",
        "/push/device/create",
        create_body(activationStatus=None, userId=None),
        expect=200,
    )

    rows = await devices(pool)
    assert rows[0]["user_id"] == "pa-user"
    assert rows[0]["is_active"] is False
    assert powerauth.requests == [
        ("/rest/v3/activation/status", {"requestObject": {"activationId": "act-1"}})
    ]


async def test_powerauth_is_skipped_when_request_has_both(
    make_client: ClientFactory, powerauth: FakePowerAuth
) -> None:
    client = await make_client(powerauth_url=powerauth.url)
    await create_application(client)

    await call(client, "POST", "/push/device/create", create_body(), expect=200)

    assert powerauth.requests == []


async def test_missing_activation_in_powerauth_is_rejected(
    make_client: ClientFactory, powerauth: FakePowerAuth
) -> None:
    client = await make_client(powerauth_url=powerauth.url)
    await create_application(client)

    status, document = await call(
        client, "POST", "/push/device/create", create_body(activationStatus=None, userId=None)
    )

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"


async def test_powerauth_failure_answers_pa_server_comm(
    make_client: ClientFactory, powerauth: FakePowerAuth
) -> None:
    client = await make_client(powerauth_url=powerauth.url)
    await create_application(client)
    powerauth.fail = True

    status, document = await call(
        client, "POST", "/push/device/create", create_body(activationStatus=None, userId=None)
    )

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_PA_SERVER_COMM"


def multi_body(activation_ids: list[str], **fields: Any) -> dict[str, Any]:
    body = create_body(**fields)
    del body["requestObject"]["activationId"]
    body["requestObject"]["activationIds"] = activation_ids
    return body


async def test_multi_keeps_one_row_per_listed_activation(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)
    await call(
        client, "POST", "/push/device/create/multi", multi_body(["a1", "a2", "a3"]), expect=200
    )

    await call(
        client,
        "POST",
        "/push/device/create/multi",
        multi_body(["a2", "a3", "a3", "a4"]),
        expect=200,
    )

    rows = await devices(pool)
    assert sorted(row["activation_id"] for row in rows) == ["a2", "a3", "a4"]
    assert {row["push_token"] for row in rows} == {APNS_TOKEN}


async def test_multi_rejects_environment_for_fcm(client: TestClient) -> None:
    await create_application(client)

    status, document = await call(
        client,
        "POST",
        "/push/device/create/multi",
        multi_body(["a1"], platform="fcm", token=FCM_TOKEN, environment="production"),
    )

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_REQUEST"


async def test_multi_is_rejected_when_disabled(make_client: ClientFactory) -> None:
    client = await make_client(registration_multiple_activations_enabled=False)
    await create_application(client)

    status, document = await call(client, "POST", "/push/device/create/multi", multi_body(["a1"]))

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"
    assert "PUSH_REGISTRATION_MULTIPLE_ACTIVATIONS_ENABLED" in document["responseObject"]["message"]


async def test_status_update_takes_raw_body(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    await create_application(client, "other-app")
    await register(client, "act-1", "user-1")
    await register(client, "act-1", "user-1", app_id="other-app")

    status, document = await call(
        client,
        "POST",
        "/push/device/status/update",
        {"activationId": "act-1", "activationStatus": "BLOCKED"},
    )
    put_status, _document = await call(
        client,
        "PUT",
        "/push/device/status/update",
        {"activationId": "unknown", "activationStatus": "ACTIVE"},
    )

    assert status == 200
    assert document == {"status": "OK"}
    assert put_status == 200
    assert [row["is_active"] for row in await devices(pool)] == [False, False]


async def test_status_update_reads_powerauth_without_status(
    make_client: ClientFactory, powerauth: FakePowerAuth, pool: asyncpg.Pool
) -> None:
    client = await make_client(powerauth_url=powerauth.url)
    await create_application(client)
    await register(client, "act-1", "user-1", status="BLOCKED")
    powerauth.activations["act-1"] = {"activationStatus": "ACTIVE", "userId": "user-1"}

    await call(client, "POST", "/push/device/status/update", {"activationId": "act-1"}, expect=200)

    assert (await devices(pool))[0]["is_active"] is True


async def test_status_update_without_activation_is_rejected(client: TestClient) -> None:
    status, document = await call(
        client, "POST", "/push/device/status/update", {"activationStatus": "ACTIVE"}
    )

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "activationId"


async def test_delete_removes_rows_of_token(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    await register(client, "act-1", "user-1")
    await register(client, "act-2", "user-2", token="c" * 64)

    status, _document = await call(
        client,
        "DELETE",
        "/push/device/delete",
        {"requestObject": {"appId": APP_ID, "token": "A" * 64}},
    )
    again, _document = await call(
        client,
        "POST",
        "/push/device/delete",
        {"requestObject": {"appId": APP_ID, "token": "a" * 64}},
    )

    assert status == 200
    assert again == 200
    assert [row["activation_id"] for row in await devices(pool)] == ["act-2"]


async def test_correlation_id_reaches_powerauth(
    make_client: ClientFactory, powerauth: FakePowerAuth
) -> None:
    client = await make_client(powerauth_url=powerauth.url)
    await create_application(client)
    powerauth.activations["act-1"] = {"activationStatus": "ACTIVE", "userId": "pa-user"}
    body = create_body(activationStatus=None, userId=None)

    await call(
        client, "POST", "/push/device/create", body, headers={"X-Correlation-ID": "corr-0001"}
    )
    await call(client, "POST", "/push/device/create", body)

    assert powerauth.correlation_ids == ["corr-0001", None]


async def test_powerauth_client_credentials_are_sent(
    make_client: ClientFactory, powerauth: FakePowerAuth
) -> None:
    from pydantic import SecretStr

    client = await make_client(
        powerauth_url=powerauth.url,
        powerauth_client_token="push-client",
        powerauth_client_secret=SecretStr("push-secret"),
    )
    await create_application(client)
    powerauth.activations["act-1"] = {"activationStatus": "ACTIVE", "userId": "pa-user"}

    await call(
        client, "POST", "/push/device/create", create_body(activationStatus=None, userId=None)
    )

    expected = "Basic " + base64.b64encode(b"push-client:push-secret").decode()
    assert powerauth.authorizations == [expected]
