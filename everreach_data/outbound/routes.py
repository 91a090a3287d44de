"""Send endpoints: validate, check the policy window, queue, answer 202 (the ``send_outbound_messages`` job
sends). ``GET /api/v1/integrations/messages/{job_id}`` reports where a queued send got to.

An ``Idempotency-Key`` header makes a retried request return the job the first one queued."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_data.outbound.policy import PolicyViolation
from everreach_data.outbound.queue import IdempotencyConflict, job_state
from everreach_data.outbound.requests import (
    ChannelNotConfigured,
    InvalidRequest,
    MessengerSend,
    WhatsAppSend,
    queue_messenger,
    queue_whatsapp,
)
from everreach_data.outbound.templates import TemplateRefused
from everreach_data.receiver.auth import authenticate
from everreach_data.receiver.errors import ApiError, parse_json

MAX_IDEMPOTENCY_KEY = 255


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key.strip()) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                       field="Idempotency-Key")
    return key.strip() if key else None


async def _queue(request: Request, model: type, queue_fn) -> JSONResponse:
    principal = authenticate(request)
    body = await parse_json(request, model)
    key = _idempotency_key(request)
    try:
        async with request.app.state.pool.connection() as conn:
            queued = await queue_fn(conn, request.app.state.channels, body, requested_by=principal.sub,
                                    idempotency_key=key)
    except InvalidRequest as exc:
        raise ApiError(422, f"{exc.field}: {exc}", field=exc.field) from exc
    except TemplateRefused as exc:
        raise ApiError(422, f"{exc.field}: {exc}", field=exc.field, reason="template",
                       approved_templates=exc.approved) from exc
    except PolicyViolation as exc:
        extra: dict[str, Any] = {
            "reason": "policy" if exc.field in ("tag", "human_agent") else "outside_messaging_window"}
        if exc.window_closed_at:
            extra["window_closed_at"] = exc.window_closed_at.isoformat()
        raise ApiError(422, str(exc), field=exc.field, **extra) from exc
    except IdempotencyConflict as exc:
        raise ApiError(409, str(exc), field="Idempotency-Key") from exc
    except ChannelNotConfigured as exc:
        raise ApiError(503, str(exc)) from exc
    headers = {} if queued.created else {"Idempotent-Replayed": "true"}
    return JSONResponse(queued.response(), status_code=202, headers=headers)


async def messenger_send(request: Request) -> JSONResponse:
    """
    summary: Queue a Messenger or Instagram message (202); 422 outside the policy window
    security: [{bearer: []}]
    """
    return await _queue(request, MessengerSend, queue_messenger)


async def whatsapp_send(request: Request) -> JSONResponse:
    """
    summary: Queue a WhatsApp message (202); free-form outside 24 h is refused (use a template)
    security: [{bearer: []}]
    """
    return await _queue(request, WhatsAppSend, queue_whatsapp)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def message_status(request: Request) -> JSONResponse:
    """
    summary: State of a queued send, Meta's message id and any error
    security: [{bearer: []}]
    """
    principal = authenticate(request)
    try:
        job_id = uuid.UUID(request.path_params["job_id"])
    except ValueError as exc:
        raise ApiError(404, "no such job", field="job_id") from exc
    async with request.app.state.pool.connection() as conn:
        job = await job_state(conn, job_id)
    if job is None or (job["requested_by"] != principal.sub and principal.role != "service_role"):
        raise ApiError(404, "no such job", field="job_id")
    error = None
    if job["error_code"] is not None or job["error_message"]:
        error = {"code": job["error_code"], "subcode": job["error_subcode"], "message": job["error_message"],
                 "fbtrace_id": job["fbtrace_id"]}
    return JSONResponse({
        "success": True, "job_id": str(job["job_id"]), "status": job["status"],
        "message_status": job["message_status"], "platform": job["platform"],
        "recipient_id": job["recipient_id"], "thread_id": str(job["thread_id"]),
        "message_id": job["platform_message_id"], "used_message_tag": job["tag"] is not None,
        "attempts": job["attempts"], "max_attempts": job["max_attempts"],
        "next_attempt_at": _iso(job["next_attempt_at"]) if job["status"] == "queued" else None,
        "needs_operator": job["flagged_at"] is not None, "error": error,
        "created_at": _iso(job["created_at"]), "sent_at": _iso(job["sent_at"]),
        "delivered_at": _iso(job["delivered_at"]), "read_at": _iso(job["read_at"]),
    })


routes: list[Route] = [
    Route("/api/v1/integrations/messenger/send", messenger_send, methods=["POST"]),
    Route("/api/v1/integrations/whatsapp/send", whatsapp_send, methods=["POST"]),
    Route("/api/v1/integrations/messages/{job_id}", message_status, methods=["GET"]),
]
