"""Attribution windows into ``ad_performance_attribution``: conversions and their value per action type
and window — each window asked for (``ADS_ATTRIBUTION_WINDOWS``) and ``default``, the ad set's own
setting — for the conversion action types (``ADS_CONVERSION_ACTION_TYPES``). One report per level with
``action_attribution_windows`` and only the ids, ``actions``, ``action_values`` and
``attribution_setting``, through the same async report runs as ``ad_performance``; the range replaced in
one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from everreach_data.ads.sync import ReportRun, read_report
from everreach_data.ads.writer import Spool, copy_text, replace_rows
from everreach_data.db.connection import connect
from everreach_data.meta.client import GraphClient
from everreach_data.meta.insights import (
    ATTRIBUTION_WINDOWS,
    InsightRow,
    InsightsOptions,
    ReportShape,
    attribution_values,
    check_windows,
)

COLUMNS = ("ad_account_id", "level", "date", "object_id", "action_type", "attribution_window", "meta_campaign_id",
           "adset_id", "ad_id", "conversions", "conversion_value", "attribution_setting")
COPY_SQL = f"COPY ad_performance_attribution ({', '.join(COLUMNS)}) FROM STDIN"
DELETE_RANGE = """
DELETE FROM ad_performance_attribution
WHERE ad_account_id = ANY(%(accounts)s) AND level = ANY(%(levels)s) AND date BETWEEN %(since)s AND %(until)s
"""
METRICS = ("actions", "action_values", "attribution_setting")


def attribution_lines(action_types: Sequence[str], windows: Sequence[str]):
    """COPY lines for one insights row: one per action type and window."""

    def lines(row: InsightRow) -> str:
        head = (f"{copy_text(row.account_id)}\t{row.level}\t{row.date}\t{copy_text(row.object_id)}\t")
        ids = f"{copy_text(row.campaign_id)}\t{copy_text(row.adset_id)}\t{copy_text(row.ad_id)}"
        setting = copy_text(row.attribution_setting)
        return "".join(
            f"{head}{copy_text(action_type)}\t{window}\t{ids}\t{count}\t{value}\t{setting}\n"
            for action_type, window, count, value in attribution_values(row, action_types, windows)
        )

    return lines


def sync_attribution(
    database_url: str,
    client: GraphClient,
    *,
    accounts: list[str],
    levels: list[str],
    since: date,
    until: date,
    windows: Sequence[str] = ATTRIBUTION_WINDOWS,
    options: InsightsOptions | None = None,
) -> ReportRun:
    """Read the windows for ``[since, until]`` and replace that range of ``ad_performance_attribution``."""
    windows = check_windows(windows)
    options = options or InsightsOptions()
    spool = Spool(line=attribution_lines(options.action_types, windows))
    try:
        run = read_report(client, spool, accounts=accounts, levels=levels, since=since, until=until,
                          shape=ReportShape(metrics=METRICS, windows=windows), options=options)
        params = {"accounts": run.accounts, "levels": levels, "since": since, "until": until}
        with connect(database_url) as conn:
            run.rows_written = replace_rows(conn, spool, delete=DELETE_RANGE, copy=COPY_SQL, params=params)
    finally:
        spool.close()
    return run
