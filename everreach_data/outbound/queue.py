"""The outbound queue (``outbound_message_job``): enqueue, claim, mark sending, record outcomes, reconcile.

Life of a job: ``queued`` → claimed by a run (``claimed_by`` + ``locked_until`` lease; still ``queued``,
so a crash here loses nothing: the lease expires and another run claims it) → ``sending`` just before the
HTTP call (the window is re-checked in the same statement) → ``sent`` with Meta's id, or back to
``queued`` with ``next_attempt_at`` (transient/throttle), or ``failed`` (permanent, or out of attempts).

A job still ``sending`` after its lease is **not** re-sent: nobody knows whether Meta got it. It becomes
``unknown`` and is reconciled from the webhooks Meta sends for it (the echo's ``metadata`` / the status's
``biz_opaque_callback_data`` carry the job id); with no evidence after a grace period it is flagged for an
operator, who may re-queue it (:func:`requeue`). Every write checks ``claimed_by``, so a run whose claim
expired and was taken over never sends or records that job.

All statements are set-based (``unnest`` arrays); callers batch.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from everreach_data.db.connection import POOLER_SAFE
from everreach_data.meta.messaging import ECHO_BY_JOB_SQL, STATUS_BY_JOB_SQL
from everreach_data.outbound.policy import Decision, Windows

# ───────────────────────────── request time ─────────────────────────────

THREAD_WINDOWS = """
SELECT t.thread_id,
       max(w.expires_at) FILTER (WHERE w.window_type = 'standard') AS standard_expires_at,
       max(w.expires_at) FILTER (WHERE w.window_type = 'human_agent') AS human_agent_expires_at
FROM conversation_thread t LEFT JOIN messaging_policy_window w ON w.thread_id = t.thread_id
WHERE t.platform = %(platform)s AND t.channel_id = %(channel_id)s AND t.participant_id = %(recipient_id)s
GROUP BY t.thread_id
"""

ENQUEUE = """
WITH t AS (
    INSERT INTO conversation_thread (platform, channel_id, participant_id)
    VALUES (%(platform)s, %(channel_id)s, %(participant_id)s)
    ON CONFLICT (platform, channel_id, participant_id) DO UPDATE SET updated_at = now()
    RETURNING thread_id
), m AS (
    INSERT INTO conversation_message (thread_id, platform, direction, message_type, content, payload, status,
                                      sender_user_id)
    SELECT thread_id, %(platform)s, 'outbound', %(message_type)s, %(content)s, %(request)s, 'queued',
           %(requested_by)s
    FROM t
    RETURNING message_id, thread_id
)
INSERT INTO outbound_message_job (job_id, message_id, thread_id, platform, channel_id, recipient_id, request,
                                  messaging_type, tag, window_rule, requested_by, idempotency_key)
SELECT %(job_id)s, message_id, thread_id, %(platform)s, %(channel_id)s, %(recipient_id)s, %(request)s,
       %(messaging_type)s, %(tag)s, %(window_rule)s, %(requested_by)s, %(idempotency_key)s
FROM m
RETURNING job_id, thread_id, message_id, platform, recipient_id, tag, status, request
"""

# The WhatsApp thread a business-scoped user id belongs to (known by phone number, or by the id itself; an id
# replaced by a user_id_update is read as its replacement); the id itself when we have none.
WHATSAPP_PARTICIPANT = """
SELECT coalesce((
    SELECT t.participant_id FROM conversation_thread t
    WHERE t.platform = 'whatsapp' AND t.channel_id = %(channel_id)s
      AND t.participant_user_id = coalesce((SELECT c.user_id FROM whatsapp_user_id_change c
                                            WHERE c.channel_id = %(channel_id)s AND c.previous_user_id = %(user_id)s),
                                           %(user_id)s)), %(user_id)s) AS participant_id
"""

JOB_BY_IDEMPOTENCY = """
SELECT job_id, thread_id, message_id, platform, recipient_id, tag, status, request
FROM outbound_message_job WHERE requested_by = %(requested_by)s AND idempotency_key = %(key)s
"""

JOB_STATE = """
SELECT j.job_id, j.status, j.platform, j.channel_id, j.recipient_id, j.thread_id, j.message_id,
       j.messaging_type, j.tag, j.attempts, j.max_attempts, j.next_attempt_at, j.platform_message_id,
       j.error_code, j.error_subcode, j.error_message, j.fbtrace_id, j.requested_by, j.created_at,
       j.sent_at, j.updated_at, j.flagged_at,
       m.status AS message_status, m.delivered_at, m.read_at, m.failed_at
FROM outbound_message_job j JOIN conversation_message m ON m.message_id = j.message_id
WHERE j.job_id = %(job_id)s
"""


@dataclass(frozen=True)
class ThreadWindows:
    thread_id: uuid.UUID | None
    windows: Windows


@dataclass(frozen=True)
class NewJob:
    platform: str
    channel_id: str
    recipient_id: str
    request: dict[str, Any]
    decision: Decision
    message_type: str
    content: str | None
    requested_by: str
    idempotency_key: str | None = None
    job_id: uuid.UUID | None = None
    participant_id: str | None = None   # the thread's participant, when not the recipient (a WhatsApp user id)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before by this caller for a different request."""


async def _run(conn: psycopg.AsyncConnection, query: str, params: dict[str, Any] | None = None
               ) -> psycopg.AsyncCursor[dict[str, Any]]:
    """Execute with dict rows whatever the connection's own row factory (the receiver's pool uses tuples)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return cur


async def thread_windows(conn: psycopg.AsyncConnection, platform: str, channel_id: str,
                         recipient_id: str) -> ThreadWindows:
    cur = await _run(conn, THREAD_WINDOWS, {"platform": platform, "channel_id": channel_id,
                                              "recipient_id": recipient_id})
    row = await cur.fetchone()
    if row is None:
        return ThreadWindows(None, Windows())
    return ThreadWindows(row["thread_id"], Windows(row["standard_expires_at"], row["human_agent_expires_at"]))


async def whatsapp_participant(conn: psycopg.AsyncConnection, channel_id: str, user_id: str) -> str:
    cur = await _run(conn, WHATSAPP_PARTICIPANT, {"channel_id": channel_id, "user_id": user_id})
    return (await cur.fetchone())["participant_id"]


async def existing_job(conn: psycopg.AsyncConnection, requested_by: str, key: str | None,
                       request: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The job this caller already queued under ``key``; a different request under it is a conflict."""
    if not key:
        return None
    cur = await _run(conn, JOB_BY_IDEMPOTENCY, {"requested_by": requested_by, "key": key})
    row = await cur.fetchone()
    if row is not None and request is not None and _strip_ref(row["request"]) != _strip_ref(request):
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used for a different request")
    return row


def _strip_ref(request: dict[str, Any]) -> str:
    body = json.loads(json.dumps(request))
    for key in ("biz_opaque_callback_data", "messaging_type", "tag"):   # set by us, not by the caller
        body.pop(key, None)
    if isinstance(body.get("message"), dict):
        body["message"].pop("metadata", None)
    return json.dumps(body, sort_keys=True)


async def enqueue(conn: psycopg.AsyncConnection, job: NewJob) -> tuple[dict[str, Any], bool]:
    """Thread upserted, queued message and job written in ONE transaction. Returns (job row, created);
    a concurrent retry with the same Idempotency-Key gets the first job and ``created`` False."""
    params = {
        "job_id": job.job_id or uuid.uuid4(), "platform": job.platform, "channel_id": job.channel_id,
        "recipient_id": job.recipient_id, "participant_id": job.participant_id or job.recipient_id,
        "request": Jsonb(job.request), "message_type": job.message_type,
        "content": job.content, "requested_by": job.requested_by, "idempotency_key": job.idempotency_key,
        "messaging_type": job.decision.messaging_type, "tag": job.decision.tag,
        "window_rule": job.decision.window_rule,
    }
    try:
        async with conn.transaction():
            cur = await _run(conn, ENQUEUE, params)
            row = await cur.fetchone()
        return row, True
    except psycopg.errors.UniqueViolation:
        row = await existing_job(conn, job.requested_by, job.idempotency_key, job.request)
        if row is None:
            raise
        return row, False


async def job_state(conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await _run(conn, JOB_STATE, {"job_id": job_id})
    return await cur.fetchone()


# ───────────────────────────── send time ─────────────────────────────

EXPIRE_SENDING = """
UPDATE outbound_message_job
SET status = 'unknown', locked_until = NULL, updated_at = now(),
    error_message = 'outcome unknown: the sender stopped while sending (lease expired); not re-sent, '
                    'reconciling from echo/status webhooks'
WHERE status = 'sending' AND locked_until < now()
RETURNING job_id
"""

CLAIM = """
WITH due AS (
    SELECT j.job_id FROM outbound_message_job j
    WHERE j.status = 'queued' AND j.next_attempt_at <= now()
      AND (j.locked_until IS NULL OR j.locked_until < now())
      AND NOT (j.platform || ':' || j.channel_id = ANY (%(skip_channels)s::text[]))
      AND NOT EXISTS (SELECT 1 FROM meta_platform_config c
                      WHERE c.platform = j.platform AND c.account_id = j.channel_id AND c.status <> 'active')
    ORDER BY j.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE outbound_message_job j
SET claimed_by = %(token)s, locked_until = now() + make_interval(secs => %(lease)s), updated_at = now()
FROM due WHERE j.job_id = due.job_id
RETURNING j.job_id, j.platform, j.channel_id, j.recipient_id, j.request, j.attempts, j.max_attempts,
          j.message_id, j.created_at
"""

RELEASE = """
UPDATE outbound_message_job j
SET claimed_by = NULL, locked_until = NULL,
    next_attempt_at = greatest(j.next_attempt_at, now() + make_interval(secs => r.delay)), updated_at = now()
FROM unnest(%(ids)s::uuid[], %(delays)s::float8[]) AS r(job_id, delay)
WHERE j.job_id = r.job_id AND j.claimed_by = %(token)s AND j.status = 'queued'
"""

# The window is re-checked in the statement that flips queued → sending: a job that waited in the queue past
# its window fails here, with the code Meta would have answered, instead of being sent.
MARK_SENDING = """
WITH c AS (
    SELECT j.job_id,
           j.window_rule = 'none' OR is_in_messaging_window(j.thread_id, j.window_rule) AS ok,
           (SELECT w.expires_at FROM messaging_policy_window w
            WHERE w.thread_id = j.thread_id
              AND w.window_type = CASE j.window_rule WHEN 'human_agent' THEN 'human_agent' ELSE 'standard' END)
               AS closed_at
    FROM outbound_message_job j
    WHERE j.job_id = ANY (%(ids)s::uuid[]) AND j.status = 'queued' AND j.claimed_by = %(token)s
    FOR UPDATE
)
UPDATE outbound_message_job j
SET status = CASE WHEN c.ok THEN 'sending' ELSE 'failed' END,
    attempts = j.attempts + c.ok::int,
    locked_until = CASE WHEN c.ok THEN now() + make_interval(secs => %(lease)s) END,
    error_code = CASE WHEN c.ok THEN j.error_code WHEN j.platform = 'whatsapp' THEN 131047 ELSE 10 END,
    error_subcode = CASE WHEN c.ok THEN j.error_subcode WHEN j.platform = 'whatsapp' THEN NULL ELSE 2018278 END,
    error_message = CASE WHEN c.ok THEN j.error_message
                         ELSE 'not sent: the ' || CASE j.window_rule WHEN 'human_agent' THEN '7-day human-agent'
                              ELSE '24-hour' END || ' messaging window closed at '
                              || coalesce(c.closed_at::text, '(never opened)') || ' while the message was queued' END,
    updated_at = now()
FROM c WHERE j.job_id = c.job_id
RETURNING j.job_id, c.ok
"""

RECORD_SENT = """
UPDATE outbound_message_job j
SET status = 'sent', platform_message_id = r.mid, sent_at = now(), locked_until = NULL, flagged_at = NULL,
    error_code = NULL, error_subcode = NULL, error_message = NULL, updated_at = now()
FROM unnest(%(ids)s::uuid[], %(mids)s::text[]) AS r(job_id, mid)
WHERE j.job_id = r.job_id AND j.status IN ('sending', 'unknown')
  AND (%(token)s::uuid IS NULL OR j.claimed_by = %(token)s)
RETURNING j.job_id, j.message_id, r.mid
"""

# Setting Meta's id on the message lets webhook processing match the echo/status to it; the webhook
# schema's triggers fold in an echo row that got there first and apply receipts that arrived early. The rows
# are locked in message_id order, as the webhook drain locks them when an echo names our job
# (inbox.apply.ATTACH_OUR_SENDS): two statements taking the same rows in opposite orders deadlock.
SET_MESSAGE_IDS = """
WITH r AS (SELECT * FROM unnest(%(message_ids)s::uuid[], %(mids)s::text[]) AS r(message_id, mid)),
locked AS (
    SELECT m.message_id FROM conversation_message m JOIN r USING (message_id)
    ORDER BY m.message_id FOR UPDATE OF m
)
UPDATE conversation_message m
SET platform_message_id = r.mid,
    status = CASE WHEN message_status_rank(m.status) < message_status_rank('sent') THEN 'sent' ELSE m.status END,
    sent_at = now(), updated_at = now()
FROM r JOIN locked USING (message_id)
WHERE m.message_id = r.message_id
"""

RECORD_OUTCOME = """
UPDATE outbound_message_job j
SET status = CASE WHEN r.outcome = 'retry' AND j.attempts < j.max_attempts THEN 'queued'
                  WHEN r.outcome = 'unknown' THEN 'unknown' ELSE 'failed' END,
    next_attempt_at = CASE WHEN r.outcome = 'retry' THEN now() + make_interval(secs => r.delay)
                           ELSE j.next_attempt_at END,
    claimed_by = CASE WHEN r.outcome = 'unknown' THEN j.claimed_by END,
    locked_until = NULL,
    error_code = r.code, error_subcode = r.subcode, fbtrace_id = r.fbtrace,
    error_message = CASE WHEN r.outcome = 'retry' AND j.attempts >= j.max_attempts
                         THEN 'gave up after ' || j.attempts || ' attempts: ' || r.message ELSE r.message END,
    updated_at = now()
FROM unnest(%(ids)s::uuid[], %(outcomes)s::text[], %(delays)s::float8[], %(codes)s::int[],
            %(subcodes)s::int[], %(messages)s::text[], %(traces)s::text[])
     AS r(job_id, outcome, delay, code, subcode, message, fbtrace)
WHERE j.job_id = r.job_id AND j.claimed_by = %(token)s AND j.status IN ('sending', 'unknown')
RETURNING j.job_id, j.status
"""

# Messages mirror their jobs while they are ours to change: back to queued for a retry, or failed with the
# reason. (No write for 'sending': that state lives on the job, and sparing the write keeps sends cheap.)
SYNC_MESSAGES = """
UPDATE conversation_message m
SET status = j.status,
    failed_at = CASE WHEN j.status = 'failed' THEN now() END,
    error_code = CASE WHEN j.status = 'failed' THEN j.error_code END,
    error_message = CASE WHEN j.status = 'failed' THEN j.error_message END,
    updated_at = now()
FROM outbound_message_job j
WHERE j.job_id = ANY (%(ids)s::uuid[]) AND m.message_id = j.message_id
  AND j.status IN ('queued', 'failed') AND message_status_rank(m.status) <= 1
  AND m.status IS DISTINCT FROM j.status
"""

PAUSE_CHANNEL = """
INSERT INTO meta_platform_config (platform, account_id, status, status_reason, paused_by, updated_at)
VALUES (%(platform)s, %(account_id)s, 'needs_reauth', %(reason)s, 'sender', now())
ON CONFLICT (platform, account_id) DO UPDATE
SET status = 'needs_reauth', status_reason = EXCLUDED.status_reason, paused_by = 'sender', updated_at = now()
"""

FLAG_UNKNOWN = """
UPDATE outbound_message_job
SET flagged_at = now(), updated_at = now(),
    error_message = 'outcome unknown and no echo/status webhook arrived within '
                    || %(grace)s || ' s: an operator must decide (retry_failed_messages with '
                    'include_unknown re-sends it; the recipient may then get it twice)'
WHERE status = 'unknown' AND flagged_at IS NULL AND updated_at < now() - make_interval(secs => %(grace)s)
RETURNING job_id
"""

DUE_WORK = """
SELECT EXISTS (SELECT 1 FROM outbound_message_job j
               WHERE j.status = 'queued' AND j.next_attempt_at <= now()
                 AND (j.locked_until IS NULL OR j.locked_until < now())
                 AND NOT EXISTS (SELECT 1 FROM meta_platform_config c WHERE c.platform = j.platform
                                 AND c.account_id = j.channel_id AND c.status <> 'active'))
    OR EXISTS (SELECT 1 FROM outbound_message_job WHERE status = 'sending' AND locked_until < now())
    OR EXISTS (SELECT 1 FROM outbound_message_job WHERE status = 'unknown' AND flagged_at IS NULL
               AND updated_at < now() - make_interval(secs => %(grace)s)) AS due
"""

REQUEUE = """
UPDATE outbound_message_job
SET status = 'queued', attempts = 0, next_attempt_at = now(), claimed_by = NULL, locked_until = NULL,
    flagged_at = NULL, error_code = NULL, error_subcode = NULL, error_message = NULL, updated_at = now()
WHERE status = ANY (%(statuses)s::text[])
  AND (%(ids)s::uuid[] IS NULL OR job_id = ANY (%(ids)s::uuid[]))
  AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s)
  AND (%(platform)s::text IS NULL OR platform = %(platform)s)
RETURNING job_id, message_id
"""

REQUEUE_MESSAGES = """
UPDATE conversation_message
SET status = 'queued', platform_message_id = NULL, delivered_at = NULL, read_at = NULL, failed_at = NULL,
    error_code = NULL, error_message = NULL, updated_at = now()
WHERE message_id = ANY (%(ids)s::uuid[])
"""


@dataclass(frozen=True)
class Claimed:
    job_id: uuid.UUID
    platform: str
    channel_id: str
    recipient_id: str
    request: dict[str, Any]
    attempts: int
    max_attempts: int
    message_id: uuid.UUID
    created_at: datetime

    @property
    def channel(self) -> str:
        return f"{self.platform}:{self.channel_id}"


@dataclass(frozen=True)
class Outcome:
    job_id: uuid.UUID
    outcome: str                  # retry | failed | unknown
    message: str
    delay: float = 0.0
    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None


async def claim(conn: psycopg.AsyncConnection, token: uuid.UUID, *, limit: int, lease_seconds: float,
                skip_channels: list[str] | None = None) -> list[Claimed]:
    async with conn.transaction():
        cur = await _run(conn, CLAIM, {"token": token, "limit": limit, "lease": lease_seconds,
                                         "skip_channels": skip_channels or []})
        rows = await cur.fetchall()
    return [Claimed(**row) for row in rows]


async def release(conn: psycopg.AsyncConnection, token: uuid.UUID, jobs: list[tuple[uuid.UUID, float]]) -> None:
    """Give claimed, unsent jobs back (optionally not before ``delay`` seconds), without using an attempt."""
    if jobs:
        await conn.execute(RELEASE, {"token": token, "ids": [j for j, _ in jobs], "delays": [d for _, d in jobs]})


async def mark_sending(conn: psycopg.AsyncConnection, token: uuid.UUID, ids: list[uuid.UUID], *,
                       lease_seconds: float) -> set[uuid.UUID]:
    """Flip claimed jobs to ``sending``; returns those that may be sent now (still ours, window open)."""
    if not ids:
        return set()
    async with conn.transaction():
        cur = await _run(conn, MARK_SENDING, {"token": token, "ids": ids, "lease": lease_seconds})
        rows = await cur.fetchall()
        await conn.execute(SYNC_MESSAGES, {"ids": [r["job_id"] for r in rows]})
    return {r["job_id"] for r in rows if r["ok"]}


SENDING_UNDER = """
SELECT job_id FROM outbound_message_job
WHERE job_id = ANY (%(ids)s::uuid[]) AND status = 'sending' AND claimed_by = %(token)s
"""


async def sending_under(conn: psycopg.AsyncConnection, token: uuid.UUID, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``ids`` that are ``sending`` under ``token``'s claim (a :func:`mark_sending` whose commit the
    caller could not see: the database went away before it answered)."""
    cur = await _run(conn, SENDING_UNDER, {"token": token, "ids": ids})
    return {r["job_id"] for r in await cur.fetchall()}


async def record_sent(conn: psycopg.AsyncConnection, token: uuid.UUID | None,
                      sent: list[tuple[uuid.UUID, str]]) -> int:
    """Jobs sent with Meta's ids; their messages get the id (so echoes/statuses match, not duplicate)."""
    if not sent:
        return 0
    for attempt in range(3):
        try:
            async with conn.transaction():
                cur = await _run(conn, RECORD_SENT, {"token": token, "ids": [j for j, _ in sent],
                                                       "mids": [m for _, m in sent]})
                rows = await cur.fetchall()
                if rows:
                    await conn.execute(SET_MESSAGE_IDS, {"message_ids": [r["message_id"] for r in rows],
                                                         "mids": [r["mid"] for r in rows]})
            return len(rows)
        except psycopg.errors.UniqueViolation:
            # An echo row with this id committed between the merge trigger's lookup and our write: retry,
            # the trigger folds it in this time.
            if attempt == 2:
                raise
    return 0


async def record_outcomes(conn: psycopg.AsyncConnection, token: uuid.UUID, outcomes: list[Outcome]) -> dict[str, int]:
    if not outcomes:
        return {}
    params = {
        "token": token, "ids": [o.job_id for o in outcomes], "outcomes": [o.outcome for o in outcomes],
        "delays": [o.delay for o in outcomes], "codes": [o.code for o in outcomes],
        "subcodes": [o.subcode for o in outcomes], "messages": [o.message for o in outcomes],
        "traces": [o.fbtrace_id for o in outcomes],
    }
    async with conn.transaction():
        cur = await _run(conn, RECORD_OUTCOME, params)
        rows = await cur.fetchall()
        await conn.execute(SYNC_MESSAGES, {"ids": [r["job_id"] for r in rows]})
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


async def pause_channel(conn: psycopg.AsyncConnection, platform: str, account_id: str, reason: str) -> None:
    await conn.execute(PAUSE_CHANNEL, {"platform": platform, "account_id": account_id, "reason": reason})


async def reconcile(conn: psycopg.AsyncConnection, *, grace_seconds: float) -> dict[str, int]:
    """Stale ``sending`` → ``unknown``; ``unknown`` jobs whose echo/status arrived → ``sent`` with that id;
    those without evidence after ``grace_seconds`` → flagged for an operator."""
    cur = await _run(conn, EXPIRE_SENDING)
    expired = len(await cur.fetchall())
    found: list[tuple[uuid.UUID, str]] = []
    for query in (ECHO_BY_JOB_SQL, STATUS_BY_JOB_SQL):
        cur = await _run(conn, query)
        found += [(r["job_id"], r["mid"] if "mid" in r else r["wamid"]) for r in await cur.fetchall()]
    reconciled = await record_sent(conn, None, found)
    cur = await _run(conn, FLAG_UNKNOWN, {"grace": grace_seconds})
    flagged = len(await cur.fetchall())
    return {"expired": expired, "reconciled": reconciled, "flagged": flagged}


def due_work_sync(conn: psycopg.Connection, *, unknown_grace_seconds: float = 600.0) -> bool:
    """Anything for a send run to do: due jobs, expired sends, or unknown outcomes due to be flagged (every
    send run also reconciles unknown ones, so they need no run of their own before that)."""
    cur = conn.cursor(row_factory=dict_row)
    return bool(cur.execute(DUE_WORK, {"grace": unknown_grace_seconds}).fetchone()["due"])


async def requeue(conn: psycopg.AsyncConnection, *, statuses: tuple[str, ...] = ("failed",),
                  job_ids: list[uuid.UUID] | None = None, since: datetime | None = None,
                  platform: str | None = None) -> int:
    """Operator retry: failed (and, if asked, unknown) jobs back to the queue with fresh attempts. The
    window is checked again when they are sent."""
    bad = set(statuses) - {"failed", "unknown"}
    if bad:
        raise ValueError(f"only failed or unknown jobs can be re-queued, not {sorted(bad)}")
    async with conn.transaction():
        cur = await _run(conn, REQUEUE, {"statuses": list(statuses), "ids": job_ids, "since": since,
                                           "platform": platform})
        rows = await cur.fetchall()
        await conn.execute(REQUEUE_MESSAGES, {"ids": [r["message_id"] for r in rows]})
    return len(rows)


async def connect_async(url: str, application_name: str = "") -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, row_factory=dict_row, autocommit=True,
                                                 application_name=application_name, **POOLER_SAFE)
