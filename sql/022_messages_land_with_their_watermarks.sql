-- Webhooks in: an outbound Messenger/Instagram message lands already delivered (or read) when its thread's
-- watermark got here first.
--
-- Echoes often arrive after the watermark that covers them. Before, such a message was inserted `sent` and
-- then rewritten by 020's trigger: one more row version, with an entry in each of the table's six indexes,
-- for about one message in six of the drain's. Now the drain's INSERT looks the watermarks up itself
-- (watermark_receipts), and the trigger only probes for watermarks that would still change a message.

-- When the first stored watermark of each kind at or after p_sent_at says the thread's messages were
-- delivered and read. Meta's watermarks only move forward, so that one is also the earliest covering a
-- message sent at p_sent_at. Declared as a set-returning SQL function so that Postgres inlines it: each call
-- is two index probes, not a function call.
CREATE OR REPLACE FUNCTION watermark_receipts(p_thread_id uuid, p_sent_at timestamptz)
RETURNS TABLE (delivered_at timestamptz, read_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT e.occurred_at FROM message_delivery_event e
            WHERE e.thread_id = p_thread_id AND e.platform_message_id IS NULL
              AND e.event_type = 'delivered' AND e.watermark >= p_sent_at
            ORDER BY e.watermark LIMIT 1),
           (SELECT e.occurred_at FROM message_delivery_event e
            WHERE e.thread_id = p_thread_id AND e.platform_message_id IS NULL
              AND e.event_type = 'read' AND e.watermark >= p_sent_at
            ORDER BY e.watermark LIMIT 1)
$$;

-- As in 020, but a watermark is a hit only if it would still change the message: not for one inserted
-- `read`, and only a read watermark for one inserted `delivered`.
CREATE OR REPLACE FUNCTION conversation_message_apply_pending_on_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$
        SELECT apply_pending_delivery_events(ARRAY(
            SELECT n.message_id FROM landed_messages n
            LEFT JOIN LATERAL (
                SELECT true AS hit FROM message_delivery_event e
                WHERE NOT e.applied AND e.platform = n.platform
                  AND e.platform_message_id = n.platform_message_id
                LIMIT 1) r ON true
            LEFT JOIN LATERAL (
                SELECT true AS hit FROM message_delivery_event e
                WHERE n.direction = 'outbound' AND n.platform IN ('messenger', 'instagram')
                  AND n.status IN ('sent', 'delivered')
                  AND e.thread_id = n.thread_id AND e.platform_message_id IS NULL
                  AND e.event_type = ANY (CASE WHEN n.status = 'sent' THEN ARRAY['delivered', 'read']
                                               ELSE ARRAY['read'] END)
                  AND e.watermark >= n.sent_at
                LIMIT 1) w ON true
            WHERE n.platform_message_id IS NOT NULL AND (r.hit OR w.hit)))
    $q$;
    RETURN NULL;
END $$;
