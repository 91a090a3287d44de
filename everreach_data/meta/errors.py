"""Meta's Graph API errors: one table of what each code means, and a typed exception class per meaning.

``{"error": {"message", "type", "code", "error_subcode", "is_transient", "error_user_title",
"error_user_msg", "error_data", "fbtrace_id"}}`` becomes the :class:`GraphAPIError` subclass for its code
(as pywa picks its error classes): :class:`TransientError` (retry with backoff), :class:`ThrottledError`
(wait for the limit to reset), :class:`TooMuchDataError` (split the request), :class:`AuthError` and
:class:`PermissionDeniedError` (stop the channel, re-authorize), :class:`OutsideWindowError`,
:class:`InvalidRequestError` (fix the request), :class:`PermanentError` (give up on this item). Callers
catch the class or read ``kind``; nothing else in the project keeps a list of codes.

No answer at all is a :class:`GraphTransportError`, which keeps httpx's exception as its cause: whether
the request may have reached Meta is read from that exception's type, never from message text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import httpx


class ErrorKind(StrEnum):
    TRANSIENT = "transient"          # retry with backoff
    THROTTLED = "throttled"          # wait for the limit to reset, then retry
    TOO_MUCH_DATA = "too_much_data"  # "Please reduce the amount of data": split the request
    AUTH = "auth"                    # token invalid or expired: stop and re-authorize
    PERMISSION = "permission"        # a permission is missing: stop and re-authorize
    OUTSIDE_WINDOW = "outside_window"  # the messaging policy window is closed
    INVALID = "invalid"              # the request itself is wrong
    PERMANENT = "permanent"          # anything else that retrying will not fix


@dataclass(frozen=True)
class Meaning:
    """What a code means: how a caller should act (``kind``) and what a person should read (``reads``)."""

    kind: ErrorKind
    reads: str


_T, _TH, _AUTH, _PERM, _WIN, _INV, _DATA, _FINAL = (
    ErrorKind.TRANSIENT, ErrorKind.THROTTLED, ErrorKind.AUTH, ErrorKind.PERMISSION, ErrorKind.OUTSIDE_WINDOW,
    ErrorKind.INVALID, ErrorKind.TOO_MUCH_DATA, ErrorKind.PERMANENT)
_THROTTLED = Meaning(_TH, "rate limit reached; retried with backoff")
_UNAVAILABLE = Meaning(_FINAL, "recipient unavailable: no matching user, or the person blocked or left the "
                               "conversation")
_TEMPLATE = Meaning(_FINAL, "template problem: the template or its parameters do not match an approved template")
_TEMPORARY = Meaning(_T, "temporary failure at Meta; retried with backoff")
_TOKEN = Meaning(_AUTH, "access token invalid or expired: the channel needs re-authorization")

#: Meta's codes across the Marketing, Pages, Messenger/Instagram, WhatsApp Cloud and Conversions APIs
#: (Meta's error-code and rate-limiting docs). A ``(code, subcode)`` row wins over its ``(code, None)`` row.
CODES: dict[tuple[int, int | None], Meaning] = {
    (1, None): _TEMPORARY,
    (2, None): _TEMPORARY,
    (1200, None): _TEMPORARY,
    (131000, None): _TEMPORARY,
    (131016, None): _TEMPORARY,
    (131057, None): _TEMPORARY,
    **{(code, None): _THROTTLED for code in (4, 17, 32, 341, 613, 130429, 131056, *range(80000, 80015))},
    **{(code, None): _TOKEN for code in (102, 190, 463, 467)},
    (10, None): Meaning(_PERM, "permission missing for this send: the channel needs re-authorization"),
    **{(code, None): Meaning(_PERM, "permission missing for this send: the channel needs re-authorization")
       for code in range(200, 300)},
    (10, 2018278): Meaning(_WIN, "outside the messaging window: the user has not written within 24 h (7 days "
                                 "for a human agent with the HUMAN_AGENT tag)"),
    (131047, None): Meaning(_WIN, "outside the 24-hour window: WhatsApp only accepts a template now"),
    (470, None): Meaning(_WIN, "outside the 24-hour window: WhatsApp only accepts a template now"),
    (100, None): Meaning(_INV, "invalid parameter: Meta rejected the request"),
    (100, 2018001): _UNAVAILABLE,
    (551, None): _UNAVAILABLE,
    (200, 1545041): _UNAVAILABLE,
    (131026, None): Meaning(_FINAL, "undeliverable: the number is not on WhatsApp or cannot receive this message"),
    (131050, None): Meaning(_FINAL, "the user stopped marketing messages from this business"),
    **{(code, None): _TEMPLATE for code in (131008, 131009, 131051, 131052, 131053, *range(132000, 132017))},
}
#: "Please reduce the amount of data": with this subcode, or Meta's text under code 1 or 100.
TOO_MUCH_DATA = Meaning(_DATA, "too much data asked for in one request")
TOO_MUCH_DATA_SUBCODE = 1487534
REDUCE_DATA_TEXT = "reduce the amount of data"
_REJECTED = Meaning(_FINAL, "Meta rejected the request")
#: WhatsApp's per-recipient pair rate: a throttle that empties that recipient's budget only.
PAIR_RATE_LIMIT = 131056


def meaning(code: int | None, subcode: int | None, message: str = "", *, is_transient: bool = False,
            http_status: int | None = None) -> Meaning:
    """What an error means, from the table. Meta's ``is_transient`` flag makes an invalid or permanent
    error temporary; the HTTP status decides what the table does not list."""
    if subcode == TOO_MUCH_DATA_SUBCODE or (code in (1, 100) and REDUCE_DATA_TEXT in message.lower()):
        return TOO_MUCH_DATA
    if code is None:
        return _REJECTED if http_status is not None and http_status < 500 else _TEMPORARY
    found = CODES.get((code, subcode)) or CODES.get((code, None))
    if is_transient and (found is None or found.kind in (_INV, _FINAL)):
        return _TEMPORARY
    if found is not None:
        return found
    return _TEMPORARY if (http_status or 0) >= 500 else _REJECTED


class GraphAPIError(Exception):
    """An error answered by the Graph API. Raised as the subclass for its kind (:func:`error_for`)."""

    #: The kind every instance of a subclass has; the base class reads it from the table.
    fixed_kind: ClassVar[ErrorKind | None] = None

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
    def meaning(self) -> Meaning:
        return meaning(self.code, self.subcode, self.message, is_transient=self.is_transient,
                       http_status=self.http_status)

    @property
    def kind(self) -> ErrorKind:
        return self.fixed_kind or self.meaning.kind

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.TRANSIENT, ErrorKind.THROTTLED)

    @property
    def may_have_taken_effect(self) -> bool:
        """True when no answer from Meta says the request failed (an answer we could not read): repeating
        it could do it twice."""
        return self.code is None and self.http_status is None

    def plain(self) -> str:
        """What a person should read, with Meta's own message after it."""
        return f"{self.meaning.reads} (Meta: {self.message})"


class TransientError(GraphAPIError):
    """Meta failed for now (1, 2, 5xx, …): retry with backoff."""

    fixed_kind = ErrorKind.TRANSIENT


class ThrottledError(GraphAPIError):
    """A rate limit (4, 17, 613, 80000–80014, 130429, 131056…): wait for it to reset, then retry."""

    fixed_kind = ErrorKind.THROTTLED


class TooMuchDataError(GraphAPIError):
    """"Please reduce the amount of data": ask for less (a shorter range, fewer objects or fields)."""

    fixed_kind = ErrorKind.TOO_MUCH_DATA


class AuthError(GraphAPIError):
    """The token is invalid or expired (190, 102, 463, 467): stop and re-authorize."""

    fixed_kind = ErrorKind.AUTH


class PermissionDeniedError(GraphAPIError):
    """The token lacks a permission (10, 200–299): stop and re-authorize."""

    fixed_kind = ErrorKind.PERMISSION


class OutsideWindowError(GraphAPIError):
    """The messaging window is closed (10/2018278, 131047): a human agent or a template only."""

    fixed_kind = ErrorKind.OUTSIDE_WINDOW


class InvalidRequestError(GraphAPIError):
    """Meta refused a parameter (100): fix the request."""

    fixed_kind = ErrorKind.INVALID


class PermanentError(GraphAPIError):
    """Anything else retrying will not fix (user unavailable, undeliverable, template problems…)."""

    fixed_kind = ErrorKind.PERMANENT


ERROR_CLASSES: dict[ErrorKind, type[GraphAPIError]] = {
    cls.fixed_kind: cls for cls in (TransientError, ThrottledError, TooMuchDataError, AuthError,  # type: ignore[misc]
                                    PermissionDeniedError, OutsideWindowError, InvalidRequestError, PermanentError)
}


class GraphTransportError(TransientError):
    """No answer from Meta: the connection was refused or dropped, or timed out. ``__cause__`` is httpx's
    exception (or None for a batch item Meta did not run)."""

    #: Failures before the request was sent: Meta cannot have received it.
    NOT_SENT: ClassVar[tuple[type[Exception], ...]] = (httpx.ConnectError, httpx.ConnectTimeout,
                                                       httpx.PoolTimeout)

    @classmethod
    def from_exception(cls, exc: Exception) -> GraphTransportError:
        error = cls(f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    @property
    def may_have_taken_effect(self) -> bool:
        """False only when the request certainly never left (a refused or timed-out connect)."""
        return not isinstance(self.__cause__, self.NOT_SENT)


def error_for(message: str, *, code: int | None = None, subcode: int | None = None, is_transient: bool = False,
              http_status: int | None = None, **fields: Any) -> GraphAPIError:
    """The typed error for these fields: the class of the kind the table gives them."""
    kind = meaning(code, subcode, message, is_transient=is_transient, http_status=http_status).kind
    return ERROR_CLASSES[kind](message, code=code, subcode=subcode, is_transient=is_transient,
                               http_status=http_status, **fields)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def error_from_response(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> GraphAPIError:
    """The typed error for a non-2xx Graph response (any body, even HTML from a proxy)."""
    headers = headers or {}
    try:
        payload = json.loads(body)
        err = payload.get("error") if isinstance(payload, dict) else None
    except (ValueError, UnicodeDecodeError):
        err = None
    if not isinstance(err, dict):
        snippet = body[:200].decode("utf-8", "replace").strip()
        return error_for(f"HTTP {status} from the Graph API: {snippet or 'empty body'}", http_status=status,
                         fbtrace_id=headers.get("x-fb-trace-id"))
    data = err.get("error_data")
    details = data.get("details") if isinstance(data, dict) else (data if isinstance(data, str) else None)
    return error_for(
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
