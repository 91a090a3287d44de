"""The webhook inbox (``meta_webhook_event``) as a queue: claim, ack, fail, re-queue.

A claim is its own short transaction: rows move to ``processing`` with a lease (``locked_until``) and
``attempts + 1``. Processing then happens in a second transaction that first re-locks the rows *fenced by
attempts* (:data:`LOCK_OWNED`), so a run whose lease expired — and whose rows another run re-claimed —
touches nothing. A run killed mid-batch (SIGKILL, OOM, lost node) rolls back its processing transaction;
its claims expire and the rows are claimed again. Nothing is lost and nothing is applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

#: Rows that are claimable now: pending (past any retry backoff) or processing with an expired lease.
#: Rows that exhausted their attempts while processing (killed every time) are failed, not re-claimed.
EXPIRE_EXHAUSTED = """
UPDATE meta_webhook_event
SET status = 'failed', locked_until = NULL, processed_at = now(),
    last_error = coalesce(last_error, 'processing did not finish (the run stopped) ' || attempts || ' times')
WHERE status = 'processing' AND locked_until < now() AND attempts >= %(max_attempts)s
"""

CLAIM = """
WITH c AS (
    SELECT webhook_event_id FROM meta_webhook_event
    WHERE (status = 'pending' AND (locked_until IS NULL OR locked_until <= now()))
       OR (status = 'processing' AND locked_until < now() AND attempts < %(max_attempts)s)
    ORDER BY webhook_event_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE meta_webhook_event e
SET status = 'processing', attempts = e.attempts + 1,
    locked_until = now() + make_interval(secs => %(lease)s)
FROM c WHERE e.webhook_event_id = c.webhook_event_id
RETURNING e.webhook_event_id, e.attempts, e.object, e.payload
"""

#: Inside the processing transaction: the claimed rows this run still owns (same attempt, not re-claimed).
LOCK_OWNED = """
SELECT webhook_event_id, attempts FROM meta_webhook_event
WHERE webhook_event_id = ANY(%(ids)s::bigint[]) AND status = 'processing'
ORDER BY webhook_event_id
FOR UPDATE
"""

ACK = """
UPDATE meta_webhook_event
SET status = 'done', processed_at = now(), locked_until = NULL, last_error = NULL
WHERE webhook_event_id = ANY(%(ids)s::bigint[])
"""

FAIL = """
UPDATE meta_webhook_event
SET status = CASE WHEN %(permanent)s OR attempts >= %(max_attempts)s THEN 'failed' ELSE 'pending' END,
    processed_at = CASE WHEN %(permanent)s OR attempts >= %(max_attempts)s THEN now() END,
    locked_until = CASE WHEN %(permanent)s OR attempts >= %(max_attempts)s THEN NULL
                        ELSE now() + make_interval(secs => %(backoff)s * attempts) END,
    last_error = left(%(error)s, 2000)
WHERE webhook_event_id = %(id)s AND attempts = %(attempts)s AND status = 'processing'
"""

REQUEUE = """
UPDATE meta_webhook_event
SET status = 'pending', attempts = 0, locked_until = NULL, last_error = NULL, processed_at = NULL
WHERE status = ANY(%(statuses)s::text[])
  AND received_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND received_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (status <> 'ignored' OR object = ANY(%(handled)s::text[]))
"""

HAS_WORK = """
SELECT count(*) AS n, max(webhook_event_id) AS max_id FROM (
    SELECT webhook_event_id FROM meta_webhook_event
    WHERE (status = 'pending' AND (locked_until IS NULL OR locked_until <= now()))
       OR (status = 'processing' AND locked_until < now())
    LIMIT %(limit)s
) q
"""


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    webhook_event_id: int
    attempts: int
    object: str
    payload: Any


def claim(conn: psycopg.Connection, *, limit: int, lease_seconds: float, max_attempts: int) -> list[ClaimedEvent]:
    """Claim up to ``limit`` events (committed before returning, so the lease is visible to others)."""
    with conn.transaction():
        conn.execute(EXPIRE_EXHAUSTED, {"max_attempts": max_attempts})
        rows = conn.execute(CLAIM, {"limit": limit, "lease": lease_seconds, "max_attempts": max_attempts}).fetchall()
    events = [ClaimedEvent(_get(r, 0, "webhook_event_id"), _get(r, 1, "attempts"), _get(r, 2, "object"),
                           _get(r, 3, "payload")) for r in rows]
    events.sort(key=lambda e: e.webhook_event_id)
    return events


def lock_owned(conn: psycopg.Connection, events: list[ClaimedEvent]) -> set[int]:
    """In the caller's transaction: lock and return the ids of ``events`` this run still owns."""
    claimed = {e.webhook_event_id: e.attempts for e in events}
    rows = conn.execute(LOCK_OWNED, {"ids": list(claimed)}).fetchall()
    return {r_id for r_id, attempts in ((_get(r, 0, "webhook_event_id"), _get(r, 1, "attempts")) for r in rows)
            if claimed[r_id] == attempts}


def ack(conn: psycopg.Connection, ids: list[int]) -> None:
    """In the caller's transaction: mark events done (commits together with what they produced)."""
    if ids:
        conn.execute(ACK, {"ids": ids})


def fail(conn: psycopg.Connection, event: ClaimedEvent, error: str, *, max_attempts: int,
         permanent: bool = False, backoff_seconds: float = 1.0) -> None:
    """Record ``error``: back to pending with backoff, or ``failed`` when permanent or out of attempts."""
    with conn.transaction():
        conn.execute(FAIL, {"id": event.webhook_event_id, "attempts": event.attempts, "error": error,
                            "max_attempts": max_attempts, "permanent": permanent, "backoff": backoff_seconds})


def requeue(conn: psycopg.Connection, *, statuses: list[str], since: datetime | None = None,
            until: datetime | None = None, handled_objects: list[str]) -> int:
    """Put stored events back to ``pending`` (replay); returns how many. Rows being processed are left alone
    unless ``processing`` is asked for explicitly."""
    with conn.transaction():
        cur = conn.execute(REQUEUE, {"statuses": statuses, "since": since, "until": until,
                                     "handled": handled_objects})
        return cur.rowcount


def pending_work(conn: psycopg.Connection, *, limit: int = 10_000) -> tuple[int, int | None]:
    """(claimable events, capped at ``limit``; the highest claimable id) — cheap, for the sensor."""
    row = conn.execute(HAS_WORK, {"limit": limit}).fetchone()
    return _get(row, 0, "n"), _get(row, 1, "max_id")


def _get(row: Any, index: int, key: str) -> Any:
    """Works with tuple rows and dict rows alike (callers use either row factory)."""
    return row[key] if isinstance(row, dict) else row[index]
