"""Sandbox surface: the Conversions API, ``POST /{pixel_id}/events``.

Takes ``data`` as a JSON body (``{"data": [{…}], "test_event_code"}``) or form-encoded the way Meta's SDK
sends it (``data=["{…json…}", …]``: a JSON array of events or of JSON strings). Meta's rules:

- at most 1000 events; if ANY event is invalid the WHOLE batch is rejected and nothing is recorded;
- each event needs ``event_name``, ``event_time`` (unix seconds) and ``action_source``; ``website`` events
  also ``event_source_url`` and ``user_data.client_user_agent``; ``user_data`` needs at least one
  customer identifier; ``em``, ``ph``, ``fn``, ``ln``, ``ge``, ``db``, ``ct``, ``st``, ``zp``, ``country``
  must be SHA-256 hex (Meta never wants raw PII); ``Purchase`` needs ``custom_data.currency`` and ``value``;
- ``event_time`` at most 7 days old (62 for ``physical_store``): Meta's code 100 / subcode 2804003
  "Event Timestamp Too Old"; at most a minute in the future (a 13-digit millisecond time lands here).

Success: ``{"events_received": n, "messages": [], "fbtrace_id"}``. Rejections use code 100 "Invalid
parameter" with ``error_user_title``/``error_user_msg`` naming the event and field. Subcode 2804003 is
Meta's documented one; the others are members of Meta's 2804xxx invalid-parameter family chosen by the
sandbox, so clients should branch on code 100, not on them.

Accepted batches (with ``test_event_code``) are kept for tests: ``GET /_sandbox/capi/events``
(``?pixel_id=``), ``DELETE`` clears them.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_sandbox.core import GraphError, GraphRequest, Node, SandboxState, Surface, fbtrace_id
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

surface = Surface("capi")

PIXEL_ID = SANDBOX_DEFAULTS["META_PIXEL_ID"]
MAX_EVENTS = 1000
MAX_AGE_SECONDS = 7 * 86400
MAX_AGE_PHYSICAL_STORE = 62 * 86400
MAX_FUTURE_SECONDS = 60
ACTION_SOURCES = frozenset(
    {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }
)
HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country")
IDENTIFIERS = frozenset(HASHED_FIELDS) | {
    "external_id",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
    "anon_id",
    "madid",
    "page_id",
    "page_scoped_user_id",
    "ctwa_clid",
    "ig_account_id",
    "ig_sid",
}
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _store(state: SandboxState) -> list[dict[str, Any]]:
    return state.extra.setdefault("capi", {}).setdefault("batches", [])


@surface.populator
def populate(state: SandboxState) -> None:
    state.add(Node(PIXEL_ID, "pixel", {"name": "EverReach Sandbox Pixel"}))
    _store(state)


def _invalid(subcode: int, title: str, message: str) -> GraphError:
    return GraphError(
        100, "Invalid parameter", subcode=subcode, type="OAuthException", user_title=title, user_msg=message
    )


def _events(req: GraphRequest) -> list[Any]:
    raw = req.json.get("data") if isinstance(req.json, dict) else req.param("data")
    if raw is None or raw == "":
        raise GraphError(100, "(#100) The parameter data is required", type="OAuthException")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise GraphError(
                100, "(#100) param data must be a JSON array of events", type="OAuthException"
            ) from exc
    if not isinstance(raw, list):
        raise GraphError(100, "(#100) param data must be an array", type="OAuthException")
    events = []
    for item in raw:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError as exc:
                raise GraphError(
                    100, "(#100) param data must contain events as JSON objects", type="OAuthException"
                ) from exc
        events.append(item)
    return events


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def validate_event(index: int, event: Any, now: float) -> None:
    """Raise Meta's error for the first thing wrong with ``event`` (the batch then fails as a whole)."""
    where = f"event {index}"
    if not isinstance(event, dict):
        raise _invalid(2804001, "Invalid Event", f"The {where} is not a JSON object.")
    for name in ("event_name", "event_time", "action_source"):
        if event.get(name) in (None, ""):
            raise _invalid(
                2804001, "Missing Parameter", f"The parameter {name} is required but missing in {where}."
            )
    source = event["action_source"]
    if source not in ACTION_SOURCES:
        raise _invalid(
            2804007,
            "Invalid Action Source",
            f"The action_source {source!r} in {where} is not one of: {', '.join(sorted(ACTION_SOURCES))}.",
        )
    try:
        event_time = int(event["event_time"])
    except (TypeError, ValueError):
        raise _invalid(
            2804016, "Invalid Event Time", f"event_time in {where} must be a unix timestamp in seconds."
        ) from None
    max_age = MAX_AGE_PHYSICAL_STORE if source == "physical_store" else MAX_AGE_SECONDS
    if now - event_time > max_age:
        raise _invalid(
            2804003,
            "Event Timestamp Too Old",
            "The timestamp for this event is too far in the past. Events need to be sent from your "
            f"server within {max_age // 86400} days of when they occurred. Enter a timestamp that "
            f"has occurred within the last {max_age // 86400} days ({where}).",
        )
    if event_time - now > MAX_FUTURE_SECONDS:
        raise _invalid(
            2804004,
            "Event Timestamp In The Future",
            f"The timestamp for {where} is in the future. event_time must be unix seconds (not "
            "milliseconds) at or before the time the event is sent.",
        )
    user = event.get("user_data")
    if not isinstance(user, dict):
        raise _invalid(2804050, "Missing User Data", f"user_data is required in {where}.")
    if source == "website":
        for name, value in (
            ("event_source_url", event.get("event_source_url")),
            ("client_user_agent", user.get("client_user_agent")),
        ):
            if not value:
                raise _invalid(
                    2804001, "Missing Parameter", f"Website events require {name}; it is missing in {where}."
                )
    for name in HASHED_FIELDS:
        if name in user and not all(isinstance(v, str) and SHA256.match(v) for v in _values(user[name])):
            raise _invalid(
                2804019,
                "Unhashed Customer Information",
                f"user_data.{name} in {where} must be hashed with SHA-256 (64 hex characters).",
            )
    has_ip_ua = bool(user.get("client_ip_address")) and bool(user.get("client_user_agent"))
    if not has_ip_ua and not any(user.get(k) not in (None, "", []) for k in IDENTIFIERS):
        raise _invalid(
            2804050,
            "Missing User Data",
            f"The user_data in {where} doesn't have enough customer information: send at least one "
            "identifier (em, ph, external_id, fbp, fbc, or client_ip_address with "
            "client_user_agent).",
        )
    if event["event_name"] == "Purchase":
        custom = event.get("custom_data") if isinstance(event.get("custom_data"), dict) else {}
        if custom.get("currency") in (None, "") or custom.get("value") in (None, ""):
            raise _invalid(
                2804048,
                "Missing Purchase Value",
                f"Purchase events require custom_data.currency and custom_data.value ({where}).",
            )


@surface.route("POST", "pixel", "events")
async def post_events(req: GraphRequest) -> dict[str, Any]:
    events = _events(req)
    if not events:
        raise GraphError(100, "(#100) param data must be a non-empty array", type="OAuthException")
    if len(events) > MAX_EVENTS:
        raise GraphError(
            100,
            f"(#100) param data must be an array of at most {MAX_EVENTS} events (got {len(events)})",
            type="OAuthException",
        )
    now = time.time()
    for index, event in enumerate(events):
        validate_event(index, event, now)
    trace = fbtrace_id()
    test_code = req.param("test_event_code")
    with req.state.lock:
        _store(req.state).append(
            {
                "pixel_id": req.node.id,
                "events": events,
                "test_event_code": test_code,
                "fbtrace_id": trace,
                "received_at": now,
            }
        )
    req.state.count("capi.events", len(events))
    return {"events_received": len(events), "messages": [], "fbtrace_id": trace}


async def _received(request: Request) -> JSONResponse:
    state: SandboxState = request.app.state.sandbox
    if request.method == "DELETE":
        with state.lock:
            _store(state).clear()
        return JSONResponse({"ok": True})
    pixel = request.query_params.get("pixel_id")
    batches = [b for b in _store(state) if not pixel or b["pixel_id"] == pixel]
    return JSONResponse({"batches": batches, "events": [e for b in batches for e in b["events"]]})


surface.control_routes.append(Route("/_sandbox/capi/events", _received, methods=["GET", "DELETE"]))
