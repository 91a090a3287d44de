"""One error shape for every 4xx/5xx the receiver returns: ``{"error": {"message", "field"?, ...}}``."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

#: How long a request waits for a database connection before it is answered 503 (the pool's timeout).
DATABASE_WAIT_SECONDS = 5.0
#: What a 503 tells the caller: try again in this many seconds (Meta retries webhooks on its own schedule).
RETRY_AFTER_SECONDS = 5


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


def error_response(status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse(ApiError(status, message, field=field, **extra).body(), status_code=status, headers=headers)


def validation_error(exc: ValidationError) -> ApiError:
    """A 422 naming the first bad field, with every problem listed."""
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()
    ]
    first = problems[0]
    return ApiError(422, f"{first['field']}: {first['message']}", field=first["field"], problems=problems)


async def parse_json(request: Request, model):
    """The request body validated by a pydantic ``model``; clear 400/422 errors otherwise."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "request body is not valid JSON") from exc
        raise validation_error(exc) from exc


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Postgres unreachable, restarting, or a pooled connection it closed: 503 in the one error shape, so the
    caller retries (a send with the same Idempotency-Key gets the job its first try queued, if it did), never a
    bare 500. The pool replaces the broken connection."""
    log.warning("%s %s: database unavailable (%s: %s); answering 503", request.method, request.url.path,
                type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return error_response(503, "the database is unavailable; retry later",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
