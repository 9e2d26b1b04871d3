"""HTTP/2 connection behaviour: stream limits in SETTINGS, refused streams, GOAWAY, ALPN."""

from __future__ import annotations

import asyncio
import ssl
from datetime import timedelta

import pytest
from h2.errors import ErrorCodes
from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import ConnectError

from tests.sandbox.conftest import device_token
from tests.sandbox.h2client import H2Response, H2TestConnection
from tests.sandbox.test_apns import PAYLOAD, apns_headers, send, warm_up
from workers.sandbox.control import SandboxAdmin, SandboxProcess
from workers.sandbox.credentials import ApnsSigningKey


async def test_apns_allows_one_stream_until_authenticated(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey
):
    initial_limit = apns_connection.server_max_concurrent_streams

    status, _, _ = await send(apns_connection, apns_app)
    await apns_connection.wait_for_stream_limit(lambda limit: limit > 1)

    assert initial_limit == 1
    assert status == 200
    assert apns_connection.server_max_concurrent_streams == 1000


async def test_lowered_limit_reaches_new_and_open_connections(
    sandbox: SandboxProcess, client_ssl_context: ssl.SSLContext, admin: SandboxAdmin
):
    async with H2TestConnection(sandbox.urls.fcm_url, client_ssl_context) as open_conn:
        before = open_conn.server_max_concurrent_streams
        admin.set_connection_policy("fcm", max_concurrent_streams=5)
        await open_conn.wait_for_stream_limit(lambda limit: limit == 5)
        async with H2TestConnection(sandbox.urls.fcm_url, client_ssl_context) as new_conn:
            new_limit = new_conn.server_max_concurrent_streams

        assert before == 100
        assert open_conn.settings_changes[-1] == 5
        assert new_limit == 5


async def test_excess_streams_refused(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    admin.set_connection_policy("apns", max_concurrent_streams=2)
    await warm_up(apns_connection, apns_app)
    admin.add_fault("apns", latency_ms=300)
    apns_connection.ignore_server_stream_limit()

    streams = [
        apns_connection.start_request(
            f"/3/device/{device_token()}", apns_headers(apns_app), PAYLOAD
        )
        for _ in range(3)
    ]
    responses = [await apns_connection.response(stream) for stream in streams]

    assert [response.status for response in responses[:2]] == [200, 200]
    assert responses[2].reset_code == ErrorCodes.REFUSED_STREAM


async def test_goaway_after_n_streams(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    admin.set_connection_policy("apns", goaway_after_streams=3)

    statuses = [(await send(apns_connection, apns_app))[0] for _ in range(3)]
    await asyncio.wait_for(apns_connection.closed.wait(), 5)

    goaway = apns_connection.goaway
    assert statuses == [200, 200, 200]
    assert goaway is not None
    assert goaway.last_stream_id == 5
    assert goaway.error_code == ErrorCodes.NO_ERROR
    assert goaway.additional_data == b'{"reason":"Shutdown"}'


async def test_goaway_leaves_later_streams_unprocessed(
    apns_connection: H2TestConnection, apns_app: ApnsSigningKey, admin: SandboxAdmin
):
    await warm_up(apns_connection, apns_app)
    admin.set_connection_policy("apns", goaway_after_streams=3)

    streams = [
        apns_connection.start_request(
            f"/3/device/{device_token()}", apns_headers(apns_app), PAYLOAD
        )
        for _ in range(4)
    ]
    outcomes = await asyncio.gather(
        *(apns_connection.response(stream) for stream in streams), return_exceptions=True
    )

    accepted = [outcome.status for outcome in outcomes[:2] if isinstance(outcome, H2Response)]
    assert accepted == [200, 200]
    assert apns_connection.goaway is not None
    assert apns_connection.goaway.last_stream_id == streams[1]
    for outcome in outcomes[2:]:
        refused = (
            isinstance(outcome, H2Response) and outcome.reset_code == ErrorCodes.REFUSED_STREAM
        )
        assert refused or isinstance(outcome, ConnectionError)


async def test_apns_rejects_http1(sandbox: SandboxProcess):
    client = (
        ClientBuilder()
        .add_root_certificate_pem(sandbox.urls.ca_file.read_bytes())
        .http1_only()
        .timeout(timedelta(seconds=5))
        .build()
    )

    async with client:
        with pytest.raises(ConnectError):
            await (
                client.post(f"{sandbox.urls.apns_url}/3/device/{device_token()}")
                .body_bytes(PAYLOAD)
                .build()
                .send()
            )


async def test_pyreqwest_http2_send(sandbox: SandboxProcess, apns_app: ApnsSigningKey):
    client = (
        ClientBuilder()
        .add_root_certificate_pem(sandbox.urls.ca_file.read_bytes())
        .http2(True)
        .timeout(timedelta(seconds=10))
        .build()
    )
    async with client:
        request = client.post(f"{sandbox.urls.apns_url}/3/device/{device_token()}")
        for name, value in apns_headers(apns_app):
            request = request.header(name, value)
        response = await request.body_bytes(PAYLOAD).build().send()

    assert response.version == "HTTP/2.0"
    assert response.status == 200
