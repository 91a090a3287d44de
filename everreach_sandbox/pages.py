"""Sandbox surface: the Facebook Page and the Instagram professional account, with organic insights.

Everything is a pure function of (seed, object, metric, day), so the same seed gives the same numbers on
every run and a restated day (``state.restate_salt``) changes only that day's daily numbers.

- ``GET /{page_id}/posts`` — newest first, ``fields``, ``since``/``until`` on ``created_time``, cursor paging;
  photo, status and video posts (``status_type`` ``added_video``).
- ``GET /{page_id}/insights?metric=…&period=day&since&until`` — one value per day, ``end_time`` at the end
  of the day (``{day+1}T07:00:00+0000``, Meta's Pacific-midnight convention), ``until`` exclusive, at most
  90 days per request; an invalid or retired metric fails the whole request with
  ``(#100) The value must be a valid insights metric``.
- ``GET /{post_id}/insights?metric=…`` — lifetime values (they grow for 28 days after posting); video posts
  also have ``post_video_avg_time_watched`` and ``post_video_view_time``.
- ``GET /{page_id}/video_reels`` and ``GET /{video_id}/video_insights`` — Facebook Reels, whose metrics
  (``blue_reels_play_count``, ``fb_reels_total_plays``…) are on ``video_insights`` only.
- ``GET /{ig_user_id}/media`` — IMAGE, VIDEO (FEED), VIDEO (REELS) and CAROUSEL_ALBUM media; nested
  ``fields`` (``children{id,media_type}``) for a carousel's children, which have no insights.
- ``GET /{media_id}/insights?metric=…`` — the metric set depends on the media type (Airbyte's
  source-instagram sets); removed metrics (``impressions``, ``plays``, …) get Meta's v22 error.
- ``GET /{ig_user_id}/stories`` and ``GET /{story_id}/insights`` — stories live for 24 hours: listed and
  measured (numbers growing hour by hour) only then, an empty data set afterwards, ``(#10) Not enough
  viewers`` while reach is under 5. When a story expires, a ``story_insights`` webhook with its final
  numbers goes to the webhook URL (after the next ``/stories`` call, or ``POST /_sandbox/pages/stories/expire``).
- ``GET /{ig_user_id}/insights`` — ``reach``/``follower_count`` as daily series; ``views``, ``likes``…
  only with ``metric_type=total_value`` (Meta's error otherwise), some with ``breakdown=follower_type`` or
  ``media_product_type``; at most 30 days per request. ``follower_demographics`` and
  ``engaged_audience_demographics`` with ``period=lifetime``, ``metric_type=total_value``, a ``breakdown``
  (age, gender, city, country) and a ``timeframe`` (``this_week``/``this_month``; required for the engaged
  audience; the values withdrawn in v20 refused).

Control routes: ``POST /_sandbox/pages/retire`` (Meta retires metrics: every endpoint refuses them),
``POST /_sandbox/pages/clock`` (the stories' clock), ``POST /_sandbox/pages/stories/expire``.

Insights answers have Meta's shape ``{"data": [{"name", "period", "values": [{"value", "end_time"}],
"title", "description", "id"}], "paging": {"previous", "next"?}}``; ``paging.next`` (the following window)
is only given while that window has started, so a client that follows ``next`` stops.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from starlette.background import BackgroundTask
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
from everreach_sandbox.messaging import deliver_later, post_webhooks
from everreach_sandbox.traffic import story_insights_payload

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

# Video posts (status_type added_video) also have the post-level video metrics; times in milliseconds.
VIDEO_POST_METRICS: dict[str, tuple[int, int, str, str]] = {
    "post_video_avg_time_watched": (2_000, 40_000, "Average time video viewed",
                                    "The average time, in milliseconds, people spent viewing your video."),
    "post_video_view_time": (60_000, 9_000_000, "Total video view time",
                             "The total time, in milliseconds, your video was played."),
}
# Facebook Reels, on /{video_id}/video_insights (Meta's Reels metric names).
REEL_METRICS: dict[str, tuple[int, int, str, str]] = {
    "blue_reels_play_count": (200, 20_000, "Reel plays", "The number of times your reel started to play."),
    "fb_reels_total_plays": (250, 24_000, "Total plays", "Plays of your reel, replays included."),
    "fb_reels_replay_count": (10, 3_000, "Replays", "The number of times your reel was replayed."),
    **VIDEO_POST_METRICS,
    "post_video_followers": (0, 60, "New followers", "The number of people who followed your Page from the reel."),
}
AVERAGES = frozenset({"post_video_avg_time_watched"})  # not running totals: they do not grow with age

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


POST_STATUS_TYPES = ("added_photos", "mobile_status_update", "added_video")  # rotation
STORY_DAYS = range(-2, 8)  # stories (1-3 a day) from 2 days ahead (for a moved clock) to a week back
CAROUSEL_CHILDREN = (2, 3, 4)


@surface.populator
def populate(state: SandboxState) -> None:
    """The Page, the IG account, and HISTORY_DAYS of posts, Reels and media (newest first in ``extra``),
    and a few days of stories around today."""
    today = utc_today()
    state.add(Node(PAGE_ID, "page", {"name": "EverReach Sandbox Page", "category": "Software"}))
    state.add(Node(IG_USER_ID, "ig_user", {"username": "everreach.sandbox", "name": "EverReach Sandbox"}))
    posts: list[Node] = []
    reels: list[Node] = []
    media: list[Node] = []
    for back in range(HISTORY_DAYS):
        day = today - timedelta(days=back)
        posts += [state.add(_page_post(state, day, i)) for i in reversed(range(_posts_on(state, "fb", day)))]
        if unit(state.seed, "fbreel", day) < 0.4:
            reels.append(state.add(_page_reel(state, day, 0)))
        for i in reversed(range(_posts_on(state, "ig", day))):
            node = state.add(_ig_media(state, day, i))
            media.append(node)
            for child in node.data.get("children", ()):
                state.add(child)
    stories = [state.add(_ig_story(state, today - timedelta(days=back), i))
               for back in STORY_DAYS for i in range(1 + _posts_on(state, "story", today - timedelta(days=back)))]
    for nodes, key in ((posts, "created_time"), (reels, "created_time"), (media, "timestamp"),
                       (stories, "timestamp")):
        nodes.sort(key=lambda n, key=key: n.data[key], reverse=True)
    state.extra.setdefault("pages", {}).update(posts=posts, reels=reels, media=media, stories=stories,
                                               stories_notified_until=datetime.now(UTC))


def _caption(state: SandboxState, kind: str, day: date, i: int) -> str:
    return CAPTIONS[int(unit(state.seed, f"{kind}caption", day, i) * len(CAPTIONS))]


def _page_post(state: SandboxState, day: date, i: int) -> Node:
    post_id = f"{PAGE_ID}_{10**15 + day.toordinal() * 10 + i}"
    return Node(post_id, "page_post", {
        "id": post_id,
        "message": _caption(state, "fb", day, i),
        "created_time": _created(state, "fb", day, i),
        "posted": day,
        "permalink_url": f"https://www.facebook.com/{PAGE_ID}/posts/{post_id.split('_')[1]}",
        "status_type": POST_STATUS_TYPES[(day.toordinal() + i) % len(POST_STATUS_TYPES)],
    })


def _page_reel(state: SandboxState, day: date, i: int) -> Node:
    reel_id = str(1_200_000_000_000_000 + day.toordinal() * 10 + i)
    return Node(reel_id, "page_reel", {
        "id": reel_id,
        "description": _caption(state, "fbreel", day, i),
        "created_time": _created(state, "fbreel", day, i),
        "posted": day,
        "permalink_url": f"https://www.facebook.com/reel/{reel_id}",
        "length": round(5 + 85 * unit(state.seed, reel_id, "length"), 2),
    })


def _ig_media(state: SandboxState, day: date, i: int) -> Node:
    media_id = str(17_900_000_000_000_000 + day.toordinal() * 10 + i)
    kind = MEDIA_TYPES[(day.toordinal() + i) % len(MEDIA_TYPES)]
    created = _created(state, "ig", day, i)
    extension = "mp4" if kind in ("REELS", "VIDEO") else "jpg"
    path = "reel" if kind == "REELS" else "p"
    data: dict[str, Any] = {
        "id": media_id,
        "caption": _caption(state, "ig", day, i),
        "kind": kind,
        "posted": day,
        "timestamp": created,
        "media_type": "VIDEO" if kind in ("REELS", "VIDEO") else kind,
        "media_product_type": "REELS" if kind == "REELS" else "FEED",
        "permalink": f"https://www.instagram.com/{path}/C{media_id[-9:]}/",
        "media_url": f"https://scontent.cdninstagram.com/sandbox/{media_id}.{extension}",
        "username": "everreach.sandbox",
    }
    if kind == "CAROUSEL_ALBUM":
        count = CAROUSEL_CHILDREN[int(unit(state.seed, media_id, "children") * len(CAROUSEL_CHILDREN))]
        data["children"] = [
            Node(f"{media_id}{k}", "ig_carousel_child", {
                "id": f"{media_id}{k}",
                "media_type": "VIDEO" if k == count - 1 and count > 2 else "IMAGE",
                "media_url": f"https://scontent.cdninstagram.com/sandbox/{media_id}_{k}.jpg",
                "permalink": data["permalink"],
                "timestamp": created,
                "username": "everreach.sandbox",
            })
            for k in range(count)
        ]
    return Node(media_id, "ig_media", data)


def _ig_story(state: SandboxState, day: date, i: int) -> Node:
    story_id = str(18_100_000_000_000_000 + day.toordinal() * 10 + i)
    video = unit(state.seed, story_id, "video") < 0.3
    return Node(story_id, "ig_story", {
        "id": story_id,
        "caption": None,
        "posted": day,
        "timestamp": _created(state, "story", day, i),
        "media_type": "VIDEO" if video else "IMAGE",
        "media_product_type": "STORY",
        "permalink": f"https://instagram.com/stories/everreach.sandbox/{story_id}/",
        "media_url": f"https://scontent.cdninstagram.com/sandbox/story_{story_id}.{'mp4' if video else 'jpg'}",
        "username": "everreach.sandbox",
    })


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
    obj_id: str, name: str, period: str, values: list[dict[str, Any]], title: str, description: str,
    edge: str = "insights",
) -> dict[str, Any]:
    return {
        "name": name,
        "period": period,
        "values": values,
        "title": title,
        "description": description,
        "id": f"{obj_id}/{edge}/{name}/{period}",
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


def _lifetime_entries(req: GraphRequest, catalogue: dict[str, tuple[int, int, str, str]]) -> dict[str, Any]:
    """Lifetime values of ``req.node`` for the asked metrics; one outside ``catalogue`` (or retired) fails
    the whole request, as Meta's Pages metrics do."""
    metrics = _metrics(req)
    if not metrics or any(m not in catalogue or m in retired(req.state) for m in metrics):
        raise GraphError(100, INVALID_METRIC, type="OAuthException")
    posted, today = req.node.data["posted"], utc_today()
    data = []
    for m in metrics:
        low, high, title, description = catalogue[m]
        if m in AVERAGES:
            value = int(low + (high - low) * unit(req.state.seed, req.node.id, m))
        else:
            value = lifetime_value(req.state, req.node.id, m, posted, low, high, as_of=today)
        data.append(_entry(req.node.id, m, "lifetime", [{"value": value}], title, description, req.edge or ""))
    return {"data": data}


@surface.route("GET", "page_post", "insights")
async def post_insights(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, PAGE_ID, "pages")
    video = req.node.data["status_type"] == "added_video"
    return _lifetime_entries(req, {**POST_METRICS, **(VIDEO_POST_METRICS if video else {})})


REEL_FIELDS = ("id", "description", "created_time", "permalink_url", "length")


def _reel_row(node: Node, wanted: list[str]) -> dict[str, Any]:
    data = {**node.data, "created_time": meta_time(node.data["created_time"])}
    return {f: data[f] for f in wanted if f in data and f in REEL_FIELDS}


@surface.route("GET", "page", "video_reels")
async def page_video_reels(req: GraphRequest) -> dict[str, Any]:
    """The Page's Reels, newest first (``since``/``until`` on the day they were published)."""
    charge_buc(req, PAGE_ID, "pages")
    since = parse_day(req.param("since"), "since") if req.param("since") else None
    until = parse_day(req.param("until"), "until") if req.param("until") else None
    wanted, now = req.fields(("id",)), datetime.now(UTC)
    items = [_reel_row(n, wanted) for n in req.state.extra["pages"]["reels"]
             if not (since and n.data["posted"] < since) and not (until and n.data["posted"] >= until)
             and n.data["created_time"] <= now]
    return paged(req, items, default_limit=25, max_limit=100)


@surface.route("GET", "page_reel")
async def reel_node(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, PAGE_ID, "pages")
    return _reel_row(req.node, req.fields(("description", "created_time")))


@surface.route("GET", "page_reel", "video_insights")
async def reel_insights(req: GraphRequest) -> dict[str, Any]:
    """A Reel's lifetime metrics: on ``/video_insights`` only (its ``/insights`` is not a Reel's edge)."""
    charge_buc(req, PAGE_ID, "pages")
    return _lifetime_entries(req, REEL_METRICS)


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
    "children",
)
CHILD_FIELDS = ("id", "media_type", "media_url", "permalink", "timestamp", "username")
STORY_FIELDS = ("id", "caption", "media_type", "media_product_type", "media_url", "permalink", "timestamp",
                "username")
FieldSpec = list[tuple[str, list[str] | None]]


def field_spec(req: GraphRequest, default: tuple[str, ...] = ("id",)) -> FieldSpec:
    """``fields`` as Meta reads it, with one level of nested fields: ``id,children{id,media_type}``. ``id``
    always comes first."""
    text, parts, depth, start = str(req.param("fields") or ""), [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    spec: FieldSpec = []
    for part in (p.strip() for p in parts):
        name, brace, sub = part.partition("{")
        if name.strip():
            spec.append((name.strip(), [f.strip() for f in sub.rstrip("}").split(",") if f.strip()]
                         if brace else None))
    spec = spec or [(f, None) for f in default]
    return [("id", None)] + [(n, sub) for n, sub in spec if n != "id"]


def media_metric(state: SandboxState, node: Node, metric: str, as_of: date) -> int:
    if metric == "total_interactions":
        return sum(media_metric(state, node, m, as_of) for m in ("likes", "comments", "saved", "shares"))
    low, high = MEDIA_METRIC_RANGES[metric][:2]
    if metric == "ig_reels_avg_watch_time":  # an average, not a running total
        return int(low + (high - low) * unit(state.seed, node.id, metric))
    return lifetime_value(state, node.id, metric, node.data["posted"], low, high, as_of)


def _pick(data: dict[str, Any], spec: FieldSpec, allowed: tuple[str, ...]) -> dict[str, Any]:
    return {f: data[f] for f, _ in spec if f in data and f in allowed}


def _media_row(state: SandboxState, node: Node, spec: FieldSpec) -> dict[str, Any]:
    data = dict(node.data)
    data["timestamp"] = meta_time(data["timestamp"])
    today = utc_today()
    data["like_count"] = media_metric(state, node, "likes", today)
    data["comments_count"] = media_metric(state, node, "comments", today)
    if data["media_type"] == "VIDEO":
        data["thumbnail_url"] = data["media_url"].rsplit(".", 1)[0] + "_thumb.jpg"
    if "children" in data:
        sub = dict(spec).get("children") or ["id"]
        data["children"] = {"data": [
            {f: meta_time(c.data[f]) if f == "timestamp" else c.data[f]
             for f in ["id", *sub] if f in c.data and f in CHILD_FIELDS} for c in data["children"]]}
    return _pick(data, spec, MEDIA_FIELDS)


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
    """Feed media and Reels (stories are on ``/stories``); a carousel's ``children`` as a nested field."""
    charge_buc(req, IG_USER_ID, "instagram")
    spec = field_spec(req)
    since = parse_day(req.param("since"), "since") if req.param("since") else None
    until = parse_day(req.param("until"), "until") if req.param("until") else None
    now = datetime.now(UTC)
    items = [
        _media_row(req.state, n, spec)
        for n in req.state.extra["pages"]["media"]
        if not (since and n.data["posted"] < since)
        and not (until and n.data["posted"] >= until)
        and n.data["timestamp"] <= now
    ]
    return paged(req, items, default_limit=25, max_limit=100)


@surface.route("GET", "ig_media")
async def ig_media_node(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    return _media_row(req.state, req.node, field_spec(req))


@surface.route("GET", "ig_carousel_child")
async def ig_child_node(req: GraphRequest) -> dict[str, Any]:
    """A carousel's child: its fields, and no insights (Meta has none for media inside an album)."""
    charge_buc(req, IG_USER_ID, "instagram")
    data = {**req.node.data, "timestamp": meta_time(req.node.data["timestamp"])}
    return _pick(data, field_spec(req), CHILD_FIELDS)


def _check_media_metrics(req: GraphRequest, metrics: list[str], allowed: tuple[str, ...]) -> None:
    """Meta's three refusals for media insights: a removed (or retired) metric, one the media product type
    does not have, one that does not exist."""
    if not metrics:
        raise GraphError(100, "(#100) The parameter metric is required", type="OAuthException")
    for i, m in enumerate(metrics):
        if m in REMOVED_MEDIA_METRICS or m in retired(req.state):
            raise GraphError(
                100,
                f"(#100) Starting from version v22.0 and above, the {m} metric is no longer "
                "supported for the queried media.",
                type="OAuthException",
            )
        if (m in ALL_MEDIA_METRICS or m in STORY_METRICS) and m not in allowed:
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


@surface.route("GET", "ig_media", "insights")
async def ig_media_insights(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    metrics = _metrics(req)
    _check_media_metrics(req, metrics, MEDIA_METRICS[req.node.data["kind"]])
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


# ───────────────────────────── Instagram stories ─────────────────────────────

STORY_LIFETIME = timedelta(hours=24)
#: Final (at expiry) ranges of a story's counts; the API's metrics and the webhook's fields derive from them.
STORY_COUNTS: dict[str, tuple[int, int]] = {
    "reach": (3, 800),
    "extra_views": (0, 400),
    "replies": (0, 15),
    "follows": (0, 8),
    "profile_visits": (0, 40),
    "shares": (0, 20),
    "taps_forward": (5, 500),
    "taps_back": (0, 120),
    "exits": (1, 200),
    "swipes_forward": (0, 150),
}
STORY_METRICS = ("reach", "replies", "follows", "profile_visits", "shares", "total_interactions", "views",
                 "navigation")
#: What Meta's ``story_insights`` webhook carries when a story expires (its documented example's fields).
STORY_WEBHOOK_FIELDS = ("impressions", "reach", "taps_forward", "taps_back", "exits", "replies")
MIN_STORY_VIEWERS = 5  # below this Meta answers (#10) Not enough viewers


def story_clock(state: SandboxState) -> datetime:
    """The stories' clock: real time, unless a test moved it (``POST /_sandbox/pages/clock``)."""
    return state.extra.get("pages", {}).get("now") or datetime.now(UTC)


def story_live(node: Node, at: datetime) -> bool:
    return node.data["timestamp"] <= at < node.data["timestamp"] + STORY_LIFETIME


def story_metric(state: SandboxState, node: Node, metric: str, at: datetime) -> int:
    """A story's count as of ``at``: grows hour by hour and is final from its last hour (23 h) on."""
    if metric == "navigation":
        return sum(story_metric(state, node, m, at) for m in ("taps_forward", "taps_back", "exits",
                                                                "swipes_forward"))
    if metric == "total_interactions":
        return sum(story_metric(state, node, m, at) for m in ("replies", "shares"))
    if metric in ("views", "impressions"):
        return sum(story_metric(state, node, m, at) for m in ("reach", "extra_views"))
    hours = int((at - node.data["timestamp"]).total_seconds() // 3600)
    if hours < 0:
        return 0
    low, high = STORY_COUNTS[metric]
    final = low + (high - low) * unit(state.seed, node.id, metric)
    growth = 1 - 0.8 ** (min(hours, 23) + 1)
    return int(round(final * growth / (1 - 0.8**24)))


def _story_row(node: Node, spec: FieldSpec) -> dict[str, Any]:
    return _pick({**node.data, "timestamp": meta_time(node.data["timestamp"])}, spec, STORY_FIELDS)


def expired_story_webhooks(state: SandboxState, at: datetime) -> list[dict[str, Any]]:
    """``story_insights`` payloads for the stories that expired since the last call, as Meta posts them
    when a story expires (its final numbers), oldest first."""
    pages = state.extra["pages"]
    with state.lock:
        since, pages["stories_notified_until"] = pages["stories_notified_until"], max(
            at, pages["stories_notified_until"])
    due = sorted((n for n in pages["stories"] if since < n.data["timestamp"] + STORY_LIFETIME <= at),
                 key=lambda n: n.data["timestamp"])
    out = []
    for node in due:
        expired = node.data["timestamp"] + STORY_LIFETIME
        values = {f: story_metric(state, node, f, expired) for f in STORY_WEBHOOK_FIELDS}
        out.append(story_insights_payload(IG_USER_ID, node.id, values, int(expired.timestamp())))
    return out


@surface.route("GET", "ig_user", "stories")
async def ig_stories(req: GraphRequest) -> JSONResponse:
    """The stories live now, newest first. With a webhook URL, the stories that expired since the last
    look are posted as ``story_insights`` webhooks after the answer (Meta posts them at expiry)."""
    charge_buc(req, IG_USER_ID, "instagram")
    state, spec, at = req.state, field_spec(req), story_clock(req.state)
    items = [_story_row(n, spec) for n in state.extra["pages"]["stories"] if story_live(n, at)]
    payloads = expired_story_webhooks(state, at) if state.webhook_url else []
    return JSONResponse(paged(req, items, default_limit=25, max_limit=100),
                        background=BackgroundTask(deliver_later, state, payloads) if payloads else None)


@surface.route("GET", "ig_story")
async def ig_story_node(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    return _story_row(req.node, field_spec(req))


@surface.route("GET", "ig_story", "insights")
async def ig_story_insights(req: GraphRequest) -> dict[str, Any]:
    """A live story's numbers so far. After 24 hours Meta no longer has them: an empty data set."""
    charge_buc(req, IG_USER_ID, "instagram")
    metrics = _metrics(req)
    _check_media_metrics(req, metrics, STORY_METRICS)
    at = story_clock(req.state)
    if not story_live(req.node, at):
        return {"data": []}
    if story_metric(req.state, req.node, "reach", at) < MIN_STORY_VIEWERS:
        raise GraphError(10, "(#10) Not enough viewers for the media to show insights", type="OAuthException")
    return {"data": [
        _entry(req.node.id, m, "lifetime", [{"value": story_metric(req.state, req.node, m, at)}],
               m.replace("_", " ").capitalize(), f"The story's {m.replace('_', ' ')} so far.")
        for m in metrics
    ]}


# ───────────────────────────── Instagram account insights ─────────────────────────────

#: Account metrics Meta breaks down (``metric_type=total_value``), and the values it reports.
IG_BREAKDOWNS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "follower_type": (frozenset({"views", "reach"}), ("FOLLOWER", "NON_FOLLOWER")),
    "media_product_type": (frozenset({"views", "reach", "total_interactions", "likes", "comments", "shares",
                                      "saves"}), ("POST", "REEL", "STORY", "AD")),
}
DEMOGRAPHICS: dict[str, tuple[str, str]] = {
    "follower_demographics": (
        "Follower demographics",
        "The demographic characteristics of followers, including countries, cities and gender distribution.",
    ),
    "engaged_audience_demographics": (
        "Engaged audience demographics",
        "The demographic characteristics of the engaged audience, including countries, cities and gender "
        "distribution.",
    ),
}
TIMEFRAMES = ("this_week", "this_month")  # last_14_days, last_30_days, last_90_days, prev_month: gone in v20
DEMOGRAPHIC_VALUES: dict[str, tuple[str, ...]] = {
    "age": ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "gender": ("F", "M", "U"),
    "country": ("US", "BR", "PT", "GB", "ES", "IN", "DE", "FR", "MX", "CA", "IT", "NL"),
    "city": ("London, England", "São Paulo, São Paulo (state)", "Lisbon, Lisbon District",
             "New York, New York", "Madrid, Community of Madrid", "Mumbai, Maharashtra", "Berlin, Berlin",
             "Porto, Porto District", "Rio de Janeiro, Rio de Janeiro (state)", "Los Angeles, California"),
}
#: Share of the audience the reported buckets cover (Meta lists the top 45 cities and countries only).
DEMOGRAPHIC_COVERAGE = {"age": 1.0, "gender": 1.0, "country": 0.95, "city": 0.6}


def split(total: int, weights: list[float]) -> list[int]:
    """``total`` shared out by ``weights`` in whole numbers that add up to ``total`` (largest remainder)."""
    raw = [total * w / sum(weights) for w in weights]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out


def _weights(state: SandboxState, *parts: object, values: tuple[str, ...]) -> list[float]:
    return [0.15 + unit(state.seed, *parts, v) for v in values]


def audience_size(state: SandboxState, metric: str, timeframe: str | None, today: date) -> int:
    """Followers today, or accounts engaged over the timeframe (this week from Monday, this month)."""
    if metric == "follower_demographics":
        return follower_total(state, IG_USER_ID, today)
    start = today - timedelta(days=today.weekday()) if timeframe == "this_week" else today.replace(day=1)
    low, high = IG_TOTAL_VALUE["accounts_engaged"][:2]
    days = [start + timedelta(days=n) for n in range((today - start).days + 1)]
    return int(0.8 * sum(daily_value(state, IG_USER_ID, "accounts_engaged", d, low, high) for d in days))


def demographic_results(state: SandboxState, metric: str, timeframe: str | None, keys: list[str],
                        today: date) -> list[dict[str, Any]]:
    """Buckets for the breakdown ``keys`` (one, or several combined: ``age,gender``)."""
    combos: list[tuple[str, ...]] = [()]
    weights = [1.0]
    for key in keys:
        w = _weights(state, metric, key, values=DEMOGRAPHIC_VALUES[key])
        combos = [(*c, v) for c in combos for v in DEMOGRAPHIC_VALUES[key]]
        weights = [a * b for a in weights for b in w]
    covered = min(DEMOGRAPHIC_COVERAGE[k] for k in keys)
    counts = split(int(audience_size(state, metric, timeframe, today) * covered), weights)
    return [{"dimension_values": list(c), "value": n} for c, n in zip(combos, counts, strict=True) if n > 0]


def _bad(message: str) -> GraphError:
    return GraphError(100, f"(#100) {message}", type="OAuthException")


def _breakdown_keys(req: GraphRequest, known: tuple[str, ...]) -> list[str]:
    keys = [k.strip() for k in str(req.param("breakdown") or "").split(",") if k.strip()]
    for i, key in enumerate(keys):
        if key not in known:
            raise _bad(f"breakdown[{i}] must be one of the following values: {', '.join(known)}")
    return keys


def _demographics(req: GraphRequest, metrics: list[str]) -> dict[str, Any]:
    names = ",".join(metrics)
    if any(m not in DEMOGRAPHICS for m in metrics):
        raise _bad(f"The following metrics ({names}) cannot be requested together with other metrics")
    if str(req.param("period") or "") != "lifetime":
        raise _bad(f"The following metrics ({names}) only support period=lifetime")
    if str(req.param("metric_type") or "") != "total_value":
        raise _bad(f"The following metrics ({names}) should be specified with parameter metric_type=total_value")
    keys = _breakdown_keys(req, tuple(sorted(DEMOGRAPHIC_VALUES)))
    if not keys:
        raise _bad(f"The following metrics ({names}) need the parameter breakdown")
    timeframe = req.param("timeframe")
    if timeframe is not None and timeframe not in TIMEFRAMES:
        raise _bad(f"timeframe must be one of the following values: {', '.join(TIMEFRAMES)}")
    if timeframe is None and "engaged_audience_demographics" in metrics:
        raise _bad("The parameter timeframe is required for engaged_audience_demographics")
    today = utc_today()
    return {"data": [
        {"name": m, "period": "lifetime", "title": DEMOGRAPHICS[m][0], "description": DEMOGRAPHICS[m][1],
         "total_value": {"breakdowns": [{"dimension_keys": keys,
                                         "results": demographic_results(req.state, m, timeframe, keys, today)}]},
         "id": f"{IG_USER_ID}/insights/{m}/lifetime"}
        for m in metrics
    ]}


def breakdown_results(state: SandboxState, metric: str, key: str, days: list[date]) -> list[dict[str, Any]]:
    """Each day's total shared out over the breakdown's values (so one day's results add up to its total)."""
    low, high = IG_TOTAL_VALUE[metric][:2]
    values = IG_BREAKDOWNS[key][1]
    sums = [0] * len(values)
    for day in days:
        daily = daily_value(state, IG_USER_ID, metric, day, low, high)
        for i, n in enumerate(split(daily, _weights(state, metric, key, day, values=values))):
            sums[i] += n
    return [{"dimension_values": [v], "value": n} for v, n in zip(values, sums, strict=True)]


@surface.route("GET", "ig_user", "insights")
async def ig_user_insights(req: GraphRequest) -> dict[str, Any]:
    charge_buc(req, IG_USER_ID, "instagram")
    metrics = _metrics(req)
    if not metrics:
        raise GraphError(100, "(#100) The parameter metric is required", type="OAuthException")
    if any(m in DEMOGRAPHICS for m in metrics):
        return _demographics(req, metrics)
    total_value = str(req.param("metric_type") or "time_series") == "total_value"
    catalogue = IG_TOTAL_VALUE if total_value else IG_SERIES
    known = sorted(set(IG_SERIES) | set(IG_TOTAL_VALUE) | set(DEMOGRAPHICS))
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
    keys = _breakdown_keys(req, tuple(IG_BREAKDOWNS))
    if keys and not total_value:
        raise _bad("breakdown is only supported with metric_type=total_value")
    if len(keys) > 1:
        raise _bad("Only one breakdown can be requested for these metrics")
    unsupported = [m for m in metrics if keys and m not in IG_BREAKDOWNS[keys[0]][0]]
    if unsupported:
        raise _bad(f"The following metrics ({','.join(unsupported)}) do not support the breakdown {keys[0]}")
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
            value: dict[str, Any] = {"value": total}
            if keys:
                value["breakdowns"] = [{"dimension_keys": keys,
                                        "results": breakdown_results(state, m, keys[0], days)}]
            data.append(
                {
                    "name": m,
                    "period": period,
                    "title": title,
                    "description": description,
                    "total_value": value,
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


async def control_clock(request: Request) -> JSONResponse:
    """POST {"now": "2025-10-02T12:00:00Z"} moves the stories' clock (which stories are live, their numbers
    so far, which have expired); {"now": null} follows real time again. Moved back, the story_insights
    webhooks start again from there."""
    state: SandboxState = request.app.state.sandbox
    body = await request.json()
    moment = datetime.fromisoformat(body["now"].replace("Z", "+00:00")).astimezone(UTC) if body.get("now") else None
    with state.lock:
        pages = state.extra["pages"]
        pages["now"] = moment
        pages["stories_notified_until"] = min(pages["stories_notified_until"], story_clock(state))
    return JSONResponse({"now": meta_time(story_clock(state))})


async def control_expire_stories(request: Request) -> JSONResponse:
    """POST: the ``story_insights`` webhooks due now (stories expired since the last look), posted to the
    webhook URL if there is one, and returned."""
    state: SandboxState = request.app.state.sandbox
    payloads = expired_story_webhooks(state, story_clock(state))
    await post_webhooks(state, payloads)
    return JSONResponse({"payloads": payloads})


surface.control_routes = [
    Route("/_sandbox/pages/retire", control_retire, methods=["POST"]),
    Route("/_sandbox/pages/clock", control_clock, methods=["POST"]),
    Route("/_sandbox/pages/stories/expire", control_expire_stories, methods=["POST"]),
]
