"""Organic assets against the sandbox's Page and Instagram surfaces over real HTTP."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import httpx

from everreach_data.meta import organic
from everreach_data.meta.client import GraphClient
from everreach_data.organic.defs import (
    FacebookPageResource,
    social_account_insights,
    social_media_post,
    social_post_insights,
)
from tests.organic.helpers import IG, PAGE, TOKEN, resources, run


def test_a_week_of_posts_insights_and_account_metrics(db, db_url, sandbox):
    end = datetime.now(UTC).date() - timedelta(days=2)
    start = end - timedelta(days=6)
    result = run([social_media_post, social_post_insights, social_account_insights], db_url, sandbox, start, end)
    assert result.success

    with GraphClient(f"{sandbox}/v24.0", TOKEN) as client:  # what Meta says, asked independently
        fb = organic.page_posts(client, PAGE, start, end + timedelta(days=1))
        fb += organic.page_reels(client, PAGE, start, end + timedelta(days=1))
        ig = organic.instagram_media(client, IG, start, end + timedelta(days=1))
        expected_views = client.get(f"{PAGE}/insights", metric="page_media_view", period="day",
                                    since=start.isoformat(), until=(end + timedelta(days=1)).isoformat())
    posts = db.execute("SELECT platform, count(*) AS n FROM social_media_post GROUP BY platform").fetchall()
    assert {r["platform"]: r["n"] for r in posts} == {"facebook": len(fb), "instagram": len(ig)}
    assert len(fb) > 0 and len(ig) > 0 and any(p.media_type == "REELS" for p in fb)

    per_post = db.execute("SELECT count(DISTINCT platform_post_id) AS n FROM social_post_insights").fetchone()
    assert per_post["n"] == len(fb) + len(ig)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"every_post_has_insights": True, "one_value_per_day_and_metric": True}
    insights_meta = result.asset_materializations_for_node("social_post_insights")[0].metadata
    assert insights_meta["api_calls"].value == 2  # one batch request per platform, not one call per post

    stored = {r["date"]: int(r["value"]) for r in db.execute(
        "SELECT date, value FROM social_account_insights WHERE platform = 'facebook' AND metric = 'page_media_view'")}
    meta = {organic.day_of_end_time(v["end_time"]): v["value"] for v in expected_views["data"][0]["values"]}
    assert stored == meta and len(stored) == 7
    ig_days = db.execute("SELECT count(DISTINCT date) AS n FROM social_account_insights "
                         "WHERE platform = 'instagram' AND metric = 'views'").fetchone()
    assert ig_days["n"] == 7


def test_rerun_replaces_the_range_without_duplicates(db, db_url, sandbox):
    day = datetime.now(UTC).date() - timedelta(days=3)
    for _ in range(2):
        assert run([social_account_insights], db_url, sandbox, day, day).success
    dupes = db.execute("SELECT count(*) AS n FROM (SELECT platform, date, metric FROM social_account_insights "
                       "GROUP BY 1, 2, 3 HAVING count(*) > 1) d").fetchone()
    assert dupes["n"] == 0
    assert db.execute("SELECT count(*) AS n FROM social_account_insights").fetchone()["n"] > 0


def test_a_retired_metric_is_dropped_and_reported_not_fatal(sandbox):
    with GraphClient(f"{sandbox}/v24.0", TOKEN) as client:
        day = datetime.now(UTC).date() - timedelta(days=3)
        report = organic.page_daily_insights(client, PAGE, day, day + timedelta(days=1),
                                             metrics=("page_media_view", "page_impressions_unique"))
    assert report.dropped_metrics == {"page_impressions_unique"}
    assert [v.metric for v in report.values] == ["page_media_view"]


def test_windows_respect_meta_limits():
    spans = list(organic.windows(date(2025, 1, 1), date(2025, 7, 1), organic.PAGE_WINDOW_DAYS))
    assert all((b - a).days <= 90 for a, b in spans)
    assert spans[0][0] == date(2025, 1, 1) and spans[-1][1] == date(2025, 7, 1)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


def test_token_problems_fail_the_run_clearly(db_url, sandbox):
    bad = {**resources(db_url, sandbox),
           "facebook_page": FacebookPageResource(access_token="expired", page_id=PAGE, graph_url=sandbox)}
    result = dg.materialize([social_media_post], resources=bad, raise_on_error=False,
                            partition_key=(datetime.now(UTC).date() - timedelta(days=2)).isoformat())
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data is not None
    assert "code 190" in failure.user_failure_data.description
    assert "generate a new one and update MESSENGER_PAGE_TOKEN" in failure.user_failure_data.description
    assert httpx.get(f"{sandbox}/_sandbox/stats").json()["counters"]["error.190"] == 1
