"""Organic insights in Dagster, for the Facebook Page and the Instagram professional account:

- ``social_media_post``: posts, Reels and media published in the partition range (upserted by Meta's id);
- ``social_post_insights``: their lifetime metrics, dated by the UTC day they were published and refreshed
  by re-running the partition (lifetime numbers keep growing for about 28 days);
- ``social_account_insights`` and ``social_account_insights_breakdown``: the accounts' daily metrics, and
  Instagram's broken down by follower type and media product type;
- ``social_audience_demographics``: a daily snapshot of the audience (not partitioned: Meta only tells who
  the audience is now);
- job ``instagram_stories_job``: live stories and their numbers so far, every 30 minutes, into
  ``social_media_post`` and ``social_post_insights`` (the ``story_insights`` webhook brings the final ones).

The daily schedule re-pulls the two days before today: Meta's organic numbers lag up to 48 hours.
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from everreach_data.config import definition_settings
from everreach_data.db.catalog import table_metadata
from everreach_data.meta import organic
from everreach_data.meta.organic import InsightsReport, Post
from everreach_data.organic.store import (
    posts_in_range,
    replace_account_insights,
    replace_breakdowns,
    replace_demographics,
    replace_post_insights,
    utc_day,
    write_posts,
    write_story_insights,
)
from everreach_data.partitions import daily_partitions, insights_backfill_policy, lookback_range, partitions_start
from everreach_data.resources import GraphAPIResource, PostgresResource

#: Meta's organic numbers can lag up to 48 hours: the daily run re-pulls this many days before today.
LAG_DAYS = 2


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


def _dropped(report: InsightsReport) -> dg.MetadataValue:
    return dg.MetadataValue.json(sorted(report.dropped_metrics))


#: The daily run starts at 07:00 UTC: its tables are due by 09:00.
FRESH_BY = dg.FreshnessPolicy.cron(deadline_cron="0 9 * * *", lower_bound_delta=timedelta(hours=2))
ORGANIC = {"group_name": "organic", "kinds": {"postgres", "meta"}, "owners": ["team:analytics"],
           "freshness_policy": FRESH_BY}
DAILY = {**ORGANIC, "partitions_def": daily_partitions, "backfill_policy": insights_backfill_policy}


@dg.asset(**DAILY)
def social_media_post(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      facebook_page: FacebookPageResource,
                      instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """Page posts and Reels, and Instagram media (a carousel's children in its ``metadata``), published in
    the partition range."""
    since, until = _range(context)
    with facebook_page.failures("reading Page posts"), facebook_page.client() as fb:
        fb_posts = organic.page_posts(fb, facebook_page.page_id, since, until)
        fb_reels = organic.page_reels(fb, facebook_page.page_id, since, until)
    with instagram_account.failures("reading Instagram media"), instagram_account.client() as ig:
        ig_media = organic.instagram_media(ig, instagram_account.ig_user_id, since, until)
    calls = fb.stats.calls + ig.stats.calls
    with postgres.connect() as conn:
        written = write_posts(conn, [*fb_posts, *fb_reels, *ig_media])
        table = table_metadata(conn, "social_media_post")
    return dg.MaterializeResult(metadata={**table, "facebook_posts": len(fb_posts), "facebook_reels": len(fb_reels),
                                          "instagram_media": len(ig_media), "rows_written": written,
                                          "api_calls": calls})


@dg.asset(**DAILY, deps=[social_media_post],
          check_specs=[dg.AssetCheckSpec("every_post_has_insights", asset="social_post_insights")])
def social_post_insights(context: dg.AssetExecutionContext, postgres: PostgresResource,
                         facebook_page: FacebookPageResource,
                         instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """Lifetime metrics of the posts published in the partition range (Graph batch requests, 50 posts each).
    Stories are not re-read: Meta serves them for 24 hours, so their rows stay as captured."""
    since, until = _range(context)
    window = context.partition_time_window
    with postgres.connect() as conn:
        posts = posts_in_range(conn, window.start, window.end)
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
        table = table_metadata(conn, "social_post_insights")
    with_insights = {p.post_id for p, _, _ in values}
    missing = [p.post_id for p in posts if p.post_id not in with_insights]
    return dg.MaterializeResult(
        metadata={**table, "posts": len(posts), "rows_written": written, "api_calls": calls, "probes": report.probes,
                  "dropped_metrics": _dropped(report)},
        check_results=[dg.AssetCheckResult(check_name="every_post_has_insights", passed=not missing,
                                           severity=dg.AssetCheckSeverity.WARN,
                                           metadata={"posts_without_insights": len(missing)})],
    )


@dg.asset(**DAILY, check_specs=[dg.AssetCheckSpec("one_value_per_day_and_metric", asset="social_account_insights")])
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
        table = table_metadata(conn, "social_account_insights")
    keys = [(platform, v.day, v.metric) for (platform, _), r in reports.items() for v in r.values
            if since <= v.day < until]
    dropped = sorted(set().union(*(r.dropped_metrics for r in reports.values())))
    return dg.MaterializeResult(
        metadata={**table, "rows_written": written, "api_calls": calls, "days": (until - since).days,
                  "dropped_metrics": dg.MetadataValue.json(dropped)},
        check_results=[dg.AssetCheckResult(check_name="one_value_per_day_and_metric",
                                           passed=len(keys) == len(set(keys)),
                                           metadata={"values": len(keys), "distinct": len(set(keys))})],
    )


@dg.asset(**DAILY)
def social_account_insights_breakdown(context: dg.AssetExecutionContext, postgres: PostgresResource,
                                      instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """The Instagram account's daily views, reach and interactions by ``follower_type`` and by
    ``media_product_type``, where Meta breaks them down."""
    since, until = _range(context)
    report = InsightsReport()
    with instagram_account.failures("reading Instagram account breakdowns"), instagram_account.client() as ig:
        values = organic.instagram_breakdowns(ig, instagram_account.ig_user_id, since, until, report)
    with postgres.connect() as conn:
        written = replace_breakdowns(conn, since, until, instagram_account.ig_user_id, values)
        table = table_metadata(conn, "social_account_insights_breakdown")
    return dg.MaterializeResult(metadata={**table, "rows_written": written, "api_calls": ig.stats.calls,
                                          "dropped_metrics": _dropped(report)})


@dg.asset(**ORGANIC)
def social_audience_demographics(postgres: PostgresResource, facebook_page: FacebookPageResource,
                                 instagram_account: InstagramAccountResource) -> dg.MaterializeResult:
    """Today's audience: Instagram's follower and engaged-audience demographics by age, gender, city and
    country, and the Page's and the account's follower counts. Re-running the same UTC day replaces it."""
    day = datetime.now(UTC).date()
    report = InsightsReport()
    with instagram_account.failures("reading Instagram demographics"), instagram_account.client() as ig:
        demographics = organic.audience_demographics(ig, instagram_account.ig_user_id, report)
        ig_followers = organic.followers_count(ig, instagram_account.ig_user_id)
    with facebook_page.failures("reading the Page's followers"), facebook_page.client() as fb:
        page_followers = organic.followers_count(fb, facebook_page.page_id)
    followers = {("facebook", facebook_page.page_id): page_followers,
                 ("instagram", instagram_account.ig_user_id): ig_followers}
    with postgres.connect() as conn:
        written = replace_demographics(conn, day, facebook_page.page_id, instagram_account.ig_user_id,
                                       demographics, followers)
        table = table_metadata(conn, "social_audience_demographics")
    return dg.MaterializeResult(metadata={**table, "snapshot_date": day.isoformat(), "rows_written": written,
                                          "api_calls": ig.stats.calls + fb.stats.calls,
                                          "dropped_metrics": _dropped(report)})


@dg.op
def poll_instagram_stories(context: dg.OpExecutionContext, postgres: PostgresResource,
                           instagram_account: InstagramAccountResource) -> dg.Output[None]:
    """The stories live now and their numbers so far (Meta serves them for 24 hours), kept as the highest
    value seen, so nothing is lost when Meta stops serving them."""
    report = InsightsReport()
    with instagram_account.failures("reading Instagram stories"), instagram_account.client() as ig:
        stories = organic.instagram_stories(ig, instagram_account.ig_user_id)
        values = organic.posts_lifetime_insights(ig, stories, report) if stories else {}
    with postgres.connect() as conn:
        written = write_story_insights(conn, stories, values)
    context.log.info(f"{len(stories)} live stories, {written} values")
    return dg.Output(None, metadata={"stories": len(stories), "rows_written": written, "api_calls": ig.stats.calls,
                                     "dropped_metrics": _dropped(report)})


@dg.job(executor_def=dg.in_process_executor,
        description="Live Instagram stories and their insights into social_media_post and social_post_insights.")
def instagram_stories_job() -> None:
    poll_instagram_stories()


DAILY_ASSETS = [social_media_post, social_post_insights, social_account_insights, social_account_insights_breakdown]

organic_insights_job = dg.define_asset_job("organic_insights_job", selection=DAILY_ASSETS,
                                           partitions_def=daily_partitions)
audience_demographics_job = dg.define_asset_job("audience_demographics_job",
                                                selection=[social_audience_demographics])


@dg.schedule(name="organic_insights_daily", cron_schedule="0 7 * * *", job=organic_insights_job,
             execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
             description=f"the {LAG_DAYS} days before today (Meta's organic numbers lag up to 48 hours): posts, "
                         "post insights, account insights and breakdowns, every morning")
def organic_insights_daily(context: dg.ScheduleEvaluationContext):
    today = utc_day(context.scheduled_execution_time)
    span = lookback_range(today, 1, LAG_DAYS, partitions_start(definition_settings(), today))
    if span is None:
        return dg.SkipReason("the range is before the first partition")
    start, end = (d.isoformat() for d in span)
    return dg.RunRequest(run_key=f"organic_insights_daily:{start}:{end}",
                         tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end})


audience_demographics_daily = dg.ScheduleDefinition(
    name="audience_demographics_daily", cron_schedule="15 7 * * *", job=audience_demographics_job,
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="today's audience demographics and follower counts")

instagram_stories_poll = dg.ScheduleDefinition(
    name="instagram_stories_poll", cron_schedule="*/30 * * * *", job=instagram_stories_job,
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="live Instagram stories and their numbers so far (Meta keeps them 24 hours)")


defs = dg.Definitions(assets=[*DAILY_ASSETS, social_audience_demographics],
                      jobs=[organic_insights_job, audience_demographics_job, instagram_stories_job],
                      schedules=[organic_insights_daily, audience_demographics_daily, instagram_stories_poll])
