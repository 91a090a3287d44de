"""The Pages and Instagram surface over real HTTP: Meta's shapes, paging, metric rules and limits,
determinism by seed and restatement."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from everreach_sandbox.core import utc_today
from everreach_sandbox.defaults import SANDBOX_DEFAULTS as D
from everreach_sandbox.pages import MEDIA_METRICS
from everreach_sandbox.server import build_app, build_state
from tests.servers import serve

PAGE = D["MESSENGER_PAGE_ID"]
IG = D["INSTAGRAM_USER_ID"]
TOKEN = D["MESSENGER_PAGE_TOKEN"]


@pytest.fixture(scope="module")
def graph() -> httpx.Client:
    with serve(build_app(build_state(seed=42))) as url:
        with httpx.Client(base_url=f"{url}/v24.0", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield client


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def meta_error(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    return response.json()["error"]


def days_ago(n: int) -> str:
    return (utc_today() - timedelta(days=n)).isoformat()


# ───────────────────────────── posts ─────────────────────────────


def test_posts_page_with_cursors_and_next_until_exhausted(graph: httpx.Client) -> None:
    first = ok(graph.get(f"/{PAGE}/posts", params={"limit": 10, "since": days_ago(60)}))
    assert len(first["data"]) == 10
    assert set(first["data"][0]) == {"id", "message", "created_time"}
    assert first["data"][0]["id"].startswith(f"{PAGE}_")
    assert set(first["paging"]["cursors"]) == {"before", "after"} and "previous" not in first["paging"]
    seen, body, pages = [], first, 0
    while True:
        seen += [p["id"] for p in body["data"]]
        pages += 1
        nxt = body["paging"].get("next")
        if not nxt:
            break
        assert nxt.startswith("http://127.0.0.1")
        body = ok(graph.get(nxt))
        assert "previous" in body["paging"]
    assert len(seen) == len(set(seen)) > 10 and pages == -(-len(seen) // 10)
    created = [p["created_time"] for p in ok(graph.get(f"/{PAGE}/posts", params={"limit": 100}))["data"]]
    assert created == sorted(created, reverse=True)
    assert all(c.endswith("+0000") and len(c) == 24 for c in created)
    # the last page has cursors but no next: a client must stop on the missing next
    assert "cursors" in body["paging"] and "next" not in body["paging"]


def test_posts_fields_and_single_post(graph: httpx.Client) -> None:
    body = ok(graph.get(f"/{PAGE}/posts", params={"fields": "id,permalink_url,status_type", "limit": 1}))
    post = body["data"][0]
    assert set(post) == {"id", "permalink_url", "status_type"}
    single = ok(graph.get(f"/{post['id']}", params={"fields": "message,created_time"}))
    assert single["id"] == post["id"] and set(single) == {"id", "message", "created_time"}


# ───────────────────────────── page insights ─────────────────────────────


def test_page_insights_shape_one_value_per_day(graph: httpx.Client) -> None:
    since, until = utc_today() - timedelta(days=7), utc_today() - timedelta(days=1)
    body = ok(
        graph.get(
            f"/{PAGE}/insights",
            params={
                "metric": "page_media_view,page_follows",
                "period": "day",
                "since": since.isoformat(),
                "until": until.isoformat(),
            },
        )
    )
    assert [m["name"] for m in body["data"]] == ["page_media_view", "page_follows"]
    entry = body["data"][0]
    assert set(entry) == {"name", "period", "values", "title", "description", "id"}
    assert entry["period"] == "day" and entry["id"] == f"{PAGE}/insights/page_media_view/day"
    assert len(entry["values"]) == 6  # until is exclusive
    assert entry["values"][0]["end_time"] == f"{(since + timedelta(days=1)).isoformat()}T07:00:00+0000"
    assert all(isinstance(v["value"], int) for v in entry["values"])
    assert set(body["paging"]) == {"previous", "next"}
    follows = [v["value"] for v in body["data"][1]["values"]]
    daily = ok(
        graph.get(
            f"/{PAGE}/insights",
            params={
                "metric": "page_daily_follows_unique,page_daily_unfollows_unique",
                "since": since.isoformat(),
                "until": until.isoformat(),
            },
        )
    )["data"]
    net = [a["value"] - b["value"] for a, b in zip(daily[0]["values"], daily[1]["values"], strict=True)]
    assert [follows[i] - follows[i - 1] for i in range(1, 6)] == net[1:]  # totals follow the daily net


def test_page_insights_unix_timestamps_and_next_stops(graph: httpx.Client) -> None:
    body = ok(graph.get(f"/{PAGE}/insights", params={"metric": "page_views_total"}))
    assert len(body["data"][0]["values"]) == 2  # default: the last two days
    walked = 0
    while "next" in body.get("paging", {}):
        body = ok(graph.get(body["paging"]["next"]))
        walked += 1
    assert walked <= 1  # next never walks into the future


def test_page_insights_over_90_days_is_metas_error(graph: httpx.Client) -> None:
    err = meta_error(
        graph.get(
            f"/{PAGE}/insights",
            params={
                "metric": "page_media_view",
                "period": "day",
                "since": days_ago(120),
                "until": days_ago(20),
            },
        )
    )
    assert err["code"] == 100
    assert err["message"] == "(#100) There cannot be more than 90 days (7776000 s) between since and until"
    assert ok(
        graph.get(
            f"/{PAGE}/insights",
            params={"metric": "page_media_view", "since": days_ago(110), "until": days_ago(20)},
        )
    )["data"][0]["values"]


@pytest.mark.parametrize(
    "metric", ["page_impressions_unique", "page_media_view,post_impressions_unique", "page_fans", "nonsense"]
)
def test_retired_or_unknown_page_metric_fails_the_whole_request(graph: httpx.Client, metric: str) -> None:
    err = meta_error(graph.get(f"/{PAGE}/insights", params={"metric": metric, "period": "day"}))
    assert (err["code"], err["message"]) == (100, "(#100) The value must be a valid insights metric")


def test_post_insights_lifetime(graph: httpx.Client) -> None:
    post = ok(graph.get(f"/{PAGE}/posts", params={"since": days_ago(60), "until": days_ago(40), "limit": 1}))
    post_id = post["data"][0]["id"]
    body = ok(graph.get(f"/{post_id}/insights", params={"metric": "post_media_view,post_clicks"}))
    assert [m["name"] for m in body["data"]] == ["post_media_view", "post_clicks"]
    entry = body["data"][0]
    assert entry["period"] == "lifetime" and entry["id"] == f"{post_id}/insights/post_media_view/lifetime"
    assert list(entry["values"][0]) == ["value"] and entry["values"][0]["value"] > 0
    err = meta_error(graph.get(f"/{post_id}/insights", params={"metric": "post_impressions_unique"}))
    assert err["message"] == "(#100) The value must be a valid insights metric"


# ───────────────────────────── Instagram ─────────────────────────────


def _media(graph: httpx.Client) -> list[dict]:
    return ok(
        graph.get(
            f"/{IG}/media",
            params={
                "fields": "id,caption,media_type,media_product_type,permalink,timestamp,like_count,"
                "comments_count",
                "limit": 40,
            },
        )
    )["data"]


def test_media_has_every_type_and_metas_fields(graph: httpx.Client) -> None:
    media = _media(graph)
    kinds = {(m["media_type"], m["media_product_type"]) for m in media}
    assert kinds == {("IMAGE", "FEED"), ("VIDEO", "FEED"), ("VIDEO", "REELS"), ("CAROUSEL_ALBUM", "FEED")}
    assert all(m["permalink"].startswith("https://www.instagram.com/") for m in media)
    assert ok(graph.get(f"/{IG}/media"))["data"][0].keys() == {"id"}  # Meta's default: ids only


def _one(media: list[dict], media_type: str, product: str = "FEED") -> str:
    return next(
        m["id"] for m in media if m["media_type"] == media_type and m["media_product_type"] == product
    )


@pytest.mark.parametrize(
    ("media_type", "product", "kind"),
    [
        ("IMAGE", "FEED", "IMAGE"),
        ("VIDEO", "REELS", "REELS"),
        ("CAROUSEL_ALBUM", "FEED", "CAROUSEL_ALBUM"),
        ("VIDEO", "FEED", "VIDEO"),
    ],
)
def test_media_insights_metric_set_by_type(
    graph: httpx.Client, media_type: str, product: str, kind: str
) -> None:
    media_id = _one(_media(graph), media_type, product)
    metrics = MEDIA_METRICS[kind]
    body = ok(graph.get(f"/{media_id}/insights", params={"metric": ",".join(metrics)}))
    assert [m["name"] for m in body["data"]] == list(metrics)
    for entry in body["data"]:
        assert (
            entry["period"] == "lifetime" and entry["id"] == f"{media_id}/insights/{entry['name']}/lifetime"
        )
        assert set(entry) == {"name", "period", "values", "title", "description", "id"}


def test_media_insights_total_interactions_adds_up(graph: httpx.Client) -> None:
    media_id = _one(_media(graph), "IMAGE")
    body = ok(
        graph.get(
            f"/{media_id}/insights", params={"metric": "likes,comments,saved,shares,total_interactions"}
        )
    )
    values = {m["name"]: m["values"][0]["value"] for m in body["data"]}
    assert (
        values["total_interactions"]
        == values["likes"] + values["comments"] + values["saved"] + values["shares"]
    )


@pytest.mark.parametrize("metric", ["impressions", "plays", "video_views"])
def test_removed_media_metrics_get_metas_error(graph: httpx.Client, metric: str) -> None:
    media_id = _one(_media(graph), "VIDEO", "REELS")
    err = meta_error(graph.get(f"/{media_id}/insights", params={"metric": f"reach,{metric}"}))
    assert err["code"] == 100
    assert err["message"] == (
        f"(#100) Starting from version v22.0 and above, the {metric} metric is no longer "
        "supported for the queried media."
    )


def test_metric_not_supported_for_this_media_type(graph: httpx.Client) -> None:
    media_id = _one(_media(graph), "VIDEO", "FEED")
    err = meta_error(graph.get(f"/{media_id}/insights", params={"metric": "reach,likes"}))
    assert err["message"] == (
        "(#100) The Media Insights API does not support the likes metric for this media product type."
    )


def test_ig_user_insights_series_and_total_value(graph: httpx.Client) -> None:
    params = {"metric": "reach,follower_count", "period": "day", "since": days_ago(8), "until": days_ago(1)}
    body = ok(graph.get(f"/{IG}/insights", params=params))
    reach = body["data"][0]
    assert (
        reach["name"] == "reach" and len(reach["values"]) == 7 and reach["id"] == f"{IG}/insights/reach/day"
    )
    assert set(reach["values"][0]) == {"value", "end_time"}
    err = meta_error(graph.get(f"/{IG}/insights", params={**params, "metric": "reach,views,profile_views"}))
    assert err["message"] == (
        "(#100) The following metrics (views,profile_views) should be specified with "
        "parameter metric_type=total_value"
    )
    total = ok(
        graph.get(f"/{IG}/insights", params={**params, "metric": "views,likes", "metric_type": "total_value"})
    )
    entry = total["data"][0]
    assert set(entry) == {"name", "period", "title", "description", "total_value", "id"}
    assert entry["total_value"]["value"] > 0
    err = meta_error(graph.get(f"/{IG}/insights", params={**params, "metric": "impressions"}))
    assert "the impressions metric is no longer supported" in err["message"]
    err = meta_error(graph.get(f"/{IG}/insights", params={**params, "since": days_ago(40)}))
    assert err["message"] == "(#100) There cannot be more than 30 days (2592000 s) between since and until"


# ───────────────────────────── determinism and restatement ─────────────────────────────


def _snapshot(seed: int) -> dict:
    with serve(build_app(build_state(seed=seed))) as url:
        with httpx.Client(base_url=f"{url}/v24.0", params={"access_token": TOKEN}) as c:
            page = ok(
                c.get(
                    f"/{PAGE}/insights",
                    params={
                        "metric": "page_media_view,page_follows",
                        "since": days_ago(10),
                        "until": days_ago(1),
                    },
                )
            )["data"]
            posts = ok(c.get(f"/{PAGE}/posts", params={"since": days_ago(30), "limit": 100}))["data"]
            media = ok(c.get(f"/{IG}/media", params={"fields": "id,like_count", "since": days_ago(30)}))[
                "data"
            ]
            ig = ok(
                c.get(
                    f"/{IG}/insights", params={"metric": "reach", "since": days_ago(10), "until": days_ago(1)}
                )
            )["data"]
    return {"page": page, "posts": posts, "media": media, "ig": ig}


def test_same_seed_same_numbers_different_seed_different() -> None:
    a, b, c = _snapshot(7), _snapshot(7), _snapshot(8)
    assert a == b
    assert a["page"] != c["page"] and a["ig"] != c["ig"] and a["posts"] != c["posts"]


def test_restatement_changes_only_the_restated_days() -> None:
    with serve(build_app(build_state(seed=3))) as url:
        params = {
            "access_token": TOKEN,
            "metric": "page_media_view",
            "since": days_ago(10),
            "until": days_ago(0),
        }
        before = [
            v["value"]
            for v in ok(httpx.get(f"{url}/v24.0/{PAGE}/insights", params=params))["data"][0]["values"]
        ]
        httpx.post(f"{url}/_sandbox/restate", json={"days": 3})
        after = [
            v["value"]
            for v in ok(httpx.get(f"{url}/v24.0/{PAGE}/insights", params=params))["data"][0]["values"]
        ]
        assert before[:8] == after[:8]  # days 10..3 ago unchanged
        assert before[8:] != after[8:]  # the last two complete days (within 3 days) restated
        again = [
            v["value"]
            for v in ok(httpx.get(f"{url}/v24.0/{PAGE}/insights", params=params))["data"][0]["values"]
        ]
        assert again == after  # restated numbers are stable until the next restatement
