"""Writing insights into ``ad_performance``: spool rows, then replace a date range in one transaction.

Rows are spooled in COPY text format as they arrive (memory stays flat however long the range), and
written in one short transaction: upsert the campaigns seen (``campaign``, source ``meta``), delete the
range's rows for the accounts and levels read, COPY the spooled rows. A re-run or a look-back re-pull thus
replaces restated numbers and never duplicates; a failure before the commit leaves the table as it was.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import IO, Any

import psycopg

from everreach_data.ads.summary import summary
from everreach_data.meta.insights import InsightRow

COLUMNS = (
    "campaign_id",
    "ad_account_id",
    "level",
    "object_id",
    "date",
    "meta_campaign_id",
    "adset_id",
    "ad_id",
    "spend",
    "impressions",
    "clicks",
    "reach",
    "frequency",
    "cpc",
    "cpm",
    "ctr",
    "conversions",
    "conversion_value",
    "currency",
    "objective",
    "metadata",
)
COPY_SQL = f"COPY ad_performance ({', '.join(COLUMNS)}) FROM STDIN"

UPSERT_CAMPAIGNS = """
INSERT INTO campaign (name, source, external_id, ad_account_id, objective)
SELECT c.name, 'meta', c.external_id, c.ad_account_id, c.objective
FROM unnest(%(ids)s::text[], %(names)s::text[], %(accounts)s::text[], %(objectives)s::text[])
     AS c(external_id, name, ad_account_id, objective)
ON CONFLICT (source, external_id) DO UPDATE
SET name = EXCLUDED.name, ad_account_id = EXCLUDED.ad_account_id,
    objective = COALESCE(EXCLUDED.objective, campaign.objective), updated_at = now()
RETURNING external_id, campaign_id
"""

DELETE_RANGE = """
DELETE FROM ad_performance
WHERE ad_account_id = ANY(%(accounts)s) AND level = ANY(%(levels)s) AND date BETWEEN %(since)s AND %(until)s
"""

_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text(value: Any) -> str:
    """One value in COPY's text format (``\\N`` for NULL, backslash escapes for the rest)."""
    if value is None:
        return "\\N"
    return str(value).translate(_ESCAPES)


def _num(value: Any) -> str:
    """A number (or NULL): never needs escaping."""
    return "\\N" if value is None else str(value)


def row_metadata(row: InsightRow) -> str:
    """Names and the raw actions/action_values, as the JSON of a ``metadata`` column (COPY-escaped)."""
    meta: dict[str, Any] = {
        k: v
        for k, v in (
            ("campaign_name", row.campaign_name),
            ("adset_name", row.adset_name),
            ("ad_name", row.ad_name),
        )
        if v is not None
    }
    if row.actions:
        meta["actions"] = row.actions
    if row.action_values:
        meta["action_values"] = row.action_values
    return copy_text(json.dumps(meta, ensure_ascii=False, separators=(",", ":")))


def metric_fields(row: InsightRow) -> str:
    """The metrics every insights table has, tab-separated in COPY text: spend … objective."""
    return (
        f"{row.spend}\t{row.impressions}\t{row.clicks}\t{_num(row.reach)}\t{_num(row.frequency)}\t"
        f"{_num(row.cpc)}\t{_num(row.cpm)}\t{_num(row.ctr)}\t{row.conversions}\t{row.conversion_value}\t"
        f"{copy_text(row.currency)}\t{copy_text(row.objective)}"
    )


def copy_line(row: InsightRow) -> str:
    """The row as a COPY line; its first field is the Meta campaign id, swapped for our uuid when written."""
    campaign = copy_text(row.campaign_id)
    return (
        f"{campaign}\t{copy_text(row.account_id)}\t{row.level}\t{copy_text(row.object_id)}\t{row.date}\t"
        f"{campaign}\t{copy_text(row.adset_id)}\t{copy_text(row.ad_id)}\t{metric_fields(row)}\t"
        f"{row_metadata(row)}\n"
    )


@dataclass
class Totals:
    spend: Decimal = Decimal(0)
    impressions: int = 0
    clicks: int = 0
    conversions: Decimal = Decimal(0)
    conversion_value: Decimal = Decimal(0)
    rows: int = 0

    def add(self, row: InsightRow) -> None:
        self.spend += row.spend
        self.impressions += row.impressions
        self.clicks += row.clicks
        self.conversions += row.conversions
        self.conversion_value += row.conversion_value
        self.rows += 1

    def summary(self) -> dict[str, Any]:
        return summary(spend=self.spend, impressions=self.impressions, clicks=self.clicks,
                       conversions=self.conversions, conversion_value=self.conversion_value)


@dataclass
class Spool:
    """Rows in COPY format on disk (in memory while small), with the campaigns and totals seen. ``line``
    is the table's COPY line(s) for a row (``ad_performance``'s by default)."""

    line: Callable[[InsightRow], str] = copy_line
    file: IO[bytes] = field(default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=8 << 20))
    campaigns: dict[str, tuple[str, str, str | None]] = field(
        default_factory=dict
    )  # id → (name, account, objective)
    totals: dict[str, Totals] = field(default_factory=dict)  # per level
    currencies: dict[str, set[str]] = field(default_factory=dict)  # per account
    rows: int = 0

    def add(self, row: InsightRow) -> None:
        self.file.write(self.line(row).encode())
        if row.campaign_id not in self.campaigns or row.campaign_name:
            self.campaigns[row.campaign_id] = (
                row.campaign_name or row.campaign_id,
                row.account_id,
                row.objective,
            )
        self.totals.setdefault(row.level, Totals()).add(row)
        if row.currency:
            self.currencies.setdefault(row.account_id, set()).add(row.currency)
        self.rows += 1

    def lines(self, block: int = 1 << 20):
        """The spooled bytes in blocks of whole lines."""
        self.file.seek(0)
        rest = b""
        while chunk := self.file.read(block):
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            rest = chunk[cut:]
            yield chunk[:cut]
        if rest:
            yield rest

    def close(self) -> None:
        self.file.close()


def _with_uuids(block: bytes, uuids: dict[bytes, bytes]) -> bytes:
    out = []
    for line in block.split(b"\n"):
        if line:
            ext, _, rest = line.partition(b"\t")
            out.append(uuids[ext] + b"\t" + rest)
    return b"\n".join(out) + b"\n" if out else b""


def replace_range(
    conn: psycopg.Connection,
    spool: Spool,
    *,
    accounts: list[str],
    levels: list[str],
    since: date,
    until: date,
) -> int:
    """Upsert campaigns, delete the range, COPY the spooled rows: one transaction. Returns rows written."""
    with conn.transaction(), conn.cursor() as cur:
        uuids: dict[bytes, bytes] = {}
        if spool.campaigns:
            ids = list(spool.campaigns)
            cur.execute(
                UPSERT_CAMPAIGNS,
                {
                    "ids": ids,
                    "names": [spool.campaigns[i][0] for i in ids],
                    "accounts": [spool.campaigns[i][1] for i in ids],
                    "objectives": [spool.campaigns[i][2] for i in ids],
                },
            )
            for rec in cur.fetchall():
                ext, uid = (rec["external_id"], rec["campaign_id"]) if isinstance(rec, dict) else rec
                uuids[copy_text(ext).encode()] = str(uid).encode()
        cur.execute(DELETE_RANGE, {"accounts": accounts, "levels": levels, "since": since, "until": until})
        with cur.copy(COPY_SQL) as copy:
            for block in spool.lines():
                copy.write(_with_uuids(block, uuids))
        return cur.rowcount


def replace_rows(conn: psycopg.Connection, spool: Spool, *, delete: str, copy: str, params: dict[str, Any]) -> int:
    """Delete a range and COPY the spooled rows in one transaction (the long tables beside
    ``ad_performance``, whose rows need no campaign uuid). Returns rows written."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(delete, params)
        with cur.copy(copy) as out:
            for block in spool.lines():
                out.write(block)
        return cur.rowcount


ROWS_IN_RANGE = """
SELECT count(*) AS rows_in_range FROM ad_performance
WHERE ad_account_id = ANY(%(accounts)s) AND level = ANY(%(levels)s) AND date BETWEEN %(since)s AND %(until)s
"""
#: What the table's own checks count, over the whole table (they run without a sync: no call to Meta).
TABLE_CHECKS = """
SELECT count(*) FILTER (WHERE spend < 0) AS negative_spend,
       count(*) FILTER (WHERE clicks > impressions) AS clicks_over_impressions
FROM ad_performance
"""

CURRENCIES_SQL = """
SELECT ad_account_id, array_agg(DISTINCT currency ORDER BY currency) AS currencies
FROM ad_performance
WHERE ad_account_id = ANY(%(accounts)s) AND date BETWEEN %(since)s AND %(until)s AND currency IS NOT NULL
GROUP BY ad_account_id
"""


def range_checks(
    conn: psycopg.Connection, *, accounts: list[str], levels: list[str], since: date, until: date
) -> dict[str, Any]:
    """What the run's own checks assert, read back from the table after the write."""
    params = {"accounts": accounts, "levels": levels, "since": since, "until": until}
    counts = conn.execute(ROWS_IN_RANGE, params).fetchone()
    currencies = {r["ad_account_id"]: r["currencies"] for r in conn.execute(CURRENCIES_SQL, params)}
    return {**counts, "currencies": currencies}
