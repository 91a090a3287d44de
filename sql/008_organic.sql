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
COMMENT ON TABLE social_account_insights_breakdown IS 'The Instagram account''s daily metrics by follower_type and by media_product_type (long: one row per breakdown value; the day''s total is in social_account_insights).';
COMMENT ON COLUMN social_account_insights_breakdown.date IS 'UTC day';
COMMENT ON COLUMN social_account_insights_breakdown.metric IS 'Meta''s metric name (views, reach, total_interactions, likes, comments, shares, saves)';
COMMENT ON COLUMN social_account_insights_breakdown.breakdown IS 'follower_type or media_product_type';
COMMENT ON COLUMN social_account_insights_breakdown.breakdown_value IS 'the breakdown''s value as Meta names it (FOLLOWER, NON_FOLLOWER; POST, REEL, STORY, AD)';

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
COMMENT ON TABLE social_audience_demographics IS 'A daily snapshot of the audience: Instagram follower and engaged-audience demographics, and each account''s follower count (long: one row per bucket).';
COMMENT ON COLUMN social_audience_demographics.snapshot_date IS 'UTC day the snapshot was taken (Meta keeps no history of demographics)';
COMMENT ON COLUMN social_audience_demographics.metric IS 'follower_demographics, engaged_audience_demographics or followers_count';
COMMENT ON COLUMN social_audience_demographics.timeframe IS 'Meta''s timeframe: this_week or this_month (lifetime for a follower count)';
COMMENT ON COLUMN social_audience_demographics.breakdown IS 'age, gender, city or country (total for a follower count)';
COMMENT ON COLUMN social_audience_demographics.dimension IS 'the bucket: 25-34, F, "Lisbon, Lisbon District", PT (total for a follower count)';
COMMENT ON COLUMN social_audience_demographics.value IS 'accounts in the bucket';

-- What the organic tables hold now.
COMMENT ON TABLE social_media_post IS 'Facebook Page posts and Reels, Instagram media (a carousel''s children in metadata) and stories, upserted by Meta''s id.';
COMMENT ON TABLE social_post_insights IS 'Lifetime metrics of each post, filed under the UTC day it was published (long: one row per metric); a story''s values are kept as captured, highest first, since Meta serves them for 24 hours.';
