"""Meta's Conversions API: the one normalizer (Meta's hashing rules) and the one batch sender.

Both the ``/api/v1/integrations/meta/conversions`` endpoint and the ``meta_conversion_event`` asset go
through here, so an event is hashed the same way whichever door it came in by. Raw PII never leaves this
module: callers store and send only what :func:`normalize_user_data` returns.

Rules (Meta's "Customer information parameters" table, and the Python SDK's ``normalize.py``):
``em ph fn ln ge db ct st zp country external_id`` are normalized then SHA-256 hex hashed (a value that is
already 64 hex characters is taken as pre-hashed and passed through, never double hashed);
``client_ip_address client_user_agent fbc fbp`` are sent as they are.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from everreach_data.meta.client import GraphClient

MAX_EVENTS_PER_REQUEST = 1000
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
#: Margin under Meta's 7-day limit, so an event is not stale by the time the request arrives.
SEND_AGE_MARGIN_SECONDS = 3600
MAX_FUTURE_SECONDS = 60

ACTION_SOURCES = frozenset({"email", "website", "app", "phone_call", "chat", "physical_store",
                            "system_generated", "business_messaging", "other"})
#: The ads action type Meta counts each standard Pixel / Conversions API event under in insights' ``actions``.
PIXEL_ACTION_TYPES = {
    "Purchase": "offsite_conversion.fb_pixel_purchase",
    "Lead": "offsite_conversion.fb_pixel_lead",
    "CompleteRegistration": "offsite_conversion.fb_pixel_complete_registration",
    "InitiateCheckout": "offsite_conversion.fb_pixel_initiate_checkout",
    "AddToCart": "offsite_conversion.fb_pixel_add_to_cart",
    "AddPaymentInfo": "offsite_conversion.fb_pixel_add_payment_info",
    "AddToWishlist": "offsite_conversion.fb_pixel_add_to_wishlist",
    "Search": "offsite_conversion.fb_pixel_search",
    "ViewContent": "offsite_conversion.fb_pixel_view_content",
}
HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
PASSTHROUGH_FIELDS = ("client_ip_address", "client_user_agent", "fbc", "fbp")
#: What may be stored: hashed identifiers and pseudonymous cookies. The IP address is sent, never stored.
STORABLE_FIELDS = (*HASHED_FIELDS, "client_user_agent", "fbc", "fbp")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CITY_STRIP = re.compile(r"[0-9.\s\-()'’,]")
_LETTERS = re.compile(r"[^a-z]")


class ConversionInputError(ValueError):
    """One field of a conversion event is unusable; ``field`` names it (the endpoint answers 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


def _email(v: str) -> str:
    v = "".join(v.split()).lower()
    if not _EMAIL.match(v):
        raise ConversionInputError("em", "not an email address")
    return v


def _phone(v: str) -> str:
    digits = re.sub(r"\D", "", v)
    if digits.startswith("00"):
        digits = digits[2:]  # international dialling prefix
    if not 7 <= len(digits) <= 15 or digits.startswith("0"):
        raise ConversionInputError("ph", "a phone number needs its country code and 7 to 15 digits "
                                         "(e.g. +12177996721)")
    return digits


def _gender(v: str) -> str:
    g = v.strip().lower()
    if g in ("m", "male"):
        return "m"
    if g in ("f", "female"):
        return "f"
    raise ConversionInputError("ge", "gender must be m or f")


def _birthdate(v: str) -> str:
    digits = re.sub(r"\D", "", v)
    try:
        datetime.strptime(digits, "%Y%m%d")
    except ValueError as exc:
        raise ConversionInputError("db", "date of birth must be a date like 1997-12-26") from exc
    return digits


def _country(v: str) -> str:
    c = _LETTERS.sub("", v.lower())
    if len(c) != 2:
        raise ConversionInputError("country", "country must be a two-letter ISO 3166-1 code, e.g. us")
    return c


def _zip(v: str) -> str:
    return "".join(v.lower().split()).split("-")[0]


NORMALIZERS = {
    "em": _email,
    "ph": _phone,
    "fn": lambda v: v.strip().lower(),
    "ln": lambda v: v.strip().lower(),
    "ge": _gender,
    "db": _birthdate,
    "ct": lambda v: _CITY_STRIP.sub("", v.lower()),
    "st": lambda v: _CITY_STRIP.sub("", v.lower()),
    "zp": _zip,
    "country": _country,
    "external_id": lambda v: v.strip().lower(),
}


def normalize_value(field: str, value: Any) -> str | None:
    """One identifier normalized and hashed (``None`` for blanks)."""
    if value is None:
        return None
    if isinstance(value, date):
        value = value.isoformat()
    text = str(value).strip()
    if not text:
        return None
    if is_sha256(text.lower()):
        return text.lower()
    normal = NORMALIZERS[field](text)
    if not normal:
        return None
    return sha256_hex(normal)


def normalize_user_data(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Meta's ``user_data``: identifiers hashed, cookies/UA/IP as given, blanks dropped.

    Hashed fields may be a single value or a list (Meta accepts arrays); lists are hashed and deduplicated
    in order.
    """
    out: dict[str, Any] = {}
    for field in HASHED_FIELDS:
        value = raw.get(field)
        if isinstance(value, list | tuple):
            hashed = list(dict.fromkeys(h for v in value if (h := normalize_value(field, v))))
            if hashed:
                out[field] = hashed
        elif (h := normalize_value(field, value)) is not None:
            out[field] = h
    for field in PASSTHROUGH_FIELDS:
        value = raw.get(field)
        if value not in (None, ""):
            out[field] = str(value).strip()
    return out


@dataclass(frozen=True)
class ServerEvent:
    """A server event ready to send: ``user_data`` already normalized (see :func:`normalize_user_data`)."""

    event_name: str
    event_time: int                 # unix seconds
    event_id: str
    action_source: str
    user_data: dict[str, Any]
    custom_data: dict[str, Any]
    event_source_url: str | None = None

    def wire(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_name": self.event_name, "event_time": self.event_time, "event_id": self.event_id,
            "action_source": self.action_source, "user_data": self.user_data,
        }
        if self.custom_data:
            event["custom_data"] = self.custom_data
        if self.event_source_url:
            event["event_source_url"] = self.event_source_url
        return event


def validate_event(event: ServerEvent, *, now: float | None = None) -> None:
    """Meta's per-event rules, checked before sending because one bad event fails the whole batch."""
    now = time.time() if now is None else now
    if not event.event_name:
        raise ConversionInputError("event_name", "is required")
    if event.action_source not in ACTION_SOURCES:
        raise ConversionInputError("action_source", f"must be one of {', '.join(sorted(ACTION_SOURCES))}")
    age = now - event.event_time
    if age > MAX_EVENT_AGE_SECONDS:
        raise ConversionInputError("event_time", "is older than Meta's 7-day limit for conversion events")
    if age < -MAX_FUTURE_SECONDS:
        raise ConversionInputError("event_time", "is in the future")
    if event.action_source == "website":
        if not event.event_source_url:
            raise ConversionInputError("event_source_url", "is required for website events")
        if not event.user_data.get("client_user_agent"):
            raise ConversionInputError("client_user_agent", "is required for website events")
    ip_with_agent = event.user_data.get("client_ip_address") and event.user_data.get("client_user_agent")
    if not ip_with_agent and not any(k in event.user_data for k in (*HASHED_FIELDS, "fbc", "fbp")):
        raise ConversionInputError("user_data", "needs at least one customer identifier (email, phone, "
                                                "external_id, fbp, fbc, or the client IP with its user agent)")
    if event.event_name == "Purchase":
        for name in ("currency", "value"):
            if (event.custom_data or {}).get(name) in (None, ""):
                raise ConversionInputError(name, "is required for Purchase events")


def custom_data(*, value: Any = None, currency: str | None = None, content_ids: Iterable[str] | None = None,
                content_type: str | None = None, order_id: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value is not None:
        out["value"] = float(value)
    if currency:
        code = currency.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise ConversionInputError("currency", "must be a three-letter ISO 4217 code, e.g. USD")
        out["currency"] = code
    if content_ids:
        out["content_ids"] = [str(c) for c in content_ids]
        out["num_items"] = len(out["content_ids"])
    if content_type:
        if content_type not in ("product", "product_group"):
            raise ConversionInputError("content_type", "must be product or product_group")
        out["content_type"] = content_type
    if order_id:
        out["order_id"] = str(order_id)
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


@dataclass(frozen=True)
class BatchResult:
    events: list[ServerEvent]
    events_received: int
    fbtrace_id: str | None
    messages: list[str]


def batches(events: list[ServerEvent], size: int = MAX_EVENTS_PER_REQUEST) -> Iterator[list[ServerEvent]]:
    for start in range(0, len(events), size):
        yield events[start:start + size]


def request_body(batch: list[ServerEvent], test_event_code: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"data": [e.wire() for e in batch]}
    if test_event_code:
        body["test_event_code"] = test_event_code
    return body


def batch_result(batch: list[ServerEvent], answer: Mapping[str, Any]) -> BatchResult:
    return BatchResult(batch, int(answer.get("events_received", 0)), answer.get("fbtrace_id"),
                       list(answer.get("messages") or []))


def send_events(client: GraphClient, pixel_id: str, events: list[ServerEvent], *,
                test_event_code: str | None = None) -> list[BatchResult]:
    """Send ``events`` in requests of at most 1000; raises :class:`GraphAPIError` for a rejected batch
    (Meta rejects all or nothing) after the client's own retries of transient failures."""
    return [batch_result(batch, client.post(f"{pixel_id}/events", json=request_body(batch, test_event_code)))
            for batch in batches(events)]
