"""GET /api/v1/integrations/meta/ads-insights over real HTTP, computed from what the sync wrote."""

from __future__ import annotations

from datetime import date

import httpx

from everreach_data.ads.defs import sync_ad_performance
from everreach_data.receiver.app import create_app
from tests import tokens
from tests.servers import serve

from .helpers import PRIMARY, client, expected, fast_options, sandbox

PATH = "/api/v1/integrations/meta/ads-insights"


def test_summary_and_missing_dates(settings, db_url):
    with sandbox() as (state, base), client(base) as c:
        sync_ad_performance(
            db_url,
            c,
            accounts=[PRIMARY],
            levels=["campaign", "ad"],
            since=date(2026, 10, 1),
            until=date(2026, 10, 5),
            options=fast_options(),
        )
    want = expected(state, PRIMARY, "campaign", date(2026, 10, 1), date(2026, 10, 5))
    token = tokens.token("analyst", sub="analyst-1")
    with serve(create_app(settings, db_url)) as api:
        r = httpx.get(
            api + PATH,
            params={"start_date": "2026-09-29", "end_date": "2026-10-05", "level": "campaign", "limit": "4"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True
        assert body["insights_count"] == body["synced_to_database"] == want.rows
        s = body["summary"]
        assert s["total_spend"] == want.spend_cents / 100
        assert (s["total_impressions"], s["total_clicks"], s["total_conversions"]) == (
            want.impressions,
            want.clicks,
            want.conversions,
        )
        assert s["average_cpc"] == round(want.spend_cents / 100 / want.clicks, 2)
        assert s["average_cpm"] == round(want.spend_cents * 10 / want.impressions, 2)
        assert body["missing_dates"] == ["2026-09-29", "2026-09-30"]  # not synced yet
        assert len(body["insights"]) == 4 and body["insights"][0]["date"] == "2026-10-05"
        assert body["insights"][0]["campaign_name"]

        ad = httpx.get(
            api + PATH,
            params={"start_date": "2026-10-01", "end_date": "2026-10-05", "level": "ad"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert ad["summary"]["total_spend"] == s["total_spend"]  # every level covers the same spend
        assert (
            ad["insights_count"] == expected(state, PRIMARY, "ad", date(2026, 10, 1), date(2026, 10, 5)).rows
        )

        assert httpx.get(api + PATH).status_code == 401


BAD = [
    ({"start_date": "2026-13-01"}, "start_date"),
    ({"end_date": "yesterday"}, "end_date"),
    ({"start_date": "2026-10-05", "end_date": "2026-10-01"}, "start_date"),
    ({"start_date": "2020-01-01", "end_date": "2026-10-01"}, "start_date"),
    ({"level": "account"}, "level"),
    ({"limit": "lots"}, "limit"),
    ({"limit": "5000"}, "limit"),
]


def test_bad_query_is_422_naming_the_field(settings, db_url):
    token = tokens.token("analyst", sub="analyst-1")
    with serve(create_app(settings, db_url)) as api:
        for params, field in BAD:
            r = httpx.get(api + PATH, params=params, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 422, params
            assert r.json()["error"]["field"] == field and field in r.json()["error"]["message"], params
