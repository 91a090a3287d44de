"""What the organic tests share: the sandbox, the resources pointed at it, a run over a range of days, and a
database session in a time zone far from UTC."""

from __future__ import annotations

from datetime import date

import dagster as dg
import httpx
import psycopg
from psycopg import sql

from everreach_data.organic.defs import FacebookPageResource, InstagramAccountResource
from everreach_data.resources import PostgresResource
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

PAGE, IG = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"], SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]
TOKEN = SANDBOX_DEFAULTS["MESSENGER_PAGE_TOKEN"]


def resources(db_url: str, sandbox: str) -> dict:
    return {"postgres": PostgresResource(url=db_url),
            "facebook_page": FacebookPageResource(access_token=TOKEN, page_id=PAGE, graph_url=sandbox),
            "instagram_account": InstagramAccountResource(access_token=TOKEN, ig_user_id=IG, graph_url=sandbox)}


def run(assets, db_url: str, sandbox: str, start: date, end: date, **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize ``assets`` for the partitions ``start``..``end`` (inclusive) as one run."""
    return dg.materialize(assets, resources=resources(db_url, sandbox), tags={
        "dagster/asset_partition_range_start": start.isoformat(),
        "dagster/asset_partition_range_end": end.isoformat()}, **kwargs)


def set_database_time_zone(db: psycopg.Connection, zone: str) -> None:
    """Every later session on this test's database runs in ``zone`` (as a server configured so would)."""
    name = db.info.dbname
    db.execute(sql.SQL("ALTER DATABASE {} SET timezone = {}").format(sql.Identifier(name), sql.Literal(zone)))


def graph(base: str) -> httpx.Client:
    """A plain HTTP client on the sandbox's Graph API with the Page token, for asking Meta independently."""
    return httpx.Client(base_url=f"{base}/v24.0", params={"access_token": TOKEN})
