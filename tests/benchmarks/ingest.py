"""Benchmark of the REST API's ingest: single sends and 500-message batch sends.

Builds a database and queue prefix of its own, starts one `push-server api` process with
the default settings and registers one device of one user through the API. Then a load
generator in another process sends for a fixed time:

- single sends, ASYNCHRONOUS mode, to that user from `--clients` concurrent connections,
  so each request writes one push_message row and publishes its id to RabbitMQ;
- batch sends of 500 such messages per request from `--batch-clients` connections.

No worker runs, so the rows stay PENDING. The generator is wrk (Debian package `wrk`)
when it is installed, otherwise an aiohttp client in a separate process, which needs
far more CPU per request than wrk and so competes with the API on a small machine. The
JSON line names the generator that ran. CPU seconds per 1,000 messages (one message per
single send, 500 per batch) are given for the API, PostgreSQL (the benchmark database's
backends and the shared background processes), RabbitMQ and the generator.

    python -m tests.benchmarks.ingest            # 20 s of each, 64 and 8 connections
    python -m tests.benchmarks.ingest --smoke    # 3 s of each, no plot

The full run writes docs/benchmarks/ingest_latency.png, the single-send latency CDF.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.benchmarks.amqp_load import measure_amqp
from tests.benchmarks.common import (
    REPOSITORY,
    ResourceSampler,
    ServerProcess,
    Services,
    fixed_group,
    free_port,
    new_api_key,
    postgres_groups,
    rabbitmq_group,
    server_environment,
    stop_on_signals,
    wait_until_ready,
)

APP_ID = "benchmark-app"
USER_ID = "user-1"
BATCH_SIZE = 500
WARM_UP_S = 2
PLOT_PATH = REPOSITORY / "docs" / "benchmarks" / "ingest_latency.png"

# Percentiles that wrk's done() callback prints, enough points for a smooth CDF.
WRK_PERCENTILES = [
    *range(1, 100),
    99.5, 99.9, 99.95, 99.99,
]  # fmt: skip

WRK_SCRIPT = """
local body_file = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

local percentiles = {{{percentiles}}}

done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {{"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,'
    .. '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"max_us":%d,"percentiles":[',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, latency.max))
  for index, p in ipairs(percentiles) do
    if index > 1 then io.write(",") end
    io.write(string.format("[%g,%d]", p, latency:percentile(p)))
  end
  io.write("]}}\\n")
end
"""


class LoadFailed(RuntimeError):
    """The load generator failed, or some of its requests failed."""


@dataclass
class Target:
    """What the generator sends: URL, request body and the API key."""

    url: str
    body: bytes
    api_key: str


@dataclass
class LoadResult:
    """Completed requests, errors and latency percentiles (ms) of one generator run."""

    requests: int
    errors: int
    seconds: float
    percentiles: list[tuple[float, float]]

    def percentile(self, level: float) -> float:
        """Return the latency (ms) of the recorded percentile closest to `level`."""
        return min(self.percentiles, key=lambda item: abs(item[0] - level))[1]


# ---------------------------------------------------------------------------
# wrk


def run_wrk(target: Target, clients: int, duration_s: int, folder: Path) -> LoadResult:
    body_path = folder / "body.json"
    body_path.write_bytes(target.body)
    script = folder / "ingest.lua"
    script.write_text(
        WRK_SCRIPT.format(
            body=body_path,
            key=target.api_key,
            percentiles=", ".join(str(p) for p in WRK_PERCENTILES),
        )
    )
    command = [
        "wrk", "-t", "1", "-c", str(clients), "-d", f"{duration_s}s", "--timeout", "10s",
        "-s", str(script), target.url,
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise LoadFailed(f"wrk exited with {completed.returncode}: {completed.stderr}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("WRK_JSON ")]
    if not lines:
        raise LoadFailed(f"wrk printed no summary:\n{completed.stdout}\n{completed.stderr}")
    summary = orjson.loads(lines[-1].removeprefix("WRK_JSON "))
    errors = sum(value for name, value in summary.items() if name.startswith("errors_"))
    return LoadResult(
        requests=summary["requests"],
        errors=errors,
        seconds=summary["duration_us"] / 1e6,
        percentiles=[(p, value / 1000) for p, value in summary["percentiles"]],
    )


# ---------------------------------------------------------------------------
# asyncio client in a child process


async def drive(target: Target, clients: int, duration_s: float) -> dict[str, Any]:
    """Send from `clients` connections for `duration_s`; return latencies in ms."""
    headers = {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        started = time.perf_counter()
        deadline = started + duration_s

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    async with session.post(target.url, data=target.body) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - sent) * 1000)
                else:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "seconds": seconds}


def drive_in_child(
    target: Target, clients: int, duration_s: float, results: multiprocessing.Queue[Any]
) -> None:
    import uvloop

    results.put(uvloop.run(drive(target, clients, duration_s)))


def run_asyncio_client(target: Target, clients: int, duration_s: int) -> LoadResult:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    child = context.Process(target=drive_in_child, args=(target, clients, duration_s, results))
    child.start()
    outcome = results.get(timeout=duration_s + 120)
    child.join()
    latencies = sorted(outcome["latencies"])
    if not latencies:
        raise LoadFailed(f"no request succeeded; {outcome['errors']} failed")
    percentiles = [
        (p, latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))])
        for p in WRK_PERCENTILES
    ]
    return LoadResult(len(latencies), outcome["errors"], outcome["seconds"], percentiles)


# ---------------------------------------------------------------------------
# Measurement


async def prepare(base_url: str, api_key: str) -> None:
    """Create the application and one device of the user the sends go to."""
    device = {
        "appId": APP_ID,
        "token": "ab" * 32,
        "platform": "apns",
        "activationId": "activation-1",
        "activationStatus": "ACTIVE",
        "userId": USER_ID,
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(base_url, headers=headers) as session:
        steps = (("/admin/app/create", {"appId": APP_ID}), ("/push/device/create", device))
        for path, body in steps:
            async with session.post(path, json={"requestObject": body}) as response:
                if response.status != 200:
                    raise LoadFailed(f"{path} returned {response.status}: {await response.text()}")


def request_bodies() -> tuple[bytes, bytes]:
    message = {"userId": USER_ID, "body": {"title": "Hello", "body": "A benchmark message"}}
    single = {"appId": APP_ID, "mode": "ASYNCHRONOUS", "message": message}
    batch = {"appId": APP_ID, "mode": "ASYNCHRONOUS", "batch": [message] * BATCH_SIZE}
    return orjson.dumps({"requestObject": single}), orjson.dumps({"requestObject": batch})


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    """One timed load: which generator, how many connections, for how long."""

    name: str
    target: Target
    clients: int
    duration_s: int
    generator: str
    messages_per_request: int = 1


async def run_phase(
    phase: Phase, sampler_groups: dict[str, Any], folder: Path
) -> tuple[LoadResult, dict[str, Any]]:
    """Run the generator once with CPU sampling; return its result and the CPU figures."""
    sampler = ResourceSampler(sampler_groups)
    generator_cpu_before = children_cpu_s()
    sampler.start()
    if phase.generator == "wrk":
        result = await asyncio.to_thread(
            run_wrk, phase.target, phase.clients, phase.duration_s, folder
        )
    else:
        result = await asyncio.to_thread(
            run_asyncio_client, phase.target, phase.clients, phase.duration_s
        )
    sampler.stop()
    messages = result.requests * phase.messages_per_request
    summary = sampler.summary(messages)
    generator_cpu = children_cpu_s() - generator_cpu_before
    summary["cpu_seconds"]["generator"] = round(generator_cpu, 2)
    summary["cpu_seconds_per_1000"]["generator"] = round(generator_cpu * 1000 / messages, 4)
    summary["cores_busy"]["generator"] = round(generator_cpu / result.seconds, 2)
    if result.errors:
        raise LoadFailed(f"{phase.name}: {result.errors} of {result.requests} requests failed")
    return result, summary


def describe(phase: Phase, result: LoadResult, cpu: dict[str, Any], rows: int) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "generator": phase.generator,
        "clients": phase.clients,
        "seconds": round(result.seconds, 2),
        "requests": result.requests,
        "rows_written": rows,
        "requests_per_second": round(result.requests / result.seconds, 1),
        "p50_ms": round(result.percentile(50), 2),
        "p90_ms": round(result.percentile(90), 2),
        "p99_ms": round(result.percentile(99), 2),
        **cpu,
    }
    if phase.messages_per_request > 1:
        figures["messages_per_second"] = round(
            result.requests * phase.messages_per_request / result.seconds
        )
    return figures


async def measure(arguments: argparse.Namespace, folder: Path) -> dict[str, Any]:
    services = await Services.create()
    api_key, api_keys = new_api_key()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    environment = server_environment(services, api_keys, port)
    api = ServerProcess("api", ["api"], environment, folder / "api.log")
    try:
        api.start()
        await wait_until_ready(base_url, api)
        await prepare(base_url, api_key)
        figures = await run_phases(arguments, services, api, base_url, api_key, folder)
        single_body, batch_body = request_bodies()
        figures.update(
            await measure_amqp(
                services, environment, folder, single_body, batch_body, BATCH_SIZE, arguments.smoke
            )
        )
        return figures
    except BaseException:
        print(f"API log:\n{api.log_tail()}", file=sys.stderr)
        raise
    finally:
        api.stop()
        await services.drop()


async def run_phases(
    arguments: argparse.Namespace,
    services: Services,
    api: ServerProcess,
    base_url: str,
    api_key: str,
    folder: Path,
) -> dict[str, Any]:
    import asyncpg

    single_body, batch_body = request_bodies()
    single = Target(f"{base_url}/push/message/send", single_body, api_key)
    batch = Target(f"{base_url}/push/message/batch/send", batch_body, api_key)
    generator = arguments.generator
    phases = [
        Phase("warm-up", single, arguments.clients, WARM_UP_S, generator),
        Phase("single", single, arguments.clients, arguments.duration, generator),
        Phase("batch", batch, arguments.batch_clients, arguments.duration, generator, BATCH_SIZE),
    ]
    groups = {
        "api": fixed_group([api.pid]),
        **postgres_groups(services.database_url, services.database_name),
        "rabbitmq": rabbitmq_group(services.amqp_url),
    }
    connection = await asyncpg.connect(services.database_url)
    figures: dict[str, Any] = {}
    latencies: list[tuple[float, float]] = []
    try:
        for phase in phases:
            rows_before = await connection.fetchval("SELECT count(*) FROM push_message")
            result, cpu = await run_phase(phase, groups, folder)
            rows = await connection.fetchval("SELECT count(*) FROM push_message") - rows_before
            if phase.name == "warm-up":
                continue
            figures[phase.name] = describe(phase, result, cpu, rows)
            print(f"{phase.name}: {figures[phase.name]}", flush=True)
            if phase.name == "single":
                latencies = result.percentiles
    finally:
        await connection.close()
    figures["single_latency_percentiles_ms"] = [[p, round(ms, 3)] for p, ms in latencies]
    return figures


def plot(figures: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import ScalarFormatter

    single = figures["single"]
    points = figures["single_latency_percentiles_ms"]
    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    axes.plot([ms for _, ms in points], [p for p, _ in points], marker=".", markersize=3)
    axes.axvline(25, color="grey", linestyle="--", label="target p99: 25 ms")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_xticks([tick for tick in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
                     if points[0][1] / 2 <= tick <= points[-1][1] * 2])  # fmt: skip
    axes.set_xlabel("request latency, ms (log scale)")
    axes.set_ylabel("percentile")
    axes.set_title(
        f"Single ASYNCHRONOUS sends, one API process, {single['clients']} connections"
        f" ({single['generator']}):\n{single['requests_per_second']:.0f} requests/s,"
        f" p50 {single['p50_ms']} ms, p99 {single['p99_ms']} ms"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.ingest",
        description="Measure single and batch sends per second on one API process.",
    )
    parser.add_argument("--clients", type=int, default=64, help="connections for single sends")
    parser.add_argument("--batch-clients", type=int, default=8, help="connections for batches")
    parser.add_argument("--duration", type=int, default=20, help="seconds of each load")
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "asyncio"],
        default="auto",
        help="load generator; auto picks wrk when it is installed",
    )
    parser.add_argument("--smoke", action="store_true", help="3 s of each load, no plot")
    parser.add_argument("--plot", type=Path, default=PLOT_PATH, help="where to write the PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    stop_on_signals()
    if arguments.smoke:
        arguments.duration = 3
    if arguments.generator == "auto":
        arguments.generator = "wrk" if shutil.which("wrk") else "asyncio"
    elif arguments.generator == "wrk" and shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk, or use --generator asyncio")

    with tempfile.TemporaryDirectory(prefix="push-bench-ingest-") as folder:
        figures = asyncio.run(measure(arguments, Path(folder)))
    if not arguments.smoke:
        plot(figures, arguments.plot)
        print(f"wrote {arguments.plot}", flush=True)
    print(
        orjson.dumps(
            {
                "benchmark": "ingest",
                "cpus": os.cpu_count(),
                "generator": arguments.generator,
                "requests_per_second": figures["single"]["requests_per_second"],
                "p50_ms": figures["single"]["p50_ms"],
                "p99_ms": figures["single"]["p99_ms"],
                "batch_messages_per_second": figures["batch"]["messages_per_second"],
                **figures,
            }
        ).decode(),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
