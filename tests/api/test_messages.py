"""Sending messages: rows, publishing, SYNCHRONOUS counters, idempotency, message status."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from shared.message_waiter import MESSAGE_DONE_CHANNEL, parse_payload
from shared.settings import Settings
from tests.api.conftest import (
    APP_ID,
    FCM_TOKEN,
    ClientFactory,
    call,
    context_of,
    create_application,
    read_queue,
    register,
)


def message(user_id: str = "user-1", **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"userId": user_id, "body": {"title": "Hello", "body": "World"}}
    item.update(fields)
    return item


def send_body(mode: str = "ASYNCHRONOUS", **fields: Any) -> dict[str, Any]:
    return {"requestObject": {"appId": APP_ID, "mode": mode, "message": message(**fields)}}


async def setup_user(client: TestClient) -> None:
    await create_application(client)
    await register(client, "act-1", "user-1")
    await register(client, "act-2", "user-1", token=FCM_TOKEN, platform="fcm")


async def test_async_send_stores_pending_rows_and_publishes(
    client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    await setup_user(client)

    status, document = await call(client, "POST", "/push/message/send", send_body())

    assert status == 200
    answer = document["responseObject"]
    assert answer["mode"] == "ASYNCHRONOUS"
    assert len(answer["messageIds"]) == 2
    rows = await pool.fetch("SELECT * FROM push_message ORDER BY id")
    assert [row["id"] for row in rows] == answer["messageIds"]
    assert all(row["status"] == 0 for row in rows)
    assert all(row["timestamp_queued"] is not None for row in rows)
    assert rows[0]["message_body"] == {"title": "Hello", "body": "World"}
    published = await read_queue(
        settings.amqp_url.get_secret_value(), f"{settings.queue_prefix}.delivery"
    )
    assert published == [{"kind": "message", "ids": answer["messageIds"]}]


async def test_activation_id_targets_one_device(client: TestClient, pool: asyncpg.Pool) -> None:
    await setup_user(client)

    _status, document = await call(
        client, "POST", "/push/message/send", send_body(activationId="act-2")
    )

    rows = await pool.fetch("SELECT activation_id FROM push_message")
    assert len(document["responseObject"]["messageIds"]) == 1
    assert [row["activation_id"] for row in rows] == ["act-2"]


async def test_personal_message_skips_inactive_devices(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await create_application(client)
    await register(client, "act-1", "user-1")
    await register(client, "act-2", "user-1", token="b" * 64, status="BLOCKED")

    await call(
        client, "POST", "/push/message/send", send_body(attributes={"personal": True}), expect=200
    )
    await call(client, "POST", "/push/message/send", send_body(), expect=200)

    rows = await pool.fetch("SELECT activation_id, personal FROM push_message ORDER BY id")
    assert [(row["activation_id"], row["personal"]) for row in rows] == [
        ("act-1", True),
        ("act-1", False),
        ("act-2", False),
    ]


async def test_invalidated_tokens_are_skipped(client: TestClient, pool: asyncpg.Pool) -> None:
    await setup_user(client)
    await pool.execute(
        "UPDATE push_device SET timestamp_token_invalidated = now() WHERE activation_id = 'act-1'"
    )

    _status, document = await call(client, "POST", "/push/message/send", send_body())

    rows = await pool.fetch("SELECT activation_id FROM push_message")
    assert [row["activation_id"] for row in rows] == ["act-2"]
    assert len(document["responseObject"]["messageIds"]) == 1


async def test_user_without_devices_gets_zero_counters(client: TestClient) -> None:
    await create_application(client)

    status, document = await call(client, "POST", "/push/message/send", send_body("SYNCHRONOUS"))

    assert status == 200
    zero = {"sent": 0, "failed": 0, "pending": 0, "total": 0}
    answer = document["responseObject"]
    assert answer == {
        "mode": "SYNCHRONOUS",
        "apns": zero,
        "fcm": zero,
        "hms": zero,
        "messageIds": [],
    }


async def test_unknown_application_answers_credentials_not_found(client: TestClient) -> None:
    status, document = await call(client, "POST", "/push/message/send", send_body())

    assert status == 400
    assert document["responseObject"] == {
        "code": "ERROR_GENERIC",
        "message": "AppCredentials not found",
    }


async def test_missing_user_and_body_name_the_fields(client: TestClient) -> None:
    body = {"requestObject": {"appId": APP_ID, "message": {}}}

    status, document = await call(client, "POST", "/push/message/send", body)

    assert status == 400
    fields = {violation["fieldName"] for violation in document["responseObject"]["violations"]}
    assert fields == {"requestObject.message.userId", "requestObject.message.body"}


async def finish_rows(pool: asyncpg.Pool, statuses: dict[int, int], notify: bool = True) -> None:
    """Play a worker: set final statuses and notify the waiting API."""
    for row_id, status in statuses.items():
        await pool.execute("UPDATE push_message SET status = $2 WHERE id = $1", row_id, status)
    if notify:
        payload = ",".join(str(row_id) for row_id in statuses)
        await pool.execute("SELECT pg_notify($1, $2)", MESSAGE_DONE_CHANNEL, payload)


async def wait_for_rows(pool: asyncpg.Pool, count: int) -> list[int]:
    for _attempt in range(200):
        ids = [row["id"] for row in await pool.fetch("SELECT id FROM push_message ORDER BY id")]
        if len(ids) >= count:
            return ids
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} push_message rows never appeared")


async def test_sync_send_counts_notified_outcomes(
    make_client: ClientFactory, pool: asyncpg.Pool
) -> None:
    # A long poll interval shows that the notification, not polling, ends the wait.
    client = await make_client(send_sync_timeout_s=30.0, send_sync_poll_s=30.0)
    await setup_user(client)

    request = asyncio.create_task(
        call(client, "POST", "/push/message/send", send_body("SYNCHRONOUS"))
    )
    ids = await wait_for_rows(pool, 2)
    await asyncio.sleep(0.05)
    await finish_rows(pool, {ids[0]: 1, ids[1]: -1})
    status, document = await asyncio.wait_for(request, 10)

    assert status == 200
    answer = document["responseObject"]
    assert answer["mode"] == "SYNCHRONOUS"
    assert answer["apns"] == {"sent": 1, "failed": 0, "pending": 0, "total": 1}
    assert answer["fcm"] == {"sent": 0, "failed": 1, "pending": 0, "total": 1}
    assert answer["hms"] == {"sent": 0, "failed": 0, "pending": 0, "total": 0}


async def test_sync_send_polls_without_notification(
    make_client: ClientFactory, pool: asyncpg.Pool
) -> None:
    client = await make_client(send_sync_timeout_s=30.0, send_sync_poll_s=0.1)
    await setup_user(client)

    request = asyncio.create_task(
        call(client, "POST", "/push/message/send", send_body("SYNCHRONOUS"))
    )
    ids = await wait_for_rows(pool, 2)
    await finish_rows(pool, {ids[0]: 1, ids[1]: 1}, notify=False)
    _status, document = await asyncio.wait_for(request, 10)

    assert document["responseObject"]["apns"]["sent"] == 1
    assert document["responseObject"]["fcm"]["sent"] == 1


async def test_sync_send_counts_open_rows_as_pending(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await setup_user(client)

    _status, document = await call(client, "POST", "/push/message/send", send_body("SYNCHRONOUS"))

    answer = document["responseObject"]
    assert answer["apns"] == {"sent": 0, "failed": 0, "pending": 1, "total": 1}
    assert answer["fcm"] == {"sent": 0, "failed": 0, "pending": 1, "total": 1}


async def test_batch_send_sums_messages(client: TestClient, pool: asyncpg.Pool) -> None:
    await setup_user(client)
    await register(client, "act-3", "user-2", token="c" * 64)
    body = {
        "requestObject": {
            "appId": APP_ID,
            "mode": "ASYNCHRONOUS",
            "batch": [message("user-1"), message("user-2", priority="NORMAL"), message("nobody")],
        }
    }

    _status, document = await call(client, "POST", "/push/message/batch/send", body)

    assert len(document["responseObject"]["messageIds"]) == 3
    rows = await pool.fetch("SELECT user_id, priority FROM push_message ORDER BY id")
    assert sorted((row["user_id"], row["priority"]) for row in rows) == [
        ("user-1", "HIGH"),
        ("user-1", "HIGH"),
        ("user-2", "NORMAL"),
    ]


async def test_batch_over_limit_names_the_limit(make_client: ClientFactory) -> None:
    client = await make_client(send_batch_max_messages=3)
    await create_application(client)
    body = {"requestObject": {"appId": APP_ID, "batch": [message()] * 4}}

    status, document = await call(client, "POST", "/push/message/batch/send", body)

    assert status == 400
    violation = document["responseObject"]["violations"][0]
    assert violation["fieldName"] == "requestObject.batch"
    assert "the limit is 3" in violation["hint"]


async def test_empty_batch_is_rejected(client: TestClient) -> None:
    await create_application(client)

    status, _document = await call(
        client,
        "POST",
        "/push/message/batch/send",
        {"requestObject": {"appId": APP_ID, "batch": []}},
    )

    assert status == 400


async def test_idempotent_retry_returns_first_answer(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await setup_user(client)
    headers = {"Idempotency-Key": "order-17"}

    _status, first = await call(client, "POST", "/push/message/send", send_body(), headers=headers)
    _status, second = await call(client, "POST", "/push/message/send", send_body(), headers=headers)

    assert second == first
    assert await pool.fetchval("SELECT count(*) FROM push_message") == 2
    keys = await pool.fetch("SELECT idempotency_key FROM push_message")
    assert {row["idempotency_key"] for row in keys} == {"order-17"}


async def test_concurrent_idempotent_sends_write_once(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await setup_user(client)
    headers = {"Idempotency-Key": "same-key"}

    results = await asyncio.gather(
        *(
            call(client, "POST", "/push/message/send", send_body(), headers=headers)
            for _ in range(10)
        )
    )

    assert {status for status, _document in results} == {200}
    assert len({tuple(document["responseObject"]["messageIds"]) for _s, document in results}) == 1
    assert await pool.fetchval("SELECT count(*) FROM push_message") == 2


async def test_idempotency_key_with_other_request_is_rejected(client: TestClient) -> None:
    await setup_user(client)
    headers = {"Idempotency-Key": "order-18"}
    await call(client, "POST", "/push/message/send", send_body(), headers=headers, expect=200)

    status, document = await call(
        client, "POST", "/push/message/send", send_body(user_id="user-2"), headers=headers
    )

    assert status == 409
    assert document["responseObject"]["code"] == "ERROR_IDEMPOTENCY_KEY_REUSED"


async def test_expired_idempotency_key_sends_again(client: TestClient, pool: asyncpg.Pool) -> None:
    await setup_user(client)
    headers = {"Idempotency-Key": "order-19"}
    await call(client, "POST", "/push/message/send", send_body(), headers=headers, expect=200)
    await pool.execute("UPDATE push_idempotency SET expires_at = now() - interval '1 second'")

    await call(client, "POST", "/push/message/send", send_body(), headers=headers, expect=200)

    assert await pool.fetchval("SELECT count(*) FROM push_message") == 4


async def test_same_key_in_two_applications_is_independent(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await setup_user(client)
    await create_application(client, "other-app")
    await register(client, "act-9", "user-1", token="d" * 64, app_id="other-app")
    headers = {"Idempotency-Key": "shared"}
    other = send_body()
    other["requestObject"]["appId"] = "other-app"

    await call(client, "POST", "/push/message/send", send_body(), headers=headers, expect=200)
    await call(client, "POST", "/push/message/send", other, headers=headers, expect=200)

    assert await pool.fetchval("SELECT count(*) FROM push_message") == 3


async def test_bad_idempotency_key_is_rejected(client: TestClient) -> None:
    await setup_user(client)

    status, document = await call(
        client, "POST", "/push/message/send", send_body(), headers={"Idempotency-Key": "x" * 300}
    )

    assert status == 400
    assert document["responseObject"]["violations"][0]["fieldName"] == "Idempotency-Key"


async def test_failed_publish_leaves_rows_for_sweeper(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    await setup_user(client)
    await context_of(client).publisher.publisher.connection.close()

    status, document = await call(client, "POST", "/push/message/send", send_body())

    assert status == 200
    assert len(document["responseObject"]["messageIds"]) == 2
    rows = await pool.fetch(
        "SELECT status, timestamp_queued, next_attempt_at <= now() AS due FROM push_message"
    )
    assert [row["status"] for row in rows] == [0, 0]
    assert [row["timestamp_queued"] for row in rows] == [None, None]
    assert [row["due"] for row in rows] == [True, True]


async def test_message_status_by_id(client: TestClient, pool: asyncpg.Pool) -> None:
    await setup_user(client)
    _status, document = await call(
        client, "POST", "/push/message/send", send_body(activationId="act-1")
    )
    message_id = document["responseObject"]["messageIds"][0]
    await pool.execute(
        "UPDATE push_message SET status = -1, attempts = 3, failure_reason = 'BadDeviceToken'"
    )

    status, detail = await call(client, "GET", f"/push/message/{message_id}")

    assert status == 200
    answer = detail["responseObject"]
    assert answer["id"] == message_id
    assert answer["status"] == "FAILED"
    assert answer["attempts"] == 3
    assert answer["failureReason"] == "BadDeviceToken"
    assert answer["platform"] == "apns"
    assert "timestampCreated" in answer


async def test_message_status_of_unknown_id_is_404(client: TestClient) -> None:
    status, document = await call(client, "GET", "/push/message/999999")
    bad, _document = await call(client, "GET", "/push/message/99999999999999999999999")

    assert status == 404
    assert document["responseObject"]["code"] == "ERROR_MESSAGE_NOT_FOUND"
    assert bad == 400


def test_notification_payload_forms() -> None:
    assert parse_payload("1,2,3") == [1, 2, 3]
    assert parse_payload("[4, 5]") == [4, 5]
    assert parse_payload("7, x ,8") == [7, 8]
    assert parse_payload("[broken") == []


async def test_concurrent_sends_get_their_own_rows(client: TestClient, pool: asyncpg.Pool) -> None:
    await create_application(client)
    await create_application(client, "other-app")
    users = [f"user-{index}" for index in range(30)]
    for index, user_id in enumerate(users):
        await register(client, f"act-{index}", user_id, token=f"{index:064x}")
    await register(client, "act-x", "user-0", token="e" * 64, app_id="other-app")
    bodies = [send_body(user_id=user_id) for user_id in users]
    bodies.append({"requestObject": {**bodies[0]["requestObject"], "appId": "other-app"}})
    bodies.append({"requestObject": {**bodies[0]["requestObject"], "appId": "missing-app"}})

    results = await asyncio.gather(
        *(call(client, "POST", "/push/message/send", body) for body in bodies)
    )

    rows = await pool.fetch(
        "SELECT m.id, m.user_id, a.app_id FROM push_message AS m"
        " JOIN push_app_credentials AS a ON a.id = m.app_id"
    )
    owner = {row["id"]: (row["app_id"], row["user_id"]) for row in rows}
    for (status, document), body in zip(results[:-1], bodies[:-1], strict=True):
        expected = (body["requestObject"]["appId"], body["requestObject"]["message"]["userId"])
        assert status == 200
        ids = document["responseObject"]["messageIds"]
        assert len(ids) == 1
        assert owner[ids[0]] == expected
    assert results[-1][0] == 400
    assert len(rows) == 31


async def test_bad_request_in_shared_write_fails_alone(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    from types import SimpleNamespace

    from shared.message_body import MessageAttributes, MessageBody
    from shared.message_writer import WriteRequest
    from shared.requests import PushMessage

    await setup_user(client)
    writer = context_of(client).writer
    good = PushMessage.model_validate(message())
    bad = PushMessage.model_construct(
        user_id="user-1",
        activation_id=None,
        priority=SimpleNamespace(value="URGENT"),
        attributes=MessageAttributes(),
        body=MessageBody(title="x"),
    )

    results = await asyncio.gather(
        writer.write(WriteRequest(APP_ID, [good])),
        writer.write(WriteRequest(APP_ID, [bad])),
        return_exceptions=True,
    )

    assert not isinstance(results[0], BaseException)
    assert len(results[0].rows) == 2
    assert isinstance(results[1], asyncpg.CheckViolationError)
    assert await pool.fetchval("SELECT count(*) FROM push_message") == 2
