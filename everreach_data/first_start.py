"""A first start that shows data: on an empty ``.everreach/``, ``everreach-data dev`` backfills the last days
of every daily asset (insights and reports) against the sandbox, so the catalog, the asset pages and the
reports have something in them within minutes. It is an ordinary Dagster backfill, launched through the
webserver's GraphQL API (as the UI's "Materialize" does) and visible under Overview → Backfills; a marker
file keeps later starts from repeating it.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

DAYS = 7
MARKER = "first-start-backfill"

PARTITIONED_ASSETS = """
query { assetNodes { assetKey { path } isPartitioned isMaterializable } }
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


def backfill_first_days(dagster_url: str, home: Path, *, today: date | None = None, days: int = DAYS,
                        timeout: float = 180.0) -> str | None:
    """Launch the first-start backfill unless one was launched before from ``home``; returns its id."""
    marker = home / MARKER
    if marker.exists():
        return None
    with httpx.Client(base_url=dagster_url, timeout=30) as client:
        wait_until_serving(client, timeout)
        nodes = _graphql(client, PARTITIONED_ASSETS)["assetNodes"]
        keys = [{"path": n["assetKey"]["path"]} for n in nodes if n["isPartitioned"] and n["isMaterializable"]]
        result = _graphql(client, LAUNCH, {"params": {
            "assetSelection": keys, "partitionNames": last_days(today or datetime.now(UTC).date(), days),
            "title": f"First start: the last {days} days",
            "tags": [{"key": "everreach/first-start", "value": "true"}]}})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the first-start backfill was not launched: {result.get('message')}")
    marker.write_text(result["backfillId"] + "\n")
    return result["backfillId"]
