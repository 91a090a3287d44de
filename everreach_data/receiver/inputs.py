"""Reading what a caller sent, so that anything a route would fail on later (Postgres refusing a string, a
body too big to hold, a type Meta would refuse) is a 4xx naming the field before anything is stored.

Every ``/api/v1`` body: JSON (415 for another content type), at most :data:`MAX_API_BODY_BYTES` (413,
refused before it is read whole), no string anywhere in it — keys, nested template components, every
Conversions API field — that Postgres cannot store (422 naming its path), no string longer than
:data:`MAX_STRING_CHARS`, no nesting deeper than :data:`MAX_DEPTH`, no number that is not finite; then the
route's pydantic model (422 naming the field; unknown fields are refused). Query parameters get the same
string checks, then their model; each is given once (a repeated one would silently mean its last value).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request

from everreach_data.receiver.errors import ApiError, validation_error

#: The largest ``/api/v1`` body: the biggest legitimate one (a WhatsApp list message, a conversion event with
#: every identifier as a list) is a few KiB.
MAX_API_BODY_BYTES = 64 * 1024
#: The longest string accepted anywhere in an ``/api/v1`` body or query, where the model sets no tighter
#: bound (the longest Meta takes is a WhatsApp text's 4096 characters).
MAX_STRING_CHARS = 4096
#: Deepest nesting of objects and arrays (WhatsApp's interactive and template objects need about 6).
MAX_DEPTH = 16

JSON_MEDIA_TYPE = "application/json"

M = TypeVar("M", bound=BaseModel)


async def read_capped(receive, declared: bytes | str | None, limit: int) -> bytes:
    """The raw body, refusing (413) as soon as it is known to exceed ``limit`` — before reading it all.
    ``declared`` is the Content-Length header, if any; a client that sends more than it declared is cut off
    at the limit all the same."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body is larger than {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def unstorable(text: str) -> str | None:
    """Why Postgres (text or jsonb) could not store ``text``, or None: NUL, or a lone UTF-16 surrogate
    (JSON's ``\\ud800`` escapes decode to one, and it has no UTF-8 encoding)."""
    if "\x00" in text:
        return "contains \\u0000 (NUL), which Postgres cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate, which is not Unicode text"
    return None


def _refuse(where: str, why: str) -> ApiError:
    return ApiError(422, f"{where or 'body'}: {why}", field=where or "body")


def _check_string(text: str, where: str, what: str = "") -> None:
    if (why := unstorable(text)) is not None:
        raise _refuse(where, what + why)
    if len(text) > MAX_STRING_CHARS:
        raise _refuse(where, f"{what}longer than {MAX_STRING_CHARS} characters")


def check_value(value: Any, where: str = "", depth: int = 0) -> None:
    """422 naming the first string under ``value`` that cannot be stored or is too long (for a field name:
    naming the object it is in), a number that is not finite, or nesting deeper than :data:`MAX_DEPTH`."""
    if isinstance(value, str):
        _check_string(value, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _refuse(where, "not a finite number")
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise _refuse(where, f"nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            _check_string(key, where, "a field name ")
            check_value(item, f"{where}.{key}" if where else key, depth + 1)
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise _refuse(where, f"nested deeper than {MAX_DEPTH} levels")
        for index, item in enumerate(value):
            check_value(item, f"{where}.{index}" if where else str(index), depth + 1)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _is_json(content_type: str | None) -> bool:
    if content_type is None:  # a client that says nothing is taken at its body's word: it must parse as JSON
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON_MEDIA_TYPE or (media_type.startswith("application/") and media_type.endswith("+json"))


async def read_json_body(request: Request, model: type[M]) -> M:
    """The request body as ``model``; 415, 413, 400 or 422 otherwise, before anything is stored."""
    if not _is_json(request.headers.get("content-type")):
        raise ApiError(415, f"Content-Type must be {JSON_MEDIA_TYPE}, not {request.headers['content-type']!r}",
                       field="Content-Type")
    raw = await read_capped(request.receive, request.headers.get("content-length"), MAX_API_BODY_BYTES)
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise ApiError(422, f"body: nested deeper than {MAX_DEPTH} levels", field="body") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "request body is not valid JSON") from exc
    check_value(data)
    return validated(model, data)


def validated(model: type[M], data: Any, *, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, prefix=prefix) from exc


def single_values(params: QueryParams) -> dict[str, str]:
    """The query's parameters, refusing (422 naming it) one given more than once."""
    names = [name for name, _ in params.multi_items()]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise ApiError(422, f"{repeated}: given more than once; give it once", field=repeated)
    return dict(params)


def read_params(model: type[M], params: Mapping[str, str]) -> M:
    """Query (or path) parameters as ``model``: the string checks, then the model (422 naming the
    parameter; one the model does not know is refused like an unknown body field)."""
    for name, value in params.items():
        _check_string(name, "query", "a parameter name ")
        _check_string(value, name)
    return validated(model, dict(params))
