"""The webhook drain: batches of inbox events processed until the queue is empty. Plain functions
(:func:`drain`, :func:`drain_url`), testable without Dagster; ``defs.py`` wraps them in the job.

One batch = one transaction: claim (``FOR UPDATE SKIP LOCKED``), parse, write (:mod:`.apply`), mark the
events done — so a killed run rolls back and leaves nothing behind but pending rows (and its batch's record:
:mod:`.batches`). A database error in a batch is retried once whole (deadlocks between concurrent runs),
then the batch is split in halves until the event at fault stands alone, so a poison event fails by itself
after a few attempts and never blocks the others. A payload that does not parse fails at once: retrying
cannot fix it. An event that kills the run itself is retried alone after the first death, and fails after a
few. The claim, parsing and the done marks come before the statements that lock threads (:mod:`.apply`).
"""

from __future__ import annotations

import gc
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from everreach_data.db.connection import POOLER_SAFE, connection_lost, first_line, reconnect_waits
from everreach_data.db.fast_json import decode_with
from everreach_data.db.run_liveness import presence
from everreach_data.inbox import batches
from everreach_data.inbox import queue as inbox
from everreach_data.inbox.apply import apply_orphans, apply_records
from everreach_data.meta.webhooks import Record, WebhookParseError, parse_webhook

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_ATTEMPTS = 3
#: ``application_name`` of the drain's Postgres sessions, and the name its runs' presence is held under.
DRAIN_APPLICATION = "everreach-webhook-drain"


@dataclass(slots=True)
class DrainStats:
    batches: int = 0
    claimed: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    messages: int = 0
    messages_by_platform: Counter[str] = field(default_factory=Counter)
    inbound_messages: int = 0  # each opens or extends its thread's policy windows
    threads_created: int = 0
    receipts: int = 0
    orphans_applied: int = 0  # message updates from receipts that raced their message (apply_orphans)
    recovered: int = 0  # events of batches whose run died: counted an attempt, then retried one at a time
    waited_seconds_total: float = 0.0  # over the events done: seconds from receipt to their batch's claim
    waited_seconds_max: float = 0.0
    seconds: float = 0.0
    idle: bool = False  # stopped because the queue stayed empty for the linger time (not the time budget)

    def add(self, other: DrainStats) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            if name == "waited_seconds_max":
                self.waited_seconds_max = max(self.waited_seconds_max, other.waited_seconds_max)
            elif name == "idle":
                self.idle = self.idle and other.idle
            elif name != "seconds":
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_metadata(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        data["messages_by_platform"] = dict(self.messages_by_platform)
        data["waited_seconds_mean"] = round(self.waited_seconds_total / self.done, 3) if self.done else 0.0
        return data


_RETRYABLE_WHOLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
#: What parsing an event produced: its records, or why it cannot parse (a permanent failure).
Parsed = dict[int, "list[Record] | str"]


@dataclass(slots=True)
class _Options:
    max_attempts: int
    backoff_seconds: float
    lease_seconds: float
    #: Autocommit connection that records batches in flight (batches.track).
    tracker: psycopg.Connection

    def connection_lost(self, conn: psycopg.Connection) -> bool:
        return any(c.closed or c.broken for c in (conn, self.tracker))


def _batch(conn: psycopg.Connection, claim: Callable[[], list[inbox.ClaimedEvent]],
           claimed: list[inbox.ClaimedEvent], parsed: Parsed, stats: DrainStats, opts: _Options) -> None:
    """One transaction: claim (row locks), record the batch, parse, write, mark done/failed, commit.

    ``claimed`` receives the events as soon as they are locked, so a caller whose batch failed knows
    which events to retry. Any exception rolls everything back, locks included. The batch's record in
    ``webhook_drain_batch`` goes with its commit, or when it fails with a database error (its caller counts
    that attempt); after anything else — a bug, a kill — it stays, and the next run treats the batch as one
    whose run died.
    """
    key = secrets.randbits(63)
    try:
        with conn.transaction():
            inbox.configure_transaction(conn, lease_seconds=opts.lease_seconds)
            events = claim()
            claimed.extend(events)
            if events:
                batches.track(conn, opts.tracker, key, [e.webhook_event_id for e in events])
            records: list[Record] = []
            done: list[int] = []
            unparsable: dict[int, str] = {}
            for event in events:
                result = parsed.get(event.webhook_event_id)
                if result is None:
                    try:
                        result = parse_webhook(event.payload).records
                    except WebhookParseError as exc:
                        result = f"unparsable payload: {exc}"
                    parsed[event.webhook_event_id] = result
                if isinstance(result, str):
                    unparsable[event.webhook_event_id] = result
                else:
                    records.extend(result)
                    done.append(event.webhook_event_id)
            inbox.finish(conn, done, unparsable)  # first: it locks no threads (module docstring)
            rows = apply_records(conn, records)
            if events:
                batches.untrack(conn, key)
    except psycopg.Error:
        if claimed and not opts.connection_lost(conn):
            batches.untrack(opts.tracker, key)
        raise
    stats.batches += 1
    stats.done += len(done)
    stats.failed += len(unparsable)
    stats.messages += len(rows.messages)
    stats.messages_by_platform.update(m["platform"] for m in rows.messages)
    stats.inbound_messages += sum(1 for m in rows.messages if m["direction"] == "inbound")
    stats.threads_created += rows.threads_created
    stats.receipts += len(rows.receipts) + len(rows.watermarks)
    waited = [e.waited for e in events if e.webhook_event_id not in unparsable]
    stats.waited_seconds_total += sum(waited)
    stats.waited_seconds_max = max(stats.waited_seconds_max, *waited, 0.0)


def _retry(conn: psycopg.Connection, ids: list[int], error: psycopg.Error, parsed: Parsed, stats: DrainStats,
           opts: _Options, *, whole_again: bool) -> None:
    """A batch holding ``ids`` failed with ``error`` and was rolled back. Retry it once whole after a
    deadlock; otherwise split it in halves until the event(s) at fault stand alone, and count a failed
    attempt for each of those — so a poison event fails by itself and never blocks the others."""
    if whole_again and isinstance(error, _RETRYABLE_WHOLE):
        log.info("batch of %d events hit %s; retrying", len(ids), type(error).__name__)
        groups = [ids]
    elif len(ids) == 1:
        status = inbox.record_failure(conn, ids[0], f"{type(error).__name__}: {str(error).strip()}",
                                      max_attempts=opts.max_attempts, backoff_seconds=opts.backoff_seconds)
        if status == "failed":
            stats.failed += 1
        elif status == "pending":
            stats.retried += 1
        return
    else:
        if whole_again:
            log.warning("batch of %d events failed (%s); isolating the event(s) at fault", len(ids), error)
        groups = [ids[: len(ids) // 2], ids[len(ids) // 2:]]
    for group in groups:
        claimed: list[inbox.ClaimedEvent] = []
        try:
            _batch(conn, lambda group=group: inbox.reclaim(conn, group), claimed, parsed, stats, opts)
        except psycopg.Error as exc:
            if opts.connection_lost(conn) or not claimed:
                raise
            _retry(conn, [e.webhook_event_id for e in claimed], exc, parsed, stats, opts, whole_again=False)


def _process(conn: psycopg.Connection, claim: Callable[[], list[inbox.ClaimedEvent]], stats: DrainStats,
             opts: _Options) -> int:
    """Process the events ``claim`` locks; returns how many it claimed (0: nothing to do). Failures are
    recorded per event, never raised (unless a connection itself is gone)."""
    claimed: list[inbox.ClaimedEvent] = []
    parsed: Parsed = {}
    try:
        _batch(conn, claim, claimed, parsed, stats, opts)
    except psycopg.Error as exc:
        if opts.connection_lost(conn) or not claimed:
            raise
        _retry(conn, [e.webhook_event_id for e in claimed], exc, parsed, stats, opts, whole_again=True)
    stats.claimed += len(claimed)
    return len(claimed)


def _recover_dead_batches(conn: psycopg.Connection, stats: DrainStats, opts: _Options) -> None:
    """Events of batches whose run died are counted an attempt, and retried one at a time: an event that
    kills the drain then dies alone, and after ``max_attempts`` deaths is marked failed, unprocessed."""
    retry, failed = batches.take_dead_batches(conn, max_attempts=opts.max_attempts)
    if not (retry or failed):
        return
    log.warning("%d events were in batches whose run died: %d failed after %d attempts, the rest are retried "
                "one at a time", len(retry) + len(failed), len(failed), opts.max_attempts)
    stats.recovered += len(retry) + len(failed)
    stats.failed += len(failed)
    for event_id in retry:
        _process(conn, lambda event_id=event_id: inbox.reclaim(conn, [event_id]), stats, opts)


def _tracker(conn: psycopg.Connection) -> psycopg.Connection:
    """A second connection like ``conn``, for batch records."""
    params = conn.info.get_parameters()
    if conn.info.password:
        params["password"] = conn.info.password
    return psycopg.connect(**params, autocommit=True, **POOLER_SAFE)


def drain(conn: psycopg.Connection, *, batch_size: int = DEFAULT_BATCH_SIZE, max_batches: int | None = None,
          time_budget_seconds: float | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
          max_attempts: int = DEFAULT_MAX_ATTEMPTS, backoff_seconds: float = 1.0,
          linger_seconds: float = 0.0, poll_seconds: float = 0.5, stats: DrainStats | None = None) -> DrainStats:
    """Process batches until the queue is empty, ``max_batches`` or the time budget is reached.

    With ``linger_seconds`` an empty queue is polled (every ``poll_seconds``) for that long before
    returning, so a steady trickle of webhooks is picked up in well under a second instead of paying a
    run start-up per sensor tick. A batch open longer than ``lease_seconds`` without activity is ended by
    the server (see :func:`inbox.configure_transaction`). Batches of runs that died are recovered first, and
    whenever the queue is empty (:func:`_recover_dead_batches`); a second connection records the batches.
    What was done is added to ``stats`` as it happens (so it survives a lost connection) and returned.

    ``conn`` must be in autocommit mode: each batch is its own transaction.
    """
    decode_with(conn)
    stats = DrainStats() if stats is None else stats
    with _tracker(conn) as tracker:
        opts = _Options(max_attempts, backoff_seconds, lease_seconds, tracker)
        _recover_dead_batches(conn, stats, opts)
        idle_since: float | None = None
        unswept = False  # batches committed since the last apply_orphans()
        started = time.perf_counter()
        while max_batches is None or stats.batches < max_batches:
            if time_budget_seconds is not None and time.perf_counter() - started > time_budget_seconds:
                break
            if not _process(conn, lambda: inbox.claim(conn, limit=batch_size), stats, opts):
                if unswept:
                    stats.orphans_applied += apply_orphans(conn)
                    unswept = False
                _recover_dead_batches(conn, stats, opts)  # another run's, say
                idle_since = idle_since if idle_since is not None else time.perf_counter()
                if time.perf_counter() - idle_since >= linger_seconds:
                    stats.idle = True
                    break
                time.sleep(poll_seconds)
                continue
            idle_since = None
            unswept = True
        if unswept:
            stats.orphans_applied += apply_orphans(conn)
    stats.seconds = time.perf_counter() - started
    return stats


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep the cyclic GC off what was allocated before the drain.

    Parsing allocates a few dozen containers per event, so the GC runs often, and every full collection
    walks all the objects Dagster and its imports hold — a quarter of the drain's Python time. Frozen objects
    are skipped (they are still freed by reference counting); collections then see only the drain's own.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def drain_url(url: str, *, workers: int = 1, run_id: str | None = None,
              time_budget_seconds: float | None = None, **kwargs: Any) -> DrainStats:
    """:func:`drain` on ``workers`` connections at once (threads; claims never overlap), stats summed.

    Postgres does most of the work, so two workers use two cores even under the GIL. The run's presence is
    held meanwhile, so the sensor can tell a live run from a dead one (:mod:`everreach_data.db.run_liveness`).
    A worker that loses the database (a restart, a failover) reconnects and carries on within the time
    budget: the batch in flight rolled back with its connection, so nothing is lost, and the run is back
    within a second of the server instead of failing and leaving the queue to wait for the sensor's next run.
    """

    def one() -> DrainStats:
        stats = DrainStats()
        started = time.perf_counter()
        waits = reconnect_waits()
        while True:
            left = None if time_budget_seconds is None else time_budget_seconds - (time.perf_counter() - started)
            try:
                with psycopg.connect(url, autocommit=True, application_name=DRAIN_APPLICATION,
                                     **POOLER_SAFE) as conn:
                    waits = reconnect_waits()
                    drain(conn, time_budget_seconds=left, stats=stats, **kwargs)
                break
            except psycopg.Error as exc:
                if not connection_lost(exc):
                    raise
                wait = next(waits)
                if left is not None and left <= wait:
                    break  # the budget is spent anyway: end as if it had run out
                log.warning("webhook drain lost the database (%s); reconnecting in %.2f s", first_line(exc), wait)
                time.sleep(wait)
        stats.seconds = time.perf_counter() - started
        return stats

    started = time.perf_counter()
    with presence(url, DRAIN_APPLICATION, run_id), _heap_frozen():
        if workers <= 1:
            results = [one()]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="webhook-drain") as pool:
                results = [f.result() for f in [pool.submit(one) for _ in range(workers)]]
    total = DrainStats(idle=True)
    for result in results:
        total.add(result)
    total.seconds = time.perf_counter() - started
    return total
