"""Campaign endpoints: create, users, test and live sends, progress, delete."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from shared.settings import Settings
from tests.api.conftest import APP_ID, call, create_application, read_queue, register

BODY = {"title": "Sale", "body": "Everything must go"}


async def create_campaign(client: TestClient, **fields: object) -> int:
    request = {"appId": APP_ID, "message": BODY, **fields}
    _status, document = await call(
        client, "POST", "/push/campaign/create", {"requestObject": request}, expect=200
    )
    campaign_id: int = document["responseObject"]["id"]
    return campaign_id


async def test_create_and_detail(client: TestClient) -> None:
    await create_application(client)

    campaign_id = await create_campaign(client)
    status, document = await call(client, "GET", f"/push/campaign/{campaign_id}/detail")

    assert status == 200
    detail = document["responseObject"]
    assert detail["id"] == campaign_id
    assert detail["appId"] == APP_ID
    assert detail["sent"] is False
    assert detail["message"] == BODY
    assert detail["attributes"] == {"silent": False, "personal": False}
    assert detail["priority"] == "HIGH"
    assert detail["state"] == "created"


async def test_create_takes_attributes_and_priority(client: TestClient) -> None:
    await create_application(client)

    campaign_id = await create_campaign(client, attributes={"silent": True}, priority="NORMAL")
    _status, document = await call(client, "GET", f"/push/campaign/{campaign_id}/detail")

    assert document["responseObject"]["attributes"] == {"silent": True, "personal": False}
    assert document["responseObject"]["priority"] == "NORMAL"


async def test_create_for_unknown_application_is_rejected(client: TestClient) -> None:
    status, document = await call(
        client,
        "POST",
        "/push/campaign/create",
        {"requestObject": {"appId": "nope", "message": BODY}},
    )

    assert status == 400
    assert document["responseObject"]["message"] == "Application with given ID does not exist"


async def test_detail_of_unknown_campaign_is_rejected(client: TestClient) -> None:
    status, document = await call(client, "GET", "/push/campaign/12345/detail")

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"


async def test_list_all_false_lists_unsent(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    first = await create_campaign(client)
    second = await create_campaign(client)
    await pool.execute("UPDATE push_campaign SET sent = true WHERE id = $1", first)

    _status, unsent = await call(client, "GET", "/push/campaign/list?all=false")
    _status, default = await call(client, "GET", "/push/campaign/list")
    _status, everything = await call(client, "GET", "/push/campaign/list?all=true")
    bad, _document = await call(client, "GET", "/push/campaign/list?all=maybe")

    assert [item["id"] for item in unsent["responseObject"]] == [second]
    assert [item["id"] for item in default["responseObject"]] == [second]
    assert [item["id"] for item in everything["responseObject"]] == [first, second]
    assert bad == 400


async def test_user_add_list_and_delete(client: TestClient) -> None:
    await create_application(client)
    campaign_id = await create_campaign(client)
    users = {"requestObject": ["u1", "u2", "u3", "u2"]}

    await call(client, "PUT", f"/push/campaign/{campaign_id}/user/add", users, expect=200)
    await call(
        client,
        "POST",
        f"/push/campaign/{campaign_id}/user/add",
        {"requestObject": ["u3", "u4"]},
        expect=200,
    )
    _status, page0 = await call(
        client, "GET", f"/push/campaign/{campaign_id}/user/list?page=0&size=3"
    )
    _status, page1 = await call(
        client, "GET", f"/push/campaign/{campaign_id}/user/list?page=1&size=3"
    )
    await call(
        client,
        "DELETE",
        f"/push/campaign/{campaign_id}/user/delete",
        {"requestObject": ["u1", "zz"]},
        expect=200,
    )
    _status, after = await call(client, "GET", f"/push/campaign/{campaign_id}/user/list?size=10")

    assert page0["page"] == 0
    assert page0["size"] == 3
    assert page0["responseObject"] == {"campaignId": campaign_id, "users": ["u1", "u2", "u3"]}
    assert page1["responseObject"]["users"] == ["u4"]
    assert after["responseObject"]["users"] == ["u2", "u3", "u4"]


async def test_user_add_for_unknown_campaign_is_rejected(client: TestClient) -> None:
    status, document = await call(
        client, "PUT", "/push/campaign/999/user/add", {"requestObject": ["u1"]}
    )

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"


async def test_user_add_rejects_non_string_ids(client: TestClient) -> None:
    await create_application(client)
    campaign_id = await create_campaign(client)

    status, document = await call(
        client, "PUT", f"/push/campaign/{campaign_id}/user/add", {"requestObject": ["u1", 5]}
    )

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "requestObject[1]"


async def test_user_add_takes_100000_users(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    campaign_id = await create_campaign(client)
    users = [f"user-{index:07d}" for index in range(100_000)]

    await call(
        client,
        "PUT",
        f"/push/campaign/{campaign_id}/user/add",
        {"requestObject": users},
        expect=200,
    )

    count = await pool.fetchval(
        "SELECT count(*) FROM push_campaign_user WHERE campaign_id = $1", campaign_id
    )
    assert count == 100_000


async def test_send_live_publishes_expansion_job(
    client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    await create_application(client)
    campaign_id = await create_campaign(client)

    status, document = await call(client, "POST", f"/push/campaign/send/live/{campaign_id}")

    assert status == 200
    assert document == {"status": "OK"}
    row = await pool.fetchrow(
        "SELECT state, timestamp_sent FROM push_campaign WHERE id = $1", campaign_id
    )
    assert row["state"] == "sending"
    assert row["timestamp_sent"] is not None
    jobs = await read_queue(
        settings.amqp_url.get_secret_value(), f"{settings.queue_prefix}.campaign"
    )
    assert jobs == [{"campaignId": campaign_id}]


async def test_send_live_of_unknown_campaign_is_rejected(client: TestClient) -> None:
    status, document = await call(client, "POST", "/push/campaign/send/live/4242")

    assert status == 400
    assert document["responseObject"]["code"] == "ERROR_GENERIC"


async def test_send_test_sends_to_one_user(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    await register(client, "act-1", "tester")
    await register(client, "act-2", "someone-else", token="b" * 64)
    campaign_id = await create_campaign(client, priority="NORMAL")

    status, document = await call(
        client,
        "POST",
        f"/push/campaign/send/test/{campaign_id}",
        {"requestObject": {"userId": "tester"}},
    )

    assert status == 200
    assert document == {"status": "OK"}
    rows = await pool.fetch("SELECT user_id, priority, message_body FROM push_message")
    assert [(row["user_id"], row["priority"]) for row in rows] == [("tester", "NORMAL")]
    assert rows[0]["message_body"] == BODY


async def add_campaign_devices(
    pool: asyncpg.Pool, campaign_id: int, statuses: list[tuple[int, str | None]]
) -> None:
    for index, (status, reason) in enumerate(statuses):
        await pool.execute(
            "INSERT INTO push_campaign_device"
            " (campaign_id, platform, token, status, failure_reason, timestamp_sent)"
            " VALUES ($1, 'apns', $2, $3::smallint, $4,"
            " CASE WHEN $3::smallint = 1 THEN now() END)",
            campaign_id,
            f"{index:064x}",
            status,
            reason,
        )


async def test_progress_counts_statuses_and_reasons(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    campaign_id = await create_campaign(client)
    await call(client, "POST", f"/push/campaign/send/live/{campaign_id}", expect=200)
    await add_campaign_devices(
        pool,
        campaign_id,
        [(0, None), (0, None), (2, None), (1, None), (1, None), (-1, "BadDeviceToken")],
    )

    status, document = await call(client, "GET", f"/push/campaign/{campaign_id}/progress")

    assert status == 200
    progress = document["responseObject"]
    assert progress["state"] == "sending"
    assert progress["counts"] == {"pending": 2, "sending": 1, "sent": 2, "failed": 1}
    assert progress["failureReasons"] == {"BadDeviceToken": 1}
    assert progress["devices"] == 6
    assert progress["ratePerSecond"] > 0
    assert progress["estimatedSecondsLeft"] > 0


async def test_delete_of_sending_campaign_cancels_and_deletes(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)
    campaign_id = await create_campaign(client)
    await call(
        client,
        "PUT",
        f"/push/campaign/{campaign_id}/user/add",
        {"requestObject": ["u1"]},
        expect=200,
    )
    await call(client, "POST", f"/push/campaign/send/live/{campaign_id}", expect=200)
    await add_campaign_devices(pool, campaign_id, [(0, None), (1, None)])

    status, document = await call(client, "DELETE", f"/push/campaign/{campaign_id}/delete")
    again, second = await call(client, "POST", f"/push/campaign/{campaign_id}/delete")

    assert status == 200
    assert document["responseObject"] == {"deleted": True}
    assert again == 200
    assert second["responseObject"] == {"deleted": False}
    assert await pool.fetchval("SELECT count(*) FROM push_campaign") == 0
    assert await pool.fetchval("SELECT count(*) FROM push_campaign_user") == 0
    assert await pool.fetchval("SELECT count(*) FROM push_campaign_device") == 0


async def test_cancel_fails_pending_rows_with_reason(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    from shared.campaigns import CANCEL_PENDING_DEVICES

    await create_application(client)
    campaign_id = await create_campaign(client)
    await add_campaign_devices(pool, campaign_id, [(0, None), (1, None), (2, None)])

    await pool.execute(CANCEL_PENDING_DEVICES, campaign_id)

    rows = await pool.fetch("SELECT status, failure_reason FROM push_campaign_device ORDER BY id")
    assert [(row["status"], row["failure_reason"]) for row in rows] == [
        (-1, "cancelled"),
        (1, None),
        (2, None),
    ]
