"""Small helpers for the webhook tests: put payloads in the inbox, drain, read state back."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg

from everreach_data.inbox.drain import DrainStats, drain


def enqueue(db: psycopg.Connection, *payloads: dict[str, Any] | bytes) -> list[int]:
    """Store bodies the way the receiver does (raw JSON, sha256 of the bytes); returns their ids."""
    ids = []
    for payload in payloads:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        row = db.execute(
            "INSERT INTO meta_webhook_event (object, payload, body_sha256) VALUES (%s, %s::jsonb, %s) "
            "RETURNING webhook_event_id",
            (json.loads(body).get("object") or "?", body.decode(), hashlib.sha256(body).digest())).fetchone()
        ids.append(row["webhook_event_id"] if isinstance(row, dict) else row[0])
    return ids


def process(db_url: str, *payloads: dict[str, Any], **kwargs: Any) -> DrainStats:
    with psycopg.connect(db_url, autocommit=True) as conn:
        if payloads:
            enqueue(conn, *payloads)
        return drain(conn, backoff_seconds=0, **kwargs)


def message(db: psycopg.Connection, mid: str) -> dict[str, Any]:
    return db.execute("SELECT * FROM conversation_message WHERE platform_message_id = %s", (mid,)).fetchone()


def snapshot(db: psycopg.Connection) -> dict[str, list]:
    """Everything processing writes, for before/after comparisons."""
    queries = {
        "threads": "SELECT thread_id, platform, channel_id, participant_id, participant_name, last_message_at, "
                   "last_inbound_at, updated_at FROM conversation_thread ORDER BY thread_id",
        "messages": "SELECT message_id, platform_message_id, direction, status, message_type, content, "
                    "delivered_at, read_at, failed_at, error_code, sent_at, updated_at "
                    "FROM conversation_message ORDER BY message_id",
        "receipts": "SELECT delivery_event_id, message_id, platform_message_id, event_type, watermark, applied "
                    "FROM message_delivery_event ORDER BY delivery_event_id",
        "windows": "SELECT thread_id, window_type, opened_at, expires_at, updated_at FROM messaging_policy_window "
                   "ORDER BY thread_id, window_type",
        "user_events": "SELECT count(*) AS n FROM user_event",
    }
    return {k: db.execute(q).fetchall() for k, q in queries.items()}


def outbound(db: psycopg.Connection, platform: str, channel: str, participant: str, *, mid: str | None,
             status: str = "sent", sent_at: str = "2024-06-10 06:13:30+00") -> str:
    """A message the outbound sender stored (thread + row), as issue 6's sender does; returns its id."""
    thread = db.execute(
        "INSERT INTO conversation_thread (platform, channel_id, participant_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (platform, channel_id, participant_id) DO UPDATE SET updated_at = now() "
        "RETURNING thread_id", (platform, channel, participant)).fetchone()["thread_id"]
    return db.execute(
        "INSERT INTO conversation_message (thread_id, platform, platform_message_id, direction, content, status, "
        "sent_at) VALUES (%s, %s, %s, 'outbound', 'hello from us', %s, %s) RETURNING message_id",
        (thread, platform, mid, status, sent_at)).fetchone()["message_id"]
