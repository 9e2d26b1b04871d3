"""Secret encryption: round trip, tampering, unknown keys and rotation."""

from __future__ import annotations

import base64
import os

import asyncpg
import pytest

from shared.exceptions import SecretTampered, UnknownMasterKey
from shared.secrets import SecretBox, key_id_of, rotate_all

COLUMN = "ios_private_key"


def new_key() -> bytes:
    return os.urandom(32)


def test_round_trip() -> None:
    box = SecretBox({"k1": new_key()}, "k1")

    stored = box.encrypt(b"-----BEGIN PRIVATE KEY-----", COLUMN)

    assert b"BEGIN PRIVATE KEY" not in stored
    assert key_id_of(stored) == "k1"
    assert box.decrypt(stored, COLUMN) == b"-----BEGIN PRIVATE KEY-----"


def test_same_plaintext_gives_different_ciphertext() -> None:
    box = SecretBox({"k1": new_key()}, "k1")

    assert box.encrypt(b"secret", COLUMN) != box.encrypt(b"secret", COLUMN)


@pytest.mark.parametrize("position", [-1, -20, 20])
def test_tampered_value_rejected(position: int) -> None:
    box = SecretBox({"k1": new_key()}, "k1")
    stored = bytearray(box.encrypt(b"client secret value", COLUMN))
    stored[position] ^= 0x01

    with pytest.raises(SecretTampered):
        box.decrypt(bytes(stored), COLUMN)


def test_truncated_value_rejected() -> None:
    box = SecretBox({"k1": new_key()}, "k1")

    with pytest.raises(SecretTampered, match="truncated"):
        box.decrypt(box.encrypt(b"x", COLUMN)[:10], COLUMN)


def test_value_moved_to_other_column_rejected() -> None:
    box = SecretBox({"k1": new_key()}, "k1")
    stored = box.encrypt(b"service account", "android_private_key")

    with pytest.raises(SecretTampered):
        box.decrypt(stored, "hms_client_secret")


def test_unknown_key_id_names_the_setting() -> None:
    old = SecretBox({"old": new_key()}, "old")
    current = SecretBox({"new": new_key()}, "new")

    with pytest.raises(UnknownMasterKey, match="PUSH_PREVIOUS_MASTER_KEYS"):
        current.decrypt(old.encrypt(b"x", COLUMN), COLUMN)


def test_previous_key_still_readable() -> None:
    old_key = new_key()
    stored = SecretBox({"old": old_key}, "old").encrypt(b"x", COLUMN)
    rotated_box = SecretBox({"old": old_key, "new": new_key()}, "new")

    assert rotated_box.decrypt(stored, COLUMN) == b"x"
    assert rotated_box.needs_rotation(stored)


def test_repr_shows_no_key() -> None:
    key = new_key()
    box = SecretBox({"k1": key}, "k1")

    assert base64.b64encode(key).decode() not in repr(box)
    assert "k1" in repr(box)


async def test_rotation_reencrypts_every_column(pool: asyncpg.Pool) -> None:
    old_key = new_key()
    old_box = SecretBox({"old": old_key}, "old")
    app_id = await pool.fetchval(
        "INSERT INTO push_app_credentials (app_id, ios_private_key, android_private_key,"
        " hms_client_secret) VALUES ('app', $1, $2, $3) RETURNING id",
        old_box.encrypt(b"p8", "ios_private_key"),
        old_box.encrypt(b"json", "android_private_key"),
        old_box.encrypt(b"hms", "hms_client_secret"),
    )
    await pool.execute(
        "INSERT INTO push_device (app_id, platform, push_token, encryption_key)"
        " VALUES ($1, 'fcm', 't', $2)",
        app_id,
        old_box.encrypt(b"device key", "encryption_key"),
    )
    new_box = SecretBox({"old": old_key, "new": new_key()}, "new")

    async with pool.acquire() as connection:
        counts = await rotate_all(connection, new_box)
        again = await rotate_all(connection, new_box)
    app = await pool.fetchrow("SELECT * FROM push_app_credentials")
    device_key = await pool.fetchval("SELECT encryption_key FROM push_device")

    assert set(counts.values()) == {1}
    assert set(again.values()) == {0}
    for column, plaintext in [
        ("ios_private_key", b"p8"),
        ("android_private_key", b"json"),
        ("hms_client_secret", b"hms"),
    ]:
        assert key_id_of(app[column]) == "new"
        assert new_box.decrypt(app[column], column) == plaintext
    assert new_box.decrypt(device_key, "encryption_key") == b"device key"
