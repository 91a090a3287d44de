-- Sample data like the runbook's seed-sample-data.sql: users, campaigns and user events.
-- Idempotent: fixed ids and ON CONFLICT DO NOTHING, so `everreach-data seed` can be run again.
INSERT INTO auth.users (id, email) VALUES
    ('00000000-0000-4000-8000-000000000001', 'ava@example.com'),
    ('00000000-0000-4000-8000-000000000002', 'ben@example.com'),
    ('00000000-0000-4000-8000-000000000003', 'chloe@example.com')
ON CONFLICT DO NOTHING;

INSERT INTO campaign (campaign_id, name, source, external_id, objective, status) VALUES
    ('00000000-0000-4000-8000-0000000000c1', 'Autumn Re-engagement', 'crm', 'crm-autumn', 'OUTCOME_ENGAGEMENT', 'ACTIVE'),
    ('00000000-0000-4000-8000-0000000000c2', 'Warm Intro Push', 'crm', 'crm-warm-intro', 'OUTCOME_LEADS', 'ACTIVE'),
    ('00000000-0000-4000-8000-0000000000c3', 'Holiday Follow-ups', 'crm', 'crm-holiday', 'OUTCOME_SALES', 'PAUSED')
ON CONFLICT DO NOTHING;

INSERT INTO user_event (event_id, user_id, event_type, source, occurred_at, properties)
SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-00000000000' || (1 + g % 3))::uuid,
       (ARRAY['signup', 'contact_created', 'checkout_started', 'purchase', 'lead_submitted'])[1 + g % 5],
       'app',
       now() - make_interval(hours => g * 5),
       CASE WHEN g % 5 = 3 THEN jsonb_build_object('value', 19.99 + g, 'currency', 'USD', 'order_id', 'ord-' || g)
            ELSE '{}'::jsonb END
FROM generate_series(1, 24) AS g
ON CONFLICT DO NOTHING;
