"""Service endpoints, the error envelope of unknown paths, request ids and documentation."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from shared.settings import Settings
from tests.api.conftest import ClientFactory, call


async def test_service_status_has_original_fields(client: TestClient) -> None:
    status, document = await call(
        client, "GET", "/push/service/status", headers={"Authorization": ""}
    )

    assert status == 200
    assert document["status"] == "OK"
    answer = document["responseObject"]
    assert answer["applicationName"] == "powerauth-push"
    assert answer["applicationDisplayName"] == "PowerAuth Push Server"
    assert "version" in answer
    assert "buildTime" in answer
    assert "timestamp" in answer


async def test_health_live_and_ready_answer_up(client: TestClient) -> None:
    live = await client.get("/health/live")
    ready = await client.get("/health/ready")

    assert live.status == 200
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "UP", "broker": "UP"}


async def test_ready_answers_503_when_broker_is_gone(client: TestClient) -> None:
    context = client.app_context  # type: ignore[attr-defined]
    await context.publisher.publisher.connection.close()

    response = await client.get("/health/ready")

    assert response.status == 503
    document = await response.json()
    assert document["status"] == "ERROR"
    assert document["responseObject"]["checks"]["broker"] == "DOWN"


async def test_metrics_count_requests_by_route(client: TestClient) -> None:
    await client.get("/push/service/status")

    response = await client.get("/metrics")
    text = await response.text()

    assert response.status == 200
    assert 'push_api_requests_total{method="GET",route="/push/service/status",status="200"}' in text
    assert "push_api_request_duration_seconds_bucket" in text
    assert "push_api_rows_written_total" in text


async def test_unknown_path_answers_404_envelope(client: TestClient) -> None:
    status, document = await call(client, "GET", "/push/nothing/here")

    assert status == 404
    assert document["status"] == "ERROR"
    assert document["responseObject"]["code"] == "ERROR_NOT_FOUND"


async def test_wrong_verb_answers_405_envelope(client: TestClient) -> None:
    status, document = await call(client, "GET", "/push/device/create")

    assert status == 405
    assert document["responseObject"]["code"] == "ERROR_METHOD_NOT_ALLOWED"


async def test_request_id_is_echoed(client: TestClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    generated = await client.get("/health/live")

    assert response.headers["X-Request-ID"] == "abc-123"
    assert len(generated.headers["X-Request-ID"]) == 32


async def test_unsafe_request_id_is_replaced(client: TestClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "a b\tc"})

    assert response.headers["X-Request-ID"] != "a b\tc"


async def test_log_lines_carry_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    from api.request_ids import RequestIdFilter

    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        await call(
            client,
            "POST",
            "/admin/app/detail",
            {"requestObject": {"appId": "missing"}},
            headers={"X-Request-ID": "req-42", "X-Correlation-ID": "corr-12345678"},
        )

    tagged = [record for record in caplog.records if "request_id=req-42" in record.request_ids]
    assert tagged
    assert "correlation_id=corr-12345678" in tagged[0].request_ids


async def test_openapi_lists_every_endpoint(client: TestClient) -> None:
    response = await client.get("/openapi.json")
    document = await response.json()

    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert "post" in paths["/push/device/create"]
    assert "put" in paths["/push/device/status/update"]
    assert "delete" in paths["/admin/app/apns"]
    assert paths["/admin/app/ios/update"]["post"]["deprecated"] is True
    assert "ObjectRequest_SendMessageRequest_" in document["components"]["schemas"]


async def test_docs_page_is_self_contained(client: TestClient) -> None:
    response = await client.get("/docs")
    text = await response.text()

    assert response.status == 200
    assert "/push/message/send" in text
    assert "<script" not in text
    assert "<link" not in text


async def test_auth_disabled_lets_anonymous_callers_in(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        open_client = await make_client(auth_disabled=True)

    status, _document = await call(
        open_client, "GET", "/admin/app/list", headers={"Authorization": ""}
    )

    assert status == 200
    assert any("authentication is disabled" in record.message for record in caplog.records)


async def test_command_serves_until_sigterm(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        **os.environ,
        "PUSH_DATABASE_URL": settings.database_url.get_secret_value(),
        "PUSH_AMQP_URL": settings.amqp_url.get_secret_value(),
        "PUSH_MASTER_KEY": settings.master_key.get_secret_value(),
        "PUSH_QUEUE_PREFIX": settings.queue_prefix,
        "PUSH_API_PORT": str(port),
        "PUSH_AUTH_DISABLED": "true",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "api", env=environment, stderr=asyncio.subprocess.PIPE
    )
    try:
        status = await wait_for_ready(f"http://127.0.0.1:{port}/health/ready")
    finally:
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = await asyncio.wait_for(process.communicate(), 30)

    assert status == 200
    assert process.returncode == 0
    log = stderr.decode()
    assert f"API listening on http://127.0.0.1:{port}" in log
    assert "authentication is disabled" in log
    assert "API stopped" in log


async def wait_for_ready(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        for _attempt in range(100):
            try:
                async with session.get(url) as response:
                    return response.status
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    return 0
