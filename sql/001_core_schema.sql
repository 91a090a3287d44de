-- EverReach × Meta: the seed's eleven tables, what they reference, and the outbound queue.
-- Every write path is idempotent on Meta's own ids (mid, wamid, insight natural keys).
-- Needs PostgreSQL 13+ (gen_random_uuid and sha256 are built in).


-- Supabase has auth.users; elsewhere a minimal stand-in with the columns we reference.
CREATE SCHEMA IF NOT EXISTS auth;
CREATE TABLE IF NOT EXISTS auth.users (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email      text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The CRM's campaigns; Meta campaigns are upserted here by (source, external_id).
CREATE TABLE campaign (
    campaign_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL,
    source        text NOT NULL DEFAULT 'meta',
    external_id   text,                 -- Meta campaign id
    ad_account_id text,                 -- act_…
    objective     text,
    status        text,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_source_external_id_key UNIQUE (source, external_id)
);

-- The app's behavioural events; messages and conversions log here too.
CREATE TABLE user_event (
    event_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid REFERENCES auth.users (id) ON DELETE SET NULL,
    event_type  text NOT NULL,
    source      text NOT NULL DEFAULT 'app',
    occurred_at timestamptz NOT NULL DEFAULT now(),
    properties  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_event_occurred_at_idx ON user_event (occurred_at);
CREATE INDEX user_event_type_occurred_at_idx ON user_event (event_type, occurred_at);

-- ───────────────────────────── messaging ─────────────────────────────

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

CREATE TABLE meta_platform_config (
    config_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    platform         text NOT NULL CHECK (platform IN ('messenger', 'instagram', 'whatsapp', 'ads', 'conversions')),
    account_id       text NOT NULL,   -- Page id, IG user id, phone_number_id, act_…, pixel id
    display_name     text,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth', 'paused')),
    status_reason    text,
    token_expires_at timestamptz,
    scopes           text[],
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- never tokens: those stay in the environment
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT meta_platform_config_platform_account_key UNIQUE (platform, account_id)
);

-- The outbound queue: one row per send request, drained by the send_outbound_messages job.
CREATE TABLE outbound_message_job (
    job_id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id          uuid NOT NULL REFERENCES conversation_message (message_id) ON DELETE CASCADE,
    thread_id           uuid NOT NULL REFERENCES conversation_thread (thread_id) ON DELETE CASCADE,
    platform            text NOT NULL CHECK (platform IN ('messenger', 'instagram', 'whatsapp')),
    channel_id          text NOT NULL,     -- the sender: Page id / IG account id / phone_number_id
    recipient_id        text NOT NULL,
    request             jsonb NOT NULL,    -- the Graph API request body
    messaging_type      text,              -- RESPONSE | MESSAGE_TAG (Messenger/Instagram)
    tag                 text,              -- HUMAN_AGENT
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'cancelled')),
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 5,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    locked_until        timestamptz,
    platform_message_id text,
    error_code          integer,
    error_subcode       integer,
    error_message       text,
    fbtrace_id          text,
    requested_by        text,              -- JWT sub
    idempotency_key     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    CONSTRAINT outbound_message_job_idempotency_key UNIQUE (requested_by, idempotency_key)
);
CREATE INDEX outbound_message_job_due_idx ON outbound_message_job (next_attempt_at)
    WHERE status IN ('queued', 'sending');

-- The webhook inbox: raw events stored before Meta gets its 200, drained by process_webhook_events.
CREATE TABLE meta_webhook_event (
    webhook_event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object           text NOT NULL,           -- page | instagram | whatsapp_business_account | …
    payload          jsonb NOT NULL,
    body_sha256      bytea NOT NULL,          -- byte-identical redeliveries are stored once
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'done', 'failed', 'ignored')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    locked_until     timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz,
    CONSTRAINT meta_webhook_event_body_sha256_key UNIQUE (body_sha256)
);
CREATE INDEX meta_webhook_event_claim_idx ON meta_webhook_event (webhook_event_id)
    WHERE status IN ('pending', 'processing');
CREATE INDEX meta_webhook_event_received_at_idx ON meta_webhook_event (received_at);

-- ───────────────────────────── organic ─────────────────────────────

CREATE TABLE social_media_post (
    post_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    platform         text NOT NULL CHECK (platform IN ('facebook', 'instagram')),
    account_id       text NOT NULL,
    platform_post_id text NOT NULL,
    media_type       text,
    caption          text,
    permalink        text,
    posted_at        timestamptz,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT social_media_post_platform_post_key UNIQUE (platform, platform_post_id)
);
CREATE INDEX social_media_post_posted_at_idx ON social_media_post (posted_at);

CREATE TABLE social_post_insights (
    platform         text NOT NULL CHECK (platform IN ('facebook', 'instagram')),
    platform_post_id text NOT NULL,
    date             date NOT NULL,
    metric           text NOT NULL,
    value            numeric NOT NULL,
    synced_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, platform_post_id, date, metric)
);
CREATE INDEX social_post_insights_date_idx ON social_post_insights (date);

CREATE TABLE social_account_insights (
    platform   text NOT NULL CHECK (platform IN ('facebook', 'instagram')),
    account_id text NOT NULL,
    date       date NOT NULL,
    metric     text NOT NULL,
    value      numeric NOT NULL,
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, account_id, date, metric)
);
CREATE INDEX social_account_insights_date_idx ON social_account_insights (date);

-- ───────────────────────────── ads ─────────────────────────────

-- One row per (account, level, object, day). Meta sends strings; money and rates are exact numerics.
-- The key is in the order the asset replaces a range (delete by account, level and dates; COPY appends at
-- the key's right edge), and answers date-range summaries too (PostgreSQL 18 skip-scans the few accounts).
CREATE TABLE ad_performance (
    ad_account_id    text NOT NULL,
    level            text NOT NULL CHECK (level IN ('campaign', 'adset', 'ad')),
    object_id        text NOT NULL,      -- the campaign, ad set or ad id at this level
    date             date NOT NULL,
    campaign_id      uuid NOT NULL REFERENCES campaign (campaign_id),
    meta_campaign_id text NOT NULL,
    adset_id         text,
    ad_id            text,
    spend            numeric(18, 4) NOT NULL DEFAULT 0 CHECK (spend >= 0),
    impressions      bigint NOT NULL DEFAULT 0 CHECK (impressions >= 0),
    clicks           bigint NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    reach            bigint,
    frequency        numeric(18, 6),
    cpc              numeric(18, 6),
    cpm              numeric(18, 6),
    ctr              numeric(18, 6),
    conversions      numeric(18, 4) NOT NULL DEFAULT 0,
    conversion_value numeric(18, 4) NOT NULL DEFAULT 0,
    currency         text,
    objective        text,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- names, raw actions/action_values
    synced_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ad_account_id, level, date, object_id)
);
CREATE INDEX ad_performance_campaign_idx ON ad_performance (campaign_id, date);

-- ───────────────────────────── conversions ─────────────────────────────

CREATE TABLE meta_conversion_event (
    conversion_event_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pixel_id            text NOT NULL,
    event_id            text NOT NULL,      -- Meta's dedupe key, stable per real-world event
    event_name          text NOT NULL,
    event_time          timestamptz NOT NULL,
    action_source       text NOT NULL CHECK (action_source IN ('email', 'website', 'app', 'phone_call', 'chat',
                        'physical_store', 'system_generated', 'business_messaging', 'other')),
    event_source_url    text,
    user_id             uuid REFERENCES auth.users (id) ON DELETE SET NULL,
    source_event_id     uuid REFERENCES user_event (event_id) ON DELETE SET NULL,
    user_data           jsonb NOT NULL DEFAULT '{}'::jsonb,  -- hashed identifiers only, never raw PII
    custom_data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    value               numeric(18, 4),
    currency            text,
    test_event_code     text,
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    events_received     integer,
    fbtrace_id          text,
    error_message       text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    CONSTRAINT meta_conversion_event_dedupe_key UNIQUE (pixel_id, event_name, event_id)
);
CREATE INDEX meta_conversion_event_time_idx ON meta_conversion_event (event_time);

-- ───────────────────────────── functions and triggers ─────────────────────────────

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

-- ───────────────────────────── monitoring views (the runbook's queries) ─────────────────────────────

CREATE VIEW message_volume_daily AS
SELECT ct.platform, cm.direction, date(cm.sent_at) AS date, count(*) AS message_count
FROM conversation_message cm JOIN conversation_thread ct ON cm.thread_id = ct.thread_id
GROUP BY ct.platform, cm.direction, date(cm.sent_at);

CREATE VIEW outbound_status_rates_7d AS
SELECT status, count(*) AS count,
       round(count(*) * 100.0 / sum(count(*)) OVER (), 2) AS percentage
FROM conversation_message
WHERE direction = 'outbound' AND sent_at >= now() - interval '7 days'
GROUP BY status;

CREATE VIEW conversion_events_by_type_30d AS
SELECT event_name, count(*) AS event_count, sum(value) AS total_value, avg(value) AS avg_value
FROM meta_conversion_event
WHERE event_time >= now() - interval '30 days'
GROUP BY event_name;
