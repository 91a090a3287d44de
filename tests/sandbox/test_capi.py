"""The Conversions API surface over real HTTP: Meta's batch rules, both body encodings, test_event_code."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from everreach_sandbox.defaults import SANDBOX_DEFAULTS as D
from everreach_sandbox.server import build_app
from tests.servers import serve

PIXEL = D["META_PIXEL_ID"]
TOKEN = D["META_CONVERSIONS_API_TOKEN"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def website_event(**overrides) -> dict:
    """Meta's documented example server event (Conversions API "Using the API"), hashed as Meta asks."""
    event = {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 60,
        "action_source": "website",
        "event_id": "order-1234",
        "event_source_url": "https://www.example.com/thank-you",
        "user_data": {
            "em": [sha("joe@eg.com")],
            "ph": [sha("12345678901")],
            "client_ip_address": "123.123.123.123",
            "client_user_agent": "$CLIENT_USER_AGENT",
            "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
            "fbp": "fb.1.1558571054389.1098115397",
        },
        "custom_data": {
            "currency": "usd",
            "value": 123.45,
            "contents": [{"id": "product123", "quantity": 1, "delivery_category": "home_delivery"}],
        },
    }
    event.update(overrides)
    return event


@pytest.fixture(scope="module")
def base() -> str:
    with serve(build_app()) as url:
        yield url


@pytest.fixture
def url(base: str) -> str:
    httpx.request("DELETE", f"{base}/_sandbox/capi/events")
    return f"{base}/v24.0/{PIXEL}/events"


def received(base_url: str) -> dict:
    return httpx.get(base_url.split("/v24.0")[0] + "/_sandbox/capi/events").json()


def rejected(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    err = response.json()["error"]
    assert err["code"] == 100 and err["type"] == "OAuthException" and err["fbtrace_id"]
    return err


def test_metas_example_event_accepted_with_test_event_code(url: str) -> None:
    r = httpx.post(
        url, params={"access_token": TOKEN}, json={"data": [website_event()], "test_event_code": "TEST12345"}
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"events_received", "messages", "fbtrace_id"}
    assert body["events_received"] == 1 and body["messages"] == []
    got = received(url)
    assert got["batches"][0]["test_event_code"] == "TEST12345"
    assert got["batches"][0]["fbtrace_id"] == body["fbtrace_id"]
    assert got["events"][0]["event_id"] == "order-1234"


def test_sdk_form_encoding_with_json_string_events(url: str) -> None:
    events = [json.dumps(website_event(event_id=f"e{i}")) for i in range(3)]
    r = httpx.post(url, data={"access_token": TOKEN, "data": json.dumps(events)})
    assert r.status_code == 200 and r.json()["events_received"] == 3
    assert [e["event_id"] for e in received(url)["events"]] == ["e0", "e1", "e2"]


def test_one_invalid_event_rejects_the_whole_batch(url: str) -> None:
    bad = website_event(event_id="bad")
    del bad["event_name"]
    r = httpx.post(
        url, params={"access_token": TOKEN}, json={"data": [website_event(), bad, website_event()]}
    )
    err = rejected(r)
    assert "event_name" in err["error_user_msg"] and "event 1" in err["error_user_msg"]
    assert received(url)["events"] == []


def test_event_older_than_7_days_is_2804003(url: str) -> None:
    old = website_event(event_time=int(time.time()) - 7 * 86400 - 120)
    err = rejected(httpx.post(url, params={"access_token": TOKEN}, json={"data": [website_event(), old]}))
    assert err["error_subcode"] == 2804003 and err["error_user_title"] == "Event Timestamp Too Old"
    assert "within 7 days" in err["error_user_msg"]
    store = website_event(event_time=int(time.time()) - 30 * 86400, action_source="physical_store")
    assert httpx.post(url, params={"access_token": TOKEN}, json={"data": [store]}).status_code == 200


def test_future_and_millisecond_times_rejected(url: str) -> None:
    ok_skew = website_event(event_time=int(time.time()) + 30)
    assert httpx.post(url, params={"access_token": TOKEN}, json={"data": [ok_skew]}).status_code == 200
    for when in (int(time.time()) + 600, int(time.time() * 1000)):
        err = rejected(
            httpx.post(url, params={"access_token": TOKEN}, json={"data": [website_event(event_time=when)]})
        )
        assert "future" in err["error_user_msg"]


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda e: e.pop("action_source"), "action_source"),
        (lambda e: e.pop("event_time"), "event_time"),
        (lambda e: e.pop("event_source_url"), "event_source_url"),
        (lambda e: e["user_data"].pop("client_user_agent"), "client_user_agent"),
        (lambda e: e["user_data"].update(em=["joe@eg.com"]), "user_data.em"),
        (lambda e: e["user_data"].update(ph="+1 234 567"), "user_data.ph"),
        (lambda e: e.update(action_source="chat", user_data={}), "customer information"),
        (lambda e: e.update(action_source="shop"), "action_source"),
        (lambda e: e["custom_data"].pop("currency"), "currency"),
    ],
)
def test_invalid_events(url: str, mutate, needle: str) -> None:
    event = website_event()
    mutate(event)
    err = rejected(httpx.post(url, params={"access_token": TOKEN}, json={"data": [event]}))
    assert needle in err["error_user_msg"]


def test_non_web_event_needs_only_an_identifier(url: str) -> None:
    event = {
        "event_name": "Lead",
        "event_time": int(time.time()),
        "action_source": "business_messaging",
        "messaging_channel": "whatsapp",
        "user_data": {"external_id": [sha("user-1")]},
    }
    assert httpx.post(url, params={"access_token": TOKEN}, json={"data": [event]}).status_code == 200
    ip_only = {**event, "user_data": {"client_ip_address": "1.2.3.4"}}
    assert (
        "customer information"
        in rejected(httpx.post(url, params={"access_token": TOKEN}, json={"data": [ip_only]}))[
            "error_user_msg"
        ]
    )


def test_batch_size_limit_is_1000(url: str) -> None:
    event = {
        "event_name": "Lead",
        "event_time": int(time.time()),
        "action_source": "chat",
        "user_data": {"external_id": "u"},
    }
    assert (
        httpx.post(url, params={"access_token": TOKEN}, json={"data": [event] * 1000}).json()[
            "events_received"
        ]
        == 1000
    )
    err = rejected(httpx.post(url, params={"access_token": TOKEN}, json={"data": [event] * 1001}))
    assert "1000" in err["message"]
    assert rejected(httpx.post(url, params={"access_token": TOKEN}, json={"data": []}))
    assert "data" in rejected(httpx.post(url, params={"access_token": TOKEN}, json={}))["message"]


def test_unknown_pixel_is_100_33(base: str) -> None:
    r = httpx.post(
        f"{base}/v24.0/123456/events", params={"access_token": TOKEN}, json={"data": [website_event()]}
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["code"], err["error_subcode"], err["type"]) == (100, 33, "GraphMethodException")
