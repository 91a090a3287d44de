"""``/api/webhooks/meta`` over real HTTP against real Postgres: handshake, signatures, limits, durability."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import threading
import time

import httpx
import psycopg
import pytest

from everreach_data.receiver.app import create_app
from tests.servers import serve

from . import payloads as p

URL = "/api/webhooks/meta"


@pytest.fixture
def receiver(settings, db_url):
    with serve(create_app(settings.model_copy(update={"RECEIVER_MAX_BODY_BYTES": 64 * 1024}), db_url)) as base:
        yield base


def rows(db):
    return db.execute("SELECT object, status, body_sha256, payload FROM meta_webhook_event "
                      "ORDER BY webhook_event_id").fetchall()


_client = httpx.Client(timeout=30)  # one client: building one per request costs more than the request


def post(base: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return _client.post(base + URL, content=body, headers=p.signed(body) if headers is None else headers)


def test_subscription_challenge(receiver):
    ok = httpx.get(receiver + URL, params={"hub.mode": "subscribe", "hub.challenge": "1158201444",
                                          "hub.verify_token": "everreach_meta_verify_2025"})
    assert ok.status_code == 200 and ok.text == "1158201444" and ok.headers["content-type"].startswith("text/plain")
    for params in ({"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "wrong"},
                   {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": "everreach_meta_verify_2025"},
                   {"hub.challenge": "1"}):
        denied = httpx.get(receiver + URL, params=params)
        assert denied.status_code == 403 and "1" != denied.text


def test_signed_event_is_stored_pending_then_acknowledged(receiver, db):
    body = p.raw(p.MESSENGER)
    response = post(receiver, body)
    assert response.status_code == 200
    (row,) = rows(db)
    assert (row["object"], row["status"]) == ("page", "pending")
    assert bytes(row["body_sha256"]) == hashlib.sha256(body).digest() and row["payload"] == p.MESSENGER


@pytest.mark.parametrize("headers, status", [
    ({"Content-Type": "application/json"}, 401),                                  # missing
    ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403),                          # wrong
    ({"X-Hub-Signature-256": "sha1=abc"}, 403),                                    # wrong scheme
    (p.signed(p.raw(p.MESSENGER), secret="not-the-app-secret"), 403),              # other secret
    (p.signed(json.dumps(p.MESSENGER, indent=2).encode()), 403),                   # over re-serialised JSON
])
def test_signature_cases_store_nothing(receiver, db, headers, status):
    response = post(receiver, p.raw(p.MESSENGER), headers)
    assert response.status_code == status and "X-Hub-Signature-256" in response.json()["error"]["message"]
    assert rows(db) == []


def test_signature_prefix_is_case_insensitive_hex(receiver, db):
    body = p.raw(p.WHATSAPP_TEXT)
    sig = p.signed(body)["X-Hub-Signature-256"]
    assert post(receiver, body, {"X-Hub-Signature-256": sig.upper().replace("SHA256=", "sha256=")}).status_code == 200


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b'{"object": NaN}', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"entry": []}', "object"),
    (b'{"object": "page", "entry": [{"id": "\\u0000"}]}', "cannot be stored"),
    (b'{"object": "page", "entry": [{"id": "\\ud800"}]}', "cannot be stored"),
    (b"[" * 30_000 + b"]" * 30_000, "cannot be stored"),
    (b"", "not valid JSON"),
    (b"null", "JSON object"),
    (b'{"object": ""}', "object"),
    (b'{"object": 5}', "object"),
])
def test_bad_bodies_get_400_naming_the_problem(receiver, db, body, message):
    response = post(receiver, body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert rows(db) == []


def test_oversize_bodies_get_413_declared_or_streamed(receiver, db):
    big = json.dumps({"object": "page", "entry": [], "pad": "x" * 70_000}).encode()
    assert post(receiver, big).status_code == 413

    def chunks():  # no Content-Length: the receiver must stop reading once over the cap
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    response = httpx.post(receiver + URL, content=chunks(), headers=p.signed(big), timeout=30)
    assert response.status_code == 413 and rows(db) == []


def test_byte_identical_redelivery_is_stored_once_and_still_200(receiver, db):
    body = p.raw(p.INSTAGRAM)
    assert [post(receiver, body).status_code for _ in range(3)] == [200, 200, 200]
    assert len(rows(db)) == 1
    other_bytes = json.dumps(p.INSTAGRAM).encode()  # same event, different bytes: a second row
    assert post(receiver, other_bytes).status_code == 200 and len(rows(db)) == 2


def test_unhandled_object_is_stored_ignored_with_200(receiver, db):
    body = p.raw({"object": "user", "entry": [{"id": "1", "changes": [{"field": "email"}]}]})
    assert post(receiver, body).status_code == 200
    assert [(r["object"], r["status"]) for r in rows(db)] == [("user", "ignored")]


def test_concurrent_posts_all_stored_each_acknowledged_after_commit(receiver, db):
    bodies = [p.raw({**p.WHATSAPP_TEXT, "n": i}) for i in range(150)]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda b: post(receiver, b).status_code, bodies + bodies[:50]))
    assert codes == [200] * 200
    stored = {bytes(r["body_sha256"]) for r in rows(db)}
    assert stored == {hashlib.sha256(b).digest() for b in bodies}


def test_bad_bodies_in_a_shared_commit_fail_alone(receiver, db):
    """Bodies share INSERTs under load: one Postgres refuses must cost only its own request."""
    good = [p.raw({**p.WHATSAPP_TEXT, "n": i}) for i in range(120)]
    bad = [b"{not json", b"[1]", b'{"object": "page", "x": "\\u0000"}', b'{"entry": []}'] * 10
    mixed = [b for pair in zip(good, bad + [None] * len(good), strict=False) for b in pair if b is not None]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        codes = dict(zip(mixed, pool.map(lambda b: post(receiver, b).status_code, mixed), strict=True))
    assert [codes[b] for b in good] == [200] * len(good) and {codes[b] for b in bad} == {400}
    assert {bytes(r["body_sha256"]) for r in rows(db)} == {hashlib.sha256(b).digest() for b in good}


def test_database_restart_during_intake_loses_no_acknowledged_event(settings, db_url, pg_server):
    """Meta's behaviour: retry until 200. Every body that got a 200 must be in the table afterwards."""
    acked: list[bytes] = []
    refused = {"n": 0}
    stop = threading.Event()
    with serve(create_app(settings, db_url)) as base:
        def client(worker: int) -> None:
            with httpx.Client(timeout=30) as http:
                i = 0
                while not stop.is_set():
                    body = p.raw({**p.MESSENGER, "worker": worker, "seq": i})
                    try:
                        ok = http.post(base + URL, content=body, headers=p.signed(body)).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        acked.append(body)
                        i += 1
                    else:
                        refused["n"] += 1  # retried with the same bytes, as Meta would

        workers = [threading.Thread(target=client, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        try:
            deadline = time.monotonic() + 30
            while len(acked) < 50:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            pg_server.restart()
            before = len(acked)
            while len(acked) < before + 50:
                assert time.monotonic() < deadline + 30, "intake did not recover after the restart"
                time.sleep(0.01)
        finally:
            stop.set()
            for w in workers:
                w.join()
    with psycopg.connect(db_url) as conn:
        stored = {bytes(r[0]) for r in conn.execute("SELECT body_sha256 FROM meta_webhook_event")}
    assert {hashlib.sha256(b).digest() for b in acked} <= stored
    assert len(acked) >= 100 and refused["n"] > 0  # the restart was felt, and nothing acknowledged was lost
