"""A small HTTP/2 client on h2 for tests that need frame-level control.

Unlike a pooled HTTP client it keeps one connection per object, sends headers exactly as
given (duplicates included), and exposes the server's SETTINGS and any GOAWAY.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class _LimitIgnoringConnection(h2.connection.H2Connection):
    @property
    def open_outbound_streams(self) -> int:
        return 0


@dataclass
class H2Response:
    status: int
    headers: dict[str, str]
    body: bytes
    reset_code: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Stream:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    done: asyncio.Future[None] | None = None
    reset_code: int | None = None


class H2TestConnection:
    """One HTTP/2 connection over TLS with ALPN h2."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 443
        self.authority = f"{self.host}:{self.port}"
        self.ssl_context = ssl_context
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, _Stream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.settings_received = asyncio.Event()
        self.settings_changes: list[int] = []
        self.closed = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> H2TestConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl_context, server_hostname=self.host
        )
        self.conn.initiate_connection()
        self._flush()
        self._task = asyncio.create_task(self._read_loop())
        await asyncio.wait_for(self.settings_received.wait(), 5)

    @property
    def server_max_concurrent_streams(self) -> int:
        return self.conn.remote_settings.max_concurrent_streams

    async def wait_for_stream_limit(
        self, condition: Callable[[int], bool], timeout_s: float = 5.0
    ) -> None:
        """Wait until the server's SETTINGS_MAX_CONCURRENT_STREAMS satisfies `condition`."""
        async with asyncio.timeout(timeout_s):
            while not condition(self.server_max_concurrent_streams):
                await asyncio.sleep(0.01)

    def ignore_server_stream_limit(self) -> None:
        """Let this client open more streams than the server allows, to test refusals."""
        self.conn.__class__ = _LimitIgnoringConnection

    async def request(
        self,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        method: str = "POST",
    ) -> H2Response:
        stream_id = self.start_request(path, headers, body, method)
        return await self.response(stream_id)

    def start_request(
        self,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        method: str = "POST",
    ) -> int:
        """Open a stream and send the whole request without waiting for the response."""
        stream_id = self.conn.get_next_available_stream_id()
        request_headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":path", path.encode()),
            (b":authority", self.authority.encode()),
        ]
        request_headers += [(name.encode(), value.encode()) for name, value in headers or []]
        stream = _Stream(done=asyncio.get_running_loop().create_future())
        self.streams[stream_id] = stream
        self.conn.send_headers(stream_id, request_headers, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self._flush()
        return stream_id

    async def response(self, stream_id: int, timeout_s: float = 10.0) -> H2Response:
        stream = self.streams[stream_id]
        assert stream.done is not None
        await asyncio.wait_for(asyncio.shield(stream.done), timeout_s)
        headers = {name.decode(): value.decode() for name, value in stream.headers}
        status = int(headers.pop(":status", "0"))
        return H2Response(status, headers, bytes(stream.body), stream.reset_code)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, ConnectionError, ssl.SSLError):
                pass

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self._writer is not None:
            self._writer.write(data)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._handle(event)
                self._flush()
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed.set()
            for stream in self.streams.values():
                if stream.done is not None and not stream.done.done():
                    stream.done.set_exception(ConnectionError("connection closed"))

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received.set()
            changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self.settings_changes.append(changed.new_value)
        elif isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].headers = list(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._finish(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset_code = int(event.error_code)
            self._finish(event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def _finish(self, stream_id: int | None) -> None:
        if stream_id is None:
            return
        done = self.streams[stream_id].done
        if done is not None and not done.done():
            done.set_result(None)
