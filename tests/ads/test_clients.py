"""The sandbox driven by real clients, unchanged: Meta's Business SDK (``facebook-business``: list
parameters JSON-encoded, ``summary=true`` on every edge, report runs by ``report_run_id``) and pywa
(WhatsApp Cloud API). Where a real client and the sandbox disagree, the sandbox is wrong."""

from __future__ import annotations

import time
from datetime import date

import httpx
import pytest
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.adreportrun import AdReportRun
from facebook_business.adobjects.campaign import Campaign
from facebook_business.adobjects.user import User
from facebook_business.api import FacebookAdsApi, FacebookSession
from facebook_business.exceptions import FacebookRequestError
from pywa import WhatsApp
from pywa.errors import TooManyMessages

from everreach_sandbox import marketing
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

from .helpers import PRIMARY, SECOND, TOKEN, attribution_rows, breakdown_cells, expected, sandbox

ALL = ["ACTIVE", "PAUSED", "DELETED", "ARCHIVED", "CAMPAIGN_PAUSED", "ADSET_PAUSED"]
DAY = {"since": "2026-10-01", "until": "2026-10-02"}


def sdk(base: str) -> FacebookAdsApi:
    """The SDK pointed at the sandbox through its documented ``GRAPH`` attribute (no crash reporter)."""
    session = FacebookSession(access_token=TOKEN)
    session.GRAPH = base
    return FacebookAdsApi(session, api_version="v24.0")


def wait(job: AdReportRun) -> AdReportRun:
    deadline = time.monotonic() + 20
    while (job := job.api_get())[AdReportRun.Field.async_status] != "Job Completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return job


# The SDK's type checker wants its enum constants; Meta takes the plain strings they stand for.
@pytest.mark.filterwarnings("ignore:value of effective_status might not be compatible:UserWarning")
def test_the_business_sdk_reads_objects_and_fields_as_meta_answers_them():
    with sandbox() as (state, base):
        api = sdk(base)
        acct = marketing.world(state).accounts[PRIMARY]
        account = AdAccount(PRIMARY, api=api).api_get(fields=["name", "currency", "timezone_name"])
        assert account.export_all_data() == {"id": PRIMARY, "name": acct.name, "currency": "USD",
                                             "timezone_name": "America/Los_Angeles"}
        shown = list(AdAccount(PRIMARY, api=api).get_ads(fields=["name", "effective_status"]))
        every = list(AdAccount(PRIMARY, api=api).get_ads(fields=["name", "effective_status"],
                                                         params={"effective_status": ALL}))
        assert {a["id"] for a in every} == {a.id for a in acct.ads}
        assert {a["id"] for a in every} - {a["id"] for a in shown} == {
            i for i, a in acct.ad_fields.items() if a["effective_status"] in ("DELETED", "ARCHIVED")}
        cid = next(iter(acct.campaigns))
        campaign = Campaign(cid, api=api).api_get(fields=["name", "effective_status", "daily_budget"])
        assert campaign.export_all_data() == {"id": cid, "name": acct.campaigns[cid]["name"],
                                              "effective_status": "PAUSED",
                                              "daily_budget": acct.campaigns[cid]["daily_budget"]}
        sets = list(AdAccount(PRIMARY, api=api).get_ad_sets(fields=["attribution_spec"],
                                                            params={"effective_status": ALL}))
        assert {s["id"]: s["attribution_spec"] for s in sets} == {
            i: s["attribution_spec"] for i, s in acct.adsets.items()}
        creatives = list(AdAccount(PRIMARY, api=api).get_ad_creatives(fields=["title", "object_type"]))
        assert {c["id"]: c["title"] for c in creatives} == {i: c["title"] for i, c in acct.creatives.items()}
        mine = list(User(fbid="me", api=api).get_ad_accounts(fields=["name"]))
        assert [a["id"] for a in mine] == [PRIMARY, SECOND]
        with pytest.raises(FacebookRequestError) as bad, pytest.warns(UserWarning, match="not_a_field"):
            Campaign(cid, api=api).api_get(fields=["not_a_field"])
        assert bad.value.api_error_code() == 100


def test_the_business_sdk_runs_async_breakdown_and_window_reports():
    with sandbox() as (state, base):
        api = sdk(base)
        job = AdAccount(PRIMARY, api=api).get_insights(
            fields=["campaign_id", "spend", "impressions", "clicks", "reach", "actions"],
            params={"level": "campaign", "time_range": DAY, "time_increment": 1, "breakdowns": ["age", "gender"]},
            is_async=True)
        rows = list(wait(job).get_result(params={"limit": 7}))  # paged by cursors.after while next exists
        want = breakdown_cells(state, PRIMARY, "campaign", ("age", "gender"), date(2026, 10, 1), date(2026, 10, 2))
        assert {(r["campaign_id"], date.fromisoformat(r["date_start"]), f"{r['age']}|{r['gender']}"): (
            r["spend"], int(r["impressions"]), int(r["reach"])) for r in rows} == {
            k: (marketing._money(m.spend_cents), m.impressions, m.reach) for k, m in want.items()}
        assert sum(round(float(r["spend"]) * 100) for r in rows) == expected(
            state, PRIMARY, "campaign", date(2026, 10, 1), date(2026, 10, 2)).spend_cents
        assert len(rows) == len(want)

        windows = ["1d_click", "7d_click", "1d_view"]
        job = AdAccount(PRIMARY, api=api).get_insights(
            fields=["ad_id", "actions"], params={"level": "ad", "time_range": DAY, "time_increment": 1,
                                                 "action_attribution_windows": windows}, is_async=True)
        rows = list(wait(job).get_result(params={"limit": 100}))
        want = attribution_rows(state, PRIMARY, "ad", date(2026, 10, 1), date(2026, 10, 2), windows=windows,
                                action_types=("offsite_conversion.fb_pixel_purchase",))
        got = {}
        for r in rows:
            for item in r.get("actions", []):
                if item["action_type"] == "offsite_conversion.fb_pixel_purchase":
                    for w, key in (("default", "value"), *((w, w) for w in windows)):
                        got[(r["ad_id"], date.fromisoformat(r["date_start"]), item["action_type"], w)] = int(
                            item.get(key, 0))
        assert got == {k: count for k, (count, _) in want.items()}

        sync = list(AdAccount(PRIMARY, api=api).get_insights(
            fields=["campaign_id", "spend"], params={"level": "campaign", "time_range": DAY, "time_increment": 1}))
        assert len(sync) == expected(state, PRIMARY, "campaign", date(2026, 10, 1), date(2026, 10, 2)).rows


class ToSandbox(httpx.HTTPTransport):
    """pywa always talks to graph.facebook.com: this transport carries its requests to the sandbox
    instead (the one thing that cannot run here is Meta's DNS), leaving them otherwise as pywa sent them."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = httpx.URL(base)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme=self.base.scheme, host=self.base.host, port=self.base.port)
        return super().handle_request(request)


def test_pywa_sends_whatsapp_messages_to_the_sandbox_unchanged():
    with sandbox() as (state, base):
        to = "15551234567"
        httpx.post(f"{base}/_sandbox/messaging/users",
                   json={"users": [{"platform": "whatsapp", "id": to, "last_inbound_ago": 60}]}).raise_for_status()
        wa = WhatsApp(phone_id=SANDBOX_DEFAULTS["WHATSAPP_PHONE_NUMBER_ID"],
                      token=SANDBOX_DEFAULTS["WHATSAPP_ACCESS_TOKEN"], session=httpx.Client(transport=ToSandbox(base)))
        sent = wa.send_message(to=to, text="Hello from pywa")
        assert sent.id.startswith("wamid.") and sent.chat.id == to
        record = httpx.get(f"{base}/_sandbox/messaging/sent", params={"recipient_id": to}).json()["data"]
        assert [(r["message_id"], r["request"]["text"]["body"]) for r in record] == [(sent.id, "Hello from pywa")]
        httpx.post(f"{base}/_sandbox/messaging/settings", json={"pair_burst": 1, "reset_pairs": True}
                   ).raise_for_status()
        wa.send_message(to=to, text="one more")
        with pytest.raises(TooManyMessages):  # Meta's 131056 as pywa's own typed error
            wa.send_message(to=to, text="and again, too soon")
