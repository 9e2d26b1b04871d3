"""The next state of a row after each outcome: sent, failed, or pending again and when."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.db import FAILED, PENDING, SENT
from workers.claim import ClaimedRow, RowUpdate
from workers.providers.base import Outcome, SendResult

# When a 429 or a quota error carries no Retry-After, wait this long before the retry.
DEFAULT_THROTTLE_DELAY_S = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempt limit and delays, from the settings."""

    max_attempts: int = 8
    base_delay_s: float = 2.0
    max_delay_s: float = 3600.0
    credentials_delay_s: float = 60.0
    credentials_max_wait_s: float = 86_400.0

    def backoff_s(self, attempts: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter between half and the whole step."""
        step: float = min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, attempts - 1))
        return step * rng.uniform(0.5, 1.0)

    def update_for(
        self, row: ClaimedRow, result: SendResult, now: datetime, rng: random.Random
    ) -> RowUpdate:
        """Return the row's new state after `result`."""
        match result.outcome:
            case Outcome.SENT:
                return RowUpdate(row.id, SENT, provider_message_id=result.provider_message_id)
            case Outcome.TRANSIENT:
                return self.after_transient(row, result, now, rng)
            case Outcome.THROTTLED:
                delay = max(result.retry_after_s or 0.0, DEFAULT_THROTTLE_DELAY_S)
                return pending_again(row, result, now + timedelta(seconds=delay))
            case Outcome.CREDENTIALS:
                return self.after_credentials(row, result, now)
            case _:
                return RowUpdate(row.id, FAILED, reason=reason_of(result))

    def after_transient(
        self, row: ClaimedRow, result: SendResult, now: datetime, rng: random.Random
    ) -> RowUpdate:
        if row.attempts >= self.max_attempts:
            return RowUpdate(row.id, FAILED, reason=reason_of(result))
        delay = self.backoff_s(row.attempts, rng)
        return RowUpdate(
            row.id,
            PENDING,
            reason=reason_of(result),
            next_attempt_at=now + timedelta(seconds=delay),
        )

    def after_credentials(self, row: ClaimedRow, result: SendResult, now: datetime) -> RowUpdate:
        if now - row.timestamp_created >= timedelta(seconds=self.credentials_max_wait_s):
            return RowUpdate(row.id, FAILED, reason=reason_of(result))
        delay = max(result.retry_after_s or 0.0, self.credentials_delay_s)
        return pending_again(row, result, now + timedelta(seconds=delay))


def pending_again(row: ClaimedRow, result: SendResult, at: datetime) -> RowUpdate:
    """Back to PENDING without using up an attempt (throttling and credentials)."""
    return RowUpdate(
        row.id, PENDING, reason=reason_of(result), next_attempt_at=at, attempt_given_back=True
    )


def reason_of(result: SendResult) -> str:
    return result.reason or str(result.outcome)
