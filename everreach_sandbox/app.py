"""The sandbox's ASGI app: ``/{version}/{node}[/{edge}]`` dispatched to the surfaces, with Meta's token
checks, usage headers, throttling and injected faults applied on the way; ``/_sandbox/*`` lets tests and
the CLI steer it (faults, latency, limits, tokens, restatements, counters).

Batch requests (developers.facebook.com/docs/graph-api/batch-requests): ``POST /`` or ``POST /{version}/``
with ``batch=[{"method", "relative_url", "body"}, …]`` (at most 50; ``include_headers`` default true) answer
a JSON array of ``{"code", "headers": [{"name", "value"}], "body": "<json string>"}``, ``null`` for an item
not run. Each item goes through the same dispatch as a plain request — token check (the item's
``access_token``, else the batch's), app usage and the surface's usage charged per item, as Meta counts
each, and the fault queue matched against the item's path — so one item's error never fails the others.
``name``/``depends_on`` (JSONPath dependencies) and ``omit_response_on_success`` are not simulated.

Faults are applied by :class:`FaultInjector`, a raw ASGI wrapper outside Starlette, because a dropped
connection has to close the socket itself (uvicorn would otherwise answer a crashed app with a 500).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from everreach_sandbox.core import (
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
DEFAULT_VERSION = "v24.0"  # what Meta applies to an unversioned call (the app's default API version)
MAX_BATCH = 50  # Meta's limit of requests in one batch
BATCH_METHODS = ("GET", "POST", "DELETE")


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch: ``relative_url`` split into version (optional), node, edge and query; a
    POST's form-encoded ``body`` merged into the parameters (the query wins, as for plain requests)."""

    method: str
    version: str | None
    node: str
    edge: str | None
    query: str
    params: dict[str, Any]


def parse_batch(raw: Any) -> list[BatchItem]:
    """The ``batch`` parameter (a JSON array, form field or JSON body) as items; Meta's 100 errors else."""
    if raw is None or raw == "":
        raise GraphError(100, "(#100) The parameter batch is required", type="OAuthException")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise GraphError(
                100, "(#100) param batch must be a JSON-encoded array", type="OAuthException"
            ) from exc
    if not isinstance(raw, list) or not raw:
        raise GraphError(
            100, "(#100) param batch must be a non-empty array of requests", type="OAuthException"
        )
    if len(raw) > MAX_BATCH:
        raise GraphError(
            100,
            f"(#100) Too many requests in batch message. Maximum batch size is {MAX_BATCH}",
            type="OAuthException",
        )
    return [_batch_item(i, spec) for i, spec in enumerate(raw)]


def _batch_item(index: int, spec: Any) -> BatchItem:
    def bad(why: str) -> GraphError:
        return GraphError(100, f"(#100) batch[{index}]: {why}", type="OAuthException")

    if not isinstance(spec, dict):
        raise bad("each request must be an object with method and relative_url")
    method = str(spec.get("method") or "GET").upper()
    if method not in BATCH_METHODS:
        raise bad(f"method must be one of {', '.join(BATCH_METHODS)}, not {method!r}")
    relative = spec.get("relative_url")
    if not isinstance(relative, str) or not relative.strip("/"):
        raise bad("relative_url is required")
    path, _, query = relative.strip().lstrip("/").partition("?")
    parts = [p for p in path.split("/") if p]
    version = parts.pop(0) if parts and VERSION.match(parts[0]) else None
    if not parts or len(parts) > 2:
        raise bad(f"relative_url {relative!r} must name a node and at most one edge")
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    body = spec.get("body")
    if isinstance(body, str):
        params.update({k: v for k, v in parse_qsl(body, keep_blank_values=True) if k not in params})
    elif isinstance(body, dict):
        params.update({k: v for k, v in body.items() if k not in params})
    elif body is not None:
        raise bad("body must be a form-encoded string")
    return BatchItem(method, version, parts[0], parts[1] if len(parts) > 1 else None, query, params)


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
        if fault.after and fault.kind in ("drop", "timeout"):
            await self.app(scope, receive, _unanswered)  # carried out (background tasks too), answer withheld
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


async def _unanswered(message: dict) -> None:
    """An ASGI ``send`` that delivers nothing: the app's answer to a request whose answer is lost."""


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
    tokenless: set = set()
    control_routes: list[Route] = []
    for surface in surfaces:
        handlers.update(surface.handlers)
        tokenless |= surface.tokenless
        control_routes += surface.control_routes
        surface.populate(state)

    async def dispatch(
        request: Request,
        version: str,
        node_id: str,
        edge: str | None,
        params: dict[str, Any],
        body: Any,
        token_value: str | None,
    ) -> Response:
        """One Graph call through the whole handler path: version, token, app usage, node, handler. Plain
        requests and each item of a batch come through here, so both are checked and counted alike."""
        state.count("requests")
        headers = {"facebook-api-version": version}
        req: GraphRequest | None = None
        try:
            if not VERSION.match(version):
                raise GraphError(2500, f"Unknown path components: /{version}", type="OAuthException")
            known = state.nodes.get(node_id)
            if (request.method, known.kind if known else None, edge) in tokenless:
                token = TokenInfo("")
            else:
                token = check_token(state, token_value)
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

    async def graph(request: Request) -> Response:
        try:
            params, body = await _params(request)
        except GraphError as exc:
            state.count("requests")
            state.count(f"error.{exc.code}")
            return exc.response({"facebook-api-version": request.path_params["version"]})
        return await dispatch(
            request,
            request.path_params["version"],
            request.path_params["node"],
            request.path_params.get("edge"),
            params,
            body,
            _token_from(request, params),
        )

    async def batch(request: Request) -> Response:
        """``POST /`` or ``POST /{version}/`` with ``batch=[{"method", "relative_url", "body"}, …]``."""
        version = request.path_params.get("version", DEFAULT_VERSION)
        try:
            params, _ = await _params(request)
            items = parse_batch(params.get("batch"))
            fallback = _token_from(request, params)
            if fallback is not None:
                check_token(state, fallback)  # a bad top-level token fails the whole batch, as at Meta
        except GraphError as exc:
            state.count("batch.rejected")
            return exc.response({"facebook-api-version": version})
        state.count("batch.requests")
        include_headers = str(params.get("include_headers", "true")).lower() != "false"
        answers: list[dict[str, Any] | None] = []
        for item in items:
            state.count("batch.items")
            answers.append(await run_item(request, version, item, fallback, include_headers))
        last_app_usage = next(
            (
                h["value"]
                for a in reversed(answers)
                if a
                for h in a.get("headers", ())
                if h["name"] == "x-app-usage"
            ),
            None,
        )
        out = {"facebook-api-version": version, "x-fb-trace-id": fbtrace_id()}
        if last_app_usage:
            out["x-app-usage"] = last_app_usage
        return JSONResponse(answers, headers=out)

    async def run_item(
        request: Request, version: str, item: BatchItem, fallback: str | None, include_headers: bool
    ) -> dict[str, Any] | None:
        """One batch item as Meta answers it: ``{"code", "headers", "body": "<json>"}``; ``None`` when it
        was not run (Meta's answer for items a timed-out batch never reached; here: an injected drop)."""
        item_version, node_id, edge = item.version or version, item.node, item.edge
        path = f"/{item_version}/{node_id}" + (f"/{edge}" if edge else "")
        with state.lock:
            fault = state.faults.take(path)
            if fault is None and state.faults.drop_rate and state.rng.random() < state.faults.drop_rate:
                fault = Fault(kind="drop")
            if fault is None and state.faults.error_rate and state.rng.random() < state.faults.error_rate:
                fault = Fault(kind="status")
        if fault is not None:
            state.count(f"fault.{fault.kind}")
            if fault.kind in ("drop", "timeout"):
                return None
            response: Response = GraphError(
                fault.code,
                fault.message,
                subcode=fault.subcode if fault.kind == "graph" else None,
                status=fault.status,
                is_transient=fault.kind == "status",
                type="OAuthException",
            ).response({"facebook-api-version": item_version})
        else:
            scope = {
                **request.scope,
                "method": item.method,
                "path": path,
                "raw_path": path.encode(),
                "query_string": item.query.encode(),
                "path_params": {},
            }
            sub = Request(scope)
            token = str(item.params.get("access_token") or "") or fallback
            response = await dispatch(sub, item_version, node_id, edge, item.params, None, token)
            if response.background is not None:
                await response.background()
        answer: dict[str, Any] = {"code": response.status_code, "body": bytes(response.body).decode()}
        if include_headers:
            answer["headers"] = [
                {"name": k, "value": v} for k, v in response.headers.items() if k.lower() != "content-length"
            ]
        return answer

    async def control_faults(request: Request) -> JSONResponse:
        """POST {"latency_ms": [lo, hi] | n, "error_rate": 0.1, "drop_rate": 0.1, "clear": true,
        "faults": [{"kind": "status"|"graph"|"timeout"|"drop", "path_contains", "times", "status", "code",
        "subcode", "message", "delay_seconds", "after"}]}. ``clear`` empties the queue and zeroes the rates."""
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
        "data_access_expires_in": seconds, "profile_id", "app_id"}: add a token the sandbox accepts (or
        rejects as expired)."""
        body = await request.json()
        expires_in = body.get("expires_in")
        data_access_in = body.get("data_access_expires_in")
        info = TokenInfo(
            str(body["token"]),
            type=body.get("type", "SYSTEM_USER"),
            scopes=tuple(body.get("scopes", ())),
            profile_id=body.get("profile_id"),
            expires_at=None if expires_in is None else time.time() + float(expires_in),
            data_access_expires_at=None if data_access_in is None else time.time() + float(data_access_in),
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
        Route("/", batch, methods=["POST"]),
        Route("/{version}/", batch, methods=["POST"]),
        Route("/{version}/{node}", graph, methods=["GET", "POST", "DELETE"]),
        Route("/{version}/{node}/{edge}", graph, methods=["GET", "POST", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return FaultInjector(app, state)
