"""Fixtures shared by every test: a migrated test database, clean tables and queue names.

The services come from `deploy/local/services start`, which writes their URLs to
`.run/env`; `deploy/local/test` exports them. Each test run creates its own database, so
the suite never touches the data of a running local stack.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest

from shared.db import create_pool
from shared.migrations import migrate
from shared.secrets import SecretBox
from shared.settings import Settings

REPOSITORY = Path(__file__).resolve().parent.parent

# Queue suffixes declared by the queue topology; the fixture deletes them after each test.
QUEUE_SUFFIXES = ("delivery", "campaign", "ingest", "dead")


def read_env_file() -> dict[str, str]:
    """Read `export NAME=value` lines of .run/env, for runs outside deploy/local/test."""
    path = REPOSITORY / ".run" / "env"
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        name, separator, value = line.removeprefix("export ").partition("=")
        if separator and name.startswith("PUSH_"):
            values[name.strip()] = value.strip().strip("'\"")
    return values


def service_url(name: str) -> str:
    url = os.environ.get(name) or read_env_file().get(name)
    if not url:
        pytest.exit(f"{name} is not set: run the tests with deploy/local/test", returncode=3)
    return url


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return service_url("PUSH_AMQP_URL")


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """Create and migrate a database of this test run; drop it afterwards."""
    base_url = service_url("PUSH_DATABASE_URL")
    name = f"push_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(base_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(base_url, name)

    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    yield url

    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def queue_prefix() -> str:
    return f"test.{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def settings(
    database_url: str, amqp_url: str, master_key: str, queue_prefix: str, tmp_path: Path
) -> AsyncIterator[Settings]:
    """Settings for one test: the test database, the local broker, its own queue names."""
    yield Settings(
        database_url=database_url,
        amqp_url=amqp_url,
        master_key=master_key,
        master_key_id="test1",
        queue_prefix=queue_prefix,
    )
    await delete_queues(amqp_url, queue_prefix)


async def delete_queues(amqp_url: str, prefix: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for suffix in QUEUE_SUFFIXES:
            channel = await connection.channel()
            try:
                await channel.queue_delete(f"{prefix}.{suffix}")
            except aio_pika.exceptions.ChannelClosed:
                pass  # the test never declared this queue


@pytest.fixture(scope="session")
async def session_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def truncate_statement(session_pool: asyncpg.Pool) -> str:
    """TRUNCATE of every table the migrations created, the migration history excepted."""
    rows = await session_pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND tablename <> 'push_schema_migration'"
    )
    names = ", ".join(row["tablename"] for row in rows)
    return f"TRUNCATE {names} RESTART IDENTITY CASCADE"


@pytest.fixture
async def pool(session_pool: asyncpg.Pool, truncate_statement: str) -> asyncpg.Pool:
    """The test database's pool, with every table emptied before the test."""
    await session_pool.execute(truncate_statement)
    return session_pool


@pytest.fixture
def secret_box(settings: Settings) -> SecretBox:
    return SecretBox.from_settings(settings)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Remove every PUSH_ variable, so a settings test sees only what it sets."""
    for name in list(os.environ):
        if name.startswith("PUSH_"):
            monkeypatch.delenv(name)
    yield monkeypatch
