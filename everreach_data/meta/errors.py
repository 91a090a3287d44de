"""Meta's Graph API error envelope, parsed once, and what each error means for a caller.

``{"error": {"message", "type", "code", "error_subcode", "is_transient", "error_user_title",
"error_user_msg", "error_data", "fbtrace_id"}}`` becomes a :class:`GraphAPIError` whose ``kind`` says
whether to retry (``transient``), wait (``throttled``), stop the channel (``auth``/``permission``), fix the
request (``too_much_data``/``invalid``) or give up on this item (``permanent``).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    TRANSIENT = "transient"          # retry with backoff
    THROTTLED = "throttled"          # wait for the limit to reset, then retry
    TOO_MUCH_DATA = "too_much_data"  # "Please reduce the amount of data": split the request
    AUTH = "auth"                    # 190: token invalid or expired; stop and re-authorize
    PERMISSION = "permission"        # 10, 200-299: missing permission (10/2018278 is the window, see below)
    OUTSIDE_WINDOW = "outside_window"  # messaging policy window closed
    INVALID = "invalid"              # 100 and friends: the request itself is wrong
    PERMANENT = "permanent"          # anything else that retrying will not fix


#: Rate-limit codes across the Marketing, Pages and messaging APIs (Meta's rate-limiting docs).
THROTTLE_CODES = frozenset({4, 17, 32, 341, 613, 130429, 131056, 80007}) | frozenset(range(80000, 80015))
#: Temporary failures: unknown/temporary (1, 2), messaging temporary failures, WhatsApp service errors.
TRANSIENT_CODES = frozenset({1, 2, 1200, 131000, 131016, 131057})
#: Subcodes that mean "this request asks for too much data" (with code 100, or code 1's message).
TOO_MUCH_DATA_SUBCODES = frozenset({1487534})
REDUCE_DATA_TEXT = "reduce the amount of data"
OUTSIDE_WINDOW = frozenset({(10, 2018278), (131047, None), (470, None)})


class GraphAPIError(Exception):
    """An error answered by the Graph API (or a transport failure, with ``code`` None)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        type: str | None = None,
        fbtrace_id: str | None = None,
        is_transient: bool = False,
        http_status: int | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
        details: str | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.subcode = subcode
        self.type = type
        self.fbtrace_id = fbtrace_id
        self.is_transient = is_transient
        self.http_status = http_status
        self.user_title = user_title
        self.user_msg = user_msg
        self.details = details
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"code {self.code}" + (f"/{self.subcode}" if self.subcode else "") if self.code else "transport"
        trace = f", fbtrace_id {self.fbtrace_id}" if self.fbtrace_id else ""
        return f"{self.message} ({where}{trace})"

    @property
    def kind(self) -> ErrorKind:
        return classify(self.code, self.subcode, self.message, is_transient=self.is_transient,
                        http_status=self.http_status)

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.TRANSIENT, ErrorKind.THROTTLED)


class GraphTransportError(GraphAPIError):
    """No answer from Meta: connection refused or dropped, or a timeout. Always worth a retry."""


def classify(code: int | None, subcode: int | None, message: str = "", *, is_transient: bool = False,
             http_status: int | None = None) -> ErrorKind:
    if code is None:
        return ErrorKind.TRANSIENT if http_status is None or http_status >= 500 else ErrorKind.PERMANENT
    if subcode in TOO_MUCH_DATA_SUBCODES or (code in (1, 100) and REDUCE_DATA_TEXT in message.lower()):
        return ErrorKind.TOO_MUCH_DATA
    if (code, subcode) in OUTSIDE_WINDOW or (code, None) in OUTSIDE_WINDOW:
        return ErrorKind.OUTSIDE_WINDOW
    if code in THROTTLE_CODES:
        return ErrorKind.THROTTLED
    if code == 190 or code == 102 or code == 463 or code == 467:
        return ErrorKind.AUTH
    if code == 10 or 200 <= code <= 299:
        return ErrorKind.PERMISSION
    if code in TRANSIENT_CODES or is_transient:
        return ErrorKind.TRANSIENT
    if code == 100:
        return ErrorKind.INVALID
    if http_status is not None and http_status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def error_from_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> GraphAPIError:
    """The typed error for a non-2xx Graph response (any body, even HTML from a proxy)."""
    headers = headers or {}
    try:
        payload = json.loads(body)
        err = payload.get("error") if isinstance(payload, dict) else None
    except (ValueError, UnicodeDecodeError):
        err = None
    if not isinstance(err, dict):
        snippet = body[:200].decode("utf-8", "replace").strip()
        return GraphAPIError(f"HTTP {status} from the Graph API: {snippet or 'empty body'}", http_status=status,
                             fbtrace_id=headers.get("x-fb-trace-id"))
    data = err.get("error_data")
    details = data.get("details") if isinstance(data, dict) else (data if isinstance(data, str) else None)
    return GraphAPIError(
        str(err.get("message") or f"HTTP {status}"),
        code=_int(err.get("code")),
        subcode=_int(err.get("error_subcode")),
        type=err.get("type"),
        fbtrace_id=err.get("fbtrace_id") or headers.get("x-fb-trace-id"),
        is_transient=bool(err.get("is_transient", False)),
        http_status=status,
        user_title=err.get("error_user_title"),
        user_msg=err.get("error_user_msg"),
        details=details,
    )
