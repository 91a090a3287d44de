"""One error shape for every 4xx/5xx the receiver returns: ``{"success": false, "error": {"message",
"field"?, ...}}``, documented by :class:`ErrorResponse` and produced by :class:`ApiError`.

Nothing escapes as a plain-text 500: an unexpected exception is logged with a request id and answered in
the same shape with that id, and a database that cannot be reached is a 503 the caller may retry.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal

import psycopg
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

#: How long a caller should wait before retrying a 503.
RETRY_AFTER_SECONDS = 5


class Problem(BaseModel):
    field: str = Field(description="dotted path of the offending input, e.g. quick_replies.0.title")
    message: str


class ErrorDetail(BaseModel):
    """What went wrong. ``field`` names the input to fix when one input is at fault; other members depend on
    the error (``required_role`` on 403, ``reason`` and ``window_closed_at`` on a policy 422, Meta's codes
    when Meta refused, ``request_id`` on 500)."""

    model_config = ConfigDict(extra="allow")
    message: str
    field: str | None = None
    problems: list[Problem] | None = Field(None, description="every validation problem, the first one in field")
    required_role: str | None = None
    reason: Literal["policy", "outside_messaging_window"] | None = None
    window_closed_at: str | None = None
    meta_code: int | None = None
    meta_subcode: int | None = None
    fbtrace_id: str | None = None
    request_id: str | None = Field(None, description="also in the receiver's log, next to the traceback")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    success: Literal[False] = False
    error: ErrorDetail


class ApiError(HTTPException):
    """Raise from an endpoint to answer ``status`` with a message (and the offending field, if any)."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.detail}
        if self.field:
            err["field"] = self.field
        err.update(self.extra)
        return {"success": False, "error": err}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def validation_error(exc: ValidationError, *, prefix: str = "") -> ApiError:
    """A 422 naming the first bad field, with every problem listed."""
    problems = [{"field": prefix + ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in exc.errors(include_url=False)]
    first = problems[0]
    return ApiError(422, f"{first['field']}: {first['message']}", field=first["field"], problems=problems)


def unexpected(request_id: str) -> ApiError:
    return ApiError(500, f"unexpected error (request id {request_id}); nothing was changed that the answer "
                         "does not say, and the receiver's log has the details", request_id=request_id,
                    headers={"X-Request-Id": request_id})


def new_request_id() -> str:
    return uuid.uuid4().hex


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404/405 and the like, in our shape."""
    assert isinstance(exc, HTTPException)
    return ApiError(exc.status_code, str(exc.detail), headers=exc.headers).response()


async def database_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    """Postgres down or the pool exhausted: nothing was stored, and the same request may be sent again."""
    log.warning("%s %s: database unavailable (%s: %s)", request.method, request.url.path, type(exc).__name__, exc)
    return ApiError(503, "the database is unavailable; nothing was stored, retry later",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)}).response()


#: Registered on the app: every exception a route may raise on purpose, and the database's failures.
EXCEPTION_HANDLERS = {
    ApiError: api_error_handler,
    HTTPException: http_error_handler,
    PoolTimeout: database_unavailable_handler,
    psycopg.OperationalError: database_unavailable_handler,
}


class UnexpectedErrors:
    """ASGI middleware: an exception no handler took is logged with a request id and answered as a JSON 500
    with that id (Starlette's own answer would be plain text). Not re-raised: the log line is the record."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            request_id = new_request_id()
            log.exception("unexpected error answering %s %s (request id %s)", scope.get("method"),
                          scope.get("path"), request_id)
            if not started:
                await unexpected(request_id).response()(scope, receive, send)
