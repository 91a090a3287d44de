"""A metric Meta refuses costs one probe per run: found once, then left out of every later request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from everreach_data.meta import organic
from everreach_data.meta.client import GraphClient
from everreach_data.meta.organic import InsightsReport, Post
from tests.organic.helpers import IG, PAGE, TOKEN


def _posts(client: GraphClient, days: int) -> list:
    end = datetime.now(UTC).date()
    return organic.page_posts(client, PAGE, end - timedelta(days=days), end)


def test_a_batch_with_a_retired_metric_costs_one_probe(sandbox):
    with GraphClient(f"{sandbox}/v24.0", TOKEN) as client:
        posts = [p for p in _posts(client, 120) if not organic.is_video_post(p)][:50]
        assert len(posts) == 50
        expected = organic.posts_lifetime_insights(client, posts, InsightsReport())
        httpx.post(f"{sandbox}/_sandbox/pages/retire", json={"metrics": ["post_clicks"]}).raise_for_status()
        before = client.stats.calls
        report = InsightsReport()
        values = organic.posts_lifetime_insights(client, posts, report)
        # the batch (every item refused), the probe (one item per metric), the batch again without it
        assert client.stats.calls - before == 3
        assert report.probes == 1 and report.dropped_metrics == {"post_clicks"}
        assert values == {p: {m: v for m, v in metrics.items() if m != "post_clicks"}
                          for p, metrics in expected.items()}
        before = client.stats.calls
        again = organic.posts_lifetime_insights(client, posts, report)  # later in the same run: left out
        assert client.stats.calls - before == 1 and report.probes == 1 and again == values


def test_later_batches_leave_the_retired_metric_out(sandbox):
    httpx.post(f"{sandbox}/_sandbox/pages/retire", json={"metrics": ["post_clicks"]}).raise_for_status()
    with GraphClient(f"{sandbox}/v24.0", TOKEN) as client:
        posts = [p for p in _posts(client, 200) if not organic.is_video_post(p)][:120]
        assert len(posts) == 120  # three batches of 50, 50 and 20
        before = client.stats.calls
        report = InsightsReport()
        values = organic.posts_lifetime_insights(client, posts, report)
    assert client.stats.calls - before == 3 + 2  # the first batch learns; the next two leave it out
    assert report.probes == 1
    assert all(set(v) == {"post_media_view", "post_total_media_view_unique", "post_reactions_like_total"}
               for v in values.values())


def test_a_retired_daily_metric_is_probed_once_across_windows(sandbox):
    httpx.post(f"{sandbox}/_sandbox/pages/retire", json={"metrics": ["page_views_total"]}).raise_for_status()
    with GraphClient(f"{sandbox}/v24.0", TOKEN) as client:
        end = datetime.now(UTC).date() - timedelta(days=1)
        report = organic.page_daily_insights(client, PAGE, end - timedelta(days=270), end)  # three windows
        assert client.stats.calls == 3 and report.probes == 1
    assert report.dropped_metrics == {"page_views_total"}
    assert {v.metric for v in report.values} == set(organic.PAGE_DAILY_METRICS) - {"page_views_total"}
    assert len({v.day for v in report.values}) == 270


def test_a_mislabelled_media_type_is_probed_and_the_post_kept(sandbox):
    with GraphClient(f"{sandbox}/v24.0", TOKEN) as client:
        day = datetime.now(UTC).date() - timedelta(days=10)
        media = organic.instagram_media(client, IG, day, day + timedelta(days=7))
        feed_video = next(m for m in media if m.media_type == "VIDEO")
        # A media type we map wrongly (as Meta renames sets) must not lose the post: REELS' metrics on a feed
        # video are refused in the batch, then probed one by one and only the valid ones kept.
        mislabelled = Post(**{**feed_video.__dict__, "media_type": "REELS"})
        others = [m for m in media if m.media_type != "REELS"][:3]
        report = InsightsReport()
        values = organic.posts_lifetime_insights(client, [mislabelled, *others], report)
        assert client.stats.calls == 1 + 1 + 1  # media list, batch, probe
    assert set(values[mislabelled.post_id]) == {"reach", "saved"}
    assert "views" in report.dropped_metrics
    assert all(values[m.post_id] for m in others)
