-- Organic insights: account insights by breakdown, audience demographics.

-- ───────────────────────────── account insights by breakdown ─────────────────────────────

-- Instagram account metrics broken down as Meta allows (follower_type: views, reach; media_product_type:
-- views, reach, total_interactions, likes, comments, shares, saves), one row per day, metric and breakdown
-- value. The day's total stays in social_account_insights; for follower_type the values add up to it.
CREATE TABLE social_account_insights_breakdown (
    platform        text NOT NULL CHECK (platform IN ('facebook', 'instagram')),
    account_id      text NOT NULL,
    date            date NOT NULL,
    metric          text NOT NULL,
    breakdown       text NOT NULL,          -- follower_type | media_product_type
    breakdown_value text NOT NULL,          -- FOLLOWER, NON_FOLLOWER | POST, REEL, STORY, AD …
    value           numeric NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, account_id, date, metric, breakdown, breakdown_value)
);
CREATE INDEX social_account_insights_breakdown_date_idx ON social_account_insights_breakdown (date);

-- ───────────────────────────── audience demographics ─────────────────────────────

-- A daily snapshot of who the audience is: Instagram follower_demographics and
-- engaged_audience_demographics by age, gender, city and country (Meta's period=lifetime with a
-- timeframe; top 45 cities and countries), and each account's follower count (breakdown 'total').
CREATE TABLE social_audience_demographics (
    snapshot_date date NOT NULL,            -- the UTC day the snapshot was taken
    platform      text NOT NULL CHECK (platform IN ('facebook', 'instagram')),
    account_id    text NOT NULL,
    metric        text NOT NULL,            -- follower_demographics | engaged_audience_demographics | followers_count
    timeframe     text NOT NULL,            -- this_week | this_month | lifetime
    breakdown     text NOT NULL,            -- age | gender | city | country | total
    dimension     text NOT NULL,            -- 25-34, F, "Lisbon, Lisbon District", PT … | total
    value         numeric NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, account_id, snapshot_date, metric, timeframe, breakdown, dimension)
);
CREATE INDEX social_audience_demographics_date_idx ON social_audience_demographics (snapshot_date);
