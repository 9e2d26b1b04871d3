"""Logging set-up shared by every process: one line per event, ids as key=value."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(level: str | None = None) -> None:
    """Send log lines to stderr at PUSH_LOG_LEVEL (INFO by default)."""
    chosen = (level or os.environ.get("PUSH_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=chosen,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # aio-pika and aiormq log every channel operation at INFO, which drowns our lines.
    logging.getLogger("aiormq").setLevel(max(logging.WARNING, logging.getLevelName(chosen)))
    logging.getLogger("aio_pika").setLevel(max(logging.WARNING, logging.getLevelName(chosen)))
