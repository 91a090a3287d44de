"""``POST /api/v1/integrations/meta/conversions``: one server event, hashed, stored, then sent.

The event is stored (hashed identifiers only) before Meta is called, so nothing accepted is lost: if Meta
does not answer, the answer is 202 and the ``meta_conversion_event`` asset sends it on its next run.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_data.meta.capi import (
    STORABLE_FIELDS,
    ConversionInputError,
    ServerEvent,
    batch_result,
    custom_data,
    normalize_user_data,
    request_body,
    validate_event,
)
from everreach_data.meta.client import AsyncGraphClient, RetryPolicy
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

STORE_EVENT = """
INSERT INTO meta_conversion_event (pixel_id, event_id, event_name, event_time, action_source, event_source_url,
                                   user_id, user_data, custom_data, value, currency, test_event_code)
VALUES (%(pixel_id)s, %(event_id)s, %(event_name)s, to_timestamp(%(event_time)s), %(action_source)s,
        %(event_source_url)s, %(user_id)s, %(user_data)s, %(custom_data)s, %(value)s, %(currency)s,
        %(test_event_code)s)
ON CONFLICT (pixel_id, event_name, event_id) DO NOTHING
RETURNING conversion_event_id
"""
LOG_USER_EVENT = """
INSERT INTO user_event (user_id, event_type, source, occurred_at, properties)
VALUES (%(user_id)s, 'meta_conversion', 'conversions_api', to_timestamp(%(event_time)s),
        jsonb_build_object('event_name', %(event_name)s::text, 'event_id', %(event_id)s::text,
                           'value', %(value)s::numeric, 'currency', %(currency)s::text))
"""
EXISTING = """
SELECT status, events_received, fbtrace_id, error_message FROM meta_conversion_event
WHERE pixel_id = %s AND event_name = %s AND event_id = %s
"""
MARK_SENT = """
UPDATE meta_conversion_event SET status = 'sent', events_received = %s, fbtrace_id = %s, sent_at = now(),
       error_message = NULL
WHERE conversion_event_id = %s
"""
MARK_FAILED = """
UPDATE meta_conversion_event SET status = 'failed', fbtrace_id = %s, error_message = %s
WHERE conversion_event_id = %s
"""


def _graph_client(request: Request) -> AsyncGraphClient:
    state = request.app.state
    if getattr(state, "capi_client", None) is None:
        settings = state.settings
        state.capi_client = AsyncGraphClient(
            settings.graph_base_url, settings.secret("META_CONVERSIONS_API_TOKEN"), timeout=CAPI_TIMEOUT_SECONDS,
            retry=RetryPolicy(max_attempts=2, backoff_base=0.2))
        state.on_shutdown.append(state.capi_client.aclose)
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

    row: dict[str, Any] = {
        "pixel_id": pixel_id, "event_id": event.event_id, "event_name": event.event_name,
        "event_time": event.event_time, "action_source": event.action_source,
        "event_source_url": event.event_source_url, "user_id": body.user_id,
        "user_data": Jsonb({k: v for k, v in event.user_data.items() if k in STORABLE_FIELDS}),
        "custom_data": Jsonb(event.custom_data), "value": body.value,
        "currency": event.custom_data.get("currency"), "test_event_code": body.test_event_code,
    }
    async with request.app.state.pool.connection() as conn:
        stored = await (await conn.execute(STORE_EVENT, row)).fetchone()
        if stored is None:  # the same event_id again: answer as before, never send twice
            status, received, trace, error = await (await conn.execute(
                EXISTING, (pixel_id, event.event_name, event.event_id))).fetchone()
            return JSONResponse({"success": status != "failed", "duplicate": True, "status": status,
                                 "event_id": event.event_id, "events_received": received, "fbtrace_id": trace,
                                 "pixel_id": pixel_id, "event_name": event.event_name, "error": error})
        await conn.execute(LOG_USER_EVENT, row)
    conversion_id = stored[0]

    client = _graph_client(request)
    try:
        answer = await client.post(f"{pixel_id}/events", json=request_body([event], body.test_event_code))
    except GraphAPIError as exc:
        if exc.retryable:
            return JSONResponse({"success": True, "status": "pending", "event_id": event.event_id,
                                 "pixel_id": pixel_id, "event_name": event.event_name,
                                 "message": "Meta did not answer in time; the event is stored and the "
                                            "meta_conversion_event asset will send it"}, status_code=202)
        async with request.app.state.pool.connection() as conn:
            await conn.execute(MARK_FAILED, (exc.fbtrace_id, str(exc), conversion_id))
        status = 422 if exc.kind in (ErrorKind.INVALID, ErrorKind.TOO_MUCH_DATA) else 502
        raise ApiError(status, f"Meta rejected the event: {exc.message}", meta_code=exc.code,
                       meta_subcode=exc.subcode, fbtrace_id=exc.fbtrace_id) from exc
    result = batch_result([event], answer)
    async with request.app.state.pool.connection() as conn:
        await conn.execute(MARK_SENT, (result.events_received, result.fbtrace_id, conversion_id))
    return JSONResponse({"success": True, "events_received": result.events_received,
                         "fbtrace_id": result.fbtrace_id, "pixel_id": pixel_id, "event_name": event.event_name,
                         "event_id": event.event_id, "test_mode": bool(body.test_event_code)})


routes = [Route("/api/v1/integrations/meta/conversions", send_conversion, methods=["POST"])]
