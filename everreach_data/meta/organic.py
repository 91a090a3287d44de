"""Organic insights: Facebook Page posts, Reels and videos, Instagram media and stories, their lifetime
insights, the accounts' daily insights (totals and breakdowns) and audience demographics — Meta's shapes
parsed here and nowhere else.

Meta renames organic metrics with every Graph version and "one invalid metric fails the entire request"
(Airbyte #84408). Every insights call here goes through :func:`ask`: calls travel in Graph batch requests,
and when Meta refuses a call for an invalid metric, the metrics of that call are probed once, one per item
of a single batch request; the refused ones are dropped for the rest of the run for that *family* of calls
(the same node type and metric set, e.g. Instagram Reels, Page daily), reported, and every later request
leaves them out. A batch of 50 posts with one retired metric costs three requests, not 250.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from everreach_data.meta.client import MAX_BATCH, BatchCall, BatchResult, GraphClient
from everreach_data.meta.errors import ErrorKind, GraphAPIError

# ── what is asked (Meta's current names; the retired ones are in the README's organic section) ──

PAGE_DAILY_METRICS = ("page_media_view", "page_total_media_view_unique", "page_post_engagements",
                      "page_daily_follows_unique", "page_daily_unfollows_unique", "page_follows",
                      "page_views_total")
POST_LIFETIME_METRICS = ("post_media_view", "post_total_media_view_unique", "post_clicks",
                         "post_reactions_like_total")
#: Page posts whose ``status_type`` is a video also have the post-level video metrics.
VIDEO_POST_METRICS = (*POST_LIFETIME_METRICS, "post_video_avg_time_watched", "post_video_view_time")
#: Facebook Reels (``/{page_id}/video_reels``) have metrics only on ``/{video_id}/video_insights``.
FB_REEL_METRICS = ("blue_reels_play_count", "fb_reels_total_plays", "fb_reels_replay_count",
                   "post_video_avg_time_watched", "post_video_view_time", "post_video_followers")
#: Per Instagram media type (Meta's IG Media Insights; ``impressions``/``plays`` were removed in v22).
MEDIA_METRICS = {
    "REELS": ("reach", "likes", "comments", "shares", "saved", "views", "total_interactions",
              "ig_reels_avg_watch_time", "ig_reels_video_view_total_time"),
    "VIDEO": ("reach", "saved"),
    "CAROUSEL_ALBUM": ("reach", "saved", "shares", "follows", "profile_visits", "total_interactions", "views"),
    "IMAGE": ("reach", "saved", "likes", "comments", "shares", "follows", "profile_visits",
              "total_interactions", "views"),
    "STORY": ("reach", "replies", "follows", "profile_visits", "shares", "total_interactions", "views",
              "navigation"),
}
IG_DAILY_SERIES = ("reach", "follower_count")
IG_DAILY_TOTALS = ("views", "accounts_engaged", "total_interactions", "likes", "comments", "shares", "saves",
                   "profile_views")
#: Account metrics Meta breaks down, by breakdown (``metric_type=total_value``, one breakdown per call).
IG_BREAKDOWNS = {
    "follower_type": ("views", "reach"),
    "media_product_type": ("views", "reach", "total_interactions", "likes", "comments", "shares", "saves"),
}
DEMOGRAPHIC_BREAKDOWNS = ("age", "gender", "city", "country")
#: Meta's ``timeframe`` values since v20 (``last_14_days``… were withdrawn); follower demographics describe
#: today's followers, so one timeframe is enough for them.
DEMOGRAPHIC_TIMEFRAMES = {"follower_demographics": ("this_month",),
                          "engaged_audience_demographics": ("this_week", "this_month")}
MEDIA_FIELDS = ("id,caption,media_type,media_product_type,permalink,timestamp,"
                "children{id,media_type,media_url,permalink,timestamp}")
STORY_FIELDS = "id,caption,media_type,media_product_type,permalink,timestamp,media_url"
PAGE_WINDOW_DAYS = 90   # Meta: at most 90 days per since/until request
IG_WINDOW_DAYS = 30
STORY_HOURS = 24        # Meta serves a story, and its insights, for 24 hours


@dataclass(frozen=True)
class Post:
    platform: str            # facebook | instagram
    account_id: str
    post_id: str
    posted_at: datetime
    caption: str | None
    media_type: str | None   # Instagram: IMAGE, VIDEO, REELS, CAROUSEL_ALBUM, STORY; Facebook: status_type or REELS
    permalink: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class MetricValue:
    day: date
    metric: str
    value: Decimal


@dataclass(frozen=True)
class BreakdownValue:
    """One day's value of ``metric`` for one value of a breakdown (``follower_type`` = ``FOLLOWER``)."""

    day: date
    metric: str
    breakdown: str
    breakdown_value: str
    value: Decimal


@dataclass(frozen=True)
class DemographicValue:
    """One bucket of an audience (``age`` = ``25-34``) as Meta reports it for ``timeframe``."""

    metric: str
    timeframe: str
    breakdown: str
    dimension: str
    value: Decimal


@dataclass
class InsightsReport:
    values: list[MetricValue] = field(default_factory=list)
    dropped_metrics: set[str] = field(default_factory=set)
    #: Metrics Meta refused this run, by family of calls: left out of every later call of the family.
    refused: dict[str, set[str]] = field(default_factory=dict)
    probes: int = 0

    def usable(self, family: str, metrics: tuple[str, ...]) -> tuple[str, ...]:
        gone = self.refused.get(family, set())
        return tuple(m for m in metrics if m not in gone)

    def refuse(self, family: str, metrics: Sequence[str]) -> None:
        self.refused.setdefault(family, set()).update(metrics)
        self.dropped_metrics.update(metrics)


@dataclass(frozen=True)
class InsightsCall:
    """``GET /{node}/{edge}?metric=…&params``. ``family`` names the calls that share a metric set: a metric
    Meta refuses in one of them is left out of the others."""

    node: str
    family: str
    metrics: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    edge: str = "insights"

    def batch_call(self, metrics: tuple[str, ...]) -> BatchCall:
        return BatchCall("GET", f"{self.node}/{self.edge}", {"metric": ",".join(metrics), **self.params})


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


def _days(since: date, until: date) -> Iterator[date]:
    day = since
    while day < until:
        yield day
        day += timedelta(days=1)


def _is_invalid_metric(exc: GraphAPIError) -> bool:
    return exc.kind is ErrorKind.INVALID and "metric" in exc.message.lower()


def _too_few_viewers(exc: GraphAPIError) -> bool:
    """``(#10) Not enough viewers for the media to show insights``: Meta withholds small stories' numbers."""
    return exc.code == 10 and "viewers" in exc.message.lower()


def _data(result: BatchResult) -> list[dict[str, Any]] | None:
    """An item's ``data`` entries; None when Meta refused it for an invalid metric. Other errors raise."""
    if result.error is None:
        return list((result.body or {}).get("data") or [])
    if _is_invalid_metric(result.error):
        return None
    if _too_few_viewers(result.error):
        return []
    raise result.error


def _probe(client: GraphClient, call: InsightsCall, metrics: tuple[str, ...],
           report: InsightsReport) -> list[dict[str, Any]]:
    """Which of ``metrics`` Meta refuses for ``call``'s family: one batch request, one item per metric. The
    refused ones are recorded; returns what the others answered (the probed call's data)."""
    report.probes += 1
    entries: list[dict[str, Any]] = []
    refused = []
    for metric, result in zip(metrics, client.batch([call.batch_call((m,)) for m in metrics]), strict=True):
        data = _data(result)
        if data is None:
            refused.append(metric)
        else:
            entries += data
    report.refuse(call.family, refused)
    return entries


def ask(client: GraphClient, calls: Sequence[InsightsCall], report: InsightsReport) -> list[list[dict[str, Any]]]:
    """Each call's ``data`` entries, in order, asked in Graph batch requests of :data:`MAX_BATCH`.

    Calls refused for an invalid metric are grouped by (family, metric set); each group's metrics are
    probed once on its first call (:func:`_probe`), and the group is asked again without the refused ones,
    with the next batch. Calls go out a batch at a time, so what one batch learns, the next leaves out.
    """
    out: list[list[dict[str, Any]]] = [[] for _ in calls]
    pending = list(range(len(calls)))
    while pending:
        chunk, pending = pending[:MAX_BATCH], pending[MAX_BATCH:]
        sent = [(i, m) for i in chunk if (m := report.usable(calls[i].family, calls[i].metrics))]
        results = client.batch([calls[i].batch_call(m) for i, m in sent]) if sent else []
        refused: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for (i, metrics), result in zip(sent, results, strict=True):
            data = _data(result)
            if data is None:
                refused.setdefault((calls[i].family, metrics), []).append(i)
            else:
                out[i] = data
        again: list[int] = []
        for (family, metrics), items in refused.items():
            if len(metrics) == 1:
                report.refuse(family, metrics)
                continue
            out[items[0]] = _probe(client, calls[items[0]], metrics, report)
            if report.usable(family, metrics) != metrics:
                again += items[1:]
            elif len(items) > 1:  # each metric alone is fine, not all together: ask them one at a time
                singles = client.batch([calls[i].batch_call((m,)) for i in items[1:] for m in metrics])
                for n, i in enumerate(items[1:]):
                    out[i] = [e for r in singles[n * len(metrics):(n + 1) * len(metrics)] for e in _data(r) or []]
        pending = again + pending
    return out


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None  # breakdown-shaped values are not plain numbers
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _lifetime_values(entries: list[dict[str, Any]]) -> dict[str, Decimal]:
    out = {}
    for entry in entries:
        values = entry.get("values") or [{}]
        number = _number(values[-1].get("value"))
        if number is None:
            number = _number((entry.get("total_value") or {}).get("value"))
        if number is not None:
            out[entry["name"]] = number
    return out


def _daily_values(entries: list[dict[str, Any]]) -> Iterator[MetricValue]:
    for entry in entries:
        for point in entry.get("values") or []:
            number = _number(point.get("value"))
            if number is not None and "end_time" in point:
                yield MetricValue(day_of_end_time(point["end_time"]), entry["name"], number)


# ───────────────────────────── posts and media ─────────────────────────────

def page_posts(client: GraphClient, page_id: str, since: date, until: date) -> list[Post]:
    fields = "id,message,created_time,permalink_url,status_type"
    return [Post("facebook", page_id, p["id"], parse_meta_time(p["created_time"]), p.get("message"),
                 p.get("status_type"), p.get("permalink_url"), p)
            for p in client.paginate(f"{page_id}/posts", {"fields": fields, "since": since.isoformat(),
                                                          "until": until.isoformat(), "limit": 100})]


def page_reels(client: GraphClient, page_id: str, since: date, until: date) -> list[Post]:
    """The Page's Reels (not in ``/posts``; their metrics are on ``/video_insights``)."""
    fields = "id,description,created_time,permalink_url,length"
    return [Post("facebook", page_id, r["id"], parse_meta_time(r["created_time"]), r.get("description"),
                 "REELS", r.get("permalink_url"), r)
            for r in client.paginate(f"{page_id}/video_reels", {"fields": fields, "since": since.isoformat(),
                                                                "until": until.isoformat(), "limit": 100})]


def _ig_post(ig_user_id: str, m: dict[str, Any]) -> Post:
    product = m.get("media_product_type")
    kind = product if product in ("REELS", "STORY") else m.get("media_type")
    return Post("instagram", ig_user_id, m["id"], parse_meta_time(m["timestamp"]), m.get("caption"), kind,
                m.get("permalink"), m)


def instagram_media(client: GraphClient, ig_user_id: str, since: date, until: date) -> list[Post]:
    """Media published in the range; a carousel's children (which Meta serves no insights for) come in
    the same request, as its ``children`` field."""
    return [_ig_post(ig_user_id, m)
            for m in client.paginate(f"{ig_user_id}/media", {"fields": MEDIA_FIELDS, "since": since.isoformat(),
                                                             "until": until.isoformat(), "limit": 100})]


def instagram_stories(client: GraphClient, ig_user_id: str) -> list[Post]:
    """The stories live now (Meta lists a story for its first 24 hours only)."""
    return [_ig_post(ig_user_id, m)
            for m in client.paginate(f"{ig_user_id}/stories", {"fields": STORY_FIELDS, "limit": 100})]


def is_video_post(post: Post) -> bool:
    return post.platform == "facebook" and (post.media_type or "").endswith("video")


def _post_call(post: Post) -> InsightsCall:
    if post.platform == "facebook" and post.media_type == "REELS":
        return InsightsCall(post.post_id, "facebook REELS", FB_REEL_METRICS, edge="video_insights")
    if post.platform == "facebook":
        metrics = VIDEO_POST_METRICS if is_video_post(post) else POST_LIFETIME_METRICS
        return InsightsCall(post.post_id, f"facebook {'video' if is_video_post(post) else 'post'}", metrics,
                            {"period": "lifetime"})
    kind = post.media_type or ""
    return InsightsCall(post.post_id, f"instagram {kind}", MEDIA_METRICS.get(kind, ("reach", "saved")))


def posts_lifetime_insights(client: GraphClient, posts: Sequence[Post],
                            report: InsightsReport) -> dict[str, dict[str, Decimal]]:
    """Lifetime metrics of posts, Reels, media or live stories (the metric set follows the type), in Graph
    batch requests of 50. A story's numbers are Meta's so far; an expired story's are no longer served."""
    answers = ask(client, [_post_call(p) for p in posts], report)
    return {p.post_id: _lifetime_values(entries) for p, entries in zip(posts, answers, strict=True)}


# ───────────────────────────── account insights ─────────────────────────────

def page_daily_insights(client: GraphClient, page_id: str, since: date, until: date,
                        metrics: tuple[str, ...] = PAGE_DAILY_METRICS,
                        report: InsightsReport | None = None) -> InsightsReport:
    report = report or InsightsReport()
    calls = [InsightsCall(page_id, "facebook page day", metrics,
                          {"period": "day", "since": start.isoformat(), "until": end.isoformat()})
             for start, end in windows(since, until, PAGE_WINDOW_DAYS)]
    for entries in ask(client, calls, report):
        report.values += _daily_values(entries)
    return report


def _total_value_params(day: date, **extra: str) -> dict[str, str]:
    return {"period": "day", "metric_type": "total_value", "since": day.isoformat(),
            "until": (day + timedelta(days=1)).isoformat(), **extra}


def instagram_daily_insights(client: GraphClient, ig_user_id: str, since: date, until: date,
                             report: InsightsReport | None = None) -> InsightsReport:
    """Daily series (reach, new followers) in ≤30-day windows, and the total_value metrics day by day
    (Meta has no daily series for those), all in batch requests."""
    report = report or InsightsReport()
    series = [InsightsCall(ig_user_id, "instagram day", IG_DAILY_SERIES,
                           {"period": "day", "since": start.isoformat(), "until": end.isoformat()})
              for start, end in windows(since, until, IG_WINDOW_DAYS)]
    days = list(_days(since, until))
    totals = [InsightsCall(ig_user_id, "instagram total_value", IG_DAILY_TOTALS, _total_value_params(d))
              for d in days]
    answers = ask(client, [*series, *totals], report)
    for entries in answers[:len(series)]:
        report.values += _daily_values(entries)
    for day, entries in zip(days, answers[len(series):], strict=True):
        for name, number in _lifetime_values(entries).items():
            report.values.append(MetricValue(day, name, number))
    return report


def _breakdown_results(entry: dict[str, Any]) -> Iterator[tuple[str, str, Decimal]]:
    """(breakdown, value, number) from ``total_value.breakdowns[].results[]``; a combined breakdown
    (``age,gender``) has its keys and values joined with commas."""
    for breakdown in (entry.get("total_value") or {}).get("breakdowns") or []:
        keys = ",".join(breakdown.get("dimension_keys") or [])
        for result in breakdown.get("results") or []:
            number = _number(result.get("value"))
            if number is not None:
                yield keys, ",".join(map(str, result.get("dimension_values") or [])), number


def instagram_breakdowns(client: GraphClient, ig_user_id: str, since: date, until: date,
                         report: InsightsReport) -> list[BreakdownValue]:
    """Each day's account metrics by ``follower_type`` and by ``media_product_type`` (one breakdown per
    call, as Meta takes them), in batch requests."""
    calls = [(day, InsightsCall(ig_user_id, f"instagram by {breakdown}", metrics,
                                _total_value_params(day, breakdown=breakdown)))
             for day in _days(since, until) for breakdown, metrics in IG_BREAKDOWNS.items()]
    out = []
    for (day, _), entries in zip(calls, ask(client, [c for _, c in calls], report), strict=True):
        for entry in entries:
            out += [BreakdownValue(day, entry["name"], key, value, number)
                    for key, value, number in _breakdown_results(entry)]
    return out


def audience_demographics(client: GraphClient, ig_user_id: str, report: InsightsReport) -> list[DemographicValue]:
    """Follower and engaged-audience demographics by age, gender, city and country (Meta: ``period=lifetime``,
    ``metric_type=total_value``, one breakdown per call, top 45 cities and countries), in one batch."""
    calls = [(metric, timeframe, InsightsCall(ig_user_id, f"instagram demographics {timeframe}", (metric,),
                                              {"period": "lifetime", "metric_type": "total_value",
                                               "timeframe": timeframe, "breakdown": breakdown}))
             for metric, timeframes in DEMOGRAPHIC_TIMEFRAMES.items() for timeframe in timeframes
             for breakdown in DEMOGRAPHIC_BREAKDOWNS]
    out = []
    for (metric, timeframe, _), entries in zip(calls, ask(client, [c for *_, c in calls], report), strict=True):
        for entry in entries:
            out += [DemographicValue(metric, timeframe, key, value, number)
                    for key, value, number in _breakdown_results(entry)]
    return out


def followers_count(client: GraphClient, node_id: str) -> Decimal | None:
    """The Page's or the Instagram account's follower count now (the node's ``followers_count``)."""
    return _number(client.get(node_id, fields="followers_count").get("followers_count"))
