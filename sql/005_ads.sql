-- Ads in depth: the Marketing API's objects (ad accounts, campaigns, ad sets, ads, creatives), upserted by
-- Meta's id with their status (deleted and archived ones kept), and two long insight tables beside
-- ad_performance: breakdown reports and attribution windows. Money in insights is the account's currency;
-- budgets are Meta's minor units (cents for USD and EUR), as the API sends them.

CREATE TABLE ad_account (
    ad_account_id            text PRIMARY KEY,          -- act_…
    account_id               text NOT NULL,             -- the same id without act_
    name                     text,
    currency                 text,
    timezone_name            text,                      -- the account's days: insights dates are local to it
    timezone_offset_hours_utc numeric(5, 2),
    account_status           integer,                   -- 1 active, 2 disabled, 3 unsettled, 101 closed, …
    disable_reason           integer,
    business_id              text,
    amount_spent             bigint,                    -- minor units, lifetime
    created_time             timestamptz,
    metadata                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at                timestamptz NOT NULL DEFAULT now()
);

-- campaign is the CRM's table (001); Meta's campaigns are its rows with source 'meta', keyed by external_id.
ALTER TABLE campaign
    ADD COLUMN effective_status text,
    ADD COLUMN buying_type      text,
    ADD COLUMN bid_strategy     text,
    ADD COLUMN daily_budget     bigint,
    ADD COLUMN lifetime_budget  bigint,
    ADD COLUMN budget_remaining bigint,
    ADD COLUMN start_time       timestamptz,
    ADD COLUMN stop_time        timestamptz,
    ADD COLUMN created_time     timestamptz,
    ADD COLUMN updated_time     timestamptz;
CREATE INDEX campaign_ad_account_idx ON campaign (ad_account_id) WHERE source = 'meta';

CREATE TABLE ad_set (
    adset_id          text PRIMARY KEY,
    ad_account_id     text NOT NULL,
    campaign_id       text NOT NULL,                    -- Meta's campaign id (campaign.external_id)
    name              text,
    status            text,
    effective_status  text,
    optimization_goal text,
    billing_event     text,
    bid_strategy      text,
    daily_budget      bigint,
    lifetime_budget   bigint,
    budget_remaining  bigint,
    attribution_spec  jsonb,                            -- [{event_type, window_days}]: its default window
    start_time        timestamptz,
    end_time          timestamptz,
    created_time      timestamptz,
    updated_time      timestamptz,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ad_set_account_idx ON ad_set (ad_account_id);
CREATE INDEX ad_set_campaign_idx ON ad_set (campaign_id);

CREATE TABLE ad (
    ad_id            text PRIMARY KEY,
    ad_account_id    text NOT NULL,
    campaign_id      text NOT NULL,
    adset_id         text NOT NULL,
    name             text,
    status           text,
    effective_status text,
    creative_id      text,
    created_time     timestamptz,
    updated_time     timestamptz,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ad_account_idx ON ad (ad_account_id);
CREATE INDEX ad_adset_idx ON ad (adset_id);

CREATE TABLE ad_creative (
    creative_id               text PRIMARY KEY,
    ad_account_id             text NOT NULL,
    name                      text,
    status                    text,
    title                     text,
    body                      text,
    object_type               text,
    call_to_action_type       text,
    thumbnail_url             text,
    image_url                 text,
    effective_object_story_id text,
    instagram_permalink_url   text,
    metadata                  jsonb NOT NULL DEFAULT '{}'::jsonb,
    synced_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ad_creative_account_idx ON ad_creative (ad_account_id);

-- One row per (report, account, level, object, day, breakdown values): the named breakdown reports
-- (age_gender, country, placement, device, and any configured), replaced by range like ad_performance.
-- breakdown_key is the values joined in the report's breakdown order (the key's text form); breakdowns
-- has them by name, e.g. {"age": "25-34", "gender": "female"}.
CREATE TABLE ad_performance_breakdown (
    report           text NOT NULL,
    ad_account_id    text NOT NULL,
    level            text NOT NULL CHECK (level IN ('campaign', 'adset', 'ad')),
    date             date NOT NULL,
    object_id        text NOT NULL,
    breakdown_key    text NOT NULL,
    breakdowns       jsonb NOT NULL,
    meta_campaign_id text NOT NULL,
    adset_id         text,
    ad_id            text,
    spend            numeric(18, 4) NOT NULL DEFAULT 0 CHECK (spend >= 0),
    impressions      bigint NOT NULL DEFAULT 0 CHECK (impressions >= 0),
    clicks           bigint NOT NULL DEFAULT 0 CHECK (clicks >= 0),
    reach            bigint,                            -- null where Meta withholds it (13-month rule)
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
    PRIMARY KEY (report, ad_account_id, level, date, object_id, breakdown_key)
);

-- Conversions and their value per action type and attribution window ('1d_click', '7d_click',
-- '28d_click', '1d_view', '1d_engaged_view', and 'default': the ad set's own attribution setting, which
-- Meta reports as each action's value since June 2025).
CREATE TABLE ad_performance_attribution (
    ad_account_id       text NOT NULL,
    level               text NOT NULL CHECK (level IN ('campaign', 'adset', 'ad')),
    date                date NOT NULL,
    object_id           text NOT NULL,
    action_type         text NOT NULL,
    attribution_window  text NOT NULL,
    meta_campaign_id    text NOT NULL,
    adset_id            text,
    ad_id               text,
    conversions         numeric(18, 4) NOT NULL DEFAULT 0,
    conversion_value    numeric(18, 4) NOT NULL DEFAULT 0,
    attribution_setting text,                           -- Meta's name of the default, e.g. 7d_click_1d_view
    synced_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ad_account_id, level, date, object_id, action_type, attribution_window)
);
