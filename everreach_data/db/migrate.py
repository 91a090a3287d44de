"""Numbered, idempotent migrations from ``sql/``: each applied once, in order, in its own transaction.

Each transaction first takes a transaction-level advisory lock, then reads the ledger and applies the next
pending migration, so concurrent ``migrate`` runs are safe: the second waits, then finds nothing left to
do. Transaction-level because ``DATABASE_URL`` may be a transaction-mode pooler, where a session-level lock
would stay on whichever server session took it. A failing migration is rolled back whole and named in the
error.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from everreach_data.config import PROJECT_ROOT
from everreach_data.db.connection import connect, redact

SQL_DIR = PROJECT_ROOT / "sql"
MIGRATION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
#: Arbitrary, fixed key for pg_advisory_xact_lock: "everreach migrations".
ADVISORY_LOCK_KEY = 0x45_56_52_4D

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration failed and was rolled back; the message names the file and the database's error."""


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found = [Migration(int(m.group(1)), p) for p in sql_dir.iterdir() if (m := MIGRATION_FILE.match(p.name))]
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"two migrations in {sql_dir} share a number: {versions}")
    return found


def check_ledger(applied: dict[int, str], migrations: list[Migration], url: str) -> None:
    """Refuse a database whose applied migrations are not this checkout's: one migrated by an older,
    unreleased layout of ``sql/``, or by a newer checkout. Nothing is changed in it."""
    known = {m.version: m.name for m in migrations}
    foreign = sorted(name for version, name in applied.items() if known.get(version) != name)
    if foreign:
        raise MigrationError(
            f"the database at {redact(url)} was migrated by another version of this project "
            f"({', '.join(foreign)} are not in sql/): re-create it — for the embedded database, stop "
            "everreach-data and delete .everreach/ — then run everreach-data migrate")


def migrate(url: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the names of those applied (empty when up to date)."""
    migrations = discover(sql_dir)
    applied_now: list[str] = []
    with connect(url, autocommit=True) as conn:
        while (applied := _apply_next(conn, migrations, url)) is not None:
            applied_now.append(applied)
    return applied_now


def _apply_next(conn: psycopg.Connection, migrations: list[Migration], url: str) -> str | None:
    """One transaction, under the lock: apply the first pending migration; its name, or None if none is."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        conn.execute(CREATE_LEDGER)
        done = {row["version"]: row["name"] for row in conn.execute("SELECT version, name FROM schema_migrations")}
        check_ledger(done, migrations, url)
        migration = next((m for m in migrations if m.version not in done), None)
        if migration is None:
            return None
        try:
            with conn.transaction():
                conn.execute(migration.text)
                conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                             (migration.version, migration.name, migration.checksum))
        except psycopg.Error as exc:
            detail = (exc.diag.message_primary or str(exc)).strip()
            raise MigrationError(f"migration {migration.name} failed and was rolled back (nothing from it was "
                                 f"applied): {detail}") from exc
    return migration.name
