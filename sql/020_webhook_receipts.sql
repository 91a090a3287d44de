-- Webhooks in: receipts that arrive before their message, and echoes that race the outbound sender.
--
-- Meta does not order webhooks: a WhatsApp `delivered` status or a Messenger read watermark can arrive
-- before the message it refers to exists here (before the outbound sender stored Meta's message id, or
-- before the echo was processed). Such receipts are kept in message_delivery_event with applied = false;
-- the triggers below apply them the moment the message lands (INSERT) or gets its platform_message_id
-- (the sender's UPDATE), so every writer benefits without knowing about it. Status changes are monotonic
-- by message_status_rank(): a late `delivered` never overwrites `read`; `failed` is terminal.

-- Apply every pending per-message receipt, and every thread watermark at or after the message's sent_at,
-- to the given messages. Returns the number of messages whose row changed. Every lookup is driven from the
-- given messages by index (receipt ids collected by a LATERAL probe, then updated by primary key; the
-- messages found by primary key before the watermark filters), so the cost follows the batch, not the
-- tables: receipts whose message never lands here accumulate, and a join against all of them grows with
-- every batch.
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

-- New messages (a batch from the webhook job, or the sender's queued row) pick up receipts waiting for them.
-- Each landed message is one index probe (LATERAL … LIMIT 1: unlike EXISTS … OR EXISTS, Postgres cannot turn
-- it into a scan of every unapplied receipt). EXECUTE: planned against the tables' current size each time.
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

DROP TRIGGER IF EXISTS conversation_message_apply_pending_insert ON conversation_message;
CREATE TRIGGER conversation_message_apply_pending_insert
    AFTER INSERT ON conversation_message REFERENCING NEW TABLE AS landed_messages
    FOR EACH STATEMENT EXECUTE FUNCTION conversation_message_apply_pending_on_insert();

-- The sender stored Meta's id (or marked the message sent): apply what arrived before it.
CREATE OR REPLACE FUNCTION conversation_message_apply_pending_on_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apply_pending_delivery_events(ARRAY[NEW.message_id]);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS conversation_message_apply_pending_update ON conversation_message;
CREATE TRIGGER conversation_message_apply_pending_update
    AFTER UPDATE OF platform_message_id, status ON conversation_message
    FOR EACH ROW
    WHEN (NEW.platform_message_id IS NOT NULL
          AND (OLD.platform_message_id IS DISTINCT FROM NEW.platform_message_id
               OR (OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'sent')))
    EXECUTE FUNCTION conversation_message_apply_pending_on_update();

-- The echo of our own send can be processed before the sender stores Meta's id on its row. When the
-- sender then sets that id, fold the echo row into the sender's row instead of failing on the unique key:
-- keep the higher status and the receipt timestamps, move its receipts over, drop the echo row.
CREATE OR REPLACE FUNCTION conversation_message_merge_echo() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    echo conversation_message%ROWTYPE;
BEGIN
    SELECT * INTO echo FROM conversation_message
    WHERE platform = NEW.platform AND platform_message_id = NEW.platform_message_id
      AND message_id <> NEW.message_id AND direction = 'outbound' AND is_echo
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    IF message_status_rank(echo.status) > message_status_rank(NEW.status) THEN
        NEW.status := echo.status;
    END IF;
    NEW.delivered_at := LEAST(NEW.delivered_at, echo.delivered_at);
    NEW.read_at := LEAST(NEW.read_at, echo.read_at);
    NEW.failed_at := COALESCE(NEW.failed_at, echo.failed_at);
    NEW.error_code := COALESCE(NEW.error_code, echo.error_code);
    NEW.error_message := COALESCE(NEW.error_message, echo.error_message);
    UPDATE message_delivery_event SET message_id = NEW.message_id, thread_id = NEW.thread_id
    WHERE message_id = echo.message_id;
    DELETE FROM user_event
    WHERE event_type = 'message_sent' AND occurred_at = echo.sent_at
      AND properties ->> 'message_id' = echo.message_id::text;
    DELETE FROM conversation_message WHERE message_id = echo.message_id;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS conversation_message_merge_echo ON conversation_message;
CREATE TRIGGER conversation_message_merge_echo
    BEFORE UPDATE OF platform_message_id ON conversation_message
    FOR EACH ROW
    WHEN (NEW.platform_message_id IS NOT NULL
          AND OLD.platform_message_id IS DISTINCT FROM NEW.platform_message_id)
    EXECUTE FUNCTION conversation_message_merge_echo();
