"""`push-server migrate`: apply the versioned SQL files in `migrations/` in order."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.exceptions import MigrationChanged, MigrationError, PushServerError
from shared.logs import configure_logging
from shared.settings import DatabaseSettings, load_settings

logger = logging.getLogger(__name__)

DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

# Any constant works as long as nothing else in the database takes the same advisory lock.
MIGRATION_LOCK_KEY = 0x7075_7368_6D69_6772  # "pushmigr"

FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

CREATE_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS push_schema_migration (
    version TEXT PRIMARY KEY,
    checksum TEXT NOT NULL,
    timestamp_applied TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """Read the migration files sorted by their four-digit prefix."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        if not FILE_NAME.match(path.name):
            raise MigrationError(f"migration file name {path.name!r} must look like 0001_name.sql")
        migrations.append(Migration(path.stem, path, path.read_text(encoding="utf-8")))
    return migrations


async def migrate(
    connection: asyncpg.Connection, directory: Path = DEFAULT_MIGRATIONS_DIR
) -> list[str]:
    """Apply every migration not applied yet; return the versions applied now.

    An advisory lock makes a second concurrent run wait, then find nothing to do.
    """
    migrations = discover(directory)
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(CREATE_HISTORY_TABLE)
        rows = await connection.fetch("SELECT version, checksum FROM push_schema_migration")
        applied = {row["version"]: row["checksum"] for row in rows}
        check_unchanged(migrations, applied)

        pending = [m for m in migrations if m.version not in applied]
        for migration in pending:
            await apply(connection, migration)
        return [migration.version for migration in pending]
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


def check_unchanged(migrations: list[Migration], applied: dict[str, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationChanged(
                f"migration {migration.path.name} was changed after it was applied"
                f" (recorded checksum {recorded[:12]}, file {migration.checksum[:12]});"
                " restore the file and add the change as a new migration"
            )


async def apply(connection: asyncpg.Connection, migration: Migration) -> None:
    logger.info("applying migration %s", migration.path.name)
    async with connection.transaction():
        try:
            await connection.execute(migration.sql)
        except asyncpg.PostgresError as error:
            raise MigrationError(f"migration {migration.path.name} failed: {error}") from error
        await connection.execute(
            "INSERT INTO push_schema_migration (version, checksum) VALUES ($1, $2)",
            migration.version,
            migration.checksum,
        )


async def run(directory: Path) -> list[str]:
    settings = load_settings(DatabaseSettings)
    connection = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        return await migrate(connection, directory)
    finally:
        await connection.close()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="push-server migrate", description=__doc__)
    parser.add_argument(
        "--directory",
        type=Path,
        default=DEFAULT_MIGRATIONS_DIR,
        help="folder of NNNN_name.sql files",
    )
    arguments = parser.parse_args(argv)
    configure_logging()

    try:
        versions = asyncio.run(run(arguments.directory))
    except (PushServerError, OSError, asyncpg.PostgresError) as error:
        logger.error("migration failed: %s", error)
        return 1

    logger.info("schema is up to date; applied now: %s", ", ".join(versions) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
