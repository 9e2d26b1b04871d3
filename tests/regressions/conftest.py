"""Fixtures of the regression tests, borrowed from the API and worker suites."""

from __future__ import annotations

from tests.api.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    api_settings,
    client,
    delete_dead_exchange,
    make_client,
)
from tests.workers.conftest import rows  # noqa: F401
