"""Organic assets for the Facebook Page and the Instagram professional account, daily-partitioned.

- ``social_media_post``: posts and media published in the partition range (upserted by Meta's id);
- ``social_post_insights``: those posts' lifetime metrics, dated by the day they were published and
  refreshed by re-running the partition (lifetime numbers keep growing for about 28 days);
- ``social_account_insights``: the accounts' daily metrics.

Each run replaces its range in one transaction, so re-runs and look-backs never duplicate.
"""

from collections.abc import Iterable
from datetime import date

import dagster as dg
import psycopg
from psycopg.types.json import Jsonb

from everreach_data.meta import organic
from everreach_data.meta.organic import InsightsReport, Post
from everreach_data.partitions import daily_partitions, insights_backfill_policy
from everreach_data.resources import GraphAPIResource, PostgresResource, meta_failures


class FacebookPageResource(GraphAPIResource):
    """A Facebook Page and its Page token (``MESSENGER_PAGE_ID``, ``MESSENGER_PAGE_TOKEN``)."""

    page_id: str


class InstagramAccountResource(GraphAPIResource):
    """An Instagram professional account and the linked Page's token (``INSTAGRAM_USER_ID``,
    ``INSTAGRAM_PAGE_TOKEN``)."""

    ig_user_id: str


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


def _range(context: dg.AssetExecutionContext) -> tuple[date, date]:
    window = context.partition_time_window
    return window.start.date(), window.end.date()


def write_posts(conn: psycopg.Connection, posts: Iterable[Post]) -> int:
    rows = [{"platform": p.platform, "account_id": p.account_id, "post_id": p.post_id, "media_type": p.media_type,
             "caption": p.caption, "permalink": p.permalink, "posted_at": p.posted_at.isoformat(), "raw": p.raw}
            for p in posts]
    if rows:
        conn.execute(UPSERT_POSTS, {"rows": Jsonb(rows)})
    return len(rows)


def replace_post_insights(conn: psycopg.Connection, since: date, until: date,
                          values: list[tuple[Post, str, object]]) -> int:
    rows = [{"platform": p.platform, "post_id": p.post_id, "date": p.posted_at.date().isoformat(), "metric": m,
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


@dg.asset(partitions_def=daily_partitions, backfill_policy=insights_backfill_policy, group_name="organic",
          kinds={"postgres", "meta"})
def social_media_post(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      facebook_page: FacebookPageResource,
                      instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """Page posts and Instagram media published in the partition range."""
    since, until = _range(context)
    with meta_failures("reading Page posts and Instagram media", "MESSENGER_PAGE_TOKEN/INSTAGRAM_PAGE_TOKEN"), \
            facebook_page.client() as fb, instagram_account.client() as ig:
        fb_posts = organic.page_posts(fb, facebook_page.page_id, since, until)
        ig_media = organic.instagram_media(ig, instagram_account.ig_user_id, since, until)
        calls = fb.stats.calls + ig.stats.calls
    with postgres.connect() as conn:
        written = write_posts(conn, [*fb_posts, *ig_media])
    return dg.MaterializeResult(metadata={"facebook_posts": len(fb_posts), "instagram_media": len(ig_media),
                                          "rows_written": written, "api_calls": calls})


@dg.asset(partitions_def=daily_partitions, backfill_policy=insights_backfill_policy, group_name="organic",
          kinds={"postgres", "meta"}, deps=[social_media_post],
          check_specs=[dg.AssetCheckSpec("every_post_has_insights", asset="social_post_insights")])
def social_post_insights(context: dg.AssetExecutionContext, postgres: PostgresResource,
                         facebook_page: FacebookPageResource,
                         instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """Lifetime metrics of the posts published in the partition range (Graph batch requests, 50 posts each)."""
    since, until = _range(context)
    window = context.partition_time_window
    with postgres.connect() as conn:
        posts = [Post(r["platform"], r["account_id"], r["platform_post_id"], r["posted_at"], r["caption"],
                      r["media_type"], r["permalink"], r["metadata"])
                 for r in conn.execute(POSTS_IN_RANGE, {"start": window.start, "end": window.end})]
    report = InsightsReport()
    values: list[tuple[Post, str, object]] = []
    with meta_failures("reading post insights", "MESSENGER_PAGE_TOKEN/INSTAGRAM_PAGE_TOKEN"), \
            facebook_page.client() as fb, instagram_account.client() as ig:
        for platform, client in (("facebook", fb), ("instagram", ig)):
            mine = [p for p in posts if p.platform == platform]
            metrics = organic.posts_lifetime_insights(client, mine, report) if mine else {}
            values += [(p, name, value) for p in mine for name, value in metrics.get(p.post_id, {}).items()]
        calls = fb.stats.calls + ig.stats.calls
    with postgres.connect() as conn:
        written = replace_post_insights(conn, since, until, values)
    with_insights = {p.post_id for p, _, _ in values}
    missing = [p.post_id for p in posts if p.post_id not in with_insights]
    return dg.MaterializeResult(
        metadata={"posts": len(posts), "rows_written": written, "api_calls": calls,
                  "dropped_metrics": dg.MetadataValue.json(sorted(report.dropped_metrics))},
        check_results=[dg.AssetCheckResult(check_name="every_post_has_insights", passed=not missing,
                                           severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"posts_without_insights": len(missing)})],
    )


@dg.asset(partitions_def=daily_partitions, backfill_policy=insights_backfill_policy, group_name="organic",
          kinds={"postgres", "meta"},
          check_specs=[dg.AssetCheckSpec("one_value_per_day_and_metric", asset="social_account_insights")])
def social_account_insights(context: dg.AssetExecutionContext, postgres: PostgresResource,
                            facebook_page: FacebookPageResource,
                            instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """The Page's and the Instagram account's daily metrics for the partition range."""
    since, until = _range(context)
    with meta_failures("reading account insights", "MESSENGER_PAGE_TOKEN/INSTAGRAM_PAGE_TOKEN"), \
            facebook_page.client() as fb, instagram_account.client() as ig:
        reports = {
            ("facebook", facebook_page.page_id): organic.page_daily_insights(fb, facebook_page.page_id, since,
                                                                               until),
            ("instagram", instagram_account.ig_user_id): organic.instagram_daily_insights(
                ig, instagram_account.ig_user_id, since, until),
        }
        calls = fb.stats.calls + ig.stats.calls
    with postgres.connect() as conn:
        written = replace_account_insights(conn, since, until, facebook_page.page_id, instagram_account.ig_user_id,
                                           reports)
    keys = [(platform, v.day, v.metric) for (platform, _), r in reports.items() for v in r.values
            if since <= v.day < until]
    dropped = sorted(set().union(*(r.dropped_metrics for r in reports.values())))
    return dg.MaterializeResult(
        metadata={"rows_written": written, "api_calls": calls, "days": (until - since).days,
                  "dropped_metrics": dg.MetadataValue.json(dropped)},
        check_results=[dg.AssetCheckResult(check_name="one_value_per_day_and_metric",
                                           passed=len(keys) == len(set(keys)),
                                           metadata={"values": len(keys), "distinct": len(set(keys))})],
    )



organic_insights_job = dg.define_asset_job(
    "organic_insights_job", selection=[social_media_post, social_post_insights, social_account_insights],
    partitions_def=daily_partitions)

organic_insights_daily = dg.build_schedule_from_partitioned_job(
    organic_insights_job, name="organic_insights_daily", hour_of_day=7, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="yesterday's Page and Instagram posts, post insights and account insights, every morning")
