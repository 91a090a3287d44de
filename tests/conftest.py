"""Shared fixtures: one real (embedded) Postgres server per test session, a fresh migrated database per
test cloned from a template (fast, and tests cannot see each other's rows)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from everreach_data.config import Settings
from everreach_data.db.embedded import EmbeddedPostgres, start_embedded
from everreach_data.db.migrate import migrate
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

TEMPLATE = "everreach_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL server for the whole session, in a temporary directory (stopped and removed after)."""
    home = Path(tempfile.mkdtemp(prefix="everreach-test-"))
    os.chmod(home, 0o755)
    server = start_embedded(home, databases=(TEMPLATE,))
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        # A throwaway cluster: skip flushing to disk (each test clones a database, which would fsync every
        # file). Visible behaviour is unchanged short of an OS crash, which no test simulates.
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    migrate(server.url(TEMPLATE))
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def _new_database(server: EmbeddedPostgres) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)))
    return server.url(name)


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres) -> str:
    """URL of a fresh, fully migrated database for this test."""
    return _new_database(pg_server)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection (dict rows) to this test's database."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def empty_db_url(pg_server: EmbeddedPostgres) -> str:
    """URL of a brand-new, empty database (no migrations applied)."""
    name = f"e_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return pg_server.url(name)


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for the sandbox defaults, pointed at this test's database."""
    return Settings(**SANDBOX_DEFAULTS, DATABASE_URL=db_url)  # type: ignore[arg-type]



def unique_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"
