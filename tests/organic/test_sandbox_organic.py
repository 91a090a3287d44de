"""The sandbox's Pages and Instagram surface for what the organic assets read beyond posts: Meta's
24-hour story window, metric sets by media type, demographics and breakdown rules, Reels, retirements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from everreach_sandbox.core import utc_today
from everreach_sandbox.server import build_app, build_state
from tests.organic.helpers import IG, PAGE, TOKEN
from tests.servers import serve

STATE = build_state(seed=3)
STORIES = build_app(STATE).state.sandbox.extra["pages"]["stories"]
STORY = next(n for n in STORIES if n.data["posted"] < utc_today())  # yesterday's last story


@pytest.fixture(scope="module")
def base():
    with serve(build_app(build_state(seed=3))) as url:
        yield url


@pytest.fixture
def graph(base):
    with httpx.Client(base_url=f"{base}/v24.0", params={"access_token": TOKEN}) as client:
        yield client
    httpx.post(f"{base}/_sandbox/pages/clock", json={"now": None})
    httpx.post(f"{base}/_sandbox/pages/retire", json={"metrics": []})


def at(base: str, moment: datetime) -> None:
    httpx.post(f"{base}/_sandbox/pages/clock", json={"now": moment.isoformat()}).raise_for_status()


def error(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    return response.json()["error"]


def test_a_story_is_listed_and_measured_for_24_hours_only(base, graph):
    posted = STORY.data["timestamp"]
    for moment, live in [(posted - timedelta(seconds=1), False), (posted, True),
                         (posted + timedelta(hours=23, minutes=59), True), (posted + timedelta(hours=24), False)]:
        at(base, moment)
        listed = {s["id"] for s in graph.get(f"/{IG}/stories").json()["data"]}
        assert (STORY.id in listed) is live
        body = graph.get(f"/{STORY.id}/insights", params={"metric": "reach,views"})
        if live and body.status_code == 400:  # the first hour of a small story: Meta withholds it
            assert error(body)["code"] == 10 and moment == posted
        elif not live:
            assert body.json() == {"data": []}
    at(base, posted + timedelta(hours=23))
    entries = graph.get(f"/{STORY.id}/insights", params={"metric": "reach,views,navigation"}).json()["data"]
    values = {e["name"]: e["values"][0]["value"] for e in entries}
    assert values["views"] >= values["reach"] > 0 and all(e["period"] == "lifetime" for e in entries)
    story = graph.get(f"/{IG}/stories", params={"fields": "id,media_product_type,timestamp"}).json()["data"]
    assert {s["media_product_type"] for s in story} == {"STORY"}


def test_story_metric_set_is_metas(base, graph):
    at(base, STORY.data["timestamp"] + timedelta(hours=5))
    assert "v22.0" in error(graph.get(f"/{STORY.id}/insights", params={"metric": "reach,impressions"}))["message"]
    assert error(graph.get(f"/{STORY.id}/insights", params={"metric": "reach,saved"}))["message"] == (
        "(#100) The Media Insights API does not support the saved metric for this media product type.")
    media = graph.get(f"/{IG}/media", params={"fields": "id,media_type", "limit": 10}).json()["data"]
    image = next(m["id"] for m in media if m["media_type"] == "IMAGE")
    assert "navigation" in error(graph.get(f"/{image}/insights", params={"metric": "reach,navigation"}))["message"]


def test_the_webhook_carries_the_final_numbers_the_api_served_last(base, graph):
    posted = STORY.data["timestamp"]
    at(base, posted - timedelta(minutes=1))
    at(base, posted + timedelta(hours=23, minutes=30))
    last = {e["name"]: e["values"][0]["value"] for e in graph.get(
        f"/{STORY.id}/insights", params={"metric": "reach,replies"}).json()["data"]}
    at(base, posted + timedelta(hours=24))
    payloads = httpx.post(f"{base}/_sandbox/pages/stories/expire").json()["payloads"]
    mine = [p for p in payloads if p["entry"][0]["changes"][0]["value"]["media_id"] == STORY.id]
    assert len(mine) == 1 and mine[0]["entry"][0]["time"] == int((posted + timedelta(hours=24)).timestamp())
    value = mine[0]["entry"][0]["changes"][0]["value"]
    assert set(value) == {"media_id", "impressions", "reach", "taps_forward", "taps_back", "exits", "replies"}
    assert (value["reach"], value["replies"]) == (last["reach"], last["replies"])
    assert httpx.post(f"{base}/_sandbox/pages/stories/expire").json()["payloads"] == []  # sent once


def _demographics(graph, **params):
    return graph.get(f"/{IG}/insights", params={"period": "lifetime", "metric_type": "total_value", **params})


def test_demographics_rules(graph):
    followers = graph.get(f"/{IG}", params={"fields": "followers_count"}).json()["followers_count"]
    body = _demographics(graph, metric="follower_demographics", breakdown="age,gender").json()
    results = body["data"][0]["total_value"]["breakdowns"][0]
    assert results["dimension_keys"] == ["age", "gender"] and len(results["results"]) <= 21
    assert sum(r["value"] for r in results["results"]) == followers
    assert "timeframe is required" in error(_demographics(graph, metric="engaged_audience_demographics",
                                                          breakdown="age"))["message"]
    for withdrawn in ("last_30_days", "prev_month"):
        assert error(_demographics(graph, metric="engaged_audience_demographics", breakdown="age",
                                   timeframe=withdrawn))["message"] == (
            "(#100) timeframe must be one of the following values: this_week, this_month")
    assert "period=lifetime" in error(graph.get(f"/{IG}/insights", params={
        "metric": "follower_demographics", "metric_type": "total_value", "breakdown": "age"}))["message"]
    assert "breakdown[0]" in error(_demographics(graph, metric="follower_demographics",
                                                 breakdown="language"))["message"]
    week = _demographics(graph, metric="engaged_audience_demographics", breakdown="gender", timeframe="this_week")
    month = _demographics(graph, metric="engaged_audience_demographics", breakdown="gender", timeframe="this_month")
    total = [sum(r["value"] for r in b.json()["data"][0]["total_value"]["breakdowns"][0]["results"])
             for b in (week, month)]
    today = utc_today()
    week_in_month = today.weekday() < today.day  # this week began on or after the 1st
    assert total[0] > 0 and total[1] > 0
    if week_in_month:  # this week's engaged accounts are some of this month's
        assert total[0] <= total[1]


def test_breakdown_rules(graph):
    day = (utc_today() - timedelta(days=3)).isoformat()
    params = {"period": "day", "metric_type": "total_value", "since": day,
              "until": (utc_today() - timedelta(days=2)).isoformat()}
    assert error(graph.get(f"/{IG}/insights", params={**params, "metric": "accounts_engaged",
                                                      "breakdown": "follower_type"}))["message"] == (
        "(#100) The following metrics (accounts_engaged) do not support the breakdown follower_type")
    assert error(graph.get(f"/{IG}/insights", params={**params, "metric": "views",
                                                      "breakdown": "follower_type,media_product_type"}))
    no_total = {k: v for k, v in params.items() if k != "metric_type"}
    assert error(graph.get(f"/{IG}/insights", params={**no_total, "metric": "reach", "breakdown": "follower_type"}))
    entry = graph.get(f"/{IG}/insights", params={**params, "metric": "likes",
                                                 "breakdown": "media_product_type"}).json()["data"][0]
    results = entry["total_value"]["breakdowns"][0]["results"]
    assert sum(r["value"] for r in results) == entry["total_value"]["value"]
    assert [r["dimension_values"] for r in results] == [["POST"], ["REEL"], ["STORY"], ["AD"]]


def test_reels_and_video_metrics_and_retirements(base, graph):
    reel = graph.get(f"/{PAGE}/video_reels").json()["data"][0]["id"]
    assert graph.get(f"/{reel}/video_insights", params={"metric": "blue_reels_play_count"}).status_code == 200
    assert "nonexisting field (insights)" in error(graph.get(f"/{reel}/insights",
                                                             params={"metric": "post_media_view"}))["message"]
    assert error(graph.get(f"/{reel}/video_insights", params={"metric": "post_impressions_unique"}))["message"] == (
        "(#100) The value must be a valid insights metric")
    posts = graph.get(f"/{PAGE}/posts", params={"fields": "id,status_type", "limit": 20}).json()["data"]
    video = next(p["id"] for p in posts if p["status_type"] == "added_video")
    photo = next(p["id"] for p in posts if p["status_type"] == "added_photos")
    assert graph.get(f"/{video}/insights", params={"metric": "post_video_view_time"}).status_code == 200
    assert error(graph.get(f"/{photo}/insights", params={"metric": "post_video_view_time"}))
    httpx.post(f"{base}/_sandbox/pages/retire", json={"metrics": ["page_media_view"]}).raise_for_status()
    assert error(graph.get(f"/{PAGE}/insights", params={"metric": "page_media_view"}))["message"] == (
        "(#100) The value must be a valid insights metric")
    httpx.post(f"{base}/_sandbox/pages/retire", json={"metrics": []}).raise_for_status()
    assert graph.get(f"/{PAGE}/insights", params={"metric": "page_media_view"}).status_code == 200


def test_stories_clock_does_not_move_posts(base, graph):
    at(base, datetime.now(UTC) + timedelta(days=1))
    today_posts = graph.get(f"/{PAGE}/posts", params={"since": utc_today().isoformat(), "fields": "created_time"})
    assert all(p["created_time"] <= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
               for p in today_posts.json()["data"])
