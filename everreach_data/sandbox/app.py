"""The sandbox's ASGI app: ``/{version}/{node}[/{edge}]`` dispatched to the surfaces, with Meta's token
checks, usage headers, throttling and injected faults applied on the way; ``/_sandbox/*`` lets tests and
the CLI steer it (faults, latency, restatements, counters)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from everreach_data.sandbox.core import Fault, GraphError, GraphRequest, SandboxState, Surface

VERSION = re.compile(r"^v\d+\.\d+$")


def _token_from(request: Request, params: dict[str, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    token = params.get("access_token")
    return str(token) if token else None


async def _params(request: Request) -> tuple[dict[str, Any], Any]:
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
            params.update(dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)))
    return params, body


def check_token(state: SandboxState, token: str | None):
    if not token:
        raise GraphError(104, "An access token is required to request this resource.", type="OAuthException")
    info = state.tokens.get(token)
    if info is None:
        raise GraphError(190, "Invalid OAuth access token - Cannot parse access token", type="OAuthException",
                         status=400)
    if info.expired:
        raise GraphError(190, "Error validating access token: Session has expired.", subcode=463,
                         type="OAuthException", status=400)
    return info


async def _apply_faults(state: SandboxState, path: str) -> Response | None:
    lo, hi = state.faults.latency_ms
    if hi > 0:
        await asyncio.sleep(state.rng.uniform(lo, hi) / 1000.0)
    fault = state.faults.take(path)
    if fault is None and state.faults.error_rate and state.rng.random() < state.faults.error_rate:
        fault = Fault(kind="status")
    if fault is None:
        return None
    state.count(f"fault.{fault.kind}")
    if fault.kind == "timeout":
        await asyncio.sleep(fault.delay_seconds)
        return JSONResponse({}, status_code=504)
    if fault.kind == "drop":
        raise ConnectionAbortedError("sandbox: dropped connection")
    if fault.kind == "graph":
        return GraphError(fault.code, fault.message, subcode=fault.subcode, status=fault.status).response()
    return GraphError(fault.code, fault.message, status=fault.status, is_transient=True,
                      type="OAuthException").response()


def create_sandbox_app(state: SandboxState, surfaces: list[Surface]) -> Starlette:
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
        injected = await _apply_faults(state, request.url.path)
        if injected is not None:
            return injected
        try:
            if not VERSION.match(version):
                raise GraphError(2500, f"Unknown path components: /{version}", type="OAuthException")
            params, body = await _params(request)
            token = check_token(state, _token_from(request, params))
            if node_id == "me" and token.profile_id:
                node_id = token.profile_id
            node = state.nodes.get(node_id)
            if node is None:
                raise GraphError(100, f"Unsupported get request. Object with ID '{node_id}' does not exist, "
                                 "cannot be loaded due to missing permissions, or does not support this "
                                 "operation.", subcode=33, type="GraphMethodException")
            handler = handlers.get((request.method, node.kind, edge))
            if handler is None:
                what = f"/{edge}" if edge else ""
                raise GraphError(100, f"(#100) Tried accessing nonexisting field ({edge or request.method}) "
                                 f"on node type ({node.kind}{what})", type="OAuthException")
            result = await handler(GraphRequest(state, request, version, node, edge, params, body, token))
        except GraphError as exc:
            state.count(f"error.{exc.code}")
            return exc.response()
        return result if isinstance(result, Response) else JSONResponse(result)

    async def control_faults(request: Request) -> JSONResponse:
        """POST {"latency_ms": [lo, hi], "error_rate": 0.1, "faults": [{kind, path_contains, times, …}]}."""
        body = await request.json()
        with state.lock:
            if "latency_ms" in body:
                lo, hi = body["latency_ms"] if isinstance(body["latency_ms"], list) else (body["latency_ms"],) * 2
                state.faults.latency_ms = (float(lo), float(hi))
            if "error_rate" in body:
                state.faults.error_rate = float(body["error_rate"])
            for spec in body.get("faults", []):
                state.faults.queue.append(Fault(**spec))
            if body.get("clear"):
                state.faults.queue.clear()
        return JSONResponse({"ok": True})

    async def control_stats(request: Request) -> JSONResponse:
        return JSONResponse({"counters": dict(state.counters)})

    routes = [
        Route("/_sandbox/faults", control_faults, methods=["POST"]),
        Route("/_sandbox/stats", control_stats, methods=["GET"]),
        *control_routes,
        Route("/{version}/{node}", graph, methods=["GET", "POST", "DELETE"]),
        Route("/{version}/{node}/{edge}", graph, methods=["GET", "POST", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return app
