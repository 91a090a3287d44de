"""The row parser and the conversion rules, with properties over generated rows, and the COPY encoding
checked against Postgres itself."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everreach_data.ads.writer import copy_text
from everreach_data.meta.insights import (
    DEFAULT_CONVERSION_ACTION_TYPES,
    check_action_types,
    chunks,
    parse_row,
)

ACTION_TYPES = [
    "link_click",
    "offsite_conversion.fb_pixel_purchase",
    "onsite_conversion.purchase",
    "purchase",
    "omni_purchase",
    "offsite_conversion.fb_pixel_lead",
    "onsite_conversion.lead_grouped",
    "lead",
]
money = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=10**12)


@given(
    spend=money,
    impressions=counts,
    clicks=counts,
    cpc=st.decimals(min_value=0, max_value=1000, places=6),
    actions=st.dictionaries(st.sampled_from(ACTION_TYPES), counts),
    values=st.dictionaries(st.sampled_from(ACTION_TYPES), money),
)
def test_parse_is_exact_and_counts_only_the_chosen_types(spend, impressions, clicks, cpc, actions, values):
    raw = {
        "campaign_id": "1",
        "ad_id": "3",
        "adset_id": "2",
        "date_start": "2026-10-01",
        "date_stop": "2026-10-01",
        "spend": str(spend),
        "impressions": str(impressions),
        "clicks": str(clicks),
        "cpc": str(cpc),
        "actions": [{"action_type": k, "value": str(v)} for k, v in actions.items()],
        "action_values": [{"action_type": k, "value": str(v)} for k, v in values.items()],
    }
    row = parse_row(raw, account_id="act_9", level="ad")
    assert (row.spend, row.impressions, row.clicks, row.cpc) == (spend, impressions, clicks, cpc)
    assert row.conversions == sum(v for k, v in actions.items() if k in DEFAULT_CONVERSION_ACTION_TYPES)
    assert row.conversion_value == sum(
        (v for k, v in values.items() if k in DEFAULT_CONVERSION_ACTION_TYPES), Decimal(0)
    )
    assert (row.object_id, row.date, row.reach, row.ctr) == ("3", date(2026, 10, 1), None, None)


def test_default_never_double_counts_and_overlaps_are_refused():
    assert check_action_types(DEFAULT_CONVERSION_ACTION_TYPES) == DEFAULT_CONVERSION_ACTION_TYPES
    for bad in (
        ["omni_purchase", "purchase"],
        ["omni_purchase", "offsite_conversion.fb_pixel_purchase"],
        ["lead", "onsite_conversion.lead_grouped"],
    ):
        with pytest.raises(ValueError, match="counted twice"):
            check_action_types(bad)
    assert check_action_types(["omni_purchase", "lead"]) == ("omni_purchase", "lead")


def test_rows_spanning_days_or_without_ids_are_refused():
    with pytest.raises(ValueError, match="one day"):
        parse_row(
            {"campaign_id": "1", "date_start": "2026-10-01", "date_stop": "2026-10-02"},
            account_id="act_1",
            level="campaign",
        )
    with pytest.raises(ValueError, match="adset_id"):
        parse_row(
            {"campaign_id": "1", "date_start": "2026-10-01", "date_stop": "2026-10-01"},
            account_id="act_1",
            level="adset",
        )
    with pytest.raises(ValueError, match="spend"):
        parse_row(
            {"campaign_id": "1", "date_start": "2026-10-01", "date_stop": "2026-10-01", "spend": "1,5"},
            account_id="act_1",
            level="campaign",
        )


@given(
    since=st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)),
    length=st.integers(min_value=1, max_value=400),
    size=st.integers(min_value=1, max_value=40),
)
def test_chunks_cover_the_range_once(since, length, size):
    until = date.fromordinal(since.toordinal() + length - 1)
    parts = chunks(since, until, size)
    assert parts[0][0] == since and parts[-1][1] == until
    assert all((b - a).days < size for a, b in parts)
    assert all(parts[i][1].toordinal() + 1 == parts[i + 1][0].toordinal() for i in range(len(parts) - 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(), min_size=1, max_size=20))
def test_copy_text_round_trips_through_postgres(db_url, texts):
    texts = [t.replace("\x00", "") for t in texts]  # Postgres text cannot hold NUL
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE t (i int, s text)")
        with conn.cursor().copy("COPY t (i, s) FROM STDIN") as copy:
            copy.write("".join(f"{i}\t{copy_text(s)}\n" for i, s in enumerate(texts)))
        back = [r[0] for r in conn.execute("SELECT s FROM t ORDER BY i")]
    assert back == texts
