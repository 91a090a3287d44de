"""WhatsApp pricing: each outbound message's `pricing` from its status webhooks, and the daily report of
billable messages by category — the figure a business pays on."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from everreach_data.definitions import build_resources
from everreach_data.operations.defs import whatsapp_pricing_daily
from tests.inbox import payloads as p
from tests.inbox.helpers import process
from tests.outbound.helpers import new_user, send_whatsapp, wait_for

DAY = int(datetime(2026, 11, 3, 10, tzinfo=UTC).timestamp())


def _priced(wamid: str, status: str, ts: int, category: str, kind: str, **pricing) -> dict:
    return p.wa_status(wamid, status, ts, pricing={"pricing_model": "PMP", "category": category, "type": kind,
                                                   **pricing})


def test_pricing_is_stored_per_message_and_reported_by_category(settings, db, db_url):
    process(db_url,
            _priced("wamid.m1", "sent", DAY, "marketing", "regular", billable=True),
            _priced("wamid.m1", "delivered", DAY + 5, "marketing", "regular", billable=True),
            _priced("wamid.m2", "delivered", DAY + 60, "marketing", "regular"),       # v24: no `billable`
            _priced("wamid.m3", "sent", DAY + 90, "marketing", "regular"),            # never delivered: not charged
            _priced("wamid.u1", "sent", DAY + 120, "utility", "free_customer_service", billable=False),
            p.wa_status("wamid.u1", "delivered", DAY + 121),
            _priced("wamid.a1", "delivered", DAY + 200, "authentication", "regular"),
            _priced("wamid.next-day", "delivered", DAY + 86400, "marketing", "regular"))
    priced = {r["platform_message_id"]: r for r in db.execute("SELECT * FROM whatsapp_message_pricing")}
    assert set(priced) == {"wamid.m1", "wamid.m2", "wamid.m3", "wamid.u1", "wamid.a1", "wamid.next-day"}
    m1 = priced["wamid.m1"]
    assert (m1["category"], m1["pricing_type"], m1["pricing_model"], m1["billable"], m1["channel_id"]) == (
        "marketing", "regular", "PMP", True, p.PHONE)
    assert m1["priced_at"].timestamp() == DAY                  # the earliest status that carried it
    assert priced["wamid.m2"]["billable"] is True and priced["wamid.u1"]["billable"] is False

    result = dg.materialize([whatsapp_pricing_daily], partition_key="2026-11-03",
                            resources=build_resources(settings, secrets_as_env_vars=False))
    meta = result.asset_materializations_for_node("whatsapp_pricing_daily")[0].metadata
    assert meta["billable_messages"].value == 3 and meta["priced_messages"].value == 5
    assert meta["billable_by_category"].value == {"authentication": 1, "marketing": 2, "utility": 0}
    rows = db.execute("SELECT date::text, category, pricing_type, messages, billable_messages "
                      "FROM whatsapp_pricing_daily ORDER BY category").fetchall()
    assert [tuple(r.values()) for r in rows] == [
        ("2026-11-03", "authentication", "regular", 1, 1), ("2026-11-03", "marketing", "regular", 3, 2),
        ("2026-11-03", "utility", "free_customer_service", 1, 0)]
    # Re-running the partition replaces it.
    dg.materialize([whatsapp_pricing_daily], partition_key="2026-11-03",
                   resources=build_resources(settings, secrets_as_env_vars=False))
    assert db.execute("SELECT count(*) AS n FROM whatsapp_pricing_daily").fetchone()["n"] == 3


def test_the_sandbox_prices_sends_as_meta_does(out_settings, receiver, db, db_url, sandbox):
    """A marketing template is charged; free-form service replies are not (the statuses say so)."""
    from tests.outbound.helpers import run_drain, user_wrote

    user = new_user("whatsapp")
    user_wrote(db, sandbox, "whatsapp", user, 600)
    for body in ({"type": "template", "template": {"name": "summer_sale", "language": {"code": "en_US"},
                                                  "components": [{"type": "body", "parameters": [
                                                      {"type": "text", "text": "20%"}]}]}},
                 {"type": "text", "message": "Happy to help"}):
        assert send_whatsapp(receiver, {"to": user, **body}).status_code == 202
    assert run_drain(out_settings, db_url).sent == 2
    wait_for(lambda: db.execute("SELECT count(*) AS n FROM meta_webhook_event").fetchone()["n"] >= 6,
             what="the status webhooks")
    process(db_url)
    priced = {r["category"]: r for r in db.execute("SELECT * FROM whatsapp_message_pricing")}
    assert (priced["marketing"]["billable"], priced["marketing"]["pricing_type"]) == (True, "regular")
    assert (priced["service"]["billable"], priced["service"]["pricing_type"]) == (False, "free_customer_service")
