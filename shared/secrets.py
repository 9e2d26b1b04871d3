"""Secret encryption: AES-256-GCM under a master key, the key id stored with each value.

Stored layout: one byte with the key id's length, the key id (ASCII), a 12-byte nonce,
then the ciphertext with its 16-byte tag. The column name is the associated data, so a
value copied into another secret column fails authentication instead of decrypting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.exceptions import PushServerError, SecretTampered, UnknownMasterKey
from shared.logs import configure_logging
from shared.settings import Settings, load_settings

logger = logging.getLogger(__name__)

NONCE_BYTES = 12

# Every encrypted column as (table, column); rotate-secrets walks this list.
SECRET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("push_app_credentials", "ios_private_key"),
    ("push_app_credentials", "android_private_key"),
    ("push_app_credentials", "hms_client_secret"),
    ("push_device", "encryption_key"),
)

ROTATION_CHUNK = 500


class SecretBox:
    """Encrypts under the current master key; decrypts under any configured key."""

    def __init__(self, keys: dict[str, bytes], current_key_id: str) -> None:
        if current_key_id not in keys:
            raise UnknownMasterKey(f"current master key id {current_key_id!r} has no key")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current_key_id = current_key_id

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(settings.master_keys, settings.master_key_id)

    def __repr__(self) -> str:
        return f"SecretBox(current_key_id={self.current_key_id!r}, keys={len(self._ciphers)})"

    def encrypt(self, plaintext: bytes, column: str) -> bytes:
        """Encrypt a value for the named column under the current key."""
        key_id = self.current_key_id.encode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._ciphers[self.current_key_id].encrypt(nonce, plaintext, column.encode())
        return bytes([len(key_id)]) + key_id + nonce + ciphertext

    def decrypt(self, stored: bytes, column: str) -> bytes:
        """Decrypt a stored value of the named column; raises SecretTampered on any change."""
        key_id, nonce, ciphertext = split_stored(stored)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownMasterKey(
                f"a value in {column} is encrypted under master key {key_id!r}, which is not"
                " configured; add it to PUSH_PREVIOUS_MASTER_KEYS"
            )
        try:
            return cipher.decrypt(nonce, ciphertext, column.encode())
        except InvalidTag:
            raise SecretTampered(f"a value in {column} failed authentication") from None

    def needs_rotation(self, stored: bytes) -> bool:
        return key_id_of(stored) != self.current_key_id


def key_id_of(stored: bytes) -> str:
    return split_stored(stored)[0]


def split_stored(stored: bytes) -> tuple[str, bytes, bytes]:
    if len(stored) < 1 + NONCE_BYTES + 16 or len(stored) < 1 + stored[0] + NONCE_BYTES + 16:
        raise SecretTampered("encrypted value is truncated")
    length = stored[0]
    try:
        key_id = stored[1 : 1 + length].decode("ascii")
    except UnicodeDecodeError:
        raise SecretTampered("encrypted value has a malformed key id") from None
    nonce = stored[1 + length : 1 + length + NONCE_BYTES]
    return key_id, nonce, stored[1 + length + NONCE_BYTES :]


async def rotate_column(
    connection: asyncpg.Connection, box: SecretBox, table: str, column: str
) -> int:
    """Re-encrypt one column's values that use an older key, in chunks; return the count."""
    rotated = 0
    last_id = 0
    while True:
        rows = await connection.fetch(
            f"SELECT id, {column} AS value FROM {table}"
            f" WHERE id > $1 AND {column} IS NOT NULL ORDER BY id LIMIT $2",
            last_id,
            ROTATION_CHUNK,
        )
        if not rows:
            return rotated
        last_id = rows[-1]["id"]
        stale = [(row["id"], row["value"]) for row in rows if box.needs_rotation(row["value"])]
        updates = [
            (row_id, box.encrypt(box.decrypt(value, column), column)) for row_id, value in stale
        ]
        if updates:
            await connection.executemany(
                f"UPDATE {table} SET {column} = $2 WHERE id = $1 AND {column} IS NOT NULL", updates
            )
        rotated += len(updates)


async def rotate_all(connection: asyncpg.Connection, box: SecretBox) -> dict[str, int]:
    """Re-encrypt every secret column under the current key, one transaction per column."""
    counts = {}
    for table, column in SECRET_COLUMNS:
        async with connection.transaction():
            counts[f"{table}.{column}"] = await rotate_column(connection, box, table, column)
    return counts


async def run_rotation() -> dict[str, int]:
    settings: Settings = load_settings()
    box = SecretBox.from_settings(settings)
    connection = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        return await rotate_all(connection, box)
    finally:
        await connection.close()


def rotate_main(argv: Sequence[str]) -> int:
    """Entry point of `push-server rotate-secrets`."""
    argparse.ArgumentParser(
        prog="push-server rotate-secrets",
        description="Re-encrypt every secret under PUSH_MASTER_KEY. Keep the old keys in"
        " PUSH_PREVIOUS_MASTER_KEYS until this has finished on every database.",
    ).parse_args(argv)
    configure_logging()

    try:
        counts = asyncio.run(run_rotation())
    except (PushServerError, OSError, asyncpg.PostgresError) as error:
        logger.error("secret rotation failed: %s", error)
        return 1

    for column, count in counts.items():
        logger.info("re-encrypted %d values of %s", count, column)
    return 0


if __name__ == "__main__":
    sys.exit(rotate_main(sys.argv[1:]))
