"""The sandbox's core: a world of Graph nodes, tokens, usage limits and injected faults, and the registry
that surface modules (marketing, pages, messaging, capi) add their endpoints to.

A surface registers handlers by (HTTP method, node kind, edge): ``GET act_123/insights`` resolves node
``act_123`` (kind ``ad_account``) and calls the handler registered for ``("GET", "ad_account",
"insights")``. Handlers raise :class:`GraphError` to answer with Meta's error envelope.

Helpers surfaces may call (additions to the registry API; all keep the original names working):

- ``req.headers`` — response headers a handler adds; the dispatcher puts them on the answer, error or not.
- :func:`charge_ads_call` (Marketing API) and :func:`charge_buc` (Pages, Instagram, Messenger, WhatsApp):
  count one call against Meta's limits, add ``x-ad-account-usage`` / ``x-business-use-case-usage`` (and
  ``x-fb-ads-insights-throttle``) and raise Meta's throttling error past the limit. The app-level bucket
  (``x-app-usage``, code 4) is charged by the dispatcher on every Graph call. Limits: ``state.limits``.
- :func:`unit` — a deterministic number in [0, 1) from the seed and any parts: the synthetic data's source.
- Restatement hook: ``state.restate(days)`` (route ``POST /_sandbox/restate``) bumps
  ``state.extra["restate_version"]`` and records the restated days; ``state.restate_salt(day)`` is how many
  restatements covered ``day`` (0 = never). Surfaces mix the salt into that day's numbers, so a restated day
  changes deterministically and other days do not.
- :func:`paged` — Meta's cursor paging (``paging.cursors.before/after``, ``next`` only when more remain).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from everreach_sandbox.defaults import SANDBOX_DEFAULTS


class GraphError(Exception):
    """Meta's error envelope: ``{"error": {message, type, code, error_subcode, fbtrace_id, …}}``."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        type: str = "OAuthException",
        status: int = 400,
        is_transient: bool = False,
        user_title: str | None = None,
        user_msg: str | None = None,
        error_data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.subcode, self.type = code, message, subcode, type
        self.status, self.is_transient = status, is_transient
        self.user_title, self.user_msg, self.error_data = user_title, user_msg, error_data
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.is_transient:
            err["is_transient"] = True
        if self.user_title:
            err["error_user_title"] = self.user_title
        if self.user_msg:
            err["error_user_msg"] = self.user_msg
        if self.error_data is not None:
            err["error_data"] = self.error_data
        err["fbtrace_id"] = fbtrace_id()
        return {"error": err}

    def response(self, extra_headers: dict[str, str] | None = None) -> JSONResponse:
        body = self.body()
        headers = {**(extra_headers or {}), **self.headers, "x-fb-trace-id": body["error"]["fbtrace_id"]}
        return JSONResponse(body, status_code=self.status, headers=headers)


def fbtrace_id() -> str:
    return secrets.token_urlsafe(8).replace("-", "A").replace("_", "B")[:11]


# ───────────────────────────── tokens ─────────────────────────────


@dataclass
class TokenInfo:
    token: str
    app_id: str = SANDBOX_DEFAULTS["META_APP_ID"]
    type: str = "SYSTEM_USER"  # PAGE | USER | SYSTEM_USER
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None  # unix seconds; None = never
    profile_id: str | None = None  # the Page a page token belongs to, the user a user token is (for /me)
    data_access_expires_at: float | None = None  # unix seconds; None = 90 days from now

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at


# ───────────────────────────── usage limits ─────────────────────────────


@dataclass
class UsageBucket:
    """Calls in a sliding window against a limit, reported as a percentage, as Meta's headers do."""

    limit: int
    window_seconds: float
    calls: deque = field(default_factory=deque)

    def _trim(self, now: float) -> None:
        while self.calls and self.calls[0] <= now - self.window_seconds:
            self.calls.popleft()

    def hit(self, now: float) -> None:
        self._trim(now)
        self.calls.append(now)

    def percent(self, now: float) -> int:
        self._trim(now)
        return min(100, int(len(self.calls) * 100 / max(1, self.limit))) if self.limit else 0

    def over(self, now: float) -> bool:
        self._trim(now)
        return bool(self.limit) and len(self.calls) > self.limit

    def regain_seconds(self, now: float) -> float:
        """Seconds until a call fits again (0 while under the limit)."""
        self._trim(now)
        if not self.limit or len(self.calls) < self.limit:
            return 0.0
        return max(0.0, self.calls[len(self.calls) - self.limit] + self.window_seconds - now)

    def try_hit(self, now: float) -> bool:
        """Count a call if it fits under the limit; refused calls are not counted (as Meta blocks them)."""
        self._trim(now)
        if self.limit and len(self.calls) >= self.limit:
            return False
        self.calls.append(now)
        return True

    def reset_seconds(self, now: float) -> float:
        """Seconds until the oldest counted call leaves the window (``reset_time_duration``)."""
        self._trim(now)
        return max(0.0, self.calls[0] + self.window_seconds - now) if self.calls else 0.0


@dataclass
class Limits:
    """Meta's rate limits, per sliding window. Defaults are generous (a development sandbox should not
    throttle a normal run); tests shrink them, e.g. ``Limits(ad_account_calls=5, window_seconds=1)``.

    ``app_calls``: per app (code 4, ``x-app-usage``); ``user_calls``: per token on the Marketing API
    (17/2446079); ``ad_account_calls``: per ad account (613/1487742, ``x-ad-account-usage``);
    ``buc_calls``: per business use case and object (80000-80014, ``x-business-use-case-usage``)."""

    app_calls: int = 200_000
    user_calls: int = 100_000
    ad_account_calls: int = 100_000
    buc_calls: int = 100_000
    window_seconds: float = 3600.0


# ───────────────────────────── faults ─────────────────────────────


@dataclass
class Fault:
    """One injected failure. ``kind``: ``status`` (HTTP error with Meta's envelope), ``graph`` (a Graph
    error code), ``timeout`` (hang longer than any sane client timeout), ``drop`` (close the connection).
    With ``after``, a ``timeout`` or ``drop`` comes once the request has been carried out (a message sent,
    its webhooks on their way): Meta did the work and its answer was lost, which a client cannot tell from
    a request that never arrived."""

    kind: str  # status | graph | timeout | drop
    path_contains: str = ""
    times: int = 1
    status: int = 500
    code: int = 2
    subcode: int | None = None
    message: str = "An unexpected error has occurred. Please retry your request later."
    delay_seconds: float = 30.0
    after: bool = False


@dataclass
class Faults:
    latency_ms: tuple[float, float] = (0.0, 0.0)
    error_rate: float = 0.0  # random 500s with Meta's transient envelope
    drop_rate: float = 0.0  # random dropped connections (no HTTP answer at all)
    queue: list[Fault] = field(default_factory=list)

    def take(self, path: str) -> Fault | None:
        for fault in self.queue:
            if fault.path_contains in path and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.queue.remove(fault)
                return fault
        return None


# ───────────────────────────── world ─────────────────────────────


@dataclass
class Node:
    id: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SandboxState:
    """Everything the sandbox knows. One lock guards mutation: handlers are quick and in-memory."""

    seed: int = 42
    tokens: dict[str, TokenInfo] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    buckets: dict[str, UsageBucket] = field(default_factory=dict)
    webhook_url: str | None = None
    app_secret: str = "sandbox-app-secret"
    counters: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # per-surface state, keyed by surface name
    lock: threading.RLock = field(default_factory=threading.RLock)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add(self, node: Node) -> Node:
        self.nodes[node.id] = node
        return node

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def bucket(self, key: str, *, limit: int, window_seconds: float) -> UsageBucket:
        with self.lock:
            if key not in self.buckets:
                self.buckets[key] = UsageBucket(limit=limit, window_seconds=window_seconds)
            return self.buckets[key]

    # ── restatement (Meta revises recent days' numbers between pulls) ──

    def restate(self, days: int, *, today: date | None = None) -> dict[str, Any]:
        """Restate the last ``days`` days up to today (UTC): every surface's numbers for those days change
        deterministically. Returns ``{"restate_version", "from", "to"}``."""
        end = today or utc_today()
        start = end - timedelta(days=max(1, int(days)) - 1)
        with self.lock:
            version = int(self.extra.get("restate_version", 0)) + 1
            self.extra["restate_version"] = version
            self.extra.setdefault("restatements", []).append((version, start, end))
        return {"restate_version": version, "from": start.isoformat(), "to": end.isoformat()}

    def restate_salt(self, day: date) -> int:
        """How many restatements covered ``day`` (0 = its numbers are the originals)."""
        return sum(1 for _, start, end in self.extra.get("restatements", ()) if start <= day <= end)


# ───────────────────────────── registry ─────────────────────────────


@dataclass
class GraphRequest:
    """What a handler sees: the resolved node, merged parameters (query, form, JSON) and the token."""

    state: SandboxState
    request: Request
    version: str
    node: Node
    edge: str | None
    params: dict[str, Any]
    json: Any
    token: TokenInfo
    headers: dict[str, str] = field(default_factory=dict)  # added to the response, error or not

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def fields(self, default: tuple[str, ...] = ("id",)) -> list[str]:
        """The ``fields`` parameter as a list (``id`` always first), or ``default``."""
        names = list_param(self.params.get("fields"), "fields") or list(default)
        return ["id"] + [n for n in names if n != "id"]


def list_param(value: Any, name: str) -> list[str] | None:
    """A list parameter as Meta takes it: comma-separated (``fields=a,b``) or JSON-encoded, as Meta's SDKs
    send every list (``fields=["a","b"]``); None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise GraphError(100, f"(#100) param {name} must be an array", type="OAuthException") from exc
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


Handler = Callable[[GraphRequest], Awaitable[Response | dict[str, Any]]]


class Surface:
    """A group of endpoints (one Meta product) plus how it populates the world from a seed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.handlers: dict[tuple[str, str, str | None], Handler] = {}
        #: Handlers Meta answers without an access token (the app authenticates otherwise, e.g. oauth).
        self.tokenless: set[tuple[str, str, str | None]] = set()
        self.populate: Callable[[SandboxState], None] = lambda state: None
        self.control_routes: list = []  # starlette Routes under /_sandbox/ for tests and the CLI

    def route(self, method: str, kind: str, edge: str | None = None, *,
              token: bool = True) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[(method.upper(), kind, edge)] = fn
            if not token:
                self.tokenless.add((method.upper(), kind, edge))
            return fn

        return register

    def populator(self, fn: Callable[[SandboxState], None]) -> Callable[[SandboxState], None]:
        self.populate = fn
        return fn


# ───────────────────────────── deterministic data ─────────────────────────────


def unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) that depends only on the seed and ``parts``: the same world on every run."""
    digest = hashlib.blake2b("|".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def utc_today() -> date:
    return datetime.now(UTC).date()


def meta_time(moment: datetime) -> str:
    """Meta's timestamp format: ``2025-10-01T12:34:56+0000``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def parse_day(value: Any, name: str) -> date:
    """``since``/``until`` as Meta takes them: a unix timestamp or a date (``YYYY-MM-DD``), in UTC."""
    text = str(value).strip()
    try:
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text), UTC).date()
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except (ValueError, OverflowError, OSError) as exc:
        raise GraphError(
            100,
            f"(#100) The parameter {name} is not a valid unix timestamp or date: {text!r}",
            type="OAuthException",
        ) from exc


# ───────────────────────────── paging ─────────────────────────────


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sandbox:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "sandbox":
            raise ValueError(text)
        return max(0, int(number))
    except ValueError as exc:
        raise GraphError(100, "(#100) The after/before cursor is not valid", type="OAuthException") from exc


def paged(
    req: GraphRequest, items: list[Any], *, default_limit: int = 25, max_limit: int = 100
) -> dict[str, Any]:
    """One page of ``items`` the way the Graph API pages edges: ``limit`` and ``after``/``before`` honoured,
    ``paging.cursors`` on every non-empty page, ``paging.next`` only when more items remain and
    ``paging.previous`` only after the first page (Meta's SDK stops on a missing ``next``)."""
    try:
        limit = int(req.param("limit", default_limit))
    except (TypeError, ValueError) as exc:
        raise GraphError(100, "(#100) Param limit must be an integer", type="OAuthException") from exc
    limit = max(1, min(limit, max_limit))
    if req.param("after"):
        start = _offset(str(req.param("after")))
    elif req.param("before"):
        start = max(0, _offset(str(req.param("before"))) - limit)
    else:
        start = 0
    page = items[start : start + limit]
    if not page:
        return {"data": []}
    end = start + len(page)
    paging: dict[str, Any] = {"cursors": {"before": _cursor(start), "after": _cursor(end)}}
    url = req.request.url
    if end < len(items):
        paging["next"] = str(
            url.remove_query_params(["after", "before"]).include_query_params(after=_cursor(end), limit=limit)
        )
    if start > 0:
        paging["previous"] = str(
            url.remove_query_params(["after", "before"]).include_query_params(
                before=_cursor(start), limit=limit
            )
        )
    return {"data": page, "paging": paging}


# ───────────────────────────── usage and throttling ─────────────────────────────

#: Business-use-case throttle codes (Meta's rate-limiting docs: one code per use case).
BUC_CODES: dict[str, int] = {
    "ads_insights": 80000,
    "pages": 80001,
    "instagram": 80002,
    "custom_audience": 80003,
    "ads_management": 80004,
    "leadgen": 80005,
    "messenger": 80006,
    "whatsapp_business_management": 80008,
    "catalog_management": 80009,
    "catalog_batch": 80014,
}
RATE_LIMIT_DOCS = "https://developers.facebook.com/docs/graph-api/overview/rate-limiting"


def _percents(pct: int) -> dict[str, int]:
    return {"call_count": pct, "total_cputime": max(0, pct - 3), "total_time": max(0, pct - 1)}


def _minutes(seconds: float) -> int:
    return int(math.ceil(seconds / 60.0)) if seconds > 0 else 0


def charge_app(state: SandboxState, token: TokenInfo, *, now: float | None = None) -> dict[str, str]:
    """Count one call for the token's app. Returns the ``x-app-usage`` header; raises code 4 past the
    limit (the header rides on the error too). The dispatcher calls this for every Graph request."""
    now = time.time() if now is None else now
    with state.lock:
        bucket = state.bucket(
            f"app:{token.app_id}", limit=state.limits.app_calls, window_seconds=state.limits.window_seconds
        )
        ok = bucket.try_hit(now)
        headers = {"x-app-usage": json.dumps(_percents(bucket.percent(now)))}
    if not ok:
        state.count("throttled.app")
        raise GraphError(
            4,
            "(#4) Application request limit reached",
            subcode=1504022,
            is_transient=True,
            type="OAuthException",
            headers=headers,
        )
    return headers


def charge_buc(req: GraphRequest, object_id: str, use_case: str, *, now: float | None = None) -> None:
    """Count one call against the business use case ``use_case`` for ``object_id`` (a page, IG user,
    WABA or ad account). Adds ``x-business-use-case-usage``; past the limit raises the use case's 8000x
    code with subcode 2446079 and ``estimated_time_to_regain_access`` (minutes) in the header."""
    state = req.state
    now = time.time() if now is None else now
    with state.lock:
        bucket = state.bucket(
            f"buc:{use_case}:{object_id}",
            limit=state.limits.buc_calls,
            window_seconds=state.limits.window_seconds,
        )
        ok = bucket.try_hit(now)
        entry = {
            "type": use_case,
            **_percents(bucket.percent(now)),
            # Meta gives an estimate only once calls are being refused (0 while they still pass)
            "estimated_time_to_regain_access": 0 if ok else _minutes(bucket.regain_seconds(now)),
            "ads_api_access_tier": "standard_access",
        }
    business_id = object_id.removeprefix("act_")
    req.headers["x-business-use-case-usage"] = json.dumps({business_id: [entry]})
    if not ok:
        code = BUC_CODES.get(use_case, 80004)
        state.count(f"throttled.buc.{use_case}")
        raise GraphError(
            code,
            f"(#{code}) There have been too many calls to this {object_id}. Wait a bit and "
            f"try again. For more info, please refer to {RATE_LIMIT_DOCS}#{use_case.replace('_', '-')}.",
            subcode=2446079,
            type="OAuthException",
            headers=dict(req.headers),
        )


def charge_ads_call(
    req: GraphRequest, account_id: str, *, use_case: str = "ads_management", now: float | None = None
) -> None:
    """Count one Marketing API call on ``account_id`` (``act_…``) by this token: user level (17/2446079),
    ad-account level (613/1487742, ``x-ad-account-usage``) and the business use case (``ads_management``
    → 80004, ``ads_insights`` → 80000, ``x-business-use-case-usage``). ``ads_insights`` calls also get
    ``x-fb-ads-insights-throttle``. Raises the first limit crossed, with every header on the error."""
    state = req.state
    now = time.time() if now is None else now
    limits = state.limits
    with state.lock:
        user = state.bucket(
            f"user:{req.token.token}", limit=limits.user_calls, window_seconds=limits.window_seconds
        )
        account = state.bucket(
            f"account:{account_id}", limit=limits.ad_account_calls, window_seconds=limits.window_seconds
        )
        user_ok = user.try_hit(now)
        account_ok = user_ok and account.try_hit(now)
        pct = account.percent(now)
        req.headers["x-ad-account-usage"] = json.dumps(
            {
                "acc_id_util_pct": pct,
                "reset_time_duration": int(math.ceil(account.reset_seconds(now))),
                "ads_api_access_tier": "standard_access",
            }
        )
        if use_case == "ads_insights":
            app = state.buckets.get(f"app:{req.token.app_id}")
            req.headers["x-fb-ads-insights-throttle"] = json.dumps(
                {
                    "app_id_util_pct": app.percent(now) if app else 0,
                    "acc_id_util_pct": pct,
                    "ads_api_access_tier": "standard_access",
                }
            )
    if not user_ok:
        state.count("throttled.user")
        raise GraphError(
            17,
            "(#17) User request limit reached",
            subcode=2446079,
            type="OAuthException",
            user_title="Ad Account Has Too Many API Calls",
            user_msg="There have been too many calls from this ad-account. Please wait a bit and try again.",
            headers=dict(req.headers),
        )
    if not account_ok:
        state.count("throttled.ad_account")
        raise GraphError(
            613,
            "(#613) Calls to this api have exceeded the rate limit.",
            subcode=1487742,
            type="OAuthException",
            user_title="Too many calls",
            user_msg="There have been too many calls from this ad-account. Wait a bit and try "
            f"again. For more info, please refer to {RATE_LIMIT_DOCS}.",
            headers=dict(req.headers),
        )
    charge_buc(req, account_id, use_case, now=now)
