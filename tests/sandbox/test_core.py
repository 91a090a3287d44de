"""The sandbox's framework over real HTTP: tokens, Meta's error envelope, usage headers and throttling,
fault injection, /debug_token, restatement and the control routes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from everreach_sandbox.app import create_sandbox_app
from everreach_sandbox.core import (
    GraphRequest,
    Limits,
    Node,
    SandboxState,
    Surface,
    charge_ads_call,
    charge_buc,
    utc_today,
)
from everreach_sandbox.defaults import SANDBOX_DEFAULTS as D
from everreach_sandbox.server import SURFACES, app_token, build_app, build_state
from tests.servers import serve

PAGE = D["MESSENGER_PAGE_ID"]
ADS = D["FB_ADS_ACCESS_TOKEN"]

# A surface of our own that charges the framework's limits, so these tests pin core.py and not a surface.
probe = Surface("probe")


@probe.populator
def _populate(state: SandboxState) -> None:
    state.add(Node("act_777", "probe_account"))


@probe.route("GET", "probe_account", "ads")
async def _ads(req: GraphRequest) -> dict:
    charge_ads_call(req, req.node.id, use_case=str(req.param("use_case", "ads_management")))
    return {"data": []}


@probe.route("GET", "probe_account", "page")
async def _page(req: GraphRequest) -> dict:
    charge_buc(req, req.node.id, "pages")
    return {"data": []}


def probe_app(limits: Limits | None = None):
    state = build_state(limits=limits)
    return create_sandbox_app(state, [*SURFACES, probe]), state


@pytest.fixture(scope="module")
def base() -> str:
    with serve(build_app()) as url:
        yield url


def error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["fbtrace_id"] and response.headers["x-fb-trace-id"] == body["error"]["fbtrace_id"]
    return body["error"]


# ───────────────────────────── tokens ─────────────────────────────


def test_missing_token_is_104(base: str) -> None:
    r = httpx.get(f"{base}/v24.0/{PAGE}")
    assert r.status_code == 400
    err = error(r)
    assert (err["code"], err["type"]) == (104, "OAuthException")
    assert err["message"] == "An access token is required to request this resource."


def test_unknown_token_is_190_without_subcode(base: str) -> None:
    err = error(httpx.get(f"{base}/v24.0/{PAGE}", params={"access_token": "nope"}))
    assert err["code"] == 190 and "error_subcode" not in err
    assert err["message"] == "Invalid OAuth access token - Cannot parse access token"


def test_expired_token_is_190_463(base: str) -> None:
    r = httpx.post(f"{base}/_sandbox/tokens", json={"token": "old-token", "expires_in": -60})
    assert r.status_code == 200
    err = error(httpx.get(f"{base}/v24.0/{PAGE}", headers={"Authorization": "Bearer old-token"}))
    assert (err["code"], err["error_subcode"]) == (190, 463)
    assert err["message"].startswith("Error validating access token: Session has expired on")


@pytest.mark.parametrize("how", ["query", "form", "bearer", "json"])
def test_token_accepted_from_query_form_bearer_and_json(base: str, how: str) -> None:
    url = f"{base}/v24.0/{D['META_PIXEL_ID']}/events"
    event = {
        "event_name": "Lead",
        "event_time": int(time.time()),
        "action_source": "chat",
        "user_data": {"external_id": "abc"},
    }
    token = D["META_CONVERSIONS_API_TOKEN"]
    if how == "query":
        r = httpx.post(url, params={"access_token": token}, json={"data": [event]})
    elif how == "form":
        r = httpx.post(url, data={"access_token": token, "data": json.dumps([json.dumps(event)])})
    elif how == "bearer":
        r = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, json={"data": [event]})
    else:
        r = httpx.post(url, json={"access_token": token, "data": [event]})
    assert r.status_code == 200, r.text
    assert r.json()["events_received"] == 1


def test_me_resolves_to_the_page_of_a_page_token(base: str) -> None:
    r = httpx.get(f"{base}/v24.0/me", params={"access_token": D["MESSENGER_PAGE_TOKEN"], "fields": "id,name"})
    assert r.status_code == 200 and r.json()["id"] == PAGE


def test_unknown_object_and_edge_and_version(base: str) -> None:
    token = {"access_token": ADS}
    err = error(httpx.get(f"{base}/v24.0/999999999", params=token))
    assert (err["code"], err["error_subcode"], err["type"]) == (100, 33, "GraphMethodException")
    assert "Object with ID '999999999' does not exist" in err["message"]
    err = error(httpx.get(f"{base}/v24.0/{PAGE}/nonsense", params=token))
    assert err["code"] == 100 and "nonexisting field (nonsense)" in err["message"]
    assert error(httpx.get(f"{base}/latest/{PAGE}", params=token))["code"] == 2500


# ───────────────────────────── debug_token ─────────────────────────────


def test_debug_token_shape_for_valid_page_token(base: str) -> None:
    r = httpx.get(
        f"{base}/v24.0/debug_token",
        params={"input_token": D["MESSENGER_PAGE_TOKEN"], "access_token": app_token()},
    )
    assert r.status_code == 200
    data = r.json()["data"]
    assert {
        "app_id",
        "type",
        "application",
        "expires_at",
        "is_valid",
        "scopes",
        "issued_at",
        "data_access_expires_at",
    } <= set(data)
    assert data["type"] == "PAGE" and data["is_valid"] is True and data["profile_id"] == PAGE
    assert "pages_messaging" in data["scopes"] and data["expires_at"] > time.time() + 50 * 86400


def test_debug_token_never_expiring_invalid_and_expired(base: str) -> None:
    app = {"access_token": app_token()}
    data = httpx.get(f"{base}/v24.0/debug_token", params={"input_token": ADS, **app}).json()["data"]
    assert data["expires_at"] == 0 and data["type"] == "SYSTEM_USER" and "ads_read" in data["scopes"]
    data = httpx.get(f"{base}/v24.0/debug_token", params={"input_token": "garbage", **app}).json()["data"]
    assert data == {
        "error": {"code": 190, "message": "Invalid OAuth access token."},
        "is_valid": False,
        "scopes": [],
    }
    httpx.post(f"{base}/_sandbox/tokens", json={"token": "stale", "expires_in": -5, "scopes": ["ads_read"]})
    data = httpx.get(f"{base}/v24.0/debug_token", params={"input_token": "stale", **app}).json()["data"]
    assert data["is_valid"] is False and data["error"]["subcode"] == 463 and data["scopes"] == ["ads_read"]
    err = error(httpx.get(f"{base}/v24.0/debug_token", params=app))
    assert err["code"] == 100 and "input_token" in err["message"]


# ───────────────────────────── usage and throttling ─────────────────────────────


def test_app_usage_header_rises_and_code_4_past_the_limit() -> None:
    app, _ = probe_app(Limits(app_calls=4, window_seconds=60))
    with serve(app) as url:
        seen = []
        for _ in range(4):
            r = httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS})
            assert r.status_code == 200
            seen.append(json.loads(r.headers["x-app-usage"])["call_count"])
        assert seen == [25, 50, 75, 100]
        r = httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS})
        err = error(r)
        assert (err["code"], err["error_subcode"]) == (4, 1504022)
        assert err["message"] == "(#4) Application request limit reached"
        assert json.loads(r.headers["x-app-usage"])["call_count"] == 100


def test_ad_account_usage_rises_then_613() -> None:
    app, _ = probe_app(Limits(ad_account_calls=3, window_seconds=60))
    with serve(app) as url:
        pcts = []
        for _ in range(3):
            r = httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": ADS})
            assert r.status_code == 200
            usage = json.loads(r.headers["x-ad-account-usage"])
            pcts.append(usage["acc_id_util_pct"])
            assert 0 < usage["reset_time_duration"] <= 60
        assert pcts == [33, 66, 100]
        r = httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": ADS})
        err = error(r)
        assert (err["code"], err["error_subcode"]) == (613, 1487742)
        assert json.loads(r.headers["x-ad-account-usage"])["acc_id_util_pct"] == 100


def test_user_limit_is_17_2446079() -> None:
    app, _ = probe_app(Limits(user_calls=2, window_seconds=60))
    with serve(app) as url:
        for _ in range(2):
            assert httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": ADS}).status_code == 200
        err = error(httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": ADS}))
        assert (err["code"], err["error_subcode"]) == (17, 2446079)
        assert err["error_user_title"] == "Ad Account Has Too Many API Calls"
        # another token (another user) is not limited by this one's calls
        other = D["META_CONVERSIONS_API_TOKEN"]
        assert httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": other}).status_code == 200


def test_buc_ads_management_80004_with_regain_minutes_then_recovers() -> None:
    app, _ = probe_app(Limits(buc_calls=2, window_seconds=1.0))
    with serve(app) as url:
        for _ in range(2):
            r = httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": ADS})
            assert r.status_code == 200
        buc = json.loads(r.headers["x-business-use-case-usage"])["777"][0]
        assert buc["type"] == "ads_management" and buc["call_count"] == 100
        r = httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": ADS})
        err = error(r)
        assert (err["code"], err["error_subcode"]) == (80004, 2446079)
        assert "too many calls" in err["message"]
        entry = json.loads(r.headers["x-business-use-case-usage"])["777"][0]
        assert entry["estimated_time_to_regain_access"] == 1  # minutes, rounded up
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the window slides: access returns
            r = httpx.get(f"{url}/v24.0/act_777/ads", params={"access_token": ADS})
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.status_code == 200


@pytest.mark.parametrize(
    ("use_case", "path", "code"), [("ads_insights", "ads", 80000), ("pages", "page", 80001)]
)
def test_buc_codes_per_use_case(use_case: str, path: str, code: int) -> None:
    app, _ = probe_app(Limits(buc_calls=1, window_seconds=60))
    with serve(app) as url:
        params = {"access_token": ADS, "use_case": use_case}
        first = httpx.get(f"{url}/v24.0/act_777/{path}", params=params)
        assert first.status_code == 200
        if use_case == "ads_insights":
            assert json.loads(first.headers["x-fb-ads-insights-throttle"])["acc_id_util_pct"] >= 0
        assert error(httpx.get(f"{url}/v24.0/act_777/{path}", params=params))["code"] == code


def test_limits_control_route_resets_buckets() -> None:
    app, state = probe_app()
    with serve(app) as url:
        r = httpx.post(f"{url}/_sandbox/limits", json={"app_calls": 1, "window_seconds": 30})
        assert r.status_code == 200 and state.limits.app_calls == 1
        assert httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}).status_code == 200
        assert error(httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}))["code"] == 4
        assert httpx.post(f"{url}/_sandbox/limits", json={"bogus": 1}).status_code == 400
        httpx.post(f"{url}/_sandbox/limits", json={"app_calls": 100})
        assert httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}).status_code == 200


# ───────────────────────────── faults ─────────────────────────────


def test_injected_5xx_and_graph_error_then_normal() -> None:
    state = build_state()
    with serve(build_app(state)) as url:
        httpx.post(
            f"{url}/_sandbox/faults",
            json={
                "faults": [
                    {"kind": "status", "status": 503, "path_contains": "/posts", "times": 1},
                    {
                        "kind": "graph",
                        "code": 190,
                        "status": 400,
                        "message": "Injected",
                        "path_contains": "/insights",
                    },
                ]
            },
        )
        r = httpx.get(f"{url}/v24.0/{PAGE}/posts", params={"access_token": ADS})
        assert r.status_code == 503 and r.json()["error"]["is_transient"] is True
        assert httpx.get(f"{url}/v24.0/{PAGE}/posts", params={"access_token": ADS}).status_code == 200
        err = httpx.get(f"{url}/v24.0/{PAGE}/insights", params={"access_token": ADS}).json()["error"]
        assert (err["code"], err["message"]) == (190, "Injected")
        assert state.counters["fault.status"] == 1 and state.counters["fault.graph"] == 1


def test_timeout_fault_hangs_until_the_client_gives_up() -> None:
    state = build_state()
    with serve(build_app(state)) as url:
        httpx.post(f"{url}/_sandbox/faults", json={"faults": [{"kind": "timeout", "delay_seconds": 30}]})
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}, timeout=0.3)
        assert time.monotonic() - started < 5
        assert httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}).status_code == 200


def test_timeout_fault_answers_504_after_its_delay() -> None:
    with serve(build_app()) as url:
        httpx.post(f"{url}/_sandbox/faults", json={"faults": [{"kind": "timeout", "delay_seconds": 0.2}]})
        r = httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}, timeout=5)
        assert r.status_code == 504


def test_drop_fault_closes_the_connection_without_an_answer() -> None:
    state = build_state()
    with serve(build_app(state)) as url:
        httpx.post(f"{url}/_sandbox/faults", json={"faults": [{"kind": "drop", "times": 2}]})
        for _ in range(2):
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS})
        assert httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}).status_code == 200
        assert state.counters["fault.drop"] == 2


class _Receiver:
    """A webhook receiver that answers 503 to its first ``refuse`` posts, then 200; keeps what it took."""

    def __init__(self, refuse: int) -> None:
        self.refuse, self.bodies = refuse, []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.bodies.append(body)
        status = 503 if len(self.bodies) <= self.refuse else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _messenger_user(url: str) -> str:
    user = "6100000000000042"
    httpx.post(f"{url}/_sandbox/messaging/users", json={"users": [
        {"platform": "messenger", "id": user, "last_inbound_ago": 60}]}).raise_for_status()
    return user


def _send_messenger(url: str, user: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(f"{url}/v24.0/{PAGE}/messages", params={"access_token": D["MESSENGER_PAGE_TOKEN"]},
                      json={"recipient": {"id": user}, "messaging_type": "RESPONSE", "message": {"text": "hi"}},
                      timeout=timeout)


def _wait_for(what, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_webhook_the_receiver_refuses_is_retried_with_the_same_bytes() -> None:
    """Meta retries a webhook that was not answered 200 (the receiver's 503 while its database restarts): the
    sandbox did not, so an echo or status posted during a receiver's bad second was lost."""
    receiver = _Receiver(refuse=2)
    state = build_state()
    with serve(receiver) as hook, serve(build_app(state)) as url:
        state.webhook_url = hook
        assert _send_messenger(url, _messenger_user(url)).status_code == 200
        _wait_for(lambda: len(receiver.bodies) == 3)
        assert len(set(receiver.bodies)) == 1 and json.loads(receiver.bodies[0])["entry"][0]["messaging"]
        sent = httpx.get(f"{url}/_sandbox/messaging/sent").json()
        assert (sent["webhooks_posted"], sent["webhook_failures"], sent["webhooks_abandoned"]) == (1, 2, 0)


@pytest.mark.parametrize("kind", ["drop", "timeout"])
def test_a_fault_after_the_request_carries_it_out_and_loses_the_answer(kind: str) -> None:
    """Meta sent the message, and its answer never reached us: the send and its echo happen, the client sees a
    dropped connection or no answer at all."""
    receiver = _Receiver(refuse=0)
    state = build_state()
    with serve(receiver) as hook, serve(build_app(state)) as url:
        state.webhook_url = hook
        user = _messenger_user(url)
        httpx.post(f"{url}/_sandbox/faults", json={"faults": [
            {"kind": kind, "after": True, "path_contains": "/messages", "delay_seconds": 30}]}).raise_for_status()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout)):
            _send_messenger(url, user, timeout=1.0)
        assert httpx.get(f"{url}/_sandbox/messaging/sent").json()["count"] == 1
        _wait_for(lambda: len(receiver.bodies) == 1)  # the echo of what Meta sent


def test_error_rate_and_latency() -> None:
    state = build_state()
    with serve(build_app(state)) as url:
        httpx.post(f"{url}/_sandbox/faults", json={"error_rate": 1.0})
        assert httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}).status_code == 500
        httpx.post(f"{url}/_sandbox/faults", json={"clear": True, "latency_ms": 150})
        started = time.monotonic()
        assert httpx.get(f"{url}/v24.0/{PAGE}", params={"access_token": ADS}).status_code == 200
        assert time.monotonic() - started >= 0.15
        stats = httpx.get(f"{url}/_sandbox/stats").json()  # control routes never get faults
        assert stats["counters"]["fault.status"] == 1


# ───────────────────────────── restatement ─────────────────────────────


def test_restate_route_bumps_version_and_salts_only_recent_days(base: str) -> None:
    state = build_state()
    with serve(build_app(state)) as url:
        r = httpx.post(f"{url}/_sandbox/restate", json={"days": 3})
        assert r.json()["restate_version"] == 1 and state.extra["restate_version"] == 1
        today = utc_today()
        assert (
            state.restate_salt(today) == 1
            and state.restate_salt(today.fromordinal(today.toordinal() - 2)) == 1
        )
        assert state.restate_salt(today.fromordinal(today.toordinal() - 3)) == 0
        httpx.post(f"{url}/_sandbox/restate", json={"days": 1})
        assert state.restate_salt(today) == 2
        assert httpx.get(f"{url}/_sandbox/stats").json()["restate_version"] == 2
