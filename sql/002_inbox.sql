-- Webhooks in: the inbox the receiver writes, and the conversations the drain (process_webhook_events)
-- makes of it — threads, messages, policy windows and receipts, with the functions and triggers that keep
-- them consistent whichever writer gets there first.

-- The webhook inbox: raw events stored before Meta gets its 200, drained by process_webhook_events.
CREATE TABLE meta_webhook_event (
    webhook_event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object           text NOT NULL,           -- page | instagram | whatsapp_business_account | …
    payload          jsonb NOT NULL,
    body_sha256      bytea NOT NULL,          -- byte-identical redeliveries are stored once
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'done', 'failed', 'ignored')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    locked_until     timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz,
    CONSTRAINT meta_webhook_event_body_sha256_key UNIQUE (body_sha256)
);
CREATE INDEX meta_webhook_event_claim_idx ON meta_webhook_event (webhook_event_id)
    WHERE status = 'pending';
-- Append-only and time-ordered: a block-range index answers the time-range reads (replay-webhooks
-- --since/--until, matching a send to its webhooks) at a fraction of a B-tree's upkeep on every intake and
-- done mark.
CREATE INDEX meta_webhook_event_received_at_brin ON meta_webhook_event USING brin (received_at);

-- Batches in flight, so that one whose run died is noticed. A batch is one transaction, so a run killed
-- mid-batch leaves no trace in the inbox: its events are simply pending again. That is right for a run
-- killed by accident, but an event that itself kills the run would be claimed, and kill the run, for ever.
-- So each batch is recorded here, committed on a second connection while the batch's transaction holds an
-- advisory lock on batch_key, and deleted by the batch's own commit. A row whose key nobody holds is a batch
-- whose run died: its events are counted an attempt and retried one at a time.
CREATE TABLE webhook_drain_batch (
    batch_key   bigint PRIMARY KEY,   -- pg_advisory_xact_lock key, held by the batch's transaction
    event_ids   int8range[] NOT NULL, -- runs of consecutive ids: a few values, where a bigint[] was toasted
    started_at  timestamptz NOT NULL DEFAULT now()
);

-- ───────────────────────────── conversations ─────────────────────────────

CREATE TABLE conversation_thread (
    thread_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    platform         text NOT NULL CHECK (platform IN ('messenger', 'instagram', 'whatsapp')),
    channel_id       text NOT NULL,    -- Page id, IG professional account id, or WhatsApp phone_number_id
    participant_id   text NOT NULL,    -- PSID, IGSID or wa_id
    participant_name text,
    user_id          uuid REFERENCES auth.users (id) ON DELETE SET NULL,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'archived')),
    last_message_at  timestamptz,
    last_inbound_at  timestamptz,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_thread_participant_key UNIQUE (platform, channel_id, participant_id)
);

-- Status order is monotonic: queued < sending < sent < delivered < read; failed is terminal.
CREATE FUNCTION message_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'received' THEN 2 WHEN 'sent' THEN 2
        WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 WHEN 'deleted' THEN 5 WHEN 'failed' THEN 6
        ELSE -1 END
$$;

CREATE TABLE conversation_message (
    message_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    thread_id           uuid NOT NULL REFERENCES conversation_thread (thread_id) ON DELETE CASCADE,
    platform            text NOT NULL CHECK (platform IN ('messenger', 'instagram', 'whatsapp')),
    platform_message_id text,          -- mid / wamid; NULL only while an outbound message is queued
    direction           text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    message_type        text NOT NULL DEFAULT 'text',
    content             text,
    payload             jsonb NOT NULL DEFAULT '{}'::jsonb,
    status              text NOT NULL DEFAULT 'received'
                        CHECK (status IN ('queued', 'sending', 'sent', 'received', 'delivered', 'read',
                                          'failed', 'deleted')),
    is_echo             boolean NOT NULL DEFAULT false,
    reply_to_id         text,
    sender_user_id      text,          -- JWT sub of the operator who sent it (outbound)
    sent_at             timestamptz NOT NULL DEFAULT now(),   -- Meta's timestamp when known
    delivered_at        timestamptz,
    read_at             timestamptz,
    failed_at           timestamptz,
    error_code          integer,
    error_message       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT conversation_message_platform_mid_key UNIQUE (platform, platform_message_id)
);
CREATE INDEX conversation_message_thread_sent_idx ON conversation_message (thread_id, sent_at DESC);
CREATE INDEX conversation_message_sent_at_idx ON conversation_message (sent_at);
CREATE INDEX conversation_message_outbound_open_idx ON conversation_message (thread_id, sent_at)
    WHERE direction = 'outbound' AND status IN ('sent', 'delivered');

CREATE TABLE messaging_policy_window (
    window_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    thread_id    uuid NOT NULL REFERENCES conversation_thread (thread_id) ON DELETE CASCADE,
    window_type  text NOT NULL CHECK (window_type IN ('standard', 'human_agent')),
    opened_at    timestamptz NOT NULL,   -- Meta's timestamp of the last inbound message
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messaging_policy_window_thread_type_key UNIQUE (thread_id, window_type)
);

CREATE TABLE message_delivery_event (
    delivery_event_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id          uuid REFERENCES conversation_message (message_id) ON DELETE CASCADE,
    thread_id           uuid REFERENCES conversation_thread (thread_id) ON DELETE CASCADE,
    platform            text NOT NULL CHECK (platform IN ('messenger', 'instagram', 'whatsapp')),
    platform_message_id text,           -- set for per-message receipts and WhatsApp statuses
    event_type          text NOT NULL CHECK (event_type IN ('sent', 'delivered', 'read', 'failed', 'deleted')),
    watermark           timestamptz,    -- Messenger watermark receipts (everything up to it)
    occurred_at         timestamptz NOT NULL,
    error_code          integer,
    error_title         text,
    payload             jsonb NOT NULL DEFAULT '{}'::jsonb,
    applied             boolean NOT NULL DEFAULT false,  -- false while its message has not landed yet
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX message_delivery_event_mid_key
    ON message_delivery_event (platform, platform_message_id, event_type)
    WHERE platform_message_id IS NOT NULL;
CREATE UNIQUE INDEX message_delivery_event_watermark_key
    ON message_delivery_event (thread_id, event_type, watermark)
    WHERE platform_message_id IS NULL;
CREATE INDEX message_delivery_event_unapplied_idx ON message_delivery_event (platform, platform_message_id)
    WHERE NOT applied;

-- True while the thread's standard (24 h) window is open, or, with p_window_type => 'human_agent', the
-- 7-day human-agent window (Messenger and Instagram only). Windows are computed from Meta's timestamp of
-- the last inbound message, not from when we processed it.
CREATE FUNCTION is_in_messaging_window(p_thread_id uuid, p_window_type text DEFAULT 'standard')
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM messaging_policy_window w
        WHERE w.thread_id = p_thread_id AND w.window_type = p_window_type AND w.expires_at > now()
    )
$$;

-- Each new conversation_message logs a user_event (statement-level: one set-based insert per batch).
CREATE FUNCTION log_message_as_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_event (user_id, event_type, source, occurred_at, properties)
    SELECT t.user_id,
           CASE WHEN n.direction = 'inbound' THEN 'message_received' ELSE 'message_sent' END,
           n.platform,
           n.sent_at,
           jsonb_build_object('message_id', n.message_id, 'thread_id', n.thread_id,
                              'platform', n.platform, 'message_type', n.message_type,
                              'direction', n.direction)
    FROM new_messages n JOIN conversation_thread t ON t.thread_id = n.thread_id;
    RETURN NULL;
END $$;

-- Keeps conversation_thread.last_message_at / last_inbound_at current and opens or extends the policy
-- windows from inbound messages (24 h standard everywhere; 7-day human agent on Messenger/Instagram).
-- Concurrent drains meet on busy threads: the threads are locked first, in thread_id order (one order for
-- every writer, so no deadlock), and only this stretch — statement end to commit — is serial between them.
CREATE FUNCTION update_thread_timestamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM conversation_thread t
    WHERE t.thread_id IN (SELECT DISTINCT n.thread_id FROM new_messages n)
    ORDER BY t.thread_id
    FOR NO KEY UPDATE;

    UPDATE conversation_thread t
    SET last_message_at = GREATEST(t.last_message_at, agg.last_at),
        last_inbound_at = GREATEST(t.last_inbound_at, agg.last_inbound_at),
        updated_at = now()
    FROM (SELECT thread_id, max(sent_at) AS last_at,
                 max(sent_at) FILTER (WHERE direction = 'inbound') AS last_inbound_at
          FROM new_messages GROUP BY thread_id) agg
    WHERE t.thread_id = agg.thread_id;

    INSERT INTO messaging_policy_window AS w (thread_id, window_type, opened_at, expires_at)
    SELECT n.thread_id, k.window_type, max(n.sent_at), max(n.sent_at) + k.length
    FROM new_messages n
    CROSS JOIN (VALUES ('standard', interval '24 hours'), ('human_agent', interval '7 days'))
         AS k (window_type, length)
    WHERE n.direction = 'inbound' AND NOT n.is_echo
      AND (k.window_type = 'standard' OR n.platform IN ('messenger', 'instagram'))
    GROUP BY n.thread_id, k.window_type, k.length
    ORDER BY n.thread_id, k.window_type
    ON CONFLICT (thread_id, window_type) DO UPDATE
        SET opened_at = GREATEST(w.opened_at, EXCLUDED.opened_at),
            expires_at = GREATEST(w.expires_at, EXCLUDED.expires_at),
            updated_at = now();
    RETURN NULL;
END $$;

CREATE TRIGGER conversation_message_log_event
    AFTER INSERT ON conversation_message REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION log_message_as_event();

CREATE TRIGGER conversation_message_thread_timestamp
    AFTER INSERT ON conversation_message REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION update_thread_timestamp();

-- ───────────────────────────── receipts ─────────────────────────────
--
-- Meta does not order webhooks: a WhatsApp `delivered` status or a Messenger read watermark can arrive
-- before the message it refers to exists here (before the outbound sender stored Meta's message id, or
-- before the echo was processed). The drain stores a receipt whose message is here already applied, linked
-- in the INSERT that stores it, and folds it into the message at the end of that INSERT; the others wait in
-- message_delivery_event (applied = false), and the triggers below apply them the moment the message lands
-- (INSERT) or gets its platform_message_id (the sender's UPDATE), so every writer benefits without knowing
-- about it. Status changes are monotonic by message_status_rank(): a late `delivered` never overwrites
-- `read`; `failed` is terminal. Meta's watermarks only move forward, so the first watermark at or after a
-- message's sent_at is the earliest one covering it: each lookup is one index probe, whatever the thread's
-- history.

-- Fold applied receipts (message_id set) into their messages. Statuses only move up by
-- message_status_rank(): a late `delivered` never overwrites `read`; `failed` is terminal. Returns the number
-- of messages changed.
CREATE FUNCTION fold_delivery_events(p_event_ids uuid[]) RETURNS integer
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
CREATE FUNCTION message_delivery_event_fold_on_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fold_delivery_events(ARRAY(
        SELECT n.delivery_event_id FROM inserted_events n
        WHERE n.applied AND n.message_id IS NOT NULL AND n.platform_message_id IS NOT NULL));
    RETURN NULL;
END $$;

CREATE TRIGGER message_delivery_event_fold_insert
    AFTER INSERT ON message_delivery_event REFERENCING NEW TABLE AS inserted_events
    FOR EACH STATEMENT EXECUTE FUNCTION message_delivery_event_fold_on_insert();

-- Apply every pending per-message receipt, and every thread watermark at or after the message's sent_at,
-- to the given messages. Returns the number of messages whose row changed. Every lookup is driven from the
-- given messages by index, so the cost follows the batch, not the tables.
CREATE FUNCTION apply_pending_delivery_events(p_message_ids uuid[]) RETURNS integer
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

-- When the first stored watermark of each kind at or after p_sent_at says the thread's messages were
-- delivered and read. Meta's watermarks only move forward, so that one is also the earliest covering a
-- message sent at p_sent_at. Declared as a set-returning SQL function so that Postgres inlines it: each call
-- is two index probes, not a function call.
CREATE FUNCTION watermark_receipts(p_thread_id uuid, p_sent_at timestamptz)
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

-- New messages (a batch from the webhook job, or the sender's queued row) pick up receipts waiting for them.
-- Each landed message is one index probe (LATERAL … LIMIT 1: unlike EXISTS … OR EXISTS, Postgres cannot turn
-- it into a scan of every unapplied receipt), and a watermark counts only if it would still change the
-- message: not for one inserted `read`, only a read watermark for one inserted `delivered` (the drain's
-- INSERT already applies the thread's watermarks, watermark_receipts). EXECUTE: planned against the tables'
-- current size each time.
CREATE FUNCTION conversation_message_apply_pending_on_insert() RETURNS trigger
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

CREATE TRIGGER conversation_message_apply_pending_insert
    AFTER INSERT ON conversation_message REFERENCING NEW TABLE AS landed_messages
    FOR EACH STATEMENT EXECUTE FUNCTION conversation_message_apply_pending_on_insert();

-- The sender stored Meta's id (or marked the message sent): apply what arrived before it.
CREATE FUNCTION conversation_message_apply_pending_on_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apply_pending_delivery_events(ARRAY[NEW.message_id]);
    RETURN NULL;
END $$;

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
CREATE FUNCTION conversation_message_merge_echo() RETURNS trigger
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

CREATE TRIGGER conversation_message_merge_echo
    BEFORE UPDATE OF platform_message_id ON conversation_message
    FOR EACH ROW
    WHEN (NEW.platform_message_id IS NOT NULL
          AND OLD.platform_message_id IS DISTINCT FROM NEW.platform_message_id)
    EXECUTE FUNCTION conversation_message_merge_echo();

-- Receipts and watermarks that were stored while their message was being written by a concurrent,
-- not yet committed transaction (neither saw the other) are applied here. Run when a drain finds the
-- queue empty; it reads only unapplied receipts and open outbound messages.
CREATE FUNCTION apply_orphaned_delivery_events() RETURNS integer
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
