"""The asset as Dagster runs it: a partition range in one run, metadata and checks, the schedules, and the
`dagster asset materialize` command line a newcomer types."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import psycopg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from everreach_data.ads import defs as ads
from everreach_data.config import PROJECT_ROOT
from everreach_data.resources import PostgresResource
from everreach_sandbox.core import Fault
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

from .helpers import PRIMARY, SECOND, TOKEN, expected, sandbox


def test_a_partition_range_is_one_run_with_summary_metadata_and_checks(db_url):
    with sandbox() as (state, base):
        meta_ads = ads.MetaAdsResource(
            access_token=TOKEN,
            graph_url=base,
            api_version="v24.0",
            ad_account_ids=[PRIMARY, SECOND],
            poll_initial_seconds=0.03,
        )
        result = dg.materialize(
            [ads.ad_performance, ads.table_checks],
            resources={"postgres": PostgresResource(url=db_url), "meta_ads": meta_ads},
            tags={ASSET_PARTITION_RANGE_START_TAG: "2026-10-01", ASSET_PARTITION_RANGE_END_TAG: "2026-10-07"},
        )
    assert result.success
    mat = result.asset_materializations_for_node("ad_performance")[0]
    meta = {k: v.value for k, v in mat.metadata.items()}
    spend = sum(
        expected(state, a, "campaign", date(2026, 10, 1), date(2026, 10, 7)).spend_cents
        for a in (PRIMARY, SECOND)
    )
    assert meta["total_spend"] == spend / 100
    assert meta["rows_per_level"] == {
        lv: sum(expected(state, a, lv, date(2026, 10, 1), date(2026, 10, 7)).rows for a in (PRIMARY, SECOND))
        for lv in ("campaign", "adset", "ad")
    }
    assert meta["report_runs"] == 6  # 2 accounts x 3 levels, one run each
    # each run is started, polled and paged (>= 18 Graph calls), carried by a few batched HTTP requests
    assert meta["graph_requests"] >= 18 and meta["api_calls"] * 3 <= meta["graph_requests"]
    assert {"total_impressions", "total_clicks", "total_conversions", "average_cpc", "average_cpm"} <= set(
        meta
    )
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 4 and all(c.passed for c in checks)  # two inline, two that read only the table
    assert meta["dagster/row_count"] == meta["rows_written"] and meta["dagster/table_name"] == "public.ad_performance"


def test_an_outage_longer_than_the_clients_retries_runs_the_step_again(db_url):
    """Meta answering 5xx after the client's own retries ran out fails the step's first attempt (it failed the
    run, and a backfill's range stayed empty); Dagster runs the step again and the range is written whole. A
    permanent error is not retried."""
    def materialize(meta_ads: ads.MetaAdsResource) -> dg.ExecuteInProcessResult:
        return dg.materialize([ads.ad_performance], raise_on_error=False,
                              resources={"postgres": PostgresResource(url=db_url), "meta_ads": meta_ads},
                              tags={ASSET_PARTITION_RANGE_START_TAG: "2026-10-01",
                                    ASSET_PARTITION_RANGE_END_TAG: "2026-10-03"})

    with sandbox() as (state, base):
        fast = {"access_token": TOKEN, "graph_url": base, "api_version": "v24.0", "ad_account_ids": [PRIMARY],
                "poll_initial_seconds": 0.03, "max_attempts": 2, "outage_retry_seconds": 0.1}
        # Each level's report run is started twice (the client's two attempts), then the outage is over.
        state.faults.queue.append(Fault(kind="status", path_contains="/insights", times=6))
        result = materialize(ads.MetaAdsResource(**fast))
        retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert result.success and len(retried) == 1
        with psycopg.connect(db_url) as conn:
            rows = dict(conn.execute("SELECT level, count(*) FROM ad_performance GROUP BY level").fetchall())
        assert rows == {lv: expected(state, PRIMARY, lv, date(2026, 10, 1), date(2026, 10, 3)).rows
                        for lv in ("campaign", "adset", "ad")}

        refused = materialize(ads.MetaAdsResource(**{**fast, "access_token": "revoked-or-expired"}))
        assert not refused.success
        assert not [e for e in refused.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_lookback_schedules_request_one_ranged_run():
    daily = ads.ad_performance_lookback_daily
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 24, 6, 30, tzinfo=UTC))
    (request,) = daily.evaluate_tick(ctx).run_requests
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        "2026-11-20",
        "2026-11-22",
    )  # the 3 days before yesterday
    weekly = ads.ad_performance_lookback_weekly
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 23, 7, 0, tzinfo=UTC))
    (request,) = weekly.evaluate_tick(ctx).run_requests
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        "2026-10-26",
        "2026-11-22",
    )  # Meta's 28-day restatement window
    assert ads.lookback_range(date(2025, 1, 2), 1, 28, date(2025, 1, 1)) == (
        date(2025, 1, 1),
        date(2025, 1, 1),
    )


def test_dagster_cli_materializes_one_partition(db_url, tmp_path: Path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with sandbox() as (state, base):
        env = {
            **os.environ,
            **SANDBOX_DEFAULTS,
            "DATABASE_URL": db_url,
            "META_GRAPH_URL": base,
            "DAGSTER_HOME": str(tmp_path),
        }
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "dagster"),
                "asset",
                "materialize",
                "-m",
                "everreach_data.definitions",
                "--select",
                "ad_performance",
                "--partition",
                "2026-10-01",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT level, count(*), min(date), max(date) FROM ad_performance GROUP BY level ORDER BY level"
        ).fetchall()
    day = date(2026, 10, 1)
    assert rows == [
        (lv, expected(state, PRIMARY, lv, day, day).rows, day, day) for lv in ("ad", "adset", "campaign")
    ]
