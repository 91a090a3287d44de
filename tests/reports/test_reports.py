"""The report assets on known data, each compared with the runbook's own query run directly for the same
day — on a database whose sessions are in a time zone far from UTC, so a report that took its days from
the session's zone would disagree."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import psycopg
import pytest
from psycopg.rows import dict_row

from everreach_data.reports.defs import REPORT_ASSETS, campaign_spend_matches_insights, status_shares_add_up
from everreach_data.reports.frames import load_report
from everreach_data.resources import PostgresResource

DAY = date(2026, 11, 20)
START = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def tokyo_db(db_url):
    """This test's database, every session in Asia/Tokyo (UTC+9)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Tokyo'").format(
            psycopg.sql.Identifier(conn.info.dbname)))
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        assert conn.execute("SHOW timezone").fetchone()["TimeZone"] == "Asia/Tokyo"
        yield conn


def _known_data(db) -> None:
    threads = {}
    for platform, person in (("messenger", "psid-1"), ("whatsapp", "15550001")):
        threads[platform] = db.execute(
            "INSERT INTO conversation_thread (platform, channel_id, participant_id) VALUES (%s, 'ch', %s) "
            "RETURNING thread_id", (platform, person)).fetchone()["thread_id"]
    # (platform, direction, status, hour of DAY in UTC): 16:00 UTC is the next day in Tokyo.
    messages = [("messenger", "inbound", "received", 1), ("messenger", "inbound", "received", 16),
                ("messenger", "outbound", "read", 2), ("messenger", "outbound", "delivered", 17),
                ("whatsapp", "inbound", "received", 23), ("whatsapp", "outbound", "sent", 10),
                ("whatsapp", "outbound", "failed", 12), ("whatsapp", "outbound", "read", -2)]  # -2: the day before
    for i, (platform, direction, status, hour) in enumerate(messages):
        db.execute("INSERT INTO conversation_message (thread_id, platform, platform_message_id, direction, status, "
                   "sent_at) VALUES (%s, %s, %s, %s, %s, %s)",
                   (threads[platform], platform, f"mid.{i}", direction, status, START + timedelta(hours=hour)))
    for i, (name, value, status, hour) in enumerate([("Purchase", 40, "sent", 3), ("Purchase", 2.5, "sent", 20),
                                                     ("Lead", None, "failed", 15), ("Lead", None, "sent", 30)]):
        db.execute("INSERT INTO meta_conversion_event (pixel_id, event_id, event_name, event_time, action_source, "
                   "value, status, events_received) VALUES ('px', %s, %s, %s, 'website', %s, %s, %s)",
                   (f"e{i}", name, START + timedelta(hours=hour), value, status, 1 if status == "sent" else None))
    campaign = db.execute("INSERT INTO campaign (name, external_id, ad_account_id) VALUES ('Spring', '111', 'act_1') "
                          "RETURNING campaign_id").fetchone()["campaign_id"]
    actions = '{"actions": [{"action_type": "offsite_conversion.fb_pixel_purchase", "value": "3"}], ' \
              '"campaign_name": "Spring"}'
    for level, object_id, spend, impressions, clicks in (("campaign", "111", 120.5, 10000, 250),
                                                         ("adset", "222", 120.5, 10000, 250)):
        db.execute("INSERT INTO ad_performance (ad_account_id, level, object_id, date, campaign_id, meta_campaign_id, "
                   "spend, impressions, clicks, conversions, conversion_value, currency, metadata) "
                   "VALUES ('act_1', %s, %s, %s, %s, '111', %s, %s, %s, 3, 90, 'USD', %s::jsonb)",
                   (level, object_id, DAY, campaign, spend, impressions, clicks, actions))


def _materialize(db_url: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([*REPORT_ASSETS, status_shares_add_up, campaign_spend_matches_insights],
                          partition_key=DAY.isoformat(), resources={"postgres": PostgresResource(url=db_url)})


# The runbook's queries (seed-runbook "Monitoring & Maintenance" and "Query Performance"), for one UTC day.
# The first is ambiguous as the runbook writes it (both tables have a platform column): ct. is added.
RUNBOOK_VOLUME = """
SELECT ct.platform, direction, COUNT(*) as message_count, DATE(sent_at AT TIME ZONE 'UTC') as date
FROM conversation_message cm JOIN conversation_thread ct ON cm.thread_id = ct.thread_id
WHERE sent_at >= %(start)s AND sent_at < %(end)s
GROUP BY ct.platform, direction, DATE(sent_at AT TIME ZONE 'UTC') ORDER BY date DESC, platform
"""
RUNBOOK_RATES = """
SELECT status, COUNT(*) as count, ROUND(COUNT(*) * 100.0 / SUM(COUNT(*)) OVER(), 2) as percentage
FROM conversation_message WHERE direction = 'outbound' AND sent_at >= %(start)s AND sent_at < %(end)s GROUP BY status
"""
RUNBOOK_CONVERSIONS = """
SELECT event_name, COUNT(*) as event_count, SUM(value) as total_value, AVG(value) as avg_value
FROM meta_conversion_event WHERE event_time >= %(start)s AND event_time < %(end)s
GROUP BY event_name ORDER BY event_count DESC
"""
RUNBOOK_TOP_CAMPAIGNS = """
SELECT metadata->>'campaign_name' as campaign_name, SUM(spend) as total_spend, SUM(conversions) as total_conversions,
       (SUM(conversion_value) / NULLIF(SUM(spend), 0)) as roas
FROM ad_performance WHERE date = %(day)s AND level = 'campaign' GROUP BY metadata->>'campaign_name'
"""


def test_reports_match_the_runbook_queries_in_utc_days(tokyo_db, db_url):
    _known_data(tokyo_db)
    result = _materialize(db_url)
    assert result.success
    window = {"start": START, "end": START + timedelta(days=1), "day": DAY}

    volume = {(r["platform"], r["direction"]): r["message_count"] for r in tokyo_db.execute(
        "SELECT * FROM message_volume_daily WHERE date = %s", (DAY,))}
    assert volume == {(r["platform"], r["direction"]): r["message_count"]
                      for r in tokyo_db.execute(RUNBOOK_VOLUME, window)}
    assert volume == {("messenger", "inbound"): 2, ("messenger", "outbound"): 2, ("whatsapp", "inbound"): 1,
                      ("whatsapp", "outbound"): 2}

    rates = {r["status"]: (r["message_count"], r["percentage"]) for r in tokyo_db.execute(
        "SELECT * FROM message_delivery_rates_daily WHERE date = %s", (DAY,))}
    assert rates == {r["status"]: (r["count"], r["percentage"]) for r in tokyo_db.execute(RUNBOOK_RATES, window)}
    assert sum(p for _, p in rates.values()) == 100

    events = {r["event_name"]: (r["event_count"], r["total_value"]) for r in tokyo_db.execute(
        "SELECT * FROM conversion_events_daily WHERE date = %s", (DAY,))}
    assert events == {r["event_name"]: (r["event_count"], r["total_value"])
                      for r in tokyo_db.execute(RUNBOOK_CONVERSIONS, window)}
    assert events == {"Purchase": (2, 42.5), "Lead": (1, None)}

    [campaign] = tokyo_db.execute("SELECT * FROM campaign_performance_daily WHERE date = %s", (DAY,)).fetchall()
    [top] = tokyo_db.execute(RUNBOOK_TOP_CAMPAIGNS, window).fetchall()
    assert (campaign["campaign_name"], campaign["spend"], campaign["conversions"]) == (
        top["campaign_name"], top["total_spend"], top["total_conversions"])
    assert round(campaign["roas"], 6) == round(top["roas"], 6)
    assert tuple(float(round(campaign[k], 4)) for k in ("cpc", "cpm", "ctr")) == (
        round(120.5 / 250, 4), round(120.5 * 1000 / 10000, 4), round(250 * 100 / 10000, 4))

    reconciliation = {r["event_name"]: r for r in tokyo_db.execute(
        "SELECT * FROM conversion_reconciliation_daily WHERE date = %s", (DAY,))}
    purchase = reconciliation["Purchase"]
    assert (purchase["events_stored"], purchase["events_sent"], purchase["events_received"],
            purchase["meta_attributed"]) == (2, 2, 2, 3)
    assert purchase["action_type"] == "offsite_conversion.fb_pixel_purchase"
    assert (reconciliation["Lead"]["events_stored"], reconciliation["Lead"]["events_sent"]) == (1, 0)

    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"status_shares_add_up": True, "campaign_spend_matches_insights": True}
    meta = result.asset_materializations_for_node("message_volume_daily")[0].metadata
    assert meta["dagster/row_count"].value == 4 and len(meta["preview"].value.records) == 4
    columns = {c.name: c.description for c in meta["dagster/column_schema"].schema.columns}
    assert columns["date"] == "UTC day the message was sent (Meta's timestamp)"


def test_a_rerun_replaces_the_day_and_the_loader_returns_it(db, db_url):
    _known_data(db)
    _materialize(db_url)
    db.execute("DELETE FROM conversation_message WHERE platform = 'whatsapp'")
    _materialize(db_url)
    frame = load_report(db_url, "message_volume_daily", DAY, DAY)
    assert sorted(zip(frame["platform"], frame["direction"], frame["message_count"], strict=True)) == [
        ("messenger", "inbound", 2), ("messenger", "outbound", 2)]
    with pytest.raises(ValueError, match="unknown report"):
        load_report(db_url, "pg_authid", DAY, DAY)
