"""The ads assets beyond ad_performance as Dagster runs them: objects, breakdown reports and their check,
attribution windows (and the removed ones refused), and runs per group of accounts — each group's day
once it has ended in its time zone, and one failing account failing only its own run."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import httpx
import psycopg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from everreach_data import definitions
from everreach_data.ads import defs as ads
from everreach_data.ads.accounts import ACCOUNTS_TAG, CONCURRENCY_TAG
from everreach_data.resources import PostgresResource

from .helpers import PRIMARY, SECOND, TOKEN, breakdown_cells, expected, sandbox

RANGE = {ASSET_PARTITION_RANGE_START_TAG: "2026-10-01", ASSET_PARTITION_RANGE_END_TAG: "2026-10-03"}
BLOCKED = "act_9000000000000009"


def resources(db_url: str, base: str, **meta) -> dict:
    meta_ads = ads.MetaAdsResource(access_token=TOKEN, graph_url=base, api_version="v24.0",
                                   ad_account_ids=[PRIMARY, SECOND], poll_initial_seconds=0.03, **meta)
    return {"postgres": PostgresResource(url=db_url), "meta_ads": meta_ads}


def values(mat) -> dict:
    return {k: v.value for k, v in mat.metadata.items()}


def failure_message(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data
    return data.error.message + (data.user_failure_data.description if data.user_failure_data else "")


def test_objects_breakdowns_and_attribution_materialize_with_their_checks(db_url):
    with sandbox() as (state, base):
        res = resources(db_url, base)
        objects = dg.materialize(ads.object_assets, resources=res)
        insights = dg.materialize(ads.insight_assets, resources=res, tags=RANGE)
    assert objects.success and insights.success
    ad = values(objects.asset_materializations_for_node("ad")[0])
    assert ad["rows"] == 12 + 4 and ad["statuses"]["DELETED"] == 2
    since, until = date(2026, 10, 1), date(2026, 10, 3)
    checks = {c.asset_key.to_user_string(): c for c in insights.get_asset_check_evaluations()}
    for report in ads.breakdown_assets:
        name = report.key.path[-1]
        meta = values(insights.asset_materializations_for_node(report.key.to_python_identifier())[0])
        breakdowns = tuple(meta["breakdowns"].split(", "))
        assert meta["rows_written"] == sum(len(breakdown_cells(state, a, "campaign", breakdowns, since, until))
                                           for a in (PRIMARY, SECOND))
        assert meta["total_spend"] == sum(expected(state, a, "campaign", since, until).spend_cents
                                          for a in (PRIMARY, SECOND)) / 100
        assert meta["rows_without_reach"] == 0 and "not compared" in meta["reach"]
        check = checks[f"ad_performance_breakdown/{name}"]
        assert check.passed and check.metadata["days_compared"].value == 6
    attribution = values(insights.asset_materializations_for_node("ad_performance_attribution")[0])
    assert attribution["windows"] == "default, 1d_click, 7d_click, 28d_click, 1d_view, 1d_engaged_view"
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM ad_performance_attribution").fetchone()[0] == attribution[
            "rows_written"] > 0


def test_a_removed_attribution_window_fails_the_run_saying_why(db_url):
    with sandbox() as (state, base):
        result = dg.materialize([ads.ad_performance_attribution], tags=RANGE, raise_on_error=False,
                                resources=resources(db_url, base, attribution_windows=["7d_click", "28d_view"]))
    assert not result.success
    message = failure_message(result)
    assert "ADS_ATTRIBUTION_WINDOWS" in message and "28d_view" in message and "12 January 2026" in message


def test_the_daily_schedule_pulls_each_zone_s_day_once_it_has_ended(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO ad_account (ad_account_id, account_id, timezone_name) VALUES "
                     "(%s, '1', 'America/Los_Angeles'), (%s, '2', 'Europe/Berlin')", (PRIMARY, SECOND))
    third = "act_3000000000000003"  # not synced yet: treated as UTC-12, the last place a day ends
    meta_ads = ads.MetaAdsResource(access_token=TOKEN, ad_account_ids=[PRIMARY, SECOND, third])

    def tick(hour: int, minute: int = 20) -> dict[str, tuple[str, list[str]]]:
        ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 24, hour, minute, tzinfo=UTC),
                                        resources={"postgres": PostgresResource(url=db_url), "meta_ads": meta_ads},
                                        repository_def=definitions.defs.get_repository_def())
        requests = ads.ad_performance_daily.evaluate_tick(ctx).run_requests
        out = {}
        for r in requests:
            accounts = r.tags[ACCOUNTS_TAG].split(",")
            assert r.tags[CONCURRENCY_TAG] == "insights"
            assert {op: c["config"]["accounts"] for op, c in r.run_config["ops"].items()} == {
                op: accounts for op in ads.INSIGHT_OPS}
            out[r.tags[ACCOUNTS_TAG]] = (r.partition_key, r.run_key)
        return out

    early = tick(7)   # Berlin 08:20 on the 24th; Los Angeles 23:20 and UTC-12 19:20 on the 23rd
    assert {a: p for a, (p, _) in early.items()} == {SECOND: "2026-11-23", PRIMARY: "2026-11-22",
                                                     third: "2026-11-22"}
    later = tick(8)   # Los Angeles' 23rd has ended at 08:00 UTC
    assert later[PRIMARY][0] == "2026-11-23" and later[SECOND] == early[SECOND]  # same run key: pulled once
    assert tick(12)[third][0] == "2026-11-23"  # UTC-12's 23rd ends at 12:00 UTC


def test_one_failing_account_fails_only_its_own_run(db_url):
    """The schedules give each group of accounts its own run (its config and tags): a group with an
    account the token may not read fails, saying which; the others' runs write their rows."""
    with sandbox() as (state, base):
        httpx.post(f"{base}/_sandbox/marketing/accounts", json={"account_id": BLOCKED, "campaigns": 1,
                                                                 "blocked": True}).raise_for_status()
        res = resources(db_url, base)
        runs = {}
        for group in ([PRIMARY], [BLOCKED], [SECOND]):
            config = {"ops": {"ad_performance": {"config": {"accounts": group}}}}
            runs[group[0]] = dg.materialize([ads.ad_performance], resources=res, run_config=config,
                                            tags={**RANGE, ACCOUNTS_TAG: group[0]}, raise_on_error=False)
    assert runs[PRIMARY].success and runs[SECOND].success and not runs[BLOCKED].success
    message = failure_message(runs[BLOCKED])
    assert BLOCKED in message and "ads_read" in message and "FB_ADS_ACCOUNT_ID" in message
    assert runs[BLOCKED].dagster_run.tags[ACCOUNTS_TAG] == BLOCKED
    with psycopg.connect(db_url) as conn:
        written = dict(conn.execute("SELECT ad_account_id, count(*) FROM ad_performance GROUP BY 1").fetchall())
    since, until = date(2026, 10, 1), date(2026, 10, 3)
    assert written == {a: sum(expected(state, a, lv, since, until).rows for lv in ("campaign", "adset", "ad"))
                       for a in (PRIMARY, SECOND)}
