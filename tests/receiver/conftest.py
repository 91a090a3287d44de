"""The receiver wired to the Graph API sandbox over this test's database (the outbound tests' fixtures: one
definition of the pair), plus what the receiver's own tests share."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.outbound.conftest import out_settings, receiver, sandbox, sandbox_state  # noqa: F401 - fixtures

#: Every table a request to the receiver may write: after a refused request, all of them are as they were.
WRITTEN = ("outbound_message_job", "conversation_message", "conversation_thread", "meta_conversion_event",
           "user_event", "meta_webhook_event")


COUNTS = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
    sql.SQL("(SELECT count(*) FROM {}) AS {}").format(sql.Identifier(t), sql.Identifier(t)) for t in WRITTEN))


def row_counts(db: psycopg.Connection) -> dict[str, int]:
    return db.execute(COUNTS).fetchone()


@pytest.fixture
def document(receiver) -> dict:  # noqa: F811 - the fixture imported above
    """The document the receiver serves."""
    response = httpx.get(f"{receiver}/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.json()


def api_operations(document: dict) -> list[tuple[str, str, dict]]:
    """(method, path, operation) for every operation that needs a bearer token."""
    return [(method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()
            if op.get("security")]
