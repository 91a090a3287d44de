"""The ``meta_conversion_event`` asset's work, without Dagster: the app's ``user_event`` rows that are Meta
conversions collected as pending events, then sent to the Conversions API.

Each app event becomes one server event whose ``event_id`` is the ``user_event`` id, so a re-run (or the
browser pixel sending the same id) is deduplicated by Meta and by our unique key. Events Meta would refuse
for age (over 7 days) are marked failed instead of sent, because one stale event makes Meta reject the whole
batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from everreach_data.conversions.store import MARK_FAILED, MARK_SENT, STORE_EVENTS, store_params, stored_row
from everreach_data.meta.capi import (
    MAX_EVENT_AGE_SECONDS,
    SEND_AGE_MARGIN_SECONDS,
    ConversionInputError,
    ServerEvent,
    custom_data,
    normalize_user_data,
    send_events,
)
from everreach_data.meta.client import GraphClient
from everreach_data.meta.errors import ErrorKind, GraphAPIError

#: App event types that are Meta standard events (configurable on the asset).
DEFAULT_EVENT_MAP = {
    "purchase": "Purchase",
    "lead_submitted": "Lead",
    "signup": "CompleteRegistration",
    "checkout_started": "InitiateCheckout",
}

APP_EVENTS = """
SELECT ue.event_id, ue.event_type, ue.user_id, extract(epoch FROM ue.occurred_at)::bigint AS event_time,
       ue.properties, u.email
FROM user_event ue
LEFT JOIN auth.users u ON u.id = ue.user_id
WHERE ue.occurred_at >= %(start)s AND ue.occurred_at < %(end)s AND ue.event_type = ANY(%(types)s)
  AND NOT EXISTS (SELECT 1 FROM meta_conversion_event m
                  WHERE m.pixel_id = %(pixel)s AND m.event_id = ue.event_id::text)
"""
MARK_STALE = """
UPDATE meta_conversion_event
SET status = 'failed', error_message = 'older than the Conversions API''s 7-day limit; not sent'
WHERE pixel_id = %(pixel)s AND status = 'pending' AND event_time >= %(start)s AND event_time < %(end)s
  AND event_time < now() - make_interval(secs => %(max_age)s)
"""
PENDING = """
SELECT conversion_event_id, event_id, event_name, extract(epoch FROM event_time)::bigint AS event_time,
       action_source, event_source_url, user_data, custom_data, test_event_code
FROM meta_conversion_event
WHERE pixel_id = %(pixel)s AND status = 'pending' AND event_time >= %(start)s AND event_time < %(end)s
ORDER BY event_time
"""


@dataclass
class SyncReport:
    collected: int = 0
    skipped_invalid: int = 0
    stale: int = 0
    sent: int = 0
    events_received: int = 0
    failed: int = 0
    batches: int = 0
    fbtrace_ids: tuple[str, ...] = ()


def collect_app_events(conn: psycopg.Connection, pixel_id: str, start: datetime, end: datetime,
                       event_map: dict[str, str], action_source: str) -> tuple[int, int]:
    """Store the window's app events as pending conversion events; returns (stored, skipped as unusable)."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    for ev in conn.execute(APP_EVENTS, {"start": start, "end": end, "types": list(event_map), "pixel": pixel_id}):
        props = ev["properties"] or {}
        try:
            user = normalize_user_data({"em": ev["email"], "external_id": str(ev["user_id"] or "") or None})
            custom = custom_data(value=props.get("value"), currency=props.get("currency"),
                                 order_id=props.get("order_id"))
        except ConversionInputError:
            skipped += 1
            continue
        if not user:
            skipped += 1  # nothing Meta could match the event to
            continue
        event = ServerEvent(event_name=event_map[ev["event_type"]], event_time=ev["event_time"],
                            event_id=str(ev["event_id"]), action_source=action_source, user_data=user,
                            custom_data=custom)
        rows.append(stored_row(event, user_id=ev["user_id"], source_event_id=ev["event_id"]))
    if rows:
        conn.execute(STORE_EVENTS, store_params(pixel_id, rows))
    return len(rows), skipped


def send_pending(conn: psycopg.Connection, client: GraphClient, pixel_id: str, start: datetime,
                 end: datetime, report: SyncReport) -> None:
    """Send the window's pending events, ≤1000 per request, recording Meta's answer on each row."""
    window = {"pixel": pixel_id, "start": start, "end": end,
              "max_age": MAX_EVENT_AGE_SECONDS - SEND_AGE_MARGIN_SECONDS}
    report.stale += conn.execute(MARK_STALE, window).rowcount
    conn.commit()
    by_code: dict[str | None, list[tuple[Any, ServerEvent]]] = {}
    for row in conn.execute(PENDING, window):
        event = ServerEvent(event_name=row["event_name"], event_time=row["event_time"], event_id=row["event_id"],
                            action_source=row["action_source"], user_data=row["user_data"],
                            custom_data=row["custom_data"], event_source_url=row["event_source_url"])
        by_code.setdefault(row["test_event_code"], []).append((row["conversion_event_id"], event))
    for code, items in by_code.items():
        ids = [i for i, _ in items]
        try:
            results = send_events(client, pixel_id, [e for _, e in items], test_event_code=code)
        except GraphAPIError as exc:
            if exc.retryable or exc.kind in (ErrorKind.AUTH, ErrorKind.PERMISSION):
                raise  # not the events' fault: left pending for the next run once the cause is fixed
            conn.execute(MARK_FAILED, {"ids": ids, "error": str(exc), "trace": exc.fbtrace_id})
            conn.commit()
            report.failed += len(ids)
            continue
        offset = 0
        for result in results:
            batch_ids = ids[offset:offset + len(result.events)]
            offset += len(result.events)
            conn.execute(MARK_SENT, {"ids": batch_ids, "received": result.events_received,
                                     "trace": result.fbtrace_id})
            conn.commit()
            report.batches += 1
            report.sent += len(result.events)
            report.events_received += result.events_received
            if result.fbtrace_id:
                report.fbtrace_ids += (result.fbtrace_id,)
