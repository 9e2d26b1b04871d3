"""Benchmark of a whole campaign: API, RabbitMQ, workers, PostgreSQL and the sandbox.

Each worker count gets a database and queue prefix of its own. The benchmark starts the
sandbox (counting accepted sends per token), `push-server api` and the workers as
processes, and creates the demo application with sandbox credentials through the admin API.
It inserts the devices with COPY straight into push_device, because device registration
through the API is not what is measured here. Then it creates a campaign with all their
users through the API and calls send/live. From that call until the campaign's state is
`completed` it records the finished rows (SENT or FAILED) from the database each second,
and samples the CPU time of every kind of process and the resident memory of the API and
the workers. A campaign whose rows are all finished but whose state stays `sending` for
30 s is reported with "completed": false and timed to its last finished row, and the
benchmark exits with status 1. Afterwards it checks that the sandbox accepted every device
exactly once or that the device's row failed with a reason.

The devices follow the demo's mix: 60% APNs, 35% FCM, 5% HMS, 1.5 devices per user, about
2% tokens that the sandbox rejects as unregistered or bad.

    python -m tests.benchmarks.campaign                        # 1,000,000 devices, 1 and 2 workers
    python -m tests.benchmarks.campaign --devices 200000 --workers 2
    python -m tests.benchmarks.campaign --smoke                # 5,000 devices, 1 worker

Ends with one JSON line of figures. The full run writes docs/benchmarks/campaign_rate.png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from demo.client import PushApi
from demo.data import DEVICES_PER_USER, DemoDevice, new_device
from demo.report import check_campaign
from demo.traffic import APP_ID, create_application, create_campaign
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
from workers.sandbox.control import SandboxProcess

SMOKE_DEVICES = 5_000
SEED = 20261204
SAMPLE_INTERVAL_S = 1.0
# Seconds a campaign may stay `sending` after its last row finished before the run counts
# as failed: the worker that records the last batch marks the campaign at once.
COMPLETION_GRACE_S = 30.0
PLOT_PATH = REPOSITORY / "docs" / "benchmarks" / "campaign_rate.png"

# One index-only scan over push_campaign_device_campaign_status_idx per sample.
PROGRESS = """
SELECT count(*) AS created, count(*) FILTER (WHERE status IN (1, -1)) AS finished
FROM push_campaign_device WHERE campaign_id = $1
"""

DEVICE_COLUMNS = [
    "app_id",
    "user_id",
    "platform",
    "push_token",
    "activation_id",
    "is_active",
    "environment",
]


class CampaignTimedOut(RuntimeError):
    """The campaign did not reach the state `completed` within the time limit."""


@dataclass
class RunProcesses:
    """The processes of one run; `api` first, then the workers."""

    sandbox: SandboxProcess
    api: ServerProcess
    workers: list[ServerProcess]

    def sandbox_pid(self) -> int:
        if self.sandbox.process is None:
            raise RuntimeError("the sandbox is not running")
        return self.sandbox.process.pid

    def stop(self) -> None:
        for process in [*self.workers, self.api]:
            process.stop()
        self.sandbox.stop()


def generate_devices(count: int, seed: int = SEED) -> list[DemoDevice]:
    """Exactly `count` devices with the demo's platform mix and devices per user."""
    rng = random.Random(seed)
    devices: list[DemoDevice] = []
    counts = [n for n, _ in DEVICES_PER_USER]
    weights = [w for _, w in DEVICES_PER_USER]
    number = 0
    while len(devices) < count:
        user_id = f"{number:08d}"
        for index in range(rng.choices(counts, weights)[0]):
            devices.append(new_device(rng, user_id, f"{user_id}-{index}"))
        number += 1
    return devices[:count]


async def insert_devices(pool: asyncpg.Pool, app_row_id: int, devices: list[DemoDevice]) -> float:
    """COPY the devices into push_device with their normalised tokens; return seconds."""
    started = time.perf_counter()
    records = (
        (
            app_row_id,
            device.user_id,
            device.platform,
            device.token,
            device.activation_id,
            device.active,
            device.environment,
        )
        for device in devices
    )
    async with pool.acquire() as connection:
        await connection.copy_records_to_table(
            "push_device", records=records, columns=DEVICE_COLUMNS
        )
        await connection.execute("ANALYZE push_device")
    return time.perf_counter() - started


async def start_processes(
    services: Services, workers: int, log_dir: Path
) -> tuple[RunProcesses, str, str]:
    """Start the sandbox, the API and the workers; return them, the API URL and key."""
    sandbox = SandboxProcess(state_dir=log_dir / "sandbox", extra_args=["--count-tokens"])
    await sandbox.astart()
    api_key, api_keys = new_api_key()
    port = free_port()
    environment = server_environment(services, api_keys, port, sandbox.urls)
    api = ServerProcess("api", ["api"], environment, log_dir / "api.log")
    worker_processes = [
        ServerProcess(f"worker-{n}", ["worker", "--metrics-port", "0"], environment,
                      log_dir / f"worker-{n}.log")
        for n in range(1, workers + 1)
    ]  # fmt: skip
    processes = RunProcesses(sandbox, api, worker_processes)
    try:
        for process in [api, *worker_processes]:
            process.start()
        base_url = f"http://127.0.0.1:{port}"
        await wait_until_ready(base_url, api)
        for worker in worker_processes:
            await worker.wait_for_log("worker started")
    except BaseException:
        processes.stop()
        raise
    return processes, base_url, api_key


async def follow(
    connection: asyncpg.Connection,
    campaign_id: int,
    devices: int,
    started: float,
    timeout_s: float,
) -> tuple[list[tuple[float, int, int]], bool]:
    """Sample (seconds, rows created, rows finished) each second until `completed`.

    Return the samples and whether the campaign reached `completed`. It returns False when
    all `devices` rows are finished but the state stays `sending` for COMPLETION_GRACE_S.
    """
    samples: list[tuple[float, int, int]] = [(0.0, 0, 0)]
    last_print = 0.0
    while True:
        await asyncio.sleep(SAMPLE_INTERVAL_S)
        # The state first: once it is `completed`, the count that follows includes every row.
        state = await connection.fetchval(
            "SELECT state FROM push_campaign WHERE id = $1", campaign_id
        )
        row = await connection.fetchrow(PROGRESS, campaign_id)
        elapsed = time.perf_counter() - started
        samples.append((round(elapsed, 3), row["created"], row["finished"]))
        if elapsed - last_print >= 10:
            print(f"  {elapsed:5.0f} s: {row['created']} rows, {row['finished']} finished",
                  flush=True)  # fmt: skip
            last_print = elapsed
        if state == "completed":
            return samples, True
        done_at = all_finished_seconds(samples, devices)
        if done_at is not None and elapsed - done_at > COMPLETION_GRACE_S:
            print(f"  campaign {campaign_id} is still {state!r} {elapsed - done_at:.0f} s"
                  " after its last row finished", flush=True)  # fmt: skip
            return samples, False
        if elapsed > timeout_s:
            raise CampaignTimedOut(
                f"campaign {campaign_id} is {state!r} after {elapsed:.0f} s:"
                f" {row['finished']} of {row['created']} rows finished"
            )


def rate_series(samples: list[tuple[float, int, int]]) -> list[tuple[float, float]]:
    """Finished rows per second between consecutive samples."""
    series = []
    for (time_a, _, done_a), (time_b, _, done_b) in itertools.pairwise(samples):
        if time_b > time_a:
            series.append((time_b, round((done_b - done_a) / (time_b - time_a), 1)))
    return series


async def measure(
    devices: list[DemoDevice], workers: int, log_dir: Path, timeout_s: float
) -> dict[str, Any]:
    """Run one campaign over all devices with `workers` worker processes."""
    services = await Services.create()
    processes: RunProcesses | None = None
    pool = await asyncpg.create_pool(services.database_url, min_size=1, max_size=2)
    try:
        processes, base_url, api_key = await start_processes(services, workers, log_dir)
        api = PushApi(base_url, api_key, connections=4)
        try:
            return await run_campaign(services, processes, api, pool, devices, timeout_s)
        finally:
            await api.close()
    finally:
        if processes is not None:
            processes.stop()
        await pool.close()
        await services.drop()


async def run_campaign(
    services: Services,
    processes: RunProcesses,
    api: PushApi,
    pool: asyncpg.Pool,
    devices: list[DemoDevice],
    timeout_s: float,
) -> dict[str, Any]:
    await create_application(api, processes.sandbox.admin)
    app_row_id = await pool.fetchval(
        "SELECT id FROM push_app_credentials WHERE app_id = $1", APP_ID
    )
    fill_seconds = await insert_devices(pool, app_row_id, devices)
    user_ids = sorted({device.user_id for device in devices})
    campaign_id = await create_campaign(api, user_ids)
    await processes.sandbox.admin.areset()
    print(f"  {len(devices)} devices inserted in {fill_seconds:.1f} s; campaign {campaign_id}"
          f" has {len(user_ids)} users", flush=True)  # fmt: skip

    async with pool.acquire() as progress:
        sampler = ResourceSampler(
            {
                "api": fixed_group([processes.api.pid]),
                "worker": fixed_group(worker.pid for worker in processes.workers),
                "sandbox": fixed_group([processes.sandbox_pid()]),
                **postgres_groups(services.database_url, services.database_name),
                "rabbitmq": rabbitmq_group(services.amqp_url),
            },
            excluded={progress.get_server_pid()},
        )
        sampler.start()
        started = time.perf_counter()
        await api.call("POST", f"/push/campaign/send/live/{campaign_id}")
        samples, completed = await follow(progress, campaign_id, len(devices), started, timeout_s)
        seconds = time.perf_counter() - started
        sampler.stop()
    finished_seconds = all_finished_seconds(samples, len(devices))
    if not completed and finished_seconds is not None:
        seconds = finished_seconds

    check = await check_campaign(pool, processes.sandbox.admin, campaign_id, len(devices))
    counters = await processes.sandbox.admin.acounters()
    finished = samples[-1][2]
    return {
        "workers": len(processes.workers),
        "devices": len(devices),
        "completed": completed,
        "seconds": round(seconds, 1),
        "rate": round(finished / seconds, 1),
        "all_finished_seconds": finished_seconds,
        "fill_seconds": round(fill_seconds, 1),
        "expansion_seconds": expansion_seconds(samples, len(devices)),
        **sampler.summary(finished),
        "peak_rss_mb": {
            "api": sampler.peak_rss_mb("api"),
            "worker": sampler.peak_rss_mb("worker"),
            "sandbox": sampler.peak_rss_mb("sandbox"),
        },
        "check": {
            "sent": check.sent,
            "failed": check.failed,
            "open": check.open,
            "lost": check.lost,
            "duplicates": check.duplicates,
            "unmarked_invalid": check.unmarked_invalid,
            "reasons": dict(check.reasons),
            "ok": check.ok and completed,
        },
        "sandbox_accepted": counters.get("accepted"),
        "rate_per_second": rate_series(samples),
    }


def all_finished_seconds(samples: list[tuple[float, int, int]], devices: int) -> float | None:
    """Seconds from send/live until every campaign row was SENT or FAILED, to the sample."""
    done = [at for at, created, finished in samples if created >= devices and finished >= created]
    return done[0] if done else None


def expansion_seconds(samples: list[tuple[float, int, int]], devices: int) -> float | None:
    """Seconds from send/live until the last campaign row existed, to the sampling second."""
    created_all = [at for at, created, _ in samples if created >= devices]
    return created_all[0] if created_all else None


def moving_mean(values: list[float], window: int) -> list[float]:
    """Mean of each value and the `window - 1` values before it."""
    means = []
    for index in range(len(values)):
        chunk = values[max(0, index - window + 1) : index + 1]
        means.append(sum(chunk) / len(chunk))
    return means


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 4.5))
    for result in results:
        times = [at for at, _ in result["rate_per_second"]]
        rates = [rate for _, rate in result["rate_per_second"]]
        label = (
            f"{result['workers']} worker{'s' if result['workers'] > 1 else ''}:"
            f" {result['seconds']:.0f} s, {result['rate']:.0f} msg/s overall"
        )
        # Rows finish in batches of 500, so single seconds jump; the line is a 5 s mean.
        (line,) = axes.plot(times, moving_mean(rates, 5), label=label)
        axes.plot(times, rates, color=line.get_color(), alpha=0.2, linewidth=0.8)
    axes.set_xlabel("seconds since send/live")
    axes.set_ylabel("finished rows per second (5 s mean; each second faint)")
    devices = results[0]["devices"]
    axes.set_title(f"Campaign of {devices:,} devices: messages finished per second")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.campaign",
        description="Measure a whole campaign through the API, RabbitMQ, workers and sandbox.",
    )
    parser.add_argument("--devices", type=int, default=1_000_000, help="devices in the campaign")
    parser.add_argument(
        "--workers", default="1,2", help="worker process counts to run, comma-separated"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a campaign may take")
    parser.add_argument(
        "--smoke", action="store_true", help=f"{SMOKE_DEVICES} devices with 1 worker, no plot"
    )
    parser.add_argument("--plot", type=Path, default=PLOT_PATH, help="where to write the PNG")
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="keep the logs of the API, workers and sandbox here (default: a temporary folder)",
    )
    return parser


async def run(arguments: argparse.Namespace) -> list[dict[str, Any]]:
    started = time.perf_counter()
    devices = generate_devices(arguments.devices)
    print(f"generated {len(devices)} devices in {time.perf_counter() - started:.1f} s",
          flush=True)  # fmt: skip
    results = []
    for workers in arguments.worker_counts:
        print(f"campaign of {len(devices)} devices with {workers} worker(s)", flush=True)
        if arguments.log_dir is not None:
            log_dir = arguments.log_dir / f"workers-{workers}"
            log_dir.mkdir(parents=True, exist_ok=True)
            results.append(await measure(devices, workers, log_dir, arguments.timeout))
        else:
            with tempfile.TemporaryDirectory(prefix="push-bench-campaign-") as folder:
                results.append(await measure(devices, workers, Path(folder), arguments.timeout))
        result = results[-1]
        print(
            f"  {result['seconds']} s, {result['rate']} msg/s; CPU s per 1,000:"
            f" {result['cpu_seconds_per_1000']}; lost {result['check']['lost']},"
            f" duplicates {result['check']['duplicates']}",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    stop_on_signals()
    if arguments.smoke:
        arguments.devices = SMOKE_DEVICES
        arguments.workers = "1"
    arguments.worker_counts = [int(part) for part in arguments.workers.split(",") if part]

    results = asyncio.run(run(arguments))
    if not arguments.smoke:
        plot(results, arguments.plot)
        print(f"wrote {arguments.plot}", flush=True)

    figures = {f"workers_{r['workers']}": {"rate": r["rate"], "seconds": r["seconds"]}
               for r in results}  # fmt: skip
    ok = all(result["check"]["ok"] for result in results)
    print(
        orjson.dumps(
            {"benchmark": "campaign", "cpus": os.cpu_count(), "ok": ok, **figures, "runs": results}
        ).decode(),
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
