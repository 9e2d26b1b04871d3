"""Delivery of one batch of row ids: claim, send concurrently, record, notify.

One batch costs a fixed number of database statements whatever its size: the claim,
the credentials (cached), the FCM quota per project, the record, the token
invalidations and the notification. Sends run concurrently under one per-process cap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import orjson
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, Histogram

from shared.db import FAILED, SENT
from shared.message_body import MessageBody
from workers.claim import (
    ClaimedRow,
    RowKind,
    RowUpdate,
    TokenInvalidation,
    claim,
    invalidate_tokens,
    record,
    release,
)
from workers.configuration_guard import apply_guard
from workers.credentials import CredentialStore
from workers.fcm_quota import FcmQuota
from workers.providers.base import (
    ApplicationCredentials,
    CredentialsError,
    Outcome,
    PayloadError,
    PreparedPayload,
    ProviderClient,
    ProviderRegistry,
    SendResult,
    apns_id_for,
    build_payload,
    is_expired,
)
from workers.retry_policy import RetryPolicy

logger = logging.getLogger(__name__)

OUTCOMES = MetricCounter(
    "push_deliveries_total",
    "Provider calls and skipped rows by outcome",
    ["provider", "outcome", "app_id"],
)
BATCH_SECONDS = Histogram(
    "push_delivery_batch_seconds", "Time to deliver one batch of row ids", ["kind"]
)
CLAIM_SECONDS = Histogram("push_claim_seconds", "Time of the claim statement of one batch")
RECORD_SECONDS = Histogram("push_record_seconds", "Time to record the outcomes of one batch")
PROVIDER_SECONDS = Histogram(
    "push_provider_request_seconds",
    "Time of one provider call",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ROWS_IN_FLIGHT = Gauge("push_rows_in_flight", "Rows claimed by this worker and not yet recorded")
QUEUE_LAG_SECONDS = Histogram(
    "push_queue_lag_seconds",
    "Time from a row's publish to its claim",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
)
MISCONFIGURED = MetricCounter(
    "push_application_misconfigured_total",
    "Batches in which an application's credentials or configuration were rejected",
    ["app_id", "provider"],
)

# Campaign payloads are built once and reused for this long; FCM and HMS count their
# TTL from the build time, so a cached payload may promise up to this much extra TTL.
CAMPAIGN_PAYLOAD_TTL_S = 60.0
CAMPAIGN_PAYLOAD_CACHE_SIZE = 256

# Two-key advisory lock class held by a campaign's expansion; a campaign is never marked
# completed while its expansion may still insert rows.
EXPANSION_LOCK_CLASS = 7_406_001

# The maximum time of one send, token requests and retries included. The clients bound
# each request themselves; this bounds everything else, so no batch can hold its prefetch
# slot forever. It stays well under the lease (PUSH_LEASE_S, 60 s by default).
SEND_DEADLINE_S = 45.0

# A worker re-reads the state of a campaign whose rows it is sending at most this often,
# so deleting a sending campaign stops its claimed rows within about this time.
CAMPAIGN_STATE_TTL_S = 1.0

# Row ids are at most 19 digits plus a comma, so 380 ids stay under the 8000-byte limit.
NOTIFY_IDS_PER_PAYLOAD = 380

COMPLETE_CAMPAIGNS = """
UPDATE push_campaign AS p
SET state = 'completed', sent = true, timestamp_completed = now()
WHERE p.id = ANY($1::bigint[])
  AND p.state = 'sending'
  AND NOT EXISTS (
      SELECT 1 FROM push_campaign_device AS cd WHERE cd.campaign_id = p.id AND cd.status IN (0, 2)
  )
  AND pg_try_advisory_xact_lock($2, p.id::int)
RETURNING p.id
"""


@dataclass(slots=True)
class PendingSend:
    """A claimed row that passed the checks and is ready for its provider call."""

    row: ClaimedRow
    client: ProviderClient
    payload: PreparedPayload
    group: Hashable


@dataclass(slots=True)
class BatchReport:
    """The claimed count and outcomes of one batch, for logs and tests."""

    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class Deliverer:
    """Delivers batches of row ids for one worker process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: ProviderRegistry,
        credentials: CredentialStore,
        quota: FcmQuota,
        policy: RetryPolicy,
        *,
        lease_s: float,
        concurrency: int,
        notify_channel: str,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.credentials = credentials
        self.quota = quota
        self.policy = policy
        self.lease_s = lease_s
        self.send_slots = asyncio.Semaphore(concurrency)
        self.notify_channel = notify_channel
        self.rng = rng or random.Random()
        self.campaign_payloads: OrderedDict[tuple[int, str], tuple[float, Any]] = OrderedDict()
        self.campaign_states: dict[int, tuple[float, str]] = {}
        self.campaign_state_lock = asyncio.Lock()

    async def deliver(self, kind: RowKind, ids: Sequence[int]) -> BatchReport:
        """Claim the due rows among `ids`, deliver them and record every outcome."""
        started = time.perf_counter()
        with CLAIM_SECONDS.time():
            rows = await claim(self.pool, kind, ids, self.lease_s)
        report = BatchReport(claimed=len(rows))
        if not rows:
            return report

        observe_queue_lag(rows)
        self.remember_campaign_states(rows)
        ROWS_IN_FLIGHT.inc(len(rows))
        try:
            await self.deliver_claimed(kind, rows, report)
        except asyncio.CancelledError:
            await asyncio.shield(self.release_unrecorded(kind, rows))
            raise
        finally:
            ROWS_IN_FLIGHT.dec(len(rows))
        BATCH_SECONDS.labels(kind=str(kind)).observe(time.perf_counter() - started)
        return report

    async def deliver_claimed(
        self, kind: RowKind, rows: list[ClaimedRow], report: BatchReport
    ) -> None:
        applications = await self.credentials.get_many({row.app_row_id for row in rows})
        now = datetime.now(UTC)
        ready, settled = self.prepare(rows, applications, now)
        settled.extend(await self.send_all(ready, applications))
        await self.finish(kind, settled, applications, report)

    async def release_unrecorded(self, kind: RowKind, rows: list[ClaimedRow]) -> None:
        """Give back the rows of a batch cancelled at shutdown; recorded rows stay as they are."""
        await release(self.pool, kind, [row.id for row in rows])
        logger.info("released %d claimed %s rows at shutdown", len(rows), kind)

    def prepare(
        self,
        rows: list[ClaimedRow],
        applications: dict[int, ApplicationCredentials],
        now: datetime,
    ) -> tuple[list[PendingSend], list[tuple[ClaimedRow, SendResult]]]:
        """Split rows into sends and rows settled without a provider call."""
        ready: list[PendingSend] = []
        settled: list[tuple[ClaimedRow, SendResult]] = []
        batch_payloads: dict[tuple[Any, ...], Any] = {}
        for row in rows:
            skip = skip_reason(row)
            if skip is not None:
                settled.append((row, skip))
                continue
            application = applications.get(row.app_row_id)
            prepared = self.prepare_send(row, application, batch_payloads, now)
            if isinstance(prepared, SendResult):
                settled.append((row, prepared))
            else:
                ready.append(prepared)
        return ready, settled

    def prepare_send(
        self,
        row: ClaimedRow,
        application: ApplicationCredentials | None,
        batch_payloads: dict[tuple[Any, ...], Any],
        now: datetime,
    ) -> PendingSend | SendResult:
        assert row.platform is not None
        if application is None:
            return SendResult(Outcome.MESSAGE_REJECTED, reason="application_removed")

        payload = self.payload_for(row, batch_payloads, now)
        if isinstance(payload, SendResult):
            return payload

        try:
            client = self.registry.client_for(application, row.platform)
        except CredentialsError as error:
            return SendResult(Outcome.CREDENTIALS, reason=credentials_reason(error))
        group = (row.app_row_id, row.platform, row.environment or "")
        return PendingSend(row, client, payload, group)

    def payload_for(
        self, row: ClaimedRow, batch_payloads: dict[tuple[Any, ...], Any], now: datetime
    ) -> PreparedPayload | SendResult:
        """Build the provider payload, once per campaign or per distinct body in a batch."""
        assert row.platform is not None
        if row.kind is RowKind.CAMPAIGN_DEVICE and row.campaign_id is not None:
            key = (row.campaign_id, row.platform)
            cached = self.campaign_payloads.get(key)
            if cached is not None and cached[0] > time.monotonic():
                return check_expiry(cached[1], now)
            built = build_or_reject(row)
            self.remember_campaign_payload(key, built)
            return check_expiry(built, now)

        batch_key = (
            row.platform,
            orjson.dumps(row.body, option=orjson.OPT_SORT_KEYS),
            row.attributes.silent,
            row.attributes.personal,
            row.priority,
        )
        if batch_key not in batch_payloads:
            batch_payloads[batch_key] = build_or_reject(row)
        return check_expiry(batch_payloads[batch_key], now)

    def remember_campaign_payload(self, key: tuple[int, str], built: Any) -> None:
        self.campaign_payloads[key] = (time.monotonic() + CAMPAIGN_PAYLOAD_TTL_S, built)
        self.campaign_payloads.move_to_end(key)
        while len(self.campaign_payloads) > CAMPAIGN_PAYLOAD_CACHE_SIZE:
            self.campaign_payloads.popitem(last=False)

    async def send_all(
        self, ready: list[PendingSend], applications: dict[int, ApplicationCredentials]
    ) -> list[tuple[ClaimedRow, SendResult]]:
        """Send concurrently, within the FCM quota, then apply the configuration guard."""
        allowed, throttled = await self.apply_fcm_quota(ready, applications)
        results = await asyncio.gather(*(self.send_one(item) for item in allowed))

        guarded, misconfigured = apply_guard([item.group for item in allowed], results)
        for group in misconfigured:
            self.report_misconfigured(group, applications)
        return [
            (item.row, result) for item, result in zip(allowed, guarded, strict=True)
        ] + throttled

    async def apply_fcm_quota(
        self, ready: list[PendingSend], applications: dict[int, ApplicationCredentials]
    ) -> tuple[list[PendingSend], list[tuple[ClaimedRow, SendResult]]]:
        by_project: dict[str, list[PendingSend]] = {}
        allowed: list[PendingSend] = []
        for item in ready:
            project = applications[item.row.app_row_id].fcm_project_id
            if item.row.platform == "fcm" and project:
                by_project.setdefault(project, []).append(item)
            else:
                allowed.append(item)

        throttled: list[tuple[ClaimedRow, SendResult]] = []
        for project, items in by_project.items():
            grant = await self.quota.take(project, len(items))
            allowed.extend(items[: grant.count])
            result = SendResult(Outcome.THROTTLED, reason="fcm_quota", retry_after_s=grant.wait_s)
            throttled.extend((item.row, result) for item in items[grant.count :])
        return allowed, throttled

    def remember_campaign_states(self, rows: list[ClaimedRow]) -> None:
        """Cache the campaign states the claim read, so the first sends need no query."""
        expires = time.monotonic() + CAMPAIGN_STATE_TTL_S
        for row in rows:
            if row.campaign_id is not None and row.campaign_state is not None:
                self.campaign_states[row.campaign_id] = (expires, row.campaign_state)

    async def campaign_cancelled(self, campaign_id: int) -> bool:
        """Return whether the campaign was cancelled or deleted, re-read once per TTL."""
        cached = self.campaign_states.get(campaign_id)
        if cached is None or cached[0] < time.monotonic():
            async with self.campaign_state_lock:
                cached = self.campaign_states.get(campaign_id)
                if cached is None or cached[0] < time.monotonic():
                    state = await self.pool.fetchval(
                        "SELECT state FROM push_campaign WHERE id = $1", campaign_id
                    )
                    cached = (time.monotonic() + CAMPAIGN_STATE_TTL_S, state or "cancelled")
                    self.campaign_states[campaign_id] = cached
        return cached[1] == "cancelled"

    async def send_one(self, item: PendingSend) -> SendResult:
        row = item.row
        assert row.token is not None
        # Only APNs reads the apns-id; a uuid5 per row is worth skipping for the others.
        apns_id = apns_id_for(str(row.kind), row.id) if row.platform == "apns" else ""
        async with self.send_slots:
            # Checked after waiting for a slot: a campaign deleted meanwhile sends no more.
            if row.campaign_id is not None and await self.campaign_cancelled(row.campaign_id):
                return SendResult(Outcome.MESSAGE_REJECTED, reason="cancelled")
            started = time.perf_counter()
            try:
                result = await asyncio.wait_for(
                    item.client.send(
                        row.token, item.payload, apns_id=apns_id, environment=row.environment
                    ),
                    SEND_DEADLINE_S,
                )
            except TimeoutError:
                logger.warning(
                    "%s app=%s send timed out after %.0f s",
                    row.log_id,
                    row.app_row_id,
                    SEND_DEADLINE_S,
                )
                result = SendResult(Outcome.TRANSIENT, reason="timeout")
            provider_seconds(str(row.platform)).observe(time.perf_counter() - started)
            return result

    def report_misconfigured(
        self, group: Hashable, applications: dict[int, ApplicationCredentials]
    ) -> None:
        app_row_id, platform, environment = cast(tuple[int, str, str], group)
        app_id = applications[app_row_id].app_id
        MISCONFIGURED.labels(app_id=app_id, provider=platform).inc()
        logger.error(
            "application %s: most %s sends (environment %s) were rejected as invalid tokens;"
            " treating it as a configuration error, no device invalidated",
            app_id,
            platform,
            environment or "default",
        )

    async def finish(
        self,
        kind: RowKind,
        settled: list[tuple[ClaimedRow, SendResult]],
        applications: dict[int, ApplicationCredentials],
        report: BatchReport,
    ) -> None:
        """Record every outcome, invalidate tokens, notify and complete campaigns."""
        now = datetime.now(UTC)
        updates: list[RowUpdate] = []
        invalidations: list[TokenInvalidation] = []
        outcome_counts: Counter[tuple[str, str, int]] = Counter()
        for row, result in settled:
            updates.append(self.policy.update_for(row, result, now, self.rng))
            report.outcomes[str(result.outcome)] += 1
            outcome_counts[(str(row.platform), str(result.outcome), row.app_row_id)] += 1
            invalidation = token_invalidation(row, result)
            if invalidation is not None:
                invalidations.append(invalidation)
            log_result(row, result)

        count_outcomes(outcome_counts, applications)
        # Shielded: once the provider accepted the messages, the record must be written
        # even when the worker is shutting down.
        await asyncio.shield(self.write(kind, updates, invalidations, settled))

    async def write(
        self,
        kind: RowKind,
        updates: list[RowUpdate],
        invalidations: list[TokenInvalidation],
        settled: list[tuple[ClaimedRow, SendResult]],
    ) -> None:
        started = time.perf_counter()
        async with self.pool.acquire() as connection, connection.transaction():
            await record(connection, kind, updates)
            await invalidate_tokens(connection, invalidations)
            if kind is RowKind.MESSAGE:
                await notify_finished(connection, self.notify_channel, updates)
        RECORD_SECONDS.observe(time.perf_counter() - started)

        if kind is RowKind.CAMPAIGN_DEVICE:
            campaigns = sorted({row.campaign_id for row, _ in settled if row.campaign_id})
            completed = await self.pool.fetch(COMPLETE_CAMPAIGNS, campaigns, EXPANSION_LOCK_CLASS)
            for record_ in completed:
                logger.info("campaign=%s completed", record_["id"])


def count_outcomes(
    counts: Counter[tuple[str, str, int]], applications: dict[int, ApplicationCredentials]
) -> None:
    """Add a batch's outcomes to the metric, one increment per label set."""
    for (platform, outcome, app_row_id), count in counts.items():
        application = applications.get(app_row_id)
        app_label = application.app_id if application else str(app_row_id)
        OUTCOMES.labels(platform, outcome, app_label).inc(count)


@functools.cache
def provider_seconds(platform: str) -> Any:
    """Return the latency histogram's child for one provider; labels() per send is costly."""
    return PROVIDER_SECONDS.labels(platform)


def observe_queue_lag(rows: list[ClaimedRow]) -> None:
    now = datetime.now(UTC)
    for row in rows:
        if row.timestamp_queued is not None:
            QUEUE_LAG_SECONDS.observe(max(0.0, (now - row.timestamp_queued).total_seconds()))


def skip_reason(row: ClaimedRow) -> SendResult | None:
    """Return the result of a row that must not be sent, or None to send it."""
    if row.campaign_state == "cancelled":
        return SendResult(Outcome.MESSAGE_REJECTED, reason="cancelled")
    if row.device_id is None or row.token is None or row.platform is None:
        return SendResult(Outcome.MESSAGE_REJECTED, reason="device_removed")
    if row.token_invalidated:
        return SendResult(Outcome.TOKEN_INVALID, reason="token_invalidated")
    return None


def build_or_reject(row: ClaimedRow) -> PreparedPayload | SendResult:
    assert row.platform is not None
    try:
        body = MessageBody.model_validate(row.body)
        if is_expired(body):
            return SendResult(Outcome.EXPIRED, reason="expired")
        return build_payload(row.platform, body, row.attributes, row.priority)
    except PayloadError as error:
        logger.info("%s app=%s message rejected: %s", row.log_id, row.app_row_id, error)
        return SendResult(Outcome.MESSAGE_REJECTED, reason=error.reason)
    except ValueError as error:
        # A stored body that no longer validates (written by an older version).
        logger.error("%s app=%s stored body is invalid: %s", row.log_id, row.app_row_id, error)
        return SendResult(Outcome.MESSAGE_REJECTED, reason=PayloadError.reason)


def check_expiry(
    built: PreparedPayload | SendResult, now: datetime
) -> PreparedPayload | SendResult:
    if isinstance(built, PreparedPayload) and built.expires_at is not None:
        if built.expires_at <= now:
            return SendResult(Outcome.EXPIRED, reason="expired")
    return built


def credentials_reason(error: CredentialsError) -> str:
    return f"credentials: {error}"[:200]


def token_invalidation(row: ClaimedRow, result: SendResult) -> TokenInvalidation | None:
    if result.outcome is not Outcome.TOKEN_INVALID or result.reason == "token_invalidated":
        return None
    if row.device_id is None or row.token is None:
        return None
    return TokenInvalidation(row.device_id, row.token, result.token_invalid_since)


def short_token(token: str | None) -> str:
    if not token:
        return "-"
    return f"{token[:6]}…{token[-4:]}" if len(token) > 12 else "…"


def log_result(row: ClaimedRow, result: SendResult) -> None:
    if result.outcome is Outcome.SENT:
        logger.debug("%s app=%s sent to %s", row.log_id, row.app_row_id, short_token(row.token))
    elif result.outcome is Outcome.TOKEN_INVALID:
        logger.info(
            "%s app=%s token %s invalid: %s",
            row.log_id,
            row.app_row_id,
            short_token(row.token),
            result.reason,
        )
    elif result.outcome in (Outcome.TRANSIENT, Outcome.THROTTLED):
        logger.debug("%s app=%s will retry: %s", row.log_id, row.app_row_id, result.reason)
    else:
        logger.info(
            "%s app=%s not sent: %s %s", row.log_id, row.app_row_id, result.outcome, result.reason
        )


async def notify_finished(
    connection: asyncpg.Connection, channel: str, updates: Sequence[RowUpdate]
) -> None:
    """Tell SYNCHRONOUS senders which messages reached SENT or FAILED."""
    finished = [str(update.id) for update in updates if update.status in (SENT, FAILED)]
    # PostgreSQL limits a notification payload to 8000 bytes.
    for start in range(0, len(finished), NOTIFY_IDS_PER_PAYLOAD):
        payload = ",".join(finished[start : start + NOTIFY_IDS_PER_PAYLOAD])
        await connection.execute("SELECT pg_notify($1, $2)", channel, payload)
