"""API keys and roles: 401 without a valid key, 403 with the wrong role."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from shared.api_keys import parse_api_keys
from shared.exceptions import SettingsError
from tests.api.conftest import (
    ADMIN_KEY,
    REGISTRAR_KEY,
    SENDER_KEY,
    basic,
    bearer,
    call,
    create_application,
)

DEVICE = ("POST", "/push/device/create")
SEND = ("POST", "/push/message/send")
CAMPAIGN = ("GET", "/push/campaign/list")
ADMIN_LIST = ("GET", "/admin/app/list")
STATUS_UPDATE = ("POST", "/push/device/status/update")


async def status_of(client: TestClient, route: tuple[str, str], headers: dict[str, str]) -> int:
    method, path = route
    status, document = await call(client, method, path, {}, headers=headers)
    if status in (401, 403):
        assert document["status"] == "ERROR"
    return status


async def test_missing_key_answers_401(client: TestClient) -> None:
    status, document = await call(client, "GET", "/admin/app/list", headers={"Authorization": ""})

    assert status == 401
    assert document["responseObject"]["code"] == "ERROR_UNAUTHORIZED"


async def test_wrong_key_answers_401(client: TestClient) -> None:
    assert await status_of(client, ADMIN_LIST, bearer("not-a-key")) == 401
    assert await status_of(client, ADMIN_LIST, {"Authorization": "Token abc"}) == 401
    assert await status_of(client, ADMIN_LIST, {"Authorization": "Basic !!!"}) == 401


async def test_basic_needs_matching_name(client: TestClient) -> None:
    assert await status_of(client, ADMIN_LIST, basic("admin", ADMIN_KEY)) == 200
    assert await status_of(client, ADMIN_LIST, basic("backend", ADMIN_KEY)) == 401


@pytest.mark.parametrize(
    ("key", "route", "expected"),
    [
        (REGISTRAR_KEY, DEVICE, 400),
        (REGISTRAR_KEY, STATUS_UPDATE, 400),
        (REGISTRAR_KEY, SEND, 403),
        (REGISTRAR_KEY, CAMPAIGN, 403),
        (REGISTRAR_KEY, ADMIN_LIST, 403),
        (SENDER_KEY, DEVICE, 403),
        (SENDER_KEY, SEND, 400),
        (SENDER_KEY, CAMPAIGN, 200),
        (SENDER_KEY, ADMIN_LIST, 403),
        (ADMIN_KEY, DEVICE, 400),
        (ADMIN_KEY, SEND, 400),
        (ADMIN_KEY, ADMIN_LIST, 200),
    ],
)
async def test_roles_decide_access(
    client: TestClient, key: str, route: tuple[str, str], expected: int
) -> None:
    assert await status_of(client, route, bearer(key)) == expected


async def test_forbidden_answer_names_the_role(client: TestClient) -> None:
    status, document = await call(client, "GET", "/admin/app/list", headers=bearer(SENDER_KEY))

    assert status == 403
    assert document["responseObject"]["code"] == "ERROR_FORBIDDEN"
    assert "admin" in document["responseObject"]["message"]


async def test_public_endpoints_need_no_key(client: TestClient) -> None:
    for path in ("/push/service/status", "/health/live", "/metrics", "/openapi.json"):
        response = await client.get(path)
        assert response.status == 200, path


async def test_registrar_can_register_with_basic(client: TestClient) -> None:
    await create_application(client)
    body = {
        "requestObject": {
            "appId": "mobile-app",
            "token": "f" * 64,
            "platform": "apns",
            "activationId": "a1",
            "activationStatus": "ACTIVE",
            "userId": "u1",
        }
    }

    status, _document = await call(
        client, "POST", "/push/device/create", body, headers=basic("mobile", REGISTRAR_KEY)
    )

    assert status == 200


def test_api_keys_parse_roles() -> None:
    keys = parse_api_keys(f"one:sender+registrar:{'a' * 64}, two:admin:{'B' * 64}")

    assert [key.name for key in keys] == ["one", "two"]
    assert {role.value for role in keys[0].roles} == {"sender", "registrar"}


@pytest.mark.parametrize(
    "text", ["nocolon", f"x:root:{'a' * 64}", "x:admin:abc", f":admin:{'a' * 64}"]
)
def test_api_keys_reject_bad_entries(text: str) -> None:
    with pytest.raises(SettingsError):
        parse_api_keys(text)
