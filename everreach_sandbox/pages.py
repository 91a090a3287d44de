"""Sandbox surface: the Facebook Page and the Instagram professional account, with organic insights.

Everything is a pure function of (seed, object, metric, day), so the same seed gives the same numbers on
every run and a restated day (``state.restate_salt``) changes only that day's daily numbers.

- ``GET /{page_id}/posts`` — newest first, ``fields``, ``since``/``until`` on ``created_time``, cursor paging.
- ``GET /{page_id}/insights?metric=…&period=day&since&until`` — one value per day, ``end_time`` at the end
  of the day (``{day+1}T07:00:00+0000``, Meta's Pacific-midnight convention), ``until`` exclusive, at most
  90 days per request; an invalid or retired metric fails the whole request with
  ``(#100) The value must be a valid insights metric``.
- ``GET /{post_id}/insights?metric=…`` — lifetime values (they grow for 28 days after posting).
- ``GET /{ig_user_id}/media`` — IMAGE, VIDEO (FEED), VIDEO (REELS) and CAROUSEL_ALBUM media.
- ``GET /{media_id}/insights?metric=…`` — the metric set depends on the media type (Airbyte's
  source-instagram sets); removed metrics (``impressions``, ``plays``, …) get Meta's v22 error.
- ``GET /{ig_user_id}/insights`` — ``reach``/``follower_count`` as daily series; ``views``, ``likes``…
  only with ``metric_type=total_value`` (Meta's error otherwise); at most 30 days per request.

Insights answers have Meta's shape ``{"data": [{"name", "period", "values": [{"value", "end_time"}],
"title", "description", "id"}], "paging": {"previous", "next"?}}``; ``paging.next`` (the following window)
is only given while that window has started, so a client that follows ``next`` stops.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_sandbox.core import (
    GraphError,
    GraphRequest,
    Node,
    SandboxState,
    Surface,
    charge_buc,
    meta_time,
    paged,
    parse_day,
    unit,
    utc_today,
)
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

surface = Surface("pages")

PAGE_ID = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
IG_USER_ID = SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]
HISTORY_DAYS = 400  # posts and media exist for this many days back from the day the sandbox starts
EPOCH = date(2024, 1, 1)  # follower totals accumulate from here
LIFETIME_GROWTH_DAYS = 28  # lifetime post/media metrics stop growing after this many days

# name: (low, high, title, description) — daily ranges for Page metrics (current Graph versions).
PAGE_METRICS: dict[str, tuple[int, int, str, str]] = {
    "page_media_view": (
        800,
        4000,
        "Daily Media Views",
        "The number of times your content was played or displayed.",
    ),
    "page_total_media_view_unique": (
        500,
        2500,
        "Daily Total Media Viewers",
        "The number of people who saw any content from your Page.",
    ),
    "page_post_engagements": (
        40,
        400,
        "Daily Post Engagements",
        "The number of times people have engaged "
        "with your posts through reactions, comments, shares and more.",
    ),
    "page_total_actions": (
        5,
        60,
        "Daily Total Action Count",
        "The number of clicks on your Page's contact info and call-to-action button.",
    ),
    "page_daily_follows": (2, 28, "Daily Follows", "The number of times your Page was followed."),
    "page_daily_follows_unique": (
        2,
        25,
        "Daily New Followers",
        "The number of people who followed your Page.",
    ),
    "page_daily_unfollows_unique": (
        0,
        6,
        "Daily Unfollows",
        "The number of people who unfollowed your Page.",
    ),
    "page_video_views": (
        50,
        900,
        "Daily Total Video Views",
        "The number of times your Page's videos played for at least 3 seconds.",
    ),
    "page_views_total": (
        20,
        300,
        "Daily Total views count per Page",
        "The number of times a Page's profile has been viewed by people.",
    ),
    "page_follows": (0, 0, "Followers", "The number of followers of your Page."),  # running total
}
# Lifetime post metrics: (low, high) of the final value, title, description.
POST_METRICS: dict[str, tuple[int, int, str, str]] = {
    "post_media_view": (
        300,
        6000,
        "Lifetime Post Media Views",
        "The number of times your post was played or displayed.",
    ),
    "post_total_media_view_unique": (
        200,
        4000,
        "Lifetime Post Total Media Viewers",
        "The number of people who saw your post.",
    ),
    "post_clicks": (5, 300, "Lifetime Post Clicks", "The number of clicks anywhere in your post."),
    "post_reactions_like_total": (
        3,
        250,
        "Lifetime Like Reactions",
        "The number of Like reactions to your post.",
    ),
}

MEDIA_TYPES = ("IMAGE", "CAROUSEL_ALBUM", "REELS", "VIDEO")  # rotation; REELS is VIDEO + product REELS
MEDIA_METRIC_RANGES: dict[str, tuple[int, int, str]] = {
    "reach": (150, 3000, "Accounts reached"),
    "saved": (0, 60, "Saved"),
    "likes": (10, 400, "Likes"),
    "comments": (0, 40, "Comments"),
    "shares": (0, 50, "Shares"),
    "follows": (0, 12, "Follows"),
    "profile_visits": (0, 80, "Profile visits"),
    "views": (300, 9000, "Views"),
    "ig_reels_video_view_total_time": (600_000, 9_000_000, "Watch time"),
    "ig_reels_avg_watch_time": (2_000, 15_000, "Average watch time"),
}
# The metric set by media type (Airbyte source-instagram's manifest, see shared/reference).
MEDIA_METRICS: dict[str, tuple[str, ...]] = {
    "REELS": (
        "comments",
        "ig_reels_avg_watch_time",
        "ig_reels_video_view_total_time",
        "likes",
        "reach",
        "saved",
        "shares",
        "total_interactions",
        "views",
    ),
    "VIDEO": ("reach", "saved"),  # FEED video
    "CAROUSEL_ALBUM": (
        "reach",
        "saved",
        "shares",
        "follows",
        "profile_visits",
        "total_interactions",
        "views",
    ),
    "IMAGE": (
        "reach",
        "saved",
        "likes",
        "comments",
        "shares",
        "follows",
        "profile_visits",
        "total_interactions",
        "views",
    ),
}
REMOVED_MEDIA_METRICS = frozenset(
    {"impressions", "plays", "clips_replays_count", "ig_reels_aggregated_all_plays_count", "video_views"}
)
ALL_MEDIA_METRICS = frozenset(m for ms in MEDIA_METRICS.values() for m in ms)

# IG account: daily series (period=day) and total_value-only metrics.
IG_SERIES: dict[str, tuple[int, int, str, str]] = {
    "reach": (
        400,
        5000,
        "Reach",
        "The number of unique accounts that have seen your content, at least once, including in ads.",
    ),
    "follower_count": (0, 40, "Follower Count", "The number of new followers each day."),
}
IG_TOTAL_VALUE: dict[str, tuple[int, int, str, str]] = {
    "reach": IG_SERIES["reach"],
    "views": (900, 15000, "Views", "The number of times your content was played or displayed."),
    "accounts_engaged": (
        30,
        400,
        "Accounts engaged",
        "The number of accounts that have interacted with your content.",
    ),
    "total_interactions": (
        50,
        900,
        "Content interactions",
        "The total number of post interactions, story "
        "interactions, reels interactions, video interactions and live video "
        "interactions.",
    ),
    "likes": (40, 700, "Likes", "The number of likes on your posts, reels and videos."),
    "comments": (0, 80, "Comments", "The number of comments on your posts, reels, videos and live videos."),
    "shares": (
        0,
        90,
        "Shares",
        "The number of shares of your posts, stories, reels, videos and live videos.",
    ),
    "saves": (0, 70, "Saves", "The number of saves of your posts, reels and videos."),
    "profile_views": (10, 300, "Profile views", "The number of times your profile was visited."),
    "profile_links_taps": (
        0,
        40,
        "Profile links taps",
        "The number of taps on your business address, call button, email button and text button.",
    ),
    "website_clicks": (0, 30, "Website clicks", "The number of taps on the website link in your profile."),
}
UNIQUE_TOTALS = frozenset({"reach", "accounts_engaged"})  # totals of uniques are not sums of days

INVALID_METRIC = "(#100) The value must be a valid insights metric"


def retired(state: SandboxState) -> frozenset[str]:
    """Metrics Meta has retired since the sandbox started (``POST /_sandbox/pages/retire``): refused on
    every surface as Meta refuses a retired metric."""
    return frozenset(state.extra.get("pages", {}).get("retired", ()))


# ───────────────────────────── the synthetic world ─────────────────────────────


def _end_time(day: date) -> str:
    return f"{(day + timedelta(days=1)).isoformat()}T07:00:00+0000"


def daily_value(state: SandboxState, obj: str, metric: str, day: date, low: int, high: int) -> int:
    """One day's number: uniform in [low, high] from the seed, nudged by restatements of that day."""
    value = low + (high - low) * unit(state.seed, obj, metric, day)
    salt = state.restate_salt(day)
    if salt:
        value *= 0.85 + 0.3 * unit(state.seed, obj, metric, day, "restated", salt)
    return int(round(value))


def _net_follows(state: SandboxState, obj: str, day: date) -> int:
    if obj == IG_USER_ID:  # IG reports new followers per day (follower_count); a few leave
        return daily_value(state, obj, "follower_count", day, *IG_SERIES["follower_count"][:2]) - daily_value(
            state, obj, "unfollows", day, 0, 5
        )
    return daily_value(
        state, obj, "page_daily_follows_unique", day, *PAGE_METRICS["page_daily_follows_unique"][:2]
    ) - daily_value(
        state, obj, "page_daily_unfollows_unique", day, *PAGE_METRICS["page_daily_unfollows_unique"][:2]
    )


def follower_total(state: SandboxState, obj: str, day: date) -> int:
    """Followers at the end of ``day``: a base plus every day's net follows since EPOCH (cached per
    restatement version, so restating a day moves every later total consistently)."""
    cache = state.extra.setdefault("pages", {}).setdefault("followers", {})
    version = state.extra.get("restate_version", 0)
    if cache.get("version") != version:
        cache.clear()
        cache["version"] = version
    if obj not in cache:
        totals: dict[date, int] = {}
        total = 1000 + int(4000 * unit(state.seed, obj, "base_followers"))
        end, d = utc_today() + timedelta(days=2), EPOCH
        while d <= end:
            total += _net_follows(state, obj, d)
            totals[d] = total
            d += timedelta(days=1)
        cache[obj] = totals
    totals = cache[obj]
    return totals.get(day) or (totals[max(totals)] if day > max(totals) else totals[min(totals)])


def page_metric(state: SandboxState, metric: str, day: date) -> int:
    if metric == "page_follows":
        return follower_total(state, PAGE_ID, day)
    low, high = PAGE_METRICS[metric][:2]
    return daily_value(state, PAGE_ID, metric, day, low, high)


def lifetime_value(
    state: SandboxState, obj: str, metric: str, posted: date, low: int, high: int, as_of: date
) -> int:
    """A lifetime metric as of ``as_of``: grows quickly after posting and settles after 28 days."""
    final = low + (high - low) * unit(state.seed, obj, metric, "final")
    age = (as_of - posted).days
    if age < 0:
        return 0
    share = 1.0 - 0.75 ** (min(age, LIFETIME_GROWTH_DAYS) + 1)
    return int(round(final * share / (1.0 - 0.75 ** (LIFETIME_GROWTH_DAYS + 1))))


def _posts_on(state: SandboxState, kind: str, day: date) -> int:
    return (0, 1, 1, 2)[int(unit(state.seed, kind, "count", day) * 4)]


def _created(state: SandboxState, kind: str, day: date, i: int) -> datetime:
    seconds = int(unit(state.seed, kind, "time", day, i) * 86399)
    return datetime.combine(day, time(), UTC) + timedelta(seconds=seconds)


CAPTIONS = (
    "New in the shop this week",
    "Behind the scenes with the team",
    "Thank you for 1k messages!",
    "How our customers use EverReach",
    "Weekend offer: reply to this post",
    "Tips for faster replies",
    "Meet the support crew",
    "Our roadmap for next month",
)


@surface.populator
def populate(state: SandboxState) -> None:
    """The Page, the IG account, and HISTORY_DAYS of posts and media (newest first in ``extra``)."""
    today = utc_today()
    state.add(Node(PAGE_ID, "page", {"name": "EverReach Sandbox Page", "category": "Software"}))
    state.add(Node(IG_USER_ID, "ig_user", {"username": "everreach.sandbox", "name": "EverReach Sandbox"}))
    posts: list[Node] = []
    media: list[Node] = []
    for back in range(HISTORY_DAYS):
        day = today - timedelta(days=back)
        for i in reversed(range(_posts_on(state, "fb", day))):
            post_id = f"{PAGE_ID}_{10**15 + day.toordinal() * 10 + i}"
            created = _created(state, "fb", day, i)
            caption = CAPTIONS[int(unit(state.seed, "fbcaption", day, i) * len(CAPTIONS))]
            posts.append(
                state.add(
                    Node(
                        post_id,
                        "page_post",
                        {
                            "id": post_id,
                            "message": caption,
                            "created_time": created,
                            "posted": day,
                            "permalink_url": f"https://www.facebook.com/{PAGE_ID}/posts/{post_id.split('_')[1]}",
                            "status_type": "added_photos" if i % 2 == 0 else "mobile_status_update",
                        },
                    )
                )
            )
        for i in reversed(range(_posts_on(state, "ig", day))):
            media_id = str(17_900_000_000_000_000 + day.toordinal() * 10 + i)
            kind = MEDIA_TYPES[(day.toordinal() + i) % len(MEDIA_TYPES)]
            created = _created(state, "ig", day, i)
            caption = CAPTIONS[int(unit(state.seed, "igcaption", day, i) * len(CAPTIONS))]
            code = f"C{media_id[-9:]}"
            extension = "mp4" if kind in ("REELS", "VIDEO") else "jpg"
            path = "reel" if kind == "REELS" else "p"
            media.append(
                state.add(
                    Node(
                        media_id,
                        "ig_media",
                        {
                            "id": media_id,
                            "caption": caption,
                            "kind": kind,
                            "posted": day,
                            "timestamp": created,
                            "media_type": "VIDEO" if kind in ("REELS", "VIDEO") else kind,
                            "media_product_type": "REELS" if kind == "REELS" else "FEED",
                            "permalink": f"https://www.instagram.com/{path}/{code}/",
                            "media_url": f"https://scontent.cdninstagram.com/sandbox/{media_id}.{extension}",
                            "username": "everreach.sandbox",
                        },
                    )
                )
            )
    posts.sort(key=lambda n: n.data["created_time"], reverse=True)
    media.sort(key=lambda n: n.data["timestamp"], reverse=True)
    state.extra.setdefault("pages", {}).update(posts=posts, media=media)


# ───────────────────────────── parameters ─────────────────────────────


def _metrics(req: GraphRequest) -> list[str]:
    raw = req.param("metric")
    if isinstance(raw, list):
        raw = ",".join(map(str, raw))
    return [m.strip() for m in str(raw or "").split(",") if m.strip()]


def _window(req: GraphRequest, max_days: int) -> tuple[date, date]:
    """[since, until) in days; default the last two complete days. Over ``max_days`` → Meta's error."""
    today = utc_today()
    since = parse_day(req.param("since"), "since") if req.param("since") else None
    until = parse_day(req.param("until"), "until") if req.param("until") else None
    if since is None and until is None:
        until = today
    if until is None:
        until = min(since + timedelta(days=max_days), today + timedelta(days=1))  # type: ignore[operator]
    if since is None:
        since = until - timedelta(days=2)
    if (until - since).days > max_days:
        raise GraphError(
            100,
            f"(#100) There cannot be more than {max_days} days ({max_days * 86400} s) between "
            "since and until",
            type="OAuthException",
        )
    return since, until


def _period(req: GraphRequest) -> str:
    period = str(req.param("period") or "day")
    if period != "day":
        raise GraphError(
            100,
            f"(#100) The sandbox serves period=day insights only (got period={period})",
            type="OAuthException",
        )
    return period


def _days(since: date, until: date) -> list[date]:
    last = min(until, utc_today() + timedelta(days=1))
    return [since + timedelta(days=n) for n in range(max(0, (last - since).days))]


def _insights_paging(req: GraphRequest, since: date, until: date) -> dict[str, str]:
    span = until - since
    url = req.request.url.remove_query_params(["since", "until"])
    paging = {"previous": str(url.include_query_params(since=int(_ts(since - span)), until=int(_ts(since))))}
    if until <= utc_today():
        paging["next"] = str(url.include_query_params(since=int(_ts(until)), until=int(_ts(until + span))))
    return paging


def _ts(day: date) -> float:
    return datetime.combine(day, time(), UTC).timestamp()


def _entry(
    obj_id: str, name: str, period: str, values: list[dict[str, Any]], title: str, description: str
) -> dict[str, Any]:
    return {
        "name": name,
        "period": period,
        "values": values,
        "title": title,
        "description": description,
        "id": f"{obj_id}/insights/{name}/{period}",
    }


# ───────────────────────────── Page endpoints ─────────────────────────────


@surface.route("GET", "page")
async def page_node(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, PAGE_ID, "pages")
    data = {
        "id": PAGE_ID,
        **req.node.data,
        "followers_count": follower_total(req.state, PAGE_ID, utc_today()),
        "fan_count": follower_total(req.state, PAGE_ID, utc_today()),
    }
    return {k: data[k] for k in req.fields(("name",)) if k in data}


POST_FIELDS = ("id", "message", "created_time", "permalink_url", "status_type")


@surface.route("GET", "page", "posts")
async def page_posts(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, PAGE_ID, "pages")
    posts: list[Node] = req.state.extra["pages"]["posts"]
    since = parse_day(req.param("since"), "since") if req.param("since") else None
    until = parse_day(req.param("until"), "until") if req.param("until") else None
    wanted = [f for f in req.fields(("message", "created_time")) if f in POST_FIELDS]
    items, now = [], datetime.now(UTC)
    for node in posts:
        posted = node.data["posted"]
        if (since and posted < since) or (until and posted >= until) or node.data["created_time"] > now:
            continue
        row = {f: node.data[f] for f in wanted if f in node.data}
        if "created_time" in row:
            row["created_time"] = meta_time(row["created_time"])
        items.append(row)
    return paged(req, items, default_limit=25, max_limit=100)


@surface.route("GET", "page", "insights")
async def page_insights(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, PAGE_ID, "pages")
    metrics = _metrics(req)
    if not metrics or any(m not in PAGE_METRICS or m in retired(req.state) for m in metrics):
        raise GraphError(100, INVALID_METRIC, type="OAuthException")
    period = _period(req)
    since, until = _window(req, 90)
    days = _days(since, until)
    data = [
        _entry(
            PAGE_ID,
            m,
            period,
            [{"value": page_metric(req.state, m, d), "end_time": _end_time(d)} for d in days],
            *PAGE_METRICS[m][2:],
        )
        for m in metrics
    ]
    return {"data": data, "paging": _insights_paging(req, since, until)}


@surface.route("GET", "page_post")
async def post_node(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, PAGE_ID, "pages")
    data = dict(req.node.data)
    data["created_time"] = meta_time(data["created_time"])
    return {k: data[k] for k in req.fields(("message", "created_time")) if k in data and k in POST_FIELDS}


@surface.route("GET", "page_post", "insights")
async def post_insights(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, PAGE_ID, "pages")
    metrics = _metrics(req)
    if not metrics or any(m not in POST_METRICS or m in retired(req.state) for m in metrics):
        raise GraphError(100, INVALID_METRIC, type="OAuthException")
    posted, today = req.node.data["posted"], utc_today()
    return {
        "data": [
            _entry(
                req.node.id,
                m,
                "lifetime",
                [
                    {
                        "value": lifetime_value(
                            req.state, req.node.id, m, posted, *POST_METRICS[m][:2], as_of=today
                        )
                    }
                ],
                *POST_METRICS[m][2:],
            )
            for m in metrics
        ]
    }


# ───────────────────────────── Instagram endpoints ─────────────────────────────

MEDIA_FIELDS = (
    "id",
    "caption",
    "media_type",
    "media_product_type",
    "media_url",
    "permalink",
    "timestamp",
    "username",
    "like_count",
    "comments_count",
    "thumbnail_url",
)


def media_metric(state: SandboxState, node: Node, metric: str, as_of: date) -> int:
    if metric == "total_interactions":
        return sum(media_metric(state, node, m, as_of) for m in ("likes", "comments", "saved", "shares"))
    low, high = MEDIA_METRIC_RANGES[metric][:2]
    if metric == "ig_reels_avg_watch_time":  # an average, not a running total
        return int(low + (high - low) * unit(state.seed, node.id, metric))
    return lifetime_value(state, node.id, metric, node.data["posted"], low, high, as_of)


def _media_row(state: SandboxState, node: Node, wanted: list[str]) -> dict[str, Any]:
    data = dict(node.data)
    data["timestamp"] = meta_time(data["timestamp"])
    today = utc_today()
    data["like_count"] = media_metric(state, node, "likes", today)
    data["comments_count"] = media_metric(state, node, "comments", today)
    if data["media_type"] == "VIDEO":
        data["thumbnail_url"] = data["media_url"].rsplit(".", 1)[0] + "_thumb.jpg"
    return {f: data[f] for f in wanted if f in data and f in MEDIA_FIELDS}


@surface.route("GET", "ig_user")
async def ig_user_node(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    media = req.state.extra["pages"]["media"]
    data = {
        "id": IG_USER_ID,
        **req.node.data,
        "media_count": len(media),
        "followers_count": follower_total(req.state, IG_USER_ID, utc_today()),
    }
    return {k: data[k] for k in req.fields(("username",)) if k in data}


@surface.route("GET", "ig_user", "media")
async def ig_media_list(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    wanted = req.fields(("id",))
    since = parse_day(req.param("since"), "since") if req.param("since") else None
    until = parse_day(req.param("until"), "until") if req.param("until") else None
    now = datetime.now(UTC)
    items = [
        _media_row(req.state, n, wanted)
        for n in req.state.extra["pages"]["media"]
        if not (since and n.data["posted"] < since)
        and not (until and n.data["posted"] >= until)
        and n.data["timestamp"] <= now
    ]
    return paged(req, items, default_limit=25, max_limit=100)


@surface.route("GET", "ig_media")
async def ig_media_node(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    return _media_row(req.state, req.node, req.fields(("id",)))


@surface.route("GET", "ig_media", "insights")
async def ig_media_insights(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    metrics = _metrics(req)
    kind = req.node.data["kind"]
    allowed = MEDIA_METRICS[kind]
    for i, m in enumerate(metrics):
        if m in REMOVED_MEDIA_METRICS or m in retired(req.state):
            raise GraphError(
                100,
                f"(#100) Starting from version v22.0 and above, the {m} metric is no longer "
                "supported for the queried media.",
                type="OAuthException",
            )
        if m in ALL_MEDIA_METRICS and m not in allowed:
            raise GraphError(
                100,
                f"(#100) The Media Insights API does not support the {m} metric for this media product type.",
                type="OAuthException",
            )
        if m not in allowed:
            raise GraphError(
                100,
                f"(#100) metric[{i}] must be one of the following values: {', '.join(allowed)}",
                type="OAuthException",
            )
    if not metrics:
        raise GraphError(100, "(#100) The parameter metric is required", type="OAuthException")
    today = utc_today()
    return {
        "data": [
            _entry(
                req.node.id,
                m,
                "lifetime",
                [{"value": media_metric(req.state, req.node, m, today)}],
                *_media_title(m),
            )
            for m in metrics
        ]
    }


def _media_title(metric: str) -> tuple[str, str]:
    if metric == "total_interactions":
        return "Interactions", "The number of likes, saves, comments and shares on this media."
    title = MEDIA_METRIC_RANGES[metric][2]
    return title, f"{title} of this media, over its lifetime."


@surface.route("GET", "ig_user", "insights")
async def ig_user_insights(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    metrics = _metrics(req)
    total_value = str(req.param("metric_type") or "time_series") == "total_value"
    catalogue = IG_TOTAL_VALUE if total_value else IG_SERIES
    known = sorted(set(IG_SERIES) | set(IG_TOTAL_VALUE))
    if not metrics:
        raise GraphError(100, "(#100) The parameter metric is required", type="OAuthException")
    for i, m in enumerate(metrics):
        if m == "impressions" or m in retired(req.state):
            raise GraphError(
                100,
                f"(#100) Starting from version v22.0 and above, the {m} metric is no longer supported",
                type="OAuthException",
            )
        if m not in known:
            raise GraphError(
                100,
                f"(#100) metric[{i}] must be one of the following values: {', '.join(known)}",
                type="OAuthException",
            )
    needs_total = [m for m in metrics if m not in catalogue and m in IG_TOTAL_VALUE]
    if needs_total:
        raise GraphError(
            100,
            f"(#100) The following metrics ({','.join(needs_total)}) should be specified with "
            "parameter metric_type=total_value",
            type="OAuthException",
        )
    wrong = [m for m in metrics if m not in catalogue]
    if wrong:
        raise GraphError(
            100,
            f"(#100) The following metrics ({','.join(wrong)}) do not support metric_type=total_value",
            type="OAuthException",
        )
    period = _period(req)
    since, until = _window(req, 30)
    days = _days(since, until)
    state = req.state
    data = []
    for m in metrics:
        low, high, title, description = catalogue[m]
        daily = [daily_value(state, IG_USER_ID, m, d, low, high) for d in days]
        if total_value:
            total = int(sum(daily) * 0.8) if m in UNIQUE_TOTALS and len(daily) > 1 else sum(daily)
            data.append(
                {
                    "name": m,
                    "period": period,
                    "title": title,
                    "description": description,
                    "total_value": {"value": total},
                    "id": f"{IG_USER_ID}/insights/{m}/{period}",
                }
            )
        else:
            data.append(
                _entry(
                    IG_USER_ID,
                    m,
                    period,
                    [{"value": v, "end_time": _end_time(d)} for v, d in zip(daily, days, strict=True)],
                    title,
                    description,
                )
            )
    return {"data": data, "paging": _insights_paging(req, since, until)}


# ───────────────────────────── control ─────────────────────────────


async def control_retire(request: Request) -> JSONResponse:
    """POST {"metrics": ["post_clicks", …]}: Meta retires these metrics now (an empty list brings them
    back). Every insights endpoint then refuses them with Meta's error for a retired metric."""
    state: SandboxState = request.app.state.sandbox
    body = await request.json()
    with state.lock:
        state.extra.setdefault("pages", {})["retired"] = sorted(map(str, body.get("metrics", ())))
    return JSONResponse({"retired": sorted(retired(state))})


surface.control_routes = [Route("/_sandbox/pages/retire", control_retire, methods=["POST"])]
