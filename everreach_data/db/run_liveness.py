"""Whether a queue's Dagster runs are alive, told by their Postgres sessions.

A run whose process died (killed, out of memory, its machine gone) can stay ``STARTED`` in Dagster for good:
run monitoring cannot always reach the process that launched it. A queue sensor that counted such a run as
in flight would hold its queue until ``dagster/max_runtime`` fails the run. So each queue run names its
Postgres sessions ``<application> <run id>`` (:func:`session_name`), and a ``STARTED`` run counts only while
it is young or its sessions are open (:func:`runs_in_flight`). Run monitoring is the backstop: queue jobs carry
a ``dagster/max_runtime`` that their time budget stays well within (:func:`time_budget`).
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]

#: A run started this recently may not have connected yet.
START_GRACE_SECONDS = 120.0
#: How far a queue run's time budget stays below its ``dagster/max_runtime``: the work in flight when the
#: budget ends (a batch, sends awaiting their answer) finishes within it.
RUNTIME_MARGIN_SECONDS = 120


def time_budget(default: float, *, max_runtime_seconds: int, what: str) -> Any:
    """A config field for a queue run's time budget, refused (with a clear config error) when a run using it
    could reach ``max_runtime_seconds`` and be failed by run monitoring while healthy."""
    limit = max_runtime_seconds - RUNTIME_MARGIN_SECONDS
    return Field(default=default, gt=0, le=limit, description=(
        f"{what}; at most {limit} s, so that the run ends well within its dagster/max_runtime of "
        f"{max_runtime_seconds} s."))


def session_name(application: str, run_id: str | None) -> str:
    """``application_name`` for a run's sessions (bare ``application`` outside a run: a CLI drain, a test)."""
    return application if run_id is None else f"{application} {run_id}"


def live_runs(conn: psycopg.Connection, application: str) -> set[str]:
    """Ids of the runs with ``application`` sessions open in this database."""
    rows = conn.execute("SELECT DISTINCT split_part(application_name, ' ', 2) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name LIKE %s",
                        (f"{application} %",)).fetchall()
    return {next(iter(r.values())) if isinstance(r, dict) else r[0] for r in rows}


def runs_in_flight(instance: dg.DagsterInstance, tags: dict[str, str], live_run_ids: set[str], *,
                   now: float | None = None) -> int:
    """Runs with ``tags`` that may still take work: queued or starting, or started and either young or with
    open sessions."""
    now = time.time() if now is None else now
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT, tags=tags))
    return sum(1 for r in records
               if r.dagster_run.status != dg.DagsterRunStatus.STARTED or r.dagster_run.run_id in live_run_ids
               or now - (r.start_time or r.create_timestamp.timestamp()) < START_GRACE_SECONDS)
