"""ad_performance end to end without Dagster: the sandbox over real HTTP, the real database."""

from __future__ import annotations

import json
import time
from datetime import date, timedelta

import httpx
import pytest

from everreach_data.ads.defs import sync_ad_performance
from everreach_data.meta.errors import GraphAPIError
from everreach_data.meta.insights import InsightsError, InsightsReader, ReportRequest
from everreach_sandbox import marketing

from .helpers import PRIMARY, SECOND, cents, client, expected, fast_options, sandbox

SINCE, UNTIL = date(2026, 10, 1), date(2026, 10, 10)
LEVELS = ["campaign", "adset", "ad"]


def level_totals(db, level: str, account: str = PRIMARY):
    return db.execute(
        "SELECT count(*) AS n, sum(spend) AS spend, sum(impressions) AS impressions, sum(clicks) AS clicks, "
        "sum(conversions) AS conversions, sum(conversion_value) AS value FROM ad_performance "
        "WHERE ad_account_id = %s AND level = %s",
        (account, level),
    ).fetchone()


def test_exact_numbers_for_the_seeded_account(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        result = sync_ad_performance(
            db_url, c, accounts=[PRIMARY], levels=LEVELS, since=SINCE, until=UNTIL, options=fast_options()
        )
    for level in LEVELS:
        want = expected(state, PRIMARY, level, SINCE, UNTIL)
        got = level_totals(db, level)
        assert got["n"] == want.rows == result.rows_per_level[level]
        assert cents(got["spend"]) == want.spend_cents
        assert (got["impressions"], got["clicks"]) == (want.impressions, want.clicks)
        assert got["conversions"] == want.conversions
        assert cents(got["value"]) == want.conversion_value_cents
    assert result.rows_fetched == result.rows_written == sum(result.rows_per_level.values())
    want = expected(state, PRIMARY, "campaign", SINCE, UNTIL)
    assert result.summary()["total_spend"] == want.spend_cents / 100
    assert result.report_runs == 3  # one per level: 10 days fit one chunk
    # campaigns upserted and linked; names and raw actions kept in metadata
    camps = db.execute("SELECT external_id, name, objective FROM campaign WHERE source = 'meta'").fetchall()
    acct = marketing.world(state).accounts[PRIMARY]
    assert {c["external_id"]: c["name"] for c in camps} == {i: c["name"] for i, c in acct.campaigns.items()}
    linked = db.execute(
        "SELECT count(*) AS bad FROM ad_performance p JOIN campaign c USING (campaign_id) "
        "WHERE c.external_id <> p.meta_campaign_id OR p.metadata->>'campaign_name' <> c.name"
    ).fetchone()
    assert linked["bad"] == 0
    row = db.execute(
        "SELECT metadata FROM ad_performance WHERE level = 'ad' AND metadata ? 'actions' LIMIT 1"
    ).fetchone()["metadata"]
    assert {"campaign_name", "adset_name", "ad_name", "actions"} <= set(row)
    # the runbook's query works
    top = db.execute(
        "SELECT metadata->>'campaign_name' AS name, SUM(spend) AS spend FROM ad_performance "
        "WHERE level = 'campaign' GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    assert {t["name"] for t in top} == {c["name"] for c in acct.campaigns.values()}


def test_pagination_and_async_polling(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        marketing.world(state).limits.job_seconds = 0.4
        result = sync_ad_performance(
            db_url,
            c,
            accounts=[PRIMARY],
            levels=["ad"],
            since=SINCE,
            until=UNTIL,
            options=fast_options(page_size=7),
        )
    want = expected(state, PRIMARY, "ad", SINCE, UNTIL)
    assert result.rows_written == want.rows
    pages = -(-want.rows // 7)
    served = [s for _, s, _ in marketing.world(state).statuses_served]
    assert {"Job Not Started", "Job Running", "Job Completed"} <= set(served)
    percents = [p for _, _, p in marketing.world(state).statuses_served]
    assert percents == sorted(percents)  # completion only moves forward
    assert result.api_calls == 1 + len(served) + pages  # start + polls + pages, nothing else


def test_restated_days_are_replaced_on_repull(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        sync_ad_performance(
            db_url, c, accounts=[PRIMARY], levels=LEVELS, since=SINCE, until=UNTIL, options=fast_options()
        )
        before = level_totals(db, "ad")
        state.restate(3, today=UNTIL)  # Meta revises Oct 8-10
        sync_ad_performance(
            db_url, c, accounts=[PRIMARY], levels=LEVELS, since=SINCE, until=UNTIL, options=fast_options()
        )
    after = level_totals(db, "ad")
    want = expected(state, PRIMARY, "ad", SINCE, UNTIL)
    assert after["n"] == before["n"] == want.rows  # replaced, not duplicated
    assert cents(after["spend"]) == want.spend_cents != cents(before["spend"])
    assert after["conversions"] == want.conversions > before["conversions"]
    dup = db.execute(
        "SELECT count(*) AS n FROM (SELECT 1 FROM ad_performance GROUP BY ad_account_id, level, "
        "object_id, date HAVING count(*) > 1) d"
    ).fetchone()
    assert dup["n"] == 0


def test_two_accounts_with_their_own_currency(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        result = sync_ad_performance(
            db_url,
            c,
            accounts=[PRIMARY, SECOND],
            levels=["campaign"],
            since=SINCE,
            until=UNTIL,
            options=fast_options(),
        )
    for account, currency in ((PRIMARY, "USD"), (SECOND, "EUR")):
        want = expected(state, account, "campaign", SINCE, UNTIL)
        got = level_totals(db, "campaign", account)
        assert (got["n"], cents(got["spend"])) == (want.rows, want.spend_cents)
        assert result.currencies[account] == [currency]
    assert result.checks["currencies"] == {PRIMARY: ["USD"], SECOND: ["EUR"]}


def test_too_much_data_is_split_and_completes(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        # one report may hold at most 9 rows: 10 days x 12 ads must be split by days, then by campaigns
        marketing.world(state).limits.max_report_rows = 9
        result = sync_ad_performance(
            db_url, c, accounts=[PRIMARY], levels=["ad"], since=SINCE, until=UNTIL, options=fast_options()
        )
    want = expected(state, PRIMARY, "ad", SINCE, UNTIL)
    got = level_totals(db, "ad")
    assert (got["n"], cents(got["spend"])) == (want.rows, want.spend_cents)
    assert result.splits > 4 and result.report_runs > 10
    assert state.counters.get("error.100", 0) >= result.splits


def test_a_day_too_large_for_one_campaign_is_split_by_fields_and_merged(db, db_url):
    """Meta's limit is the amount of data (rows × fields): when one day of one campaign is still too much,
    the metrics are asked for in two runs (ids and names in each) whose rows are merged by day and object
    id before parsing, so spend (first half) and conversions from actions (second half) land on one row."""
    with sandbox() as (state, base), client(base) as c:
        # 4 ads per campaign: a campaign-day is 4 rows × 18 fields = 72 cells; with half the metrics, 48.
        marketing.world(state).limits.max_report_cells = 48
        campaign = next(iter(marketing.world(state).accounts[PRIMARY].campaigns))
        reader = InsightsReader(c, fast_options())
        whole = ReportRequest(PRIMARY, "ad", SINCE, SINCE, campaign_ids=(campaign,))
        with pytest.raises(GraphAPIError) as refused:
            c.post(f"{PRIMARY}/insights", params=reader._params(whole))
        assert (refused.value.code, refused.value.subcode) == (100, 1487534)

        result = sync_ad_performance(
            db_url, c, accounts=[PRIMARY], levels=["ad"], since=SINCE, until=SINCE + timedelta(days=2),
            options=fast_options(),
        )
    want = expected(state, PRIMARY, "ad", SINCE, SINCE + timedelta(days=2))
    got = level_totals(db, "ad")
    assert got["n"] == want.rows == result.rows_per_level["ad"]
    assert (cents(got["spend"]), got["impressions"], got["clicks"]) == (want.spend_cents, want.impressions,
                                                                        want.clicks)
    assert (got["conversions"], cents(got["value"])) == (want.conversions, want.conversion_value_cents)
    assert result.splits > 2  # days, then campaigns, then fields


@pytest.mark.parametrize("limit", ["ad_account_calls", "user_calls"])
def test_throttling_slows_the_run_but_it_completes(db, db_url, limit):
    """ad_account_calls: reported in x-ad-account-usage (read from every batch item), so the client paces
    its batches by it. user_calls: not in any header, so Meta answers 17/2446079 and the client waits and
    retries the refused items."""
    with sandbox() as (state, base), client(base) as c:
        setattr(state.limits, limit, 6)
        state.limits.window_seconds = 1.0
        started = time.monotonic()
        result = sync_ad_performance(
            db_url,
            c,
            accounts=[PRIMARY],
            levels=LEVELS,
            since=SINCE,
            until=UNTIL,
            options=fast_options(page_size=20),
        )
        elapsed = time.monotonic() - started
    # Meta counts every call of a batch: more calls than two windows allow, so it had to wait
    assert result.graph_requests > 12 and elapsed > 1.0
    assert result.paused_seconds > 0
    throttled = state.counters.get(f"throttled.{limit.removesuffix('_calls')}", 0)
    if limit == "ad_account_calls":
        # x-ad-account-usage paces the batches; calls refused inside one batch are sent again later
        assert result.throttled_calls == throttled
    else:
        assert throttled >= 1 and result.throttled_calls >= 1
    for level in LEVELS:
        assert level_totals(db, level)["n"] == expected(state, PRIMARY, level, SINCE, UNTIL).rows


def test_expired_token_fails_clearly_and_writes_nothing(db, db_url):
    with sandbox() as (state, base):
        with client(base) as c:
            sync_ad_performance(
                db_url,
                c,
                accounts=[PRIMARY],
                levels=["campaign"],
                since=SINCE,
                until=UNTIL,
                options=fast_options(),
            )
        before = level_totals(db, "campaign")
        with client(base, token="revoked-or-expired") as c, pytest.raises(InsightsError) as info:
            sync_ad_performance(
                db_url,
                c,
                accounts=[PRIMARY],
                levels=["campaign"],
                since=SINCE,
                until=UNTIL,
                options=fast_options(),
            )
    message = str(info.value)
    assert "FB_ADS_ACCESS_TOKEN" in message and "code 190" in message and PRIMARY in message
    assert level_totals(db, "campaign") == before


def test_bad_field_and_missing_permission_fail_clearly(db, db_url):
    from everreach_data.meta.insights import InsightsReader
    from everreach_sandbox.core import TokenInfo

    with sandbox() as (state, base):
        state.tokens["page-only"] = TokenInfo("page-only", scopes=("pages_messaging",))
        with client(base, token="page-only") as c, pytest.raises(InsightsError, match="ads_read"):
            list(InsightsReader(c, fast_options()).read([PRIMARY], ["ad"], SINCE, UNTIL))
        with client(base) as c:
            reader = InsightsReader(c, fast_options())
            reader._params = lambda r: {
                "level": "ad",
                "fields": "spend,not_a_field",  # noqa: E731
                "time_range": json.dumps({"since": "2026-10-01", "until": "2026-10-02"}),
            }
            with pytest.raises(InsightsError, match="not_a_field"):
                list(reader.read([PRIMARY], ["ad"], SINCE, UNTIL))
    assert db.execute("SELECT count(*) AS n FROM ad_performance").fetchone()["n"] == 0


def test_a_failed_report_run_is_restarted_once(db, db_url):
    """Meta's "Job Failed" for a run that can succeed: restarted once (Airbyte's rule), no split."""
    with sandbox() as (state, base), client(base) as c:
        assert httpx.post(f"{base}/_sandbox/marketing/fail-jobs", json={"times": 1}).status_code == 200
        result = sync_ad_performance(
            db_url, c, accounts=[PRIMARY], levels=LEVELS, since=SINCE, until=UNTIL, options=fast_options()
        )
    assert result.failed_runs == 1 and result.splits == 0
    assert result.report_runs == len(LEVELS) + 1  # the failed run started again, once
    for level in LEVELS:
        want = expected(state, PRIMARY, level, SINCE, UNTIL)
        assert (level_totals(db, level)["n"], result.rows_per_level[level]) == (want.rows, want.rows)


def test_a_run_that_fails_again_is_split_until_it_completes(db, db_url):
    """A run too large to finish fails every time: restarted once, then split (days, then campaigns)."""
    with sandbox() as (state, base), client(base) as c:
        httpx.post(f"{base}/_sandbox/marketing/limits", json={"max_job_rows": 40}).raise_for_status()
        result = sync_ad_performance(
            db_url, c, accounts=[PRIMARY], levels=["ad"], since=SINCE, until=UNTIL, options=fast_options()
        )
    want = expected(state, PRIMARY, "ad", SINCE, UNTIL)
    assert want.rows > 40  # the whole range is one run too large for the sandbox to finish
    got = level_totals(db, "ad")
    assert (got["n"], cents(got["spend"])) == (want.rows, want.spend_cents)
    assert result.splits >= 1 and result.failed_runs >= 2 * result.splits  # each split came after 2 failures
    statuses = marketing.world(state).statuses_served
    assert sum(1 for _, s, _ in statuses if s == "Job Failed") == result.failed_runs


def test_a_run_that_fails_at_one_day_of_one_campaign_stops_clearly(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        marketing.world(state).limits.max_job_rows = 1  # nothing with more than one row can finish
        with pytest.raises(InsightsError, match="one day of one campaign is too much data"):
            sync_ad_performance(
                db_url,
                c,
                accounts=[PRIMARY],
                levels=["ad"],
                since=SINCE,
                until=SINCE,
                options=fast_options(),
            )
    assert db.execute("SELECT count(*) AS n FROM ad_performance").fetchone()["n"] == 0


def test_a_backfill_batch_is_one_report_run_per_level_and_account():
    from everreach_data.meta.insights import InsightsReader
    from everreach_data.partitions import DAYS_PER_RUN

    reader = InsightsReader(None, fast_options())  # planning makes no calls
    start = date(2026, 1, 1)
    plan = reader.plan([PRIMARY, SECOND], LEVELS, start, start + timedelta(days=DAYS_PER_RUN - 1))
    assert len(plan) == 2 * len(LEVELS) and {r.days for r in plan} == {DAYS_PER_RUN}
    longer = reader.plan([PRIMARY], ["ad"], start, start + timedelta(days=DAYS_PER_RUN))
    assert [r.days for r in longer] == [DAYS_PER_RUN, 1]
