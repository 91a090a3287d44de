"""Breakdown reports into ``ad_performance_breakdown``: each report's range read through the same async
report runs as ``ad_performance`` (:func:`.sync.read_report`) and replaced in one transaction, then
checked against ``ad_performance`` at the same level — the breakdown cells of a day must add up to the
level's total spend, impressions and clicks. Reach is not compared: it counts people, and a person can be
in several cells (several placements, say), so the cells' reach need not add up to the total's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from psycopg.rows import dict_row

from everreach_data.ads.reports import BreakdownReport
from everreach_data.ads.sync import ReportRun, read_report
from everreach_data.ads.writer import Spool, copy_text, metric_fields, replace_rows, row_metadata
from everreach_data.db.connection import connect
from everreach_data.meta.client import GraphClient
from everreach_data.meta.insights import REACH_BREAKDOWN_MONTHS, InsightRow, InsightsOptions

COLUMNS = (
    "report", "ad_account_id", "level", "date", "object_id", "breakdown_key", "breakdowns", "meta_campaign_id",
    "adset_id", "ad_id", "spend", "impressions", "clicks", "reach", "frequency", "cpc", "cpm", "ctr",
    "conversions", "conversion_value", "currency", "objective", "metadata",
)
COPY_SQL = f"COPY ad_performance_breakdown ({', '.join(COLUMNS)}) FROM STDIN"
DELETE_RANGE = """
DELETE FROM ad_performance_breakdown
WHERE report = %(report)s AND ad_account_id = ANY(%(accounts)s) AND level = %(level)s
  AND date BETWEEN %(since)s AND %(until)s
"""
#: Each (account, day) of the range where the report's cells do not add up to ad_performance's total at
#: the same level, or either side has no rows.
CHECK_SQL = """
WITH b AS (
    SELECT ad_account_id, date, sum(spend) AS spend, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM ad_performance_breakdown
    WHERE report = %(report)s AND level = %(level)s AND ad_account_id = ANY(%(accounts)s)
      AND date BETWEEN %(since)s AND %(until)s
    GROUP BY 1, 2
), p AS (
    SELECT ad_account_id, date, sum(spend) AS spend, sum(impressions) AS impressions, sum(clicks) AS clicks
    FROM ad_performance
    WHERE level = %(level)s AND ad_account_id = ANY(%(accounts)s) AND date BETWEEN %(since)s AND %(until)s
    GROUP BY 1, 2
)
SELECT ad_account_id, date, b.spend AS breakdown_spend, p.spend AS level_spend,
       b.impressions AS breakdown_impressions, p.impressions AS level_impressions,
       b.clicks AS breakdown_clicks, p.clicks AS level_clicks
FROM b FULL JOIN p USING (ad_account_id, date)
WHERE (b.spend, b.impressions, b.clicks) IS DISTINCT FROM (p.spend, p.impressions, p.clicks)
ORDER BY 1, 2
"""
DAYS_COMPARED_SQL = """
SELECT count(DISTINCT (ad_account_id, date)) AS n FROM ad_performance_breakdown
WHERE report = %(report)s AND level = %(level)s AND ad_account_id = ANY(%(accounts)s)
  AND date BETWEEN %(since)s AND %(until)s
"""
REACH_NOTE = (
    f"reach is null on {{n}} row(s): Meta returns no reach for breakdown queries that start more than "
    f"{REACH_BREAKDOWN_MONTHS} months back (since 10 June 2025); the other metrics are complete"
)
NOT_ADDITIVE = "reach is not compared: it counts people, and one person can be in several breakdown cells"


def breakdown_line(report: str):
    """COPY lines for ``report``'s rows."""
    name = copy_text(report)

    def line(row: InsightRow) -> str:
        values = [v for _, v in row.breakdowns]
        by_name = json.dumps(dict(row.breakdowns), ensure_ascii=False, separators=(",", ":"))
        return (
            f"{name}\t{copy_text(row.account_id)}\t{row.level}\t{row.date}\t{copy_text(row.object_id)}\t"
            f"{copy_text('|'.join(values))}\t{copy_text(by_name)}\t{copy_text(row.campaign_id)}\t"
            f"{copy_text(row.adset_id)}\t{copy_text(row.ad_id)}\t{metric_fields(row)}\t{row_metadata(row)}\n"
        )

    return line


@dataclass
class BreakdownCheck:
    """The report's days compared with ad_performance: those that differ, and those it has no rows for."""

    days_compared: int
    mismatched: list[dict[str, Any]] = field(default_factory=list)
    not_in_ad_performance: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatched and not self.not_in_ad_performance


def check_breakdown(conn, report: BreakdownReport, accounts: list[str], since: date, until: date) -> BreakdownCheck:
    params = {"report": report.name, "level": report.level, "accounts": accounts, "since": since, "until": until}
    with conn.cursor(row_factory=dict_row) as cur:
        days = cur.execute(DAYS_COMPARED_SQL, params).fetchone()["n"]
        rows = cur.execute(CHECK_SQL, params).fetchall()
    check = BreakdownCheck(days)
    for r in rows:
        day = f"{r['ad_account_id']} {r['date']}"
        if r["level_spend"] is None:
            check.not_in_ad_performance.append(day)
        else:
            check.mismatched.append({k: str(v) for k, v in r.items()})
    return check


@dataclass
class BreakdownResult:
    report: BreakdownReport
    run: ReportRun
    check: BreakdownCheck


def sync_breakdown(
    database_url: str,
    client: GraphClient,
    *,
    report: BreakdownReport,
    accounts: list[str],
    since: date,
    until: date,
    options: InsightsOptions | None = None,
) -> BreakdownResult:
    """Read one report for ``[since, until]`` and replace that range of its rows."""
    spool = Spool(line=breakdown_line(report.name))
    try:
        run = read_report(client, spool, accounts=accounts, levels=[report.level], since=since, until=until,
                          shape=report.shape, options=options)
        params = {"report": report.name, "accounts": run.accounts, "level": report.level, "since": since,
                  "until": until}
        with connect(database_url) as conn:
            run.rows_written = replace_rows(conn, spool, delete=DELETE_RANGE, copy=COPY_SQL, params=params)
            check = check_breakdown(conn, report, run.accounts, since, until)
    finally:
        spool.close()
    return BreakdownResult(report, run, check)
