"""What the Dagster catalog shows about a table, read from the table itself: its columns with the
descriptions ``sql/`` gives them (``COMMENT ON``), its name and its size. One home for a column's meaning:
the schema."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg

COLUMNS = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable,
       col_description(a.attrelid, a.attnum) AS description
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
#: The planner's estimate: exact counts of the conversation tables would scan them on every run. A partitioned
#: table's is the sum of its partitions': autovacuum analyzes those, never the parent, whose own stays at none.
ESTIMATED_ROWS = """
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS n
FROM pg_class c
WHERE (c.oid = to_regclass(%(table)s) AND c.relkind <> 'p')
   OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%(table)s)) WHERE isleaf)
"""


def column_schema(conn: psycopg.Connection, table: str) -> dg.TableSchema:
    rows = conn.execute(COLUMNS, {"table": table}).fetchall()
    return dg.TableSchema(columns=[
        dg.TableColumn(r["name"], r["type"], description=r["description"],
                       constraints=dg.TableColumnConstraints(nullable=r["nullable"])) for r in rows])


def table_metadata(conn: psycopg.Connection, table: str, *, row_count: int | None = None) -> dict[str, Any]:
    """``dagster/table_name``, ``dagster/column_schema`` and ``dagster/row_count`` (``row_count``, or the
    planner's estimate of the whole table)."""
    if row_count is None:
        row_count = conn.execute(ESTIMATED_ROWS, {"table": table}).fetchone()["n"]
    return {"dagster/table_name": f"public.{table}" if "." not in table else table,
            "dagster/column_schema": column_schema(conn, table), "dagster/row_count": row_count}
