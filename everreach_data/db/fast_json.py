"""JSON on the webhook drain's hot path, where encoding and decoding were a third of its Python time.

orjson is several times faster than the standard library both ways, but it reads an integer beyond 64 bits
as a float (losing digits) and refuses to write one, and Postgres's ``jsonb`` takes any integer. A document
with 19 or more digits in a row (rare: Meta's ids are strings and its timestamps 13 digits) goes through the
standard library instead, so nothing is changed or failed.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads

# Digits → "0", everything else → " ": a run of 19 digits becomes a run of 19 zeros, found by a substring
# search. Six times faster than the regular expression [0-9]{19}, which cost three times orjson's own parse.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_NINETEEN_DIGITS = b"0" * 19


def loads(data: bytes) -> Any:
    if _NINETEEN_DIGITS in data.translate(_DIGITS_AS_ZEROS):
        return json.loads(data)
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def jsonb(obj: Any) -> Jsonb:
    """``obj`` as a ``jsonb`` query parameter, encoded by :func:`dumps`."""
    return Jsonb(obj, dumps=dumps)


def decode_with(conn: psycopg.Connection) -> None:
    """``json``/``jsonb`` values read on ``conn`` are decoded by :func:`loads`."""
    set_json_loads(loads, conn)
