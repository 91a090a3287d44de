"""JSON on the webhook drain's hot path, where encoding and decoding were a third of its Python time.

orjson is several times faster than the standard library both ways, but it reads an integer beyond 64 bits
as a float (losing digits) and refuses to write one, and Postgres's ``jsonb`` takes any integer. A document
with 19 or more digits in a row (rare: Meta's ids are strings and its timestamps 13 digits) goes through the
standard library instead, so nothing is changed or failed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_loads


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def loads(data: bytes) -> Any:
    if _LONG_DIGITS.search(data):
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
