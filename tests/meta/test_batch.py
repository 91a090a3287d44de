"""Meta's batch requests: the sandbox answers in Meta's shape, item by item, and GraphClient.batch reads it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from everreach_data.meta.client import AsyncGraphClient, BatchCall, GraphClient
from everreach_data.meta.errors import ErrorKind, GraphAPIError
from everreach_sandbox.core import TokenInfo
from tests.ads.helpers import FAST_RETRY, PRIMARY, SECOND, TOKEN, client, sandbox


def post_batch(base: str, items: list, *, path: str = "/v24.0/", token: str | None = TOKEN, **extra):
    data = {"batch": json.dumps(items), **extra}
    if token:
        data["access_token"] = token
    return httpx.post(f"{base}{path}", data=data)


def app_calls(state) -> int:
    return sum(len(b.calls) for key, b in state.buckets.items() if key.startswith("app:"))


def test_sandbox_answers_each_item_in_metas_shape():
    with sandbox() as (state, base):
        answer = post_batch(
            base,
            [
                {"method": "GET", "relative_url": PRIMARY},
                {"method": "GET", "relative_url": f"{PRIMARY}/campaigns?fields=id,name&limit=2"},
                {"method": "GET", "relative_url": "no_such_node"},
                {
                    "method": "POST",
                    "relative_url": f"{PRIMARY}/insights",
                    "body": "level=campaign&fields=spend&time_range="
                    + json.dumps({"since": "2026-10-01", "until": "2026-10-02"}),
                },
                {"method": "GET", "relative_url": f"v24.0/{SECOND}?fields=id"},
            ],
        )
        assert answer.status_code == 200
        items = answer.json()
        assert [i["code"] for i in items] == [200, 200, 400, 200, 200]
        for item in items:
            assert isinstance(item["body"], str)  # a JSON document inside the JSON answer, as Meta sends it
            names = {h["name"].lower() for h in item["headers"]}
            assert {"x-app-usage", "facebook-api-version"} <= names
        assert json.loads(items[0]["body"])["id"] == PRIMARY
        usage = {h["name"]: h["value"] for h in items[0]["headers"]}["x-ad-account-usage"]
        assert "acc_id_util_pct" in json.loads(usage)
        page = json.loads(items[1]["body"])
        assert len(page["data"]) == 2 and "after=" in page["paging"]["next"]  # a real next link
        error = json.loads(items[2]["body"])["error"]
        assert error["code"] == 100 and error["error_subcode"] == 33
        run_id = json.loads(items[3]["body"])["report_run_id"]
        assert state.nodes[run_id].kind == "ad_report_run"
        assert json.loads(items[4]["body"])["id"] == SECOND
        assert app_calls(state) == 5  # every item counts against the app's limit, not the batch once
        assert state.counters["batch.items"] == 5 and state.counters["batch.requests"] == 1


def test_root_path_json_body_and_without_headers():
    with sandbox() as (_state, base):
        answer = httpx.post(
            f"{base}/",
            json={"batch": [{"method": "GET", "relative_url": PRIMARY}], "include_headers": "false"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status_code == 200
        (item,) = answer.json()
        assert item["code"] == 200 and "headers" not in item and json.loads(item["body"])["id"] == PRIMARY


def test_whole_batch_errors_and_per_item_tokens():
    with sandbox() as (state, base):
        too_many = post_batch(base, [{"method": "GET", "relative_url": PRIMARY}] * 51)
        assert too_many.status_code == 400
        assert "Maximum batch size is 50" in too_many.json()["error"]["message"]
        missing = httpx.post(f"{base}/v24.0/", data={"access_token": TOKEN})
        assert missing.json()["error"]["code"] == 100 and "batch" in missing.json()["error"]["message"]
        not_json = post_batch(base, [], batch="[{")
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == 100
        no_url = post_batch(base, [{"method": "GET"}])
        assert "batch[0]: relative_url is required" in no_url.json()["error"]["message"]
        bad_token = post_batch(base, [{"method": "GET", "relative_url": PRIMARY}], token="nope")
        assert bad_token.status_code == 400 and bad_token.json()["error"]["code"] == 190
        state.tokens["page-only"] = TokenInfo("page-only", scopes=("pages_messaging",))
        items = post_batch(
            base,
            [
                {
                    "method": "GET",
                    "relative_url": f"{PRIMARY}?access_token=page-only",
                },  # the item's own token
                {"method": "GET", "relative_url": PRIMARY},  # the batch's token
                {"method": "GET", "relative_url": f"{PRIMARY}?access_token=unknown"},
            ],
        ).json()
        assert [i["code"] for i in items] == [400, 200, 400]
        assert [json.loads(items[i]["body"])["error"]["code"] for i in (0, 2)] == [200, 190]
        assert app_calls(state) == 2  # refused tokens are never charged; the batch itself is not a call


def test_faults_and_throttling_hit_single_items():
    with sandbox() as (state, base):
        httpx.post(
            f"{base}/_sandbox/faults",
            json={
                "faults": [
                    {
                        "kind": "graph",
                        "path_contains": "/campaigns",
                        "status": 400,
                        "code": 17,
                        "subcode": 2446079,
                    },
                    {"kind": "drop", "path_contains": SECOND},
                ]
            },
        ).raise_for_status()
        items = post_batch(
            base,
            [
                {"method": "GET", "relative_url": f"{PRIMARY}/campaigns"},
                {"method": "GET", "relative_url": SECOND},
                {"method": "GET", "relative_url": PRIMARY},
            ],
        ).json()
        assert items[0]["code"] == 400 and json.loads(items[0]["body"])["error"]["code"] == 17
        assert items[1] is None  # not run: Meta's null
        assert items[2]["code"] == 200
        state.limits.ad_account_calls = 2
        state.buckets.clear()
        codes = [i["code"] for i in post_batch(base, [{"method": "GET", "relative_url": PRIMARY}] * 3).json()]
        assert codes == [200, 200, 400]  # the third call of the batch is over the account's limit


def test_client_batch_chunks_by_50_and_keeps_order():
    with sandbox() as (state, base), client(base) as c:
        calls = [BatchCall("GET", PRIMARY if i % 2 else SECOND, {"fields": "id"}) for i in range(120)]
        results = c.batch(calls)
        assert [r.body["id"] for r in results] == [c.path for c in calls]
        assert all(r.ok and r.status == 200 for r in results)
        assert (c.stats.calls, c.stats.batches, c.stats.graph_requests) == (3, 3, 120)
        assert state.counters["batch.requests"] == 3


def test_client_batch_types_item_errors_and_reads_item_usage():
    with sandbox() as (state, base), client(base) as c:
        state.limits.ad_account_calls = 4
        results = c.batch(
            [
                BatchCall("GET", PRIMARY),
                BatchCall("GET", "no_such_node"),
                BatchCall("GET", f"{PRIMARY}/campaigns", {"fields": "id,not_a_field"}),
                BatchCall("GET", PRIMARY),
            ]
        )
        assert [r.ok for r in results] == [True, False, False, True]
        assert results[1].error.kind is ErrorKind.INVALID and results[1].error.subcode == 33
        assert results[2].error.code == 100 and "not_a_field" in results[2].error.message
        assert results[2].error.fbtrace_id  # the item's own trace id
        assert c.stats.calls == 1  # permanent item errors are not sent again
        # 3 of 4 allowed calls on the account: the usage came from the items' x-ad-account-usage
        assert c.stats.last_usage.percent >= 75


def test_client_batch_sends_transient_failures_again():
    with sandbox() as (state, base), client(base) as c:
        httpx.post(
            f"{base}/_sandbox/faults",
            json={
                "faults": [
                    {"kind": "status", "path_contains": SECOND, "times": 2},
                    {"kind": "drop", "path_contains": "/campaigns"},
                ]
            },
        ).raise_for_status()
        results = c.batch(
            [BatchCall("GET", PRIMARY), BatchCall("GET", SECOND), BatchCall("GET", f"{PRIMARY}/campaigns")]
        )
        assert all(r.ok for r in results) and results[1].body["id"] == SECOND
        # first batch: 3 items; second: the 500 and the null; third: the second 500
        assert (c.stats.calls, c.stats.graph_requests) == (3, 6)
        assert state.counters["batch.items"] == 6


def test_client_batch_gives_up_after_max_attempts_and_without_retry():
    with sandbox() as (_state, base):
        httpx.post(
            f"{base}/_sandbox/faults",
            json={"faults": [{"kind": "status", "path_contains": SECOND, "times": 99}]},
        ).raise_for_status()
        with GraphClient(f"{base}/v24.0", TOKEN, retry=FAST_RETRY, seed=1) as c:
            (once,) = c.batch([BatchCall("GET", SECOND)], retry=False)
            assert once.error.kind is ErrorKind.TRANSIENT and c.stats.calls == 1
            (last,) = c.batch([BatchCall("GET", SECOND)])
            assert last.error.retryable and c.stats.calls == 1 + FAST_RETRY.max_attempts
        with GraphClient(f"{base}/v24.0", "expired-token") as c, pytest.raises(GraphAPIError) as info:
            c.batch([BatchCall("GET", PRIMARY)])
        assert info.value.kind is ErrorKind.AUTH


def test_batch_call_encodes_get_query_and_post_body():
    get = BatchCall("GET", "/act_1/insights", {"limit": 5, "after": "a b", "flag": True}).item()
    assert get == {"method": "GET", "relative_url": "act_1/insights?limit=5&after=a+b&flag=true"}
    post = BatchCall("POST", "act_1/insights", {"time_range": {"since": "2026-10-01"}}).item()
    assert post["relative_url"] == "act_1/insights" and post["body"].startswith("time_range=%7B%22since")


def test_async_client_batch():
    async def run():
        with sandbox() as (_state, base):
            async with AsyncGraphClient(f"{base}/v24.0", TOKEN, retry=FAST_RETRY) as c:
                results = await c.batch([BatchCall("GET", PRIMARY), BatchCall("GET", "nope")])
                return results, c.stats.calls

    results, calls = asyncio.run(run())
    assert results[0].body["id"] == PRIMARY and results[1].error.code == 100 and calls == 1
