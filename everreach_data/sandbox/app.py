"""The sandbox's ASGI app: ``/{version}/{node}[/{edge}]`` dispatched to the surfaces, with Meta's token
checks, usage headers, throttling and injected faults applied on the way; ``/_sandbox/*`` lets tests and
the CLI steer it (faults, latency, limits, tokens, restatements, counters).

Faults are applied by :class:`FaultInjector`, a raw ASGI wrapper outside Starlette, because a dropped
connection has to close the socket itself (uvicorn would otherwise answer a crashed app with a 500).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from everreach_data.sandbox.core import (
    Fault,
    GraphError,
    GraphRequest,
    Limits,
    SandboxState,
    Surface,
    TokenInfo,
    charge_app,
    fbtrace_id,
)

VERSION = re.compile(r"^v\d+\.\d+$")


def _token_from(request: Request, params: dict[str, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    token = params.get("access_token")
    return str(token) if token else None


async def _params(request: Request) -> tuple[dict[str, Any], Any]:
    """Query, form and JSON body merged (the query wins), as Meta reads parameters from all three."""
    params: dict[str, Any] = dict(request.query_params)
    body: Any = None
    if request.method in ("POST", "DELETE"):
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        if raw and "application/json" in ctype:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise GraphError(100, "(#100) Invalid JSON in request body", type="OAuthException") from exc
            if isinstance(body, dict):
                params.update({k: v for k, v in body.items() if k not in params})
        elif raw:
            form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            params.update({k: v for k, v in form.items() if k not in params})
    return params, body


def check_token(state: SandboxState, token: str | None) -> TokenInfo:
    if not token:
        raise GraphError(104, "An access token is required to request this resource.", type="OAuthException")
    info = state.tokens.get(token)
    if info is None:
        raise GraphError(
            190, "Invalid OAuth access token - Cannot parse access token", type="OAuthException", status=400
        )
    if info.expired:
        when = time.strftime("%A, %d-%b-%y %H:%M:%S PDT", time.gmtime(info.expires_at or 0))
        raise GraphError(
            190,
            f"Error validating access token: Session has expired on {when}. The current "
            f"time is {time.strftime('%A, %d-%b-%y %H:%M:%S PDT', time.gmtime())}.",
            subcode=463,
            type="OAuthException",
            status=400,
        )
    return info


# ───────────────────────────── faults ─────────────────────────────


class FaultInjector:
    """Latency and injected failures for Graph paths (never for ``/_sandbox``): ``status`` answers an HTTP
    error with Meta's transient envelope, ``graph`` a Graph error code, ``timeout`` hangs until the client
    gives up (or ``delay_seconds``, then 504), ``drop`` aborts the TCP connection with no answer."""

    def __init__(self, app: Any, state: SandboxState) -> None:
        self.app, self.sandbox = app, state
        self.state = app.state  # Starlette's app.state (app.state.sandbox), as callers reached it before

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        state = self.sandbox
        lo, hi = state.faults.latency_ms
        if hi > 0:
            await asyncio.sleep(state.rng.uniform(lo, hi) / 1000.0)
        with state.lock:
            fault = state.faults.take(scope["path"])
            if fault is None and state.faults.drop_rate and state.rng.random() < state.faults.drop_rate:
                fault = Fault(kind="drop")
            if fault is None and state.faults.error_rate and state.rng.random() < state.faults.error_rate:
                fault = Fault(kind="status")
        if fault is None:
            await self.app(scope, receive, send)
            return
        state.count(f"fault.{fault.kind}")
        if fault.kind == "drop":
            await _drop(send)
        elif fault.kind == "timeout":
            try:
                await asyncio.wait_for(_until_disconnect(receive), timeout=fault.delay_seconds)
            except TimeoutError:
                await JSONResponse({}, status_code=504)(scope, receive, send)
        elif fault.kind == "graph":
            await GraphError(
                fault.code, fault.message, subcode=fault.subcode, status=fault.status, type="OAuthException"
            ).response()(scope, receive, send)
        else:
            await GraphError(
                fault.code, fault.message, status=fault.status, is_transient=True, type="OAuthException"
            ).response()(scope, receive, send)


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _drop(send: Any) -> None:
    """Abort the connection under the request. uvicorn's ``send`` is a method of the request cycle, which
    holds the transport; abort() resets the socket without an HTTP answer, as a failing proxy would."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:  # another server: the best we can do is crash the request
        raise ConnectionAbortedError("sandbox: dropped connection")
    transport.abort()
    for _ in range(3):  # let uvicorn see the connection lost before the app returns
        await asyncio.sleep(0)


# ───────────────────────────── the app ─────────────────────────────


def create_sandbox_app(state: SandboxState, surfaces: list[Surface]) -> Any:
    handlers: dict = {}
    control_routes: list[Route] = []
    for surface in surfaces:
        handlers.update(surface.handlers)
        control_routes += surface.control_routes
        surface.populate(state)

    async def graph(request: Request) -> Response:
        version = request.path_params["version"]
        node_id = request.path_params["node"]
        edge = request.path_params.get("edge")
        state.count("requests")
        headers = {"facebook-api-version": version}
        req: GraphRequest | None = None
        try:
            if not VERSION.match(version):
                raise GraphError(2500, f"Unknown path components: /{version}", type="OAuthException")
            params, body = await _params(request)
            token = check_token(state, _token_from(request, params))
            headers.update(charge_app(state, token))
            if node_id == "me" and token.profile_id:
                node_id = token.profile_id
            node = state.nodes.get(node_id)
            if node is None:
                raise GraphError(
                    100,
                    f"Unsupported {request.method.lower()} request. Object with ID "
                    f"'{node_id}' does not exist, cannot be loaded due to missing permissions, or "
                    "does not support this operation. Please read the Graph API documentation at "
                    "https://developers.facebook.com/docs/graph-api",
                    subcode=33,
                    type="GraphMethodException",
                )
            handler = handlers.get((request.method, node.kind, edge))
            if handler is None:
                what = f"/{edge}" if edge else ""
                raise GraphError(
                    100,
                    f"(#100) Tried accessing nonexisting field ({edge or request.method}) "
                    f"on node type ({node.kind}{what})",
                    type="OAuthException",
                )
            req = GraphRequest(state, request, version, node, edge, params, body, token)
            result = await handler(req)
        except GraphError as exc:
            state.count(f"error.{exc.code}")
            return exc.response({**headers, **(req.headers if req else {})})
        headers.update(req.headers)
        if isinstance(result, Response):
            result.headers.update(headers)
            return result
        headers["x-fb-trace-id"] = fbtrace_id()
        return JSONResponse(result, headers=headers)

    async def control_faults(request: Request) -> JSONResponse:
        """POST {"latency_ms": [lo, hi] | n, "error_rate": 0.1, "drop_rate": 0.1, "clear": true,
        "faults": [{"kind": "status"|"graph"|"timeout"|"drop", "path_contains", "times", "status", "code",
        "subcode", "message", "delay_seconds"}]}. ``clear`` empties the queue and zeroes the rates."""
        body = await request.json()
        with state.lock:
            if body.get("clear"):
                state.faults.queue.clear()
                state.faults.error_rate = state.faults.drop_rate = 0.0
                state.faults.latency_ms = (0.0, 0.0)
            if "latency_ms" in body:
                value = body["latency_ms"]
                lo, hi = value if isinstance(value, list) else (value, value)
                state.faults.latency_ms = (float(lo), float(hi))
            if "error_rate" in body:
                state.faults.error_rate = float(body["error_rate"])
            if "drop_rate" in body:
                state.faults.drop_rate = float(body["drop_rate"])
            for spec in body.get("faults", []):
                state.faults.queue.append(Fault(**spec))
            queued = len(state.faults.queue)
        return JSONResponse({"ok": True, "queued": queued})

    async def control_limits(request: Request) -> JSONResponse:
        """POST any of Limits' fields; resets every usage bucket so the new limits start from zero."""
        body = await request.json()
        known = {f.name for f in fields(Limits)}
        unknown = sorted(set(body) - known)
        if unknown:
            return JSONResponse({"error": f"unknown limit(s): {', '.join(unknown)}"}, status_code=400)
        with state.lock:
            for key, value in body.items():
                setattr(state.limits, key, type(getattr(state.limits, key))(value))
            state.buckets.clear()
        return JSONResponse({"ok": True, "limits": {f: getattr(state.limits, f) for f in sorted(known)}})

    async def control_tokens(request: Request) -> JSONResponse:
        """POST {"token", "type", "scopes": [...], "expires_in": seconds (negative = already expired),
        "profile_id", "app_id"}: add a token the sandbox accepts (or rejects as expired)."""
        body = await request.json()
        expires_in = body.get("expires_in")
        info = TokenInfo(
            str(body["token"]),
            type=body.get("type", "SYSTEM_USER"),
            scopes=tuple(body.get("scopes", ())),
            profile_id=body.get("profile_id"),
            expires_at=None if expires_in is None else time.time() + float(expires_in),
            **({"app_id": str(body["app_id"])} if body.get("app_id") else {}),
        )
        with state.lock:
            state.tokens[info.token] = info
        return JSONResponse({"ok": True})

    async def control_restate(request: Request) -> JSONResponse:
        """POST {"days": 3}: Meta restates the last N days; their numbers change on the next pull."""
        body = await request.json() if await request.body() else {}
        return JSONResponse(state.restate(int(body.get("days", 3))))

    async def control_stats(request: Request) -> JSONResponse:
        now = time.time()
        with state.lock:
            usage = {key: bucket.percent(now) for key, bucket in state.buckets.items()}
            return JSONResponse(
                {
                    "counters": dict(state.counters),
                    "usage_percent": usage,
                    "restate_version": state.extra.get("restate_version", 0),
                }
            )

    routes = [
        Route("/_sandbox/faults", control_faults, methods=["POST"]),
        Route("/_sandbox/limits", control_limits, methods=["POST"]),
        Route("/_sandbox/tokens", control_tokens, methods=["POST"]),
        Route("/_sandbox/restate", control_restate, methods=["POST"]),
        Route("/_sandbox/stats", control_stats, methods=["GET"]),
        *control_routes,
        Route("/{version}/{node}", graph, methods=["GET", "POST", "DELETE"]),
        Route("/{version}/{node}/{edge}", graph, methods=["GET", "POST", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return FaultInjector(app, state)
