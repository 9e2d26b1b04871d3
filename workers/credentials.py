"""Application credentials for the workers: read, decrypted once, cached briefly."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import asyncpg

from shared.exceptions import SecretError
from shared.secrets import SecretBox
from workers.providers.base import ApplicationCredentials

logger = logging.getLogger(__name__)

# Credential updates reach every worker within this many seconds; in between a batch
# costs no database round trip for them.
CACHE_TTL_S = 2.0

SELECT_APPLICATIONS = """
SELECT id, app_id, timestamp_last_updated,
       ios_key_id, ios_team_id, ios_bundle, ios_private_key, ios_environment,
       android_project_id, android_private_key,
       hms_project_id, hms_client_id, hms_client_secret
FROM push_app_credentials
WHERE id = ANY($1::bigint[])
"""


class CredentialStore:
    """Decrypted credentials per application row id, refreshed after CACHE_TTL_S."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self.pool = pool
        self.box = box
        self.entries: dict[int, tuple[float, ApplicationCredentials | None]] = {}

    async def get_many(self, app_row_ids: Iterable[int]) -> dict[int, ApplicationCredentials]:
        """Return the credentials of each application that still exists."""
        now = time.monotonic()
        wanted = set(app_row_ids)
        stale = [i for i in wanted if i not in self.entries or self.entries[i][0] < now]
        if stale:
            await self.refresh(stale, now)
        found = {i: self.entries[i][1] for i in wanted}
        return {i: credentials for i, credentials in found.items() if credentials is not None}

    async def refresh(self, app_row_ids: list[int], now: float) -> None:
        records = await self.pool.fetch(SELECT_APPLICATIONS, app_row_ids)
        by_id = {record["id"]: record for record in records}
        for app_row_id in app_row_ids:
            record = by_id.get(app_row_id)
            previous = self.entries.get(app_row_id)
            if record is not None and previous is not None and previous[1] is not None:
                if previous[1].timestamp_last_updated == record["timestamp_last_updated"]:
                    self.entries[app_row_id] = (now + CACHE_TTL_S, previous[1])
                    continue
            credentials = self.decrypt(record) if record is not None else None
            self.entries[app_row_id] = (now + CACHE_TTL_S, credentials)

    def decrypt(self, record: asyncpg.Record) -> ApplicationCredentials:
        return ApplicationCredentials(
            id=record["id"],
            app_id=record["app_id"],
            timestamp_last_updated=record["timestamp_last_updated"],
            apns_key_id=record["ios_key_id"],
            apns_team_id=record["ios_team_id"],
            apns_bundle=record["ios_bundle"],
            apns_private_key=self.secret(record, "ios_private_key"),
            apns_environment=record["ios_environment"],
            fcm_project_id=record["android_project_id"],
            fcm_service_account=self.secret(record, "android_private_key"),
            hms_project_id=record["hms_project_id"],
            hms_client_id=record["hms_client_id"],
            hms_client_secret=text_or_none(self.secret(record, "hms_client_secret")),
        )

    def secret(self, record: asyncpg.Record, column: str) -> bytes | None:
        """Decrypt one secret column; an unreadable value counts as missing credentials."""
        stored = record[column]
        if stored is None:
            return None
        try:
            return self.box.decrypt(stored, column)
        except SecretError as error:
            logger.error("application %s: cannot decrypt %s: %s", record["app_id"], column, error)
            return None


def text_or_none(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None
