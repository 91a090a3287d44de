"""Ads insights in Dagster: asset ``ad_performance`` (daily partitions over :mod:`.sync`), its checks, its
job, and its schedules — yesterday every day, a short look-back every day and a 28-day look-back every week,
because Meta restates insights for up to 28 days. Backfills run in batches of up to
:data:`~everreach_data.partitions.DAYS_PER_RUN` partitions per run, not one run per day.
"""

from datetime import date, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from everreach_data.ads.sync import SyncResult, check_levels, sync_ad_performance
from everreach_data.config import definition_settings
from everreach_data.meta.insights import (
    CHUNK_DAYS,
    DEFAULT_CONVERSION_ACTION_TYPES,
    LEVELS,
    InsightsOptions,
    check_action_types,
)
from everreach_data.partitions import daily_partitions, insights_backfill_policy, partitions_start
from everreach_data.resources import GraphAPIResource, PostgresResource


class MetaAdsResource(GraphAPIResource):
    """The Marketing API for the configured ad accounts (``FB_ADS_ACCOUNT_ID``), the insight levels and the
    action types counted as conversions (``ADS_LEVELS``, ``ADS_CONVERSION_ACTION_TYPES``), and how to read."""

    TOKEN_SETTING = "FB_ADS_ACCESS_TOKEN"

    ad_account_ids: list[str] = []
    levels: list[str] = list(LEVELS)
    conversion_action_types: list[str] = list(DEFAULT_CONVERSION_ACTION_TYPES)
    chunk_days: int = CHUNK_DAYS
    page_size: int = 5000
    max_in_flight: int = 50
    poll_initial_seconds: float = 1.0
    timeout_seconds: float = 60.0

    def options(self, action_types: list[str] | None = None) -> InsightsOptions:
        return InsightsOptions(
            chunk_days=self.chunk_days,
            page_size=self.page_size,
            max_in_flight=self.max_in_flight,
            poll_initial_seconds=self.poll_initial_seconds,
            action_types=check_action_types(action_types or self.conversion_action_types),
        )


class AdPerformanceConfig(dg.Config):
    """Per-run overrides (the Launchpad); unset means the resource's (``ADS_LEVELS``,
    ``ADS_CONVERSION_ACTION_TYPES``)."""

    levels: list[str] | None = None
    conversion_action_types: list[str] | None = None


CHECKS = [
    dg.AssetCheckSpec("spend_non_negative", asset="ad_performance", description="no row has negative spend"),
    dg.AssetCheckSpec(
        "clicks_within_impressions",
        asset="ad_performance",
        description="no row has more clicks than impressions",
    ),
    dg.AssetCheckSpec(
        "rows_fetched_equal_written",
        asset="ad_performance",
        description="every row Meta returned was written, and only those",
    ),
    dg.AssetCheckSpec(
        "one_currency_per_account",
        asset="ad_performance",
        description="each ad account reports in a single currency",
    ),
]


def check_results(result: SyncResult) -> list[dg.AssetCheckResult]:
    checks = result.checks
    mixed = {a: c for a, c in checks.get("currencies", {}).items() if len(c) != 1}
    return [
        dg.AssetCheckResult(
            check_name="spend_non_negative",
            passed=checks["negative_spend"] == 0,
            metadata={"rows_with_negative_spend": checks["negative_spend"]},
        ),
        dg.AssetCheckResult(
            check_name="clicks_within_impressions",
            passed=checks["clicks_over_impressions"] == 0,
            metadata={"rows_with_clicks_over_impressions": checks["clicks_over_impressions"]},
        ),
        dg.AssetCheckResult(
            check_name="rows_fetched_equal_written",
            passed=result.rows_fetched == result.rows_written == checks["rows_in_range"],
            metadata={
                "fetched": result.rows_fetched,
                "written": result.rows_written,
                "in_table": checks["rows_in_range"],
            },
        ),
        dg.AssetCheckResult(
            check_name="one_currency_per_account",
            passed=not mixed,
            metadata={"currencies": dg.MetadataValue.json(checks.get("currencies", {}))},
        ),
    ]


campaign = dg.AssetSpec(
    "campaign", group_name="ads", kinds={"postgres"}, owners=["team:analytics"],
    description="The CRM's campaigns; Meta's are upserted here by ad_performance (source meta, by Meta's id).",
    metadata={"dagster/table_name": "public.campaign"})


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=insights_backfill_policy,
    check_specs=CHECKS,
    deps=[campaign],
    group_name="ads",
    kinds={"postgres", "meta"},
    description="Daily Meta ads insights (campaign, ad set and ad levels) for every configured ad account.",
)
def ad_performance(
    context: dg.AssetExecutionContext,
    config: AdPerformanceConfig,
    postgres: PostgresResource,
    meta_ads: MetaAdsResource,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    since, until = window.start.date(), window.end.date() - timedelta(days=1)
    levels = check_levels(config.levels or meta_ads.levels)
    options = meta_ads.options(config.conversion_action_types)
    accounts = meta_ads.ad_account_ids
    context.log.info(f"reading {since}..{until} for {len(accounts)} account(s), levels {levels}")
    with meta_ads.client() as client:
        result = sync_ad_performance(
            postgres.resolved_url(),
            client,
            accounts=accounts,
            levels=levels,
            since=since,
            until=until,
            options=options,
        )
    summary = result.summary()
    return dg.MaterializeResult(
        metadata={
            **summary,
            "summary_level": result.summary_level,
            "rows_per_level": dg.MetadataValue.json(result.rows_per_level),
            "rows_written": result.rows_written,
            "api_calls": result.api_calls,
            "graph_requests": result.graph_requests,
            "report_runs": result.report_runs,
            "splits": result.splits,
            "throttled_calls": result.throttled_calls,
            "accounts": dg.MetadataValue.json(result.accounts),
            "date_range": f"{since}..{until}",
        },
        check_results=check_results(result),
    )


ad_performance_job = dg.define_asset_job(
    "ad_performance_job", selection=[ad_performance], partitions_def=daily_partitions
)

ad_performance_daily = dg.build_schedule_from_partitioned_job(
    ad_performance_job,
    name="ad_performance_daily",
    hour_of_day=6,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="yesterday's ad insights, every morning",
)


def lookback_range(today: date, first_back: int, days: int, earliest: date) -> tuple[date, date] | None:
    """The ``days`` days ending ``first_back`` days before ``today``, clipped to the first partition."""
    end = today - timedelta(days=first_back)
    start = max(earliest, end - timedelta(days=days - 1))
    return (start, end) if start <= end else None


def lookback_schedule(name: str, cron: str, first_back: int, days: int) -> dg.ScheduleDefinition:
    """A schedule re-pulling one range as a single run (Meta restates recent days)."""

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job=ad_performance_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"re-pull the {days} days ending {first_back} day(s) ago (Meta's restatements)",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        today = context.scheduled_execution_time.date()
        span = lookback_range(today, first_back, days, partitions_start(definition_settings(), today))
        if span is None:
            return dg.SkipReason("the look-back range is before the first partition")
        start, end = (d.isoformat() for d in span)
        return dg.RunRequest(
            run_key=f"{name}:{start}:{end}",
            tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end},
        )

    return _schedule


_settings = definition_settings()
#: The days before yesterday, every day (yesterday is the daily schedule's).
ad_performance_lookback_daily = lookback_schedule(
    "ad_performance_lookback_daily", "30 6 * * *", 2, _settings.ADS_LOOKBACK_DAILY_DAYS
)
#: Meta's whole 28-day restatement window, once a week.
ad_performance_lookback_weekly = lookback_schedule(
    "ad_performance_lookback_weekly", "0 7 * * 1", 1, _settings.ADS_LOOKBACK_WEEKLY_DAYS
)

schedules = [ad_performance_daily, ad_performance_lookback_daily, ad_performance_lookback_weekly]

defs = dg.Definitions(assets=[campaign, ad_performance], jobs=[ad_performance_job], schedules=schedules)
