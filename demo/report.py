"""The demo's check: the database against what the sandbox accepted."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from workers.sandbox.control import SandboxAdmin

# The sandbox admin endpoint takes bodies of at most 1 MiB; FCM tokens are about 170 bytes.
TOKENS_PER_COUNT_REQUEST = 4_000

# Reasons that mean the token is dead; such devices must carry timestamp_token_invalidated.
TOKEN_INVALID_REASONS = frozenset(
    {"Unregistered", "BadDeviceToken", "UNREGISTERED", "INVALID_ARGUMENT", "80300007"}
)

CAMPAIGN_ROWS = """
SELECT cd.platform, cd.token, cd.status, cd.failure_reason,
       d.timestamp_token_invalidated IS NOT NULL AS invalidated
FROM push_campaign_device AS cd
LEFT JOIN push_device AS d ON d.id = cd.device_registration_id
WHERE cd.campaign_id = $1
"""

MESSAGE_ROWS = """
SELECT m.status, m.failure_reason, d.platform, d.push_token
FROM push_message AS m
LEFT JOIN push_device AS d ON d.id = m.device_registration_id
WHERE m.id = ANY($1::bigint[])
"""


@dataclass
class Check:
    """Counts of one delivery check; `ok` when nothing was lost or sent twice."""

    expected: int = 0
    sent: int = 0
    failed: int = 0
    open: int = 0
    lost: int = 0
    duplicates: int = 0
    unmarked_invalid: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.unmarked_invalid or self.open)


async def accepted_counts(
    sandbox: SandboxAdmin, tokens_by_provider: dict[str, list[str]]
) -> dict[tuple[str, str], int]:
    """Accepted sends per (provider, token), asked in chunks."""
    counts: dict[tuple[str, str], int] = {}
    for provider, tokens in tokens_by_provider.items():
        for start in range(0, len(tokens), TOKENS_PER_COUNT_REQUEST):
            chunk = tokens[start : start + TOKENS_PER_COUNT_REQUEST]
            answer = await asyncio.to_thread(sandbox.token_counts, provider, chunk)
            counts.update(((provider, token), count) for token, count in answer.items())
    return counts


async def check_campaign(
    pool: asyncpg.Pool, sandbox: SandboxAdmin, campaign_id: int, expected_devices: int
) -> Check:
    """Check that every campaign device was accepted exactly once or failed with a reason."""
    rows = await pool.fetch(CAMPAIGN_ROWS, campaign_id)
    tokens: dict[str, list[str]] = {}
    for row in rows:
        tokens.setdefault(row["platform"], []).append(row["token"])
    counts = await accepted_counts(sandbox, tokens)

    check = Check(expected=expected_devices)
    check.lost = max(0, expected_devices - len(rows))
    for row in rows:
        accepted = counts.get((row["platform"], row["token"]), 0)
        check.accepted[row["platform"]] += accepted
        check.duplicates += max(0, accepted - 1)
        tally_row(check, row["status"], row["failure_reason"], accepted, row["invalidated"])
    return check


def tally_row(
    check: Check, status: int, reason: str | None, accepted: int, invalidated: bool | None
) -> None:
    if status == 1:
        check.sent += 1
        if accepted == 0:
            check.lost += 1
    elif status == -1:
        check.failed += 1
        check.reasons[reason or "none"] += 1
        if not reason:
            check.lost += 1
        if reason in TOKEN_INVALID_REASONS and not invalidated:
            check.unmarked_invalid += 1
    else:
        check.open += 1


async def check_messages(
    pool: asyncpg.Pool, sandbox: SandboxAdmin, message_ids: Sequence[int]
) -> Check:
    """Check that each token was accepted as many times as it has SENT messages."""
    rows = await pool.fetch(MESSAGE_ROWS, list(message_ids))
    sent_per_token: Counter[tuple[str, str]] = Counter()
    check = Check(expected=len(message_ids))
    check.lost = max(0, len(message_ids) - len(rows))
    for row in rows:
        if row["status"] == 1:
            check.sent += 1
            sent_per_token[(row["platform"], row["push_token"])] += 1
        elif row["status"] == -1:
            check.failed += 1
            check.reasons[row["failure_reason"] or "none"] += 1
        else:
            check.open += 1

    tokens: dict[str, list[str]] = {}
    for platform, token in sent_per_token:
        tokens.setdefault(platform, []).append(token)
    counts = await accepted_counts(sandbox, tokens)
    for key, sent in sent_per_token.items():
        accepted = counts.get(key, 0)
        check.accepted[key[0]] += accepted
        check.duplicates += max(0, accepted - sent)
        check.lost += max(0, sent - accepted)
    return check


def describe(name: str, check: Check) -> list[str]:
    """Report lines of one check."""
    lines = [
        f"{name}: {check.expected} expected, {check.sent} sent, {check.failed} failed,"
        f" {check.open} still open",
        "  accepted by the sandbox: "
        + ", ".join(f"{provider} {count}" for provider, count in sorted(check.accepted.items())),
    ]
    if check.reasons:
        lines.append(
            "  failure reasons: "
            + ", ".join(f"{reason} {count}" for reason, count in check.reasons.most_common())
        )
    lines.append(
        f"  lost {check.lost}, duplicates {check.duplicates},"
        f" invalid tokens not marked on their device {check.unmarked_invalid}:"
        f" {'OK' if check.ok else 'FAILED'}"
    )
    return lines
