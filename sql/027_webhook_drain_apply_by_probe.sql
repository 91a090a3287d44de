-- Webhook drain: apply_pending_delivery_events() (020) with the same effect, but every lookup driven from
-- the given messages by index, so its cost follows the batch, not the tables:
--  * receipts: with a few hundred messages Postgres hash-joined them against a seq scan of EVERY
--    unapplied receipt (receipts whose message never lands here accumulate: ~29k of 64k after 100k
--    events, ~30 ms per batch and growing). A LATERAL (… OFFSET 0) probe of message_delivery_event_unapplied_idx
--    per message collects the receipt ids first; the UPDATE then touches exactly those (primary key).
--  * watermarks: the messages were found by scanning conversation_message_outbound_open_idx (every open
--    outbound message, a set that only grows) and filtering by id. A MATERIALIZED CTE looks them up by
--    primary key first, then applies the same filters.
CREATE OR REPLACE FUNCTION apply_pending_delivery_events(p_message_ids uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    changed integer := 0;
    n integer;
    receipt_ids uuid[];
BEGIN
    IF p_message_ids IS NULL OR cardinality(p_message_ids) = 0 THEN
        RETURN 0;
    END IF;

    SELECT array_agg(x.delivery_event_id) INTO receipt_ids
    FROM conversation_message m
    CROSS JOIN LATERAL (
        SELECT e.delivery_event_id FROM message_delivery_event e
        WHERE NOT e.applied AND e.platform = m.platform AND e.platform_message_id = m.platform_message_id
        OFFSET 0) x
    WHERE m.message_id = ANY (p_message_ids) AND m.platform_message_id IS NOT NULL;

    IF receipt_ids IS NOT NULL THEN
        WITH ev AS (
            UPDATE message_delivery_event e
            SET applied = true, message_id = m.message_id, thread_id = m.thread_id
            FROM conversation_message m
            WHERE e.delivery_event_id = ANY (receipt_ids)
              AND m.message_id = ANY (p_message_ids)
              AND m.platform_message_id IS NOT NULL
              AND NOT e.applied
              AND e.platform = m.platform AND e.platform_message_id = m.platform_message_id
            RETURNING e.message_id, e.event_type, e.occurred_at, e.error_code, e.error_title
        ), agg AS (
            SELECT message_id,
                   (array_agg(event_type ORDER BY message_status_rank(event_type) DESC))[1] AS top,
                   min(occurred_at) FILTER (WHERE event_type = 'delivered') AS delivered_at,
                   min(occurred_at) FILTER (WHERE event_type = 'read') AS read_at,
                   min(occurred_at) FILTER (WHERE event_type = 'failed') AS failed_at,
                   (array_agg(error_code ORDER BY occurred_at) FILTER (WHERE event_type = 'failed'))[1] AS error_code,
                   (array_agg(error_title ORDER BY occurred_at) FILTER (WHERE event_type = 'failed'))[1] AS error_title
            FROM ev GROUP BY message_id
        )
        UPDATE conversation_message m
        SET status = CASE WHEN message_status_rank(agg.top) > message_status_rank(m.status) THEN agg.top
                          ELSE m.status END,
            delivered_at = LEAST(m.delivered_at, agg.delivered_at, agg.read_at),
            read_at = LEAST(m.read_at, agg.read_at),
            failed_at = COALESCE(m.failed_at, agg.failed_at),
            error_code = COALESCE(m.error_code, agg.error_code),
            error_message = COALESCE(m.error_message, agg.error_title),
            updated_at = now()
        FROM agg
        WHERE m.message_id = agg.message_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        changed := changed + n;
    END IF;

    -- Messenger watermarks already stored for the thread cover outbound messages sent before them.
    WITH given AS MATERIALIZED (
        SELECT m2.message_id, m2.thread_id, m2.sent_at, m2.direction, m2.status, m2.platform
        FROM conversation_message m2 WHERE m2.message_id = ANY (p_message_ids)
    )
    UPDATE conversation_message m
    SET status = CASE WHEN wm.read_at IS NOT NULL THEN 'read' ELSE 'delivered' END,
        delivered_at = LEAST(m.delivered_at, wm.delivered_at, wm.read_at),
        read_at = LEAST(m.read_at, wm.read_at),
        updated_at = now()
    FROM (
        SELECT g.message_id,
               (SELECT min(e.occurred_at) FROM message_delivery_event e
                WHERE e.thread_id = g.thread_id AND e.platform_message_id IS NULL
                  AND e.event_type = 'delivered' AND e.watermark >= g.sent_at) AS delivered_at,
               (SELECT min(e.occurred_at) FROM message_delivery_event e
                WHERE e.thread_id = g.thread_id AND e.platform_message_id IS NULL
                  AND e.event_type = 'read' AND e.watermark >= g.sent_at) AS read_at
        FROM given g
        WHERE g.direction = 'outbound' AND g.status IN ('sent', 'delivered')
          AND g.platform IN ('messenger', 'instagram')
    ) wm
    WHERE m.message_id = wm.message_id
      AND (wm.read_at IS NOT NULL OR (wm.delivered_at IS NOT NULL AND m.status = 'sent'));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN changed + n;
END $$;
