"""``GET /api/v1/integrations/meta/ads-insights``: the runbook's ads summary, read from ``ad_performance``.

The Dagster asset keeps the table current (schedules, backfills); this endpoint only reads it, so it is fast
and never spends Marketing API quota. Besides the runbook's ``summary`` it lists ``missing_dates``: days in
the range with no rows at that level yet (not synced, or no delivery that day — Meta sends no rows then).
"""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from everreach_data.ads.summary import summary
from everreach_data.meta.insights import LEVELS, RETENTION_MONTHS, ad_account_id, earliest_insights_day
from everreach_data.receiver.auth import Principal, Role
from everreach_data.receiver.errors import ApiError
from everreach_data.receiver.operation import Answer, Operation, api_route, reply

MAX_LIMIT = 1000
#: The days a query may name (Meta's own limit, RETENTION_MONTHS back from end_date, is checked on top).
FIRST_DAY, LAST_DAY = dt.date(2000, 1, 1), dt.date(2999, 12, 31)

_FILTER = (
    "level = %(level)s AND date BETWEEN %(start)s AND %(end)s "
    "AND (%(account)s::text IS NULL OR ad_account_id = %(account)s)"
)

SUMMARY_SQL = f"""
SELECT count(*) AS insights_count,
       COALESCE(sum(spend), 0) AS spend, COALESCE(sum(impressions), 0) AS impressions,
       COALESCE(sum(clicks), 0) AS clicks, COALESCE(sum(conversions), 0) AS conversions,
       COALESCE(sum(conversion_value), 0) AS conversion_value
FROM ad_performance WHERE {_FILTER}
"""

MISSING_SQL = f"""
SELECT d::date AS day
FROM generate_series(%(start)s::date, %(end)s::date, interval '1 day') AS d
WHERE NOT EXISTS (
    SELECT 1 FROM ad_performance WHERE {_FILTER.replace("BETWEEN %(start)s AND %(end)s", "= d::date")})
ORDER BY 1
"""

ROWS_SQL = f"""
SELECT date, ad_account_id, level, object_id, meta_campaign_id AS campaign_id, adset_id, ad_id,
       metadata->>'campaign_name' AS campaign_name, metadata->>'adset_name' AS adset_name,
       metadata->>'ad_name' AS ad_name, spend, impressions, clicks, reach, cpc, cpm, ctr,
       conversions, conversion_value, currency, objective
FROM ad_performance WHERE {_FILTER}
ORDER BY date DESC, spend DESC, object_id
LIMIT %(limit)s
"""


class AdsInsightsQuery(BaseModel):
    """The range and level to summarize (UTC days)."""

    model_config = ConfigDict(extra="forbid")
    start_date: dt.date | None = Field(None, ge=FIRST_DAY, le=LAST_DAY,
                                       description="first day (from 2000-01-01); default: 29 days before end_date")
    end_date: dt.date | None = Field(None, ge=FIRST_DAY, le=LAST_DAY,
                                     description="last day (until 2999-12-31); default: yesterday")
    level: Literal[LEVELS] = "campaign"  # type: ignore[valid-type]
    limit: int = Field(100, ge=0, le=MAX_LIMIT, description="rows of `insights` to return (the summary covers all)")
    ad_account_id: str | None = Field(None, pattern=r"^(act_)?[0-9]{1,32}$",
                                      description="one of FB_ADS_ACCOUNT_ID's accounts; default: all")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_default(cls, values: Any) -> Any:
        """``?level=`` means the default, as a form with an empty field sends it."""
        return {k: v for k, v in values.items() if v != ""} if isinstance(values, dict) else values


class AdsSummary(BaseModel):
    """The runbook's summary, over every row of the range at the level."""

    total_spend: float
    total_impressions: int
    total_clicks: int
    total_conversions: float
    average_cpc: float
    average_cpm: float
    total_conversion_value: float
    roas: float | None = Field(description="conversion value / spend; null without spend")


class InsightRow(BaseModel):
    date: dt.date
    ad_account_id: str
    level: str
    object_id: str
    campaign_id: str
    adset_id: str | None
    ad_id: str | None
    campaign_name: str | None
    adset_name: str | None
    ad_name: str | None
    spend: float
    impressions: int
    clicks: int
    reach: int | None
    cpc: float | None
    cpm: float | None
    ctr: float | None
    conversions: float
    conversion_value: float
    currency: str | None
    objective: str | None


class AdsInsights(BaseModel):
    success: Literal[True] = True
    start_date: dt.date
    end_date: dt.date
    level: str
    insights_count: int = Field(description="rows in ad_performance for the range and level")
    summary: AdsSummary
    synced_to_database: int = Field(description="the same count (the runbook's name for it)")
    missing_dates: list[dt.date] = Field(description="days in the range with no rows yet (not synced, or no "
                                                     "delivery that day)")
    insights: list[InsightRow] = Field(description="the rows, newest day and biggest spend first, up to limit")


def resolve(query: AdsInsightsQuery) -> dict[str, Any]:
    """The query's SQL parameters, defaults filled in; 422 naming the field for a range Meta does not serve."""
    end = query.end_date or datetime.now(UTC).date() - timedelta(days=1)
    start = query.start_date or end - timedelta(days=29)
    if start > end:
        raise ApiError(422, f"start_date {start} is after end_date {end}", field="start_date")
    if start < (earliest := earliest_insights_day(end)):
        raise ApiError(422, f"start_date: Meta keeps insights for {RETENTION_MONTHS} months, so a range "
                            f"ending {end} starts on {earliest} at the earliest", field="start_date")
    account = ad_account_id(query.ad_account_id) if query.ad_account_id else None
    return {"start": start, "end": end, "level": query.level, "limit": query.limit, "account": account}


def summarize(totals: dict[str, Any]) -> dict[str, Any]:
    return summary(spend=totals["spend"], impressions=totals["impressions"], clicks=totals["clicks"],
                   conversions=totals["conversions"], conversion_value=totals["conversion_value"])


async def ads_insights(request: Request, principal: Principal, query: AdsInsightsQuery) -> Response:
    """Read from ad_performance, which the Dagster asset keeps current: fast, and never spends Marketing API
    quota. Besides the runbook's summary it lists missing_dates."""
    q = resolve(query)
    async with request.app.state.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SUMMARY_SQL, q)
        totals = await cur.fetchone()
        await cur.execute(MISSING_SQL, q)
        missing = [r["day"] for r in await cur.fetchall()]
        await cur.execute(ROWS_SQL, q)
        rows = await cur.fetchall()
    return reply(AdsInsights(
        start_date=q["start"], end_date=q["end"], level=q["level"], insights_count=totals["insights_count"],
        summary=AdsSummary(**summarize(totals)), synced_to_database=totals["insights_count"],
        missing_dates=missing, insights=[InsightRow(**row) for row in rows]))


routes = [api_route("GET", "/api/v1/integrations/meta/ads-insights", ads_insights, Operation(
    summary="The runbook's ads summary for a date range and level, from ad_performance", tag="ads",
    role=Role.ANALYST, query=AdsInsightsQuery, answers={200: Answer(AdsInsights, "The summary and the rows")},
    errors={422: "Also: start_date after end_date, or before Meta's 37 months of insights.",
            503: "The database is unavailable (Retry-After)."}))]
