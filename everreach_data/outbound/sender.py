"""Draining the outbound queue: claim due jobs, pace them per sender (:mod:`.pacing`), send concurrently,
record outcomes. Plain asyncio, testable without Dagster (``defs.py`` wraps it in a job).

Outcomes: Meta's id stored → ``sent``. Transient errors and throttles → ``queued`` again at
``next_attempt_at`` (exponential backoff with jitter; 4^n s for the WhatsApp pair rate; bounded by
``max_attempts``). Permanent errors → ``failed`` at once with Meta's code and a plain message. 190 / missing
permission → ``failed``, the channel marked ``needs_reauth`` in ``meta_platform_config`` and its queue
paused (claims skip it) instead of burning through it. No answer at all (read timeout, dropped connection)
→ ``unknown``: reconciled from webhooks, never re-sent blindly (:mod:`.queue`).

A WhatsApp recipient over its pair rate waits (its job is released, no attempt used) while others go on.
A run that loses the database (a restart, a failover) reconnects and carries on: the sends in flight keep
their answers, which are written once it is back, and its claims stay its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import psycopg

from everreach_data.config import Channels
from everreach_data.db.connection import connection_lost, reconnect_waits
from everreach_data.db.run_liveness import presence_async
from everreach_data.meta import messaging as wire
from everreach_data.meta.client import AsyncGraphClient
from everreach_data.meta.errors import PAIR_RATE_LIMIT, ErrorKind, GraphAPIError, GraphTransportError
from everreach_data.outbound import queue
from everreach_data.outbound.pacing import Pacer, PairBucket

#: ``application_name`` of a send run's Postgres sessions, and the name its runs' presence is held under.
SEND_APPLICATION = "everreach-outbound-send"
#: How long a run waits for a lost database to answer again before it fails.
RECONNECT_PATIENCE_SECONDS = 60.0
#: A statement that Postgres ends as a deadlock's victim, or whose connection is lost, is repeated this many
#: times before its last try.
STATEMENT_RETRIES = 3


@dataclass
class SendConfig:
    whatsapp_messages_per_second: float = 80.0
    page_sends_per_second: float = 250.0
    headroom: float = 0.98                # aim this fraction of each limit
    pair_burst: int = 45
    pair_interval_seconds: float = 6.0
    pair_hold_seconds: float = 2.0        # a pair wait longer than this releases the job to the queue
    claim_batch: int = 500
    buffer_seconds: float = 3.0           # claim about this many seconds of sending per channel
    claim_lease_seconds: float = 120.0
    send_lease_seconds: float = 90.0      # longer than the HTTP timeout
    timeout_seconds: float = 30.0
    max_in_flight: int = 256
    max_seconds: float = 240.0            # one run's budget; the sensor launches the next
    linger_seconds: float = 0.0           # keep polling this long when idle (retries due soon)
    unknown_grace_seconds: float = 600.0
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0
    horizon_seconds: float = 0.25         # schedule sends this far ahead per round trip
    seed: int | None = None

    def rate(self, platform: str) -> float:
        """Sends per second to aim at: whole messages under ``headroom`` × the limit (the gate counts whole
        sends per second, so a fractional target would only queue tasks at the gate)."""
        limit = self.whatsapp_messages_per_second if platform == "whatsapp" else self.page_sends_per_second
        target = limit * self.headroom
        return float(int(target)) if target >= 1 else max(0.1, target)


@dataclass
class DrainReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    window_closed: int = 0
    released: int = 0
    reconciled: int = 0
    expired: int = 0
    flagged: int = 0
    throttled: dict[str, int] = field(default_factory=dict)
    paused_channels: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_metadata(self) -> dict[str, object]:
        data = asdict(self)
        data["throttled"] = dict(self.throttled)
        data["send_rate_per_second"] = round(self.sent / self.seconds, 2) if self.seconds else 0.0
        return data


#: Each retry waits this many times longer than the one before: with the defaults (2 s, 5 attempts) the waits
#: are 1–2, 4–8, 16–32 and 64–128 s, so a message outlasts 85 s to 3 minutes of Meta's 5xx or throttling (an
#: outage usually lasts minutes) before it fails, and a single hiccup still costs only a second or two.
BACKOFF_GROWTH = 4


def backoff(cfg: SendConfig, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with jitter (half fixed, half random), capped."""
    ceiling = min(cfg.backoff_max_seconds, cfg.backoff_base_seconds * BACKOFF_GROWTH ** max(0, attempts - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class _Result:
    job: queue.Claimed
    message_id: str | None = None
    error: GraphAPIError | None = None


class _Drain:
    def __init__(self, connect: Callable[[], Awaitable[psycopg.AsyncConnection]], conn, writer,
                 clients: dict[str, AsyncGraphClient], cfg: SendConfig, skip: list[str]) -> None:
        # Two connections: the scheduler claims and marks on ``conn`` while the recorder writes outcomes on
        # ``writer``, so a slow write never delays the next send slot. ``connect`` makes a new one.
        self.connect, self.conn, self.writer, self.clients, self.cfg = connect, conn, writer, clients, cfg
        self.token = uuid.uuid4()
        self.report = DrainReport()
        self.rng = random.Random(cfg.seed)
        self.pending: dict[str, deque[queue.Claimed]] = defaultdict(deque)
        self.pacers: dict[str, Pacer] = {}
        self.pairs: dict[tuple[str, str], PairBucket] = {}
        self.deferred: list[tuple[float, int, queue.Claimed]] = []
        self.seq = itertools.count()
        self.in_flight: set[asyncio.Task[_Result]] = set()
        self.skip = set(skip)
        self.to_release: list[tuple[uuid.UUID, float]] = []

    # ── the database ──
    async def _reconnected(self, old: psycopg.AsyncConnection) -> psycopg.AsyncConnection:
        """A new connection once the database answers again (the last error after the patience runs out)."""
        with contextlib.suppress(psycopg.Error):
            await old.close()
        waits = reconnect_waits()
        give_up = time.monotonic() + RECONNECT_PATIENCE_SECONDS
        while True:
            try:
                return await self.connect()
            except psycopg.OperationalError:
                wait = next(waits)
                if time.monotonic() + wait > give_up:
                    raise
            await asyncio.sleep(wait)

    async def db(self, which: str, statement: Callable[[psycopg.AsyncConnection], Awaitable[Any]]) -> Any:
        """``statement`` on the ``conn`` or ``writer`` connection; again on a new one if the database went away
        meanwhile, or at once if Postgres chose it as a deadlock's victim. Every statement given here may run
        twice: a claim that committed unseen only waits out its lease, a recorded outcome is recorded once
        (each write checks the job's status and claim)."""
        for _ in range(STATEMENT_RETRIES):
            try:
                return await statement(getattr(self, which))
            except psycopg.errors.DeadlockDetected:
                continue
            except psycopg.Error as exc:
                if not connection_lost(exc):
                    raise
            setattr(self, which, await self._reconnected(getattr(self, which)))
        return await statement(getattr(self, which))

    async def mark_sending(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        lease = self.cfg.send_lease_seconds
        tries = 0

        async def flip(conn: psycopg.AsyncConnection) -> set[uuid.UUID]:
            nonlocal tries
            tries += 1
            flipped = await queue.mark_sending(conn, self.token, ids, lease_seconds=lease)
            # Tried again, the flip may have committed before the connection went: jobs ``sending`` under our
            # claim are ours to send (nobody sent them), the others are flipped now.
            return flipped if tries == 1 else flipped | await queue.sending_under(conn, self.token, ids)

        return await self.db("conn", flip)

    # ── scheduling ──
    def buffered(self) -> int:
        return sum(len(q) for q in self.pending.values()) + len(self.deferred)

    def full_channels(self) -> list[str]:
        return [ch for ch, q in self.pending.items()
                if len(q) >= self.cfg.rate(ch.split(":")[0]) * self.cfg.buffer_seconds]

    def pick(self, now: float) -> list[tuple[queue.Claimed, float]]:
        while self.deferred and self.deferred[0][0] <= now:
            _, _, job = heapq.heappop(self.deferred)
            self.pending[job.channel].appendleft(job)
        picked: list[tuple[queue.Claimed, float]] = []
        room = self.cfg.max_in_flight - len(self.in_flight)
        for channel, jobs in list(self.pending.items()):
            if jobs and jobs[0].platform not in self.clients:   # no token for it: leave its jobs queued
                self.skip.add(channel)
                self.to_release += [(j.job_id, 60.0) for j in self.pending.pop(channel)]
                continue
            pacer = self.pacers.setdefault(channel, Pacer(self.cfg.rate(channel.split(":")[0])))
            while jobs and len(picked) < room and pacer.ready(now, self.cfg.horizon_seconds):
                job = jobs.popleft()
                if job.platform == "whatsapp":
                    bucket = self.pairs.setdefault((channel, job.recipient_id), PairBucket(
                        self.cfg.pair_burst, self.cfg.pair_interval_seconds, now))
                    wait = bucket.wait(now)
                    if wait > self.cfg.pair_hold_seconds:
                        self.to_release.append((job.job_id, wait))
                        continue
                    if wait > 0:
                        heapq.heappush(self.deferred, (now + wait, next(self.seq), job))
                        continue
                    bucket.take()
                picked.append((job, pacer.take(now)))
        return picked

    def pause(self, channel: str) -> None:
        self.skip.add(channel)
        jobs = self.pending.pop(channel, deque())
        kept = []
        for item in self.deferred:
            (self.to_release.append((item[2].job_id, 0.0)) if item[2].channel == channel else kept.append(item))
        self.deferred = kept
        heapq.heapify(self.deferred)
        self.to_release += [(j.job_id, 0.0) for j in jobs]

    # ── sending ──
    async def send(self, job: queue.Claimed, slot: float) -> _Result:
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.pacers[job.channel].gate()
        try:
            body = await self.clients[job.platform].post(wire.send_path(job.platform, job.channel_id),
                                                         json=job.request, retry=False)
            return _Result(job, message_id=wire.parse_send_response(job.platform, body).message_id)
        except GraphAPIError as exc:
            return _Result(job, error=exc)
        except Exception as exc:  # noqa: BLE001 - whatever it was, we cannot tell whether Meta got the message
            return _Result(job, error=GraphTransportError.from_exception(exc))

    def outcome(self, result: _Result, pauses: dict[str, str]) -> queue.Outcome:
        job, err = result.job, result.error
        assert err is not None
        kind = err.kind
        base = {"job_id": job.job_id, "code": err.code, "subcode": err.subcode, "fbtrace_id": err.fbtrace_id,
                "message": err.plain()}
        attempts = job.attempts + 1
        if err.may_have_taken_effect:
            return queue.Outcome(outcome="unknown", **{**base, "message": "outcome unknown: no answer from "
                                 f"Meta ({err.message}); not re-sent, reconciling from webhooks"})
        if kind is ErrorKind.THROTTLED:
            key = str(err.code)
            self.report.throttled[key] = self.report.throttled.get(key, 0) + 1
            if err.code == PAIR_RATE_LIMIT:
                self.pairs.get((job.channel, job.recipient_id), PairBucket(1, 1, 0)).empty()
                delay = min(self.cfg.backoff_max_seconds, 4.0 ** attempts)
            else:
                delay = backoff(self.cfg, attempts, self.rng)
                pacer = self.pacers.get(job.channel)
                if pacer:
                    pacer.throttled(time.monotonic())
            return queue.Outcome(outcome="retry", delay=delay, **base)
        if kind is ErrorKind.TRANSIENT:
            return queue.Outcome(outcome="retry", delay=backoff(self.cfg, attempts, self.rng), **base)
        if kind in (ErrorKind.AUTH, ErrorKind.PERMISSION):
            pauses[job.channel] = err.plain()
        return queue.Outcome(outcome="failed", **base)

    async def flush(self) -> None:
        done = [t for t in self.in_flight if t.done()]
        self.in_flight.difference_update(done)
        sent: list[tuple[uuid.UUID, str]] = []
        outcomes: list[queue.Outcome] = []
        pauses: dict[str, str] = {}
        for task in done:
            result = task.result()
            if result.message_id is not None:
                sent.append((result.job.job_id, result.message_id))
                self.pacers[result.job.channel].succeeded()
            else:
                outcomes.append(self.outcome(result, pauses))
        self.report.sent += await self.db("writer", lambda c: queue.record_sent(c, self.token, sent))
        counts = await self.db("writer", lambda c: queue.record_outcomes(c, self.token, outcomes))
        self.report.retried += counts.get("queued", 0)
        self.report.failed += counts.get("failed", 0)
        self.report.unknown += counts.get("unknown", 0)
        for channel, reason in pauses.items():
            if channel in self.skip:
                continue          # already paused by an earlier answer in this run
            platform, _, account = channel.partition(":")
            await self.db("writer", lambda c, p=platform, a=account, r=reason: queue.pause_channel(c, p, a, r))
            self.report.paused_channels.append(channel)
            self.pause(channel)
        if self.to_release:
            items, self.to_release = self.to_release, []
            await self.db("writer", lambda c: queue.release(c, self.token, items))
            self.report.released += len(items)

    async def record(self, stop: asyncio.Event) -> None:
        """The recorder: write finished sends' outcomes every few tens of milliseconds until stopped."""
        while not stop.is_set():
            await self.flush()
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except TimeoutError:
                pass

    async def run(self) -> DrainReport:
        cfg = self.cfg
        started = time.monotonic()
        deadline = started + cfg.max_seconds
        idle_since: float | None = None
        next_claim = 0.0
        reconciled = await self.db("conn", lambda c: queue.reconcile(c, grace_seconds=cfg.unknown_grace_seconds))
        for key, value in reconciled.items():
            setattr(self.report, key, getattr(self.report, key) + value)
        stop = asyncio.Event()
        recorder = asyncio.create_task(self.record(stop))
        try:
            while True:
                now = time.monotonic()
                if recorder.done():      # the recorder failed: stop scheduling, surface its error
                    recorder.result()
                if now < deadline and now >= next_claim and self.buffered() < cfg.claim_batch // 2:
                    skip, room = sorted(self.skip | set(self.full_channels())), cfg.claim_batch - self.buffered()
                    claimed = await self.db("conn", lambda c, skip=skip, room=room: queue.claim(
                        c, self.token, limit=room, lease_seconds=cfg.claim_lease_seconds, skip_channels=skip))
                    for job in claimed:
                        self.pending[job.channel].append(job)
                    self.report.claimed += len(claimed)
                    next_claim = now + (0.0 if claimed else 0.2)
                picked = self.pick(now)
                if picked:
                    ok = await self.mark_sending([j.job_id for j, _ in picked])
                    self.report.window_closed += sum(1 for j, _ in picked if j.job_id not in ok)
                    for job, slot in picked:
                        if job.job_id in ok:
                            self.in_flight.add(asyncio.create_task(self.send(job, slot)))
                busy = self.in_flight or self.buffered()
                idle_since = None if busy else (idle_since or now)
                if now >= deadline and not self.in_flight:
                    break
                if not busy and now - (idle_since or now) >= cfg.linger_seconds and next_claim > now:
                    break
                spent = time.monotonic() - now
                await asyncio.sleep(max(0.005, cfg.horizon_seconds / 2 - spent) if busy else 0.05)
            stop.set()
            await recorder
            await self.flush()
        finally:
            stop.set()
            if not recorder.done():
                recorder.cancel()
            if self.in_flight:   # cancelled mid-run: what was in flight is 'sending' → reconciled later
                for task in self.in_flight:
                    task.cancel()
            leftover = [(j.job_id, 0.0) for q in self.pending.values() for j in q]
            leftover += [(item[2].job_id, 0.0) for item in self.deferred] + self.to_release
            if leftover:
                await self.db("conn", lambda c: queue.release(c, self.token, leftover))
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report


async def drain(database_url: str, channels: Channels, cfg: SendConfig | None = None, *,
                run_id: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> DrainReport:
    """Send what is due until the queue is idle (or ``cfg.max_seconds``); returns what happened. The run's
    presence is held meanwhile, so the sensor can tell a live run from a dead one."""
    cfg = cfg or SendConfig()
    clients: dict[str, AsyncGraphClient] = {}
    skip: list[str] = []
    for platform in wire.PLATFORMS:
        channel = channels[platform]
        if channel.token:
            clients[platform] = AsyncGraphClient(channels.graph_base_url, channel.token,
                                                 timeout=cfg.timeout_seconds, max_connections=cfg.max_in_flight,
                                                 transport=transport)
        else:   # no token: leave that channel's jobs queued rather than fail them
            skip.append(f"{platform}:{channel.channel_id}")

    def connect() -> Awaitable[psycopg.AsyncConnection]:
        return queue.connect_async(database_url, application_name=SEND_APPLICATION)

    run = _Drain(connect, await connect(), await connect(), clients, cfg, skip)
    try:
        async with presence_async(database_url, SEND_APPLICATION, run_id):
            return await run.run()
    finally:
        for client in clients.values():
            await client.aclose()
        for conn in (run.conn, run.writer):
            with contextlib.suppress(psycopg.Error):
                await conn.close()
