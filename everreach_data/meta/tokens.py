"""Meta's access-token surfaces: ``/debug_token`` (what a token is, whom it acts for, what it may do and
until when), ``/oauth/access_token`` with ``fb_exchange_token`` (a short-lived user token for a long-lived
one) and ``/me/accounts`` (the Page tokens a user token derives).

httpx logs every request's URL at INFO, and these URLs can hold tokens, so: ``/debug_token`` is asked inside
a batch request (the relative URLs travel in the form body, and every token goes in one HTTP request), and
the exchange (Meta's documented GET, the secrets in its query) and the paging of ``/me/accounts`` (Meta's
``next`` links carry the token) run with httpx's logger held at WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from everreach_data.meta.client import BatchCall, GraphClient
from everreach_data.meta.errors import GraphAPIError


@contextmanager
def _urls_unlogged() -> Iterator[None]:
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def app_token(app_id: str, app_secret: str) -> str:
    """The app access token Meta accepts for ``/debug_token``: ``{app_id}|{app_secret}``."""
    return f"{app_id}|{app_secret}"


def _when(value: Any) -> datetime | None:
    """Meta's epoch seconds; 0 (or absent) means never."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class TokenInfo:
    """``/debug_token``'s ``data``: ``error`` is Meta's reason when the token is not valid (or when the check
    itself was refused, e.g. a token that can no longer debug itself)."""

    is_valid: bool
    type: str | None = None
    app_id: str | None = None
    application: str | None = None
    user_id: str | None = None
    profile_id: str | None = None
    expires_at: datetime | None = None               # None: never expires
    data_access_expires_at: datetime | None = None
    issued_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    error: str | None = None

    @classmethod
    def from_debug(cls, body: dict[str, Any]) -> TokenInfo:
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        error = data.get("error") if isinstance(data.get("error"), dict) else None
        scopes = data.get("scopes") if isinstance(data.get("scopes"), list) else []
        return cls(
            is_valid=data.get("is_valid") is True, type=data.get("type"),
            app_id=str(data["app_id"]) if data.get("app_id") else None, application=data.get("application"),
            user_id=str(data["user_id"]) if data.get("user_id") else None,
            profile_id=str(data["profile_id"]) if data.get("profile_id") else None,
            expires_at=_when(data.get("expires_at")),
            data_access_expires_at=_when(data.get("data_access_expires_at")),
            issued_at=_when(data.get("issued_at")), scopes=tuple(str(s) for s in scopes),
            error=_reason(error.get("code"), error.get("subcode"), error.get("message")) if error else None)

    @classmethod
    def refused(cls, exc: GraphAPIError) -> TokenInfo:
        """Meta would not debug it at all (e.g. an expired token asked about itself): not valid, and why."""
        return cls(is_valid=False, error=_reason(exc.code, exc.subcode, exc.message))


def _reason(code: Any, subcode: Any, message: Any) -> str:
    codes = "/".join(str(c) for c in (code, subcode) if c is not None)
    return f"({codes}) {message}" if codes else str(message)


def debug_tokens(client: GraphClient, tokens: Sequence[str]) -> list[TokenInfo]:
    """What Meta says about each of ``tokens``, in order, in one batch request on ``client`` (whose token
    asks: the app token, or a token asking about itself)."""
    results = client.batch([BatchCall("GET", "debug_token", {"input_token": t}) for t in tokens])
    return [TokenInfo.from_debug(r.body or {}) if r.ok else TokenInfo.refused(r.error)  # type: ignore[arg-type]
            for r in results]


@dataclass(frozen=True)
class LongLivedToken:
    access_token: str = field(repr=False)
    expires_in: int | None        # seconds; None: Meta did not say


def exchange_for_long_lived(client: GraphClient, *, app_id: str, app_secret: str,
                            short_lived_token: str) -> LongLivedToken:
    """``fb_exchange_token``: a short-lived user token (about an hour) for a long-lived one (about 60 days)."""
    with _urls_unlogged():
        body = client.get("oauth/access_token", grant_type="fb_exchange_token", client_id=app_id,
                          client_secret=app_secret, fb_exchange_token=short_lived_token)
    if not body.get("access_token"):
        raise ValueError("Meta answered the token exchange without an access_token")
    expires = body.get("expires_in")
    return LongLivedToken(str(body["access_token"]), int(expires) if isinstance(expires, int | float) else None)


@dataclass(frozen=True)
class PageToken:
    """A Page the user manages, with the Page token derived from the user's token (one derived from a
    long-lived user token does not expire) and its linked Instagram professional account, if any."""

    page_id: str
    name: str
    access_token: str = field(repr=False)
    tasks: tuple[str, ...] = ()
    instagram_user_id: str | None = None


def page_tokens(client: GraphClient) -> list[PageToken]:
    """``/me/accounts`` on a user token's client, every page of it."""
    pages = []
    with _urls_unlogged():
        items = list(client.paginate("me/accounts", {"fields": "id,name,access_token,tasks,instagram_business_account",
                                                     "limit": 100}))
    for item in items:
        ig = item.get("instagram_business_account")
        pages.append(PageToken(str(item["id"]), str(item.get("name") or ""), str(item["access_token"]),
                               tuple(item.get("tasks") or ()),
                               str(ig["id"]) if isinstance(ig, dict) and ig.get("id") else None))
    return pages
