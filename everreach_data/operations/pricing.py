"""The WhatsApp pricing report (``whatsapp_pricing_daily``): per day, phone number, pricing category and type,
the messages Meta priced (``whatsapp_message_pricing``, from their status webhooks) and how many of them are
billable and were delivered — Meta charges a message once it is delivered, so that is the figure a business
pays on. A message counts on the UTC day its pricing was reported (its ``sent`` status, usually)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import psycopg

DELETE_DAYS = "DELETE FROM whatsapp_pricing_daily WHERE date >= %(since)s AND date < %(until)s"

INSERT_DAYS = """
INSERT INTO whatsapp_pricing_daily (date, channel_id, category, pricing_type, messages, billable_messages)
SELECT (p.priced_at AT TIME ZONE 'UTC')::date, p.channel_id, p.category, coalesce(p.pricing_type, ''), count(*),
       count(*) FILTER (WHERE p.billable AND EXISTS (
           SELECT 1 FROM message_delivery_event e
           WHERE e.platform = 'whatsapp' AND e.platform_message_id = p.platform_message_id
             AND e.event_type IN ('delivered', 'read')))
FROM whatsapp_message_pricing p
WHERE p.priced_at >= %(since_at)s AND p.priced_at < %(until_at)s
GROUP BY 1, 2, 3, 4
"""

BY_CATEGORY = """
SELECT category, sum(messages)::bigint AS messages, sum(billable_messages)::bigint AS billable
FROM whatsapp_pricing_daily WHERE date >= %(since)s AND date < %(until)s
GROUP BY category ORDER BY category
"""


def replace_days(conn: psycopg.Connection, since: date, until: date) -> dict[str, dict[str, int]]:
    """Recompute the report for the days ``since`` ≤ day < ``until`` in one transaction; returns
    {category: {"messages", "billable"}} over them."""
    params = {"since": since, "until": until, "since_at": datetime.combine(since, time(), UTC),
              "until_at": datetime.combine(until, time(), UTC)}
    with conn.transaction():
        conn.execute(DELETE_DAYS, params)
        conn.execute(INSERT_DAYS, params)
        rows = conn.execute(BY_CATEGORY, params).fetchall()
    return {r["category"]: {"messages": r["messages"], "billable": r["billable"]} for r in rows}
