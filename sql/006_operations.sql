-- Channel operations: what each channel's token allows and until when (meta_platform_config), the WhatsApp
-- template catalog, business-scoped user ids on WhatsApp threads, and what each WhatsApp message costs.

-- ───────────────────────────── token health ─────────────────────────────

-- Written by the meta_platform_config asset from /debug_token (tokens themselves stay in the environment:
-- token_setting names the variable). paused_by says who set status: the sender on a 190 at send time, the
-- token_health_sensor from these columns (it also resumes what it paused), or an operator.
ALTER TABLE meta_platform_config
    ADD COLUMN token_setting          text,
    ADD COLUMN token_valid            boolean,
    ADD COLUMN token_type             text,          -- USER | PAGE | SYSTEM_USER | APP
    ADD COLUMN token_app_id           text,
    ADD COLUMN token_user_id          text,          -- the user (or system user) the token acts for
    ADD COLUMN data_access_expires_at timestamptz,
    ADD COLUMN token_error            text,          -- Meta's reason when the token is not valid
    ADD COLUMN token_checked_at       timestamptz,
    ADD COLUMN paused_by              text CHECK (paused_by IN ('sender', 'token_health', 'operator'));
COMMENT ON COLUMN meta_platform_config.token_setting IS 'the environment variable the channel''s token comes from (never the token)';
COMMENT ON COLUMN meta_platform_config.paused_by IS 'sender (a 190 at send time), token_health (the sensor; it resumes what it paused) or operator';

-- ───────────────────────────── WhatsApp template catalog ─────────────────────────────

-- One row per template and language, as GET /{WABA_ID}/message_templates lists it, kept current between
-- syncs by the template webhooks. Each kind of change keeps Meta's time of the last one applied, so a late
-- webhook never undoes a newer state (a sync counts as a change at the moment it started).
CREATE TABLE whatsapp_message_template (
    waba_id             text NOT NULL,
    template_id         text NOT NULL,
    name                text NOT NULL,
    language            text NOT NULL,       -- en_US, pt_BR, …
    status              text,                -- APPROVED, PENDING, REJECTED, PAUSED, DISABLED, …
    category            text,                -- MARKETING | UTILITY | AUTHENTICATION
    previous_category   text,
    quality_score       text,                -- GREEN | YELLOW | RED | UNKNOWN
    parameter_format    text,                -- POSITIONAL ({{1}}) | NAMED ({{first_name}})
    components          jsonb,               -- NULL while only a webhook has told us of it
    rejected_reason     text,
    status_changed_at   timestamptz,
    quality_changed_at  timestamptz,
    category_changed_at timestamptz,
    synced_at           timestamptz,         -- the last sync that listed it
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (waba_id, template_id)
);
-- How sends find a template. Not unique: a deleted template's name may come back with a new id before the
-- next sync drops the old row.
CREATE INDEX whatsapp_message_template_name_idx ON whatsapp_message_template (waba_id, name, language);
COMMENT ON TABLE whatsapp_message_template IS 'The WhatsApp templates of the business account: synced from Meta every 3 hours, kept current by the template webhooks; sends are checked against it.';
COMMENT ON COLUMN whatsapp_message_template.status IS 'APPROVED (the only status Meta sends), PENDING, REJECTED, PAUSED, DISABLED, …';
COMMENT ON COLUMN whatsapp_message_template.parameter_format IS 'POSITIONAL ({{1}}, {{2}}…) or NAMED ({{first_name}}…): how sends name the body parameters';

-- ───────────────────────────── business-scoped user ids ─────────────────────────────

-- Since April 2026 WhatsApp webhooks carry a business-scoped user id (user_id, e.g. US.13491208655302741918)
-- and may leave out the phone number of a user with a username. A WhatsApp thread's participant_id is the
-- phone number when we know it, else the user id; participant_user_id is the user id when we know it. Either
-- finds the one thread (link_whatsapp_participants keeps them one).
ALTER TABLE conversation_thread
    ADD COLUMN participant_user_id  text,
    ADD COLUMN identity_observed_at timestamptz;  -- Meta's time of the observation that set the keys
COMMENT ON COLUMN conversation_thread.participant_user_id IS 'WhatsApp business-scoped user id (US.1349…), when Meta sent one';
CREATE UNIQUE INDEX conversation_thread_participant_user_key
    ON conversation_thread (platform, channel_id, participant_user_id) WHERE participant_user_id IS NOT NULL;

-- Ids a user had before a user_id_update, each pointing at the id that replaced it (chains are kept one hop
-- long), so that a late or replayed webhook naming an old id still finds the user's thread.
CREATE TABLE whatsapp_user_id_change (
    channel_id       text NOT NULL,       -- phone_number_id
    previous_user_id text NOT NULL,
    user_id          text NOT NULL,
    changed_at       timestamptz NOT NULL,
    PRIMARY KEY (channel_id, previous_user_id)
);
COMMENT ON TABLE whatsapp_user_id_change IS 'WhatsApp business-scoped user ids that a user_id_update replaced, and what replaced them.';

-- Fold thread p_drop into p_keep (the same person, known by two keys until now): its messages, jobs, receipts
-- and windows move over, the widest windows and latest timestamps win, and the dropped thread goes. Both
-- threads must be locked by the caller. (user_event rows keep the thread id they were logged with.)
CREATE FUNCTION merge_conversation_threads(p_keep uuid, p_drop uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversation_message SET thread_id = p_keep WHERE thread_id = p_drop;
    UPDATE outbound_message_job SET thread_id = p_keep WHERE thread_id = p_drop;
    UPDATE message_delivery_event e SET thread_id = p_keep
    WHERE e.thread_id = p_drop
      AND NOT (e.platform_message_id IS NULL AND EXISTS (
          SELECT 1 FROM message_delivery_event k
          WHERE k.thread_id = p_keep AND k.platform_message_id IS NULL AND k.event_type = e.event_type
            AND k.watermark = e.watermark));
    INSERT INTO messaging_policy_window AS w (thread_id, window_type, opened_at, expires_at)
    SELECT p_keep, d.window_type, d.opened_at, d.expires_at FROM messaging_policy_window d WHERE d.thread_id = p_drop
    ON CONFLICT (thread_id, window_type) DO UPDATE
        SET opened_at = GREATEST(w.opened_at, EXCLUDED.opened_at),
            expires_at = GREATEST(w.expires_at, EXCLUDED.expires_at), updated_at = now();
    UPDATE conversation_thread k
    SET last_message_at = GREATEST(k.last_message_at, d.last_message_at),
        last_inbound_at = GREATEST(k.last_inbound_at, d.last_inbound_at),
        participant_name = coalesce(k.participant_name, d.participant_name),
        user_id = coalesce(k.user_id, d.user_id),
        metadata = d.metadata || k.metadata,
        created_at = LEAST(k.created_at, d.created_at),
        updated_at = now()
    FROM conversation_thread d
    WHERE k.thread_id = p_keep AND d.thread_id = p_drop;
    DELETE FROM conversation_thread WHERE thread_id = p_drop;   -- what is left of it (its windows) cascades
END $$;

-- Make each observed identity one thread: p_links is [{channel_id, phone, user_id, previous_user_id, ts}]
-- (ts in epoch ms) — a message that names both a phone number and a user id, a user id we have no thread for,
-- or a user_id_update (previous_user_id → user_id). An old id is read as the one that replaced it. Every
-- thread that is this person (by phone number, by user id, by the previous user id) becomes one: the phone
-- number's thread if there is one, else the oldest. Its keys become the observation's, unless it is older
-- than the one that set them (a late redelivery). Concurrent drains linking the same ids take turns
-- (advisory locks, taken in one order).
CREATE FUNCTION link_whatsapp_participants(p_links jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    l record;
    t record;
    keep conversation_thread%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(k.key) FROM (
        SELECT DISTINCT hashtextextended('whatsapp:' || x.channel_id || ':' || ids.id, 0) AS key
        FROM jsonb_to_recordset(p_links) AS x (channel_id text, phone text, user_id text, previous_user_id text)
        CROSS JOIN LATERAL (VALUES (x.phone), (x.user_id), (x.previous_user_id)) AS ids (id)
        WHERE ids.id IS NOT NULL
        ORDER BY 1) k;
    FOR l IN SELECT x.channel_id, x.phone, x.user_id, x.previous_user_id, to_timestamp(x.ts / 1000.0) AS at
             FROM jsonb_to_recordset(p_links)
                  AS x (channel_id text, phone text, user_id text, previous_user_id text, ts bigint)
             ORDER BY x.ts
    LOOP
        keep := NULL;
        IF l.previous_user_id IS NOT NULL THEN
            INSERT INTO whatsapp_user_id_change AS c (channel_id, previous_user_id, user_id, changed_at)
            VALUES (l.channel_id, l.previous_user_id, l.user_id, l.at)
            ON CONFLICT (channel_id, previous_user_id) DO UPDATE
                SET user_id = EXCLUDED.user_id, changed_at = EXCLUDED.changed_at
                WHERE EXCLUDED.changed_at > c.changed_at;
            UPDATE whatsapp_user_id_change SET user_id = l.user_id
            WHERE channel_id = l.channel_id AND user_id = l.previous_user_id;
        ELSE
            SELECT coalesce((SELECT c.user_id FROM whatsapp_user_id_change c
                             WHERE c.channel_id = l.channel_id AND c.previous_user_id = l.user_id), l.user_id)
            INTO l.user_id;
        END IF;
        PERFORM 1 FROM conversation_thread c
        WHERE c.platform = 'whatsapp' AND c.channel_id = l.channel_id
          AND (c.participant_id IN (l.phone, l.user_id, l.previous_user_id)
               OR c.participant_user_id IN (l.user_id, l.previous_user_id))
        ORDER BY c.thread_id
        FOR UPDATE;
        FOR t IN SELECT c.* FROM conversation_thread c
                 WHERE c.platform = 'whatsapp' AND c.channel_id = l.channel_id
                   AND (c.participant_id IN (l.phone, l.user_id, l.previous_user_id)
                        OR c.participant_user_id IN (l.user_id, l.previous_user_id))
                 ORDER BY c.participant_id IS NOT DISTINCT FROM l.phone DESC, c.created_at, c.thread_id
        LOOP
            IF keep.thread_id IS NULL THEN
                keep := t;
            ELSE
                PERFORM merge_conversation_threads(keep.thread_id, t.thread_id);
            END IF;
        END LOOP;
        IF keep.thread_id IS NULL THEN
            -- ON CONFLICT: a phone-number-only message of another drain may have just created the thread.
            INSERT INTO conversation_thread (platform, channel_id, participant_id, participant_user_id,
                                             identity_observed_at)
            VALUES ('whatsapp', l.channel_id, coalesce(l.phone, l.user_id), l.user_id, l.at)
            ON CONFLICT (platform, channel_id, participant_id) DO UPDATE
                SET participant_user_id = EXCLUDED.participant_user_id,
                    identity_observed_at = EXCLUDED.identity_observed_at, updated_at = now();
        ELSIF keep.identity_observed_at IS NULL OR l.at >= keep.identity_observed_at THEN
            UPDATE conversation_thread
            SET participant_id = coalesce(l.phone, CASE WHEN keep.participant_id IN (l.user_id, l.previous_user_id)
                                                        THEN l.user_id ELSE keep.participant_id END),
                participant_user_id = l.user_id, identity_observed_at = l.at, updated_at = now()
            WHERE thread_id = keep.thread_id;
        END IF;
    END LOOP;
END $$;

-- ───────────────────────────── WhatsApp pricing ─────────────────────────────

-- What Meta says each outbound WhatsApp message costs, from the `pricing` of its status webhooks (the
-- earliest status that carried one: `sent`, usually). billable is Meta's flag while it still sends it
-- (deprecated), else pricing_type = 'regular'. Keyed by Meta's message id: a status may arrive before its
-- message is stored.
CREATE TABLE whatsapp_message_pricing (
    platform_message_id text PRIMARY KEY,       -- wamid
    channel_id          text NOT NULL,          -- phone_number_id
    category            text NOT NULL,          -- marketing, utility, authentication, service, marketing_lite, …
    pricing_type        text,                   -- regular | free_customer_service | free_entry_point
    pricing_model       text,                   -- PMP (CBP before July 2025)
    billable            boolean NOT NULL,
    priced_at           timestamptz NOT NULL,   -- Meta's timestamp of that status
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX whatsapp_message_pricing_priced_at_idx ON whatsapp_message_pricing (priced_at);
COMMENT ON TABLE whatsapp_message_pricing IS 'What Meta says each outbound WhatsApp message costs, from its status webhooks.';
COMMENT ON COLUMN whatsapp_message_pricing.billable IS 'charged: Meta''s billable flag while it sends one, else pricing_type = regular';

-- The whatsapp_pricing_daily asset's table: per UTC day its pricing was reported, number, category and
-- type, how many messages Meta priced, and how many of those were delivered and billable — what Meta charges
-- for (a message is charged once it is delivered).
CREATE TABLE whatsapp_pricing_daily (
    date              date NOT NULL,
    channel_id        text NOT NULL,
    category          text NOT NULL,
    pricing_type      text NOT NULL,            -- '' when Meta sent none (before v24.0)
    messages          bigint NOT NULL,
    billable_messages bigint NOT NULL,
    computed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (date, channel_id, category, pricing_type)
);
COMMENT ON TABLE whatsapp_pricing_daily IS 'WhatsApp messages Meta priced, and the billable ones delivered, per UTC day, number, category and type: the figure the business pays on.';
COMMENT ON COLUMN whatsapp_pricing_daily.billable_messages IS 'billable and delivered (Meta charges a message once it is delivered)';
