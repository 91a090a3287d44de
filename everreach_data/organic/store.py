"""Writing organic data: posts upserted by Meta's id, and a range of post and account insights replaced in
one transaction, so re-runs and look-backs never duplicate."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

import psycopg
from psycopg.types.json import Jsonb

from everreach_data.meta.organic import InsightsReport, Post

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
POSTS_IN_RANGE = """
SELECT platform, account_id, platform_post_id, posted_at, caption, media_type, permalink, metadata
FROM social_media_post WHERE posted_at >= %(start)s AND posted_at < %(end)s
"""
DELETE_POST_INSIGHTS = "DELETE FROM social_post_insights WHERE date >= %(since)s AND date < %(until)s"
INSERT_POST_INSIGHTS = """
INSERT INTO social_post_insights (platform, platform_post_id, date, metric, value)
SELECT r.platform, r.post_id, r.date, r.metric, r.value
FROM jsonb_to_recordset(%(rows)s) AS r(platform text, post_id text, date date, metric text, value numeric)
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


def replace_post_insights(conn: psycopg.Connection, since: date, until: date,
                          values: list[tuple[Post, str, object]]) -> int:
    rows = [{"platform": p.platform, "post_id": p.post_id, "date": utc_day(p.posted_at).isoformat(), "metric": m,
             "value": str(v)} for p, m, v in values]
    with conn.transaction():
        conn.execute(DELETE_POST_INSIGHTS, {"since": since, "until": until})
        if rows:
            conn.execute(INSERT_POST_INSIGHTS, {"rows": Jsonb(rows)})
    return len(rows)


def replace_account_insights(conn: psycopg.Connection, since: date, until: date, page_id: str, ig_user_id: str,
                             reports: dict[tuple[str, str], InsightsReport]) -> int:
    rows = [{"platform": platform, "account_id": account, "date": v.day.isoformat(), "metric": v.metric,
             "value": str(v.value)}
            for (platform, account), report in reports.items() for v in report.values if since <= v.day < until]
    with conn.transaction():
        conn.execute(DELETE_ACCOUNT_INSIGHTS, {"since": since, "until": until, "page": page_id, "ig": ig_user_id})
        if rows:
            conn.execute(INSERT_ACCOUNT_INSIGHTS, {"rows": Jsonb(rows)})
    return len(rows)
