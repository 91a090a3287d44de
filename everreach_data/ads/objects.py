"""The object tables — ``ad_account``, ``campaign``, ``ad_set``, ``ad``, ``ad_creative`` — upserted by
Meta's id from :mod:`everreach_data.meta.ads_objects`. Nothing is deleted: an object Meta deletes or
archives keeps its row with that status (it is still asked for), so past insights keep their names.
Plain code, testable without Dagster; ``defs.py`` wraps it in assets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from everreach_data.meta.ads_objects import KINDS, ObjectKind, read_account, read_objects
from everreach_data.meta.client import GraphClient

ACCOUNT_COLUMNS = ("ad_account_id", "account_id", "name", "currency", "timezone_name",
                   "timezone_offset_hours_utc", "account_status", "disable_reason", "business_id",
                   "amount_spent", "created_time", "metadata")
JSON_COLUMNS = frozenset({"metadata", "attribution_spec"})


def upsert_sql(table: str, columns: Iterable[str], key: tuple[str, ...], touched: str = "synced_at") -> sql.Composed:
    """``INSERT … ON CONFLICT (key) DO UPDATE`` every other column (and ``touched``: when it was synced)."""
    cols = list(columns)
    updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in cols if c not in key]
    return sql.SQL("INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT ({key}) DO UPDATE SET {sets}").format(
        t=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        vals=sql.SQL(", ").join(sql.Placeholder(c) for c in cols),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        sets=sql.SQL(", ").join([*updates, sql.SQL("{} = now()").format(sql.Identifier(touched))]),
    )


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: Jsonb(v) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}


def columns_of(kind: ObjectKind) -> tuple[str, ...]:
    return (kind.id_column, "ad_account_id", *(c for c, _ in kind.columns), "metadata")


def write_objects(conn: psycopg.Connection, kind: ObjectKind, rows: list[dict[str, Any]]) -> int:
    """Upsert one kind's rows (campaigns into the CRM's ``campaign`` table, as source ``meta``)."""
    if not rows:
        return 0
    columns = columns_of(kind)
    if kind.table == "campaign":
        statement = upsert_sql("campaign", ("source", *columns), ("source", kind.id_column), "updated_at")
        params = [{"source": "meta", **_table_row(r)} for r in rows]
    else:
        statement = upsert_sql(kind.table, columns, (kind.id_column,))
        params = [_table_row(r) for r in rows]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(statement, params)
    return len(rows)


@dataclass
class ObjectsResult:
    accounts: list[str]
    rows: dict[str, int] = field(default_factory=dict)  # per account
    statuses: dict[str, int] = field(default_factory=dict)  # effective (or own) status → objects
    api_calls: int = 0


def sync_accounts(conn: psycopg.Connection, client: GraphClient, accounts: list[str]) -> ObjectsResult:
    """``GET /act_{id}`` for each account, upserted into ``ad_account``."""
    rows = [read_account(client, a) for a in accounts]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(upsert_sql("ad_account", ACCOUNT_COLUMNS, ("ad_account_id",)), [_table_row(r) for r in rows])
    result = ObjectsResult([r["ad_account_id"] for r in rows], api_calls=client.stats.calls)
    for r in rows:
        result.rows[r["ad_account_id"]] = 1
        key = f"account_status {r['account_status']}"
        result.statuses[key] = result.statuses.get(key, 0) + 1
    return result


def sync_objects(conn: psycopg.Connection, client: GraphClient, kind_name: str, accounts: list[str]) -> ObjectsResult:
    """Every object of one kind in each account, whatever its status, upserted."""
    kind = KINDS[kind_name]
    result = ObjectsResult(list(accounts))
    for account in accounts:
        rows = list(read_objects(client, kind, account))
        result.rows[account] = write_objects(conn, kind, rows)
        for r in rows:
            status = r.get("effective_status") or r.get("status") or "unknown"
            result.statuses[status] = result.statuses.get(status, 0) + 1
    result.api_calls = client.stats.calls
    return result
