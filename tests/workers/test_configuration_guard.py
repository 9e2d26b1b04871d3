"""The configuration guard turns mass invalid-token replies into a credentials outcome."""

from __future__ import annotations

from workers.configuration_guard import apply_guard
from workers.providers.base import Outcome, SendResult

BAD = SendResult(Outcome.TOKEN_INVALID, reason="BadDeviceToken")
GONE = SendResult(Outcome.TOKEN_INVALID, reason="Unregistered")
OK = SendResult(Outcome.SENT)


def test_half_of_twenty_suspect_is_misconfigured() -> None:
    groups = ["app-1"] * 20
    results = [BAD] * 10 + [OK] * 10

    guarded, misconfigured = apply_guard(groups, results)

    assert misconfigured == {"app-1"}
    assert [r.outcome for r in guarded[:10]] == [Outcome.CREDENTIALS] * 10
    assert [r.outcome for r in guarded[10:]] == [Outcome.SENT] * 10


def test_fewer_than_twenty_sends_not_judged() -> None:
    guarded, misconfigured = apply_guard(["app-1"] * 19, [BAD] * 19)

    assert misconfigured == set()
    assert all(result.outcome is Outcome.TOKEN_INVALID for result in guarded)


def test_under_half_suspect_keeps_token_invalid() -> None:
    guarded, misconfigured = apply_guard(["app-1"] * 40, [BAD] * 19 + [OK] * 21)

    assert misconfigured == set()
    assert guarded[0].outcome is Outcome.TOKEN_INVALID


def test_unregistered_is_never_suspect() -> None:
    guarded, misconfigured = apply_guard(["app-1"] * 30, [GONE] * 30)

    assert misconfigured == set()
    assert all(result.outcome is Outcome.TOKEN_INVALID for result in guarded)


def test_groups_judged_separately() -> None:
    groups = ["production"] * 20 + ["development"] * 20
    results = [BAD] * 20 + [BAD] * 2 + [OK] * 18

    guarded, misconfigured = apply_guard(groups, results)

    assert misconfigured == {"production"}
    assert guarded[20].outcome is Outcome.TOKEN_INVALID
