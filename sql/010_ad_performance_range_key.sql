-- ad_performance: a primary key in the order the asset reads and writes the table, and one index fewer.
--
-- The asset replaces a range: DELETE … WHERE ad_account_id = ANY(…) AND level = ANY(…) AND date BETWEEN …,
-- then COPY. Keyed (ad_account_id, level, date, object_id), the delete is a range scan of the key, and the
-- COPY — rows arrive by level, then day, then object — appends at the right edge of the key's b-tree
-- instead of scattering inserts across it (the old key put object_id before date).
-- The receiver's summary filters level and dates with or without an account: PostgreSQL 18's skip scan
-- answers that from this key (the accounts are few), so (date, level) no longer pays its way on every
-- insert. ad_performance_campaign_idx stays: it serves the foreign key to campaign and per-campaign reads.
ALTER TABLE ad_performance
    DROP CONSTRAINT ad_performance_pkey,
    ADD CONSTRAINT ad_performance_pkey PRIMARY KEY (ad_account_id, level, date, object_id);
DROP INDEX IF EXISTS ad_performance_date_level_idx;
