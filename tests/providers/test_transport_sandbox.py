"""HTTP/2 transport against the sandbox: GOAWAY, stream limits, TLS trust, dead connections."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.message_body import MessageAttributes, MessageBody, Priority
from tests.providers.sandbox_apps import apns_credentials, transport_factory
from workers.providers.apns import ApnsClient
from workers.providers.base import (
    Outcome,
    PreparedPayload,
    ProviderEndpoints,
    SendResult,
    apns_id_for,
    build_payload,
)
from workers.providers.tokens import ApnsTokenCache
from workers.providers.transport import Http2Transport, Http2TransportFactory
from workers.sandbox.control import SandboxProcess


def device_token() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def payload() -> PreparedPayload:
    return build_payload(
        "apns", MessageBody(title="t", body="b"), MessageAttributes(), Priority.HIGH
    )


def apns_client(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, factory: Http2TransportFactory
) -> ApnsClient:
    return ApnsClient.from_credentials(
        apns_credentials(sandbox), endpoints, factory, ApnsTokenCache()
    )


async def send_many(
    client: ApnsClient, payload: PreparedPayload, tokens: list[str], concurrency: int
) -> list[SendResult]:
    limit = asyncio.Semaphore(concurrency)

    async def send_one(row: int, token: str) -> SendResult:
        async with limit:
            return await client.send(
                token, payload, apns_id=apns_id_for("message", row), environment=None
            )

    return await asyncio.gather(*(send_one(row, token) for row, token in enumerate(tokens)))


def production_transport(client: ApnsClient) -> Http2Transport:
    transport = client.lanes["production"].transport
    assert isinstance(transport, Http2Transport)
    return transport


async def test_goaway_mid_run_loses_nothing(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    sandbox.admin.update_settings(count_tokens=True)
    sandbox.admin.set_connection_policy("apns", goaway_after_streams=150)
    client = apns_client(sandbox, endpoints, transport_factory(endpoints))
    tokens = [device_token() for _ in range(1500)]
    try:
        results = await send_many(client, payload, tokens, concurrency=500)
    finally:
        await client.aclose()

    outcomes = Counter(result.outcome for result in results)
    assert outcomes == {Outcome.SENT: 1500}
    counts = sandbox.admin.token_counts("apns", tokens)
    assert all(counts[token] >= 1 for token in tokens)


async def test_lowered_stream_limit_respected(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    # Without retries a stream over the limit would come back REFUSED_STREAM and show
    # up as a transient outcome.
    factory = transport_factory(endpoints, retry_on_connection_error=False, max_connections=1)
    client = apns_client(sandbox, endpoints, factory)
    try:
        first = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 0), environment=None
        )
        sandbox.admin.set_connection_policy("apns", max_concurrent_streams=5)
        await asyncio.sleep(0.2)  # lets the new SETTINGS reach the client
        results = await send_many(client, payload, [device_token() for _ in range(300)], 300)
    finally:
        await client.aclose()

    assert first.outcome is Outcome.SENT
    assert Counter(result.outcome for result in results) == {Outcome.SENT: 300}


async def test_initial_single_stream_respected(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    # The APNs sandbox allows one stream until a provider token is accepted.
    factory = transport_factory(endpoints, retry_on_connection_error=False, max_connections=1)
    client = apns_client(sandbox, endpoints, factory)
    try:
        results = await send_many(client, payload, [device_token() for _ in range(200)], 200)
    finally:
        await client.aclose()

    assert Counter(result.outcome for result in results) == {Outcome.SENT: 200}


async def test_more_connections_when_saturated(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    sandbox.admin.add_fault("apns", None, latency_ms=200)
    factory = transport_factory(endpoints, streams_per_connection=10, max_connections=3)
    client = apns_client(sandbox, endpoints, factory)
    try:
        results = await send_many(client, payload, [device_token() for _ in range(60)], 60)
        pool_size = len(production_transport(client).pool)
    finally:
        await client.aclose()

    assert Counter(result.outcome for result in results) == {Outcome.SENT: 60}
    assert pool_size == 3


async def test_request_timeout_is_transient(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    token = device_token()
    sandbox.admin.add_fault("apns", None, token=token, latency_ms=3000)
    client = apns_client(sandbox, endpoints, transport_factory(endpoints, timeout_s=0.3))
    try:
        result = await client.send(
            token, payload, apns_id=apns_id_for("message", 1), environment=None
        )
    finally:
        await client.aclose()

    assert result.outcome is Outcome.TRANSIENT
    assert result.reason == "timeout"


async def test_sandbox_ca_trusted(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload
) -> None:
    client = apns_client(sandbox, endpoints, Http2TransportFactory(ca_file=endpoints.ca_file))
    try:
        result = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 1), environment=None
        )
    finally:
        await client.aclose()

    assert result.outcome is Outcome.SENT


def other_ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Unrelated test CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("trusted", ["system roots only", "another CA"])
async def test_unknown_ca_rejected(
    sandbox: SandboxProcess, endpoints: ProviderEndpoints, payload: PreparedPayload, trusted: str
) -> None:
    factory = Http2TransportFactory(ca_file=None)
    if trusted == "another CA":
        factory.ca_pem = other_ca_pem()
    untrusting = replace(endpoints, ca_file=None)
    client = ApnsClient.from_credentials(
        apns_credentials(sandbox), untrusting, factory, ApnsTokenCache()
    )
    try:
        result = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 1), environment=None
        )
    finally:
        await client.aclose()

    assert result.outcome is Outcome.TRANSIENT
    assert result.reason == "connection_error"
    assert sandbox.admin.counters()["accepted"]["apns"] == 0


class FreezingProxy:
    """A loopback TCP proxy whose existing connections can be frozen: bytes stop flowing
    in both directions without a FIN or RST, as on a dead network path."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.frozen: set[int] = set()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze_existing(self) -> None:
        self.frozen.update(range(1, self.connections + 1))

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        upstream_reader, upstream_writer = await asyncio.open_connection(
            self.target_host, self.target_port
        )
        await asyncio.gather(
            self.pipe(number, reader, upstream_writer),
            self.pipe(number, upstream_reader, writer),
            return_exceptions=True,
        )

    async def pipe(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                if number in self.frozen:
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy(sandbox: SandboxProcess) -> AsyncIterator[FreezingProxy]:
    target = urlsplit(sandbox.urls.apns_url)
    freezing = FreezingProxy(target.hostname or "127.0.0.1", target.port or 443)
    await freezing.start()
    yield freezing
    await freezing.stop()


async def test_dead_connection_detected_by_ping(
    sandbox: SandboxProcess,
    endpoints: ProviderEndpoints,
    payload: PreparedPayload,
    proxy: FreezingProxy,
) -> None:
    assert proxy.server is not None
    port = proxy.server.sockets[0].getsockname()[1]
    through_proxy = replace(endpoints, apns_production_url=f"https://127.0.0.1:{port}")
    factory = transport_factory(
        endpoints,
        keepalive_interval_s=0.1,
        keepalive_timeout_s=0.2,
        timeout_s=5.0,
        retry_on_connection_error=False,
    )
    client = ApnsClient.from_credentials(
        apns_credentials(sandbox), through_proxy, factory, ApnsTokenCache()
    )
    try:
        first = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 1), environment=None
        )
        proxy.freeze_existing()
        # Several PING intervals pass without an ACK, so the client drops the connection.
        await asyncio.sleep(1.5)
        second = await client.send(
            device_token(), payload, apns_id=apns_id_for("message", 2), environment=None
        )
    finally:
        await client.aclose()

    assert first.outcome is Outcome.SENT
    assert second.outcome is Outcome.SENT
    assert proxy.connections == 2
