-- Inbox retention: meta_webhook_event partitioned by the month it was received (UTC), so that old months go
-- as whole partitions (DROP TABLE: no DELETE, no vacuum, no bloat) once every event in them is finished.
-- The webhook_events_retention job drops them (everreach_data/operations/retention.py); failed events keep
-- their month until an operator replays or discards them.
--
-- A partitioned table's unique constraints must include the partition key, so byte-identical redeliveries
-- are caught by meta_webhook_event_digest instead: one row per body hash, kept for the dedupe window (Meta
-- retries for up to 36 hours, WhatsApp for up to 7 days), whatever month each delivery falls in.

CREATE TABLE meta_webhook_event_digest (
    body_sha256 bytea PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Appended in time order: the retention job's deletes of old digests read it by block range.
CREATE INDEX meta_webhook_event_digest_received_at_brin ON meta_webhook_event_digest USING brin (received_at);

CREATE SEQUENCE meta_webhook_event_id_seq AS bigint;

-- 002_inbox's meta_webhook_event, partitioned by received_at (it takes that name below, once the old table is
-- gone). 'discarded' is an operator's verdict on a failed event: replayed, it is pending again; discarded, it
-- is finished and its month may go.
CREATE TABLE meta_webhook_event_partitioned (
    webhook_event_id bigint NOT NULL DEFAULT nextval('meta_webhook_event_id_seq'),
    object           text NOT NULL,           -- page | instagram | whatsapp_business_account | …
    payload          jsonb NOT NULL,
    body_sha256      bytea NOT NULL,          -- redeliveries are caught by meta_webhook_event_digest
    status           text NOT NULL DEFAULT 'pending'
                     CONSTRAINT meta_webhook_event_status_check
                     CHECK (status IN ('pending', 'done', 'failed', 'ignored', 'discarded')),
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    locked_until     timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz
) PARTITION BY RANGE (received_at);

-- Events of a month whose partition does not exist yet land here instead of being refused (the intake must
-- never fail for want of a partition); create_webhook_event_partition moves them into their month.
CREATE TABLE meta_webhook_event_default PARTITION OF meta_webhook_event_partitioned DEFAULT;

INSERT INTO meta_webhook_event_partitioned
SELECT webhook_event_id, object, payload, body_sha256, status, attempts, last_error, locked_until, received_at,
       processed_at
FROM meta_webhook_event;
INSERT INTO meta_webhook_event_digest (body_sha256, received_at)
SELECT body_sha256, received_at FROM meta_webhook_event;
SELECT setval('meta_webhook_event_id_seq', coalesce((SELECT max(webhook_event_id) FROM meta_webhook_event), 0) + 1,
              false);
-- The descriptions the catalog shows (004_catalog) move with the table.
DO $$
DECLARE
    c record;
BEGIN
    EXECUTE format('COMMENT ON TABLE meta_webhook_event_partitioned IS %L',
                   obj_description('meta_webhook_event'::regclass, 'pg_class'));
    FOR c IN SELECT a.attname, col_description(a.attrelid, a.attnum) AS description FROM pg_attribute a
             WHERE a.attrelid = 'meta_webhook_event'::regclass AND a.attnum > 0
               AND col_description(a.attrelid, a.attnum) IS NOT NULL
    LOOP
        EXECUTE format('COMMENT ON COLUMN meta_webhook_event_partitioned.%I IS %L', c.attname, c.description);
    END LOOP;
END $$;
DROP TABLE meta_webhook_event;
ALTER TABLE meta_webhook_event_partitioned RENAME TO meta_webhook_event;
COMMENT ON COLUMN meta_webhook_event.status IS
    'pending, done, failed (with last_error, after attempts), ignored (an object we do not process), or discarded '
    '(an operator gave up on a failed event)';
COMMENT ON TABLE meta_webhook_event_digest IS
    'The hash of every webhook body stored in the last WEBHOOK_DEDUPE_DAYS: a redelivery is stored once, whatever month it arrives in.';
ALTER SEQUENCE meta_webhook_event_id_seq OWNED BY meta_webhook_event.webhook_event_id;

ALTER TABLE meta_webhook_event ADD CONSTRAINT meta_webhook_event_pkey PRIMARY KEY (webhook_event_id, received_at);
CREATE INDEX meta_webhook_event_claim_idx ON meta_webhook_event (webhook_event_id) WHERE status = 'pending';
-- What keeps a month from being dropped, and what an operator looks at: few rows, a small index.
CREATE INDEX meta_webhook_event_failed_idx ON meta_webhook_event (received_at) WHERE status = 'failed';
-- Append-only and time-ordered within each month (see 002_inbox).
CREATE INDEX meta_webhook_event_received_at_brin ON meta_webhook_event USING brin (received_at);

-- The month of p_month (UTC) as a partition, if it is not one yet; returns its name, or NULL if it existed.
-- Created beside the table and then attached (ATTACH takes a lighter lock on the parent than CREATE TABLE …
-- PARTITION OF, so the intake keeps writing), after moving in what the default partition holds for that
-- month. DDL takes no parameters: format()'s %I and %L quote the identifier and the bounds.
CREATE FUNCTION create_webhook_event_partition(p_month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := date_trunc('month', p_month::timestamp) AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', p_month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
    part text := 'meta_webhook_event_p' || to_char(p_month, 'YYYY_MM');
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE meta_webhook_event INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    LOCK TABLE meta_webhook_event_default IN SHARE ROW EXCLUSIVE MODE;  -- nothing lands there while we move
    EXECUTE format('WITH moved AS (DELETE FROM meta_webhook_event_default WHERE received_at >= $1 '
                   'AND received_at < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
    EXECUTE format('ALTER TABLE meta_webhook_event ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    RETURN part;
END $$;

-- Every month from the oldest stored event (or last month) to two months ahead, the stored events moved
-- into theirs: the default partition stays empty as long as the retention job runs (it keeps two ahead).
SELECT create_webhook_event_partition(m::date)
FROM generate_series(
    date_trunc('month', least((SELECT min(received_at) FROM meta_webhook_event), now() - interval '1 month')
                        AT TIME ZONE 'UTC'),
    date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months', interval '1 month') AS m;

-- The partitions with their bounds (the default partition has none).
CREATE VIEW meta_webhook_event_partitions AS
SELECT c.relname AS partition,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS from_time,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS to_time
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'meta_webhook_event'::regclass;
