-- Organic insights: every date derived in UTC, audience demographics, account insights by breakdown.

-- ───────────────────────────── UTC days ─────────────────────────────

-- Partitions and reports are UTC days. date(timestamptz) takes the day in the session's TimeZone, so on a
-- server set to Asia/Tokyo a message sent at 23:30 UTC was counted on the next day.
CREATE OR REPLACE VIEW message_volume_daily AS
SELECT ct.platform, cm.direction, (cm.sent_at AT TIME ZONE 'UTC')::date AS date, count(*) AS message_count
FROM conversation_message cm JOIN conversation_thread ct ON cm.thread_id = ct.thread_id
GROUP BY ct.platform, cm.direction, (cm.sent_at AT TIME ZONE 'UTC')::date;
