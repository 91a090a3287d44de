"""The reports' SQL: each replaces the days ``[%(since)s, %(until)s)`` of its table from the tables it reads,
in one statement (delete the range, then insert it). Days are UTC days, whatever the server's time zone."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class Report:
    table: str
    refresh: str
    #: How the preview (the latest day's rows, in the materialization's metadata) is ordered.
    preview_order: str

    @property
    def delete(self) -> sql.Composed:
        return DELETE.format(table=sql.Identifier(self.table))

    @property
    def preview(self) -> sql.Composed:
        return PREVIEW.format(table=sql.Identifier(self.table), order=sql.SQL(self.preview_order))


DELETE = sql.SQL("DELETE FROM {table} WHERE date >= %(since)s AND date < %(until)s")
#: The range's latest day, for the materialization's preview.
PREVIEW = sql.SQL("SELECT * FROM {table} WHERE date = (SELECT max(date) FROM {table} WHERE date >= %(since)s "
                  "AND date < %(until)s) ORDER BY {order} LIMIT 20")


MESSAGE_VOLUME = Report("message_volume_daily", """
INSERT INTO message_volume_daily (date, platform, direction, message_count)
SELECT (cm.sent_at AT TIME ZONE 'UTC')::date, ct.platform, cm.direction, count(*)
FROM conversation_message cm JOIN conversation_thread ct ON ct.thread_id = cm.thread_id
WHERE cm.sent_at >= %(start)s AND cm.sent_at < %(end)s
GROUP BY 1, 2, 3
""", "platform, direction")

MESSAGE_DELIVERY_RATES = Report("message_delivery_rates_daily", """
INSERT INTO message_delivery_rates_daily (date, status, message_count, percentage)
SELECT (sent_at AT TIME ZONE 'UTC')::date AS day, status, count(*),
       round(count(*) * 100.0 / sum(count(*)) OVER (PARTITION BY (sent_at AT TIME ZONE 'UTC')::date), 2)
FROM conversation_message
WHERE direction = 'outbound' AND sent_at >= %(start)s AND sent_at < %(end)s
GROUP BY 1, 2
""", "message_count DESC")

CONVERSION_EVENTS = Report("conversion_events_daily", """
INSERT INTO conversion_events_daily (date, pixel_id, event_name, event_count, total_value, avg_value)
SELECT (event_time AT TIME ZONE 'UTC')::date, pixel_id, event_name, count(*), sum(value), avg(value)
FROM meta_conversion_event
WHERE event_time >= %(start)s AND event_time < %(end)s
GROUP BY 1, 2, 3
""", "event_count DESC")

CAMPAIGN_PERFORMANCE = Report("campaign_performance_daily", """
INSERT INTO campaign_performance_daily (date, campaign_id, ad_account_id, meta_campaign_id, campaign_name, currency,
                                        spend, impressions, clicks, conversions, conversion_value, cpc, cpm, ctr, roas)
SELECT p.date, p.campaign_id, min(p.ad_account_id), min(p.meta_campaign_id),
       coalesce(min(c.name), min(p.metadata ->> 'campaign_name')), min(p.currency),
       sum(p.spend), sum(p.impressions), sum(p.clicks), sum(p.conversions), sum(p.conversion_value),
       sum(p.spend) / nullif(sum(p.clicks), 0), sum(p.spend) * 1000 / nullif(sum(p.impressions), 0),
       sum(p.clicks) * 100.0 / nullif(sum(p.impressions), 0), sum(p.conversion_value) / nullif(sum(p.spend), 0)
FROM ad_performance p LEFT JOIN campaign c ON c.campaign_id = p.campaign_id
WHERE p.level = 'campaign' AND p.date >= %(since)s AND p.date < %(until)s
GROUP BY p.date, p.campaign_id
""", "spend DESC")

# Meta's attributed conversions come from the raw actions of campaign-level rows (every configured account),
# under the action type the Pixel/Conversions API event is counted as.
CONVERSION_RECONCILIATION = Report("conversion_reconciliation_daily", """
WITH ours AS (
    SELECT (event_time AT TIME ZONE 'UTC')::date AS date, pixel_id, event_name, count(*) AS stored,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           coalesce(sum(events_received) FILTER (WHERE status = 'sent'), 0) AS received
    FROM meta_conversion_event
    WHERE event_time >= %(start)s AND event_time < %(end)s AND test_event_code IS NULL
    GROUP BY 1, 2, 3
), types AS (
    SELECT * FROM unnest(%(event_names)s::text[], %(action_types)s::text[]) AS t (event_name, action_type)
), attributed AS (
    SELECT p.date, a ->> 'action_type' AS action_type, sum((a ->> 'value')::numeric) AS conversions
    FROM ad_performance p, jsonb_array_elements(p.metadata -> 'actions') AS a
    WHERE p.level = 'campaign' AND p.date >= %(since)s AND p.date < %(until)s
    GROUP BY 1, 2
)
INSERT INTO conversion_reconciliation_daily (date, pixel_id, event_name, action_type, events_stored, events_sent,
                                             events_received, meta_attributed)
SELECT o.date, o.pixel_id, o.event_name, t.action_type, o.stored, o.sent, o.received,
       coalesce(a.conversions, 0)
FROM ours o
LEFT JOIN types t ON t.event_name = o.event_name
LEFT JOIN attributed a ON a.date = o.date AND a.action_type = t.action_type
""", "event_name")

REPORTS = (MESSAGE_VOLUME, MESSAGE_DELIVERY_RATES, CONVERSION_EVENTS, CAMPAIGN_PERFORMANCE, CONVERSION_RECONCILIATION)
