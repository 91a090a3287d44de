"""Our GraphClient against the sandbox over real HTTP: what it retries, what it never retries, how it paces
on Meta's usage headers and how it pages."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from everreach_data.meta.client import AsyncGraphClient, GraphClient, RetryPolicy
from everreach_data.meta.errors import ErrorKind, GraphAPIError
from everreach_data.meta.usage import Usage
from everreach_sandbox.app import create_sandbox_app
from everreach_sandbox.core import (
    Fault,
    GraphRequest,
    Limits,
    Node,
    SandboxState,
    Surface,
    TokenInfo,
    charge_buc,
    utc_today,
)
from everreach_sandbox.defaults import SANDBOX_DEFAULTS as D
from everreach_sandbox.server import SURFACES, build_app, build_state
from tests.servers import serve

PAGE = D["MESSENGER_PAGE_ID"]
TOKEN = D["MESSENGER_PAGE_TOKEN"]
FAST = RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_max=0.01)


class Sleeps:
    """Records the client's pauses; really sleeps only a bounded slice so a sliding window can pass."""

    def __init__(self, real_cap: float = 0.0) -> None:
        self.calls: list[float] = []
        self.real_cap = real_cap

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.real_cap:
            time.sleep(min(seconds, self.real_cap))


def client(
    url: str,
    token: str = TOKEN,
    *,
    sleep: Sleeps | None = None,
    timeout: float = 5.0,
    retry: RetryPolicy = FAST,
) -> GraphClient:
    return GraphClient(f"{url}/v24.0", token, timeout=timeout, retry=retry, seed=1, sleep=sleep or Sleeps())


@pytest.mark.parametrize("kind", ["status", "drop", "timeout"])
def test_retries_5xx_drops_and_timeouts(kind: str) -> None:
    state = build_state()
    state.faults.queue.append(Fault(kind=kind, times=2, status=503, delay_seconds=30))
    with serve(build_app(state)) as url, client(url, timeout=0.5) as graph:
        body = graph.get(f"/{PAGE}", fields="id,name")
        assert body["id"] == PAGE
        assert graph.stats.calls == 3 and graph.stats.retries == 2  # two failures, then the answer
        assert state.counters[f"fault.{kind}"] == 2


def test_gives_up_after_max_attempts_with_a_typed_error() -> None:
    state = build_state()
    state.faults.queue.append(Fault(kind="status", times=10, status=500))
    with serve(build_app(state)) as url, client(url) as graph:
        with pytest.raises(GraphAPIError) as info:
            graph.get(f"/{PAGE}")
        assert info.value.kind is ErrorKind.TRANSIENT and info.value.http_status == 500
        assert state.counters["fault.status"] == FAST.max_attempts


@pytest.mark.parametrize(
    ("token", "params", "kind", "code"),
    [
        ("bad-token", {}, ErrorKind.AUTH, 190),
        (TOKEN, {"metric": "page_impressions_unique"}, ErrorKind.INVALID, 100),
    ],
)
def test_does_not_retry_190_or_100(token: str, params: dict, kind: ErrorKind, code: int) -> None:
    state = build_state()
    with serve(build_app(state)) as url, client(url, token) as graph:
        with pytest.raises(GraphAPIError) as info:
            graph.get(f"/{PAGE}/insights", **params)
        assert info.value.kind is kind and info.value.code == code and info.value.fbtrace_id
        assert state.counters["requests"] == 1


def test_expired_token_is_auth_with_subcode() -> None:
    state = build_state()
    with serve(build_app(state)) as url:
        state.tokens["expired"] = TokenInfo("expired", expires_at=time.time() - 1)
        with client(url, "expired") as graph, pytest.raises(GraphAPIError) as info:
            graph.get(f"/{PAGE}")
        assert (info.value.code, info.value.subcode, info.value.kind) == (190, 463, ErrorKind.AUTH)


def test_paginate_follows_next_and_stops_when_absent() -> None:
    state = build_state()
    with serve(build_app(state)) as url, client(url) as graph:
        since = (utc_today() - timedelta(days=60)).isoformat()
        everything = graph.get(f"/{PAGE}/posts", limit=100, since=since)
        assert "next" not in everything["paging"] and len(everything["data"]) > 25
        before = state.counters["requests"]
        posts = list(graph.paginate(f"/{PAGE}/posts", {"limit": 25, "since": since}))
        assert [p["id"] for p in posts] == [p["id"] for p in everything["data"]]
        assert state.counters["requests"] - before == -(-len(posts) // 25)  # one request per page, no extra


def test_paces_as_app_usage_rises() -> None:
    state = build_state(limits=Limits(app_calls=10, window_seconds=60))
    sleeps = Sleeps()
    with serve(build_app(state)) as url, client(url, sleep=sleeps) as graph:
        for _ in range(10):
            graph.get(f"/{PAGE}")
        assert graph.stats.last_usage.percent == 100
    # no pause until usage passes 75 %, then pauses that grow with usage (before calls 9 and 10)
    assert sleeps.calls == [FAST.pace(Usage(percent=80)), FAST.pace(Usage(percent=90))]
    assert 0 < sleeps.calls[0] < sleeps.calls[1] <= FAST.pace_max_pause


probe = Surface("probe-buc")


@probe.populator
def _populate(state: SandboxState) -> None:
    state.add(Node("biz_1", "probe_business"))


@probe.route("GET", "probe_business")
async def _business(req: GraphRequest) -> dict:
    charge_buc(req, req.node.id, "ads_management")
    return {"id": req.node.id}


def test_throttled_call_waits_metas_regain_estimate_once_then_succeeds() -> None:
    state = build_state(limits=Limits(buc_calls=2, window_seconds=0.5))
    sleeps = Sleeps(real_cap=0.6)
    no_pacing = RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_max=0.01, pace_from=100)
    with (
        serve(create_sandbox_app(state, [*SURFACES, probe])) as url,
        client(url, sleep=sleeps, retry=no_pacing) as graph,
    ):
        graph.get("/biz_1")
        graph.get("/biz_1")
        body = graph.get("/biz_1")  # throttled (80004), waits Meta's estimate, then succeeds
        assert body == {"id": "biz_1"}
        assert graph.stats.throttled == 1 and state.counters["throttled.buc.ads_management"] == 1
    assert sleeps.calls == [60.0]  # estimated_time_to_regain_access is 1 minute; waited once, not twice


def test_pacing_alone_avoids_the_throttle() -> None:
    state = build_state(limits=Limits(buc_calls=2, window_seconds=0.5))
    sleeps = Sleeps(real_cap=0.6)
    with serve(create_sandbox_app(state, [*SURFACES, probe])) as url, client(url, sleep=sleeps) as graph:
        for _ in range(3):
            graph.get("/biz_1")
        assert graph.stats.throttled == 0 and "throttled.buc.ads_management" not in state.counters
    assert sleeps.calls and sleeps.calls[0] == FAST.pace_max_pause  # at 100 % it paused before calling


def test_async_client_retries_and_does_not_retry_190() -> None:
    state = build_state()
    state.faults.queue.append(Fault(kind="drop", times=1))

    async def run(url: str) -> tuple[dict, GraphAPIError]:
        async with AsyncGraphClient(f"{url}/v24.0", TOKEN, retry=FAST, seed=1) as graph:
            ok = await graph.get(f"/{PAGE}")
        async with AsyncGraphClient(f"{url}/v24.0", "nope", retry=FAST, seed=1) as graph:
            try:
                await graph.get(f"/{PAGE}")
            except GraphAPIError as exc:
                return ok, exc
        raise AssertionError("190 was not raised")

    with serve(build_app(state)) as url:
        ok, err = asyncio.run(run(url))
    assert ok["id"] == PAGE and err.code == 190
    assert state.counters["fault.drop"] == 1 and state.counters["requests"] == 2
