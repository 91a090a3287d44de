"""Facebook Reels and video posts with their current metric names, Instagram carousels with their children,
and the daily schedule's 48-hour look-back."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import httpx
import pytest

from everreach_data.meta import organic
from everreach_data.organic.defs import organic_insights_daily, social_media_post, social_post_insights
from tests.organic.helpers import TOKEN, run


def test_reels_and_video_posts_have_their_own_metrics(db, db_url, sandbox):
    end = datetime.now(UTC).date() - timedelta(days=3)
    start = end - timedelta(days=13)
    assert run([social_media_post, social_post_insights], db_url, sandbox, start, end).success
    posts = {r["platform_post_id"]: r["media_type"] for r in db.execute(
        "SELECT platform_post_id, media_type FROM social_media_post WHERE platform = 'facebook'")}
    metrics: dict[str, dict[str, int]] = {}
    for r in db.execute("SELECT platform_post_id, metric, value FROM social_post_insights "
                        "WHERE platform = 'facebook'"):
        metrics.setdefault(r["platform_post_id"], {})[r["metric"]] = int(r["value"])
    reels = [p for p, kind in posts.items() if kind == "REELS"]
    videos = [p for p, kind in posts.items() if kind == "added_video"]
    assert reels and videos and len(metrics) == len(posts)
    with httpx.Client(base_url=f"{sandbox}/v24.0", params={"access_token": TOKEN}) as c:
        for reel in reels:
            body = c.get(f"/{reel}/video_insights", params={"metric": ",".join(organic.FB_REEL_METRICS)}).json()
            assert metrics[reel] == {e["name"]: e["values"][0]["value"] for e in body["data"]}
    assert all(set(metrics[v]) == set(organic.VIDEO_POST_METRICS) for v in videos)
    assert all(set(m) == set(organic.POST_LIFETIME_METRICS) for p, m in metrics.items()
               if posts[p] not in ("REELS", "added_video"))


def test_carousel_children_come_with_their_album(db, db_url, sandbox):
    end = datetime.now(UTC).date() - timedelta(days=3)
    assert run([social_media_post], db_url, sandbox, end - timedelta(days=13), end).success
    albums = db.execute("SELECT platform_post_id, metadata FROM social_media_post "
                        "WHERE media_type = 'CAROUSEL_ALBUM'").fetchall()
    assert albums
    with httpx.Client(base_url=f"{sandbox}/v24.0", params={"access_token": TOKEN}) as c:
        for album in albums:
            children = album["metadata"]["children"]["data"]
            assert 2 <= len(children) <= 4
            for child in children:
                assert c.get(f"/{child['id']}", params={"fields": "media_type,media_url"}).json() == {
                    "id": child["id"], "media_type": child["media_type"], "media_url": child["media_url"]}
    children = db.execute("SELECT count(*) AS n FROM social_media_post p, "
                          "jsonb_array_elements(p.metadata->'children'->'data') c").fetchone()["n"]
    assert children == sum(len(a["metadata"]["children"]["data"]) for a in albums)


@pytest.mark.parametrize(("at", "start", "end"), [
    (datetime(2025, 10, 10, 7, tzinfo=UTC), date(2025, 10, 8), date(2025, 10, 9)),
    (datetime(2026, 1, 1, 7, tzinfo=UTC), date(2025, 12, 30), date(2025, 12, 31)),
])
def test_the_daily_schedule_repulls_the_two_days_meta_may_still_revise(at, start, end):
    context = dg.build_schedule_context(scheduled_execution_time=at)
    request = organic_insights_daily.evaluate_tick(context).run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == start.isoformat()
    assert request.tags["dagster/asset_partition_range_end"] == end.isoformat()
