"""Asset ``ad_performance``: daily Meta ads insights per account and level, replaced range by range.

A run over any range of daily partitions reads the whole range through async report runs
(:mod:`everreach_data.meta.insights`) and replaces it in ``ad_performance`` in one transaction
(:mod:`everreach_data.assets.ads_writer`). Schedules: yesterday every day, a short look-back every day and a
28-day look-back every week, because Meta restates insights for up to 28 days. Backfills run in batches of
up to :data:`DAYS_PER_RUN` partitions per run, not one run per day.
"""

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from everreach_data.assets.ads_writer import Spool, Totals, range_checks, replace_range
from everreach_data.config import Settings, load_settings
from everreach_data.db.connection import connect
from everreach_data.meta.client import GraphClient
from everreach_data.meta.insights import (
    CHUNK_DAYS,
    DEFAULT_CONVERSION_ACTION_TYPES,
    LEVELS,
    InsightsOptions,
    InsightsReader,
    check_action_types,
)
from everreach_data.partitions import (
    BACKFILL_DAYS_PER_RUN,
    daily_partitions,
    insights_backfill_policy,
    partitions_start,
)
from everreach_data.resources import GraphAPIResource, PostgresResource

#: A backfill's runs cover up to this many days each — one report run per level and account (the reader's
#: chunk is the same size), and a failed run redoes at most a quarter.
DAYS_PER_RUN = BACKFILL_DAYS_PER_RUN


class MetaAdsResource(GraphAPIResource):
    """The Marketing API for the configured ad accounts: a :class:`GraphAPIResource` (token, Graph URL and
    version) plus how to read insights. Empty ``ad_account_ids`` fall back to ``FB_ADS_ACCOUNT_ID``."""

    ad_account_ids: list[str] = []
    chunk_days: int = CHUNK_DAYS
    page_size: int = 5000
    max_in_flight: int = 50
    poll_initial_seconds: float = 1.0
    timeout_seconds: float = 60.0

    def accounts(self, settings: Settings | None = None) -> list[str]:
        ids = self.ad_account_ids or (settings or load_settings()).ad_account_ids
        return [i if i.startswith("act_") else f"act_{i}" for i in ids]

    def options(self, action_types: tuple[str, ...]) -> InsightsOptions:
        return InsightsOptions(
            chunk_days=self.chunk_days,
            page_size=self.page_size,
            max_in_flight=self.max_in_flight,
            poll_initial_seconds=self.poll_initial_seconds,
            action_types=action_types,
        )


class AdPerformanceConfig(dg.Config):
    """Per-run overrides (the Launchpad); unset means the settings (``ADS_LEVELS``,
    ``ADS_CONVERSION_ACTION_TYPES``)."""

    levels: list[str] | None = None
    conversion_action_types: list[str] | None = None


def levels_from(settings: Settings, override: list[str] | None = None) -> list[str]:
    levels = override or [lv.strip() for lv in settings.ADS_LEVELS.split(",") if lv.strip()]
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise ValueError(f"ADS_LEVELS has unknown level(s) {bad}: choose from {', '.join(LEVELS)}")
    return levels


def action_types_from(settings: Settings, override: list[str] | None = None) -> tuple[str, ...]:
    if override:
        return check_action_types(override)
    if settings.ADS_CONVERSION_ACTION_TYPES:
        return check_action_types(settings.ADS_CONVERSION_ACTION_TYPES.split(","))
    return DEFAULT_CONVERSION_ACTION_TYPES


# ───────────────────────────── the work, without Dagster ─────────────────────────────


@dataclass
class SyncResult:
    since: date
    until: date
    accounts: list[str]
    levels: list[str]
    rows_fetched: int
    rows_written: int
    rows_per_level: dict[str, int]
    totals: dict[str, Totals]
    currencies: dict[str, list[str]]
    api_calls: int  # HTTP requests to the Graph API (a batch of up to 50 calls is one)
    graph_requests: int  # Graph calls those carried (each batch item counts, as Meta counts it)
    report_runs: int
    splits: int
    throttled_calls: int
    paused_seconds: float
    campaigns: int
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    failed_runs: int = 0
    checks: dict = field(default_factory=dict)

    @property
    def summary_level(self) -> str:
        """The level the summary is read from: each level covers the same delivery, so sum only one."""
        return next((lv for lv in LEVELS if lv in self.totals), self.levels[0])

    def summary(self) -> dict[str, float | int]:
        return self.totals.get(self.summary_level, Totals()).summary()


def sync_ad_performance(
    database_url: str,
    client: GraphClient,
    *,
    accounts: list[str],
    levels: list[str],
    since: date,
    until: date,
    options: InsightsOptions | None = None,
) -> SyncResult:
    """Read ``[since, until]`` for every account and level and replace that range in ``ad_performance``."""
    if not accounts:
        raise ValueError("no ad accounts configured: set FB_ADS_ACCOUNT_ID (comma-separated act_… ids)")
    reader = InsightsReader(client, options)
    spool = Spool()
    started = time.perf_counter()
    try:
        for row in reader.read(accounts, levels, since, until):
            spool.add(row)
        read_done = time.perf_counter()
        with connect(database_url) as conn:
            written = replace_range(conn, spool, accounts=accounts, levels=levels, since=since, until=until)
            write_done = time.perf_counter()
            checks = range_checks(conn, accounts=accounts, levels=levels, since=since, until=until)
    finally:
        spool.close()
    stats = client.stats
    return SyncResult(
        since=since,
        until=until,
        accounts=accounts,
        levels=levels,
        rows_fetched=spool.rows,
        rows_written=written,
        rows_per_level={lv: spool.totals[lv].rows if lv in spool.totals else 0 for lv in levels},
        totals=spool.totals,
        currencies={a: sorted(c) for a, c in spool.currencies.items()},
        api_calls=stats.calls,
        graph_requests=stats.graph_requests,
        report_runs=reader.stats.report_runs,
        failed_runs=reader.stats.failed_runs,
        splits=reader.stats.splits,
        throttled_calls=stats.throttled,
        paused_seconds=round(stats.paused_seconds, 3),
        campaigns=len(spool.campaigns),
        read_seconds=round(read_done - started, 3),
        write_seconds=round(write_done - read_done, 3),
        checks=checks,
    )


# ───────────────────────────── Dagster ─────────────────────────────

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


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=insights_backfill_policy,
    check_specs=CHECKS,
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
    settings = load_settings()
    window = context.partition_time_window
    since, until = window.start.date(), window.end.date() - timedelta(days=1)
    levels = levels_from(settings, config.levels)
    options = meta_ads.options(action_types_from(settings, config.conversion_action_types))
    accounts = meta_ads.accounts(settings)
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
        span = lookback_range(today, first_back, days, partitions_start(load_settings(), today))
        if span is None:
            return dg.SkipReason("the look-back range is before the first partition")
        start, end = (d.isoformat() for d in span)
        return dg.RunRequest(
            run_key=f"{name}:{start}:{end}",
            tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end},
        )

    return _schedule


_settings = load_settings()
#: The days before yesterday, every day (yesterday is the daily schedule's).
ad_performance_lookback_daily = lookback_schedule(
    "ad_performance_lookback_daily", "30 6 * * *", 2, _settings.ADS_LOOKBACK_DAILY_DAYS
)
#: Meta's whole 28-day restatement window, once a week.
ad_performance_lookback_weekly = lookback_schedule(
    "ad_performance_lookback_weekly", "0 7 * * 1", 1, _settings.ADS_LOOKBACK_WEEKLY_DAYS
)

schedules = [ad_performance_daily, ad_performance_lookback_daily, ad_performance_lookback_weekly]
