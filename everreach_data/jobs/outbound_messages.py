"""Draining the outbound queue: claim due jobs, pace them per sender, send concurrently, record outcomes.

Pacing (what Meta enforces, and what peers skip):
- WhatsApp: evenly spaced slots per phone number at ``whatsapp_messages_per_second`` (80 by default) ×
  ``headroom`` — Meta counts arrivals in a sliding second, so bursts or network jitter at exactly the limit
  would draw 130429 — plus a token bucket per recipient for the pair rate (``pair_burst`` then one per
  ``pair_interval_seconds``); a recipient over it waits (its job is released, no attempt used), others go on.
- Messenger / Instagram: evenly spaced slots per Page / IG account at ``page_sends_per_second``.

Outcomes: Meta's id stored → ``sent``. Transient errors and throttles → ``queued`` again at
``next_attempt_at`` (exponential backoff with jitter; 4^n s for the WhatsApp pair rate; bounded by
``max_attempts``). Permanent errors → ``failed`` at once with Meta's code and a plain message. 190 / missing
permission → ``failed``, the channel marked ``needs_reauth`` in ``meta_platform_config`` and its queue
paused (claims skip it) instead of burning through it. No answer at all (read timeout, dropped connection)
→ ``unknown``: reconciled from webhooks, never re-sent blindly (see db/outbound_queue.py).

The functions here are plain (testable without Dagster); the Dagster job, the operator jobs and their
resource are thin wrappers at the bottom.
"""


import asyncio
import bisect
import heapq
import itertools
import random
import time
import uuid
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx

from everreach_data.config import Settings, load_settings
from everreach_data.db import outbound_queue as queue
from everreach_data.meta import messaging as wire
from everreach_data.meta.client import AsyncGraphClient
from everreach_data.meta.errors import ErrorKind, GraphAPIError
from everreach_data.resources import PostgresResource
from everreach_data.run_liveness import session_name, time_budget

QUEUE_TAG = {"everreach/queue": "outbound_messages"}
#: ``application_name`` of a send run's Postgres sessions, followed by its Dagster run id.
SEND_APPLICATION = "everreach-outbound-send"
PAIR_RATE_CODE = 131056
TOKENS = {"messenger": ("MESSENGER_PAGE_TOKEN",), "instagram": ("INSTAGRAM_PAGE_TOKEN", "MESSENGER_PAGE_TOKEN"),
          "whatsapp": ("WHATSAPP_ACCESS_TOKEN",)}


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


class Pacer:
    """Evenly spaced send slots at ``rate``/s with no credit for idle time, plus a sliding one-second gate checked
    at the moment of sending: tasks that wake late together (a busy event loop) cannot fire more than
    ``rate`` in any second. A throttle answer from Meta slows the channel down a little (AIMD-style)."""

    CATCH_UP = 0.1   # seconds of slots a late scheduler may still use (the gate bounds the burst)

    def __init__(self, rate: float) -> None:
        self.base = self.rate = rate
        self.floor = rate * 0.8
        self.interval = 1.0 / rate
        self.next_slot: float | None = None     # no credit from before the run started
        self.fired: deque[float] = deque()

    def ready(self, now: float, horizon: float) -> bool:
        return self.next_slot is None or max(self.next_slot, now) < now + horizon

    def take(self, now: float) -> float:
        if self.next_slot is None or self.next_slot < now - self.CATCH_UP:
            slot = now                 # idle or just started: no credit
        else:
            slot = self.next_slot      # on time, or a late scheduler using slots missed in the last CATCH_UP s
        self.next_slot = slot + self.interval
        return slot

    def _set(self, rate: float) -> None:
        self.rate = min(self.base, max(self.floor, rate))
        self.interval = 1.0 / self.rate

    def throttled(self, now: float, pause: float = 0.25) -> None:
        """Multiplicative decrease on a throttle answer, plus a short pause."""
        self._set(self.rate * 0.99)
        self.next_slot = max(self.next_slot or now, now + pause)

    def succeeded(self) -> None:
        """Additive increase back towards the configured rate."""
        if self.rate < self.base:
            self._set(self.rate + self.base * 0.0005)

    async def gate(self) -> None:
        """At most ``rate`` sends in any second, and at most a quarter of that (plus one) in any quarter
        second, so what reaches Meta stays smooth even when late tasks wake together."""
        cap = max(1, int(self.rate))
        quarter = cap // 4 + 1
        while True:
            now = time.monotonic()
            while self.fired and self.fired[0] <= now - 1.0:
                self.fired.popleft()
            recent = len(self.fired) - bisect.bisect_right(self.fired, now - 0.25)
            if len(self.fired) < cap and recent < quarter:
                self.fired.append(now)
                return
            oldest_recent = self.fired[len(self.fired) - recent] if recent >= quarter else now
            wait = min(self.fired[0] + 1.0 if len(self.fired) >= cap else now + 1.0,
                       oldest_recent + 0.25 if recent >= quarter else now + 1.0) - now
            await asyncio.sleep(max(0.001, wait))


class PairBucket:
    """WhatsApp's per-recipient pair rate: ``burst`` messages, then one per ``interval`` seconds."""

    def __init__(self, burst: int, interval: float, now: float) -> None:
        self.burst, self.interval = float(burst), interval
        self.tokens, self.last = float(burst), now

    def wait(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.last) / self.interval)
        self.last = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) * self.interval

    def take(self) -> None:
        self.tokens -= 1.0

    def empty(self) -> None:
        self.tokens = min(self.tokens, 0.0)


def backoff(cfg: SendConfig, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with jitter (half fixed, half random), capped."""
    ceiling = min(cfg.backoff_max_seconds, cfg.backoff_base_seconds * 2 ** max(0, attempts - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class _Result:
    job: queue.Claimed
    message_id: str | None = None
    error: GraphAPIError | None = None


class _Drain:
    def __init__(self, conn, writer, clients: dict[str, AsyncGraphClient], cfg: SendConfig,
                 skip: list[str]) -> None:
        # Two connections: the scheduler claims and marks on ``conn`` while the recorder writes outcomes on
        # ``writer``, so a slow write never delays the next send slot.
        self.conn, self.writer, self.clients, self.cfg = conn, writer, clients, cfg
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
            return _Result(job, error=GraphAPIError(f"{type(exc).__name__}: {exc}"))

    def outcome(self, result: _Result, pauses: dict[str, str]) -> queue.Outcome:
        job, err = result.job, result.error
        assert err is not None
        kind = err.kind
        base = {"job_id": job.job_id, "code": err.code, "subcode": err.subcode, "fbtrace_id": err.fbtrace_id,
                "message": wire.plain_error(err)}
        attempts = job.attempts + 1
        if err.code is None and wire.outcome_unknown(err):
            return queue.Outcome(outcome="unknown", **{**base, "message": "outcome unknown: no answer from "
                                 f"Meta ({err.message}); not re-sent, reconciling from webhooks"})
        if kind is ErrorKind.THROTTLED:
            key = str(err.code)
            self.report.throttled[key] = self.report.throttled.get(key, 0) + 1
            if err.code == PAIR_RATE_CODE:
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
            pauses[job.channel] = wire.plain_error(err)
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
        self.report.sent += await queue.record_sent(self.writer, self.token, sent)
        counts = await queue.record_outcomes(self.writer, self.token, outcomes)
        self.report.retried += counts.get("queued", 0)
        self.report.failed += counts.get("failed", 0)
        self.report.unknown += counts.get("unknown", 0)
        for channel, reason in pauses.items():
            if channel in self.skip:
                continue          # already paused by an earlier answer in this run
            platform, _, account = channel.partition(":")
            await queue.pause_channel(self.writer, platform, account, reason)
            self.report.paused_channels.append(channel)
            self.pause(channel)
        if self.to_release:
            items, self.to_release = self.to_release, []
            await queue.release(self.writer, self.token, items)
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
        for key, value in (await queue.reconcile(self.conn, grace_seconds=cfg.unknown_grace_seconds)).items():
            setattr(self.report, key, getattr(self.report, key) + value)
        stop = asyncio.Event()
        recorder = asyncio.create_task(self.record(stop))
        try:
            while True:
                now = time.monotonic()
                if recorder.done():      # the recorder failed: stop scheduling, surface its error
                    recorder.result()
                if now < deadline and now >= next_claim and self.buffered() < cfg.claim_batch // 2:
                    claimed = await queue.claim(self.conn, self.token, limit=cfg.claim_batch - self.buffered(),
                                                lease_seconds=cfg.claim_lease_seconds,
                                                skip_channels=sorted(self.skip | set(self.full_channels())))
                    for job in claimed:
                        self.pending[job.channel].append(job)
                    self.report.claimed += len(claimed)
                    next_claim = now + (0.0 if claimed else 0.2)
                picked = self.pick(now)
                if picked:
                    ok = await queue.mark_sending(self.conn, self.token, [j.job_id for j, _ in picked],
                                                  lease_seconds=cfg.send_lease_seconds)
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
                await queue.release(self.conn, self.token, leftover)
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report


def _token(settings: Settings, platform: str) -> str | None:
    for name in TOKENS[platform]:
        value = settings.secret(name)
        if value:
            return value
    return None


async def drain(database_url: str, settings: Settings, cfg: SendConfig | None = None, *,
                run_id: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> DrainReport:
    """Send what is due until the queue is idle (or ``cfg.max_seconds``); returns what happened. The sessions
    carry ``run_id`` in their ``application_name``, so the sensor can tell a live run from a dead one."""
    cfg = cfg or SendConfig()
    clients: dict[str, AsyncGraphClient] = {}
    skip: list[str] = []
    for platform in wire.PLATFORMS:
        token = _token(settings, platform)
        if token:
            clients[platform] = AsyncGraphClient(settings.graph_base_url, token, timeout=cfg.timeout_seconds,
                                                 max_connections=cfg.max_in_flight, transport=transport)
        else:   # no token: leave that channel's jobs queued rather than fail them
            channel = {"messenger": settings.MESSENGER_PAGE_ID, "instagram": settings.INSTAGRAM_USER_ID,
                       "whatsapp": settings.WHATSAPP_PHONE_NUMBER_ID}[platform]
            skip.append(f"{platform}:{channel}")
    application_name = session_name(SEND_APPLICATION, run_id)
    conn = await queue.connect_async(database_url, application_name=application_name)
    writer = await queue.connect_async(database_url, application_name=application_name)
    try:
        return await _Drain(conn, writer, clients, cfg, skip).run()
    finally:
        for client in clients.values():
            await client.aclose()
        await conn.close()
        await writer.close()


# ───────────────────────────── Dagster ─────────────────────────────

class OutboundMessagingResource(dg.ConfigurableResource):
    """Sender limits (Meta's defaults). Tokens and the Graph URL come from the environment via Settings."""

    whatsapp_messages_per_second: float = 80.0
    page_sends_per_second: float = 250.0
    pair_burst: int = 45
    pair_interval_seconds: float = 6.0
    backoff_base_seconds: float = 2.0

    def send_config(self, **overrides: object) -> SendConfig:
        return SendConfig(whatsapp_messages_per_second=self.whatsapp_messages_per_second,
                          page_sends_per_second=self.page_sends_per_second, pair_burst=self.pair_burst,
                          pair_interval_seconds=self.pair_interval_seconds,
                          backoff_base_seconds=self.backoff_base_seconds, **overrides)  # type: ignore[arg-type]

    def settings(self) -> Settings:
        return load_settings()


#: Run monitoring fails a run older than this (``dagster/max_runtime``): a run whose process died can stay
#: ``STARTED`` in Dagster, and with one run allowed at a time it would hold every send. A healthy run stops
#: claiming after ``max_seconds`` and ends once its sends in flight do.
MAX_RUNTIME_SECONDS = 600


class SendOutboundConfig(dg.Config):
    max_seconds: float = time_budget(240.0, max_runtime_seconds=MAX_RUNTIME_SECONDS,
                                     what="Stop claiming jobs after this long")
    linger_seconds: float = 5.0
    unknown_grace_seconds: float = 600.0


@dg.op(tags=QUEUE_TAG)
def drain_outbound_messages(context: dg.OpExecutionContext, config: SendOutboundConfig,
                            postgres: PostgresResource, outbound_messaging: OutboundMessagingResource
                            ) -> dg.Output[None]:
    """Send every due outbound job, paced per sender; outcomes land in outbound_message_job."""
    cfg = outbound_messaging.send_config(max_seconds=config.max_seconds, linger_seconds=config.linger_seconds,
                                         unknown_grace_seconds=config.unknown_grace_seconds)
    report = asyncio.run(drain(postgres.resolved_url(), outbound_messaging.settings(), cfg, run_id=context.run_id))
    context.log.info(f"outbound: {report.sent} sent, {report.retried} to retry, {report.failed} failed, "
                     f"{report.unknown} unknown, {report.reconciled} reconciled in {report.seconds} s")
    if report.paused_channels:
        context.log.warning(f"channels paused (need re-authorization): {report.paused_channels}")
    return dg.Output(None, metadata=report.as_metadata())


@dg.job(tags={**QUEUE_TAG, "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
        description="Send queued Messenger, Instagram and WhatsApp messages through the Graph API.")
def send_outbound_messages() -> None:
    drain_outbound_messages()


class SendMessageConfig(dg.Config):
    """One message from an operator. ``text`` for free-form, or ``template_name`` (WhatsApp) for a template."""

    platform: str = "whatsapp"          # messenger | instagram | whatsapp
    recipient: str                       # PSID, IGSID or phone number
    text: str = ""
    template_name: str = ""
    template_language: str = "en_US"
    human_agent: bool = True            # an operator is a person
    idempotency_key: str = ""
    requested_by: str = "dagster-operator"


def send_message_body(config: SendMessageConfig):
    """The same request models the HTTP endpoints validate."""
    from everreach_data.outbound_requests import MessengerSend, WhatsAppSend

    if config.platform == "whatsapp":
        if config.template_name:
            return WhatsAppSend(to=config.recipient, type="template",
                                template={"name": config.template_name,
                                          "language": {"code": config.template_language}})
        return WhatsAppSend(to=config.recipient, type="text", message=config.text or None)
    return MessengerSend(platform=config.platform, recipient_id=config.recipient, text=config.text or None,
                         human_agent=config.human_agent)


async def queue_operator_message(database_url: str, settings: Settings, config: SendMessageConfig) -> dict:
    from everreach_data.outbound_requests import queue_messenger, queue_whatsapp

    body = send_message_body(config)
    fn = queue_whatsapp if config.platform == "whatsapp" else queue_messenger
    conn = await queue.connect_async(database_url)
    try:
        queued = await fn(conn, settings, body, requested_by=config.requested_by,
                          idempotency_key=config.idempotency_key or None)
    finally:
        await conn.close()
    return queued.response()


@dg.op
def queue_message(context: dg.OpExecutionContext, config: SendMessageConfig, postgres: PostgresResource,
                  outbound_messaging: OutboundMessagingResource) -> dg.Output[None]:
    """Validate and queue through the same checks as the HTTP endpoint; the sensor sends it."""
    from pydantic import ValidationError

    from everreach_data.messaging_policy import PolicyViolation
    from everreach_data.outbound_requests import InvalidRequest

    try:
        result = asyncio.run(queue_operator_message(postgres.resolved_url(), outbound_messaging.settings(), config))
    except (ValidationError, InvalidRequest, PolicyViolation, queue.IdempotencyConflict) as exc:
        raise dg.Failure(description=f"message not queued: {exc}") from exc
    context.log.info(f"queued job {result['job_id']} to {config.platform}:{config.recipient}")
    return dg.Output(None, metadata={k: str(v) for k, v in result.items()})


@dg.job(description="Operators: send one message (same validation, policy windows and queue as the API).")
def send_message() -> None:
    queue_message()


class RetryFailedConfig(dg.Config):
    """Re-queue failed jobs (all within ``since_hours``, or just ``job_ids``). ``include_unknown`` also
    re-sends jobs whose outcome is unknown — the recipient may then get them twice. ``resume_channels``
    re-activates channels paused for re-authorization (do it after fixing the token)."""

    job_ids: list[str] = []
    since_hours: float = 24.0
    platform: str = ""
    include_unknown: bool = False
    resume_channels: bool = False


RESUME_CHANNELS = """
UPDATE meta_platform_config SET status = 'active', status_reason = NULL, updated_at = now()
WHERE status = 'needs_reauth' AND platform = ANY (%(platforms)s::text[])
"""


async def retry_failed(database_url: str, config: RetryFailedConfig) -> int:
    conn = await queue.connect_async(database_url)
    try:
        if config.resume_channels:
            platforms = [config.platform] if config.platform else list(wire.PLATFORMS)
            await conn.execute(RESUME_CHANNELS, {"platforms": platforms})
        statuses = ("failed", "unknown") if config.include_unknown else ("failed",)
        return await queue.requeue(
            conn, statuses=statuses, job_ids=[uuid.UUID(j) for j in config.job_ids] or None,
            since=None if config.job_ids else datetime.now(UTC) - timedelta(hours=config.since_hours),
            platform=config.platform or None)
    finally:
        await conn.close()


@dg.op
def requeue_failed_messages(context: dg.OpExecutionContext, config: RetryFailedConfig,
                            postgres: PostgresResource) -> dg.Output[None]:
    count = asyncio.run(retry_failed(postgres.resolved_url(), config))
    context.log.info(f"re-queued {count} outbound jobs")
    return dg.Output(None, metadata={"requeued": count})


@dg.job(description="Operators: put failed (optionally unknown-outcome) outbound messages back in the queue.")
def retry_failed_messages() -> None:
    requeue_failed_messages()
