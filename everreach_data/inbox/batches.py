"""Batches in flight, recorded so that a batch whose run died is noticed.

A rollback leaves no trace, so each batch is also recorded in ``webhook_drain_batch`` while it runs:
:func:`track` commits the record on a second connection once the batch's transaction holds an advisory lock
on its key, and :func:`untrack` deletes it in that transaction. A record whose lock nobody holds is a batch
whose run died; without it, an event that kills the drain would be claimed (and kill it) for ever.
:func:`take_dead_batches` counts an attempt for each of such a batch's events, so the drain can retry them
one at a time.
"""

from __future__ import annotations

import psycopg

from everreach_data.inbox.queue import get, record_failures

LOCK_BATCH = "SELECT pg_advisory_xact_lock(%(key)s)"
# Committed asynchronously (a record lost in a server crash belongs to a batch that crash rolled back anyway),
# set for this statement's own transaction: the tracker may be behind a transaction pooler.
TRACK_BATCH = """
INSERT INTO webhook_drain_batch (batch_key, event_ids)
SELECT %(key)s, %(ids)s::int8range[] FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
"""
UNTRACK_BATCH = "DELETE FROM webhook_drain_batch WHERE batch_key = %(key)s"

# Records whose key is not locked: their batch's transaction is over, and it did not commit. The recovering
# transaction holds the keys it took until it ends, so two runs never recover the same batch.
TAKE_DEAD_BATCHES = """
DELETE FROM webhook_drain_batch WHERE pg_try_advisory_xact_lock(batch_key) RETURNING event_ids
"""
DIED = "the drain run processing this event died (killed, out of memory or crashed)"


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
                      for run in get(row, 0, "event_ids") for i in range(run.lower, run.upper)})
        if not ids:
            return [], []
        statuses = record_failures(conn, ids, DIED, max_attempts=max_attempts, backoff_seconds=0)
    return ([i for i in ids if statuses.get(i) == "pending"], [i for i in ids if statuses.get(i) == "failed"])
