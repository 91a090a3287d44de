"""Organic insights in Dagster, for the Facebook Page and the Instagram professional account:

- ``social_media_post``: posts and media published in the partition range (upserted by Meta's id);
- ``social_post_insights``: those posts' lifetime metrics, dated by the day they were published and
  refreshed by re-running the partition (lifetime numbers keep growing for about 28 days);
- ``social_account_insights``: the accounts' daily metrics.
"""

from datetime import date

import dagster as dg

from everreach_data.meta import organic
from everreach_data.meta.organic import InsightsReport, Post
from everreach_data.organic.store import (
    POSTS_IN_RANGE,
    replace_account_insights,
    replace_post_insights,
    utc_day,
    write_posts,
)
from everreach_data.partitions import daily_partitions, insights_backfill_policy
from everreach_data.resources import GraphAPIResource, PostgresResource


class FacebookPageResource(GraphAPIResource):
    """A Facebook Page (``MESSENGER_PAGE_ID``) and its Page token."""

    TOKEN_SETTING = "MESSENGER_PAGE_TOKEN"

    page_id: str | None = None


class InstagramAccountResource(GraphAPIResource):
    """An Instagram professional account (``INSTAGRAM_USER_ID``) and the linked Page's token."""

    TOKEN_SETTING = "INSTAGRAM_PAGE_TOKEN"

    ig_user_id: str | None = None


def _range(context: dg.AssetExecutionContext) -> tuple[date, date]:
    window = context.partition_time_window
    return utc_day(window.start), utc_day(window.end)


@dg.asset(partitions_def=daily_partitions, backfill_policy=insights_backfill_policy, group_name="organic",
          kinds={"postgres", "meta"})
def social_media_post(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      facebook_page: FacebookPageResource,
                      instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """Page posts and Instagram media published in the partition range."""
    since, until = _range(context)
    with facebook_page.failures("reading Page posts"), facebook_page.client() as fb:
        fb_posts = organic.page_posts(fb, facebook_page.page_id, since, until)
    with instagram_account.failures("reading Instagram media"), instagram_account.client() as ig:
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
    calls = 0
    for platform, resource in (("facebook", facebook_page), ("instagram", instagram_account)):
        mine = [p for p in posts if p.platform == platform]
        if not mine:
            continue
        with resource.failures(f"reading {platform} post insights"), resource.client() as client:
            metrics = organic.posts_lifetime_insights(client, mine, report)
        values += [(p, name, value) for p in mine for name, value in metrics.get(p.post_id, {}).items()]
        calls += client.stats.calls
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
    with facebook_page.failures("reading Page insights"), facebook_page.client() as fb:
        page = organic.page_daily_insights(fb, facebook_page.page_id, since, until)
    with instagram_account.failures("reading Instagram account insights"), instagram_account.client() as ig:
        account = organic.instagram_daily_insights(ig, instagram_account.ig_user_id, since, until)
    reports = {("facebook", facebook_page.page_id): page, ("instagram", instagram_account.ig_user_id): account}
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


defs = dg.Definitions(assets=[social_media_post, social_post_insights, social_account_insights],
                      jobs=[organic_insights_job], schedules=[organic_insights_daily])
