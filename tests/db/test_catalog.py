"""What the catalog shows about a table, read from Postgres."""

from __future__ import annotations

from everreach_data.db.catalog import table_metadata


def test_a_partitioned_tables_size_is_its_partitions_estimate(db):
    """``meta_webhook_event`` is partitioned by month; autovacuum analyzes its partitions, never the parent,
    whose own estimate stays empty: the catalog showed 0 rows for an inbox of any size."""
    db.execute("INSERT INTO meta_webhook_event (object, payload, body_sha256, status) "
               "SELECT 'page', '{}'::jsonb, decode(md5(g::text), 'hex'), 'done' FROM generate_series(1, 500) g")
    for leaf in db.execute("SELECT relid::text AS name FROM pg_partition_tree('meta_webhook_event') WHERE isleaf"):
        db.execute(f"ANALYZE {leaf['name']}")  # as autovacuum does
    assert table_metadata(db, "meta_webhook_event")["dagster/row_count"] == 500
    db.execute("INSERT INTO meta_webhook_event_digest (body_sha256) "
               "SELECT decode(md5('other' || g), 'hex') FROM generate_series(1, 300) g")
    db.execute("ANALYZE meta_webhook_event_digest")
    assert table_metadata(db, "meta_webhook_event_digest")["dagster/row_count"] == 300  # a plain table: its own
