"""The runbook's ads summary — totals and the averages derived from them — computed one way for the
``ad_performance`` asset's metadata and the ads-insights endpoint."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

#: Decimal places of the averages, as the runbook's summary shows them (``"average_cpc": 0.43``).
AVERAGE_PLACES = 2
ROAS_PLACES = 4


def summary(*, spend: Decimal, impressions: int, clicks: int, conversions: Decimal,
            conversion_value: Decimal) -> dict[str, Any]:
    """Total spend, impressions, clicks, conversions and conversion value; average CPC and CPM; ROAS (None
    without spend)."""
    return {
        "total_spend": float(spend),
        "total_impressions": int(impressions),
        "total_clicks": int(clicks),
        "total_conversions": float(conversions),
        "average_cpc": round(float(spend / clicks), AVERAGE_PLACES) if clicks else 0.0,
        "average_cpm": round(float(spend * 1000 / impressions), AVERAGE_PLACES) if impressions else 0.0,
        "total_conversion_value": float(conversion_value),
        "roas": round(float(conversion_value / spend), ROAS_PLACES) if spend else None,
    }
