-- The catalog: the analysts' report tables (daily Dagster assets, each partition replaced whole), and a
-- description on every table and on the columns an analyst reads. The Dagster catalog shows these
-- descriptions as each asset's column schema, so they are written once, here.

-- ───────────────────────────── reports ─────────────────────────────

CREATE TABLE message_volume_daily (
    date          date NOT NULL,
    platform      text NOT NULL,
    direction     text NOT NULL,
    message_count bigint NOT NULL,
    refreshed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (date, platform, direction)
);
COMMENT ON TABLE message_volume_daily IS 'Messages per platform, direction and UTC day (the runbook''s message volume query).';
COMMENT ON COLUMN message_volume_daily.date IS 'UTC day the message was sent (Meta''s timestamp)';
COMMENT ON COLUMN message_volume_daily.platform IS 'messenger, instagram or whatsapp';
COMMENT ON COLUMN message_volume_daily.direction IS 'inbound (from the person) or outbound (from the business)';
COMMENT ON COLUMN message_volume_daily.message_count IS 'messages in conversation_message';

CREATE TABLE message_delivery_rates_daily (
    date          date NOT NULL,
    status        text NOT NULL,
    message_count bigint NOT NULL,
    percentage    numeric(6, 2) NOT NULL,
    refreshed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (date, status)
);
COMMENT ON TABLE message_delivery_rates_daily IS 'Outbound messages by current status and UTC day sent (the runbook''s delivery/read rates query).';
COMMENT ON COLUMN message_delivery_rates_daily.status IS 'queued, sending, sent, delivered, read, failed or deleted, as the message stands now';
COMMENT ON COLUMN message_delivery_rates_daily.percentage IS 'share of the day''s outbound messages, in percent (two decimals)';

CREATE TABLE conversion_events_daily (
    date         date NOT NULL,
    pixel_id     text NOT NULL,
    event_name   text NOT NULL,
    event_count  bigint NOT NULL,
    total_value  numeric(18, 4),
    avg_value    numeric(18, 4),
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (date, pixel_id, event_name)
);
COMMENT ON TABLE conversion_events_daily IS 'Conversions API events per pixel, event name and UTC day of the event (the runbook''s conversion events query).';
COMMENT ON COLUMN conversion_events_daily.total_value IS 'sum of the events'' value (custom_data.value), in their currency';

CREATE TABLE campaign_performance_daily (
    date             date NOT NULL,
    campaign_id      uuid NOT NULL REFERENCES campaign (campaign_id),
    ad_account_id    text NOT NULL,
    meta_campaign_id text NOT NULL,
    campaign_name    text,
    currency         text,
    spend            numeric(18, 4) NOT NULL,
    impressions      bigint NOT NULL,
    clicks           bigint NOT NULL,
    conversions      numeric(18, 4) NOT NULL,
    conversion_value numeric(18, 4) NOT NULL,
    cpc              numeric(18, 6),
    cpm              numeric(18, 6),
    ctr              numeric(18, 6),
    roas             numeric(18, 6),
    refreshed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (date, campaign_id)
);
COMMENT ON TABLE campaign_performance_daily IS 'Each campaign''s day from campaign-level ad_performance rows, with the derived rates (the runbook''s ads queries).';
COMMENT ON COLUMN campaign_performance_daily.cpc IS 'spend / clicks (null without clicks)';
COMMENT ON COLUMN campaign_performance_daily.cpm IS 'spend per 1,000 impressions (null without impressions)';
COMMENT ON COLUMN campaign_performance_daily.ctr IS 'clicks / impressions, in percent, as Meta reports it (null without impressions)';
COMMENT ON COLUMN campaign_performance_daily.roas IS 'conversion_value / spend (null without spend)';

CREATE TABLE conversion_reconciliation_daily (
    date             date NOT NULL,
    pixel_id         text NOT NULL,
    event_name       text NOT NULL,
    action_type      text,
    events_stored    bigint NOT NULL,
    events_sent      bigint NOT NULL,
    events_received  bigint NOT NULL,
    meta_attributed  numeric(18, 4),
    refreshed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (date, pixel_id, event_name)
);
COMMENT ON TABLE conversion_reconciliation_daily IS 'Per pixel event and day: what we sent to the Conversions API against what Meta attributes to ads in ad_performance — the first figure to check when "conversions are not showing".';
COMMENT ON COLUMN conversion_reconciliation_daily.action_type IS 'the ads action type Meta counts this pixel event under (offsite_conversion.fb_pixel_…)';
COMMENT ON COLUMN conversion_reconciliation_daily.events_stored IS 'events in meta_conversion_event with this name and UTC day';
COMMENT ON COLUMN conversion_reconciliation_daily.events_sent IS 'of those, sent to Meta (status sent)';
COMMENT ON COLUMN conversion_reconciliation_daily.events_received IS 'what Meta said it received for those requests (events_received)';
COMMENT ON COLUMN conversion_reconciliation_daily.meta_attributed IS 'conversions of action_type in the day''s campaign-level ad_performance rows of every configured account (Meta attributes by ad impression time, so days need not match one to one)';

-- ───────────────────────────── what the other tables are ─────────────────────────────

-- Only on our own stand-in: Supabase's auth.users belongs to its auth service, and only a table's owner may
-- comment on it.
DO $$
BEGIN
    IF pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'auth.users'::regclass), 'MEMBER') THEN
        COMMENT ON TABLE auth.users IS 'The app''s users (Supabase''s auth.users where it exists; a stand-in elsewhere).';
    END IF;
END
$$;
COMMENT ON TABLE campaign IS 'The CRM''s campaigns; Meta campaigns are upserted here by ad_performance (source meta, external_id = Meta''s id).';
COMMENT ON TABLE user_event IS 'The app''s behavioural events; every message logs one, and meta_conversion_event sends the ones that are Meta conversions.';
COMMENT ON COLUMN user_event.event_type IS 'e.g. purchase, lead_submitted, signup, message_received, message_sent';
COMMENT ON TABLE meta_platform_config IS 'One row per channel: whether it may send, and what its token allows.';
COMMENT ON TABLE social_media_post IS 'Facebook Page posts and Instagram media, upserted by Meta''s id.';
COMMENT ON TABLE social_post_insights IS 'Lifetime metrics of each post, filed under the UTC day it was published (long: one row per metric).';
COMMENT ON TABLE social_account_insights IS 'The Page''s and the Instagram account''s daily metrics (long: one row per metric).';
COMMENT ON TABLE ad_performance IS 'Meta ads insights: one row per account, level (campaign, adset, ad), object and day.';
COMMENT ON COLUMN ad_performance.level IS 'campaign, adset or ad: each level covers the same delivery, so sum one level only';
COMMENT ON COLUMN ad_performance.object_id IS 'the campaign, ad set or ad id at this level';
COMMENT ON COLUMN ad_performance.spend IS 'amount spent, in the account''s currency';
COMMENT ON COLUMN ad_performance.reach IS 'people reached (not additive across days or objects)';
COMMENT ON COLUMN ad_performance.ctr IS 'clicks / impressions in percent, as Meta computes it';
COMMENT ON COLUMN ad_performance.conversions IS 'actions of the configured conversion action types (ADS_CONVERSION_ACTION_TYPES)';
COMMENT ON COLUMN ad_performance.conversion_value IS 'action_values of the same action types';
COMMENT ON COLUMN ad_performance.metadata IS 'campaign_name, adset_name, ad_name and Meta''s raw actions and action_values';
COMMENT ON TABLE meta_conversion_event IS 'Server events for the Conversions API, hashed before they are stored (never raw PII), with Meta''s answer.';
COMMENT ON COLUMN meta_conversion_event.user_data IS 'SHA-256 hashed identifiers and pseudonymous cookies only';
COMMENT ON COLUMN meta_conversion_event.status IS 'pending (stored, not yet sent), sent, or failed with error_message';
COMMENT ON TABLE meta_webhook_event IS 'Every webhook body Meta sent, stored before it was acknowledged, once per byte-identical body.';
COMMENT ON COLUMN meta_webhook_event.status IS 'pending, done, failed (with last_error, after attempts), or ignored (an object we do not process)';
COMMENT ON TABLE conversation_thread IS 'One thread per platform, channel and person.';
COMMENT ON COLUMN conversation_thread.participant_id IS 'PSID (Messenger), IGSID (Instagram) or wa_id (WhatsApp)';
COMMENT ON COLUMN conversation_thread.last_inbound_at IS 'Meta''s timestamp of the person''s last message: the policy windows run from it';
COMMENT ON TABLE conversation_message IS 'Every message in and out, unique by Meta''s id (mid / wamid).';
COMMENT ON COLUMN conversation_message.status IS 'inbound: received; outbound: queued < sending < sent < delivered < read (only forward), or failed';
COMMENT ON COLUMN conversation_message.sent_at IS 'Meta''s timestamp of the message';
COMMENT ON TABLE messaging_policy_window IS 'When each thread may be messaged: standard (24 h) and, on Messenger/Instagram, human agent (7 days).';
COMMENT ON TABLE message_delivery_event IS 'Receipts: WhatsApp statuses, Messenger/Instagram deliveries and reads (per message or by watermark), deletions.';
COMMENT ON COLUMN message_delivery_event.applied IS 'false while the message it refers to has not arrived yet';
COMMENT ON TABLE outbound_message_job IS 'The outbound queue: one row per send request, and what became of it.';
COMMENT ON COLUMN outbound_message_job.status IS 'queued, sending, sent, failed (with Meta''s code), or unknown (no answer: reconciled from webhooks, never re-sent blindly)';
