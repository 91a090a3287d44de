"""Ads in Dagster.

- Objects: ``ad_account``, ``campaign``, ``ad_set``, ``ad``, ``ad_creative`` (unpartitioned, upserted by
  Meta's id, deleted and archived objects kept), refreshed every morning by ``ad_objects_daily``.
- Insights (daily partitions: the accounts' own days): ``ad_performance``, one
  ``ad_performance_breakdown/<report>`` asset per breakdown report (:mod:`.reports`) and
  ``ad_performance_attribution``, with their checks. ``ad_performance_daily`` runs every hour and pulls,
  for each group of accounts, the day that has just ended in their time zone (:mod:`.accounts`); the
  look-backs re-pull a short range every day and Meta's 28 days every week, because Meta restates
  insights for up to 28 days. Backfills run in batches of up to
  :data:`~everreach_data.partitions.DAYS_PER_RUN` partitions per run, not one run per day.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from everreach_data.ads.accounts import ZONES_SQL, AccountGroup, chunked, due_days
from everreach_data.ads.attribution import sync_attribution
from everreach_data.ads.breakdowns import NOT_ADDITIVE, REACH_NOTE, BreakdownReport, sync_breakdown
from everreach_data.ads.objects import sync_accounts, sync_objects
from everreach_data.ads.reports import load_reports
from everreach_data.ads.sync import ReportRun, SyncResult, check_levels, sync_ad_performance
from everreach_data.ads.writer import TABLE_CHECKS, Totals
from everreach_data.config import definition_settings
from everreach_data.db.catalog import table_metadata
from everreach_data.meta.ads_objects import TOKEN_ACCOUNTS, resolve_accounts
from everreach_data.meta.insights import (
    ATTRIBUTION_WINDOWS,
    CHUNK_DAYS,
    DEFAULT_CONVERSION_ACTION_TYPES,
    LEVELS,
    InsightsError,
    InsightsOptions,
    check_action_types,
    check_windows,
)
from everreach_data.partitions import daily_partitions, insights_backfill_policy, lookback_range, partitions_start
from everreach_data.resources import GraphAPIResource, PostgresResource


class MetaAdsResource(GraphAPIResource):
    """The Marketing API for the configured ad accounts (``FB_ADS_ACCOUNT_ID``: ``act_…`` ids, or ``me`` for
    every account the token may read), the insight levels, the action types counted as conversions and the
    attribution windows (``ADS_LEVELS``, ``ADS_CONVERSION_ACTION_TYPES``, ``ADS_ATTRIBUTION_WINDOWS``), and
    how to read."""

    TOKEN_SETTING = "FB_ADS_ACCESS_TOKEN"

    ad_account_ids: list[str] = []
    levels: list[str] = list(LEVELS)
    conversion_action_types: list[str] = list(DEFAULT_CONVERSION_ACTION_TYPES)
    attribution_windows: list[str] = list(ATTRIBUTION_WINDOWS)
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


    def accounts(self, run: list[str] | None) -> list[str]:
        """A run's accounts: its config's (a scheduled group's), else every configured one."""
        return run or self.ad_account_ids


class AdsRunConfig(dg.Config):
    """Per-run overrides (the Launchpad, and the schedules' groups): ``accounts`` unset means every
    configured account."""

    accounts: list[str] | None = None


class AdPerformanceConfig(AdsRunConfig):
    """Per-run overrides; unset means the resource's (``ADS_LEVELS``, ``ADS_CONVERSION_ACTION_TYPES``)."""

    levels: list[str] | None = None
    conversion_action_types: list[str] | None = None


#: What every ads asset tells the catalog: who owns it, and when yesterday should be in (the daily schedule
#: pulls each account's day once it has ended there, hourly; the last time zones end at 12:00 UTC).
CATALOG = {"group_name": "ads", "owners": ["team:analytics"],
           "freshness_policy": dg.FreshnessPolicy.cron(deadline_cron="0 14 * * *",
                                                       lower_bound_delta=timedelta(hours=24))}

CHECKS = [
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


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=insights_backfill_policy,
    check_specs=CHECKS,
    deps=["ad_account", "campaign", "ad_set", "ad"],
    kinds={"postgres", "meta"},
    **CATALOG,
    description="Daily Meta ads insights (campaign, ad set and ad levels) for every configured ad account.",
)
def ad_performance(
    context: dg.AssetExecutionContext,
    config: AdPerformanceConfig,
    postgres: PostgresResource,
    meta_ads: MetaAdsResource,
) -> dg.MaterializeResult:
    since, until = partition_days(context)
    levels = check_levels(config.levels or meta_ads.levels)
    options = meta_ads.options(config.conversion_action_types)
    accounts = meta_ads.accounts(config.accounts)
    context.log.info(f"reading {since}..{until} for {len(accounts)} account(s), levels {levels}")
    with ads_failures(meta_ads), meta_ads.client() as client:
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
            **table_catalog(postgres, "ad_performance", result.rows_written),
        },
        check_results=check_results(result),
    )


@dg.multi_asset_check(specs=[
    dg.AssetCheckSpec("spend_non_negative", asset="ad_performance", description="no row has negative spend"),
    dg.AssetCheckSpec("clicks_within_impressions", asset="ad_performance",
                      description="no row has more clicks than impressions"),
])
def table_checks(postgres: PostgresResource) -> Iterator[dg.AssetCheckResult]:
    """The checks that read the whole table, in one scan."""
    with postgres.connect() as conn:
        found = conn.execute(TABLE_CHECKS).fetchone()
    yield dg.AssetCheckResult(check_name="spend_non_negative", passed=found["negative_spend"] == 0,
                              metadata={"rows_with_negative_spend": found["negative_spend"]})
    yield dg.AssetCheckResult(check_name="clicks_within_impressions", passed=found["clicks_over_impressions"] == 0,
                              metadata={"rows_with_clicks_over_impressions": found["clicks_over_impressions"]})


def partition_days(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The run's days (the accounts' own: Meta dates insights in each account's time zone)."""
    window = context.partition_time_window
    return window.start.date(), window.end.date() - timedelta(days=1)


def table_catalog(postgres: PostgresResource, table: str, rows: int) -> dict[str, object]:
    """The table's name, columns and the rows this run wrote, for the catalog."""
    with postgres.connect() as conn:
        return table_metadata(conn, table, row_count=rows)


def run_metadata(run: ReportRun) -> dict[str, object]:
    meta = run.metadata()
    meta["accounts"] = dg.MetadataValue.json(meta["accounts"])
    return meta


# ───────────────────────────── breakdown reports ─────────────────────────────

BREAKDOWN_TABLE = "ad_performance_breakdown"


def breakdown_asset(report: BreakdownReport) -> dg.AssetsDefinition:
    """The daily-partitioned asset of one breakdown report, with its check against ``ad_performance``."""
    key = dg.AssetKey([BREAKDOWN_TABLE, report.name])
    check = dg.AssetCheckSpec(
        "sums_to_level_totals", asset=key,
        description=f"each day's cells add up to ad_performance's {report.level} spend, impressions and "
                    f"clicks ({NOT_ADDITIVE})")

    @dg.asset(key=key, partitions_def=daily_partitions, backfill_policy=insights_backfill_policy,
              check_specs=[check], kinds={"postgres", "meta"}, **CATALOG,
              description=f"Breakdown report {report.name!r}: {report.describe()}, per day, in "
                          f"{BREAKDOWN_TABLE} (report = {report.name!r}).")
    def _asset(context: dg.AssetExecutionContext, config: AdsRunConfig, postgres: PostgresResource,
               meta_ads: MetaAdsResource) -> dg.MaterializeResult:
        since, until = partition_days(context)
        with ads_failures(meta_ads), meta_ads.client() as client:
            result = sync_breakdown(postgres.resolved_url(), client, report=report,
                                    accounts=meta_ads.accounts(config.accounts), since=since, until=until,
                                    options=meta_ads.options())
        run, verdict = result.run, result.check
        withheld = run.reader.stats.rows_without_reach
        reach = REACH_NOTE.format(n=withheld) if withheld else f"reach on every row; {NOT_ADDITIVE}"
        severity = dg.AssetCheckSeverity.ERROR if verdict.mismatched else dg.AssetCheckSeverity.WARN
        return dg.MaterializeResult(
            metadata={**run_metadata(run), **table_catalog(postgres, BREAKDOWN_TABLE, run.rows_written),
                      "report": report.name, "level": report.level,
                      "breakdowns": ", ".join(report.breakdowns), "rows_without_reach": withheld, "reach": reach,
                      **run.spool.totals.get(report.level, Totals()).summary()},
            check_results=[dg.AssetCheckResult(
                check_name="sums_to_level_totals", passed=verdict.passed, severity=severity,
                metadata={"days_compared": verdict.days_compared,
                          "mismatched": dg.MetadataValue.json(verdict.mismatched[:50]),
                          "not_in_ad_performance": dg.MetadataValue.json(verdict.not_in_ad_performance[:50]),
                          "reach": NOT_ADDITIVE},
                description=("days without ad_performance rows at this level: materialize ad_performance for "
                             "them to compare" if verdict.not_in_ad_performance and not verdict.mismatched
                             else None))],
        )

    return _asset


# ───────────────────────────── attribution windows ─────────────────────────────


@dg.asset(partitions_def=daily_partitions, backfill_policy=insights_backfill_policy, kinds={"postgres", "meta"},
          **CATALOG, description="Conversions and conversion value per action type and attribution window (1d_click, "
                      "7d_click, 28d_click, 1d_view, 1d_engaged_view, and default: the ad set's own setting).")
def ad_performance_attribution(context: dg.AssetExecutionContext, config: AdPerformanceConfig,
                               postgres: PostgresResource, meta_ads: MetaAdsResource) -> dg.MaterializeResult:
    since, until = partition_days(context)
    try:
        windows = check_windows(meta_ads.attribution_windows)
    except ValueError as exc:
        raise dg.Failure(description=f"ADS_ATTRIBUTION_WINDOWS: {exc}") from exc
    levels = check_levels(config.levels or meta_ads.levels)
    with ads_failures(meta_ads), meta_ads.client() as client:
        run = sync_attribution(postgres.resolved_url(), client, accounts=meta_ads.accounts(config.accounts),
                               levels=levels, since=since, until=until, windows=windows,
                               options=meta_ads.options(config.conversion_action_types))
    return dg.MaterializeResult(metadata={**run_metadata(run), **table_catalog(postgres, "ad_performance_attribution",
                                                                             run.rows_written),
                                          "windows": ", ".join(("default", *windows)),
                                          "levels": ", ".join(levels)})


# ───────────────────────────── objects ─────────────────────────────

OBJECT_DESCRIPTIONS = {
    "ad_account": "Ad accounts: name, currency, time zone (the accounts' days), status.",
    "campaign": "Meta campaigns (source 'meta'): objective, status and effective status, budgets, start/stop.",
    "ad_set": "Ad sets: campaign, status, optimization goal, billing event, budgets, attribution spec.",
    "ad": "Ads: ad set, campaign, status, creative.",
    "ad_creative": "Ad creatives: title, body, object type, thumbnail and permalink.",
}


def object_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(name=table, group_name="ads", kinds={"postgres", "meta"}, owners=CATALOG["owners"],
              description=OBJECT_DESCRIPTIONS[table] + " Upserted by Meta's id; deleted and archived kept.")
    def _asset(config: AdsRunConfig, postgres: PostgresResource, meta_ads: MetaAdsResource) -> dg.MaterializeResult:
        with ads_failures(meta_ads), meta_ads.client() as client, postgres.connect() as conn:
            accounts = resolve_accounts(client, meta_ads.accounts(config.accounts))
            result = (sync_accounts(conn, client, accounts) if table == "ad_account"
                      else sync_objects(conn, client, table, accounts))
        return dg.MaterializeResult(metadata={
            "rows": sum(result.rows.values()), "rows_per_account": dg.MetadataValue.json(result.rows),
            "statuses": dg.MetadataValue.json(result.statuses), "api_calls": result.api_calls})

    return _asset


@contextmanager
def ads_failures(meta_ads: MetaAdsResource) -> Iterator[None]:
    """Meta's permanent errors and refused settings as a run failure that says what to fix."""
    with meta_ads.failures("reading ads"):
        try:
            yield
        except (InsightsError, ValueError) as exc:
            raise dg.Failure(description=str(exc)) from exc

object_assets = [object_asset(t) for t in OBJECT_DESCRIPTIONS]
_settings = definition_settings()
breakdown_assets = [breakdown_asset(r) for r in load_reports(_settings.ADS_BREAKDOWN_REPORTS)]
insight_assets = [ad_performance, *breakdown_assets, ad_performance_attribution]

# ───────────────────────────── jobs and schedules ─────────────────────────────

ad_objects_job = dg.define_asset_job("ad_objects_job", selection=object_assets)
ads_insights_job = dg.define_asset_job("ads_insights_job", selection=insight_assets,
                                       partitions_def=daily_partitions)
#: The ops of ``ads_insights_job`` (one per asset), each given the run's accounts.
INSIGHT_OPS = [a.key.to_python_identifier() for a in insight_assets]


def group_config(group: AccountGroup | None) -> dict:
    if group is None:
        return {}
    return {"ops": {op: {"config": {"accounts": list(group.accounts)}} for op in INSIGHT_OPS}}


ad_objects_daily = dg.ScheduleDefinition(
    name="ad_objects_daily", job=ad_objects_job, cron_schedule="0 5 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="accounts, campaigns, ad sets, ads and creatives, every morning")


@dg.schedule(name="ad_performance_daily", cron_schedule="20 * * * *", job=ads_insights_job,
             execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="each group of accounts' day, once it has ended in their time zone")
def ad_performance_daily(context: dg.ScheduleEvaluationContext, postgres: PostgresResource,
                         meta_ads: MetaAdsResource):
    with postgres.connect() as conn:
        known = {r["ad_account_id"]: r["timezone_name"] for r in conn.execute(ZONES_SQL)}
    configured = meta_ads.ad_account_ids
    accounts = sorted(known) if [a.lower() for a in configured] == [TOKEN_ACCOUNTS] else [
        a if a.startswith("act_") else f"act_{a}" for a in configured]
    if not accounts:
        return dg.SkipReason("no ad accounts: set FB_ADS_ACCOUNT_ID (with me, materialize ad_account first)")
    now = context.scheduled_execution_time or datetime.now(UTC)
    earliest = partitions_start(definition_settings(), now.date())
    requests = []
    for day, group in due_days({a: known.get(a) for a in accounts}, now, _settings.ADS_ACCOUNTS_PER_RUN):
        if day < earliest:
            continue
        requests.append(dg.RunRequest(run_key=f"ad_performance_daily:{day}:{group.key}",
                                      partition_key=day.isoformat(), run_config=group_config(group),
                                      tags=group.tags()))
    return requests


def lookback_groups() -> list[AccountGroup | None]:
    """The look-backs' runs: one per group of the configured accounts (one for all when they come from
    the token, or none is configured: the run resolves them)."""
    accounts = _settings.ad_account_ids
    if not accounts or [a.lower() for a in accounts] == [TOKEN_ACCOUNTS]:
        return [None]
    return [AccountGroup(tuple(g)) for g in chunked(accounts, _settings.ADS_ACCOUNTS_PER_RUN)]


def lookback_schedule(name: str, cron: str, first_back: int, days: int) -> dg.ScheduleDefinition:
    """A schedule re-pulling one range, as one run per group of accounts (Meta restates recent days).
    ``first_back`` days back has ended in every time zone when the cron fires."""

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job=ads_insights_job,
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
        range_tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
        groups = lookback_groups()
        return [
            dg.RunRequest(
                run_key=f"{name}:{start}:{end}" + (f":{g.key}" if g and len(groups) > 1 else ""),
                run_config=group_config(g),
                tags={**range_tags, **(g.tags() if g else {})},
            )
            for g in groups
        ]

    return _schedule


#: The days before yesterday, every day (yesterday is the daily schedule's); two days back has ended
#: everywhere by 06:30 UTC.
ad_performance_lookback_daily = lookback_schedule(
    "ad_performance_lookback_daily", "30 6 * * *", 2, _settings.ADS_LOOKBACK_DAILY_DAYS
)
#: Meta's whole 28-day restatement window, once a week, at 13:00 UTC Mondays: Sunday has ended in every
#: time zone by then (the last, UTC−12, at 12:00).
ad_performance_lookback_weekly = lookback_schedule(
    "ad_performance_lookback_weekly", "0 13 * * 1", 1, _settings.ADS_LOOKBACK_WEEKLY_DAYS
)

schedules = [ad_objects_daily, ad_performance_daily, ad_performance_lookback_daily, ad_performance_lookback_weekly]

defs = dg.Definitions(assets=[*object_assets, *insight_assets],
                      asset_checks=[table_checks],
                      jobs=[ad_objects_job, ads_insights_job], schedules=schedules)
