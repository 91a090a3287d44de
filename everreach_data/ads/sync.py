"""Reading ``ad_performance`` for a range: every account and level through async report runs
(:mod:`everreach_data.meta.insights`), then the range replaced in one transaction (:mod:`.writer`).
:func:`read_report` is the reading step every insights table shares (breakdowns, attribution).
Plain code, testable without Dagster; ``defs.py`` wraps it in the asset."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from everreach_data.ads.writer import Spool, Totals, range_checks, replace_range
from everreach_data.db.connection import connect
from everreach_data.meta.ads_objects import resolve_accounts
from everreach_data.meta.client import GraphClient
from everreach_data.meta.insights import LEVELS, PLAIN, InsightsOptions, InsightsReader, ReportShape


def check_levels(levels: Iterable[str]) -> list[str]:
    """The levels asked for, refused (naming the setting) if Meta has no such level."""
    chosen = [lv.strip() for lv in levels if lv.strip()]
    bad = [lv for lv in chosen if lv not in LEVELS]
    if bad:
        raise ValueError(f"ADS_LEVELS has unknown level(s) {bad}: choose from {', '.join(LEVELS)}")
    return chosen



@dataclass
class ReportRun:
    """One report read for a range: what was asked, what came back, and what it cost."""

    accounts: list[str]
    levels: list[str]
    since: date
    until: date
    reader: InsightsReader
    spool: Spool
    api_calls: int  # HTTP requests to the Graph API (a batch of up to 50 calls is one)
    graph_requests: int  # Graph calls those carried (each batch item counts, as Meta counts it)
    throttled_calls: int
    paused_seconds: float
    read_seconds: float
    rows_written: int = 0

    @property
    def rows_fetched(self) -> int:
        return self.spool.rows

    def metadata(self) -> dict[str, object]:
        """What every insights asset reports about its run."""
        stats = self.reader.stats
        return {"rows_fetched": self.rows_fetched, "rows_written": self.rows_written,
                "api_calls": self.api_calls, "graph_requests": self.graph_requests,
                "report_runs": stats.report_runs, "splits": stats.splits, "throttled_calls": self.throttled_calls,
                "accounts": self.accounts, "date_range": f"{self.since}..{self.until}"}


def read_report(
    client: GraphClient,
    spool: Spool,
    *,
    accounts: list[str],
    levels: list[str],
    since: date,
    until: date,
    shape: ReportShape = PLAIN,
    options: InsightsOptions | None = None,
) -> ReportRun:
    """Every row of one report for the accounts × levels × days, spooled (``FB_ADS_ACCOUNT_ID=me``: the
    token's accounts, from ``/me/adaccounts``)."""
    if not accounts:
        raise ValueError("no ad accounts configured: set FB_ADS_ACCOUNT_ID (comma-separated act_… ids, or me)")
    accounts = resolve_accounts(client, accounts)
    reader = InsightsReader(client, options)
    started = time.perf_counter()
    for row in reader.read(accounts, levels, since, until, shape):
        spool.add(row)
    stats = client.stats
    return ReportRun(accounts, levels, since, until, reader, spool, api_calls=stats.calls,
                     graph_requests=stats.graph_requests, throttled_calls=stats.throttled,
                     paused_seconds=round(stats.paused_seconds, 3),
                     read_seconds=round(time.perf_counter() - started, 3))


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
    spool = Spool()
    try:
        run = read_report(client, spool, accounts=accounts, levels=levels, since=since, until=until,
                          options=options)
        accounts, reader = run.accounts, run.reader
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
        read_seconds=run.read_seconds,
        write_seconds=round(write_done - read_done, 3),
        checks=checks,
    )
