"""HTTP/2 transport of the provider clients: send one request, get status, headers, body.

The clients depend only on `Transport`, so the HTTP/2 library can be replaced. The
implementation uses pyreqwest (Python bindings of Rust's reqwest, hyper and h2). It was
the fastest client measured on the 2-core development machine, over one TLS connection
on loopback with 100-200 streams in flight: 18,000-20,700 requests/s, against
6,100-7,400 for an asyncio protocol on the `h2` package and 960 for httpx.

What the transport guarantees and who does it:
- Concurrent-stream limit: the h2 crate never opens more streams than the server's
  SETTINGS_MAX_CONCURRENT_STREAMS and queues the rest on the connection.
- GOAWAY: hyper stops using a connection after a GOAWAY and opens a new one. pyreqwest
  0.15 (reqwest 0.13) does not retry the streams the server never processed (above
  the GOAWAY's last-stream id, or reset with REFUSED_STREAM), so the transport retries
  them, up to MAX_UNPROCESSED_RETRIES times. A request whose connection died under it
  is retried once on a new connection (`retry_on_connection_error`).
- Dead connections: HTTP/2 PING every `keepalive_interval_s`, also while idle; no
  PING ACK within `keepalive_timeout_s` closes the connection. Every request has a
  total timeout.
- More connections: hyper keeps one HTTP/2 connection per origin and client, so the
  transport holds several pyreqwest clients and opens another when every one has
  `streams_per_connection` requests in flight, up to `max_connections`.
- TLS: system roots plus the CA file from the settings; certificates are always verified.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pyreqwest.exceptions
from pyreqwest.client import Client, ClientBuilder

logger = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response; header names are lower-case."""

    status: int
    headers: dict[str, str]
    body: bytes
    connection_id: int = 0


class TransportError(Exception):
    """A request failed without a response (connection refused, reset, TLS failure)."""

    reason = "connection_error"


class RequestNotProcessed(TransportError):
    """The server refused the stream or it was above a GOAWAY's last-stream id."""


class TransportTimeout(TransportError):
    """A request got no complete response within its timeout."""

    reason = "timeout"


class Transport(abc.ABC):
    """Sends HTTP requests; one instance serves one provider client."""

    @abc.abstractmethod
    async def request(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        *,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        """Send one request and read the whole response.

        Raises TransportTimeout or TransportError when no response arrives.
        """

    async def renew_connection(self, connection_id: int | None = None) -> None:  # noqa: B027
        """Stop sending on one connection (every connection for None); later requests
        use new connections.

        The default does nothing, for transports without connection state.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close every connection."""


TransportFactory = Callable[[], Transport]

# Texts of the h2 crate's errors (as pyreqwest lists them in the error's causes) for
# streams the server never processed: RST_STREAM(REFUSED_STREAM), GOAWAY(NO_ERROR) for
# streams above its last-stream id, and a request whose connection task ended before
# the request was written.
UNPROCESSED_MARKERS = (
    "refused stream before processing",
    "connection error received: not a result of an error",
    "dispatch task is gone",
)
MAX_UNPROCESSED_RETRIES = 20
UNPROCESSED_RETRY_DELAY_S = 0.01


def describe_causes(error: pyreqwest.exceptions.DetailedPyreqwestError) -> str:
    causes = error.details.get("causes") or []
    return "; ".join(cause["message"] for cause in causes) or error.message


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return a Retry-After header (delay seconds or HTTP-date) as seconds from now."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = now if now is not None else time.time()
    return max(moment.timestamp() - current, 0.0)


@dataclass(frozen=True, slots=True)
class Http2Options:
    """Connection settings of `Http2Transport`; durations in seconds."""

    ca_file: Path | None = None
    max_connections: int = 4
    streams_per_connection: int = 1000
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    keepalive_interval_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    idle_timeout_s: float = 3600.0
    retry_on_connection_error: bool = True


@dataclass(slots=True)
class PooledClient:
    """One pyreqwest client: one HTTP/2 connection per origin it talks to."""

    id: int
    client: Client
    in_flight: int = 0
    retired: bool = False
    closed: bool = field(default=False)


def read_ca_file(ca_file: Path | None) -> bytes | None:
    if ca_file is None:
        return None
    return ca_file.read_bytes()


class Http2Transport(Transport):
    """HTTP/2 over TLS with pyreqwest, spread over up to `max_connections` connections."""

    def __init__(self, options: Http2Options, ca_pem: bytes | None = None) -> None:
        self.options = options
        self.ca_pem = ca_pem if ca_pem is not None else read_ca_file(options.ca_file)
        self.timeout = timedelta(seconds=options.timeout_s)
        self.pool: list[PooledClient] = []
        self.ids = itertools.count(1)
        self.closing: set[asyncio.Task[None]] = set()

    def build_client(self) -> Client:
        options = self.options
        builder = (
            ClientBuilder()
            .http2_prior_knowledge()
            .https_only(True)
            .follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .referer(False)
            .timeout(self.timeout)
            .connect_timeout(timedelta(seconds=options.connect_timeout_s))
            .pool_idle_timeout(timedelta(seconds=options.idle_timeout_s))
            .http2_keep_alive_interval(timedelta(seconds=options.keepalive_interval_s))
            .http2_keep_alive_timeout(timedelta(seconds=options.keepalive_timeout_s))
            .http2_keep_alive_while_idle(True)
            .tcp_nodelay(True)
        )
        if self.ca_pem is not None:
            builder = builder.add_root_certificate_pem(self.ca_pem)
        return builder.build()

    def open_client(self) -> PooledClient:
        pooled = PooledClient(id=next(self.ids), client=self.build_client())
        self.pool.append(pooled)
        logger.debug("opened HTTP/2 client %d (%d in pool)", pooled.id, len(self.pool))
        return pooled

    def choose_client(self) -> PooledClient:
        """Return the least busy client, opening one when all are saturated."""
        least = min(self.pool, key=lambda pooled: pooled.in_flight, default=None)
        if least is None:
            return self.open_client()
        saturated = least.in_flight >= self.options.streams_per_connection
        if saturated and len(self.pool) < self.options.max_connections:
            return self.open_client()
        return least

    async def request(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        *,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        attempt = 0
        renewed = False
        while True:
            pooled = self.choose_client()
            try:
                return await self.request_on(pooled, method, url, headers, body, timeout_s)
            except RequestNotProcessed:
                # Refused streams and streams above a GOAWAY's last-stream id never
                # reached the server's application, so a retry cannot duplicate them.
                # hyper sends the retry on a new connection by itself.
                attempt += 1
                if not self.options.retry_on_connection_error or attempt > MAX_UNPROCESSED_RETRIES:
                    raise
                await asyncio.sleep(UNPROCESSED_RETRY_DELAY_S * attempt)
            except TransportTimeout:
                raise
            except TransportError as error:
                # The connection died under the request, which may have been processed.
                # One retry on a fresh connection keeps at-least-once delivery.
                if not self.options.retry_on_connection_error or renewed:
                    raise
                renewed = True
                logger.info("request to %s failed (%s); retrying on a new connection", url, error)
                await self.renew_connection(pooled.id)

    async def request_on(
        self,
        pooled: PooledClient,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        timeout_s: float | None,
    ) -> HttpResponse:
        builder = pooled.client.request(method, url).headers(headers).body_bytes(body)
        if timeout_s is not None:
            builder = builder.timeout(timedelta(seconds=timeout_s))

        pooled.in_flight += 1
        try:
            response = await builder.build().send()
            content = await response.bytes()
            return HttpResponse(
                status=response.status,
                headers=dict(response.headers.items()),
                body=bytes(content),
                connection_id=pooled.id,
            )
        except pyreqwest.exceptions.RequestTimeoutError as error:
            raise TransportTimeout(f"{method} {url} timed out") from error
        except pyreqwest.exceptions.DetailedPyreqwestError as error:
            causes = describe_causes(error)
            if any(marker in causes for marker in UNPROCESSED_MARKERS):
                raise RequestNotProcessed(f"{method} {url} was not processed: {causes}") from error
            raise TransportError(f"{method} {url} failed: {causes}") from error
        except pyreqwest.exceptions.PyreqwestError as error:
            raise TransportError(f"{method} {url} failed: {error.message}") from error
        finally:
            pooled.in_flight -= 1
            if pooled.retired and pooled.in_flight == 0:
                self.schedule_close(pooled)

    async def renew_connection(self, connection_id: int | None = None) -> None:
        """Retire clients; each is closed once its requests in flight have finished."""
        retiring = [p for p in self.pool if connection_id is None or p.id == connection_id]
        for pooled in retiring:
            self.pool.remove(pooled)
            pooled.retired = True
            logger.info("retiring HTTP/2 client %d", pooled.id)
            if pooled.in_flight == 0:
                self.schedule_close(pooled)

    def schedule_close(self, pooled: PooledClient) -> None:
        if pooled.closed:
            return
        pooled.closed = True
        task = asyncio.get_running_loop().create_task(pooled.client.close())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def aclose(self) -> None:
        pool, self.pool = self.pool, []
        for pooled in pool:
            if not pooled.closed:
                pooled.closed = True
                await pooled.client.close()
        if self.closing:
            await asyncio.gather(*self.closing, return_exceptions=True)


class Http2TransportFactory:
    """Builds one `Http2Transport` per provider client, reading the CA file once."""

    def __init__(self, ca_file: Path | None = None, **options: object) -> None:
        self.options = Http2Options(ca_file=ca_file, **options)  # type: ignore[arg-type]
        self.ca_pem = read_ca_file(ca_file)

    def __call__(self) -> Transport:
        return Http2Transport(self.options, ca_pem=self.ca_pem)
