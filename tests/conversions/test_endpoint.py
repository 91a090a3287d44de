"""POST /api/v1/integrations/meta/conversions over real HTTP, against the sandbox's Conversions API."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest

from everreach_data.receiver.app import create_app
from everreach_data.serving import free_port
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from everreach_sandbox.server import build_app, build_state
from tests import tokens
from tests.servers import serve

PATH = "/api/v1/integrations/meta/conversions"
PURCHASE = {
    "event_name": "Purchase", "event_source_url": "https://your.site/thank-you", "action_source": "website",
    "email": "User@Example.com ", "phone": "+1 (217) 799-6721", "client_ip_address": "203.0.113.7",
    "client_user_agent": "Mozilla/5.0 (X11)", "fbp": "fb.1.1596403881668.1116446470", "value": 29.99,
    "currency": "usd", "content_ids": ["product_123"], "content_type": "product", "test_event_code": "TEST12345",
}


@pytest.fixture
def sandbox() -> Iterator[str]:
    with serve(build_app(build_state())) as base:
        yield base


@pytest.fixture
def receiver(settings, db_url, sandbox) -> Iterator[str]:
    app = create_app(settings.model_copy(update={"META_GRAPH_URL": sandbox}), db_url)
    with serve(app) as base:
        yield base


def post(base: str, body, *, token: str | None = "default", **kwargs) -> httpx.Response:
    if token == "default":
        token = tokens.token("analyst", sub="operator-1")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if isinstance(body, bytes):
        return httpx.post(base + PATH, content=body, headers={**headers, "content-type": "application/json"},
                          **kwargs)
    return httpx.post(base + PATH, json=body, headers=headers, **kwargs)


def test_event_is_hashed_stored_sent_and_logged(receiver, sandbox, db):
    response = post(receiver, {**PURCHASE, "event_id": "order-1001"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and body["events_received"] == 1 and body["test_mode"] is True
    assert body["pixel_id"] == SANDBOX_DEFAULTS["META_PIXEL_ID"] and body["fbtrace_id"]

    sent = httpx.get(f"{sandbox}/_sandbox/capi/events").json()
    assert sent["batches"][0]["test_event_code"] == "TEST12345"
    [event] = sent["events"]
    assert event["event_id"] == "order-1001"
    assert event["user_data"]["em"] == hashlib.sha256(b"user@example.com").hexdigest()
    assert event["user_data"]["ph"] == hashlib.sha256(b"12177996721").hexdigest()
    assert event["user_data"]["client_ip_address"] == "203.0.113.7"  # Meta wants IP and UA unhashed
    assert event["custom_data"] == {"value": 29.99, "currency": "USD", "content_ids": ["product_123"],
                                    "num_items": 1, "content_type": "product"}

    row = db.execute("SELECT status, user_data, fbtrace_id, value FROM meta_conversion_event").fetchone()
    assert row["status"] == "sent" and row["fbtrace_id"] == body["fbtrace_id"] and float(row["value"]) == 29.99
    stored = str(row["user_data"])
    assert "example.com" not in stored and "2177996721" not in stored and "203.0.113.7" not in stored
    logged = db.execute("SELECT properties FROM user_event WHERE event_type = 'meta_conversion'").fetchone()
    assert logged["properties"]["event_id"] == "order-1001"


def test_same_event_id_is_sent_once(receiver, sandbox, db):
    first = post(receiver, {**PURCHASE, "event_id": "order-7"})
    again = post(receiver, {**PURCHASE, "event_id": "order-7"})
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["status"] == "sent"
    assert len(httpx.get(f"{sandbox}/_sandbox/capi/events").json()["events"]) == 1
    assert db.execute("SELECT count(*) AS n FROM meta_conversion_event").fetchone()["n"] == 1


@pytest.mark.parametrize(("change", "field"), [
    ({"email": "not-an-email"}, "email"),
    ({"event_time": int(time.time()) - 8 * 86400}, "event_time"),
    ({"currency": "dollars"}, "currency"),
    ({"action_source": "fax"}, "action_source"),
    ({"event_source_url": None}, "event_source_url"),
    ({"value": "lots"}, "value"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_input_is_a_422_naming_the_field_and_nothing_is_sent(receiver, sandbox, db, change, field):
    response = post(receiver, {**PURCHASE, **change})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert httpx.get(f"{sandbox}/_sandbox/capi/events").json()["events"] == []
    assert db.execute("SELECT count(*) AS n FROM meta_conversion_event").fetchone()["n"] == 0


def test_malformed_json_and_missing_token(receiver):
    assert post(receiver, b'{"event_name": ').status_code == 400
    assert post(receiver, PURCHASE, token=None).status_code == 401


def test_meta_unreachable_keeps_the_event_pending(settings, db_url, db):
    dead = f"http://127.0.0.1:{free_port()}"
    with serve(create_app(settings.model_copy(update={"META_GRAPH_URL": dead}), db_url)) as base:
        response = post(base, {**PURCHASE, "event_id": "order-9"})
    assert response.status_code == 202 and response.json()["status"] == "pending"
    assert db.execute("SELECT status FROM meta_conversion_event").fetchone()["status"] == "pending"


def test_a_purchase_without_currency_or_value_is_refused_before_anything_is_stored(receiver, db):
    for missing in ("currency", "value"):
        response = post(receiver, {**PURCHASE, missing: None, "event_id": f"order-no-{missing}"})
        assert response.status_code == 422 and response.json()["error"]["field"] == missing
    assert db.execute("SELECT count(*) AS n FROM meta_conversion_event").fetchone()["n"] == 0


def test_meta_rejection_is_recorded_and_explained(receiver, sandbox, db):
    httpx.post(f"{sandbox}/_sandbox/faults", json={"faults": [  # a rule of Meta's we do not check ourselves
        {"kind": "graph", "path_contains": "/events", "status": 400, "code": 100, "subcode": 2804048,
         "message": "Invalid parameter"}]}).raise_for_status()
    response = post(receiver, {**PURCHASE, "event_id": "order-11"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"].startswith("Meta rejected the event") and error["meta_code"] == 100
    row = db.execute("SELECT status, error_message FROM meta_conversion_event").fetchone()
    assert row["status"] == "failed" and "Invalid parameter" in row["error_message"]
