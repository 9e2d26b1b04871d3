"""A lean HTTP/2 (and HTTP/1.1) server over TLS for the fake provider services.

Each listening port serves one `Service`. The service's `handle` method is synchronous and
returns a `Response` (optionally with a delay), so the per-request path creates no task
and no future: the h2 state machine, one dictionary lookup and one call to the service.

HTTP/2 connections follow the connection behaviour a client meets at APNs and FCM: the
server's SETTINGS_MAX_CONCURRENT_STREAMS (enforced once the client has acknowledged it,
with RST_STREAM(REFUSED_STREAM) for excess streams), GOAWAY after a number of streams,
SETTINGS changes while a connection is open, PING replies. HTTP/1.1 is offered through
ALPN only where the service allows it (FCM and HMS do, APNs does not).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from workers.sandbox.hpack_codec import HeaderDecoder, HeaderEncoder

logger = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# h2 drops closed streams from its stream table only while counting open streams, which the
# sandbox connection never does on its own, so it sweeps them after this many new streams.
STREAM_SWEEP_INTERVAL = 256

# Grace period for in-flight responses after a GOAWAY before the socket is closed anyway.
GOAWAY_CLOSE_TIMEOUT_S = 10.0

CONNECTION_WINDOW_BYTES = 1 << 24

_STATUS_BYTES = {status: str(status).encode() for status in range(100, 600)}


@dataclass(slots=True)
class Response:
    """A complete response: status, headers (lowercase names), body and injected latency."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    delay_s: float = 0.0


@dataclass
class ConnectionContext:
    """Per-connection facts a service may read and keep state in."""

    connection_id: int
    http2: bool
    state: dict[str, Any] = field(default_factory=dict)
    unlock_streams: Callable[[], None] = lambda: None


@dataclass(slots=True)
class Request:
    """A complete request passed to a service; `headers` excludes pseudo-headers."""

    method: bytes
    path: bytes
    headers: Headers
    body: bytes
    connection: ConnectionContext
    stream_id: int = 0


@dataclass
class ConnectionPolicy:
    """Connection-level behaviour of one service, changeable while the server runs.

    `initial_max_concurrent_streams` is what a new HTTP/2 connection advertises until the
    service calls `ConnectionContext.unlock_streams` (APNs does so after the first valid
    provider token); then `max_concurrent_streams` applies. `goaway_after_streams` makes a
    connection send GOAWAY(NO_ERROR) once it has accepted that many streams.
    """

    max_concurrent_streams: int = 1000
    initial_max_concurrent_streams: int | None = None
    goaway_after_streams: int | None = None
    header_table_size: int = 4096
    max_header_list_size: int = 8000


class Service(Protocol):
    """A fake provider endpoint served on one port."""

    name: str
    policy: ConnectionPolicy
    allow_http1: bool

    def handle(self, request: Request) -> Response: ...


class _SandboxH2Connection(h2.connection.H2Connection):
    """h2 connection that leaves the inbound stream limit to `_Http2Handler`.

    h2 counts open streams by walking its whole stream table on every new stream, which
    costs O(streams in flight) per request, and it rejects an excess stream with a
    connection error where RFC 9113 section 5.1.2 allows refusing only that stream.
    """

    def _receive_headers_frame(self, frame: Any) -> Any:
        stream_id = frame.stream_id
        if (
            stream_id not in self.streams
            and stream_id % 2 == 1
            and stream_id > self.highest_inbound_stream_id
        ):
            self._begin_new_stream(stream_id, h2.connection.AllowedStreamIDs.ODD)
        return super()._receive_headers_frame(frame)

    def sweep_closed_streams(self) -> None:
        # Reading the property drops closed streams from the table as a side effect.
        _ = self.open_inbound_streams


class _PendingStream:
    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers) -> None:
        self.headers = headers
        self.body: list[bytes] = []


class SandboxServer:
    """Listener for one service; tracks open connections so policy changes reach them."""

    def __init__(self, service: Service, ssl_context: ssl.SSLContext) -> None:
        self.service = service
        self.ssl_context = ssl_context
        self.connections: set[SandboxProtocol] = set()
        self._next_connection_id = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (0 picks a free port) and return the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_protocol,
            host,
            port,
            ssl=self.ssl_context,
            backlog=1024,
        )
        bound_port: int = self._server.sockets[0].getsockname()[1]
        logger.info("%s listening on %s:%d", self.service.name, host, bound_port)
        return bound_port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.abort()
        await self._server.wait_closed()

    def apply_policy(self) -> None:
        """Send the policy's current stream limit to every open HTTP/2 connection."""
        for connection in list(self.connections):
            connection.apply_policy()

    def _make_protocol(self) -> SandboxProtocol:
        self._next_connection_id += 1
        return SandboxProtocol(self, self._next_connection_id)


class SandboxProtocol(asyncio.Protocol):
    """asyncio protocol that picks the HTTP/2 or HTTP/1.1 handler after the TLS handshake."""

    def __init__(self, server: SandboxServer, connection_id: int) -> None:
        self.server = server
        self.connection_id = connection_id
        self.transport: asyncio.Transport | None = None
        self.handler: _Http2Handler | _Http1Handler | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport does not subclass asyncio.Transport but has its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        service = self.server.service

        if protocol == "h2":
            self.handler = _Http2Handler(service, transport, self.connection_id)
        elif service.allow_http1:
            self.handler = _Http1Handler(service, transport, self.connection_id)
        else:
            # APNs speaks HTTP/2 only; a client that did not negotiate h2 gets a closed socket.
            logger.debug("%s: connection %d without ALPN h2 closed", service.name, protocol)
            transport.close()
            return
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.handler is not None:
            self.handler.connection_lost()

    def apply_policy(self) -> None:
        if isinstance(self.handler, _Http2Handler):
            self.handler.apply_policy()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Http2Handler:
    def __init__(self, service: Service, transport: asyncio.Transport, connection_id: int) -> None:
        self.service = service
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.context = ConnectionContext(connection_id, http2=True)
        self.context.unlock_streams = self._unlock_streams
        self.pending: dict[int, _PendingStream] = {}
        self.queued_bodies: dict[int, bytes] = {}
        self.active_streams = 0
        self.streams_seen = 0
        self.enforced_limit: int | None = None
        self.unlocked = service.policy.initial_max_concurrent_streams is None
        self.goaway_stream_id: int | None = None
        self.goaway_sent = False
        self.flush_scheduled = False
        self.closed = False

        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = _SandboxH2Connection(config=config)
        # h2 only calls encode/decode and sets the size attributes, which both classes have.
        self.h2.encoder = HeaderEncoder()  # type: ignore[assignment]
        self.h2.decoder = HeaderDecoder(service.policy.header_table_size)  # type: ignore[assignment]
        self.h2.decoder.max_header_list_size = service.policy.max_header_list_size
        policy = service.policy
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self._advertised_limit(),
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: policy.header_table_size,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: policy.max_header_list_size,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW_BYTES)
        self._flush()

    def _advertised_limit(self) -> int:
        policy = self.service.policy
        if not self.unlocked and policy.initial_max_concurrent_streams is not None:
            return policy.initial_max_concurrent_streams
        return policy.max_concurrent_streams

    def apply_policy(self) -> None:
        if self.closed:
            return
        limit = self._advertised_limit()
        if limit != self.h2.local_settings.max_concurrent_streams:
            self.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limit})
            self._flush()

    def _unlock_streams(self) -> None:
        if not self.unlocked:
            self.unlocked = True
            self.apply_policy()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            logger.debug("%s: HTTP/2 protocol error: %s", self.service.name, error)
            self._flush()
            self.transport.close()
            self.closed = True
            return

        for event in events:
            self._dispatch_event(event)
        self._schedule_flush()

    def _dispatch_event(self, event: h2.events.Event) -> None:
        event_type = type(event)
        if event_type is h2.events.RequestReceived:
            self._request_received(event)  # type: ignore[arg-type]
        elif event_type is h2.events.DataReceived:
            self._data_frame_received(event)  # type: ignore[arg-type]
        elif event_type is h2.events.StreamEnded:
            self._stream_ended(event.stream_id)  # type: ignore[attr-defined]
        elif event_type is h2.events.StreamReset:
            self._stream_reset(event.stream_id)  # type: ignore[attr-defined]
        elif event_type is h2.events.WindowUpdated:
            self._send_queued_bodies()
        elif event_type is h2.events.SettingsAcknowledged:
            self.enforced_limit = self.h2.local_settings.max_concurrent_streams
        elif event_type is h2.events.ConnectionTerminated:
            self.transport.close()
            self.closed = True

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self.goaway_stream_id is not None and stream_id > self.goaway_stream_id:
            # The GOAWAY frame's Last-Stream-ID marks these streams as unprocessed. Before
            # that frame is sent, a REFUSED_STREAM reset signals the same.
            if not self.goaway_sent:
                self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if self.enforced_limit is not None and self.active_streams >= self.enforced_limit:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return

        self.active_streams += 1
        self.streams_seen += 1
        self.pending[stream_id] = _PendingStream(event.headers)
        if self.streams_seen % STREAM_SWEEP_INTERVAL == 0:
            self.h2.sweep_closed_streams()

        goaway_after = self.service.policy.goaway_after_streams
        if goaway_after is not None and self.streams_seen >= goaway_after:
            # Later streams are refused now; the GOAWAY frame follows this stream's response
            # so that clients which stop reading streams after a GOAWAY still get it.
            self.goaway_stream_id = stream_id

    def _data_frame_received(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        pending = self.pending.get(stream_id)
        if pending is not None and event.data:
            pending.body.append(event.data)
        if event.flow_controlled_length:
            try:
                self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
            except h2.exceptions.StreamClosedError:
                pass

    def _stream_ended(self, stream_id: int) -> None:
        pending = self.pending.pop(stream_id, None)
        if pending is None:
            return
        request = _build_request(pending, self.context, stream_id)
        if request is None:
            self._send_response(stream_id, Response(400))
            return

        response = self.service.handle(request)
        if response.delay_s > 0:
            self.loop.call_later(response.delay_s, self._send_delayed, stream_id, response)
        else:
            self._send_response(stream_id, response)

    def _stream_reset(self, stream_id: int) -> None:
        if self.pending.pop(stream_id, None) is not None:
            self._stream_finished(stream_id)
        elif self.queued_bodies.pop(stream_id, None) is not None:
            self._stream_finished(stream_id)

    def _send_delayed(self, stream_id: int, response: Response) -> None:
        if self.closed:
            return
        self._send_response(stream_id, response)
        self._schedule_flush()

    def _send_response(self, stream_id: int, response: Response) -> None:
        headers = [(b":status", _STATUS_BYTES[response.status]), *response.headers]
        try:
            if response.body:
                self.h2.send_headers(stream_id, headers)
                self._send_body(stream_id, response.body)
            else:
                self.h2.send_headers(stream_id, headers, end_stream=True)
                self._stream_finished(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The client reset the stream while its response was delayed.
            self._stream_finished(stream_id)

    def _send_body(self, stream_id: int, body: bytes) -> None:
        window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
        if len(body) <= window:
            self.h2.send_data(stream_id, body, end_stream=True)
            self._stream_finished(stream_id)
            return
        if window > 0:
            self.h2.send_data(stream_id, body[:window])
        self.queued_bodies[stream_id] = body[window:]

    def _send_queued_bodies(self) -> None:
        for stream_id, body in list(self.queued_bodies.items()):
            del self.queued_bodies[stream_id]
            try:
                self._send_body(stream_id, body)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._stream_finished(stream_id)

    def _stream_finished(self, stream_id: int) -> None:
        self.active_streams -= 1
        if self.goaway_stream_id is None:
            return
        if stream_id == self.goaway_stream_id:
            self._send_goaway(stream_id)
        if self.active_streams <= 0:
            self.loop.call_soon(self._close_after_goaway)

    def _send_goaway(self, last_stream_id: int) -> None:
        # h2 allows no frame at all after its own close_connection(), but streams below
        # Last-Stream-ID may still need their responses, so the GOAWAY frame is written directly.
        frame = GoAwayFrame(
            stream_id=0,
            last_stream_id=last_stream_id,
            error_code=ErrorCodes.NO_ERROR,
            additional_data=b'{"reason":"Shutdown"}',
        )
        self._flush()
        self.transport.write(frame.serialize())
        self.goaway_sent = True
        self.loop.call_later(GOAWAY_CLOSE_TIMEOUT_S, self._close_after_goaway)

    def _close_after_goaway(self) -> None:
        if not self.closed:
            self._flush()
            self.closed = True
            self.transport.close()

    def _reset(self, stream_id: int, error_code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, error_code)
        except h2.exceptions.StreamClosedError:
            pass

    def _schedule_flush(self) -> None:
        # One TLS write per event-loop pass instead of one per read or per delayed response:
        # each write costs an encryption and a syscall, more than answering a request.
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        data = self.h2.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self) -> None:
        self.closed = True
        self.pending.clear()
        self.queued_bodies.clear()


def _build_request(
    pending: _PendingStream, context: ConnectionContext, stream_id: int
) -> Request | None:
    method = path = None
    headers: Headers = []
    for name, value in pending.headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
        else:
            headers.append((name, value))
    if method is None or path is None:
        return None
    body = b"".join(pending.body) if len(pending.body) != 1 else pending.body[0]
    return Request(method, path, headers, body, context, stream_id)


class MalformedHttp1Request(Exception):
    """The HTTP/1.1 request line, headers or chunked body could not be parsed."""


class _Http1Handler:
    """Minimal HTTP/1.1 keep-alive server: Content-Length or chunked bodies, one at a time."""

    MAX_HEAD_BYTES = 65536

    def __init__(self, service: Service, transport: asyncio.Transport, connection_id: int) -> None:
        self.service = service
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.context = ConnectionContext(connection_id, http2=False)
        self.buffer = bytearray()
        self.busy = False
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def _process(self) -> None:
        while not self.busy and not self.closed:
            try:
                parsed = self._parse_one()
            except MalformedHttp1Request as error:
                logger.debug("%s: malformed HTTP/1.1 request: %s", self.service.name, error)
                self._write(Response(400), keep_alive=False)
                return
            if parsed is None:
                return

            request, keep_alive = parsed
            response = self.service.handle(request)
            if response.delay_s > 0:
                self.busy = True
                self.loop.call_later(response.delay_s, self._send_delayed, response, keep_alive)
                return
            self._write(response, keep_alive)

    def _parse_one(self) -> tuple[Request, bool] | None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > self.MAX_HEAD_BYTES:
                raise MalformedHttp1Request("request head too large")
            return None

        lines = bytes(self.buffer[:head_end]).split(b"\r\n")
        try:
            method, path, version = lines[0].split(b" ", 2)
        except ValueError as error:
            raise MalformedHttp1Request(f"bad request line {lines[0]!r}") from error
        headers: Headers = []
        for line in lines[1:]:
            name, separator, value = line.partition(b":")
            if not separator:
                raise MalformedHttp1Request(f"bad header line {line!r}")
            headers.append((name.strip().lower(), value.strip()))

        body_start = head_end + 4
        body_and_end = self._read_body(headers, body_start)
        if body_and_end is None:
            return None
        body, end = body_and_end
        del self.buffer[:end]

        connection_header = _header_value(headers, b"connection") or b""
        keep_alive = version == b"HTTP/1.1" and connection_header.lower() != b"close"
        return Request(method, path, headers, body, self.context), keep_alive

    def _read_body(self, headers: Headers, start: int) -> tuple[bytes, int] | None:
        transfer_encoding = _header_value(headers, b"transfer-encoding")
        if transfer_encoding is not None and b"chunked" in transfer_encoding.lower():
            return self._read_chunked(start)

        length_text = _header_value(headers, b"content-length") or b"0"
        try:
            length = int(length_text)
        except ValueError as error:
            raise MalformedHttp1Request(f"bad content-length {length_text!r}") from error
        if len(self.buffer) < start + length:
            return None
        return bytes(self.buffer[start : start + length]), start + length

    def _read_chunked(self, position: int) -> tuple[bytes, int] | None:
        chunks: list[bytes] = []
        while True:
            line_end = self.buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size_text = bytes(self.buffer[position:line_end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as error:
                raise MalformedHttp1Request(f"bad chunk size {size_text!r}") from error
            data_start = line_end + 2
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return None
                return b"".join(chunks), trailer_end + 4
            if len(self.buffer) < data_start + size + 2:
                return None
            chunks.append(bytes(self.buffer[data_start : data_start + size]))
            position = data_start + size + 2

    def _send_delayed(self, response: Response, keep_alive: bool) -> None:
        if self.closed:
            return
        self.busy = False
        self._write(response, keep_alive)
        self._process()

    def _write(self, response: Response, keep_alive: bool) -> None:
        lines = [b"HTTP/1.1 " + _STATUS_BYTES[response.status] + b" " + _reason(response.status)]
        for name, value in response.headers:
            lines.append(name + b": " + value)
        lines.append(b"content-length: " + str(len(response.body)).encode())
        if not keep_alive:
            lines.append(b"connection: close")
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + response.body)
        if not keep_alive:
            self.closed = True
            self.transport.close()

    def connection_lost(self) -> None:
        self.closed = True


def _header_value(headers: Headers, name: bytes) -> bytes | None:
    for header_name, value in headers:
        if header_name == name:
            return value
    return None


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    410: b"Gone",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")
