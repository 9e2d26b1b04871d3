"""The row's next state after each outcome."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.db import FAILED, PENDING, SENT
from shared.message_body import MessageAttributes, Priority
from workers.claim import ClaimedRow, RowKind
from workers.providers.base import Outcome, SendResult
from workers.retry_policy import DEFAULT_THROTTLE_DELAY_S, RetryPolicy

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(
    max_attempts=3,
    base_delay_s=2.0,
    max_delay_s=60.0,
    credentials_delay_s=120.0,
    credentials_max_wait_s=3600.0,
)


def claimed_row(attempts: int = 1, created: datetime = NOW) -> ClaimedRow:
    return ClaimedRow(
        kind=RowKind.MESSAGE,
        id=7,
        app_row_id=1,
        attempts=attempts,
        timestamp_created=created,
        device_id=3,
        platform="apns",
        token="a" * 64,
        environment=None,
        token_invalidated=False,
        timestamp_last_registered=created,
        body={"body": "x"},
        attributes=MessageAttributes(),
        priority=Priority.HIGH,
    )


def update(result: SendResult, row: ClaimedRow | None = None):  # type: ignore[no-untyped-def]
    return POLICY.update_for(row or claimed_row(), result, NOW, random.Random(1))


def test_sent_keeps_provider_id() -> None:
    result = update(SendResult(Outcome.SENT, provider_message_id="id-1"))

    assert result.status == SENT
    assert result.provider_message_id == "id-1"


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.TOKEN_INVALID, "Unregistered"),
        (Outcome.MESSAGE_REJECTED, "PayloadTooLarge"),
        (Outcome.EXPIRED, "expired"),
    ],
)
def test_permanent_outcomes_fail_with_reason(outcome: Outcome, reason: str) -> None:
    result = update(SendResult(outcome, reason=reason))

    assert result.status == FAILED
    assert result.reason == reason


def test_transient_retries_with_backoff() -> None:
    first = update(SendResult(Outcome.TRANSIENT, reason="ServiceUnavailable"), claimed_row(1))
    second = update(SendResult(Outcome.TRANSIENT, reason="ServiceUnavailable"), claimed_row(2))

    assert first.status == PENDING
    assert first.attempt_given_back is False
    assert NOW + timedelta(seconds=1) <= first.next_attempt_at <= NOW + timedelta(seconds=2)
    assert NOW + timedelta(seconds=2) <= second.next_attempt_at <= NOW + timedelta(seconds=4)


def test_transient_fails_at_attempt_limit() -> None:
    result = update(SendResult(Outcome.TRANSIENT, reason="timeout"), claimed_row(attempts=3))

    assert result.status == FAILED
    assert result.reason == "timeout"


def test_backoff_capped_at_maximum() -> None:
    delays = [
        POLICY.backoff_s(attempts, random.Random(seed))
        for seed in range(20)
        for attempts in (10, 30)
    ]

    assert max(delays) <= 60.0


def test_throttled_waits_retry_after_and_keeps_attempt() -> None:
    result = update(SendResult(Outcome.THROTTLED, reason="TooManyRequests", retry_after_s=90))

    assert result.status == PENDING
    assert result.next_attempt_at == NOW + timedelta(seconds=90)
    assert result.attempt_given_back is True


def test_throttled_without_retry_after_uses_default() -> None:
    result = update(SendResult(Outcome.THROTTLED, reason="QUOTA_EXCEEDED"), claimed_row(attempts=3))

    assert result.status == PENDING
    assert result.next_attempt_at == NOW + timedelta(seconds=DEFAULT_THROTTLE_DELAY_S)


def test_credentials_retry_later_without_attempt() -> None:
    result = update(SendResult(Outcome.CREDENTIALS, reason="InvalidProviderToken"))

    assert result.status == PENDING
    assert result.next_attempt_at == NOW + timedelta(seconds=120)
    assert result.attempt_given_back is True


def test_credentials_fail_after_maximum_wait() -> None:
    old_row = claimed_row(created=NOW - timedelta(hours=2))

    result = update(SendResult(Outcome.CREDENTIALS, reason="InvalidProviderToken"), old_row)

    assert result.status == FAILED
    assert result.reason == "InvalidProviderToken"
