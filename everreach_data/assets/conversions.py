"""Asset ``meta_conversion_event``: the app's ``user_event`` rows that are Meta conversions, sent to the
Conversions API, one daily partition at a time.

Each app event becomes one server event whose ``event_id`` is the ``user_event`` id, so a re-run (or the
browser pixel sending the same id) is deduplicated by Meta and by our unique key. Events are hashed by the
same normalizer as the endpoint's (``meta/capi.py``); events Meta would refuse for age (over 7 days) are
marked failed instead of sent, because one stale event makes Meta reject the whole batch.
"""


import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
import psycopg
from psycopg.types.json import Jsonb

from everreach_data.meta.capi import (
    HASHED_FIELDS,
    MAX_EVENT_AGE_SECONDS,
    SEND_AGE_MARGIN_SECONDS,
    STORABLE_FIELDS,
    ConversionInputError,
    ServerEvent,
    custom_data,
    is_sha256,
    normalize_user_data,
    send_events,
)
from everreach_data.meta.client import GraphClient
from everreach_data.meta.errors import ErrorKind, GraphAPIError
from everreach_data.partitions import daily_partitions, insights_backfill_policy
from everreach_data.resources import GraphAPIResource, PostgresResource, meta_failures


class ConversionsAPIResource(GraphAPIResource):
    """The Conversions API: a pixel and its token (``META_PIXEL_ID``, ``META_CONVERSIONS_API_TOKEN``)."""

    pixel_id: str

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
STORE = """
INSERT INTO meta_conversion_event (pixel_id, event_id, event_name, event_time, action_source, user_id,
                                   source_event_id, user_data, custom_data, value, currency)
SELECT %(pixel)s, r.event_id, r.event_name, to_timestamp(r.event_time), %(action_source)s, r.user_id,
       r.user_id_event, r.user_data, r.custom_data, r.value, r.currency
FROM jsonb_to_recordset(%(rows)s) AS r(event_id text, event_name text, event_time bigint, user_id uuid,
                                       user_id_event uuid, user_data jsonb, custom_data jsonb, value numeric,
                                       currency text)
ON CONFLICT (pixel_id, event_name, event_id) DO NOTHING
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
MARK_SENT = """
UPDATE meta_conversion_event SET status = 'sent', events_received = %(received)s, fbtrace_id = %(trace)s,
       sent_at = now(), error_message = NULL
WHERE conversion_event_id = ANY(%(ids)s)
"""
MARK_FAILED = """
UPDATE meta_conversion_event SET status = 'failed', error_message = %(error)s, fbtrace_id = %(trace)s
WHERE conversion_event_id = ANY(%(ids)s)
"""
PARTITION_USER_DATA = """
SELECT user_data FROM meta_conversion_event
WHERE pixel_id = %(pixel)s AND event_time >= %(start)s AND event_time < %(end)s
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
        rows.append({"event_id": str(ev["event_id"]), "event_name": event_map[ev["event_type"]],
                     "event_time": ev["event_time"], "user_id": str(ev["user_id"]) if ev["user_id"] else None,
                     "user_id_event": str(ev["event_id"]), "user_data": user, "custom_data": custom,
                     "value": custom.get("value"), "currency": custom.get("currency")})
    if rows:
        conn.execute(STORE, {"pixel": pixel_id, "action_source": action_source, "rows": Jsonb(rows)})
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


def unhashed_values(conn: psycopg.Connection, pixel_id: str, start: datetime, end: datetime) -> int:
    """How many stored identifiers in the window are not SHA-256 hashes, or are fields we never store."""
    bad = 0
    for row in conn.execute(PARTITION_USER_DATA, {"pixel": pixel_id, "start": start, "end": end}):
        for key, value in row["user_data"].items():
            values = value if isinstance(value, list) else [value]
            if key not in STORABLE_FIELDS or (key in HASHED_FIELDS and not all(is_sha256(str(v)) for v in values)):
                bad += 1
    return bad


class ConversionsConfig(dg.Config):
    event_map: dict[str, str] = DEFAULT_EVENT_MAP
    action_source: str = "other"


@dg.asset(
    name="meta_conversion_event",
    partitions_def=daily_partitions,
    backfill_policy=insights_backfill_policy,
    group_name="conversions",
    kinds={"postgres", "meta"},
    check_specs=[
        dg.AssetCheckSpec("identifiers_are_hashed", asset="meta_conversion_event",
                          description="No raw PII: every stored identifier is a SHA-256 hash"),
        dg.AssetCheckSpec("meta_received_every_event_sent", asset="meta_conversion_event",
                          description="events_received equals the events sent"),
    ],
)
def meta_conversion_event(context: dg.AssetExecutionContext, config: ConversionsConfig,
                          postgres: PostgresResource, conversions_api: ConversionsAPIResource) -> dg.MaterializeResult:
    """Send the app's conversion events for the partition range to Meta's Conversions API."""
    pixel_id = conversions_api.pixel_id
    window = context.partition_time_window
    report = SyncReport()
    started = time.monotonic()
    with meta_failures("sending conversion events", "META_CONVERSIONS_API_TOKEN"), postgres.connect() as conn, \
            conversions_api.client() as client:
        report.collected, report.skipped_invalid = collect_app_events(
            conn, pixel_id, window.start, window.end, config.event_map, config.action_source)
        conn.commit()
        send_pending(conn, client, pixel_id, window.start, window.end, report)
        unhashed = unhashed_values(conn, pixel_id, window.start, window.end)
        calls = client.stats.calls
    return dg.MaterializeResult(
        metadata={
            "events_collected": report.collected, "events_sent": report.sent,
            "events_received": report.events_received, "stale_not_sent": report.stale,
            "rejected": report.failed, "skipped_unusable": report.skipped_invalid,
            "requests": report.batches, "api_calls": calls,
            "fbtrace_ids": dg.MetadataValue.json(list(report.fbtrace_ids[:20])),
            "duration_seconds": round(time.monotonic() - started, 3),
        },
        check_results=[
            dg.AssetCheckResult(check_name="identifiers_are_hashed", passed=unhashed == 0,
                                metadata={"unhashed_values": unhashed}),
            dg.AssetCheckResult(check_name="meta_received_every_event_sent",
                                passed=report.events_received == report.sent,
                                metadata={"sent": report.sent, "received": report.events_received}),
        ],
    )


meta_conversions_job = dg.define_asset_job("meta_conversions_job", selection=[meta_conversion_event],
                                           partitions_def=daily_partitions)

meta_conversions_daily = dg.build_schedule_from_partitioned_job(
    meta_conversions_job, name="meta_conversions_daily", hour_of_day=1, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="yesterday's app conversions to the Conversions API, well inside Meta's 7-day limit")
