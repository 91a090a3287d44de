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
#: The planner's estimate: exact counts of the conversation tables would scan them on every run.
ESTIMATED_ROWS = "SELECT greatest(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = to_regclass(%(table)s)"


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
