"""Audience demographics (a daily snapshot) and account insights by breakdown, with the sandbox's exact
numbers, replaced without duplicates on a re-run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from everreach_data.meta.organic import DEMOGRAPHIC_TIMEFRAMES, IG_BREAKDOWNS
from everreach_data.organic.defs import (
    social_account_insights,
    social_account_insights_breakdown,
    social_audience_demographics,
)
from tests.organic.helpers import IG, PAGE, graph, resources, run


def _meta_demographics(base: str) -> dict[tuple, int]:
    out = {}
    with graph(base) as c:
        for metric, timeframes in DEMOGRAPHIC_TIMEFRAMES.items():
            for timeframe in timeframes:
                for breakdown in ("age", "gender", "city", "country"):
                    body = c.get(f"/{IG}/insights", params={
                        "metric": metric, "period": "lifetime", "metric_type": "total_value",
                        "timeframe": timeframe, "breakdown": breakdown}).json()
                    for result in body["data"][0]["total_value"]["breakdowns"][0]["results"]:
                        out[("instagram", metric, timeframe, breakdown, result["dimension_values"][0])] = \
                            result["value"]
        for platform, node in (("facebook", PAGE), ("instagram", IG)):
            count = c.get(f"/{node}", params={"fields": "followers_count"}).json()["followers_count"]
            out[(platform, "followers_count", "lifetime", "total", "total")] = count
    return out


def _stored_demographics(db) -> dict[tuple, int]:
    rows = db.execute("SELECT platform, metric, timeframe, breakdown, dimension, value, snapshot_date "
                      "FROM social_audience_demographics").fetchall()
    assert {r["snapshot_date"] for r in rows} == {datetime.now(UTC).date()}
    return {(r["platform"], r["metric"], r["timeframe"], r["breakdown"], r["dimension"]): int(r["value"])
            for r in rows}


def test_demographics_snapshot_holds_metas_numbers_and_a_rerun_replaces_it(db, db_url, sandbox):
    result = dg.materialize([social_audience_demographics], resources=resources(db_url, sandbox))
    assert result.success
    meta = result.asset_materializations_for_node("social_audience_demographics")[0].metadata
    assert meta["api_calls"].value == 3  # one batch of 12 demographic calls, two follower counts
    expected = _meta_demographics(sandbox)
    assert _stored_demographics(db) == expected
    ages = {k[4] for k in expected if k[3] == "age"}
    assert ages == {"13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"}
    followers = expected[("instagram", "followers_count", "lifetime", "total", "total")]
    by_age = sum(v for k, v in expected.items() if k[1] == "follower_demographics" and k[3] == "age")
    by_gender = sum(v for k, v in expected.items() if k[1] == "follower_demographics" and k[3] == "gender")
    assert by_age == by_gender == followers  # every follower has an age and a gender bucket
    assert sum(v for k, v in expected.items() if k[1] == "follower_demographics" and k[3] == "city") < followers

    assert dg.materialize([social_audience_demographics], resources=resources(db_url, sandbox)).success
    assert _stored_demographics(db) == expected
    assert db.execute("SELECT count(*) AS n FROM social_audience_demographics").fetchone()["n"] == len(expected)


def _meta_breakdowns(base: str, day) -> dict[tuple, int]:
    out = {}
    with graph(base) as c:
        for breakdown, metrics in IG_BREAKDOWNS.items():
            body = c.get(f"/{IG}/insights", params={
                "metric": ",".join(metrics), "period": "day", "metric_type": "total_value",
                "breakdown": breakdown, "since": day.isoformat(), "until": (day + timedelta(days=1)).isoformat()})
            for entry in body.json()["data"]:
                for result in entry["total_value"]["breakdowns"][0]["results"]:
                    out[(day, entry["name"], breakdown, result["dimension_values"][0])] = result["value"]
    return out


def test_breakdowns_hold_metas_numbers_add_up_and_a_rerun_replaces_them(db, db_url, sandbox):
    end = datetime.now(UTC).date() - timedelta(days=2)
    start = end - timedelta(days=2)
    days = [start + timedelta(days=n) for n in range(3)]
    for _ in range(2):
        result = run([social_account_insights, social_account_insights_breakdown], db_url, sandbox, start, end)
        assert result.success
    meta = result.asset_materializations_for_node("social_account_insights_breakdown")[0].metadata
    assert meta["api_calls"].value == 1  # 3 days × 2 breakdowns in one batch request
    expected = {k: v for d in days for k, v in _meta_breakdowns(sandbox, d).items()}
    rows = db.execute("SELECT date, metric, breakdown, breakdown_value, value, account_id, platform "
                      "FROM social_account_insights_breakdown").fetchall()
    assert {(r["date"], r["metric"], r["breakdown"], r["breakdown_value"]): int(r["value"]) for r in rows} \
        == expected
    assert len(rows) == len(expected) == 3 * (2 * 2 + 7 * 4)
    assert {(r["platform"], r["account_id"]) for r in rows} == {("instagram", IG)}
    totals = {(r["date"], r["metric"]): int(r["value"]) for r in db.execute(
        "SELECT date, metric, value FROM social_account_insights WHERE platform = 'instagram'")}
    for day in days:  # each breakdown shares out the day's total
        for breakdown, metrics in IG_BREAKDOWNS.items():
            for metric in set(metrics) & {"views", "likes"}:
                parts = [v for (d, m, b, _), v in expected.items() if (d, m, b) == (day, metric, breakdown)]
                assert sum(parts) == totals[(day, metric)]
