"""Fixtures for the database tests: PgBouncer in transaction mode in front of the session's Postgres."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from everreach_data.db.embedded import EmbeddedPostgres
from tests.db.pgbouncer import pgbouncer, pooled


@pytest.fixture(scope="session")
def pooler_port(pg_server: EmbeddedPostgres) -> Iterator[int]:
    with pgbouncer(pg_server) as port:
        yield port


@pytest.fixture
def pooled_url(db_url: str, pooler_port: int) -> str:
    """This test's migrated database, through PgBouncer in transaction mode."""
    return pooled(db_url, pooler_port)


@pytest.fixture
def pooled_empty_url(empty_db_url: str, pooler_port: int) -> str:
    """A new, empty database, through PgBouncer in transaction mode."""
    return pooled(empty_db_url, pooler_port)
