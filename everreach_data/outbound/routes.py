"""Send endpoints: validate, check the policy window, queue, answer 202 (the ``send_outbound_messages`` job
sends). ``GET /api/v1/integrations/messages/{job_id}`` reports where a queued send got to.

An ``Idempotency-Key`` header makes a retried request return the job the first one queued."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response

from everreach_data.outbound.policy import PolicyViolation
from everreach_data.outbound.queue import IdempotencyConflict, job_state
from everreach_data.outbound.requests import (
    ChannelNotConfigured,
    InvalidRequest,
    MessengerSend,
    QueuedSend,
    WhatsAppSend,
    queue_messenger,
    queue_whatsapp,
)
from everreach_data.outbound.templates import TemplateRefused
from everreach_data.receiver.auth import Principal, Role
from everreach_data.receiver.errors import ApiError
from everreach_data.receiver.operation import Answer, Example, Link, Operation, api_route, reply

MAX_IDEMPOTENCY_KEY = 255
TAG = "messages"


class SendHeaders(BaseModel):
    idempotency_key: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                      max_length=MAX_IDEMPOTENCY_KEY)] | None = Field(
        None, alias="Idempotency-Key",
        description="the same key again (from the same caller) returns the job the first request queued; "
                    "with a different body it is a 409")


class JobPath(BaseModel):
    job_id: uuid.UUID = Field(description="the job_id a send answered with")


class JobError(BaseModel):
    code: int | None = Field(description="Meta's error code")
    subcode: int | None
    message: str | None
    fbtrace_id: str | None


class MessageStatus(BaseModel):
    """Where a queued send got to."""

    success: Literal[True] = True
    job_id: uuid.UUID
    status: str = Field(description="the job: queued, sending, sent, failed, unknown (Meta may or may not have "
                                    "it; never re-sent automatically) or cancelled")
    message_status: str | None = Field(description="the message: queued, sending, sent, delivered, read or failed")
    platform: str
    recipient_id: str
    thread_id: uuid.UUID
    message_id: str | None = Field(description="Meta's message id (mid / wamid), once sent")
    used_message_tag: bool
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None
    needs_operator: bool = Field(description="an unknown outcome nothing reconciled: only an operator re-queues it")
    error: JobError | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


_SEND_ERRORS = {
    409: "The Idempotency-Key was used before by this caller with a different body.",
    422: "Also: outside the policy window (`error.reason`, `error.window_closed_at`), a retired message tag, or "
         "(WhatsApp) a template the catalog does not have approved or whose body parameters do not match "
         "(`error.reason` template, `error.approved_templates`).",
    503: "The channel is not configured, or the database is unavailable (Retry-After).",
}
_ACCEPTED = {202: Answer(QueuedSend, "Queued: the send_outbound_messages job sends it",
                         {"Idempotent-Replayed": "true when an earlier request with this Idempotency-Key "
                                                 "queued the job"},
                         {"status": Link("message_status", {"job_id": "$response.body#/job_id"})})}


async def _queue(request: Request, principal: Principal, body: MessengerSend | WhatsAppSend, key: str | None,
                 queue_fn) -> Response:
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
    return reply(queued.answer(), 202, headers)


async def messenger_send(request: Request, principal: Principal, headers: SendHeaders,
                         body: MessengerSend) -> Response:
    """Checks the 24-hour window (and the 7-day human-agent window) when the request arrives, and queues the
    message with the thread it belongs to; Meta's answer comes later, at GET /api/v1/integrations/messages/{job_id}."""
    return await _queue(request, principal, body, headers.idempotency_key, queue_messenger)


async def whatsapp_send(request: Request, principal: Principal, headers: SendHeaders, body: WhatsAppSend) -> Response:
    """Free-form messages only inside 24 hours of the customer's last message; templates any time, if the
    template catalog has them approved and they get the body parameters they take. `to` is a phone number or
    the user's business-scoped user id."""
    return await _queue(request, principal, body, headers.idempotency_key, queue_whatsapp)


async def message_status(request: Request, principal: Principal, path: JobPath) -> Response:
    """A job is visible to the caller who queued it, and to admins."""
    async with request.app.state.pool.connection() as conn:
        job = await job_state(conn, path.job_id)
    if job is None or (job["requested_by"] != principal.sub and not principal.is_admin):
        raise ApiError(404, "no such job", field="job_id")
    error = None
    if job["error_code"] is not None or job["error_message"]:
        error = JobError(code=job["error_code"], subcode=job["error_subcode"], message=job["error_message"],
                         fbtrace_id=job["fbtrace_id"])
    return reply(MessageStatus(
        job_id=job["job_id"], status=job["status"], message_status=job["message_status"], platform=job["platform"],
        recipient_id=job["recipient_id"], thread_id=job["thread_id"], message_id=job["platform_message_id"],
        used_message_tag=job["tag"] is not None, attempts=job["attempts"], max_attempts=job["max_attempts"],
        next_attempt_at=job["next_attempt_at"] if job["status"] == "queued" else None,
        needs_operator=job["flagged_at"] is not None, error=error, created_at=job["created_at"],
        sent_at=job["sent_at"], delivered_at=job["delivered_at"], read_at=job["read_at"]))


MESSENGER_EXAMPLES = {
    "text_with_quick_replies": Example("The runbook's Messenger message with quick replies", {
        "platform": "messenger", "recipient_id": "1234567890", "message_type": "text",
        "text": "Thanks for reaching out! 👋",
        "quick_replies": [{"content_type": "text", "title": "Help", "payload": "HELP"},
                          {"content_type": "text", "title": "Pricing", "payload": "PRICING"}]}),
    "test_message": Example("The runbook's test message", {
        "platform": "messenger", "recipient_id": "1234567890", "text": "Test message"}),
}
WHATSAPP_EXAMPLES = {
    "template": Example("A template (outside the 24-hour window)", {
        "to": "12177996721", "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}}}),
    "text": Example("Free-form text (inside the 24-hour window)", {
        "to": "12177996721", "type": "text", "message": "Your order is on the way 🚚"}),
}

routes = [
    api_route("POST", "/api/v1/integrations/messenger/send", messenger_send, Operation(
        summary="Queue a Messenger or Instagram message", tag=TAG, role=Role.OPERATOR, headers=SendHeaders,
        body=MessengerSend, examples=MESSENGER_EXAMPLES, answers=_ACCEPTED, errors=_SEND_ERRORS)),
    api_route("POST", "/api/v1/integrations/whatsapp/send", whatsapp_send, Operation(
        summary="Queue a WhatsApp message", tag=TAG, role=Role.OPERATOR, headers=SendHeaders, body=WhatsAppSend,
        examples=WHATSAPP_EXAMPLES, answers=_ACCEPTED, errors=_SEND_ERRORS)),
    api_route("GET", "/api/v1/integrations/messages/{job_id}", message_status, Operation(
        summary="The state of a queued send, Meta's message id and any error", tag=TAG, role=Role.OPERATOR,
        path=JobPath, answers={200: Answer(MessageStatus, "The job and its message")},
        errors={404: "No such job, or not one this caller queued.",
                503: "The database is unavailable (Retry-After)."})),
]
