"""Drain the webhook inbox into threads, messages, receipts and (via 001's trigger) policy windows.

Plain functions first (:func:`drain`, :func:`apply_records`), testable without Dagster; the job
``process_webhook_events`` is a thin op over :func:`drain`.

One batch = one transaction: claim (``FOR UPDATE SKIP LOCKED``), set-based SQL over the batch's records
(``jsonb_to_recordset``), then the events marked done — so a killed run rolls back and leaves nothing
behind but pending rows (and its batch's record: :func:`_recover_dead_batches`). A database error in a
batch is retried once whole (deadlocks between concurrent runs), then the batch is split in halves until the
event at fault stands alone, so a poison event fails by itself after a few attempts and never blocks the
others. A payload that does not parse fails at once: retrying cannot fix it. An event that kills the run
itself is retried alone after the first death, and fails after a few.

Concurrent runs meet on ``conversation_thread`` rows (a few hundred busy threads take most of the traffic).
Everything that does not lock them — the claim, parsing, building the rows, the done marks, creating new
threads, watermarks — comes first; the message trigger (``update_thread_timestamp``) then locks the batch's
threads in ``thread_id`` order at the end of the message INSERT, so runs overlap everywhere except the
stretch from there to the commit (thread names, receipts), and never deadlock on threads.

Neither of two concurrent batches sees what the other has not committed, so a receipt can be stored while a
concurrent batch is still writing its message, and neither applies it. Whenever a run finds the queue empty
(and when it ends) it applies such receipts (:func:`apply_orphans`).
"""


import gc
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import psycopg

from everreach_data.db import webhook_inbox as inbox
from everreach_data.db.fast_json import decode_with, jsonb
from everreach_data.meta.webhooks import (
    Deletion, Delivery, Message, Read, Record, Status, WebhookParseError, parse_webhook,
)
from everreach_data.resources import PostgresResource
from everreach_data.run_liveness import session_name, time_budget

log = logging.getLogger(__name__)

QUEUE_TAG = {"everreach/queue": "webhook_events"}
DEFAULT_BATCH_SIZE = 1000
DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_ATTEMPTS = 3
#: ``application_name`` of the drain's Postgres sessions, followed by the Dagster run id.
DRAIN_APPLICATION = "everreach-webhook-drain"

# ───────────────────────────── set-based SQL ─────────────────────────────

# New threads only: existing rows are not locked here. The message trigger locks the batch's threads (in
# thread_id order) at the end of INSERT_MESSAGES; names are updated after that (UPDATE_THREAD_NAMES).
# Threads that exist are filtered out first (NOT EXISTS reads the committed row): left to ON CONFLICT, the
# unique check would wait for a concurrent run's commit whenever that run has just updated the row.
# Inserts go in key order, so two runs creating the same new threads wait on each other, never deadlock.
INSERT_THREADS = """
INSERT INTO conversation_thread (platform, channel_id, participant_id, participant_name)
SELECT DISTINCT ON (platform, channel_id, participant_id) platform, channel_id, participant_id, participant_name
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r (platform text, channel_id text, participant_id text, participant_name text)
WHERE NOT EXISTS (SELECT 1 FROM conversation_thread t
                  WHERE t.platform = r.platform AND t.channel_id = r.channel_id
                    AND t.participant_id = r.participant_id)
ORDER BY platform, channel_id, participant_id, participant_name NULLS LAST
ON CONFLICT (platform, channel_id, participant_id) DO NOTHING
"""

UPDATE_THREAD_NAMES = """
UPDATE conversation_thread t SET participant_name = r.participant_name, updated_at = now()
FROM (SELECT DISTINCT ON (platform, channel_id, participant_id) platform, channel_id, participant_id,
             participant_name
      FROM jsonb_to_recordset(%(rows)s::jsonb)
           AS x (platform text, channel_id text, participant_id text, participant_name text)
      WHERE participant_name IS NOT NULL
      ORDER BY platform, channel_id, participant_id, participant_name) r
WHERE t.platform = r.platform AND t.channel_id = r.channel_id AND t.participant_id = r.participant_id
  AND t.participant_name IS DISTINCT FROM r.participant_name
"""

# Inbound replays change nothing. An echo of a message we sent (the sender's row already carries the mid)
# updates that row (at least `sent`) instead of creating a duplicate; other echoes become outbound rows,
# already delivered or read if their thread's watermark is here (022: watermark_receipts).
INSERT_MESSAGES = """
INSERT INTO conversation_message AS m (thread_id, platform, platform_message_id, direction, message_type,
                                       content, payload, status, is_echo, reply_to_id, sent_at,
                                       delivered_at, read_at)
SELECT t.thread_id, r.platform, r.mid, r.direction, r.message_type, r.content, r.payload,
       CASE WHEN r.direction = 'inbound' THEN 'received' WHEN wm.read_at IS NOT NULL THEN 'read'
            WHEN wm.delivered_at IS NOT NULL THEN 'delivered' ELSE 'sent' END,
       r.is_echo, r.reply_to_id, r.sent_at, LEAST(wm.delivered_at, wm.read_at), wm.read_at
FROM (SELECT DISTINCT ON (platform, mid) *, to_timestamp(ts / 1000.0) AS sent_at
      FROM jsonb_to_recordset(%(rows)s::jsonb)
           AS x (platform text, channel_id text, participant_id text, mid text, direction text,
                 message_type text, content text, payload jsonb, is_echo boolean, reply_to_id text, ts bigint)
      ORDER BY platform, mid) r
JOIN conversation_thread t
  ON t.platform = r.platform AND t.channel_id = r.channel_id AND t.participant_id = r.participant_id
LEFT JOIN LATERAL (  -- OFFSET 0: kept a subquery, its WHERE spares inbound rows the probes
    SELECT * FROM watermark_receipts(t.thread_id, r.sent_at)
    WHERE r.direction = 'outbound' AND r.platform IN ('messenger', 'instagram') OFFSET 0) wm ON true
ORDER BY r.platform, r.mid
ON CONFLICT (platform, platform_message_id) DO UPDATE
    SET status = 'sent', updated_at = now()
    WHERE EXCLUDED.direction = 'outbound' AND m.direction = 'outbound'
      AND message_status_rank(m.status) < message_status_rank('sent')
"""

# Per-message receipts (WhatsApp statuses, Messenger delivery mids, Instagram read.mid, deletions), stored
# after the batch's messages: one whose message is here is linked and stored applied, and 021's trigger folds
# it into the message's status; the rest wait for their message (020's triggers).
INSERT_RECEIPTS = """
INSERT INTO message_delivery_event (platform, platform_message_id, event_type, occurred_at, error_code,
                                    error_title, payload, message_id, thread_id, applied)
SELECT r.platform, r.mid, r.event_type, to_timestamp(r.ts / 1000.0), r.error_code, r.error_title, r.payload,
       m.message_id, m.thread_id, m.message_id IS NOT NULL
FROM (SELECT DISTINCT ON (platform, mid, event_type) *
      FROM jsonb_to_recordset(%(rows)s::jsonb)
           AS x (platform text, mid text, event_type text, ts bigint, error_code integer, error_title text,
                 payload jsonb)
      ORDER BY platform, mid, event_type, ts) r
LEFT JOIN conversation_message m ON m.platform = r.platform AND m.platform_message_id = r.mid
ON CONFLICT (platform, platform_message_id, event_type) WHERE platform_message_id IS NOT NULL DO NOTHING
"""

APPLY_ORPHANS = "SELECT apply_orphaned_delivery_events() AS changed"

# Messenger watermarks: everything outbound in the thread sent at or before the watermark is delivered
# (or read). Stored once per (thread, type, watermark); a replay inserts nothing and so updates nothing.
APPLY_WATERMARKS = """
WITH r AS (
    SELECT DISTINCT ON (t.thread_id, x.event_type, x.watermark)
           t.thread_id, x.platform, x.event_type, to_timestamp(x.watermark / 1000.0) AS watermark,
           to_timestamp(x.ts / 1000.0) AS occurred_at
    FROM jsonb_to_recordset(%(rows)s::jsonb)
         AS x (platform text, channel_id text, participant_id text, event_type text, watermark bigint, ts bigint)
    JOIN conversation_thread t
      ON t.platform = x.platform AND t.channel_id = x.channel_id AND t.participant_id = x.participant_id
    ORDER BY t.thread_id, x.event_type, x.watermark, x.ts
), ins AS (
    INSERT INTO message_delivery_event (thread_id, platform, event_type, watermark, occurred_at, applied)
    SELECT thread_id, platform, event_type, watermark, occurred_at, true FROM r
    ON CONFLICT (thread_id, event_type, watermark) WHERE platform_message_id IS NULL DO NOTHING
    RETURNING thread_id, event_type, watermark, occurred_at
), w AS (
    SELECT thread_id,
           max(watermark) FILTER (WHERE event_type = 'delivered') AS delivered_wm,
           min(occurred_at) FILTER (WHERE event_type = 'delivered') AS delivered_at,
           max(watermark) FILTER (WHERE event_type = 'read') AS read_wm,
           min(occurred_at) FILTER (WHERE event_type = 'read') AS read_at
    FROM ins GROUP BY thread_id
)
UPDATE conversation_message m
SET status = CASE WHEN m.sent_at <= w.read_wm THEN 'read' ELSE 'delivered' END,
    delivered_at = LEAST(m.delivered_at, w.delivered_at,
                         CASE WHEN m.sent_at <= w.read_wm THEN w.read_at END),
    read_at = CASE WHEN m.sent_at <= w.read_wm THEN LEAST(m.read_at, w.read_at) ELSE m.read_at END,
    updated_at = now()
FROM w
WHERE m.thread_id = w.thread_id AND m.direction = 'outbound' AND m.status IN ('sent', 'delivered')
  AND (m.sent_at <= w.read_wm OR (m.status = 'sent' AND m.sent_at <= w.delivered_wm))
"""


# ───────────────────────────── records → rows ─────────────────────────────

@dataclass(slots=True)
class Rows:
    """A batch's records flattened into the row shapes the statements above read."""

    threads: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    watermarks: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: Record) -> None:
        if isinstance(record, Message):
            self.threads.append({"platform": record.platform, "channel_id": record.channel_id,
                                 "participant_id": record.participant_id,
                                 "participant_name": record.participant_name})
            self.messages.append({
                "platform": record.platform, "channel_id": record.channel_id,
                "participant_id": record.participant_id, "mid": record.mid, "direction": record.direction,
                "message_type": record.message_type, "content": record.text, "payload": record.raw,
                "is_echo": record.is_echo, "reply_to_id": record.reply_to_id, "ts": record.timestamp_ms})
        elif isinstance(record, Status):
            error = record.errors[0] if record.errors else None
            payload = {k: v for k, v in (
                ("recipient_id", record.participant_id), ("channel_id", record.channel_id),
                ("conversation", record.conversation), ("pricing", record.pricing),
                ("biz_opaque_callback_data", record.biz_opaque_callback_data),
                ("errors", [{"code": e.code, "title": e.title, "message": e.message, "details": e.details}
                            for e in record.errors] or None)) if v is not None}
            self.receipts.append({"platform": record.platform, "mid": record.mid, "event_type": record.status,
                                  "ts": record.timestamp_ms, "error_code": error.code if error else None,
                                  "error_title": (error.title or error.message) if error else None,
                                  "payload": payload})
        elif isinstance(record, Delivery):
            for mid in record.mids:
                self._receipt(record.platform, mid, "delivered", record.timestamp_ms)
            self._watermark(record, "delivered", record.watermark_ms)
        elif isinstance(record, Read):
            if record.mid is not None:
                self._receipt(record.platform, record.mid, "read", record.timestamp_ms)
            if record.watermark_ms is not None:
                self._watermark(record, "read", record.watermark_ms)
        elif isinstance(record, Deletion):
            self._receipt(record.platform, record.mid, "deleted", record.timestamp_ms)

    def _receipt(self, platform: str, mid: str, event_type: str, ts: int) -> None:
        self.receipts.append({"platform": platform, "mid": mid, "event_type": event_type, "ts": ts,
                              "error_code": None, "error_title": None, "payload": {}})

    def _watermark(self, record: Delivery | Read, event_type: str, watermark_ms: int) -> None:
        self.threads.append({"platform": record.platform, "channel_id": record.channel_id,
                             "participant_id": record.participant_id, "participant_name": None})
        self.watermarks.append({"platform": record.platform, "channel_id": record.channel_id,
                                "participant_id": record.participant_id, "event_type": event_type,
                                "watermark": watermark_ms, "ts": record.timestamp_ms})


def apply_records(conn: psycopg.Connection, records: Iterable[Record]) -> Rows:
    """Write ``records`` with a handful of set-based statements, in the caller's transaction.

    Order matters for concurrent runs (module docstring): as little as possible comes after the message
    INSERT, which locks the batch's threads. Watermarks go before it (the INSERT's trigger applies them to
    the batch's own messages); receipts after it, so that those whose message is in this batch are stored
    applied.
    """
    rows = Rows()
    for record in records:
        rows.add(record)
    named_threads = [t for t in rows.threads if t["participant_name"] is not None]
    if rows.threads:
        conn.execute(INSERT_THREADS, {"rows": jsonb(rows.threads)})
    if rows.watermarks:
        conn.execute(APPLY_WATERMARKS, {"rows": jsonb(rows.watermarks)})
    if rows.messages:
        conn.execute(INSERT_MESSAGES, {"rows": jsonb(rows.messages)})
    if named_threads:
        conn.execute(UPDATE_THREAD_NAMES, {"rows": jsonb(named_threads)})
    if rows.receipts:
        conn.execute(INSERT_RECEIPTS, {"rows": jsonb(rows.receipts)})
    return rows


def apply_orphans(conn: psycopg.Connection) -> int:
    """Apply receipts that raced their message: stored while a concurrent transaction was writing the
    message, neither saw the other. Returns the number of message updates (a message can take one from its
    own receipts and one from its thread's watermarks)."""
    try:
        row = conn.execute(APPLY_ORPHANS).fetchone()
    except psycopg.Error as exc:
        if conn.closed or conn.broken:
            raise
        # E.g. a deadlock with another run's sweep: the receipts stay unapplied until the next one.
        log.warning("applying receipts that raced their message failed (%s); the next sweep retries", exc)
        return 0
    return row["changed"] if isinstance(row, dict) else row[0]


# ───────────────────────────── batches and the drain loop ─────────────────────────────

@dataclass(slots=True)
class DrainStats:
    batches: int = 0
    claimed: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    messages: int = 0
    receipts: int = 0
    orphans_applied: int = 0  # message updates from receipts that raced their message (apply_orphans)
    recovered: int = 0  # events of batches whose run died: counted an attempt, then retried one at a time
    seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


_RETRYABLE_WHOLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
#: What parsing an event produced: its records, or why it cannot parse (a permanent failure).
Parsed = dict[int, "list[Record] | str"]


@dataclass(slots=True)
class _Options:
    max_attempts: int
    backoff_seconds: float
    #: Autocommit connection that records batches in flight (webhook_inbox.track).
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
            events = claim()
            claimed.extend(events)
            if events:
                inbox.track(conn, opts.tracker, key, [e.webhook_event_id for e in events])
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
                inbox.untrack(conn, key)
    except psycopg.Error:
        if claimed and not opts.connection_lost(conn):
            inbox.untrack(opts.tracker, key)
        raise
    stats.batches += 1
    stats.done += len(done)
    stats.failed += len(unparsable)
    stats.messages += len(rows.messages)
    stats.receipts += len(rows.receipts) + len(rows.watermarks)


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
    retry, failed = inbox.take_dead_batches(conn, max_attempts=opts.max_attempts)
    if not (retry or failed):
        return
    log.warning("%d events were in batches whose run died: %d failed after %d attempts, the rest are retried "
                "one at a time", len(retry) + len(failed), len(failed), opts.max_attempts)
    stats.recovered += len(retry) + len(failed)
    stats.failed += len(failed)
    for event_id in retry:
        _process(conn, lambda event_id=event_id: inbox.reclaim(conn, [event_id]), stats, opts)


def _tracker(conn: psycopg.Connection) -> psycopg.Connection:
    """A second connection like ``conn``, for batch records. Asynchronous commit: a record lost in a server
    crash belongs to a batch that crash rolled back anyway."""
    params = conn.info.get_parameters()
    if conn.info.password:
        params["password"] = conn.info.password
    tracker = psycopg.connect(**params, autocommit=True)
    tracker.execute("SET synchronous_commit = off")
    return tracker


def drain(conn: psycopg.Connection, *, batch_size: int = DEFAULT_BATCH_SIZE, max_batches: int | None = None,
          time_budget_seconds: float | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
          max_attempts: int = DEFAULT_MAX_ATTEMPTS, backoff_seconds: float = 1.0,
          linger_seconds: float = 0.0, poll_seconds: float = 0.5) -> DrainStats:
    """Process batches until the queue is empty, ``max_batches`` or the time budget is reached.

    With ``linger_seconds`` an empty queue is polled (every ``poll_seconds``) for that long before
    returning, so a steady trickle of webhooks is picked up in well under a second instead of paying a
    run start-up per sensor tick. A batch open longer than ``lease_seconds`` without activity is ended by
    the server (see :func:`inbox.configure_session`). Batches of runs that died are recovered first, and
    whenever the queue is empty (:func:`_recover_dead_batches`); a second connection records the batches.

    ``conn`` must be in autocommit mode: each batch is its own transaction.
    """
    inbox.configure_session(conn, lease_seconds=lease_seconds)
    decode_with(conn)
    stats = DrainStats()
    with _tracker(conn) as tracker:
        opts = _Options(max_attempts, backoff_seconds, tracker)
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


def drain_url(url: str, *, workers: int = 1, run_id: str | None = None, **kwargs: Any) -> DrainStats:
    """:func:`drain` on ``workers`` connections at once (threads; claims never overlap), stats summed.

    Postgres does most of the work, so two workers use two cores even under the GIL. The sessions carry
    ``run_id`` in their ``application_name``, so the sensor can tell a live run from a dead one
    (:mod:`everreach_data.run_liveness`).
    """
    application_name = session_name(DRAIN_APPLICATION, run_id)

    def one() -> DrainStats:
        with psycopg.connect(url, autocommit=True, application_name=application_name) as conn:
            return drain(conn, **kwargs)

    if workers <= 1:
        with _heap_frozen():
            return one()
    started = time.perf_counter()
    with _heap_frozen(), ThreadPoolExecutor(workers, thread_name_prefix="webhook-drain") as pool:
        results = [f.result() for f in [pool.submit(one) for _ in range(workers)]]
    total = DrainStats()
    for result in results:
        for name in total.__slots__:  # type: ignore[attr-defined]
            setattr(total, name, getattr(total, name) + getattr(result, name))
    total.seconds = time.perf_counter() - started
    return total


# ───────────────────────────── Dagster ─────────────────────────────

#: Run monitoring fails a run older than this (``dagster/max_runtime``). A run whose process died can stay
#: ``STARTED`` in Dagster when monitoring cannot reach the process that launched it, holding one of the
#: queue's two run slots for good; this frees it. A healthy run ends within its time budget plus a batch.
MAX_RUNTIME_SECONDS = 900


class WebhookDrainConfig(dg.Config):
    """Under steady traffic a run stays warm: it drains for up to ``time_budget_seconds`` and lingers
    ``linger_seconds`` on an empty queue, so events wait for a poll (0.5 s), not for a sensor tick plus a
    run start-up. The sensor and dagster.yaml still cap runs in flight at two."""

    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2
    time_budget_seconds: float = time_budget(600.0, max_runtime_seconds=MAX_RUNTIME_SECONDS,
                                             what="Stop taking batches after this long")
    linger_seconds: float = 60.0
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dg.op(tags=QUEUE_TAG)
def drain_webhook_events(context: dg.OpExecutionContext, config: WebhookDrainConfig,
                         postgres: PostgresResource) -> dg.Output[None]:
    """Drain the inbox until empty (or the time budget ends; the sensor launches another run)."""
    stats = drain_url(postgres.resolved_url(), run_id=context.run_id, workers=config.workers,
                      batch_size=config.batch_size,
                      time_budget_seconds=config.time_budget_seconds, lease_seconds=config.lease_seconds,
                      max_attempts=config.max_attempts, linger_seconds=config.linger_seconds)
    context.log.info(f"webhook events: {stats.done} done, {stats.failed} failed, {stats.retried} to retry "
                     f"in {stats.batches} batches ({stats.seconds:.2f} s); {stats.recovered} were in batches "
                     f"whose run died")
    return dg.Output(None, metadata=stats.as_metadata())


# In-process executor: one op, so the default multiprocess executor's only effect was a second Python
# process per run (importing everything again) — about half of each run's start-up.
@dg.job(tags={**QUEUE_TAG, "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
        executor_def=dg.in_process_executor,
        description="Process stored Meta webhook events into threads, messages and receipts.")
def process_webhook_events() -> None:
    drain_webhook_events()
