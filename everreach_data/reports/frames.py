"""Reports as pandas DataFrames, for analysts working in Python (a notebook, a script), and the preview the
report assets put in their metadata.

    >>> from datetime import date
    >>> from everreach_data.reports.frames import load_report
    >>> load_report(database_url, "campaign_performance_daily", date(2026, 11, 1), date(2026, 11, 30))
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
from psycopg import sql

from everreach_data.db.connection import connect
from everreach_data.reports.queries import REPORTS

RANGE = sql.SQL("SELECT * FROM {table} WHERE date BETWEEN %(since)s AND %(until)s ORDER BY date")


def frame(conn: psycopg.Connection, query: sql.Composable | str, params: dict[str, Any]) -> pd.DataFrame:
    """A query's rows as a DataFrame: numerics as floats, days as dates."""
    cur = conn.execute(query, params)
    columns = [c.name for c in cur.description or ()]
    rows = [{k: float(v) if isinstance(v, Decimal) else v for k, v in row.items()} for row in cur.fetchall()]
    return pd.DataFrame(rows, columns=columns)


def load_report(database_url: str, report: str, since: date, until: date) -> pd.DataFrame:
    """The days ``since``..``until`` (inclusive) of a report table (``message_volume_daily``, …)."""
    tables = {r.table for r in REPORTS}
    if report not in tables:
        raise ValueError(f"unknown report {report!r}: choose from {', '.join(sorted(tables))}")
    with connect(database_url) as conn:
        return frame(conn, RANGE.format(table=sql.Identifier(report)), {"since": since, "until": until})


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool | int | float | str):
        return None if isinstance(value, float) and pd.isna(value) else value
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def preview(df: pd.DataFrame, *, drop: tuple[str, ...] = ("refreshed_at",)) -> dg.MetadataValue:
    """The frame as a table in a materialization's metadata."""
    df = df.drop(columns=[c for c in drop if c in df.columns])
    return dg.MetadataValue.table(
        records=[dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in df.to_dict("records")],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, str(t)) for c, t in df.dtypes.items()]))
