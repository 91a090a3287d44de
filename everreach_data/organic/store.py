"""Writing organic data: posts upserted by Meta's id; a range of post insights, account insights and their
breakdowns replaced in one transaction, and a day's audience snapshot replaced, so re-runs and look-backs
never duplicate; story insights kept as their highest value, so what Meta stops serving after 24 hours is
never lost."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

from everreach_data.meta.organic import STORY_HOURS, BreakdownValue, DemographicValue, InsightsReport, Post
from everreach_data.meta.webhooks import StoryInsights

UPSERT_POSTS = """
INSERT INTO social_media_post (platform, account_id, platform_post_id, media_type, caption, permalink, posted_at,
                               metadata, synced_at)
SELECT r.platform, r.account_id, r.post_id, r.media_type, r.caption, r.permalink, r.posted_at, r.raw, now()
FROM jsonb_to_recordset(%(rows)s) AS r(platform text, account_id text, post_id text, media_type text,
                                       caption text, permalink text, posted_at timestamptz, raw jsonb)
ON CONFLICT (platform, platform_post_id) DO UPDATE
SET media_type = EXCLUDED.media_type, caption = EXCLUDED.caption, permalink = EXCLUDED.permalink,
    posted_at = EXCLUDED.posted_at, metadata = EXCLUDED.metadata, synced_at = now()
"""
# Stories are left out: their insights come from the stories poll and the story_insights webhook.
POSTS_IN_RANGE = """
SELECT platform, account_id, platform_post_id, posted_at, caption, media_type, permalink, metadata
FROM social_media_post
WHERE posted_at >= %(start)s AND posted_at < %(end)s AND media_type IS DISTINCT FROM 'STORY'
"""
# A story's insights are not replaced with the range: Meta no longer serves them once it has expired.
DELETE_POST_INSIGHTS = """
DELETE FROM social_post_insights i
WHERE date >= %(since)s AND date < %(until)s
  AND NOT EXISTS (SELECT 1 FROM social_media_post p
                  WHERE p.platform = i.platform AND p.platform_post_id = i.platform_post_id
                    AND p.media_type = 'STORY')
"""
INSERT_POST_INSIGHTS = """
INSERT INTO social_post_insights (platform, platform_post_id, date, metric, value)
SELECT r.platform, r.post_id, r.date, r.metric, r.value
FROM jsonb_to_recordset(%(rows)s) AS r(platform text, post_id text, date date, metric text, value numeric)
"""
# A story's counts only grow while it is live, and the webhook brings its final numbers: keep the highest,
# whichever arrives last. A story known only from its webhook gets a row dated from its expiry (Meta keeps a
# story 24 hours); one the poll stored keeps its own date.
UPSERT_STORY_INSIGHTS = """
WITH r AS (
    SELECT DISTINCT ON (post_id, metric) *
    FROM jsonb_to_recordset(%(rows)s) AS x(account_id text, post_id text, metric text, value numeric,
                                           expired_at timestamptz)
    ORDER BY post_id, metric, value DESC
), stories AS (
    INSERT INTO social_media_post (platform, account_id, platform_post_id, media_type, posted_at, metadata)
    SELECT DISTINCT ON (post_id) 'instagram', account_id, post_id, 'STORY',
           coalesce(expired_at, now()) - make_interval(hours => %(story_hours)s),
           jsonb_build_object('media_product_type', 'STORY', 'posted_at', 'estimated from its story_insights webhook')
    FROM r ORDER BY post_id
    ON CONFLICT (platform, platform_post_id) DO NOTHING
    RETURNING platform_post_id, posted_at
)
INSERT INTO social_post_insights AS i (platform, platform_post_id, date, metric, value)
SELECT 'instagram', r.post_id, (coalesce(s.posted_at, p.posted_at) AT TIME ZONE 'UTC')::date, r.metric, r.value
FROM r
LEFT JOIN stories s ON s.platform_post_id = r.post_id
LEFT JOIN social_media_post p ON p.platform = 'instagram' AND p.platform_post_id = r.post_id
ON CONFLICT (platform, platform_post_id, date, metric) DO UPDATE
SET value = GREATEST(i.value, EXCLUDED.value), synced_at = now()
"""
DELETE_ACCOUNT_INSIGHTS = """
DELETE FROM social_account_insights
WHERE date >= %(since)s AND date < %(until)s AND (platform, account_id) IN (('facebook', %(page)s),
                                                                           ('instagram', %(ig)s))
"""
INSERT_ACCOUNT_INSIGHTS = """
INSERT INTO social_account_insights (platform, account_id, date, metric, value)
SELECT r.platform, r.account_id, r.date, r.metric, r.value
FROM jsonb_to_recordset(%(rows)s) AS r(platform text, account_id text, date date, metric text, value numeric)
"""
DELETE_BREAKDOWNS = """
DELETE FROM social_account_insights_breakdown
WHERE platform = 'instagram' AND account_id = %(ig)s AND date >= %(since)s AND date < %(until)s
"""
INSERT_BREAKDOWNS = """
INSERT INTO social_account_insights_breakdown (platform, account_id, date, metric, breakdown, breakdown_value,
                                               value)
SELECT 'instagram', %(ig)s, r.date, r.metric, r.breakdown, r.breakdown_value, r.value
FROM jsonb_to_recordset(%(rows)s) AS r(date date, metric text, breakdown text, breakdown_value text,
                                       value numeric)
"""
DELETE_DEMOGRAPHICS = """
DELETE FROM social_audience_demographics
WHERE snapshot_date = %(day)s AND (platform, account_id) IN (('facebook', %(page)s), ('instagram', %(ig)s))
"""
INSERT_DEMOGRAPHICS = """
INSERT INTO social_audience_demographics (snapshot_date, platform, account_id, metric, timeframe, breakdown,
                                          dimension, value)
SELECT %(day)s, r.platform, r.account_id, r.metric, r.timeframe, r.breakdown, r.dimension, r.value
FROM jsonb_to_recordset(%(rows)s) AS r(platform text, account_id text, metric text, timeframe text,
                                       breakdown text, dimension text, value numeric)
"""
#: The breakdown and dimension of a total (a follower count) in ``social_audience_demographics``.
TOTAL = "total"


def utc_day(moment: datetime) -> date:
    """The UTC day of an aware ``moment``. Postgres hands ``timestamptz`` back in the session's TimeZone, so
    ``moment.date()`` would be that zone's day; partitions are UTC days."""
    return moment.astimezone(UTC).date()


def write_posts(conn: psycopg.Connection, posts: Iterable[Post]) -> int:
    rows = [{"platform": p.platform, "account_id": p.account_id, "post_id": p.post_id, "media_type": p.media_type,
             "caption": p.caption, "permalink": p.permalink, "posted_at": p.posted_at.isoformat(), "raw": p.raw}
            for p in posts]
    if rows:
        conn.execute(UPSERT_POSTS, {"rows": Jsonb(rows)})
    return len(rows)


def _replace(conn: psycopg.Connection, delete: str, scope: dict[str, object], insert: str,
             rows: list[dict[str, object]], **insert_params: object) -> int:
    """Replace what ``delete`` selects by ``scope`` with ``rows``, in one transaction; the number written."""
    with conn.transaction():
        conn.execute(delete, scope)
        if rows:
            conn.execute(insert, {"rows": Jsonb(rows), **insert_params})
    return len(rows)


def posts_in_range(conn: psycopg.Connection, start: datetime, end: datetime) -> list[Post]:
    """The posts (not stories) published in ``[start, end)``."""
    return [Post(r["platform"], r["account_id"], r["platform_post_id"], r["posted_at"], r["caption"],
                 r["media_type"], r["permalink"], r["metadata"])
            for r in conn.execute(POSTS_IN_RANGE, {"start": start, "end": end})]


def replace_post_insights(conn: psycopg.Connection, since: date, until: date,
                          values: list[tuple[Post, str, object]]) -> int:
    rows = [{"platform": p.platform, "post_id": p.post_id, "date": utc_day(p.posted_at).isoformat(), "metric": m,
             "value": str(v)} for p, m, v in values]
    return _replace(conn, DELETE_POST_INSIGHTS, {"since": since, "until": until}, INSERT_POST_INSIGHTS, rows)


def _upsert_story_insights(conn: psycopg.Connection, rows: list[dict[str, object]]) -> int:
    if rows:
        conn.execute(UPSERT_STORY_INSIGHTS, {"rows": Jsonb(rows), "story_hours": STORY_HOURS})
    return len(rows)


def write_story_insights(conn: psycopg.Connection, stories: Sequence[Post],
                         values: dict[str, dict[str, Decimal]]) -> int:
    """What the stories poll read: the stories (upserted as posts) and their numbers so far."""
    write_posts(conn, stories)
    return _upsert_story_insights(conn, [
        {"account_id": s.account_id, "post_id": s.post_id, "metric": m, "value": str(v),
         "expired_at": (s.posted_at + timedelta(hours=STORY_HOURS)).isoformat()}
        for s in stories for m, v in values.get(s.post_id, {}).items()])


def write_story_webhooks(conn: psycopg.Connection, records: Iterable[StoryInsights]) -> int:
    """``story_insights`` webhooks (a story's final numbers), in the webhook drain's transaction."""
    def expired(record: StoryInsights) -> str | None:
        return None if record.timestamp_ms is None else datetime.fromtimestamp(record.timestamp_ms / 1000,
                                                                                UTC).isoformat()

    return _upsert_story_insights(conn, [
        {"account_id": r.channel_id, "post_id": r.media_id, "metric": m, "value": str(v), "expired_at": expired(r)}
        for r in records for m, v in r.metrics])


def replace_account_insights(conn: psycopg.Connection, since: date, until: date, page_id: str, ig_user_id: str,
                             reports: dict[tuple[str, str], InsightsReport]) -> int:
    rows = [{"platform": platform, "account_id": account, "date": v.day.isoformat(), "metric": v.metric,
             "value": str(v.value)}
            for (platform, account), report in reports.items() for v in report.values if since <= v.day < until]
    return _replace(conn, DELETE_ACCOUNT_INSIGHTS, {"since": since, "until": until, "page": page_id, "ig": ig_user_id},
                    INSERT_ACCOUNT_INSIGHTS, rows)


def replace_breakdowns(conn: psycopg.Connection, since: date, until: date, ig_user_id: str,
                       values: Sequence[BreakdownValue]) -> int:
    rows = [{"date": v.day.isoformat(), "metric": v.metric, "breakdown": v.breakdown,
             "breakdown_value": v.breakdown_value, "value": str(v.value)} for v in values if since <= v.day < until]
    return _replace(conn, DELETE_BREAKDOWNS, {"since": since, "until": until, "ig": ig_user_id}, INSERT_BREAKDOWNS,
                    rows, ig=ig_user_id)


def replace_demographics(conn: psycopg.Connection, day: date, page_id: str, ig_user_id: str,
                         demographics: Sequence[DemographicValue],
                         followers: dict[tuple[str, str], Decimal | None]) -> int:
    """Replace the audience snapshot of ``day``: Instagram's demographic buckets and each account's
    follower count (breakdown and dimension ``total``)."""
    rows = [{"platform": "instagram", "account_id": ig_user_id, "metric": d.metric, "timeframe": d.timeframe,
             "breakdown": d.breakdown, "dimension": d.dimension, "value": str(d.value)} for d in demographics]
    rows += [{"platform": platform, "account_id": account, "metric": "followers_count", "timeframe": "lifetime",
              "breakdown": TOTAL, "dimension": TOTAL, "value": str(n)}
             for (platform, account), n in followers.items() if n is not None]
    return _replace(conn, DELETE_DEMOGRAPHICS, {"day": day, "page": page_id, "ig": ig_user_id}, INSERT_DEMOGRAPHICS,
                    rows, day=day)
