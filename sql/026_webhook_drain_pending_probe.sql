-- Webhook drain: 020's insert trigger asked "is a receipt waiting for this message?" with EXISTS … OR
-- EXISTS. Postgres turns that EXISTS into a hashed subplan — a seq scan of every unapplied receipt (receipts
-- for messages that never land here accumulate) — on every message INSERT, so each batch cost grew with
-- the table and a drain's total cost grew with its square. LATERAL … LIMIT 1 cannot be hashed: each
-- landed message is one probe of message_delivery_event_unapplied_idx (and of the watermark key), whatever
-- the table size. Same messages selected, same function called: semantics unchanged.
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
                  AND e.thread_id = n.thread_id AND e.platform_message_id IS NULL
                  AND e.event_type IN ('delivered', 'read') AND e.watermark >= n.sent_at
                LIMIT 1) w ON true
            WHERE n.platform_message_id IS NOT NULL AND (r.hit OR w.hit)))
    $q$;
    RETURN NULL;
END $$;
