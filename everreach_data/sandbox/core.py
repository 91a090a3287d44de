"""The sandbox's core: a world of Graph nodes, tokens, usage limits and injected faults, and the registry
that surface modules (marketing, pages, messaging, capi) add their endpoints to.

A surface registers handlers by (HTTP method, node kind, edge): ``GET act_123/insights`` resolves node
``act_123`` (kind ``ad_account``) and calls the handler registered for ``("GET", "ad_account",
"insights")``. Handlers raise :class:`GraphError` to answer with Meta's error envelope.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class GraphError(Exception):
    """Meta's error envelope: ``{"error": {message, type, code, error_subcode, fbtrace_id, …}}``."""

    def __init__(self, code: int, message: str, *, subcode: int | None = None, type: str = "OAuthException",
                 status: int = 400, is_transient: bool = False, user_title: str | None = None,
                 user_msg: str | None = None, error_data: Any = None,
                 headers: dict[str, str] | None = None) -> None:
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

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def fbtrace_id() -> str:
    return secrets.token_urlsafe(8).replace("-", "A").replace("_", "B")[:11]


# ───────────────────────────── tokens ─────────────────────────────

@dataclass
class TokenInfo:
    token: str
    app_id: str = "263902037430900"
    type: str = "SYSTEM_USER"          # PAGE | USER | SYSTEM_USER
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None     # unix seconds; None = never
    profile_id: str | None = None       # the Page a page token belongs to (for /me)

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
        self._trim(now)
        if not self.calls or len(self.calls) <= self.limit:
            return 0.0
        return max(0.0, self.calls[0] + self.window_seconds - now)


# ───────────────────────────── faults ─────────────────────────────

@dataclass
class Fault:
    """One injected failure. ``kind``: ``status`` (HTTP error with Meta's envelope), ``graph`` (a Graph
    error code), ``timeout`` (hang longer than any sane client timeout), ``drop`` (close the connection)."""

    kind: str
    path_contains: str = ""
    times: int = 1
    status: int = 500
    code: int = 2
    subcode: int | None = None
    message: str = "An unexpected error has occurred. Please retry your request later."
    delay_seconds: float = 30.0


@dataclass
class Faults:
    latency_ms: tuple[float, float] = (0.0, 0.0)
    error_rate: float = 0.0          # random 500s with Meta's transient envelope
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
    extra: dict[str, Any] = field(default_factory=dict)   # per-surface state, keyed by surface name
    lock: threading.RLock = field(default_factory=threading.RLock)

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

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


Handler = Callable[[GraphRequest], Awaitable[Response | dict[str, Any]]]


class Surface:
    """A group of endpoints (one Meta product) plus how it populates the world from a seed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.handlers: dict[tuple[str, str, str | None], Handler] = {}
        self.populate: Callable[[SandboxState], None] = lambda state: None
        self.control_routes: list = []   # starlette Routes under /_sandbox/ for tests and the CLI

    def route(self, method: str, kind: str, edge: str | None = None) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[(method.upper(), kind, edge)] = fn
            return fn
        return register

    def populator(self, fn: Callable[[SandboxState], None]) -> Callable[[SandboxState], None]:
        self.populate = fn
        return fn
