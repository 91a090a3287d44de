"""Organic insights: Facebook Page posts and Instagram media, their lifetime insights, and the accounts'
daily insights — Meta's shapes parsed here and nowhere else.

Meta renames organic metrics with every Graph version and "one invalid metric fails the entire request"
(Airbyte #84408), so every insights call here falls back to asking metric by metric when Meta says a
metric is invalid, and reports the ones it dropped instead of failing the sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from everreach_data.meta.client import BatchCall, GraphClient
from everreach_data.meta.errors import ErrorKind, GraphAPIError

PAGE_DAILY_METRICS = ("page_media_view", "page_total_media_view_unique", "page_post_engagements",
                      "page_daily_follows_unique", "page_daily_unfollows_unique", "page_views_total")
POST_LIFETIME_METRICS = ("post_media_view", "post_total_media_view_unique", "post_clicks",
                         "post_reactions_like_total")
#: Per media type (Meta's IG Media Insights; ``impressions``/``plays`` were removed in v22).
MEDIA_METRICS = {
    "REELS": ("reach", "likes", "comments", "shares", "saved", "views", "total_interactions",
              "ig_reels_avg_watch_time", "ig_reels_video_view_total_time"),
    "VIDEO": ("reach", "saved"),
    "CAROUSEL_ALBUM": ("reach", "saved", "shares", "follows", "profile_visits", "total_interactions", "views"),
    "IMAGE": ("reach", "saved", "likes", "comments", "shares", "follows", "profile_visits",
              "total_interactions", "views"),
}
IG_DAILY_SERIES = ("reach", "follower_count")
IG_DAILY_TOTALS = ("views", "accounts_engaged", "total_interactions", "likes", "comments", "shares", "saves",
                   "profile_views")
PAGE_WINDOW_DAYS = 90   # Meta: at most 90 days per since/until request
IG_WINDOW_DAYS = 30


@dataclass(frozen=True)
class Post:
    platform: str            # facebook | instagram
    account_id: str
    post_id: str
    posted_at: datetime
    caption: str | None
    media_type: str | None
    permalink: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class MetricValue:
    day: date
    metric: str
    value: Decimal


@dataclass
class InsightsReport:
    values: list[MetricValue] = field(default_factory=list)
    dropped_metrics: set[str] = field(default_factory=set)


def parse_meta_time(text: str) -> datetime:
    """Meta's ``2025-10-01T07:00:00+0000`` as an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)


def day_of_end_time(end_time: str) -> date:
    """The day a daily value belongs to: Meta stamps it with the *end* of that day."""
    return (parse_meta_time(end_time) - timedelta(days=1)).date()


def windows(since: date, until: date, max_days: int) -> Iterator[tuple[date, date]]:
    """``[since, until)`` cut into windows Meta accepts."""
    start = since
    while start < until:
        end = min(until, start + timedelta(days=max_days))
        yield start, end
        start = end


def _is_invalid_metric(exc: GraphAPIError) -> bool:
    return exc.kind is ErrorKind.INVALID and "metric" in exc.message.lower()


def _insights(client: GraphClient, node: str, metrics: tuple[str, ...], params: dict[str, Any],
              dropped: set[str]) -> list[dict[str, Any]]:
    """``/{node}/insights`` for ``metrics``; on Meta's invalid-metric error, one metric at a time."""
    try:
        return client.get(f"{node}/insights", metric=",".join(metrics), **params).get("data") or []
    except GraphAPIError as exc:
        if not _is_invalid_metric(exc) or len(metrics) == 1:
            if _is_invalid_metric(exc):
                dropped.update(metrics)
                return []
            raise
    out: list[dict[str, Any]] = []
    for metric in metrics:
        out += _insights(client, node, (metric,), params, dropped)
    return out


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None  # breakdown-shaped values are not daily numbers
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def page_posts(client: GraphClient, page_id: str, since: date, until: date) -> list[Post]:
    fields = "id,message,created_time,permalink_url,status_type"
    return [Post("facebook", page_id, p["id"], parse_meta_time(p["created_time"]), p.get("message"),
                 p.get("status_type"), p.get("permalink_url"), p)
            for p in client.paginate(f"{page_id}/posts", {"fields": fields, "since": since.isoformat(),
                                                          "until": until.isoformat(), "limit": 100})]


def instagram_media(client: GraphClient, ig_user_id: str, since: date, until: date) -> list[Post]:
    fields = "id,caption,media_type,media_product_type,permalink,timestamp"
    out = []
    for m in client.paginate(f"{ig_user_id}/media", {"fields": fields, "since": since.isoformat(),
                                                     "until": until.isoformat(), "limit": 100}):
        kind = "REELS" if m.get("media_product_type") == "REELS" else m.get("media_type")
        out.append(Post("instagram", ig_user_id, m["id"], parse_meta_time(m["timestamp"]), m.get("caption"),
                        kind, m.get("permalink"), m))
    return out


def _post_metrics(post: Post) -> tuple[str, ...]:
    if post.platform == "facebook":
        return POST_LIFETIME_METRICS
    return MEDIA_METRICS.get(post.media_type or "", ("reach", "saved"))


def _post_params(post: Post) -> dict[str, Any]:
    return {"period": "lifetime"} if post.platform == "facebook" else {}


def _lifetime_values(entries: list[dict[str, Any]]) -> dict[str, Decimal]:
    out = {}
    for entry in entries:
        values = entry.get("values") or [{}]
        number = _number(values[-1].get("value"))
        if number is not None:
            out[entry["name"]] = number
    return out


def post_lifetime_insights(client: GraphClient, post: Post, report: InsightsReport) -> dict[str, Decimal]:
    """Lifetime metrics of one post or media (the set depends on the media type on Instagram)."""
    return _lifetime_values(_insights(client, post.post_id, _post_metrics(post), _post_params(post),
                                      report.dropped_metrics))


def posts_lifetime_insights(client: GraphClient, posts: list[Post],
                            report: InsightsReport) -> dict[str, dict[str, Decimal]]:
    """Lifetime metrics of many posts in Graph batch requests (50 posts per HTTP request). A post whose
    item Meta refuses for an invalid metric is asked again on its own, metric by metric."""
    calls = [BatchCall("GET", f"{p.post_id}/insights", {"metric": ",".join(_post_metrics(p)), **_post_params(p)})
             for p in posts]
    out: dict[str, dict[str, Decimal]] = {}
    for post, result in zip(posts, client.batch(calls), strict=True):
        if result.error is None:
            out[post.post_id] = _lifetime_values((result.body or {}).get("data") or [])
        elif _is_invalid_metric(result.error):
            out[post.post_id] = post_lifetime_insights(client, post, report)
        else:
            raise result.error
    return out


def page_daily_insights(client: GraphClient, page_id: str, since: date, until: date,
                        metrics: tuple[str, ...] = PAGE_DAILY_METRICS) -> InsightsReport:
    report = InsightsReport()
    for start, end in windows(since, until, PAGE_WINDOW_DAYS):
        params = {"period": "day", "since": start.isoformat(), "until": end.isoformat()}
        for entry in _insights(client, page_id, metrics, params, report.dropped_metrics):
            for point in entry.get("values") or []:
                number = _number(point.get("value"))
                if number is not None and "end_time" in point:
                    report.values.append(MetricValue(day_of_end_time(point["end_time"]), entry["name"], number))
    return report


def instagram_daily_insights(client: GraphClient, ig_user_id: str, since: date, until: date) -> InsightsReport:
    """Daily series (reach, new followers) in ≤30-day windows, and the total_value metrics day by day
    (Meta has no daily series for those)."""
    report = InsightsReport()
    for start, end in windows(since, until, IG_WINDOW_DAYS):
        params = {"period": "day", "since": start.isoformat(), "until": end.isoformat()}
        for entry in _insights(client, ig_user_id, IG_DAILY_SERIES, params, report.dropped_metrics):
            for point in entry.get("values") or []:
                number = _number(point.get("value"))
                if number is not None and "end_time" in point:
                    report.values.append(MetricValue(day_of_end_time(point["end_time"]), entry["name"], number))
    day = since
    while day < until:
        params = {"period": "day", "metric_type": "total_value", "since": day.isoformat(),
                  "until": (day + timedelta(days=1)).isoformat()}
        for entry in _insights(client, ig_user_id, IG_DAILY_TOTALS, params, report.dropped_metrics):
            number = _number((entry.get("total_value") or {}).get("value"))
            if number is not None:
                report.values.append(MetricValue(day, entry["name"], number))
        day += timedelta(days=1)
    return report
