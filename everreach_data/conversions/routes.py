"""``POST /api/v1/integrations/meta/conversions``: one server event, hashed, stored, then sent.

The event is stored (hashed identifiers only) before Meta is called, so nothing accepted is lost: if Meta
does not answer, the answer is 202 and the ``meta_conversion_event`` asset sends it on its next run.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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
    ConversionInputError,
    ServerEvent,
    custom_data,
    normalize_user_data,
    send_events,
    validate_event,
)
from everreach_data.meta.client import GraphClient, RetryPolicy
from everreach_data.meta.errors import ErrorKind, GraphAPIError
from everreach_data.receiver.auth import authenticate
from everreach_data.receiver.errors import ApiError, parse_json

#: Meta's advice for CAPI: a 1.5 s timeout; most answers come in under 600 ms.
CAPI_TIMEOUT_SECONDS = 1.5


class ConversionRequest(BaseModel):
    """The runbook's request body. Identifiers arrive raw and are hashed before anything is stored."""

    model_config = ConfigDict(extra="forbid")

    event_name: str = Field(min_length=1, max_length=100)
    event_time: int | datetime | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200)
    action_source: str = "website"
    event_source_url: str | None = None
    user_id: uuid.UUID | None = None
    email: str | list[str] | None = None
    phone: str | list[str] | None = None
    first_name: str | None = None
    last_name: str | None = None
    gender: str | None = None
    date_of_birth: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    external_id: str | None = None
    client_ip_address: str | None = None
    client_user_agent: str | None = None
    fbp: str | None = None
    fbc: str | None = None
    value: float | None = None
    currency: str | None = None
    content_ids: list[str] | None = None
    content_type: str | None = None
    order_id: str | None = None
    test_event_code: str | None = None

    def server_event(self) -> ServerEvent:
        if isinstance(self.event_time, datetime):
            event_time = int(self.event_time.timestamp())
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


async def send_conversion(request: Request) -> JSONResponse:
    """Send one server event to Meta's Conversions API.
    ---
    summary: Send a conversion event (hashed before it is stored or sent)
    security: [{bearer: []}]
    responses:
      200: {description: "Meta received the event"}
      202: {description: "Stored; Meta did not answer, it will be sent by the meta_conversion_event asset"}
      401: {description: "Missing, bad or expired token"}
      422: {description: "A field is unusable (named in error.field), or the event is older than 7 days"}
    """
    authenticate(request)
    body = await parse_json(request, ConversionRequest)
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
    async with request.app.state.pool.connection() as conn:
        stored = await (await conn.execute(STORE_EVENTS, store_params(pixel_id, [row]))).fetchone()
        if stored is None:  # the same event_id again: answer as before, never send twice
            status, received, trace, error = await (await conn.execute(EXISTING, {
                "pixel": pixel_id, "event_name": event.event_name, "event_id": event.event_id})).fetchone()
            return JSONResponse({"success": status != "failed", "duplicate": True, "status": status,
                                 "event_id": event.event_id, "events_received": received, "fbtrace_id": trace,
                                 "pixel_id": pixel_id, "event_name": event.event_name, "error": error})
        await conn.execute(LOG_USER_EVENT, row)
    ids = [stored[0]]

    try:  # the asset's batch sender, on a worker thread: a sync client, so both share one send path
        [result] = await run_in_threadpool(send_events, _client(request), pixel_id, [event],
                                           test_event_code=body.test_event_code)
    except GraphAPIError as exc:
        if exc.retryable:
            return JSONResponse({"success": True, "status": "pending", "event_id": event.event_id,
                                 "pixel_id": pixel_id, "event_name": event.event_name,
                                 "message": "Meta did not answer in time; the event is stored and the "
                                            "meta_conversion_event asset will send it"}, status_code=202)
        async with request.app.state.pool.connection() as conn:
            await conn.execute(MARK_FAILED, {"ids": ids, "error": str(exc), "trace": exc.fbtrace_id})
        status = 422 if exc.kind in (ErrorKind.INVALID, ErrorKind.TOO_MUCH_DATA) else 502
        raise ApiError(status, f"Meta rejected the event: {exc.message}", meta_code=exc.code,
                       meta_subcode=exc.subcode, fbtrace_id=exc.fbtrace_id) from exc
    async with request.app.state.pool.connection() as conn:
        await conn.execute(MARK_SENT, {"ids": ids, "received": result.events_received, "trace": result.fbtrace_id})
    return JSONResponse({"success": True, "events_received": result.events_received,
                         "fbtrace_id": result.fbtrace_id, "pixel_id": pixel_id, "event_name": event.event_name,
                         "event_id": event.event_id, "test_mode": bool(body.test_event_code)})


routes = [Route("/api/v1/integrations/meta/conversions", send_conversion, methods=["POST"])]
