"""Attribution windows end to end: exact conversions and values per action type and window, the removed
view windows refused, and a restated day re-pulled replacing its rows."""

from __future__ import annotations

from datetime import date

import pytest

from everreach_data.ads.attribution import sync_attribution
from everreach_data.meta.insights import ATTRIBUTION_WINDOWS
from everreach_sandbox import marketing

from .helpers import PRIMARY, SECOND, attribution_rows, cents, client, fast_options, sandbox

SINCE, UNTIL = date(2026, 10, 1), date(2026, 10, 4)
LEVELS = ["campaign", "adset", "ad"]


def stored(db, account: str = PRIMARY) -> dict:
    rows = db.execute("SELECT level, object_id, date, action_type, attribution_window, conversions, "
                      "conversion_value, attribution_setting FROM ad_performance_attribution "
                      "WHERE ad_account_id = %s", (account,)).fetchall()
    return {(r["level"], r["object_id"], r["date"], r["action_type"], r["attribution_window"]): r for r in rows}


def assert_exact(db, state, account: str, levels=LEVELS) -> None:
    got = stored(db, account)
    want = {(lv, *k): v for lv in levels for k, v in attribution_rows(state, account, lv, SINCE, UNTIL).items()}
    assert set(got) == set(want)
    for key, (count, value) in want.items():
        assert (got[key]["conversions"], cents(got[key]["conversion_value"])) == (count, value), key


def test_every_window_exact_at_every_level(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        run = sync_attribution(db_url, c, accounts=[PRIMARY, SECOND], levels=LEVELS, since=SINCE, until=UNTIL,
                               options=fast_options())
    for account in (PRIMARY, SECOND):
        assert_exact(db, state, account)
    assert run.reader.stats.report_runs == 2 * 3
    got = stored(db)
    windows = {k[4] for k in got}
    assert windows == {"default", *ATTRIBUTION_WINDOWS}
    # the ad set's own setting is the default: for 7-day click + 1-day view, the two windows add up to it
    acct = marketing.world(state).accounts[PRIMARY]
    checked = 0
    for (level, oid, day, action, window), row in got.items():
        if level == "adset" and window == "default" and acct.adsets[oid]["attribution_setting"] == "7d_click_1d_view":
            parts = got[(level, oid, day, action, "7d_click")]["conversions"] + got[(
                level, oid, day, action, "1d_view")]["conversions"]
            assert row["conversions"] == parts and row["attribution_setting"] == "7d_click_1d_view"
            checked += 1
    assert checked > 0
    # a campaign's windows are its ads', each under its own ad set's setting
    assert {r["attribution_setting"] for k, r in got.items() if k[0] == "campaign"} <= {
        *marketing.ATTRIBUTION_SETTINGS, "mixed"}
    # 1d <= 7d <= 28d click, for every row
    for (level, oid, day, action, window), row in got.items():
        if window == "7d_click":
            c1, c28 = (got[(level, oid, day, action, w)]["conversions"] for w in ("1d_click", "28d_click"))
            assert c1 <= row["conversions"] <= c28


def test_the_removed_view_windows_are_refused_clearly(db_url):
    with sandbox() as (state, base), client(base) as c:
        for window in ("7d_view", "28d_view"):
            with pytest.raises(ValueError, match=f"{window}.*12 January 2026"):
                sync_attribution(db_url, c, accounts=[PRIMARY], levels=["ad"], since=SINCE, until=UNTIL,
                                 windows=["1d_click", window], options=fast_options())
        with pytest.raises(ValueError, match="unknown attribution window"):
            sync_attribution(db_url, c, accounts=[PRIMARY], levels=["ad"], since=SINCE, until=UNTIL,
                             windows=["2d_click"], options=fast_options())
    assert state.counters.get("marketing.report_runs", 0) == 0  # refused before asking Meta


def test_a_restated_day_re_pulled_replaces_its_attribution_rows(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        sync_attribution(db_url, c, accounts=[PRIMARY], levels=["ad"], since=SINCE, until=UNTIL,
                         options=fast_options())
        before = stored(db)
        state.restate(1, today=UNTIL)  # Meta adds late conversions to Oct 4
        sync_attribution(db_url, c, accounts=[PRIMARY], levels=["ad"], since=SINCE, until=UNTIL,
                         options=fast_options())
    assert_exact(db, state, PRIMARY, ["ad"])
    after = stored(db)
    assert db.execute("SELECT count(*) AS n FROM ad_performance_attribution").fetchone()["n"] == len(after)
    changed = {k[2] for k in set(after) | set(before)
               if k not in before or k not in after or after[k]["conversions"] != before[k]["conversions"]}
    assert changed == {UNTIL}
    purchases = [k for k in after if k[2] == UNTIL and k[3] == "offsite_conversion.fb_pixel_purchase"
                 and k[4] == "default"]
    assert sum(after[k]["conversions"] for k in purchases) > sum(
        before[k]["conversions"] for k in purchases if k in before)
