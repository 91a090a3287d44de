"""``POST /api/v1/integrations/meta/conversions``: one server event, hashed, stored, then sent.

The event is stored (hashed identifiers only) before Meta is called, so nothing accepted is lost: if Meta
does not answer, the answer is 202 and the ``meta_conversion_event`` asset sends it on its next run.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from everreach_data.conversions.store import (
    EXISTING,
    LOG_USER_EVENT,
    MARK_FAILED,
    MARK_SENT,
    STORE_EVENTS,
    store_params,
    stored_row,
)
from everreach_data.meta.capi import (
    ACTION_SOURCES,
    ConversionInputError,
    ServerEvent,
    custom_data,
    normalize_user_data,
    send_events,
    validate_event,
)
from everreach_data.meta.client import GraphClient, RetryPolicy
from everreach_data.meta.errors import ErrorKind, GraphAPIError
from everreach_data.receiver.auth import Principal, Role
from everreach_data.receiver.errors import ApiError
from everreach_data.receiver.operation import Answer, Example, Operation, api_route, reply

#: Meta's advice for CAPI: a 1.5 s timeout; most answers come in under 600 ms.
CAPI_TIMEOUT_SECONDS = 1.5


#: Longest identifier, cookie or name accepted (Meta's own are far shorter; a hash is 64 characters).
MAX_IDENTIFIER = 256
#: The largest |value| ``meta_conversion_event.value`` (numeric(18, 4)) holds.
MAX_VALUE = 1e13

Identifier = Annotated[str, StringConstraints(max_length=MAX_IDENTIFIER)]
Identifiers = Identifier | Annotated[list[Identifier], Field(max_length=20)]


class ConversionRequest(BaseModel):
    """The runbook's request body. Identifiers arrive raw and are hashed before anything is stored."""

    model_config = ConfigDict(extra="forbid")

    event_name: str = Field(min_length=1, max_length=100, description="a standard event (Purchase, Lead, …) or "
                                                                       "a custom one")
    event_time: Annotated[int, Field(ge=0, le=10**11)] | datetime | None = Field(
        None, description="unix seconds or ISO 8601; default now; at most 7 days old")
    event_id: str | None = Field(default=None, min_length=1, max_length=200,
                                 description="Meta's dedupe key; the same event_id again is answered from the "
                                             "first result and never sent twice (default: a new one)")
    action_source: Literal[tuple(sorted(ACTION_SOURCES))] = "website"  # type: ignore[valid-type]
    event_source_url: str | None = Field(None, max_length=2048, description="required for website events")
    user_id: uuid.UUID | None = Field(None, description="the app's user (auth.users), logged with the event")
    email: Identifiers | None = None
    phone: Identifiers | None = None
    first_name: Identifier | None = None
    last_name: Identifier | None = None
    gender: Identifier | None = None
    date_of_birth: Identifier | None = None
    city: Identifier | None = None
    state: Identifier | None = None
    zip: Identifier | None = None
    country: Identifier | None = None
    external_id: Identifier | None = None
    client_ip_address: Identifier | None = Field(None, description="sent to Meta, never stored")
    client_user_agent: str | None = Field(None, max_length=2048, description="required for website events")
    fbp: Identifier | None = None
    fbc: Identifier | None = None
    value: float | None = Field(None, ge=-MAX_VALUE, le=MAX_VALUE)
    currency: str | None = Field(None, max_length=16, description="ISO 4217, e.g. USD (needed with a value)")
    content_ids: list[Identifier] | None = Field(None, max_length=200)
    content_type: str | None = Field(None, max_length=32, description="product or product_group")
    order_id: Identifier | None = None
    test_event_code: str | None = Field(None, max_length=64, description="Events Manager's Test Events code")

    def server_event(self) -> ServerEvent:
        if isinstance(self.event_time, datetime):  # without an offset, UTC (not the server's zone)
            moment = self.event_time if self.event_time.tzinfo else self.event_time.replace(tzinfo=UTC)
            event_time = int(moment.timestamp())
        else:
            event_time = int(self.event_time if self.event_time is not None else time.time())
        user = normalize_user_data({
            "em": self.email, "ph": self.phone, "fn": self.first_name, "ln": self.last_name, "ge": self.gender,
            "db": self.date_of_birth, "ct": self.city, "st": self.state, "zp": self.zip, "country": self.country,
            "external_id": self.external_id, "client_ip_address": self.client_ip_address,
            "client_user_agent": self.client_user_agent, "fbp": self.fbp, "fbc": self.fbc,
        })
        return ServerEvent(
            event_name=self.event_name, event_time=event_time, event_id=self.event_id or uuid.uuid4().hex,
            action_source=self.action_source, user_data=user,
            custom_data=custom_data(value=self.value, currency=self.currency, content_ids=self.content_ids,
                                    content_type=self.content_type, order_id=self.order_id),
            event_source_url=self.event_source_url,
        )


# Field names in our request for Meta's user_data keys, so a 422 names what the caller sent.
REQUEST_FIELD = {"em": "email", "ph": "phone", "fn": "first_name", "ln": "last_name", "ge": "gender",
                 "db": "date_of_birth", "ct": "city", "st": "state", "zp": "zip"}

def _client(request: Request) -> GraphClient:
    """The app's Conversions API client, made on first use (one connection pool for every request)."""
    state = request.app.state
    if getattr(state, "capi_client", None) is None:
        state.capi_client = GraphClient(
            state.settings.graph_base_url, state.settings.secret("META_CONVERSIONS_API_TOKEN"),
            timeout=CAPI_TIMEOUT_SECONDS, retry=RetryPolicy(max_attempts=2, backoff_base=0.2))
        state.on_shutdown.append(state.capi_client.close)
    return state.capi_client


class ConversionSent(BaseModel):
    """Meta received the event."""

    success: Literal[True] = True
    events_received: int
    fbtrace_id: str | None
    pixel_id: str
    event_name: str
    event_id: str
    test_mode: bool = Field(description="sent with a test_event_code")


class ConversionRepeated(BaseModel):
    """This event_id was received before: the first result, and nothing sent again."""

    success: bool = Field(description="false when the first attempt failed")
    duplicate: Literal[True] = True
    status: str = Field(description="pending, sent or failed")
    event_id: str
    events_received: int | None
    fbtrace_id: str | None
    pixel_id: str
    event_name: str
    error: str | None


class ConversionPending(BaseModel):
    """Stored; Meta did not answer in time, and the meta_conversion_event asset will send it."""

    success: Literal[True] = True
    status: Literal["pending"] = "pending"
    event_id: str
    pixel_id: str
    event_name: str
    message: str


async def send_conversion(request: Request, principal: Principal, body: ConversionRequest) -> Response:
    """Identifiers are normalized and SHA-256 hashed by Meta's rules before anything is stored; the client IP
    is sent but never stored. The event is stored first, then sent, so nothing accepted is lost."""
    settings = request.app.state.settings
    pixel_id = settings.META_PIXEL_ID
    if not pixel_id or not settings.secret("META_CONVERSIONS_API_TOKEN"):
        raise ApiError(503, "the Conversions API is not configured: set META_PIXEL_ID and "
                            "META_CONVERSIONS_API_TOKEN")
    try:
        event = body.server_event()
        validate_event(event)
    except ConversionInputError as exc:
        field = REQUEST_FIELD.get(exc.field, exc.field)
        raise ApiError(422, f"{field}: {exc.message}", field=field) from exc

    row = stored_row(event, user_id=body.user_id, test_event_code=body.test_event_code)
    try:
        async with request.app.state.pool.connection() as conn:
            stored = await (await conn.execute(STORE_EVENTS, store_params(pixel_id, [row]))).fetchone()
            if stored is None:  # the same event_id again: answer as before, never send twice
                status, received, trace, error = await (await conn.execute(EXISTING, {
                    "pixel": pixel_id, "event_name": event.event_name, "event_id": event.event_id})).fetchone()
                return reply(ConversionRepeated(
                    success=status != "failed", status=status, event_id=event.event_id, events_received=received,
                    fbtrace_id=trace, pixel_id=pixel_id, event_name=event.event_name, error=error))
            await conn.execute(LOG_USER_EVENT, row)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise ApiError(422, "user_id: no such user", field="user_id") from exc
    ids = [stored[0]]

    try:  # the asset's batch sender, on a worker thread: a sync client, so both share one send path
        [result] = await run_in_threadpool(send_events, _client(request), pixel_id, [event],
                                           test_event_code=body.test_event_code)
    except GraphAPIError as exc:
        if exc.retryable:
            return reply(ConversionPending(
                event_id=event.event_id, pixel_id=pixel_id, event_name=event.event_name,
                message="Meta did not answer in time; the event is stored and the meta_conversion_event asset "
                        "will send it"), 202)
        async with request.app.state.pool.connection() as conn:
            await conn.execute(MARK_FAILED, {"ids": ids, "error": str(exc), "trace": exc.fbtrace_id})
        status = 422 if exc.kind in (ErrorKind.INVALID, ErrorKind.TOO_MUCH_DATA) else 502
        raise ApiError(status, f"Meta rejected the event: {exc.message}", meta_code=exc.code,
                       meta_subcode=exc.subcode, fbtrace_id=exc.fbtrace_id) from exc
    async with request.app.state.pool.connection() as conn:
        await conn.execute(MARK_SENT, {"ids": ids, "received": result.events_received, "trace": result.fbtrace_id})
    return reply(ConversionSent(
        events_received=result.events_received, fbtrace_id=result.fbtrace_id, pixel_id=pixel_id,
        event_name=event.event_name, event_id=event.event_id, test_mode=bool(body.test_event_code)))


EXAMPLES = {"purchase": Example("The runbook's Purchase event", {
    "event_name": "Purchase", "event_source_url": "https://your.site/thank-you", "action_source": "website",
    "email": "user@example.com", "phone": "+12177996721", "client_ip_address": "203.0.113.7",
    "client_user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "fbp": "fb.1.1596403881668.1116446470",
    "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890", "value": 29.99, "currency": "USD",
    "content_ids": ["product_123"], "content_type": "product", "test_event_code": "TEST12345"})}

routes = [api_route("POST", "/api/v1/integrations/meta/conversions", send_conversion, Operation(
    summary="Send a conversion event to Meta (hashed before it is stored or sent)", tag="conversions",
    role=Role.ANALYST, body=ConversionRequest, examples=EXAMPLES,
    answers={200: Answer(ConversionSent | ConversionRepeated, "Meta received the event, or this event_id was "
                                                              "received before (duplicate: true)"),
             202: Answer(ConversionPending, "Stored; Meta did not answer, the meta_conversion_event asset will "
                                            "send it")},
    errors={422: "Also: a field Meta's rules refuse, an event older than 7 days, or one Meta rejected "
                 "(`error.meta_code`).",
            502: "Meta refused the request for another reason (e.g. an expired token): `error.meta_code`.",
            503: "The Conversions API is not configured, or the database is unavailable (Retry-After)."}))]
