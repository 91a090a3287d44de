"""``GET /api/v1/integrations/meta/ads-insights``: the runbook's ads summary, read from ``ad_performance``.

The Dagster asset keeps the table current (schedules, backfills); this endpoint only reads it, so it is fast
and never spends Marketing API quota. Besides the runbook's ``summary`` it lists ``missing_dates``: days in
the range with no rows at that level yet (not synced, or no delivery that day — Meta sends no rows then).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_data.ads.summary import summary
from everreach_data.meta.insights import LEVELS, RETENTION_MONTHS, ad_account_id, earliest_insights_day
from everreach_data.receiver.auth import authenticate
from everreach_data.receiver.errors import ApiError

MAX_LIMIT = 1000

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


def _day(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ApiError(422, f"{name} must be a date as YYYY-MM-DD, got {raw!r}", field=name) from exc


def parse_query(request: Request) -> dict[str, Any]:
    """The validated query: a 422 naming the field for anything wrong."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    end = _day(request, "end_date", yesterday)
    start = _day(request, "start_date", end - timedelta(days=29))
    if start > end:
        raise ApiError(422, f"start_date {start} is after end_date {end}", field="start_date")
    if start < (earliest := earliest_insights_day(end)):
        raise ApiError(422, f"start_date: Meta keeps insights for {RETENTION_MONTHS} months, so a range "
                            f"ending {end} starts on {earliest} at the earliest", field="start_date")
    level = request.query_params.get("level") or "campaign"
    if level not in LEVELS:
        raise ApiError(422, f"level must be one of {', '.join(LEVELS)}, got {level!r}", field="level")
    raw_limit = request.query_params.get("limit") or "100"
    try:
        limit = int(raw_limit)
    except ValueError as exc:
        raise ApiError(422, f"limit must be an integer, got {raw_limit!r}", field="limit") from exc
    if not 0 <= limit <= MAX_LIMIT:
        raise ApiError(422, f"limit must be between 0 and {MAX_LIMIT}", field="limit")
    account = request.query_params.get("ad_account_id") or None
    if account:
        account = ad_account_id(account)
    return {"start": start, "end": end, "level": level, "limit": limit, "account": account}


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def summarize(totals: dict[str, Any]) -> dict[str, Any]:
    return summary(spend=totals["spend"], impressions=totals["impressions"], clicks=totals["clicks"],
                   conversions=totals["conversions"], conversion_value=totals["conversion_value"])


async def ads_insights(request: Request) -> JSONResponse:
    """Summary of ``ad_performance`` for a date range and level (JWT)."""
    authenticate(request)
    q = parse_query(request)
    async with request.app.state.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SUMMARY_SQL, q)
        totals = await cur.fetchone()
        await cur.execute(MISSING_SQL, q)
        missing = [r["day"].isoformat() for r in await cur.fetchall()]
        await cur.execute(ROWS_SQL, q)
        rows = [{k: _json(v) for k, v in r.items()} for r in await cur.fetchall()]
    return JSONResponse(
        {
            "success": True,
            "start_date": q["start"].isoformat(),
            "end_date": q["end"].isoformat(),
            "level": q["level"],
            "insights_count": totals["insights_count"],
            "summary": summarize(totals),
            "synced_to_database": totals["insights_count"],
            "missing_dates": missing,
            "insights": rows,
        }
    )


routes: list[Route] = [Route("/api/v1/integrations/meta/ads-insights", ads_insights, methods=["GET"])]
