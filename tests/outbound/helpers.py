"""Helpers for the outbound tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import psycopg

from everreach_data.outbound.sender import DrainReport, SendConfig, drain
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from tests import tokens

PAGE = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
IG = SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]
PHONE = SANDBOX_DEFAULTS["WHATSAPP_PHONE_NUMBER_ID"]
CHANNEL = {"messenger": PAGE, "instagram": IG, "whatsapp": PHONE}
HOUR = 3600.0
#: Fast, deterministic sender settings for tests (the defaults are Meta's limits).
FAST = {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2, "linger_seconds": 0.0, "max_seconds": 30.0,
        "seed": 7}


def bearer(sub: str = "agent-1", ttl: int = 600) -> dict[str, str]:
    return tokens.bearer("operator", sub=sub, ttl=ttl)


def new_user(platform: str) -> str:
    digits = str(uuid.uuid4().int)
    return ("97250" + digits[:7]) if platform == "whatsapp" else digits[:16]


def user_wrote(db: psycopg.Connection, sandbox: str, platform: str, user: str, ago_seconds: float | None) -> None:
    """The user's last message ``ago_seconds`` ago, as both worlds know it: an inbound row here (the schema's
    trigger opens the windows from it) and the sandbox's record of the conversation."""
    httpx.post(f"{sandbox}/_sandbox/messaging/users", json={"users": [
        {"platform": platform, "id": user, "last_inbound_ago": ago_seconds}]}).raise_for_status()
    if ago_seconds is None:
        return
    db.execute("""
        WITH t AS (INSERT INTO conversation_thread (platform, channel_id, participant_id) VALUES (%s, %s, %s)
                   ON CONFLICT (platform, channel_id, participant_id) DO UPDATE SET updated_at = now()
                   RETURNING thread_id)
        INSERT INTO conversation_message (thread_id, platform, platform_message_id, direction, content, sent_at)
        SELECT thread_id, %s, %s, 'inbound', 'hello', now() - make_interval(secs => %s) FROM t""",
               (platform, CHANNEL[platform], user, platform, f"in.{uuid.uuid4().hex}", ago_seconds))


def send_messenger(receiver: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(receiver + "/api/v1/integrations/messenger/send", json=body,
                      headers=headers if headers is not None else bearer(), timeout=30)


def send_whatsapp(receiver: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(receiver + "/api/v1/integrations/whatsapp/send", json=body,
                      headers=headers if headers is not None else bearer(), timeout=30)


def job_status(receiver: str, job_id: str, sub: str = "agent-1") -> dict:
    response = httpx.get(f"{receiver}/api/v1/integrations/messages/{job_id}", headers=bearer(sub), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def run_drain(settings, db_url: str, **overrides) -> DrainReport:
    return asyncio.run(drain(db_url, settings.channels(), SendConfig(**{**FAST, **overrides})))


def sandbox_sent(sandbox: str, **query) -> list[dict]:
    return httpx.get(f"{sandbox}/_sandbox/messaging/sent", params=query).json()["data"]


def sandbox_settings(sandbox: str, **values) -> None:
    httpx.post(f"{sandbox}/_sandbox/messaging/settings", json=values).raise_for_status()


def faults(sandbox: str, *specs: dict) -> None:
    httpx.post(f"{sandbox}/_sandbox/faults", json={"faults": list(specs)}).raise_for_status()


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def job_row(db: psycopg.Connection, job_id: str) -> dict:
    return db.execute("SELECT * FROM outbound_message_job WHERE job_id = %s", (job_id,)).fetchone()
