"""The webhook inbox (``meta_webhook_event``) as a queue: claim, finish, fail, re-queue.

A batch is ONE transaction: :func:`claim` locks pending rows with ``FOR UPDATE SKIP LOCKED`` (so
concurrent drains never see each other's rows), the caller writes what the events produce, and
:func:`finish` marks them ``done`` (or ``failed``, for payloads that cannot parse) before the commit. Each
inbox row is rewritten once. A run that dies mid-batch (SIGKILL, OOM, lost node) loses its connection, the
transaction rolls back, and its row locks vanish with it: the rows are simply pending again, and nothing
is lost or applied twice. A run that hangs inside a batch is cut off by ``idle_in_transaction_session_timeout``
(:func:`configure_session`), with the same effect.

``attempts`` counts processing attempts that ended: it goes up by one when an event is finished, by one
in a short transaction of its own (:func:`record_failure`) when a batch holding it failed, and by one when
the run processing it died (:func:`take_dead_batches`).

A rollback leaves no trace, so each batch is also recorded in ``webhook_drain_batch`` (024) while it runs:
:func:`track` commits the record on a second connection once the batch's transaction holds an advisory lock
on its key, and :func:`untrack` deletes it in that transaction. A record whose lock nobody holds is a batch
whose run died; without it, an event that kills the drain would be claimed (and kill it) for ever.

Rows left ``processing`` with an expired lease by older versions of the drain are still claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

_CLAIMABLE = """
    (status = 'pending' AND (locked_until IS NULL OR locked_until <= now()))
 OR (status = 'processing' AND locked_until < now())
"""

CLAIM = f"""
SELECT webhook_event_id, attempts, object, payload FROM meta_webhook_event
WHERE {_CLAIMABLE}
ORDER BY webhook_event_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

#: Re-claim exactly these events (after a failed batch was rolled back), if still claimable.
RECLAIM = f"""
SELECT webhook_event_id, attempts, object, payload FROM meta_webhook_event
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
WHERE webhook_event_id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'processing')
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

LOCK_BATCH = "SELECT pg_advisory_xact_lock(%(key)s)"
TRACK_BATCH = "INSERT INTO webhook_drain_batch (batch_key, event_ids) VALUES (%(key)s, %(ids)s::int8range[])"
UNTRACK_BATCH = "DELETE FROM webhook_drain_batch WHERE batch_key = %(key)s"

# Records whose key is not locked: their batch's transaction is over, and it did not commit. The recovering
# transaction holds the keys it took until it ends, so two runs never recover the same batch.
TAKE_DEAD_BATCHES = """
DELETE FROM webhook_drain_batch WHERE pg_try_advisory_xact_lock(batch_key) RETURNING event_ids
"""

DIED = "the drain run processing this event died (killed, out of memory or crashed)"

HAS_WORK = f"""
SELECT count(*) AS n, max(webhook_event_id) AS max_id FROM (
    SELECT webhook_event_id FROM meta_webhook_event WHERE {_CLAIMABLE} LIMIT %(limit)s
) q
"""


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    webhook_event_id: int
    attempts: int
    object: str
    payload: Any


def configure_session(conn: psycopg.Connection, *, lease_seconds: float) -> None:
    """Drain-session settings: a batch stuck for ``lease_seconds`` is ended by the server (its claims are
    released), and commits are asynchronous — safe because a batch's writes and its ``done`` marks are one
    transaction: a crash that loses the last commits loses both, and those events are processed again."""
    conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false), "
                 "set_config('synchronous_commit', 'off', false)", (f"{max(1, int(lease_seconds * 1000))}ms",))


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


def track(conn: psycopg.Connection, tracker: psycopg.Connection, key: int, ids: list[int]) -> None:
    """In the batch's transaction on ``conn``: lock ``key``, then record the batch on ``tracker`` (an
    autocommit connection), so the record exists only while the lock is held or after the run died."""
    conn.execute(LOCK_BATCH, {"key": key})
    tracker.execute(TRACK_BATCH, {"key": key, "ids": as_ranges(ids)})


def as_ranges(ids: list[int]) -> str:
    """``ids`` as an int8range[] literal of runs of consecutive ids: a batch's ids are mostly one run, and a
    thousand of them as a bigint[] made every record a toasted, compressed value."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return "{" + ",".join(f'"[{a},{b}]"' for a, b in runs) + "}"


def untrack(conn: psycopg.Connection, key: int) -> None:
    """Delete the batch's record: in the batch's transaction (it goes with the commit), or on the tracker
    after a failure the caller accounts for."""
    conn.execute(UNTRACK_BATCH, {"key": key})


def take_dead_batches(conn: psycopg.Connection, *, max_attempts: int) -> tuple[list[int], list[int]]:
    """Own transaction: take the records of batches whose run died and count a failed attempt for each of
    their events (:data:`DIED`). Returns (ids pending again, to retry one at a time; ids now failed)."""
    with conn.transaction():
        ids = sorted({i for row in conn.execute(TAKE_DEAD_BATCHES).fetchall()
                      for run in _get(row, 0, "event_ids") for i in range(run.lower, run.upper)})
        if not ids:
            return [], []
        statuses = _record_failures(conn, ids, DIED, max_attempts=max_attempts, backoff_seconds=0)
    return ([i for i in ids if statuses.get(i) == "pending"], [i for i in ids if statuses.get(i) == "failed"])


def record_failure(conn: psycopg.Connection, event_id: int, error: str, *, max_attempts: int,
                   backoff_seconds: float = 1.0) -> str | None:
    """Own short transaction: count a failed attempt; back to pending with backoff, or ``failed`` when out
    of attempts. Returns the new status (None if the event was finished meanwhile by someone else)."""
    with conn.transaction():
        return _record_failures(conn, [event_id], error, max_attempts=max_attempts,
                                backoff_seconds=backoff_seconds).get(event_id)


def _record_failures(conn: psycopg.Connection, ids: list[int], error: str, *, max_attempts: int,
                     backoff_seconds: float) -> dict[int, str]:
    rows = conn.execute(RECORD_FAILURE, {"ids": ids, "error": error, "max_attempts": max_attempts,
                                         "backoff": backoff_seconds}).fetchall()
    return {_get(r, 0, "webhook_event_id"): _get(r, 1, "status") for r in rows}


def requeue(conn: psycopg.Connection, *, statuses: list[str], since: datetime | None = None,
            until: datetime | None = None, handled_objects: list[str]) -> int:
    """Put stored events back to ``pending`` (replay); returns how many. A batch in flight keeps its rows
    locked, so re-queueing waits for it rather than racing it."""
    with conn.transaction():
        cur = conn.execute(REQUEUE, {"statuses": statuses, "since": since, "until": until,
                                     "handled": handled_objects})
        return cur.rowcount


def pending_work(conn: psycopg.Connection, *, limit: int = 10_000) -> tuple[int, int | None]:
    """(claimable events, capped at ``limit``; the highest claimable id) — cheap, for the sensor."""
    row = conn.execute(HAS_WORK, {"limit": limit}).fetchone()
    return _get(row, 0, "n"), _get(row, 1, "max_id")


def _events(rows: list[Any]) -> list[ClaimedEvent]:
    return [ClaimedEvent(_get(r, 0, "webhook_event_id"), _get(r, 1, "attempts"), _get(r, 2, "object"),
                         _get(r, 3, "payload")) for r in rows]


def _get(row: Any, index: int, key: str) -> Any:
    """Works with tuple rows and dict rows alike (callers use either row factory)."""
    return row[key] if isinstance(row, dict) else row[index]
