"""Harness shared by the benchmarks that run the server as processes.

A benchmark gets a database of its own on the local PostgreSQL (`deploy/local/services
start` writes its URL to .run/env), a queue prefix of its own on the local RabbitMQ, and
`push-server` child processes pointed at both. `ResourceSampler` records CPU time and peak
resident memory per kind of process (API, worker, PostgreSQL, RabbitMQ, sandbox) while a
measurement runs, with psutil.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import asyncpg
import psutil

from shared.migrations import migrate
from shared.queue import QueueNames
from tests.conftest import read_env_file, with_database
from workers.sandbox.control import SandboxUrls

REPOSITORY = Path(__file__).resolve().parents[2]

# Background processes of a PostgreSQL server; they serve every database of the server.
POSTGRES_BACKGROUND = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
)


class ProcessStartFailed(RuntimeError):
    """A child process exited or stayed silent before it was ready."""


def setting(name: str) -> str:
    """Read a PUSH_ variable from the environment or from .run/env."""
    value = os.environ.get(name) or read_env_file().get(name)
    if not value:
        sys.exit(f"{name} is not set: run deploy/local/services start first")
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def new_api_key() -> tuple[str, str]:
    """Return a fresh admin API key and the PUSH_API_KEYS entry that accepts it."""
    key = "benchmark-" + uuid.uuid4().hex
    digest = hashlib.sha256(key.encode()).hexdigest()
    return key, f"benchmark:admin:{digest}"


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGINT into KeyboardInterrupt, so that the cleanup code runs.

    Python ends at SIGTERM without running `finally` blocks, and a background job of a
    non-interactive shell starts with SIGINT ignored. Either way the child processes and
    the benchmark's database would be left behind.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


# ---------------------------------------------------------------------------
# Database and queues


@dataclass
class Services:
    """The benchmark's database and queue prefix on the local PostgreSQL and RabbitMQ."""

    base_database_url: str
    amqp_url: str
    database_name: str
    prefix: str

    @property
    def database_url(self) -> str:
        return with_database(self.base_database_url, self.database_name)

    @classmethod
    async def create(cls) -> Services:
        """Create and migrate a database named push_bench_<random>, pick a queue prefix."""
        services = cls(
            base_database_url=setting("PUSH_DATABASE_URL"),
            amqp_url=setting("PUSH_AMQP_URL"),
            database_name=f"push_bench_{uuid.uuid4().hex[:10]}",
            prefix=f"bench.{uuid.uuid4().hex[:10]}",
        )
        admin = await asyncpg.connect(services.base_database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{services.database_name}"')
        finally:
            await admin.close()
        connection = await asyncpg.connect(services.database_url)
        try:
            await migrate(connection)
        finally:
            await connection.close()
        return services

    async def drop(self) -> None:
        """Delete the queues and exchanges of the prefix and drop the database.

        The database is dropped even when RabbitMQ cannot be reached.
        """
        try:
            await self.delete_queues()
        finally:
            admin = await asyncpg.connect(self.base_database_url)
            try:
                await drop_database(admin, self.database_name)
            finally:
                await admin.close()

    async def delete_queues(self) -> None:
        names = QueueNames(self.prefix)
        connection = await connect_broker(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for queue in (names.delivery, names.campaign, names.ingest, names.dead):
                await channel.queue_delete(queue)
            for exchange in (names.ingest_exchange, names.dead_exchange):
                await channel.exchange_delete(exchange)


async def connect_broker(amqp_url: str, timeout_s: float = 60.0) -> aio_pika.abc.AbstractConnection:
    """Connect to RabbitMQ, retrying while the node is down.

    Other test runs on the same node restart it on purpose (the broker restart test), so a
    refused connection for a few seconds is expected on a shared machine.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await aio_pika.connect(amqp_url)
        except aio_pika.exceptions.AMQPConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def drop_database(admin: asyncpg.Connection, name: str, attempts: int = 30) -> None:
    """Drop the database, retrying while an autovacuum worker is still connected to it.

    WITH (FORCE) cannot end an autovacuum worker unless the role may signal superuser
    processes, so a drop right after heavy writes can fail a few times.
    """
    for attempt in range(attempts):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0)


def server_environment(
    services: Services,
    api_keys: str,
    api_port: int,
    sandbox: SandboxUrls | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a `push-server` child: the benchmark's database, queues and keys."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PUSH_")}
    environment.update(
        {
            "PUSH_DATABASE_URL": services.database_url,
            "PUSH_AMQP_URL": services.amqp_url,
            "PUSH_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "PUSH_MASTER_KEY_ID": "bench",
            "PUSH_QUEUE_PREFIX": services.prefix,
            "PUSH_API_KEYS": api_keys,
            "PUSH_API_PORT": str(api_port),
            "PUSH_WORKER_METRICS_PORT": "0",
        }
    )
    if sandbox is not None:
        environment.update(
            {
                "PUSH_APNS_PRODUCTION_URL": sandbox.apns_url,
                "PUSH_APNS_DEVELOPMENT_URL": sandbox.apns_development_url,
                "PUSH_FCM_URL": sandbox.fcm_url,
                "PUSH_FCM_TOKEN_URL": sandbox.fcm_token_url,
                "PUSH_HMS_URL": sandbox.hms_url,
                "PUSH_HMS_TOKEN_URL": sandbox.hms_token_url,
                "PUSH_CA_FILE": str(sandbox.ca_file),
            }
        )
    environment.update({f"PUSH_{name.upper()}": value for name, value in extra.items()})
    return environment


# ---------------------------------------------------------------------------
# Child processes


@dataclass
class ServerProcess:
    """One `push-server` child process (api, worker) with its output in a log file."""

    name: str
    arguments: list[str]
    environment: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", *self.arguments],
                env=self.environment,
                cwd=REPOSITORY,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running; call start() first")
        return self.process.pid

    def check_running(self) -> None:
        """Raise ProcessStartFailed with the log's tail when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise ProcessStartFailed(
                f"{self.name} exited with status {self.process.returncode}; log:\n{self.log_tail()}"
            )

    async def wait_for_log(self, text: str, timeout_s: float = 30.0) -> None:
        """Wait until the log contains `text`, e.g. the worker's start line."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log_path.read_text(errors="replace"):
            self.check_running()
            if time.monotonic() > deadline:
                raise ProcessStartFailed(
                    f"{self.name} did not log {text!r} within {timeout_s} s; log:\n"
                    + self.log_tail()
                )
            await asyncio.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Send SIGTERM, then SIGKILL after `timeout_s`."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, characters: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-characters:]


async def wait_until_ready(base_url: str, api: ServerProcess, timeout_s: float = 30.0) -> None:
    """Wait until GET /health/ready on the API returns 200."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            api.check_running()
            try:
                async with session.get(f"{base_url}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise ProcessStartFailed(
        f"the API at {base_url} was not ready within {timeout_s} s; log:\n{api.log_tail()}"
    )


# ---------------------------------------------------------------------------
# Finding the services' processes


def listening_pid(port: int) -> int:
    """Return the pid of the process listening on 127.0.0.1:`port` (needs root for others)."""
    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid is not None
        ):
            return connection.pid
    raise LookupError(f"no process with a visible pid listens on port {port}; run as root")


def url_port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"URL {url!r} has no port")
    return port


def postgres_groups(database_url: str, database_name: str) -> dict[str, Callable[[], list[int]]]:
    """Process finders for the PostgreSQL server behind `database_url`.

    `postgres` is the backends connected to the benchmark's database and its autovacuum
    workers. `postgres_background` is the WAL writer, checkpointer and the other shared
    processes, which also serve every other database of the server.
    """
    postmaster = psutil.Process(listening_pid(url_port(database_url)))

    def children() -> list[psutil.Process]:
        try:
            return postmaster.children()
        except psutil.NoSuchProcess:
            return []

    def title(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return ""

    def backends() -> list[int]:
        marker = f" {database_name} "
        return [child.pid for child in children() if marker in title(child) + " "]

    def background() -> list[int]:
        shared = [
            child.pid
            for child in children()
            if any(title(child).startswith(f"postgres: {kind}") for kind in POSTGRES_BACKGROUND)
        ]
        return [postmaster.pid, *shared]

    return {"postgres": backends, "postgres_background": background}


def rabbitmq_group(amqp_url: str) -> Callable[[], list[int]]:
    """Process finder for the RabbitMQ node (beam.smp) that listens on the AMQP port."""
    pid = listening_pid(url_port(amqp_url))
    return lambda: [pid]


def fixed_group(pids: Iterable[int]) -> Callable[[], list[int]]:
    chosen = list(pids)
    return lambda: chosen


# ---------------------------------------------------------------------------
# CPU and memory sampling


@dataclass
class ProcessRecord:
    """CPU seconds of one process at its first and latest sample, and its peak RSS."""

    group: str
    first_cpu_s: float
    last_cpu_s: float
    peak_rss_bytes: int


@dataclass
class ResourceSampler:
    """Samples CPU time and RSS of process groups every `interval_s` in a thread.

    CPU time of a group is the sum, over its processes, of user plus system time used
    between `start()` and `stop()`. A process that appears later counts from zero. A process
    that exits counts up to its last sample, so up to `interval_s` of its time is missed.
    `excluded` pids are skipped, e.g. the backend of the benchmark's own progress queries.
    """

    groups: dict[str, Callable[[], list[int]]]
    interval_s: float = 0.5
    excluded: set[int] = field(default_factory=set)
    records: dict[tuple[int, float], ProcessRecord] = field(default_factory=dict)
    started_at: float = 0.0
    stopped_at: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.sample(baseline=True)
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample(baseline=False)
        self.stopped_at = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample(baseline=False)

    def sample(self, baseline: bool) -> None:
        for group, finder in self.groups.items():
            for pid in finder():
                if pid not in self.excluded:
                    self.sample_process(group, pid, baseline)

    def sample_process(self, group: str, pid: int, baseline: bool) -> None:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                key = (pid, process.create_time())
                times = process.cpu_times()
                rss = process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        cpu_s = times.user + times.system
        record = self.records.get(key)
        if record is None:
            first = cpu_s if baseline else 0.0
            self.records[key] = ProcessRecord(group, first, cpu_s, rss)
            return
        record.last_cpu_s = cpu_s
        record.peak_rss_bytes = max(record.peak_rss_bytes, rss)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per group used during the measurement."""
        totals = dict.fromkeys(self.groups, 0.0)
        for record in self.records.values():
            totals[record.group] += record.last_cpu_s - record.first_cpu_s
        return totals

    def peak_rss_mb(self, group: str) -> list[float]:
        """Peak resident memory of each process of the group, in MiB."""
        return [
            round(record.peak_rss_bytes / 2**20, 1)
            for record in self.records.values()
            if record.group == group
        ]

    def summary(self, messages: int) -> dict[str, Any]:
        """CPU seconds per group, per 1,000 messages, and as cores busy on average."""
        seconds = max(self.stopped_at - self.started_at, 1e-9)
        cpu = self.cpu_seconds()
        return {
            "cpu_seconds": {group: round(value, 2) for group, value in cpu.items()},
            "cpu_seconds_per_1000": {
                group: round(value * 1000 / messages, 4) if messages else None
                for group, value in cpu.items()
            },
            "cores_busy": {group: round(value / seconds, 2) for group, value in cpu.items()},
        }
