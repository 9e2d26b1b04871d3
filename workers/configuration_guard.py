"""The configuration guard: many invalid-token replies at once mean a wrong configuration.

When at least half of at least 20 sends of one application (and APNs environment) in a
batch fail with a reason that also appears for a wrong environment, bundle id or FCM
project, the tokens are probably fine and the application's credentials are not. Those
results become `credentials`, which retries later and invalidates no device.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import replace

from workers.providers.base import Outcome, SendResult
from workers.providers.outcomes import CONFIGURATION_SUSPECT_REASONS

logger = logging.getLogger(__name__)

MIN_SENDS = 20
MIN_SHARE = 0.5


def apply_guard(
    groups: Sequence[Hashable], results: Sequence[SendResult]
) -> tuple[list[SendResult], set[Hashable]]:
    """Turn suspect results of misconfigured groups into credentials results.

    `groups[i]` names the application (and environment) of `results[i]`. Returns the
    new results and the groups judged misconfigured.
    """
    totals = Counter(groups)
    suspects = Counter(
        group for group, result in zip(groups, results, strict=True) if is_suspect(result)
    )
    misconfigured = {
        group
        for group, count in suspects.items()
        if totals[group] >= MIN_SENDS and count >= MIN_SHARE * totals[group]
    }
    if not misconfigured:
        return list(results), misconfigured

    guarded = [
        replace(result, outcome=Outcome.CREDENTIALS)
        if group in misconfigured and is_suspect(result)
        else result
        for group, result in zip(groups, results, strict=True)
    ]
    return guarded, misconfigured


def is_suspect(result: SendResult) -> bool:
    return (
        result.outcome is Outcome.TOKEN_INVALID and result.reason in CONFIGURATION_SUSPECT_REASONS
    )
