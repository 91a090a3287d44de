"""``meta_conversion_event``'s statements, shared by the endpoint and the asset: events are stored hashed
(only :data:`~everreach_data.meta.capi.STORABLE_FIELDS`; the client IP is sent, never stored) before Meta
is called, and marked with Meta's answer after."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.types.json import Jsonb

from everreach_data.meta.capi import STORABLE_FIELDS, ServerEvent

#: New events stored pending; one already stored under its (pixel, name, event_id) is left as it is.
STORE_EVENTS = """
INSERT INTO meta_conversion_event (pixel_id, event_id, event_name, event_time, action_source, event_source_url,
                                   user_id, source_event_id, user_data, custom_data, value, currency,
                                   test_event_code)
SELECT %(pixel)s, r.event_id, r.event_name, to_timestamp(r.event_time), r.action_source, r.event_source_url,
       r.user_id, r.source_event_id, r.user_data, r.custom_data, r.value, r.currency, r.test_event_code
FROM jsonb_to_recordset(%(rows)s) AS r(event_id text, event_name text, event_time bigint, action_source text,
                                       event_source_url text, user_id uuid, source_event_id uuid,
                                       user_data jsonb, custom_data jsonb, value numeric, currency text,
                                       test_event_code text)
ON CONFLICT (pixel_id, event_name, event_id) DO NOTHING
RETURNING conversion_event_id
"""
#: The endpoint's event in the app's own event log (the asset's events come from it).
LOG_USER_EVENT = """
INSERT INTO user_event (user_id, event_type, source, occurred_at, properties)
VALUES (%(user_id)s, 'meta_conversion', 'conversions_api', to_timestamp(%(event_time)s),
        jsonb_build_object('event_name', %(event_name)s::text, 'event_id', %(event_id)s::text,
                           'value', %(value)s::numeric, 'currency', %(currency)s::text))
"""
EXISTING = """
SELECT status, events_received, fbtrace_id, error_message FROM meta_conversion_event
WHERE pixel_id = %(pixel)s AND event_name = %(event_name)s AND event_id = %(event_id)s
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
#: A partition's rows (its events' UTC days).
PARTITION_ROWS = """
SELECT count(*) AS n FROM meta_conversion_event WHERE event_time >= %(start)s AND event_time < %(end)s
"""
#: Stored identifiers that are not SHA-256 hashes, or fields that may not be stored at all (each value counts).
UNHASHED_VALUES = """
SELECT count(*) AS n
FROM meta_conversion_event e, jsonb_each(e.user_data) AS kv (key, value),
     jsonb_array_elements(CASE jsonb_typeof(kv.value) WHEN 'array' THEN kv.value ELSE jsonb_build_array(kv.value) END)
     AS v (item)
WHERE NOT kv.key = ANY (%(storable)s) OR (kv.key = ANY (%(hashed)s) AND NOT (v.item #>> '{}') ~ '^[0-9a-f]{64}$')
"""


def stored_row(event: ServerEvent, *, user_id: uuid.UUID | str | None = None,
               source_event_id: uuid.UUID | str | None = None, test_event_code: str | None = None) -> dict[str, Any]:
    """One row of :data:`STORE_EVENTS`: the event as sent, minus what may not be stored."""
    return {
        "event_id": event.event_id, "event_name": event.event_name, "event_time": event.event_time,
        "action_source": event.action_source, "event_source_url": event.event_source_url,
        "user_id": str(user_id) if user_id else None,
        "source_event_id": str(source_event_id) if source_event_id else None,
        "user_data": {k: v for k, v in event.user_data.items() if k in STORABLE_FIELDS},
        "custom_data": event.custom_data, "value": event.custom_data.get("value"),
        "currency": event.custom_data.get("currency"), "test_event_code": test_event_code,
    }


def store_params(pixel_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pixel": pixel_id, "rows": Jsonb(rows)}
