"""Inbox retention: ``meta_webhook_event`` is partitioned by received month (``sql/007``), and a month past
the retention age goes as a whole partition (``DROP TABLE``: no mass DELETE, no vacuum, no bloat) once
every event in it is finished — ``done``, ``ignored`` or ``discarded``. A month holding a ``failed`` (or
still ``pending``) event stays, whole, until an operator replays (``replay-webhooks``) or discards
(``discard-webhooks``) it.

Each run also creates the months ahead (so the default partition stays empty), moves whatever the default
partition caught into its month, and forgets body hashes older than the dedupe window.

Dropping a partition takes an exclusive lock on the inbox for an instant; it waits for that lock at most
``LOCK_TIMEOUT`` (the intake queues behind a waiting DDL), and a month it could not lock is tried again on
the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

MONTHS_AHEAD = 2
LOCK_TIMEOUT = "1s"
DIGEST_BATCH = 50_000

CREATE_AHEAD = """
SELECT create_webhook_event_partition(m::date) AS created
FROM generate_series(date_trunc('month', now() AT TIME ZONE 'UTC'),
                     date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => %(ahead)s),
                     interval '1 month') AS m
"""
STRAYS = """
SELECT DISTINCT date_trunc('month', received_at AT TIME ZONE 'UTC')::date AS month FROM meta_webhook_event_default
"""
CREATE_MONTH = "SELECT create_webhook_event_partition(%(month)s) AS created"
EXPIRED = """
SELECT partition, from_time, to_time FROM meta_webhook_event_partitions
WHERE to_time IS NOT NULL AND to_time <= %(cutoff)s ORDER BY from_time
"""
# What keeps a month: read through the partial indexes on failed and pending events.
UNFINISHED = """
SELECT count(*) FILTER (WHERE status = 'failed') AS failed, count(*) FILTER (WHERE status = 'pending') AS pending
FROM {partition} WHERE status IN ('failed', 'pending')
"""
DELETE_DIGESTS = """
WITH old AS (SELECT ctid FROM meta_webhook_event_digest WHERE received_at < %(cutoff)s LIMIT %(batch)s)
DELETE FROM meta_webhook_event_digest d USING old WHERE d.ctid = old.ctid
"""


@dataclass
class RetentionReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)    # partition → why
    digests_deleted: int = 0

    def as_metadata(self) -> dict[str, object]:
        return {"partitions_created": self.created, "partitions_dropped": self.dropped,
                "partitions_kept": self.kept, "digests_deleted": self.digests_deleted}


def apply_retention(conn: psycopg.Connection, now: datetime, *, retention_days: int,
                    dedupe_days: int) -> RetentionReport:
    """One retention pass on an autocommit connection (each step is its own transaction)."""
    report = RetentionReport()
    strays = [r["month"] for r in conn.execute(STRAYS).fetchall()]
    for month in strays:
        report.created += [r["created"] for r in conn.execute(CREATE_MONTH, {"month": month}) if r["created"]]
    report.created += [r["created"] for r in conn.execute(CREATE_AHEAD, {"ahead": MONTHS_AHEAD}) if r["created"]]
    for part in conn.execute(EXPIRED, {"cutoff": now - timedelta(days=retention_days)}).fetchall():
        name = part["partition"]
        why = _drop_if_finished(conn, name)
        if why is None:
            report.dropped.append(name)
        else:
            report.kept[name] = why
    cutoff = now - timedelta(days=dedupe_days)
    while (deleted := conn.execute(DELETE_DIGESTS, {"cutoff": cutoff, "batch": DIGEST_BATCH}).rowcount):
        report.digests_deleted += deleted
        if deleted < DIGEST_BATCH:
            break
    return report


def _drop_if_finished(conn: psycopg.Connection, partition: str) -> str | None:
    """Drop ``partition`` if every event in it is finished; else say why it stays. Checked again under the
    lock, so an event re-queued meanwhile keeps its month."""
    table = sql.Identifier(partition)
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_TIMEOUT,))
            # The inbox first, then the month (DROP would take it): the order every reader takes them in.
            conn.execute("LOCK TABLE ONLY meta_webhook_event IN ACCESS EXCLUSIVE MODE")
            left = conn.execute(sql.SQL(UNFINISHED).format(partition=table)).fetchone()
            if left["failed"] or left["pending"]:
                return (f"{left['failed']} failed and {left['pending']} pending events: replay or discard the "
                        "failed ones (everreach-data replay-webhooks / discard-webhooks)")
            conn.execute(sql.SQL("DROP TABLE {}").format(table))
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
        return f"busy (could not lock the inbox within {LOCK_TIMEOUT}); tried again on the next run"
    return None
