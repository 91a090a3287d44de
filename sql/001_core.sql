-- EverReach × Meta, the core: the users and events of the app (auth.users stands in for Supabase's),
-- campaigns, the channels' configuration, and the tables the insights assets and the Conversions API write.
-- Every write path is idempotent on Meta's own ids (insight natural keys, event ids).
-- Needs PostgreSQL 13+ (gen_random_uuid and sha256 are built in).

-- Supabase has auth.users, owned by its auth service in a schema the app's role may not create in (so not
-- even CREATE … IF NOT EXISTS may name it); elsewhere a minimal stand-in with the columns we reference.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'auth' AND c.relname = 'users') THEN
        CREATE SCHEMA IF NOT EXISTS auth;
        CREATE TABLE auth.users (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email      text UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        );
    END IF;
END
$$;

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

-- One row per channel (a Page, an IG account, a WhatsApp number, an ad account, a pixel): whether it may
-- send (paused for re-authorization when Meta refuses its token) and what its token allows.
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

-- ───────────────────────────── monitoring (the runbook's query) ─────────────────────────────

CREATE VIEW conversion_events_by_type_30d AS
SELECT event_name, count(*) AS event_count, sum(value) AS total_value, avg(value) AS avg_value
FROM meta_conversion_event
WHERE event_time >= now() - interval '30 days'
GROUP BY event_name;
