"""A first start that shows data: on an empty ``.everreach/``, ``everreach-data dev`` posts a week of sample
conversations (the sandbox's signed webhook traffic, dated over the past days), lets the sensor drain them,
then backfills the last days of every daily asset (insights and reports) and materializes every other one
Meta feeds (the ad accounts, campaigns, ad sets, ads and creatives, token health, the template catalog,
audience demographics) against the sandbox, so the catalog, the asset pages and the reports have something
in them within minutes. The backfill is an ordinary
one, launched through the webserver's GraphQL API (as the UI's "Materialize" does) and visible under
Overview → Backfills; a marker file keeps later starts from repeating it.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from everreach_data.db.connection import connect
from everreach_data.inbox.queue import pending_work

DAYS = 7
MARKER = "first-start-backfill"
#: Sample webhook bodies per day of history.
BODIES_PER_DAY = 150

MATERIALIZABLE_ASSETS = """
query { assetNodes { assetKey { path } isMaterializable } }
"""
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""


def last_days(today: date, days: int = DAYS) -> list[str]:
    """The partition keys of the ``days`` UTC days before ``today``, oldest first."""
    return [(today - timedelta(days=n)).isoformat() for n in range(days, 0, -1)]


def _graphql(client: httpx.Client, query: str, variables: dict | None = None) -> dict:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}})
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"Dagster's GraphQL API refused the request: {body['errors'][0].get('message')}")
    return body["data"]


def wait_until_serving(client: httpx.Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/server_info").is_success:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Dagster webserver at {client.base_url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


def seed_history(webhook_url: str, app_secret: str, *, days: int = DAYS, timeout: float = 180.0) -> int:
    """Post ``days`` of sample webhook traffic, dated over those days, once the receiver answers."""
    import asyncio

    from everreach_sandbox.traffic import post_traffic

    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(webhook_url, timeout=2)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the receiver at {webhook_url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.5)
    posted = asyncio.run(post_traffic(webhook_url, app_secret, rate=500, count=days * BODIES_PER_DAY, seed=7,
                                      days_ago=days))
    return posted["ok"]


def wait_for_drain(database_url: str, timeout: float = 180.0) -> None:
    """Return once the inbox has nothing left to process (the sensor's runs drain it)."""
    deadline = time.monotonic() + timeout
    with connect(database_url, autocommit=True) as conn:
        while pending_work(conn)[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the webhook inbox was not drained within {timeout:.0f} s")
            time.sleep(1.0)


def backfill_first_days(dagster_url: str, home: Path, *, today: date | None = None, days: int = DAYS,
                        timeout: float = 180.0) -> str | None:
    """Launch the first-start backfill unless one was launched before from ``home``; returns its id. It
    takes every asset that can be materialized: the daily ones for the last ``days`` days, the others once
    (an asset backfill runs both, in lineage order). The queue-fed conversation tables are not among them."""
    marker = home / MARKER
    if marker.exists():
        return None
    with httpx.Client(base_url=dagster_url, timeout=30) as client:
        wait_until_serving(client, timeout)
        nodes = _graphql(client, MATERIALIZABLE_ASSETS)["assetNodes"]
        keys = [{"path": n["assetKey"]["path"]} for n in nodes if n["isMaterializable"]]
        result = _graphql(client, LAUNCH, {"params": {
            "assetSelection": keys, "partitionNames": last_days(today or datetime.now(UTC).date(), days),
            "title": f"First start: the last {days} days",
            "tags": [{"key": "everreach/first-start", "value": "true"}]}})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the first-start backfill was not launched: {result.get('message')}")
    marker.write_text(result["backfillId"] + "\n")
    return result["backfillId"]
