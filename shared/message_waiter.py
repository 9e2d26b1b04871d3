"""Waiting for push_message rows to reach SENT or FAILED, for SYNCHRONOUS sends.

Workers NOTIFY the MESSAGE_DONE_CHANNEL when rows finish; one LISTEN connection per
process wakes the waiting requests. Polling every PUSH_SEND_SYNC_POLL_S seconds covers a
lost notification or a dropped LISTEN connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import asyncpg
import orjson

from shared.db import FAILED, SENT

logger = logging.getLogger(__name__)

# PostgreSQL NOTIFY channel on which workers report finished push_message rows.
# Payload: the ids of rows that reached SENT or FAILED, as comma-separated decimals
# ("12,13,14"); a JSON array ("[12, 13, 14]") is accepted too. A payload must stay under
# PostgreSQL's 8000-byte limit, so workers send at most 380 ids per NOTIFY.
MESSAGE_DONE_CHANNEL = "push_message_done"

FINISHED_ROWS = """
SELECT id FROM push_message WHERE id = ANY($1::bigint[]) AND status IN (1, -1)
"""


def parse_payload(payload: str) -> list[int]:
    """Return the row ids of a notification payload; ignore what is not an id."""
    text = payload.strip()
    if text.startswith("["):
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError:
            return []
        return (
            [value for value in values if isinstance(value, int)]
            if isinstance(values, list)
            else []
        )
    return [int(part) for part in text.split(",") if part.strip().isdigit()]


class Waiting:
    """One request's open row ids and the event set when all of them finished."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.open = set(ids)
        self.event = asyncio.Event()

    def finish(self, ids: Sequence[int]) -> None:
        self.open.difference_update(ids)
        if not self.open:
            self.event.set()


class MessageWaiter:
    """Wakes SYNCHRONOUS senders when their rows finish."""

    def __init__(self, database_url: str, pool: asyncpg.Pool, poll_s: float) -> None:
        self.database_url = database_url
        self.pool = pool
        self.poll_s = poll_s
        self.connection: asyncpg.Connection | None = None
        self._waiting: dict[int, set[Waiting]] = {}

    async def start(self) -> None:
        """Open the LISTEN connection; without it, waiting falls back to polling."""
        try:
            self.connection = await asyncpg.connect(self.database_url)
            await self.connection.add_listener(MESSAGE_DONE_CHANNEL, self._on_notify)
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning(
                "LISTEN %s failed, SYNCHRONOUS sends poll: %r", MESSAGE_DONE_CHANNEL, error
            )
            self.connection = None

    async def close(self) -> None:
        if self.connection is not None and not self.connection.is_closed():
            await self.connection.close()

    async def wait(self, ids: Sequence[int], timeout_s: float) -> None:
        """Return when every row has finished or when timeout_s has passed."""
        waiting = Waiting(ids)
        if not waiting.open:
            return
        for row_id in waiting.open:
            self._waiting.setdefault(row_id, set()).add(waiting)
        try:
            await self._wait_until_done(waiting, time.monotonic() + timeout_s)
        finally:
            for row_id in ids:
                waiters = self._waiting.get(row_id)
                if waiters is not None:
                    waiters.discard(waiting)
                    if not waiters:
                        del self._waiting[row_id]

    async def _wait_until_done(self, waiting: Waiting, deadline: float) -> None:
        while waiting.open:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(waiting.event.wait(), min(self.poll_s, remaining))
            except TimeoutError:
                await self._poll(waiting)

    async def _poll(self, waiting: Waiting) -> None:
        try:
            rows = await self.pool.fetch(FINISHED_ROWS, list(waiting.open))
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("polling finished messages failed: %r", error)
            return
        waiting.finish([row["id"] for row in rows])

    def _on_notify(
        self, _connection: asyncpg.Connection, _pid: int, _channel: str, payload: str
    ) -> None:
        for row_id in parse_payload(payload):
            for waiting in list(self._waiting.get(row_id, ())):
                waiting.finish([row_id])


def count_statuses(statuses: Sequence[int]) -> dict[str, int]:
    """Return the original's counters for row statuses; unfinished rows count as pending."""
    sent = sum(1 for status in statuses if status == SENT)
    failed = sum(1 for status in statuses if status == FAILED)
    return {
        "sent": sent,
        "failed": failed,
        "pending": len(statuses) - sent - failed,
        "total": len(statuses),
    }
