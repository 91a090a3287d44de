"""The meta_conversion_event asset: app events → hashed server events → the sandbox's Conversions API."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest

from everreach_data.conversions.defs import ConversionsAPIResource, identifiers_are_hashed, meta_conversion_event
from everreach_data.resources import PostgresResource
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from everreach_sandbox.server import build_app, build_state
from tests.servers import serve

PIXEL = SANDBOX_DEFAULTS["META_PIXEL_ID"]


@pytest.fixture
def sandbox():
    with serve(build_app(build_state())) as base:
        yield base


def day_start(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def add_events(db, when: datetime) -> None:
    db.execute("INSERT INTO auth.users (id, email) VALUES "
               "('00000000-0000-4000-8000-0000000000a1', ' Ava@Example.com'), "
               "('00000000-0000-4000-8000-0000000000a2', NULL)")
    rows = [("purchase", "a1", '{"value": 42.5, "currency": "usd", "order_id": "o-1"}'),
            ("lead_submitted", "a1", "{}"),
            ("signup", "a2", "{}"),            # no email: matched by external_id alone
            ("page_view", "a1", "{}")]         # not a Meta conversion
    for i, (kind, user, props) in enumerate(rows):
        db.execute("INSERT INTO user_event (user_id, event_type, occurred_at, properties) "
                   "VALUES (%s, %s, %s, %s::jsonb)",
                   (f"00000000-0000-4000-8000-0000000000{user}", kind, when + timedelta(hours=2 + i), props))


def materialize(db_url: str, sandbox: str, day: datetime,
                token: str = SANDBOX_DEFAULTS["META_CONVERSIONS_API_TOKEN"]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [meta_conversion_event, identifiers_are_hashed], partition_key=day.date().isoformat(), raise_on_error=False,
        resources={"postgres": PostgresResource(url=db_url),
                   "conversions_api": ConversionsAPIResource(access_token=token, pixel_id=PIXEL,
                                                             graph_url=sandbox)})


def test_partition_events_are_hashed_sent_once_and_checked(db, db_url, sandbox):
    day = day_start(1)
    add_events(db, day)
    result = materialize(db_url, sandbox, day)
    assert result.success
    meta = result.asset_materializations_for_node("meta_conversion_event")[0].metadata
    assert meta["events_collected"].value == 3 and meta["events_sent"].value == 3
    assert meta["events_received"].value == 3 and meta["requests"].value == 1
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"identifiers_are_hashed": True, "meta_received_every_event_sent": True}

    events = {e["event_name"]: e for e in httpx.get(f"{sandbox}/_sandbox/capi/events").json()["events"]}
    assert set(events) == {"Purchase", "Lead", "CompleteRegistration"}
    purchase = events["Purchase"]
    assert purchase["user_data"]["em"] == hashlib.sha256(b"ava@example.com").hexdigest()
    assert purchase["custom_data"] == {"value": 42.5, "currency": "USD", "order_id": "o-1"}
    assert events["CompleteRegistration"]["user_data"] == {
        "external_id": hashlib.sha256(b"00000000-0000-4000-8000-0000000000a2").hexdigest()}
    rows = db.execute("SELECT event_id, status, source_event_id::text AS src FROM meta_conversion_event").fetchall()
    assert all(r["status"] == "sent" and r["event_id"] == r["src"] for r in rows)

    # The hashing check reads the table, so it runs on its own too, and fails on a raw identifier.
    db.execute("UPDATE meta_conversion_event SET user_data = user_data || '{\"em\": \"ava@example.com\"}' "
               "WHERE event_name = 'Lead'")
    check = dg.materialize([meta_conversion_event, identifiers_are_hashed], raise_on_error=False,
                           selection=dg.AssetSelection.checks(identifiers_are_hashed),
                           resources={"postgres": PostgresResource(url=db_url),
                                      "conversions_api": ConversionsAPIResource()})  # not called by the check
    [evaluation] = check.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["unhashed_values"].value == 1
    db.execute("UPDATE meta_conversion_event SET user_data = user_data - 'em' WHERE event_name = 'Lead'")

    again = materialize(db_url, sandbox, day)  # a re-run sends nothing twice
    assert again.asset_materializations_for_node("meta_conversion_event")[0].metadata["events_sent"].value == 0
    assert len(httpx.get(f"{sandbox}/_sandbox/capi/events").json()["events"]) == 3


def test_events_older_than_seven_days_are_marked_not_sent(db, db_url, sandbox):
    day = day_start(9)
    add_events(db, day)
    result = materialize(db_url, sandbox, day)
    assert result.success
    meta = result.asset_materializations_for_node("meta_conversion_event")[0].metadata
    assert meta["stale_not_sent"].value == 3 and meta["events_sent"].value == 0
    assert httpx.get(f"{sandbox}/_sandbox/capi/events").json()["events"] == []
    statuses = {r["status"] for r in db.execute("SELECT status, error_message FROM meta_conversion_event")}
    assert statuses == {"failed"}


def test_an_expired_token_fails_the_run_and_keeps_events_pending(db, db_url, sandbox):
    day = day_start(1)
    add_events(db, day)
    result = materialize(db_url, sandbox, day, token="revoked")
    assert not result.success
    description = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "code 190" in description and "META_CONVERSIONS_API_TOKEN" in description
    assert {r["status"] for r in db.execute("SELECT status FROM meta_conversion_event")} == {"pending"}
