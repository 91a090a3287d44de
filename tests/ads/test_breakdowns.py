"""Breakdown reports end to end: the sandbox over real HTTP, the real database, exact cells, the sums
check against ad_performance, Meta's 13-month reach rule, splitting, and restated days replaced."""

from __future__ import annotations

from datetime import date, timedelta

from everreach_data.ads.breakdowns import check_breakdown, sync_breakdown
from everreach_data.ads.defs import sync_ad_performance
from everreach_data.ads.reports import DEFAULT_REPORTS, BreakdownReport
from everreach_data.meta.insights import reach_cutoff
from everreach_sandbox import marketing

from .helpers import PRIMARY, SECOND, breakdown_cells, cents, client, fast_options, sandbox

SINCE, UNTIL = date(2026, 10, 1), date(2026, 10, 4)


def stored(db, report: str, account: str = PRIMARY) -> dict:
    rows = db.execute(
        "SELECT object_id, date, breakdown_key, breakdowns, spend, impressions, clicks, reach, conversions "
        "FROM ad_performance_breakdown WHERE report = %s AND ad_account_id = %s", (report, account)).fetchall()
    return {(r["object_id"], r["date"], r["breakdown_key"]): r for r in rows}


def assert_exact(db, state, report: BreakdownReport, account: str, since: date, until: date) -> None:
    want = breakdown_cells(state, account, report.level, report.breakdowns, since, until)
    got = stored(db, report.name, account)
    assert set(got) == set(want)
    for key, m in want.items():
        row = got[key]
        assert (cents(row["spend"]), row["impressions"], row["clicks"], row["reach"]) == (
            m.spend_cents, m.impressions, m.clicks, m.reach), key
        conversions = sum(v for t, v in m.actions if t in fast_options().action_types)
        assert row["conversions"] == conversions
        assert set(row["breakdowns"]) == set(report.breakdowns)  # jsonb keeps its own key order
        assert "|".join(row["breakdowns"][b] for b in report.breakdowns) == key[2]


def test_the_default_reports_exact_and_summing_to_the_level_totals(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        sync_ad_performance(db_url, c, accounts=[PRIMARY, SECOND], levels=["campaign"], since=SINCE, until=UNTIL,
                            options=fast_options())
        results = [sync_breakdown(db_url, c, report=r, accounts=[PRIMARY, SECOND], since=SINCE, until=UNTIL,
                                  options=fast_options()) for r in DEFAULT_REPORTS]
    for result in results:
        for account in (PRIMARY, SECOND):
            assert_exact(db, state, result.report, account, SINCE, UNTIL)
        assert result.check.passed and result.check.days_compared == 2 * 4
        cells = [breakdown_cells(state, a, "campaign", result.report.breakdowns, SINCE, UNTIL)
                 for a in (PRIMARY, SECOND)]
        assert result.run.rows_written == result.run.rows_fetched == sum(map(len, cells))
        assert result.run.reader.stats.report_runs == 2  # one per account: 4 days fit one run
    # per day and campaign, every report's cells add up to ad_performance exactly
    sums = db.execute("""
        SELECT b.report, count(*) AS days, count(*) FILTER (WHERE b.spend = p.spend AND b.impressions = p.impressions
               AND b.clicks = p.clicks AND b.conversions = p.conversions) AS equal
        FROM (SELECT report, ad_account_id, object_id, date, sum(spend) AS spend, sum(impressions) AS impressions,
                     sum(clicks) AS clicks, sum(conversions) AS conversions
              FROM ad_performance_breakdown GROUP BY 1, 2, 3, 4) b
        JOIN ad_performance p ON p.level = 'campaign' AND (p.ad_account_id, p.object_id, p.date) =
             (b.ad_account_id, b.object_id, b.date)
        GROUP BY 1 ORDER BY 1""").fetchall()
    n_days = db.execute("SELECT count(*) AS n FROM ad_performance WHERE level = 'campaign'").fetchone()["n"]
    assert [(s["report"], s["days"], s["equal"]) for s in sums] == [
        (name, n_days, n_days) for name in sorted(r.name for r in DEFAULT_REPORTS)]
    placements = {tuple(k[2].split("|")) for k in stored(db, "placement")}
    assert placements <= {(p, pos) for p, ps in marketing.PLATFORM_POSITIONS.items() for pos in ps}
    assert {"instagram_reels", "feed", "an_classic"} <= {pos for _, pos in placements}


def test_the_check_finds_a_day_that_does_not_add_up_and_one_not_in_ad_performance(db, db_url):
    report = DEFAULT_REPORTS[1]  # country
    with sandbox() as (state, base), client(base) as c:
        sync_ad_performance(db_url, c, accounts=[PRIMARY], levels=["campaign"], since=SINCE, until=SINCE,
                            options=fast_options())
        sync_breakdown(db_url, c, report=report, accounts=[PRIMARY], since=SINCE, until=SINCE + timedelta(days=1),
                       options=fast_options())
    db.execute("UPDATE ad_performance_breakdown SET spend = spend + 0.01 WHERE ctid = "
               "(SELECT ctid FROM ad_performance_breakdown WHERE date = %s LIMIT 1)", (SINCE,))
    check = check_breakdown(db, report, [PRIMARY], SINCE, SINCE + timedelta(days=1))
    assert not check.passed and check.days_compared == 2
    assert [(m["ad_account_id"], m["date"]) for m in check.mismatched] == [(PRIMARY, str(SINCE))]
    assert check.not_in_ad_performance == [f"{PRIMARY} {SINCE + timedelta(days=1)}"]


def test_a_restated_day_re_pulled_replaces_its_breakdown_rows(db, db_url):
    report = DEFAULT_REPORTS[0]  # age_gender
    with sandbox() as (state, base), client(base) as c:
        sync_breakdown(db_url, c, report=report, accounts=[PRIMARY], since=SINCE, until=UNTIL, options=fast_options())
        before = stored(db, report.name)
        state.restate(2, today=UNTIL)  # Meta revises Oct 3-4
        sync_breakdown(db_url, c, report=report, accounts=[PRIMARY], since=SINCE, until=UNTIL, options=fast_options())
    assert_exact(db, state, report, PRIMARY, SINCE, UNTIL)
    after = stored(db, report.name)
    total = db.execute("SELECT count(*) AS n FROM ad_performance_breakdown").fetchone()["n"]
    assert total == len(after)  # replaced: no duplicate (the key has the breakdown values)
    changed = {k[1] for k in after if k not in before or after[k]["spend"] != before[k]["spend"]}
    assert changed == {UNTIL - timedelta(days=1), UNTIL}


def test_reach_is_null_past_13_months_and_the_range_is_cut_there(db, db_url):
    """Meta withholds reach from breakdown queries starting more than 13 months back: those rows keep
    every other metric, with reach null; the range is cut at the line so the recent part keeps reach."""
    cutoff = reach_cutoff(date.today())
    since, until = cutoff - timedelta(days=2), cutoff + timedelta(days=1)
    report = DEFAULT_REPORTS[3]  # device
    with sandbox() as (state, base), client(base) as c:
        marketing.world(state).limits.old_reach_runs_per_day = 0  # the day's async allowance used up
        result = sync_breakdown(db_url, c, report=report, accounts=[PRIMARY], since=since, until=until,
                                options=fast_options())
    want = breakdown_cells(state, PRIMARY, report.level, report.breakdowns, since, until)
    got = stored(db, report.name)
    assert set(got) == set(want)
    old = [k for k in got if k[1] < cutoff]
    assert old and all(got[k]["reach"] is None for k in old)
    assert all(got[k]["reach"] == want[k].reach for k in got if k[1] >= cutoff)
    assert all(cents(got[k]["spend"]) == want[k].spend_cents for k in got)
    assert result.run.reader.stats.rows_without_reach == len(old)
    assert result.run.reader.stats.report_runs == 2  # cut at the 13-month line


def test_too_much_data_splits_breakdown_reports_too(db, db_url):
    report = BreakdownReport("age_by_ad", "ad", ("age",))
    with sandbox() as (state, base), client(base) as c:
        marketing.world(state).limits.max_report_rows = 40  # 4 days x ~10 ads x ~5 ages is ~200
        result = sync_breakdown(db_url, c, report=report, accounts=[PRIMARY], since=SINCE, until=UNTIL,
                                options=fast_options())
    assert_exact(db, state, report, PRIMARY, SINCE, UNTIL)
    assert result.run.reader.stats.splits >= 3
