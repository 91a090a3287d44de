"""The analysts' reports as daily assets, downstream of the tables they read: the runbook's monitoring
queries (message volume, delivery rates, conversion events), its ads queries (campaign performance with
CPC, CPM, CTR and ROAS), and the reconciliation of what we sent to the Conversions API with what Meta
attributes to ads. Each partition is replaced whole from its sources (:mod:`.queries`), so a report can be
re-run at any time without calling Meta; the schedule refreshes yesterday after the insights schedules.
"""

from datetime import timedelta

import dagster as dg

from everreach_data.db.catalog import table_metadata
from everreach_data.meta.capi import PIXEL_ACTION_TYPES
from everreach_data.partitions import daily_partitions, insights_backfill_policy
from everreach_data.reports.frames import frame, preview
from everreach_data.reports.queries import (
    CAMPAIGN_PERFORMANCE,
    CONVERSION_EVENTS,
    CONVERSION_RECONCILIATION,
    MESSAGE_DELIVERY_RATES,
    MESSAGE_VOLUME,
    Report,
)
from everreach_data.resources import PostgresResource

OWNERS = ["team:analytics"]
#: Refreshed at 08:00 UTC, after the insights schedules (06:00–07:00): fresh means refreshed by 10:00.
FRESH_BY = dg.FreshnessPolicy.cron(deadline_cron="0 10 * * *", lower_bound_delta=timedelta(hours=2))


def refresh(context: dg.AssetExecutionContext, postgres: PostgresResource, report: Report) -> dg.MaterializeResult:
    """Replace the partition range of ``report`` in one transaction; metadata: its rows and a preview."""
    window = context.partition_time_window
    since, until = window.start.date(), window.end.date()
    params = {"start": window.start, "end": window.end, "since": since, "until": until,
              "event_names": list(PIXEL_ACTION_TYPES), "action_types": list(PIXEL_ACTION_TYPES.values())}
    with postgres.connect() as conn:
        with conn.transaction():
            conn.execute(report.delete, params)
            rows = conn.execute(report.refresh, params).rowcount
        metadata = {**table_metadata(conn, report.table, row_count=rows),
                    "date_range": f"{since}..{until - timedelta(days=1)}",
                    "preview": preview(frame(conn, report.preview, params))}
    return dg.MaterializeResult(metadata=metadata)


def report_asset(report: Report, *, deps: list[str], description: str) -> dg.AssetsDefinition:
    @dg.asset(name=report.table, deps=deps, partitions_def=daily_partitions, backfill_policy=insights_backfill_policy,
              group_name="reports", kinds={"postgres", "pandas"}, owners=OWNERS, description=description,
              freshness_policy=FRESH_BY)
    def _report(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
        return refresh(context, postgres, report)

    return _report


message_volume_daily = report_asset(
    MESSAGE_VOLUME, deps=["conversation_message", "conversation_thread"],
    description="Messages per platform, direction and UTC day: the runbook's first monitoring query.")
message_delivery_rates_daily = report_asset(
    MESSAGE_DELIVERY_RATES, deps=["conversation_message"],
    description="Outbound messages by status and day, with each status's share: the runbook's delivery/read rates.")
conversion_events_daily = report_asset(
    CONVERSION_EVENTS, deps=["meta_conversion_event"],
    description="Conversions API events per pixel, event name and day, with their value: the runbook's third query.")
campaign_performance_daily = report_asset(
    CAMPAIGN_PERFORMANCE, deps=["ad_performance", "campaign"],
    description="Spend, impressions, clicks, conversions and value per campaign and day, with CPC, CPM, CTR and "
                "ROAS: the runbook's ads queries, from campaign-level rows (no level counted twice).")
conversion_reconciliation_daily = report_asset(
    CONVERSION_RECONCILIATION, deps=["meta_conversion_event", "ad_performance"],
    description="Per pixel event and day: events stored, sent and received by the Conversions API against the "
                "conversions Meta attributes to ads — the first figure to check when conversions are not showing.")

REPORT_ASSETS = [message_volume_daily, message_delivery_rates_daily, conversion_events_daily,
                 campaign_performance_daily, conversion_reconciliation_daily]

SHARES_ADD_UP = """
SELECT date, sum(percentage) AS total FROM message_delivery_rates_daily
GROUP BY date HAVING abs(sum(percentage) - 100) > 0.01 * count(*)
"""
CAMPAIGNS_MATCH_INSIGHTS = """
SELECT r.date, r.spend, coalesce(p.spend, 0) AS insights_spend FROM (
    SELECT date, sum(spend) AS spend FROM campaign_performance_daily GROUP BY date) r
LEFT JOIN (SELECT date, sum(spend) AS spend FROM ad_performance WHERE level = 'campaign' GROUP BY date) p
  ON p.date = r.date
WHERE r.spend IS DISTINCT FROM coalesce(p.spend, 0)
"""


@dg.asset_check(asset=message_delivery_rates_daily, description="Each day's status shares add up to 100 %.")
def status_shares_add_up(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        off = conn.execute(SHARES_ADD_UP).fetchall()
    return dg.AssetCheckResult(passed=not off, metadata={"days_off": [str(r["date"]) for r in off][:20]})


@dg.asset_check(asset=campaign_performance_daily,
                description="Each day's campaign spend equals ad_performance's campaign-level spend (re-run the "
                            "report for a day whose insights were re-pulled since).")
def campaign_spend_matches_insights(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        off = conn.execute(CAMPAIGNS_MATCH_INSIGHTS).fetchall()
    return dg.AssetCheckResult(passed=not off, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"days_off": [str(r["date"]) for r in off][:20]})


reports_job = dg.define_asset_job("reports_job", selection=REPORT_ASSETS, partitions_def=daily_partitions)
reports_daily = dg.build_schedule_from_partitioned_job(
    reports_job, name="reports_daily", hour_of_day=8, minute_of_hour=0, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="yesterday's reports, after the insights schedules")

defs = dg.Definitions(assets=REPORT_ASSETS, asset_checks=[status_shares_add_up, campaign_spend_matches_insights],
                      jobs=[reports_job], schedules=[reports_daily])

