"""`push-server migrate` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.exceptions import MigrationChanged, MigrationError
from shared.migrations import DEFAULT_MIGRATIONS_DIR, discover, migrate
from tests.conftest import service_url, with_database

SEED_TABLES = {
    "push_app_credentials",
    "push_device",
    "push_message",
    "push_campaign",
    "push_campaign_user",
    "push_campaign_device",
}

ALL_VERSIONS = [migration.version for migration in discover(DEFAULT_MIGRATIONS_DIR)]


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    base_url = service_url("PUSH_DATABASE_URL")
    name = f"push_migrate_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield with_database(base_url, name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(DEFAULT_MIGRATIONS_DIR, target)
    return target


async def table_names(connection: asyncpg.Connection) -> set[str]:
    rows = await connection.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    return {row["table_name"] for row in rows}


async def test_migrate_creates_six_tables(empty_database: str) -> None:
    connection = await asyncpg.connect(empty_database)
    applied = await migrate(connection)
    tables = await table_names(connection)
    await connection.close()

    assert applied[0] == "0001_initial"
    assert applied == ALL_VERSIONS
    assert SEED_TABLES <= tables


async def test_migrate_twice_changes_nothing(empty_database: str) -> None:
    connection = await asyncpg.connect(empty_database)
    await migrate(connection)
    history_before = await connection.fetch("SELECT * FROM push_schema_migration")

    applied_again = await migrate(connection)
    history_after = await connection.fetch("SELECT * FROM push_schema_migration")
    await connection.close()

    assert applied_again == []
    assert history_before == history_after


async def test_changed_migration_rejected(empty_database: str, migrations_copy: Path) -> None:
    connection = await asyncpg.connect(empty_database)
    await migrate(connection, migrations_copy)
    initial = migrations_copy / "0001_initial.sql"
    initial.write_text(initial.read_text() + "\n-- edited later\n")

    with pytest.raises(MigrationChanged, match="0001_initial.sql was changed"):
        await migrate(connection, migrations_copy)
    await connection.close()


async def test_new_migration_applied_after_old(empty_database: str, migrations_copy: Path) -> None:
    connection = await asyncpg.connect(empty_database)
    await migrate(connection, migrations_copy)
    (migrations_copy / "9999_extra.sql").write_text("CREATE TABLE extra_table (id INT);")

    applied = await migrate(connection, migrations_copy)
    tables = await table_names(connection)
    await connection.close()

    assert applied == ["9999_extra"]
    assert "extra_table" in tables


async def test_failed_migration_leaves_no_record(
    empty_database: str, migrations_copy: Path
) -> None:
    (migrations_copy / "9998_broken.sql").write_text("CREATE TABLE broken (id NO_SUCH_TYPE);")
    connection = await asyncpg.connect(empty_database)

    with pytest.raises(MigrationError, match="9998_broken.sql failed"):
        await migrate(connection, migrations_copy)
    versions = await connection.fetch("SELECT version FROM push_schema_migration")
    await connection.close()

    assert "9998_broken" not in [row["version"] for row in versions]


async def test_badly_named_migration_rejected(empty_database: str, migrations_copy: Path) -> None:
    (migrations_copy / "extra.sql").write_text("SELECT 1;")
    connection = await asyncpg.connect(empty_database)

    with pytest.raises(MigrationError, match="must look like 0001_name.sql"):
        await migrate(connection, migrations_copy)
    await connection.close()


async def test_concurrent_migrations_apply_once(empty_database: str) -> None:
    connections = [await asyncpg.connect(empty_database) for _ in range(4)]

    results = await asyncio.gather(*(migrate(connection) for connection in connections))
    history = await connections[0].fetch("SELECT version FROM push_schema_migration")
    for connection in connections:
        await connection.close()

    assert sorted(len(applied) for applied in results) == [0, 0, 0, len(ALL_VERSIONS)]
    assert sorted(row["version"] for row in history) == ALL_VERSIONS


async def test_migrate_command_exit_codes(empty_database: str, migrations_copy: Path) -> None:
    environment = {"PUSH_DATABASE_URL": empty_database, "PATH": "/usr/bin:/bin"}
    command = [str(Path(__file__).parents[2] / ".venv" / "bin" / "push-server"), "migrate"]
    if not Path(command[0]).exists():
        pytest.skip("the push-server script is not installed in .venv")

    first = await run_command(command, environment)
    (migrations_copy / "0001_initial.sql").write_text("-- changed\n")
    changed = await run_command([*command, "--directory", str(migrations_copy)], environment)
    missing = await run_command(command, {"PATH": "/usr/bin:/bin"})

    assert first[0] == 0
    assert changed[0] == 1
    assert "was changed after it was applied" in changed[1]
    assert missing[0] == 1
    assert "PUSH_DATABASE_URL is missing" in missing[1]


async def run_command(command: list[str], environment: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()
