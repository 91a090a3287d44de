"""Every bad input to an ``/api/v1`` route is a 4xx in the error shape naming the field, and nothing is
stored: characters Postgres cannot store anywhere in any body or query, strings too long, bodies over the
cap, a content type that is not JSON, unknown fields, numbers that are not finite, nesting too deep. An
unexpected failure is a JSON 500 with a request id that is also in the log; a database that does not
answer is a 503."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from everreach_data.receiver.app import create_app
from everreach_data.receiver.inputs import MAX_API_BODY_BYTES, MAX_DEPTH, MAX_STRING_CHARS
from tests.servers import serve
from tests.tokens import bearer

from .conftest import row_counts

API = "/api/v1/integrations"
ADMIN = bearer("admin")
MARK = "@@here@@"

#: One body per route with a string in every field it has (nested template components and interactive
#: objects included): each string in turn is made unstorable, and the answer must name its path.
BODIES: dict[str, dict[str, Any]] = {
    f"{API}/messenger/send": {
        "platform": "messenger", "recipient_id": "1234567890", "text": "Thanks for reaching out! 👋",
        "quick_replies": [{"content_type": "text", "title": "Help", "payload": "HELP",
                           "image_url": "https://x.example/h.png"}],
        "tag": "HUMAN_AGENT", "human_agent": True},
    f"{API}/whatsapp/send": {
        "to": "12177996721", "type": "template",
        "template": {"name": "order_update", "language": {"code": "en_US"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "#42"}]},
            {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "42"}]}]}},
    f"{API}/whatsapp/send#interactive": {
        "to": "12177996721", "type": "interactive", "interactive": {
            "type": "button", "body": {"text": "Pick one"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]}}},
    f"{API}/whatsapp/send#media": {
        "to": "+1 217 799 6721", "type": "media",
        "media": {"type": "document", "link": "https://x.example/a.pdf", "caption": "Invoice", "filename": "a.pdf"}},
    f"{API}/meta/conversions": {
        "event_name": "Purchase", "event_id": "order-1", "action_source": "website",
        "event_source_url": "https://your.site/thank-you", "email": ["user@example.com", "b@example.com"],
        "phone": "+12177996721", "first_name": "Ada", "last_name": "Lovelace", "gender": "f",
        "date_of_birth": "1997-12-26", "city": "Springfield", "state": "IL", "zip": "62701", "country": "us",
        "external_id": "user-7", "client_ip_address": "203.0.113.7", "client_user_agent": "Mozilla/5.0",
        "fbp": "fb.1.1596403881668.1116446470", "fbc": "fb.1.1554763741205.AbCd", "value": 29.99,
        "currency": "USD", "content_ids": ["product_123"], "content_type": "product", "order_id": "42",
        "test_event_code": "TEST12345"},
}


def string_paths(value: Any, where: str = "") -> Iterator[str]:
    if isinstance(value, str):
        yield where
    elif isinstance(value, dict | list):
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from string_paths(item, f"{where}.{key}" if where else str(key))


def replaced(value: Any, path: list[str], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, list):
        return [replaced(v, rest, new) if str(i) == head else v for i, v in enumerate(value)]
    return {k: replaced(v, rest, new) if k == head else v for k, v in value.items()}


_client = httpx.Client(timeout=30)  # one client: a new one per request costs more than the request


def post(receiver: str, route: str, content: bytes, **headers: str) -> httpx.Response:
    return _client.post(receiver + route.split("#")[0], content=content,
                        headers={**ADMIN, "Content-Type": "application/json", **headers})


@pytest.mark.parametrize("route", list(BODIES))
def test_unstorable_characters_anywhere_are_a_422_naming_the_field(receiver, db, route):
    before = row_counts(db)
    body = BODIES[route]
    paths = list(string_paths(body))
    assert len(paths) >= 4
    for path in paths:
        original = eval_path(body, path)
        nul = json.dumps(replaced(body, path.split("."), original[:1] + "\x00" + original[1:])).encode()
        # A lone surrogate cannot even be encoded by a JSON library: it is written as JSON's own escape.
        surrogate = json.dumps(replaced(body, path.split("."), MARK)).replace(f'"{MARK}"', '"a\\ud800"').encode()
        for raw, says in ((nul, "NUL"), (surrogate, "surrogate")):
            response = post(receiver, route, raw)
            assert response.status_code == 422, (path, response.text)
            error = response.json()["error"]
            assert error["field"] == path and says in error["message"], error
    assert row_counts(db) == before


def eval_path(value: Any, path: str) -> Any:
    for step in path.split("."):
        value = value[int(step)] if isinstance(value, list) else value[step]
    return value


def test_unstorable_field_names_are_refused(receiver, db):
    body = replaced(BODIES[f"{API}/whatsapp/send"], ["template", "components", "0"],
                    {"type": "body", "param\x00eters": []})
    response = post(receiver, f"{API}/whatsapp/send", json.dumps(body).encode())
    assert response.status_code == 422 and response.json()["error"]["field"] == "template.components.0"
    assert row_counts(db)["outbound_message_job"] == 0


def test_unstorable_or_unknown_query_parameters_are_a_422_naming_them(receiver):
    for param in ("start_date", "end_date", "level", "limit", "ad_account_id"):
        response = httpx.get(f"{receiver}{API}/meta/ads-insights", params={param: "1\x00"}, headers=ADMIN)
        assert response.status_code == 422 and response.json()["error"]["field"] == param
        assert "NUL" in response.json()["error"]["message"]
    response = httpx.get(f"{receiver}{API}/meta/ads-insights", params={"levle": "ad"}, headers=ADMIN)
    assert response.status_code == 422 and response.json()["error"]["field"] == "levle"
    challenge = httpx.get(f"{receiver}/api/webhooks/meta", params={"hub.mode": "subscribe", "hub.challenge": "1\x00",
                                                                   "hub.verify_token": "everreach_meta_verify_2025"})
    assert challenge.status_code == 422 and challenge.json()["error"]["field"] == "hub.challenge"


def test_a_query_parameter_given_twice_is_a_422_naming_it(receiver):
    """``?level=ad&level=campaign`` used to answer for the last one, silently."""
    response = httpx.get(f"{receiver}{API}/meta/ads-insights", headers=ADMIN,
                         params=[("start_date", "2026-11-01"), ("level", "ad"), ("level", "campaign")])
    assert response.status_code == 422 and response.json()["error"]["field"] == "level"
    assert "more than once" in response.json()["error"]["message"]


LONG = [
    (f"{API}/messenger/send", "text", 2001, "2000"),                                   # the model's own bound
    (f"{API}/messenger/send", "quick_replies.0.title", 21, "20"),
    (f"{API}/whatsapp/send", "template.components.0.parameters.0.text", MAX_STRING_CHARS + 1,
     str(MAX_STRING_CHARS)),                                                          # passed-through objects
    (f"{API}/meta/conversions", "first_name", 257, "256"),
    (f"{API}/meta/conversions", "client_user_agent", 2049, "2048"),
]


def test_strings_over_their_length_are_a_422_naming_the_field(receiver, db):
    for route, path, length, limit in LONG:
        body = replaced(BODIES[route], path.split("."), "x" * length)
        response = post(receiver, route, json.dumps(body).encode())
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == path and limit in error["message"], error
    assert row_counts(db)["outbound_message_job"] == row_counts(db)["meta_conversion_event"] == 0


ROUTES = [f"{API}/messenger/send", f"{API}/whatsapp/send", f"{API}/meta/conversions"]


def test_bodies_over_the_cap_are_a_413_declared_or_streamed(receiver, db):
    for route in ROUTES:
        big = json.dumps({**BODIES[route], "pad": "x" * MAX_API_BODY_BYTES}).encode()
        assert post(receiver, route, big).status_code == 413

        def chunks(big=big):  # no Content-Length: refused once over the cap, whatever the rest would be
            for i in range(0, len(big), 8192):
                yield big[i:i + 8192]

        response = httpx.post(receiver + route, content=chunks(), timeout=30,
                              headers={**ADMIN, "Content-Type": "application/json"})
        assert response.status_code == 413 and str(MAX_API_BODY_BYTES) in response.json()["error"]["message"]
    assert row_counts(db)["outbound_message_job"] == row_counts(db)["meta_conversion_event"] == 0


def test_a_body_that_is_not_json_is_a_415_and_json_by_any_name_is_json(receiver, db):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        for route in ROUTES:
            response = post(receiver, route, json.dumps(BODIES[route]).encode(), **{"Content-Type": content_type})
            assert response.status_code == 415 and response.json()["error"]["field"] == "Content-Type"
    assert row_counts(db)["outbound_message_job"] == 0
    body = json.dumps(BODIES[f"{API}/whatsapp/send"]).encode()
    for content_type in ("application/json; charset=utf-8", "application/vnd.everreach+json"):
        assert post(receiver, f"{API}/whatsapp/send", body, **{"Content-Type": content_type}).status_code == 202


MALFORMED = [
    (b"", 400, None),
    (b'{"to": "12177996721", ', 400, None),
    (b'{"to": "12177996721", "message": NaN}', 400, None),
    (b'{"to": "12177996721", "type": "text", "message": "hi", "surprise": 1}', 422, "surprise"),
    (b'[{"to": "12177996721"}]', 422, "body"),
    (b'{"to": "12177996721", "type": "template", "template": {"name": "x", "language": {"code": "en"}, '
     b'"components": [{"n": 1e400}]}}', 422, "template.components.0.n"),
    (b'{"to": "1", "x": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}", 422, "x" + ".0" * (MAX_DEPTH - 1)),
    (b"[" * 30_000 + b"]" * 30_000, 422, "body"),
]


def test_malformed_bodies_are_4xx_in_the_error_shape(receiver, db):
    for raw, status, field in MALFORMED:
        response = post(receiver, f"{API}/whatsapp/send", raw)
        assert response.status_code == status, (raw[:60], response.text)
        assert response.json()["success"] is False and response.json()["error"].get("field") == field, raw[:60]
    assert row_counts(db)["outbound_message_job"] == 0


#: Values each of which once reached a route's code unchecked and failed there: now each is a 422 naming it.
EDGES = [
    (f"{API}/meta/conversions", {"event_time": "0001-01-01T00:00:00"}, "event_time"),  # no UTC offset, year 1
    (f"{API}/meta/conversions", {"event_time": 10**12}, "event_time"),
    (f"{API}/meta/conversions", {"value": 1e15}, "value"),                          # numeric(18, 4)
    (f"{API}/meta/conversions", {"user_id": "6a1c9b0e-0000-4000-8000-000000000000"}, "user_id"),  # no such user
    (f"{API}/whatsapp/send", {"type": "interactive", "interactive": {"type": "button", "action": {"buttons": 5}}},
     "interactive.action.buttons"),
]


def test_edge_values_are_a_422_naming_the_field(receiver, db):
    for route, change, field in EDGES:
        response = post(receiver, route, json.dumps({**BODIES[route], **change}).encode())
        assert response.status_code == 422, (change, response.text)
        assert response.json()["error"]["field"] == field, (change, response.text)
    assert row_counts(db)["meta_conversion_event"] == row_counts(db)["outbound_message_job"] == 0


def test_an_unexpected_error_is_a_json_500_with_a_request_id_in_the_log(receiver, db, caplog):
    db.execute("DROP TABLE ad_performance")  # a real fault the route does not expect
    with caplog.at_level(logging.ERROR, logger="everreach_data.receiver.errors"):
        response = httpx.get(f"{receiver}{API}/meta/ads-insights", headers=ADMIN)
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["request_id"] and response.headers["x-request-id"] == error["request_id"]
    logged = [r for r in caplog.records if error["request_id"] in r.getMessage()]
    assert logged and logged[0].exc_info and "ad_performance" in str(logged[0].exc_info[1])


def test_a_database_that_does_not_answer_is_a_503_to_retry(settings):
    with serve(create_app(settings, "postgresql://nobody@127.0.0.1:1/none")) as base:
        response = httpx.post(f"{base}{API}/whatsapp/send", json=BODIES[f"{API}/whatsapp/send"], headers=ADMIN,
                              timeout=30)
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "nothing was stored" in response.json()["error"]["message"]
