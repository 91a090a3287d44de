"""A batch's webhook records written with a handful of set-based statements: threads, messages, receipts,
watermarks (policy windows follow from the message trigger, ``update_thread_timestamp``), and for WhatsApp
the identities of business-scoped user ids, the template catalog's changes and each message's pricing.

Concurrent runs meet on ``conversation_thread`` rows (a few hundred busy threads take most of the traffic).
Everything that does not lock them — creating new threads, watermarks — comes first; the message trigger
then locks the batch's threads in ``thread_id`` order at the end of the message INSERT, so runs overlap
everywhere except the stretch from there to the commit (thread names, receipts), and never deadlock on
threads.

Neither of two concurrent batches sees what the other has not committed, so a receipt can be stored while a
concurrent batch is still writing its message, and neither applies it: :func:`apply_orphans` applies such
receipts, and the drain calls it whenever it finds the queue empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from everreach_data.db.fast_json import jsonb
from everreach_data.inbox.queue import get
from everreach_data.meta.webhooks import (
    Deletion,
    Delivery,
    Message,
    Read,
    Record,
    Status,
    StoryInsights,
    TemplateUpdate,
    UserIdUpdate,
)
from everreach_data.organic.store import write_story_webhooks

log = logging.getLogger(__name__)

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

# A webhook about a message we sent names its job (the echo's metadata, the status's biz_opaque_callback_data:
# meta.messaging.with_job_reference). If the sender stopped before storing Meta's id (killed, or it lost the
# database after Meta answered), the id goes on our row now, so the echo below updates it instead of becoming a
# second row and the statuses apply to it; the job itself is settled by the next send run (reconcile). Rows
# only, no thread locks (module docstring): it runs before the message INSERT. The rows are locked in
# message_id order, as the sender locks them when it stores Meta's ids (outbound.queue.SET_MESSAGE_IDS).
ATTACH_OUR_SENDS = """
WITH r AS (
    SELECT DISTINCT ON (job) job::uuid AS job_id, platform, mid
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS x (job text, platform text, mid text)
    WHERE job ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    ORDER BY job, mid
), ours AS (
    SELECT m.message_id, r.mid
    FROM r JOIN outbound_message_job j ON j.job_id = r.job_id
    JOIN conversation_message m ON m.message_id = j.message_id AND m.platform = r.platform
    WHERE m.platform_message_id IS NULL
    ORDER BY m.message_id FOR UPDATE OF m
)
UPDATE conversation_message m SET platform_message_id = ours.mid, updated_at = now()
FROM ours WHERE m.message_id = ours.message_id AND m.platform_message_id IS NULL
"""

# Inbound replays change nothing. An echo of a message we sent (the sender's row already carries the mid)
# updates that row (at least `sent`) instead of creating a duplicate; other echoes become outbound rows,
# already delivered or read if their thread's watermark is here (watermark_receipts).
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
# after the batch's messages: one whose message is here is linked and stored applied, and a trigger folds
# it into the message's status; the rest wait for their message (the message triggers apply them).
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


# ───────────────────────────── WhatsApp: identities, templates, pricing ─────────────────────────────

# The thread each business-scoped user id of the batch belongs to (its participant_id: the phone number when
# known; an id replaced by a user_id_update is read as its replacement). Ids with no thread, or whose thread
# lacks the observed phone number, and every user_id_update, are linked first (link_whatsapp_participants,
# sql/006): two indexed probes per user id when nothing is new, which is nearly always.
RESOLVE_USER_IDS = """
SELECT x.channel_id, x.user_id, t.participant_id
FROM jsonb_to_recordset(%(rows)s::jsonb) AS x (channel_id text, user_id text)
LEFT JOIN whatsapp_user_id_change c ON c.channel_id = x.channel_id AND c.previous_user_id = x.user_id
JOIN conversation_thread t
  ON t.platform = 'whatsapp' AND t.channel_id = x.channel_id AND t.participant_user_id = coalesce(c.user_id, x.user_id)
"""

LINK_USER_IDS = "SELECT link_whatsapp_participants(%(rows)s::jsonb)"

# Template webhooks, folded per template (several may come in one batch): each kind of change (status,
# quality, category) is applied only if Meta made it after the one the catalog holds; a template the catalog
# does not know yet is added with what the webhook says (its components come with the next sync). The
# category a status update names only fills in one we do not know: template_category_update changes it.
APPLY_TEMPLATE_UPDATES = """
INSERT INTO whatsapp_message_template AS t (waba_id, template_id, name, language, status, category,
                                            previous_category, quality_score, rejected_reason, status_changed_at,
                                            quality_changed_at, category_changed_at)
SELECT waba_id, template_id, coalesce(name, ''), coalesce(language, ''), status, category, previous_category,
       quality, reason, status_at, quality_at, category_at
FROM (
    SELECT waba_id, template_id,
           (array_agg(name ORDER BY ts DESC) FILTER (WHERE name IS NOT NULL))[1] AS name,
           (array_agg(language ORDER BY ts DESC) FILTER (WHERE language IS NOT NULL))[1] AS language,
           (array_agg(value ORDER BY ts DESC) FILTER (WHERE change = 'status'))[1] AS status,
           (array_agg(nullif(reason, 'NONE') ORDER BY ts DESC) FILTER (WHERE change = 'status'))[1] AS reason,
           to_timestamp(max(ts) FILTER (WHERE change = 'status') / 1000.0) AS status_at,
           (array_agg(value ORDER BY ts DESC) FILTER (WHERE change = 'quality'))[1] AS quality,
           to_timestamp(max(ts) FILTER (WHERE change = 'quality') / 1000.0) AS quality_at,
           coalesce((array_agg(value ORDER BY ts DESC) FILTER (WHERE change = 'category'))[1],
                    (array_agg(category ORDER BY ts DESC) FILTER (WHERE category IS NOT NULL))[1]) AS category,
           (array_agg(previous ORDER BY ts DESC) FILTER (WHERE change = 'category'))[1] AS previous_category,
           to_timestamp(max(ts) FILTER (WHERE change = 'category') / 1000.0) AS category_at
    FROM jsonb_to_recordset(%(rows)s::jsonb)
         AS x (waba_id text, template_id text, name text, language text, change text, value text,
               category text, previous text, reason text, ts bigint)
    GROUP BY waba_id, template_id
    ORDER BY waba_id, template_id
) u
ON CONFLICT (waba_id, template_id) DO UPDATE SET
    name = CASE WHEN EXCLUDED.name <> '' THEN EXCLUDED.name ELSE t.name END,
    language = CASE WHEN EXCLUDED.language <> '' THEN EXCLUDED.language ELSE t.language END,
    status = CASE WHEN EXCLUDED.status_changed_at > coalesce(t.status_changed_at, '-infinity')
                  THEN EXCLUDED.status ELSE t.status END,
    rejected_reason = CASE WHEN EXCLUDED.status_changed_at > coalesce(t.status_changed_at, '-infinity')
                           THEN EXCLUDED.rejected_reason ELSE t.rejected_reason END,
    status_changed_at = GREATEST(t.status_changed_at, EXCLUDED.status_changed_at),
    quality_score = CASE WHEN EXCLUDED.quality_changed_at > coalesce(t.quality_changed_at, '-infinity')
                         THEN EXCLUDED.quality_score ELSE t.quality_score END,
    quality_changed_at = GREATEST(t.quality_changed_at, EXCLUDED.quality_changed_at),
    category = CASE WHEN EXCLUDED.category_changed_at > coalesce(t.category_changed_at, '-infinity')
                    THEN EXCLUDED.category ELSE coalesce(t.category, EXCLUDED.category) END,
    previous_category = CASE WHEN EXCLUDED.category_changed_at > coalesce(t.category_changed_at, '-infinity')
                             THEN coalesce(EXCLUDED.previous_category, t.previous_category)
                             ELSE t.previous_category END,
    category_changed_at = GREATEST(t.category_changed_at, EXCLUDED.category_changed_at),
    updated_at = now()
"""

# Each outbound WhatsApp message's pricing, from the earliest status that carried one.
INSERT_PRICING = """
INSERT INTO whatsapp_message_pricing AS p (platform_message_id, channel_id, category, pricing_type, pricing_model,
                                           billable, priced_at)
SELECT DISTINCT ON (mid) mid, channel_id, category, pricing_type, pricing_model, billable, to_timestamp(ts / 1000.0)
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS x (mid text, channel_id text, category text, pricing_type text, pricing_model text, billable boolean,
           ts bigint)
ORDER BY mid, ts
ON CONFLICT (platform_message_id) DO UPDATE
    SET channel_id = EXCLUDED.channel_id, category = EXCLUDED.category, pricing_type = EXCLUDED.pricing_type,
        pricing_model = EXCLUDED.pricing_model, billable = EXCLUDED.billable, priced_at = EXCLUDED.priced_at,
        updated_at = now()
    WHERE EXCLUDED.priced_at < p.priced_at
"""


# ───────────────────────────── records → rows ─────────────────────────────

@dataclass(slots=True)
class Rows:
    """A batch's records flattened into the row shapes the statements above read."""

    threads: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    watermarks: list[dict[str, Any]] = field(default_factory=list)
    ours: list[dict[str, Any]] = field(default_factory=list)  # Meta's ids of messages that name our job
    threads_created: int = 0
    stories: list[StoryInsights] = field(default_factory=list)  # Instagram story_insights (organic tables)
    #: WhatsApp users seen with a business-scoped user id: {channel_id, phone, user_id, previous_user_id, ts}.
    user_ids: list[dict[str, Any]] = field(default_factory=list)
    #: The thread and message rows of users known by user id alone: their participant_id is re-pointed at
    #: the user's thread (the phone number, if we know it) once the batch's user ids are resolved.
    by_user_id: list[dict[str, Any]] = field(default_factory=list)
    templates: list[dict[str, Any]] = field(default_factory=list)
    pricing: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: Record) -> None:
        if isinstance(record, Message):
            thread = {"platform": record.platform, "channel_id": record.channel_id,
                      "participant_id": record.participant_id, "participant_name": record.participant_name}
            message = {
                "platform": record.platform, "channel_id": record.channel_id,
                "participant_id": record.participant_id, "mid": record.mid, "direction": record.direction,
                "message_type": record.message_type, "content": record.text, "payload": record.raw,
                "is_echo": record.is_echo, "reply_to_id": record.reply_to_id, "ts": record.timestamp_ms}
            self.threads.append(thread)
            self.messages.append(message)
            if record.metadata:
                self.ours.append({"job": record.metadata, "platform": record.platform, "mid": record.mid})
            if record.participant_user_id is not None:
                self.user_ids.append({"channel_id": record.channel_id, "phone": record.participant_phone,
                                      "user_id": record.participant_user_id, "previous_user_id": None,
                                      "ts": record.timestamp_ms})
                if record.participant_phone is None:
                    self.by_user_id += [thread, message]
        elif isinstance(record, UserIdUpdate):
            self.user_ids.append({"channel_id": record.channel_id, "phone": record.phone,
                                  "user_id": record.user_id, "previous_user_id": record.previous_user_id,
                                  "ts": record.timestamp_ms})
        elif isinstance(record, TemplateUpdate):
            self.templates.append({
                "waba_id": record.waba_id, "template_id": record.template_id, "name": record.name,
                "language": record.language, "change": record.change, "value": record.value,
                "category": record.category, "previous": record.previous, "reason": record.reason,
                "ts": record.timestamp_ms})
        elif isinstance(record, Status):
            if record.priced is not None:
                self.pricing.append({
                    "mid": record.mid, "channel_id": record.channel_id, "category": record.priced.category,
                    "pricing_type": record.priced.type, "pricing_model": record.priced.model,
                    "billable": record.priced.charged, "ts": record.timestamp_ms})
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
            if record.biz_opaque_callback_data:
                self.ours.append({"job": record.biz_opaque_callback_data, "platform": record.platform,
                                  "mid": record.mid})
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
        elif isinstance(record, StoryInsights):
            self.stories.append(record)

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
    INSERT, which locks the batch's threads. WhatsApp identities go first (the threads the messages join),
    pricing, template changes and watermarks before it (the INSERT's trigger applies watermarks to the
    batch's own messages); receipts after it, so that those whose message is in this batch are stored
    applied.
    """
    rows = Rows()
    for record in records:
        rows.add(record)
    if rows.stories:  # no thread locks: first
        write_story_webhooks(conn, rows.stories)
    if rows.user_ids:
        _resolve_user_ids(conn, rows)
    if rows.pricing:
        conn.execute(INSERT_PRICING, {"rows": jsonb(rows.pricing)})
    if rows.templates:
        conn.execute(APPLY_TEMPLATE_UPDATES, {"rows": jsonb(rows.templates)})
    named_threads = [t for t in rows.threads if t["participant_name"] is not None]
    if rows.threads:
        rows.threads_created = conn.execute(INSERT_THREADS, {"rows": jsonb(rows.threads)}).rowcount
    if rows.watermarks:
        conn.execute(APPLY_WATERMARKS, {"rows": jsonb(rows.watermarks)})
    if rows.ours:
        conn.execute(ATTACH_OUR_SENDS, {"rows": jsonb(rows.ours)})
    if rows.messages:
        conn.execute(INSERT_MESSAGES, {"rows": jsonb(rows.messages)})
    if named_threads:
        conn.execute(UPDATE_THREAD_NAMES, {"rows": jsonb(named_threads)})
    if rows.receipts:
        conn.execute(INSERT_RECEIPTS, {"rows": jsonb(rows.receipts)})
    return rows


def _resolve_user_ids(conn: psycopg.Connection, rows: Rows) -> None:
    """Link what is new about the batch's WhatsApp identities, then point the rows of users known by user id
    alone at their thread. A thread merged away by a concurrent drain meanwhile is created again by
    INSERT_THREADS (nothing is lost) and merged the next time the user's id is seen."""
    observed = {(u["channel_id"], u["phone"], u["user_id"], u["previous_user_id"]): u
                for u in sorted(rows.user_ids, key=lambda u: u["ts"])}  # each identity once, as last seen
    threads = _threads_by_user_id(conn, {(u["channel_id"], u["user_id"]) for u in observed.values()})
    links = [u for u in observed.values() if u["previous_user_id"] is not None
             or (u["channel_id"], u["user_id"]) not in threads
             or (u["phone"] is not None and threads[u["channel_id"], u["user_id"]] != u["phone"])]
    if links:
        conn.execute(LINK_USER_IDS, {"rows": jsonb(links)})
        if rows.by_user_id:
            threads = _threads_by_user_id(conn, {(r["channel_id"], r["participant_id"]) for r in rows.by_user_id})
    for row in rows.by_user_id:
        row["participant_id"] = threads.get((row["channel_id"], row["participant_id"]), row["participant_id"])


def _threads_by_user_id(conn: psycopg.Connection, user_ids: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    found = conn.execute(RESOLVE_USER_IDS, {"rows": jsonb([{"channel_id": c, "user_id": u}
                                                            for c, u in user_ids])}).fetchall()
    return {(get(r, 0, "channel_id"), get(r, 1, "user_id")): get(r, 2, "participant_id") for r in found}


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
