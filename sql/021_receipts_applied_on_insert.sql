-- Webhooks in: a receipt whose message is already here is stored applied, in the INSERT that stores it.
--
-- 020 stored every receipt unapplied and then applied it: one more write (and foreign-key checks) per
-- receipt. Now the drain links a receipt to its message while inserting it; only receipts whose message has
-- not landed wait, as before, for 020's triggers. Folding receipts into message statuses lives in one
-- function, fold_delivery_events(), used by both paths.
--
-- Watermark lookups become one index probe each: the first watermark at or after a message's sent_at says
-- when it was delivered (or read). Meta's watermarks only move forward, so that receipt is also the earliest
-- one covering the message; 020 aggregated over every later watermark in the thread, a cost that grew with
-- the thread's history on every batch.

-- Fold applied receipts (message_id set) into their messages. Statuses only move up by
-- message_status_rank(): a late `delivered` never overwrites `read`; `failed` is terminal. Returns the number
-- of messages changed.
CREATE OR REPLACE FUNCTION fold_delivery_events(p_event_ids uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF p_event_ids IS NULL OR cardinality(p_event_ids) = 0 THEN
        RETURN 0;
    END IF;
    WITH agg AS (
        SELECT e.message_id,
               (array_agg(e.event_type ORDER BY message_status_rank(e.event_type) DESC))[1] AS top,
               min(e.occurred_at) FILTER (WHERE e.event_type = 'delivered') AS delivered_at,
               min(e.occurred_at) FILTER (WHERE e.event_type = 'read') AS read_at,
               min(e.occurred_at) FILTER (WHERE e.event_type = 'failed') AS failed_at,
               (array_agg(e.error_code ORDER BY e.occurred_at) FILTER (WHERE e.event_type = 'failed'))[1] AS error_code,
               (array_agg(e.error_title ORDER BY e.occurred_at) FILTER (WHERE e.event_type = 'failed'))[1] AS error_title
        FROM message_delivery_event e
        WHERE e.delivery_event_id = ANY (p_event_ids) AND e.message_id IS NOT NULL
        GROUP BY e.message_id
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
    RETURN n;
END $$;

-- Receipts inserted already applied (their message was found) are folded at the end of the INSERT.
CREATE OR REPLACE FUNCTION message_delivery_event_fold_on_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fold_delivery_events(ARRAY(
        SELECT n.delivery_event_id FROM inserted_events n
        WHERE n.applied AND n.message_id IS NOT NULL AND n.platform_message_id IS NOT NULL));
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS message_delivery_event_fold_insert ON message_delivery_event;
CREATE TRIGGER message_delivery_event_fold_insert
    AFTER INSERT ON message_delivery_event REFERENCING NEW TABLE AS inserted_events
    FOR EACH STATEMENT EXECUTE FUNCTION message_delivery_event_fold_on_insert();

-- Apply every pending per-message receipt, and every thread watermark at or after the message's sent_at,
-- to the given messages. Returns the number of messages whose row changed. Every lookup is driven from the
-- given messages by index, so the cost follows the batch, not the tables.
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

    -- Collected by a LATERAL probe per message, then updated by primary key: a join against every
    -- unapplied receipt (those whose message never lands here accumulate) would grow with every batch.
    SELECT array_agg(x.delivery_event_id) INTO receipt_ids
    FROM conversation_message m
    CROSS JOIN LATERAL (
        SELECT e.delivery_event_id FROM message_delivery_event e
        WHERE NOT e.applied AND e.platform = m.platform AND e.platform_message_id = m.platform_message_id
        OFFSET 0) x
    WHERE m.message_id = ANY (p_message_ids) AND m.platform_message_id IS NOT NULL;

    IF receipt_ids IS NOT NULL THEN
        WITH linked AS (
            UPDATE message_delivery_event e
            SET applied = true, message_id = m.message_id, thread_id = m.thread_id
            FROM conversation_message m
            WHERE e.delivery_event_id = ANY (receipt_ids)
              AND m.message_id = ANY (p_message_ids)
              AND NOT e.applied
              AND e.platform = m.platform AND e.platform_message_id = m.platform_message_id
            RETURNING e.delivery_event_id
        )
        SELECT array_agg(delivery_event_id) INTO receipt_ids FROM linked;
        changed := fold_delivery_events(receipt_ids);
    END IF;

    -- Messenger watermarks already stored for the thread cover outbound messages sent before them.
    -- MATERIALIZED: inlined, each probe would run once per reference to its result.
    WITH wm AS MATERIALIZED (
        SELECT g.message_id,
               (SELECT e.occurred_at FROM message_delivery_event e
                WHERE e.thread_id = g.thread_id AND e.platform_message_id IS NULL
                  AND e.event_type = 'delivered' AND e.watermark >= g.sent_at
                ORDER BY e.watermark LIMIT 1) AS delivered_at,
               (SELECT e.occurred_at FROM message_delivery_event e
                WHERE e.thread_id = g.thread_id AND e.platform_message_id IS NULL
                  AND e.event_type = 'read' AND e.watermark >= g.sent_at
                ORDER BY e.watermark LIMIT 1) AS read_at
        FROM conversation_message g
        WHERE g.message_id = ANY (p_message_ids)
          AND g.direction = 'outbound' AND g.status IN ('sent', 'delivered')
          AND g.platform IN ('messenger', 'instagram')
    )
    UPDATE conversation_message m
    SET status = CASE WHEN wm.read_at IS NOT NULL THEN 'read' ELSE 'delivered' END,
        delivered_at = LEAST(m.delivered_at, wm.delivered_at, wm.read_at),
        read_at = LEAST(m.read_at, wm.read_at),
        updated_at = now()
    FROM wm
    WHERE m.message_id = wm.message_id
      AND (wm.read_at IS NOT NULL OR (wm.delivered_at IS NOT NULL AND m.status = 'sent'));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN changed + n;
END $$;

-- Receipts and watermarks that were stored while their message was being written by a concurrent,
-- not yet committed transaction (neither saw the other) are applied here. Run when a drain finds the
-- queue empty; it reads only unapplied receipts and open outbound messages.
CREATE OR REPLACE FUNCTION apply_orphaned_delivery_events() RETURNS integer
LANGUAGE sql AS $$
    SELECT apply_pending_delivery_events(ARRAY(
        SELECT m.message_id FROM message_delivery_event e
        JOIN conversation_message m ON m.platform = e.platform AND m.platform_message_id = e.platform_message_id
        WHERE NOT e.applied
        UNION
        SELECT m.message_id FROM conversation_message m
        WHERE m.direction = 'outbound' AND m.status IN ('sent', 'delivered')
          AND m.platform IN ('messenger', 'instagram')
          AND EXISTS (SELECT 1 FROM message_delivery_event e
                      WHERE e.thread_id = m.thread_id AND e.platform_message_id IS NULL
                        AND (e.event_type = 'read' OR (e.event_type = 'delivered' AND m.status = 'sent'))
                        AND e.watermark >= m.sent_at)
        ORDER BY 1))
$$;
