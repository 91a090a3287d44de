"""``/api/webhooks/meta``: Meta's verification handshake and the POST intake.

The POST hot path does only what must happen before Meta gets its 200: read the raw body (capped), verify
``X-Hub-Signature-256`` over those exact bytes in constant time, and commit it (:mod:`.intake`). Parsing the
events is the ``process_webhook_events`` job's business.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from everreach_data.inbox.intake import BodyNotStorable, GroupCommitWriter, NotAnEvent
from everreach_data.receiver.errors import ApiError, new_request_id, unexpected
from everreach_data.receiver.inputs import read_capped
from everreach_data.receiver.operation import Answer, ApiRoute, Operation, PlainText, api_route

log = logging.getLogger(__name__)

PATH = "/api/webhooks/meta"
SIGNATURE_HEADER = "x-hub-signature-256"


class HubQuery(BaseModel):
    """Meta's verification request (any other parameter is ignored: the protocol is Meta's)."""

    hub_mode: str | None = Field(None, alias="hub.mode", description="subscribe")
    hub_challenge: str | None = Field(None, alias="hub.challenge", description="echoed back on success")
    hub_verify_token: str | None = Field(None, alias="hub.verify_token",
                                         description="must equal META_WEBHOOK_VERIFY_TOKEN")


async def verify_subscription(request: Request, query: HubQuery) -> Response:
    """Meta's GET handshake: echo ``hub.challenge`` when mode is subscribe and the token matches."""
    expected = request.app.state.settings.secret("META_WEBHOOK_VERIFY_TOKEN")
    token = query.hub_verify_token or ""
    if (query.hub_mode != "subscribe" or not expected
            or not hmac.compare_digest(token.encode(), expected.encode())):
        raise ApiError(403, "verification failed: hub.mode must be subscribe and hub.verify_token must match")
    if not query.hub_challenge:
        raise ApiError(400, "hub.challenge is required", field="hub.challenge")
    return PlainTextResponse(query.hub_challenge)


class WebhookEvent(BaseModel):
    """What Meta posts: an ``object`` (page, instagram, whatsapp_business_account, …) and its ``entry``
    list. Stored as it is; the process_webhook_events job parses it."""

    model_config = ConfigDict(extra="allow")
    object: str = Field(min_length=1)
    entry: list[dict[str, Any]] | None = None


class SignatureHeader(BaseModel):
    signature: str = Field(alias="X-Hub-Signature-256",
                           description="sha256=<HMAC-SHA256 of the raw body with META_APP_SECRET, hex>")


_OK_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"14")]


class WebhookIntake:
    """POST handler as a bare ASGI app: this is the hot path, so it skips Request/Response objects, and
    holds what it needs itself rather than looking it up in the app's state on every request.

    Verify, store, then 200. 401 unsigned, 403 bad signature, 413 too big, 400 not JSON, 503 no DB.
    """

    def __init__(self, pool: AsyncConnectionPool, app_secret: bytes, max_body_bytes: int) -> None:
        self._writer = GroupCommitWriter(pool)
        # Keyed once: copying a keyed HMAC costs about half of keying a new one per request.
        self._keyed_hmac = hmac.new(app_secret, digestmod=hashlib.sha256)
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        try:
            stored = self._writer.store(*await self._verified_body(scope, receive))
            try:
                await stored  # the one place a request waits: see GroupCommitWriter.store
            except Exception as exc:  # noqa: BLE001 - every failure to store gets its own answer
                raise _not_stored(exc) from None
        except ApiError as err:
            await _send_error(send, err)
            return
        except Exception:  # noqa: BLE001 - never a plain-text 500, even on the bare path
            request_id = new_request_id()
            log.exception("unexpected error receiving a webhook (request id %s)", request_id)
            await _send_error(send, unexpected(request_id))
            return
        await send({"type": "http.response.start", "status": 200, "headers": _OK_HEADERS})
        await send({"type": "http.response.body", "body": b"EVENT_RECEIVED"})

    async def _verified_body(self, scope, receive) -> tuple[str, bytes]:
        """(body as text, its SHA-256) once it is read, within the size cap, signed and UTF-8."""
        signature = declared = None
        for name, value in scope["headers"]:
            if name == b"x-hub-signature-256":
                signature = value
            elif name == b"content-length":
                declared = value
        if not signature:
            raise ApiError(401, "X-Hub-Signature-256 header is missing", field=SIGNATURE_HEADER)
        raw = await read_capped(receive, declared, self._max_body_bytes)
        mac = self._keyed_hmac.copy()
        mac.update(raw)
        expected = b"sha256=" + mac.hexdigest().encode()
        if not hmac.compare_digest(signature.strip().lower(), expected):
            raise ApiError(403, "X-Hub-Signature-256 does not match the body", field=SIGNATURE_HEADER)
        try:
            return raw.decode("utf-8"), hashlib.sha256(raw).digest()
        except ValueError:
            raise ApiError(400, "request body is not valid JSON (it is not UTF-8)") from None


async def _send_error(send, err: ApiError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _not_stored(exc: Exception) -> ApiError:
    """The answer for a body the writer did not store: 400 for the body's fault, else 503 so Meta retries."""
    if isinstance(exc, NotAnEvent):
        if exc.json_type != "object":
            return ApiError(400, f"request body must be a JSON object, not {exc.json_type}")
        return ApiError(400, "field object is required (a string such as page, instagram or "
                            "whatsapp_business_account)", field="object")
    if isinstance(exc, BodyNotStorable):
        if exc.not_json:
            return ApiError(400, "request body is not valid JSON")
        return ApiError(400, "request body cannot be stored (it contains \\u0000 or an unpaired surrogate, or "
                            "is nested too deeply)")
    log.warning("webhook not stored (%s: %s); answering 503 so Meta retries", type(exc).__name__, exc)
    return ApiError(503, "the event could not be stored; retry later", headers={"Retry-After": "5"})


TAG = "webhooks"
INTAKE = Operation(
    summary="Receive Meta's webhook events (Messenger, Instagram, WhatsApp)", tag=TAG, body=WebhookEvent,
    headers=SignatureHeader, bare=True,
    answers={200: Answer(PlainText("Stored (or stored before): Meta may forget it", "EVENT_RECEIVED"),
                         "Committed to meta_webhook_event before this answer")},
    errors={400: "The body is not JSON, not an object, has no string `object`, or cannot be stored (NUL, an "
                 "unpaired surrogate, nesting too deep).",
            401: "X-Hub-Signature-256 is missing.",
            403: "X-Hub-Signature-256 does not match the raw body.",
            413: "The body is larger than RECEIVER_MAX_BODY_BYTES (3 MiB unless set).",
            503: "The event could not be stored; Meta retries (Retry-After)."})


def intake_route(intake: WebhookIntake) -> ApiRoute:
    """The POST route: the app answers it on its fast path (see Receiver), so this one is its document."""
    return ApiRoute(PATH, intake, method="POST", operation=INTAKE, name="receive_webhook", description=(
        "Meta's POST: X-Hub-Signature-256 is checked over the raw bytes, the event committed to "
        "meta_webhook_event, and only then answered 200. A byte-identical redelivery is stored once."))


routes = [
    api_route("GET", PATH, verify_subscription, Operation(
        summary="Meta's subscription handshake: echo hub.challenge", tag=TAG, query=HubQuery,
        answers={200: Answer(PlainText("hub.challenge, echoed", "1158201444"), "The subscription is verified")},
        errors={400: "hub.challenge is missing.",
                403: "hub.mode is not subscribe, or hub.verify_token is not META_WEBHOOK_VERIFY_TOKEN."})),
]
