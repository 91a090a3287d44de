"""Where the database is and how to connect to it, with errors a person can act on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from everreach_data.config import Settings
from everreach_data.db.embedded import APP_DATABASE, DAGSTER_DATABASE, start_embedded

#: Connection options for everything that connects to ``DATABASE_URL``, which may be a transaction-mode pooler
#: (PgBouncer, Supabase's Supavisor on port 6543): consecutive transactions of one connection may run on
#: different server sessions there, so a statement psycopg prepared on one (it prepares a query after its
#: fifth execution) would be missing on the next. Never prepare; each statement is parsed where it runs.
POOLER_SAFE: dict[str, Any] = {"prepare_threshold": None}


class DatabaseUnavailable(RuntimeError):
    """The configured database cannot be reached; the message names it (without its password)."""


#: After losing the database, the first wait before reconnecting and the longest (doubling in between): the
#: queue runs wait out a restart or a failover instead of failing.
RECONNECT_WAIT_SECONDS = (0.25, 5.0)
#: SQLSTATEs of a session the server ended: shut down (admin, crash) or refusing connections while it starts.
_SERVER_ENDED = ("57P01", "57P02", "57P03")


def reconnect_waits() -> Iterator[float]:
    """The waits before each try at a new connection, :data:`RECONNECT_WAIT_SECONDS`'s first doubling up to
    its longest (start a new series once connected)."""
    wait, longest = RECONNECT_WAIT_SECONDS
    while True:
        yield wait
        wait = min(longest, wait * 2)


def first_line(exc: BaseException) -> str:
    """What an error says, in one line for a log or a message (its type when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connection_lost(exc: psycopg.Error) -> bool:
    """Whether ``exc`` says the connection is gone or could not be made (the server restarted, failed over or
    is starting up) — what retrying on a new connection fixes — rather than anything about the statement.
    Errors raised by the client itself (a closed socket, a refused connect) carry no SQLSTATE."""
    state = exc.sqlstate
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith("08") or state in _SERVER_ENDED)


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def database_urls(settings: Settings) -> tuple[str, str]:
    """(app URL, Dagster storage URL).

    Unset ``DATABASE_URL`` means the embedded server (started here), with Dagster in its own ``dagster``
    database. ``DAGSTER_PG_URL`` puts Dagster's storage elsewhere; without it, a given ``DATABASE_URL``
    holds Dagster's tables too.
    """
    dagster = settings.DAGSTER_PG_URL.get_secret_value() if settings.DAGSTER_PG_URL else None
    if settings.DATABASE_URL is not None:
        app = settings.DATABASE_URL.get_secret_value()
        return app, sqlalchemy_url(dagster or app)
    embedded = start_embedded(settings.EVERREACH_HOME)
    return embedded.url(APP_DATABASE), sqlalchemy_url(dagster or embedded.url(DAGSTER_DATABASE))


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg2 driver named: dagster-postgres is built and tested on psycopg2, while
    SQLAlchemy 2.1 would otherwise pick psycopg 3 for a bare ``postgresql://``."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def app_database_url(settings: Settings) -> str:
    return database_urls(settings)[0]


@contextmanager
def connect(url: str, **kwargs) -> Iterator[psycopg.Connection]:
    """A psycopg connection (dict rows, :data:`POOLER_SAFE`) that commits on success and rolls back on error."""
    try:
        conn = psycopg.connect(url, row_factory=dict_row, connect_timeout=10, **{**POOLER_SAFE, **kwargs})
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach the database at {redact(url)}: {first_line(exc)}") from exc
    with conn:
        yield conn
