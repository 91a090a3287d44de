"""The send endpoints' contract: JWT, validation naming the field, idempotency, the status endpoint."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import jwt
import psycopg

from everreach_sandbox.defaults import SANDBOX_DEFAULTS

from .helpers import HOUR, bearer, job_status, new_user, send_messenger, send_whatsapp, user_wrote


def _expired() -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"sub": "agent-1", "iat": now - 7200, "exp": now - 3600}, SANDBOX_DEFAULTS["JWT_SECRET"],
                       algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


JWT_CASES = [
    ({}, "missing bearer token"),
    ({"Authorization": "Bearer not-a-jwt"}, "invalid token"),
    ({"Authorization": "Bearer " + jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "wrong-secret-0123456789"
                                              "abcdefghijklmnop", algorithm="HS256")}, "invalid token"),
    (None, "token expired"),
]


def test_jwt_required(receiver, db):
    """Missing, malformed, wrongly signed or expired → 401 with the reason, and nothing queued."""
    for headers, says in JWT_CASES:
        headers = _expired() if headers is None else headers
        for response in (send_messenger(receiver, {"recipient_id": "1", "text": "hi"}, headers=headers),
                         send_whatsapp(receiver, {"to": "12177996721", "message": "hi"}, headers=headers),
                         httpx.get(receiver + "/api/v1/integrations/messages/00000000-0000-0000-0000-000000000000",
                                   headers=headers)):
            assert response.status_code == 401 and says in response.json()["error"]["message"]
    assert db.execute("SELECT count(*) AS n FROM outbound_message_job").fetchone()["n"] == 0


INVALID = [
    (send_messenger, {"recipient_id": "1", "text": "hi", "quick_replies": [
        {"content_type": "text", "title": f"Q{i}", "payload": f"P{i}"} for i in range(14)]}, "quick_replies"),
    (send_messenger, {"recipient_id": "1"}, "text"),
    (send_messenger, {"platform": "telegram", "recipient_id": "1", "text": "hi"}, "platform"),
    (send_messenger, {"recipient_id": "1", "message_type": "image",
                      "attachment": {"type": "image", "url": "ftp://x"}}, "attachment.url"),
    (send_messenger, {"recipient_id": "1", "text": "x" * 2001}, "text"),
    (send_whatsapp, {"to": "12177996721", "type": "template"}, "template"),
    (send_whatsapp, {"to": "12177996721", "type": "template", "template": {"name": "hello_world"}},
     "template.language"),
    (send_whatsapp, {"to": "not a number", "message": "hi"}, "to"),
    (send_whatsapp, {"to": "12177996721", "type": "media", "media": {"link": "https://x.example/a.pdf"}},
     "media.type"),
]


def test_validation_names_the_field(receiver):
    for send, body, field in INVALID:
        response = send(receiver, body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field, body


def test_idempotency_key_returns_the_same_job(receiver, sandbox, db):
    user = new_user("whatsapp")
    user_wrote(db, sandbox, "whatsapp", user, HOUR)
    body = {"to": user, "type": "text", "message": "once"}
    headers = {**bearer(), "Idempotency-Key": "order-42-shipped"}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:   # retries racing each other
        responses = list(pool.map(lambda _: send_whatsapp(receiver, body, headers=headers), range(4)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 3
    counts = db.execute("SELECT (SELECT count(*) FROM outbound_message_job) AS jobs, (SELECT count(*) FROM "
                        "conversation_message WHERE direction = 'outbound') AS messages").fetchone()
    assert counts == {"jobs": 1, "messages": 1}
    other = send_whatsapp(receiver, {**body, "message": "different"}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"
    # The key is per caller: another user's identical key is a different job.
    mine = send_whatsapp(receiver, body, headers={**bearer("agent-2"), "Idempotency-Key": "order-42-shipped"})
    assert mine.status_code == 202 and mine.json()["job_id"] != responses[0].json()["job_id"]


def test_job_state_is_private_to_its_requester(receiver, sandbox, db):
    user = new_user("messenger")
    user_wrote(db, sandbox, "messenger", user, HOUR)
    job_id = send_messenger(receiver, {"recipient_id": user, "text": "hi"}).json()["job_id"]
    state = job_status(receiver, job_id)
    assert (state["status"], state["message_status"], state["message_id"]) == ("queued", "queued", None)
    row = db.execute("SELECT sender_user_id, payload FROM conversation_message WHERE direction = 'outbound'").fetchone()
    assert row["sender_user_id"] == "agent-1" and row["payload"]["message"]["metadata"] == job_id
    other = httpx.get(f"{receiver}/api/v1/integrations/messages/{job_id}", headers=bearer("someone-else"))
    assert other.status_code == 404
    assert httpx.get(f"{receiver}/api/v1/integrations/messages/nope", headers=bearer()).status_code == 404


def test_a_send_while_postgres_restarts_is_answered_503_and_its_retry_is_queued_once(receiver, sandbox, db,
                                                                                     db_url, pg_server):
    """The receiver's pooled connections die with a restart: the request that finds one gets a 503 in the error
    shape with Retry-After (it was a bare 500), and the client's retry with its Idempotency-Key queues one job."""
    user = new_user("whatsapp")
    user_wrote(db, sandbox, "whatsapp", user, HOUR)
    body = {"to": user, "type": "text", "message": "after the restart"}
    assert send_whatsapp(receiver, body).status_code == 202        # the pool holds live connections now
    pg_server.restart()
    headers = {**bearer(), "Idempotency-Key": "restart-1"}
    answers = []
    deadline = time.monotonic() + 30
    while not answers or answers[-1].status_code != 202:
        assert time.monotonic() < deadline, [a.status_code for a in answers]
        answers.append(send_whatsapp(receiver, body, headers=headers))
    refused = answers[:-1]
    assert refused, "the restart was not felt: no request found a closed connection"
    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5" and answer.json()["error"]["message"].startswith("the database")
    with psycopg.connect(db_url) as conn:
        jobs = conn.execute("SELECT count(*) FROM outbound_message_job WHERE idempotency_key = 'restart-1'").fetchone()
    assert jobs == (1,)
