"""The drain's fast JSON path reads and writes exactly what the standard library (and Postgres) would."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from everreach_data.db.fast_json import dumps, loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
@example(2**64)  # 20 digits: beyond orjson's integers
@example(-(2**63) - 1)  # 19 digits, below int64
@example({"id": "1234567890123456789", "ts": 1732492800123})  # 19 digits in a string: correct either way
def test_round_trips_any_json_value_including_integers_beyond_64_bits(value):
    assert loads(dumps(value)) == json.loads(json.dumps(value))


@given(json_values)
def test_reads_what_the_standard_library_reads(value):
    text = json.dumps(value).encode()
    assert loads(text) == json.loads(text)
    assert loads(b" " + text + b"\n") == json.loads(text)
