"""The webhook inbox (``meta_webhook_event``) as a queue: claim, finish, fail, re-queue.

A batch is ONE transaction: :func:`claim` locks pending rows with ``FOR UPDATE SKIP LOCKED`` (so
concurrent drains never see each other's rows), the caller writes what the events produce, and
:func:`finish` marks them ``done`` (or ``failed``, for payloads that cannot parse) before the commit. Each
inbox row is rewritten once. A run that dies mid-batch (SIGKILL, OOM, lost node) loses its connection, the
transaction rolls back, and its row locks vanish with it: the rows are simply pending again, and nothing
is lost or applied twice. A run that hangs inside a batch is cut off by ``idle_in_transaction_session_timeout``
(:func:`configure_transaction`), with the same effect.

``attempts`` counts processing attempts that ended: it goes up by one when an event is finished, by one
in a short transaction of its own (:func:`record_failure`) when a batch holding it failed, and by one when
the run processing it died (:mod:`.batches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

_CLAIMABLE = "status = 'pending' AND (locked_until IS NULL OR locked_until <= now())"

CLAIM = f"""
SELECT webhook_event_id, attempts, object, payload, extract(epoch FROM now() - received_at)::float8 AS waited
FROM meta_webhook_event
WHERE {_CLAIMABLE}
ORDER BY webhook_event_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

#: Re-claim exactly these events (after a failed batch was rolled back), if still claimable.
RECLAIM = f"""
SELECT webhook_event_id, attempts, object, payload, extract(epoch FROM now() - received_at)::float8 AS waited
FROM meta_webhook_event
WHERE webhook_event_id = ANY(%(ids)s::bigint[]) AND ({_CLAIMABLE})
ORDER BY webhook_event_id
FOR UPDATE SKIP LOCKED
"""

FINISH = """
UPDATE meta_webhook_event e
SET status = CASE WHEN f.error IS NULL THEN 'done' ELSE 'failed' END,
    attempts = e.attempts + 1, processed_at = now(), locked_until = NULL, last_error = left(f.error, 2000)
FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS f (id, error)
WHERE e.webhook_event_id = f.id
"""

# A failed attempt for each of ``ids``: back to pending (claimable again after the backoff), or failed.
RECORD_FAILURE = """
UPDATE meta_webhook_event
SET attempts = attempts + 1,
    status = CASE WHEN attempts + 1 >= %(max_attempts)s THEN 'failed' ELSE 'pending' END,
    processed_at = CASE WHEN attempts + 1 >= %(max_attempts)s THEN now() END,
    locked_until = CASE WHEN attempts + 1 >= %(max_attempts)s THEN NULL
                        ELSE now() + make_interval(secs => %(backoff)s * (attempts + 1)) END,
    last_error = left(%(error)s, 2000)
WHERE webhook_event_id = ANY(%(ids)s::bigint[]) AND status = 'pending'
RETURNING webhook_event_id, status
"""

REQUEUE = """
UPDATE meta_webhook_event
SET status = 'pending', attempts = 0, locked_until = NULL, last_error = NULL, processed_at = NULL
WHERE status = ANY(%(statuses)s::text[])
  AND received_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND received_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (status <> 'ignored' OR object = ANY(%(handled)s::text[]))
"""

# An operator's verdict on failed events: finished without being processed (their month may then go).
DISCARD = """
UPDATE meta_webhook_event
SET status = 'discarded', processed_at = now(), locked_until = NULL,
    last_error = left('discarded by an operator: ' || coalesce(last_error, ''), 2000)
WHERE status = 'failed'
  AND received_at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND received_at < coalesce(%(until)s::timestamptz, 'infinity')
  AND (%(ids)s::bigint[] IS NULL OR webhook_event_id = ANY (%(ids)s::bigint[]))
"""

HAS_WORK = f"""
SELECT count(*) AS n, max(webhook_event_id) AS max_id FROM (
    SELECT webhook_event_id FROM meta_webhook_event WHERE {_CLAIMABLE} LIMIT %(limit)s
) q
"""


#: What arrived after ``%(after)s``: how many events, the newest id and when it was received.
ARRIVED_SINCE = """
SELECT count(*) AS events, max(webhook_event_id) AS newest_id, max(received_at) AS newest_at
FROM meta_webhook_event WHERE webhook_event_id > %(after)s
"""


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    webhook_event_id: int
    attempts: int
    object: str
    payload: Any
    waited: float = 0.0   # seconds from receipt to this claim


def configure_transaction(conn: psycopg.Connection, *, lease_seconds: float) -> None:
    """First in a batch's transaction: if it stalls for ``lease_seconds`` the server ends it (its claims are
    released), and its commit is asynchronous — safe because a batch's writes and its ``done`` marks are one
    transaction: a crash that loses the last commits loses both, and those events are processed again.
    Transaction-local (``set_config(…, true)``): behind a transaction pooler a session setting would stay on
    a server session that other clients use next, and not follow this one to its next."""
    conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true), "
                 "set_config('synchronous_commit', 'off', true)", (f"{max(1, int(lease_seconds * 1000))}ms",))


def claim(conn: psycopg.Connection, *, limit: int) -> list[ClaimedEvent]:
    """In the caller's transaction: lock and return up to ``limit`` claimable events, oldest first."""
    return _events(conn.execute(CLAIM, {"limit": limit}).fetchall())


def reclaim(conn: psycopg.Connection, ids: list[int]) -> list[ClaimedEvent]:
    """In the caller's transaction: lock those of ``ids`` that are still claimable and not locked."""
    return _events(conn.execute(RECLAIM, {"ids": ids}).fetchall())


def finish(conn: psycopg.Connection, done: list[int], failed: dict[int, str] | None = None) -> None:
    """In the caller's transaction: mark ``done`` events done and ``failed`` ones (id → error) failed."""
    failed = failed or {}
    ids = done + list(failed)
    if ids:
        conn.execute(FINISH, {"ids": ids, "errors": [None] * len(done) + list(failed.values())})


def record_failure(conn: psycopg.Connection, event_id: int, error: str, *, max_attempts: int,
                   backoff_seconds: float = 1.0) -> str | None:
    """Own short transaction: count a failed attempt; back to pending with backoff, or ``failed`` when out
    of attempts. Returns the new status (None if the event was finished meanwhile by someone else)."""
    with conn.transaction():
        return record_failures(conn, [event_id], error, max_attempts=max_attempts,
                                backoff_seconds=backoff_seconds).get(event_id)


def record_failures(conn: psycopg.Connection, ids: list[int], error: str, *, max_attempts: int,
                     backoff_seconds: float) -> dict[int, str]:
    rows = conn.execute(RECORD_FAILURE, {"ids": ids, "error": error, "max_attempts": max_attempts,
                                         "backoff": backoff_seconds}).fetchall()
    return {get(r, 0, "webhook_event_id"): get(r, 1, "status") for r in rows}


def requeue(conn: psycopg.Connection, *, statuses: list[str], since: datetime | None = None,
            until: datetime | None = None, handled_objects: list[str]) -> int:
    """Put stored events back to ``pending`` (replay); returns how many. A batch in flight keeps its rows
    locked, so re-queueing waits for it rather than racing it."""
    with conn.transaction():
        cur = conn.execute(REQUEUE, {"statuses": statuses, "since": since, "until": until,
                                     "handled": handled_objects})
        return cur.rowcount


def discard(conn: psycopg.Connection, *, since: datetime | None = None, until: datetime | None = None,
            ids: list[int] | None = None) -> int:
    """Mark failed events (received in [since, until), or just ``ids``) discarded; returns how many."""
    with conn.transaction():
        return conn.execute(DISCARD, {"since": since, "until": until, "ids": ids or None}).rowcount


def pending_work(conn: psycopg.Connection, *, limit: int = 10_000) -> tuple[int, int | None]:
    """(claimable events, capped at ``limit``; the highest claimable id) — cheap, for the sensor."""
    row = conn.execute(HAS_WORK, {"limit": limit}).fetchone()
    return get(row, 0, "n"), get(row, 1, "max_id")


def arrived_since(conn: psycopg.Connection, after: int) -> dict[str, Any]:
    """Events stored after id ``after`` (the sensor reports them as the inbox's materializations)."""
    return conn.execute(ARRIVED_SINCE, {"after": after}).fetchone()


def _events(rows: list[Any]) -> list[ClaimedEvent]:
    return [ClaimedEvent(get(r, 0, "webhook_event_id"), get(r, 1, "attempts"), get(r, 2, "object"),
                         get(r, 3, "payload"), get(r, 4, "waited")) for r in rows]


def get(row: Any, index: int, key: str) -> Any:
    """Works with tuple rows and dict rows alike (callers use either row factory)."""
    return row[key] if isinstance(row, dict) else row[index]
