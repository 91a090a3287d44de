"""The Marketing API's objects — ad accounts, campaigns, ad sets, ads and creatives — read and typed.

Each kind is one paged edge of the ad account (``/act_{id}/campaigns``, ``adsets``, ``ads``,
``adcreatives``) with the fields asked for explicitly. Meta leaves DELETED and ARCHIVED objects out of
those edges unless ``effective_status`` asks for them, so it always asks for every status: a deleted ad
keeps its row, with its status, and the insights that name it still join. ``/me/adaccounts`` lists every
account a token may read, for ``FB_ADS_ACCOUNT_ID=me``.

Meta's formats, parsed here and nowhere else: budgets are strings in the currency's minor units (kept as
integers), times are ``2026-03-04T10:00:00-0800`` (the account's offset), the creative of an ad is
``{"id": …}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from everreach_data.meta.client import GraphClient
from everreach_data.meta.insights import ALL_STATUSES, ad_account_id

#: ``FB_ADS_ACCOUNT_ID`` meaning "every ad account the token may read" (``/me/adaccounts``).
TOKEN_ACCOUNTS = "me"

ACCOUNT_FIELDS = ("id", "account_id", "name", "currency", "timezone_name", "timezone_offset_hours_utc",
                  "account_status", "disable_reason", "business", "amount_spent", "created_time")


@dataclass(frozen=True)
class ObjectKind:
    """One kind of object: the edge that lists it, the fields asked for, and the typed columns they fill
    (column → Meta's field; a ``*`` column parses a budget, a ``@`` one a time)."""

    table: str
    edge: str
    id_column: str
    columns: tuple[tuple[str, str], ...]
    by_status: bool = True  # whether the edge filters by effective_status (creatives' does not)

    @property
    def fields(self) -> tuple[str, ...]:
        return ("id", *dict.fromkeys(f.lstrip("*@") for _, f in self.columns if f.lstrip("*@") != "id"))


KINDS: dict[str, ObjectKind] = {
    "campaign": ObjectKind("campaign", "campaigns", "external_id", (
        ("name", "name"), ("objective", "objective"), ("status", "status"),
        ("effective_status", "effective_status"), ("buying_type", "buying_type"),
        ("bid_strategy", "bid_strategy"), ("daily_budget", "*daily_budget"),
        ("lifetime_budget", "*lifetime_budget"), ("budget_remaining", "*budget_remaining"),
        ("start_time", "@start_time"), ("stop_time", "@stop_time"), ("created_time", "@created_time"),
        ("updated_time", "@updated_time"))),
    "ad_set": ObjectKind("ad_set", "adsets", "adset_id", (
        ("campaign_id", "campaign_id"), ("name", "name"), ("status", "status"),
        ("effective_status", "effective_status"), ("optimization_goal", "optimization_goal"),
        ("billing_event", "billing_event"), ("bid_strategy", "bid_strategy"),
        ("daily_budget", "*daily_budget"), ("lifetime_budget", "*lifetime_budget"),
        ("budget_remaining", "*budget_remaining"), ("attribution_spec", "attribution_spec"),
        ("start_time", "@start_time"), ("end_time", "@end_time"), ("created_time", "@created_time"),
        ("updated_time", "@updated_time"))),
    "ad": ObjectKind("ad", "ads", "ad_id", (
        ("campaign_id", "campaign_id"), ("adset_id", "adset_id"), ("name", "name"), ("status", "status"),
        ("effective_status", "effective_status"), ("creative_id", "creative"),
        ("created_time", "@created_time"), ("updated_time", "@updated_time"))),
    "ad_creative": ObjectKind("ad_creative", "adcreatives", "creative_id", (
        ("name", "name"), ("status", "status"), ("title", "title"), ("body", "body"),
        ("object_type", "object_type"), ("call_to_action_type", "call_to_action_type"),
        ("thumbnail_url", "thumbnail_url"), ("image_url", "image_url"),
        ("effective_object_story_id", "effective_object_story_id"),
        ("instagram_permalink_url", "instagram_permalink_url")), by_status=False),
}


def meta_time(value: Any) -> datetime | None:
    """``2026-03-04T10:00:00-0800`` (Meta's object times) as an aware datetime; None when absent."""
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError as exc:
        raise ValueError(f"not a Meta timestamp: {value!r}") from exc


def minor_units(value: Any) -> int | None:
    """A budget or amount as Meta sends it (a string of minor units, ``"5000"`` = 50.00) as an integer."""
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError as exc:
        raise ValueError(f"not an amount in minor units: {value!r}") from exc


def parse_object(kind: ObjectKind, raw: Mapping[str, Any], account_id: str) -> dict[str, Any]:
    """One object as its table's columns (the raw object kept in ``metadata``)."""
    if not raw.get("id"):
        raise ValueError(f"{kind.table} without an id: {sorted(raw)}")
    row: dict[str, Any] = {kind.id_column: str(raw["id"]), "ad_account_id": account_id}
    for column, spec in kind.columns:
        value = raw.get(spec.lstrip("*@"))
        if spec.startswith("*"):
            value = minor_units(value)
        elif spec.startswith("@"):
            value = meta_time(value)
        elif column == "creative_id":
            value = value.get("id") if isinstance(value, Mapping) else value
        row[column] = value
    row["metadata"] = dict(raw)
    return row


def parse_account(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /act_{id}`` as ``ad_account``'s columns."""
    business = raw.get("business")
    return {
        "ad_account_id": ad_account_id(str(raw["id"])),
        "account_id": str(raw.get("account_id") or str(raw["id"]).removeprefix("act_")),
        "name": raw.get("name"),
        "currency": raw.get("currency"),
        "timezone_name": raw.get("timezone_name"),
        "timezone_offset_hours_utc": raw.get("timezone_offset_hours_utc"),
        "account_status": raw.get("account_status"),
        "disable_reason": raw.get("disable_reason"),
        "business_id": business.get("id") if isinstance(business, Mapping) else None,
        "amount_spent": minor_units(raw.get("amount_spent")),
        "created_time": meta_time(raw.get("created_time")),
        "metadata": dict(raw),
    }


def read_account(client: GraphClient, account: str) -> dict[str, Any]:
    return parse_account(client.get(ad_account_id(account), fields=",".join(ACCOUNT_FIELDS)))


def read_objects(client: GraphClient, kind: ObjectKind, account: str, page_size: int = 500) -> Iterator[dict]:
    """Every object of ``kind`` in the account, whatever its status."""
    account = ad_account_id(account)
    params: dict[str, Any] = {"fields": ",".join(kind.fields), "limit": page_size}
    if kind.by_status:
        params["effective_status"] = json.dumps(list(ALL_STATUSES))  # a list, JSON-encoded as Meta takes it
    for raw in client.paginate(f"{account}/{kind.edge}", params):
        yield parse_object(kind, raw, account)


def token_accounts(client: GraphClient) -> list[str]:
    """Every ad account the token may read (``/me/adaccounts``), as ``act_…`` ids."""
    return [ad_account_id(str(a["id"])) for a in client.paginate("me/adaccounts", {"fields": "id", "limit": 500})]


def resolve_accounts(client: GraphClient, configured: list[str]) -> list[str]:
    """The configured ad accounts, or the token's when the setting is ``me``."""
    if [a.strip().lower() for a in configured] == [TOKEN_ACCOUNTS]:
        return token_accounts(client)
    return [ad_account_id(a) for a in configured]
