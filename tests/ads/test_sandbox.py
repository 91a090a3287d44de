"""The sandbox's Marketing API speaks Meta's wire format (what the reader relies on)."""

from __future__ import annotations

import json
from datetime import date

import httpx

from everreach_sandbox import marketing

from .helpers import PRIMARY, TOKEN, sandbox


def test_sync_insights_wire_format_paging_and_limits():
    with sandbox() as (state, base):
        h = {"Authorization": f"Bearer {TOKEN}"}
        params = {
            "level": "ad",
            "fields": "ad_id,spend,impressions,cpc,ctr,actions,account_currency",
            "time_increment": "1",
            "limit": "5",
            "time_range": json.dumps({"since": "2026-10-01", "until": "2026-10-01"}),
        }
        first = httpx.get(f"{base}/v24.0/{PRIMARY}/insights", params=params, headers=h)
        body = first.json()
        assert first.status_code == 200 and len(body["data"]) == 5
        assert "acc_id_util_pct" in json.loads(first.headers["x-ad-account-usage"])
        row = body["data"][0]
        assert all(isinstance(v, str) for k, v in row.items() if k != "actions")
        assert all(isinstance(a["value"], str) for a in row.get("actions", []))
        assert row["date_start"] == row["date_stop"] == "2026-10-01"
        rows, page = list(body["data"]), body
        while "next" in page["paging"]:
            page = httpx.get(page["paging"]["next"], headers=h).json()
            rows += page["data"]
        assert "after" in page["paging"]["cursors"]  # present on the last page, next is not
        ads = marketing.world(state).accounts[PRIMARY].ads
        delivering = [a for a in ads if marketing.ad_day(state.seed, a, date(2026, 10, 1)) is not None]
        assert sorted(r["ad_id"] for r in rows) == sorted(a.id for a in delivering)

        marketing.world(state).limits.max_sync_rows = 3
        too_much = httpx.get(f"{base}/v24.0/{PRIMARY}/insights", params=params, headers=h)
        assert too_much.status_code == 500 and too_much.json()["error"]["code"] == 1
        assert "reduce the amount of data" in too_much.json()["error"]["message"]

        old = httpx.get(
            f"{base}/v24.0/{PRIMARY}/insights",
            headers=h,
            params={"time_range": json.dumps({"since": "2023-01-01", "until": "2023-01-02"})},
        )
        assert old.json()["error"]["code"] == 3018

        camps = httpx.get(
            f"{base}/v24.0/{PRIMARY}/campaigns", headers=h, params={"fields": "id,name,objective", "limit": 2}
        ).json()
        assert len(camps["data"]) == 2 and "next" in camps["paging"] and camps["data"][0]["objective"]
