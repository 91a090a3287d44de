"""Property tests for the sandbox's small parsers and its usage bucket (no HTTP needed for these)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from everreach_sandbox.core import GraphError, UsageBucket, _cursor, _offset, parse_day, unit


@given(st.integers(min_value=0, max_value=10**9))
def test_cursor_round_trips(offset: int) -> None:
    assert _offset(_cursor(offset)) == offset


@given(st.text(max_size=40))
def test_any_garbage_cursor_is_metas_100_not_a_crash(text: str) -> None:
    try:
        value = _offset(text)
    except GraphError as exc:
        assert exc.code == 100
    else:
        assert value >= 0 and _cursor(value)  # only a real sandbox cursor decodes


@given(st.dates(min_value=date(1971, 1, 1), max_value=date(2100, 1, 1)))
def test_since_until_as_date_or_unix_seconds_agree(day: date) -> None:
    seconds = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    assert parse_day(day.isoformat(), "since") == parse_day(str(seconds), "since") == day


@given(st.text(alphabet="abcxyz:/ ", min_size=1, max_size=12))
def test_bad_since_is_a_named_100(text: str) -> None:
    try:
        parse_day(text, "since")
    except GraphError as exc:
        assert exc.code == 100 and "since" in exc.message


@given(st.integers(min_value=1, max_value=50), st.lists(st.floats(min_value=0, max_value=5), max_size=120))
def test_bucket_never_counts_past_its_limit(limit: int, gaps: list[float]) -> None:
    bucket, now, accepted = UsageBucket(limit=limit, window_seconds=10.0), 1000.0, 0
    for gap in gaps:
        now += gap
        full_before = bucket.percent(now) >= 100
        ok = bucket.try_hit(now)
        accepted += ok
        assert ok != full_before                      # refused exactly when the window is full
        assert 0 <= bucket.percent(now) <= 100
        assert (bucket.regain_seconds(now) > 0) == (len(bucket.calls) >= limit)
    assert accepted <= len(gaps)


@given(st.integers(), st.text(max_size=10))
def test_unit_is_deterministic_and_in_range(seed: int, part: str) -> None:
    assert 0.0 <= unit(seed, part) < 1.0 and unit(seed, part) == unit(seed, part)


def test_traffic_can_be_dated_in_the_past():
    """Sample history (dev's first start): every timestamp in the payloads follows the generator's clock."""
    import json

    from everreach_sandbox.traffic import TrafficGenerator

    week_ago = 1_764_000_000.0
    gen = TrafficGenerator(seed=3, clock=lambda: week_ago)
    bodies = [json.loads(b) for b, _ in zip(gen.bodies(), range(200), strict=False)]
    stamps = [int(v) / (1000 if len(str(v)) > 11 else 1) for body in bodies
              for v in _values(body, {"timestamp", "time", "watermark"})]
    assert stamps and all(week_ago - 60 <= t <= week_ago + 60 for t in stamps)


def _values(node, keys):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in keys and isinstance(v, int | str) and str(v).isdigit():
                yield v
            else:
                yield from _values(v, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _values(item, keys)
