"""Whether a queue's Dagster runs are alive, told by a lock each run holds in Postgres.

A run whose process died (killed, out of memory, its machine gone) can stay ``STARTED`` in Dagster for good:
run monitoring cannot always reach the process that launched it. A queue sensor that counted such a run as
in flight would hold its queue until ``dagster/max_runtime`` fails the run. So each queue run holds, for as
long as it works, an open transaction with an advisory lock on its run id (:func:`presence`); a dead run's
connection is gone and its lock with it. A ``STARTED`` run counts only while it is young or its lock is held
(:func:`runs_in_flight`). Run monitoring is the backstop: queue jobs carry a ``dagster/max_runtime`` that
their time budget stays well within (:func:`time_budget`).

A lock held by an open transaction, not a session's name or a session-level lock, because ``DATABASE_URL``
may be a transaction-mode pooler (PgBouncer, Supabase's Supavisor): there a client's server session changes
between transactions, and a session's ``application_name`` outlives the client that set it, but an open
transaction keeps its server session, and its locks end with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Container, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

from everreach_data.db.connection import POOLER_SAFE, connection_lost, reconnect_waits

log = logging.getLogger(__name__)

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]

#: How often a run's presence connection is checked, so a lost one is taken again soon after the database is
#: back (well within START_GRACE_SECONDS of its sensor's next look).
PRESENCE_CHECK_SECONDS = 2.0
#: A run started this recently may not have connected yet.
START_GRACE_SECONDS = 120.0
#: How far a queue run's time budget stays below its ``dagster/max_runtime``: the work in flight when the
#: budget ends (a batch, sends awaiting their answer) finishes within it.
RUNTIME_MARGIN_SECONDS = 120

# The two-key form of the advisory lock: (application, run). Its key space is apart from the one-key
# (bigint) locks of webhook_drain_batch. The presence transaction stays idle for the run's life, so a
# server-wide idle_in_transaction_session_timeout (the drain's own batches use one) is lifted for it alone.
HOLD_PRESENCE = ("SELECT set_config('idle_in_transaction_session_timeout', '0', true), "
                 "pg_advisory_xact_lock(%(application)s, %(run)s)")
LIVE_RUN_KEYS = """
SELECT objid::int8 AS run FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = %(application)s
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def time_budget(default: float, *, max_runtime_seconds: int, what: str) -> Any:
    """A config field for a queue run's time budget, refused (with a clear config error) when a run using it
    could reach ``max_runtime_seconds`` and be failed by run monitoring while healthy."""
    limit = max_runtime_seconds - RUNTIME_MARGIN_SECONDS
    return Field(default=default, gt=0, le=limit, description=(
        f"{what}; at most {limit} s, so that the run ends well within its dagster/max_runtime of "
        f"{max_runtime_seconds} s."))


def lock_key(name: str) -> int:
    """A name as one int4 advisory-lock key (non-negative, so pg_locks' unsigned ``classid``/``objid`` show
    it unchanged). Two run ids share a key with odds of 1 in 2³¹: such a dead run would count as alive
    until run monitoring fails it."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFF_FFFF


def session_name(application: str, run_id: str | None) -> str:
    """``application_name`` for a run's sessions (bare ``application`` outside a run: a CLI drain, a test),
    for operators reading ``pg_stat_activity``; liveness does not rely on it."""
    return application if run_id is None else f"{application} {run_id}"


def _presence_args(url: str, application: str, run_id: str) -> tuple[dict[str, Any], dict[str, int]]:
    connect = {"conninfo": url, "autocommit": True, "application_name": session_name(application, run_id),
               "connect_timeout": 10, **POOLER_SAFE}
    return connect, {"application": lock_key(application), "run": lock_key(run_id)}


def _hold(conn: psycopg.Connection, keys: dict[str, int]) -> psycopg.Connection:
    conn.execute("BEGIN")
    conn.execute(HOLD_PRESENCE, keys)
    return conn


@contextmanager
def presence(url: str, application: str, run_id: str | None) -> Iterator[None]:
    """While the block runs, ``run_id`` is seen alive by :func:`live_runs` (nothing outside a run).

    The lock is taken before the block starts (a database that cannot be reached fails the run at once), then
    watched by a thread that takes it again on a new connection if the database goes away (a restart, a
    failover) — a run that rides out a restart must not look dead to its sensor afterwards."""
    if run_id is None:
        yield
        return
    connect, keys = _presence_args(url, application, run_id)
    conn = _hold(psycopg.connect(**connect), keys)
    done = threading.Event()

    def watch() -> None:
        nonlocal conn
        waits = reconnect_waits()
        wait = PRESENCE_CHECK_SECONDS
        while not done.wait(PRESENCE_CHECK_SECONDS if not conn.closed else wait):
            try:
                if conn.closed:
                    conn = _hold(psycopg.connect(**connect), keys)
                    waits = reconnect_waits()
                else:
                    conn.execute("SELECT 1")
            except psycopg.Error as exc:
                if not connection_lost(exc):
                    log.warning("presence of %s run %s: %s", application, run_id, exc)
                with suppress(psycopg.Error):
                    conn.close()
                wait = next(waits)

    watcher = threading.Thread(target=watch, name=f"presence-{run_id}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        with suppress(psycopg.Error):
            conn.close()


@asynccontextmanager
async def presence_async(url: str, application: str, run_id: str | None) -> AsyncIterator[None]:
    """:func:`presence` for asyncio code: taken and given up on a worker thread (its watcher is a thread
    anyway), so the event loop never waits on the lock's connection."""
    with ExitStack() as stack:
        await asyncio.to_thread(stack.enter_context, presence(url, application, run_id))
        try:
            yield
        finally:
            await asyncio.to_thread(stack.close)


@dataclass(frozen=True)
class LiveRuns:
    """The runs of one application whose presence lock is held, by their lock keys."""

    keys: frozenset[int]

    @classmethod
    def of(cls, *run_ids: str) -> LiveRuns:
        return cls(frozenset(lock_key(r) for r in run_ids))

    def __contains__(self, run_id: object) -> bool:
        return isinstance(run_id, str) and lock_key(run_id) in self.keys

    def __len__(self) -> int:
        return len(self.keys)


def live_runs(conn: psycopg.Connection, application: str) -> LiveRuns:
    """The runs of ``application`` inside a :func:`presence` block on this database right now."""
    rows = conn.execute(LIVE_RUN_KEYS, {"application": lock_key(application)}).fetchall()
    return LiveRuns(frozenset(next(iter(r.values())) if isinstance(r, dict) else r[0] for r in rows))


def runs_in_flight(instance: dg.DagsterInstance, tags: dict[str, str], live_run_ids: Container[str], *,
                   now: float | None = None) -> int:
    """Runs with ``tags`` that may still take work: queued or starting, or started and either young or
    present (:func:`live_runs`)."""
    now = time.time() if now is None else now
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT, tags=tags))
    return sum(1 for r in records
               if r.dagster_run.status != dg.DagsterRunStatus.STARTED or r.dagster_run.run_id in live_run_ids
               or now - (r.start_time or r.create_timestamp.timestamp()) < START_GRACE_SECONDS)
