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

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from everreach_data.inbox.intake import BodyNotStorable, GroupCommitWriter, NotAnEvent
from everreach_data.receiver.errors import ApiError

log = logging.getLogger(__name__)

PATH = "/api/webhooks/meta"
SIGNATURE_HEADER = "x-hub-signature-256"


async def verify_subscription(request: Request) -> Response:
    """Meta's GET handshake: echo ``hub.challenge`` when mode is subscribe and the token matches."""
    params = request.query_params
    expected = request.app.state.settings.secret("META_WEBHOOK_VERIFY_TOKEN")
    token = params.get("hub.verify_token", "")
    if (params.get("hub.mode") != "subscribe" or not expected
            or not hmac.compare_digest(token.encode(), expected.encode())):
        raise ApiError(403, "verification failed: hub.mode must be subscribe and hub.verify_token must match")
    challenge = params.get("hub.challenge")
    if not challenge:
        raise ApiError(400, "hub.challenge is required", field="hub.challenge")
    return PlainTextResponse(challenge)


class _Reject(Exception):
    """A 4xx/5xx answer from the intake path (rendered in the receiver's one error shape)."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.error = ApiError(status, message, field=field, headers=headers)


async def _read_capped(receive, declared: bytes | None, limit: int) -> bytes:
    """The raw body, refusing (413) as soon as it is known to exceed ``limit`` — before reading it all."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Reject(413, f"body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Reject(400, "client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _Reject(413, f"body is larger than {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
        except _Reject as reject:
            err = reject.error
            body = json.dumps(err.body()).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
            await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
            await send({"type": "http.response.body", "body": body})
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
            raise _Reject(401, "X-Hub-Signature-256 header is missing", field=SIGNATURE_HEADER)
        raw = await _read_capped(receive, declared, self._max_body_bytes)
        mac = self._keyed_hmac.copy()
        mac.update(raw)
        expected = b"sha256=" + mac.hexdigest().encode()
        if not hmac.compare_digest(signature.strip().lower(), expected):
            raise _Reject(403, "X-Hub-Signature-256 does not match the body", field=SIGNATURE_HEADER)
        try:
            return raw.decode("utf-8"), hashlib.sha256(raw).digest()
        except ValueError:
            raise _Reject(400, "request body is not valid JSON (it is not UTF-8)") from None


def _not_stored(exc: Exception) -> _Reject:
    """The answer for a body the writer did not store: 400 for the body's fault, else 503 so Meta retries."""
    if isinstance(exc, NotAnEvent):
        if exc.json_type != "object":
            return _Reject(400, f"request body must be a JSON object, not {exc.json_type}")
        return _Reject(400, "field object is required (a string such as page, instagram or "
                            "whatsapp_business_account)", field="object")
    if isinstance(exc, BodyNotStorable):
        if exc.not_json:
            return _Reject(400, "request body is not valid JSON")
        return _Reject(400, "request body cannot be stored (it contains \\u0000 or an unpaired surrogate, or "
                            "is nested too deeply)")
    log.warning("webhook not stored (%s: %s); answering 503 so Meta retries", type(exc).__name__, exc)
    return _Reject(503, "the event could not be stored; retry later", headers={"Retry-After": "5"})


routes: list[Route] = [
    Route(PATH, verify_subscription, methods=["GET"], include_in_schema=False),
]
