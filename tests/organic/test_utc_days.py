"""Partitions are UTC days, whatever the database server's TimeZone: a post is filed under the UTC day it
was published, and re-running its partition replaces exactly its rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from everreach_data.organic.defs import social_media_post, social_post_insights
from tests.organic.helpers import run, set_database_time_zone


def test_posts_are_dated_by_their_utc_day_in_a_far_from_utc_session(db, db_url, sandbox):
    set_database_time_zone(db, "Asia/Tokyo")  # UTC+9: a post after 15:00 UTC is "tomorrow" in Tokyo
    with psycopg.connect(db_url, row_factory=dict_row) as tokyo:
        assert tokyo.execute("SHOW timezone").fetchone()["TimeZone"] == "Asia/Tokyo"
    end = datetime.now(UTC).date() - timedelta(days=3)
    start = end - timedelta(days=6)
    for _ in range(2):  # the second run replaces the first one's rows (it failed on a duplicate key)
        assert run([social_media_post, social_post_insights], db_url, sandbox, start, end).success

    posts = db.execute("SELECT platform_post_id, posted_at AT TIME ZONE 'UTC' AS utc FROM social_media_post"
                       ).fetchall()
    late = [p for p in posts if p["utc"].hour >= 15]
    assert late, "the range must hold posts published after 15:00 UTC for this test to mean anything"
    days = {r["platform_post_id"]: r["days"] for r in db.execute(
        "SELECT platform_post_id, array_agg(DISTINCT date) AS days FROM social_post_insights GROUP BY 1")}
    assert {p["platform_post_id"]: [p["utc"].date()] for p in posts} == days
    assert all(start <= d[0] <= end for d in days.values())
