"""Claiming rows for delivery and recording their outcomes, one statement per batch.

A claim moves due PENDING rows (and SENDING rows whose lease expired) to SENDING until
`lease_expires_at`. Two workers can never hold the same row within one lease, because the
status is re-checked under the row lock. The claim skips rows that another transaction has
locked (another claim, the sweeper): waiting for them could deadlock, and a locked row is
being handled already.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.message_body import MessageAttributes, MessageBody, Priority


class RowKind(enum.StrEnum):
    """The table of a delivery row; also the `kind` of a delivery queue message."""

    MESSAGE = "message"
    CAMPAIGN_DEVICE = "campaign_device"


@dataclass(slots=True)
class ClaimedRow:
    """One claimed row with what its delivery needs from the device and the message."""

    kind: RowKind
    id: int
    app_row_id: int
    attempts: int
    timestamp_created: datetime
    device_id: int | None
    platform: str | None
    token: str | None
    environment: str | None
    token_invalidated: bool
    timestamp_last_registered: datetime | None
    body: dict[str, Any]
    attributes: MessageAttributes
    priority: Priority
    campaign_id: int | None = None
    campaign_state: str | None = None
    timestamp_queued: datetime | None = None

    def message_body(self) -> MessageBody:
        return MessageBody.model_validate(self.body)

    @property
    def log_id(self) -> str:
        """The id that log lines carry: message 12 or campaign 3 device 45."""
        if self.kind is RowKind.MESSAGE:
            return f"message={self.id}"
        return f"campaign={self.campaign_id} campaign_device={self.id}"


# The claim of either table: lock the due rows (skipping locked ones), move them to
# SENDING, and return them with their device. `{columns}` are the table's own columns to
# return, `{campaign}` the extra join of campaign devices.
CLAIM_TEMPLATE = """
WITH picked AS (
    SELECT id FROM {table}
    WHERE id = ANY($1::bigint[])
      AND (status = 0 AND next_attempt_at <= now() OR status = 2 AND lease_expires_at < now())
    ORDER BY id
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {table} AS t
    SET status = 2, lease_expires_at = now() + make_interval(secs => $2), attempts = t.attempts + 1
    FROM picked
    WHERE t.id = picked.id
    RETURNING t.id, t.attempts, t.timestamp_created, t.device_registration_id, t.timestamp_queued,
              {columns}
)
SELECT c.*, d.platform, d.push_token, d.environment, d.timestamp_last_registered,
       d.timestamp_token_invalidated IS NOT NULL AS token_invalidated{campaign_columns}
FROM claimed AS c
{campaign_join}LEFT JOIN push_device AS d ON d.id = c.device_registration_id
"""

CLAIM_MESSAGES = CLAIM_TEMPLATE.format(
    table="push_message",
    columns="t.app_id, t.silent, t.personal, t.priority, t.message_body",
    campaign_columns="",
    campaign_join="",
)

CLAIM_CAMPAIGN_DEVICES = CLAIM_TEMPLATE.format(
    table="push_campaign_device",
    columns="t.campaign_id",
    campaign_columns=", p.app_id, p.state",
    campaign_join="JOIN push_campaign AS p ON p.id = c.campaign_id\n",
)

# The message of each campaign in a batch, read once instead of once per row.
CAMPAIGN_MESSAGES = """
SELECT id, message, attributes, priority FROM push_campaign WHERE id = ANY($1::bigint[])
"""


@dataclass(frozen=True, slots=True)
class CampaignMessage:
    """The message that every device of one campaign receives."""

    body: dict[str, Any]
    attributes: MessageAttributes
    priority: Priority


async def claim(
    connection: asyncpg.Connection | asyncpg.Pool, kind: RowKind, ids: Sequence[int], lease_s: float
) -> list[ClaimedRow]:
    """Claim the due rows among `ids`; rows not due or held by another worker are skipped."""
    if kind is RowKind.MESSAGE:
        records = await connection.fetch(CLAIM_MESSAGES, list(ids), lease_s)
        return [message_row(record) for record in records]

    records = await connection.fetch(CLAIM_CAMPAIGN_DEVICES, list(ids), lease_s)
    if not records:
        return []
    campaign_ids = list({record["campaign_id"] for record in records})
    messages = {
        row["id"]: CampaignMessage(
            row["message"],
            MessageAttributes.model_validate(row["attributes"] or {}),
            Priority(row["priority"]),
        )
        for row in await connection.fetch(CAMPAIGN_MESSAGES, campaign_ids)
    }
    return [campaign_device_row(record, messages[record["campaign_id"]]) for record in records]


def message_row(record: asyncpg.Record) -> ClaimedRow:
    return ClaimedRow(
        kind=RowKind.MESSAGE,
        id=record["id"],
        app_row_id=record["app_id"],
        attempts=record["attempts"],
        timestamp_created=record["timestamp_created"],
        device_id=record["device_registration_id"],
        platform=record["platform"],
        token=record["push_token"],
        environment=record["environment"],
        token_invalidated=bool(record["token_invalidated"]),
        timestamp_last_registered=record["timestamp_last_registered"],
        body=record["message_body"],
        attributes=MessageAttributes(silent=record["silent"], personal=record["personal"]),
        priority=Priority(record["priority"]),
        timestamp_queued=record["timestamp_queued"],
    )


def campaign_device_row(record: asyncpg.Record, message: CampaignMessage) -> ClaimedRow:
    return ClaimedRow(
        kind=RowKind.CAMPAIGN_DEVICE,
        id=record["id"],
        app_row_id=record["app_id"],
        attempts=record["attempts"],
        timestamp_created=record["timestamp_created"],
        device_id=record["device_registration_id"],
        platform=record["platform"],
        token=record["push_token"],
        environment=record["environment"],
        token_invalidated=bool(record["token_invalidated"]),
        timestamp_last_registered=record["timestamp_last_registered"],
        body=message.body,
        attributes=message.attributes,
        priority=message.priority,
        campaign_id=record["campaign_id"],
        campaign_state=record["state"],
        timestamp_queued=record["timestamp_queued"],
    )


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """The new state of one claimed row after its delivery attempt."""

    id: int
    status: int
    reason: str | None = None
    provider_message_id: str | None = None
    next_attempt_at: datetime | None = None
    attempt_given_back: bool = False


RECORD_TEMPLATE = """
UPDATE {table} AS t
SET status = u.status,
    failure_reason = u.reason,
    provider_message_id = COALESCE(u.provider_message_id, t.provider_message_id),
    timestamp_sent = CASE WHEN u.status = 1 THEN now() ELSE t.timestamp_sent END,
    next_attempt_at = COALESCE(u.next_attempt_at, t.next_attempt_at),
    attempts = t.attempts - u.given_back,
    lease_expires_at = NULL
FROM unnest($1::bigint[], $2::smallint[], $3::text[], $4::text[], $5::timestamptz[], $6::int[])
    AS u(id, status, reason, provider_message_id, next_attempt_at, given_back)
WHERE t.id = u.id AND t.status = 2
"""

RECORD = {
    RowKind.MESSAGE: RECORD_TEMPLATE.format(table="push_message"),
    RowKind.CAMPAIGN_DEVICE: RECORD_TEMPLATE.format(table="push_campaign_device"),
}


async def record(
    connection: asyncpg.Connection | asyncpg.Pool, kind: RowKind, updates: Sequence[RowUpdate]
) -> None:
    """Write every row's new state with one statement.

    Only rows still SENDING are written: a row whose lease expired and that another
    worker already finished keeps that worker's result.
    """
    if not updates:
        return
    await connection.execute(
        RECORD[kind],
        [update.id for update in updates],
        [update.status for update in updates],
        [update.reason for update in updates],
        [update.provider_message_id for update in updates],
        [update.next_attempt_at for update in updates],
        [1 if update.attempt_given_back else 0 for update in updates],
    )


@dataclass(frozen=True, slots=True)
class TokenInvalidation:
    """A device whose token the provider rejected; `since` is the APNs 410 timestamp."""

    device_id: int
    token: str
    since: datetime | None


INVALIDATE_TOKENS = """
UPDATE push_device AS d
SET timestamp_token_invalidated = now()
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, token, since)
WHERE d.id = u.id
  AND d.push_token = u.token
  AND d.timestamp_token_invalidated IS NULL
  AND (u.since IS NULL OR u.since > d.timestamp_last_registered)
"""


async def invalidate_tokens(
    connection: asyncpg.Connection | asyncpg.Pool, invalidations: Sequence[TokenInvalidation]
) -> None:
    """Mark devices' tokens invalid, skipping devices registered again since.

    The token comparison skips a device that registered a new token while the send was
    in flight. The timestamp comparison applies an APNs 410 only when it is newer than
    the device's last registration.
    """
    if not invalidations:
        return
    await connection.execute(
        INVALIDATE_TOKENS,
        [item.device_id for item in invalidations],
        [item.token for item in invalidations],
        [item.since for item in invalidations],
    )


RELEASE_TEMPLATE = """
UPDATE {table}
SET status = 0, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE id = ANY($1::bigint[]) AND status = 2
"""

RELEASE = {
    RowKind.MESSAGE: RELEASE_TEMPLATE.format(table="push_message"),
    RowKind.CAMPAIGN_DEVICE: RELEASE_TEMPLATE.format(table="push_campaign_device"),
}


async def release(
    connection: asyncpg.Connection | asyncpg.Pool, kind: RowKind, ids: Sequence[int]
) -> None:
    """Give claimed rows back as PENDING, with their attempt, when a worker stops early."""
    if ids:
        await connection.execute(RELEASE[kind], list(ids))
