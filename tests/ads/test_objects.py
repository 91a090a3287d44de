"""The object tables from the sandbox: every kind exact, deleted and archived kept with their status,
re-syncs upserting in place, and insights rows joining to their objects."""

from __future__ import annotations

from datetime import date

import psycopg
from psycopg.rows import dict_row

from everreach_data.ads.defs import sync_ad_performance
from everreach_data.ads.objects import sync_accounts, sync_objects
from everreach_data.meta.ads_objects import meta_time, resolve_accounts
from everreach_sandbox import marketing

from .helpers import PRIMARY, SECOND, client, fast_options, sandbox

KINDS = ("campaign", "ad_set", "ad", "ad_creative")


def sync_all(db_url, c, accounts):
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        results = {"ad_account": sync_accounts(conn, c, accounts)}
        results.update({k: sync_objects(conn, c, k, accounts) for k in KINDS})
    return results


def test_every_object_exact_with_deleted_and_archived_kept(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        results = sync_all(db_url, c, [PRIMARY, SECOND])
        again = sync_all(db_url, c, [PRIMARY, SECOND])  # upserted in place
    w = marketing.world(state)
    for account in (PRIMARY, SECOND):
        acct = w.accounts[account]
        row = db.execute("SELECT * FROM ad_account WHERE ad_account_id = %s", (account,)).fetchone()
        assert (row["name"], row["currency"], row["timezone_name"], row["account_status"]) == (
            acct.name, acct.currency, acct.timezone_name, 1)
        camps = {r["external_id"]: r for r in db.execute(
            "SELECT * FROM campaign WHERE source = 'meta' AND ad_account_id = %s", (account,))}
        assert set(camps) == set(acct.campaigns)
        for cid, c in acct.campaigns.items():
            r = camps[cid]
            assert (r["name"], r["objective"], r["status"], r["effective_status"]) == (
                c["name"], c["objective"], c["status"], c["effective_status"])
            assert r["daily_budget"] == (int(c["daily_budget"]) if "daily_budget" in c else None)
            assert r["start_time"] == meta_time(c["start_time"]) and r["start_time"].tzinfo is not None
        sets = {r["adset_id"]: r for r in db.execute("SELECT * FROM ad_set WHERE ad_account_id = %s", (account,))}
        assert set(sets) == set(acct.adsets)
        for sid, s in acct.adsets.items():
            r = sets[sid]
            assert (r["campaign_id"], r["status"], r["effective_status"], r["optimization_goal"],
                    r["billing_event"], r["attribution_spec"]) == (
                s["campaign_id"], s["status"], s["effective_status"], s["optimization_goal"], s["billing_event"],
                s["attribution_spec"])
            assert (r["daily_budget"], r["lifetime_budget"]) == tuple(
                int(s[k]) if k in s else None for k in ("daily_budget", "lifetime_budget"))
        ads = {r["ad_id"]: r for r in db.execute("SELECT * FROM ad WHERE ad_account_id = %s", (account,))}
        assert set(ads) == {a.id for a in acct.ads}
        for aid, a in acct.ad_fields.items():
            assert (ads[aid]["adset_id"], ads[aid]["campaign_id"], ads[aid]["effective_status"],
                    ads[aid]["creative_id"]) == (a["adset_id"], a["campaign_id"], a["effective_status"],
                                                 a["creative"]["id"])
        creatives = {r["creative_id"]: r for r in db.execute(
            "SELECT * FROM ad_creative WHERE ad_account_id = %s", (account,))}
        assert set(creatives) == set(acct.creatives)
        for cid, cr in acct.creatives.items():
            assert (creatives[cid]["title"], creatives[cid]["body"], creatives[cid]["object_type"],
                    creatives[cid]["thumbnail_url"], creatives[cid]["instagram_permalink_url"]) == (
                cr["title"], cr["body"], cr["object_type"], cr["thumbnail_url"], cr.get("instagram_permalink_url"))
    statuses = {r["effective_status"] for r in db.execute("SELECT effective_status FROM ad")}
    assert {"DELETED", "ARCHIVED", "ACTIVE", "CAMPAIGN_PAUSED", "ADSET_PAUSED"} <= statuses
    assert results["ad"].statuses == again["ad"].statuses and results["ad"].statuses["DELETED"] == 2
    assert db.execute("SELECT count(*) AS n FROM ad").fetchone()["n"] == 12 + 4


def test_insights_rows_join_to_their_objects(db, db_url):
    with sandbox() as (state, base), client(base) as c:
        sync_all(db_url, c, [PRIMARY])
        sync_ad_performance(db_url, c, accounts=[PRIMARY], levels=["ad"], since=date(2026, 10, 1),
                            until=date(2026, 10, 3), options=fast_options())
    orphans = db.execute("""
        SELECT count(*) AS n FROM ad_performance p
        LEFT JOIN ad USING (ad_id) LEFT JOIN ad_set s ON s.adset_id = p.adset_id
        LEFT JOIN campaign c ON c.source = 'meta' AND c.external_id = p.meta_campaign_id
        LEFT JOIN ad_creative cr ON cr.creative_id = ad.creative_id
        WHERE ad.ad_id IS NULL OR s.adset_id IS NULL OR c.campaign_id IS NULL OR cr.creative_id IS NULL""").fetchone()
    assert orphans["n"] == 0
    deleted = db.execute("SELECT count(*) AS n FROM ad_performance p JOIN ad USING (ad_id) "
                         "WHERE ad.effective_status = 'DELETED'").fetchone()["n"]
    assert deleted > 0  # a deleted ad's past delivery is there, and says it was deleted


def test_edges_hide_deleted_and_archived_unless_asked_and_me_lists_the_accounts():
    import httpx

    from .helpers import TOKEN
    with sandbox() as (state, base), client(base) as c:
        h = {"Authorization": f"Bearer {TOKEN}"}
        plain = httpx.get(f"{base}/v24.0/{PRIMARY}/ads", params={"fields": "id", "limit": 100}, headers=h).json()
        every = httpx.get(f"{base}/v24.0/{PRIMARY}/ads", headers=h, params={
            "fields": '["id","effective_status"]', "limit": 100,
            "effective_status": '["ACTIVE","PAUSED","DELETED","ARCHIVED","CAMPAIGN_PAUSED","ADSET_PAUSED"]'}).json()
        assert len(every["data"]) == 12 and len(plain["data"]) == 12 - 3  # 1 deleted, 2 archived
        one = httpx.get(f"{base}/v24.0/{every['data'][0]['id']}", params={"fields": "name"}, headers=h).json()
        assert set(one) == {"id", "name"}
        bad = httpx.get(f"{base}/v24.0/{PRIMARY}", params={"fields": "id,nope"}, headers=h)
        assert bad.status_code == 400 and "(nope)" in bad.json()["error"]["message"]
        assert resolve_accounts(c, ["me"]) == [PRIMARY, SECOND]
        assert resolve_accounts(c, ["1130334212412487"]) == [PRIMARY]
