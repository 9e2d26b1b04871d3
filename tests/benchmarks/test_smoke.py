"""Each benchmark's --smoke run: it exits 0 and ends with one JSON object of figures.

This checks the harness (databases, processes, load generators, sampling), not speed: the
figures of a smoke run are too short to mean anything. The benchmarks need the local
PostgreSQL and RabbitMQ, as the rest of the suite does.
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.benchmarks.common import REPOSITORY
from tests.conftest import service_url

BENCHMARKS = ["expansion", "transport", "campaign", "ingest"]

# A smoke run takes 10 to 30 s on a 2-core machine; the limit leaves room for a busy one.
SMOKE_TIMEOUT_S = 240


@pytest.fixture(scope="module", autouse=True)
def services() -> None:
    service_url("PUSH_DATABASE_URL")
    service_url("PUSH_AMQP_URL")


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_smoke_run_prints_figures(name: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", f"tests.benchmarks.{name}", "--smoke"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )

    output = f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-3000:]}"
    assert completed.returncode == 0, output
    lines = completed.stdout.strip().splitlines()
    assert lines, output
    figures = orjson.loads(lines[-1])
    assert isinstance(figures, dict), output
    assert figures, output
