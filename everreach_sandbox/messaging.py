"""Sandbox surface: the Send API (Messenger, Instagram) and the WhatsApp Cloud API messages endpoint.

It answers as Meta does, policy included: the 24-hour window (7 days with ``MESSAGE_TAG`` +
``HUMAN_AGENT``; the retired tags fail with ``(#100) Invalid parameter``), unknown or unavailable users,
per-Page send limits (613, sliding second), WhatsApp throughput per phone number (130429; a token bucket of
``whatsapp_mps`` per second with one second of burst) and the per-recipient pair rate (131056). After answering it
posts what Meta would post to ``state.webhook_url``, signed with
``state.app_secret``: an echo for Messenger/Instagram, ``sent → delivered → read`` statuses for WhatsApp (with
``pricing`` as per-message pricing has it: marketing and authentication charged, utility free inside the
customer service window, service free) — or ``failed`` (131047) for free-form WhatsApp outside the window,
because WhatsApp accepts first and rejects later. A post the receiver does not answer 200 (a 503, a refused
connection) is retried, as Meta retries: at once, then less and less often (0.5 s doubling to 30 s) for
``webhook_retry_seconds``.

WhatsApp users have business-scoped user ids (``user_id``) and may hide their number behind a username; a
send may address either (``to`` or ``recipient``). The WhatsApp Business Account has a template catalog:
``GET /{WABA_ID}/message_templates`` pages it, and template sends are checked against it (unknown 132001,
paused 132015, disabled 132016, wrong number of body parameters 132000).

Control routes (tests, CLI): ``POST /_sandbox/messaging/users`` sets users' last inbound time, user id and
hidden number, ``GET /_sandbox/messaging/sent`` lists accepted sends, ``POST /_sandbox/messaging/settings``
toggles echo and status webhooks and changes the limits, ``POST /_sandbox/messaging/templates`` adds or
changes a template and posts the template webhook Meta would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_sandbox.core import GraphError, GraphRequest, Node, SandboxState, Surface, paged
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

surface = Surface("messaging")

DAY = 86400.0
RETIRED_TAGS = {"ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE"}
WA_FREE_FORM = {"text", "interactive", "image", "video", "audio", "document", "sticker", "reaction"}
#: The known WhatsApp user: has a business-scoped user id as every WhatsApp user does since April 2026.
KNOWN_WA_USER = ("972987654321", "US.13491208655302741918")
#: The catalog the WhatsApp Business Account starts with: (name, language, category, status, body, format).
TEMPLATES: list[tuple[str, str, str, str, str, str]] = [
    ("hello_world", "en_US", "UTILITY", "APPROVED", "Hello World", "POSITIONAL"),
    ("order_update", "en_US", "UTILITY", "APPROVED", "Your order has an update.", "POSITIONAL"),
    ("order_shipped", "en_US", "UTILITY", "APPROVED", "Order {{1}} has shipped and arrives on {{2}}.", "POSITIONAL"),
    ("order_shipped", "pt_BR", "UTILITY", "APPROVED", "O pedido {{1}} foi enviado e chega em {{2}}.", "POSITIONAL"),
    ("appointment_reminder", "en_US", "UTILITY", "APPROVED", "Hi {{first_name}}, see you at {{time}}.", "NAMED"),
    ("shipping_update", "en_US", "UTILITY", "APPROVED", "Your parcel {{1}} is on its way.", "POSITIONAL"),
    ("summer_sale", "en_US", "MARKETING", "APPROVED", "Summer sale: {{1}} off everything this week!", "POSITIONAL"),
    ("login_code", "en_US", "AUTHENTICATION", "APPROVED", "{{1}} is your verification code.", "POSITIONAL"),
    ("flash_deal", "en_US", "MARKETING", "PENDING", "Flash deal: {{1}} for the next hour.", "POSITIONAL"),
    ("spam_blast", "en_US", "MARKETING", "REJECTED", "BUY NOW {{1}}", "POSITIONAL"),
    ("winter_promo", "en_US", "MARKETING", "PAUSED", "Winter promo: {{1}}.", "POSITIONAL"),
]
_TEMPLATE_SEND_ERRORS = {"PAUSED": (132015, "(#132015) Template is Paused"),
                         "DISABLED": (132016, "(#132016) Template is Disabled")}


@dataclass
class Settings:
    echo: bool = True                 # Messenger/Instagram echo webhooks
    statuses: bool = True             # WhatsApp status webhooks
    read: bool = True                 # include `read` after `delivered`
    whatsapp_mps: int = 80            # messages per second per phone number
    pair_burst: int = 45              # messages to one recipient in a burst…
    pair_interval: float = 6.0        # …then one per this many seconds
    page_sends_per_second: int = 300  # Send API calls per second per Page / IG account
    webhook_retry_seconds: float = 3600.0  # how long an undelivered webhook is retried (Meta: 36 hours)


@dataclass
class User:
    platform: str
    id: str
    last_inbound_at: float | None = None   # unix seconds of the user's last message to us
    unavailable: bool = False              # Messenger 551 / WhatsApp 131026
    user_id: str | None = None             # WhatsApp business-scoped user id
    hides_phone: bool = False              # WhatsApp: a username user whose number webhooks leave out


def template_id(index: int) -> str:
    """The id of the catalog's ``index``-th template (the traffic generator names them too)."""
    return str(10**15 + 7919 * (index + 1))


@dataclass
class Template:
    id: str
    name: str
    language: str
    category: str
    status: str
    body: str
    parameter_format: str = "POSITIONAL"
    quality: str = "GREEN"
    rejected_reason: str | None = None

    def listing(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "language": self.language, "status": self.status,
                "category": self.category, "parameter_format": self.parameter_format,
                "quality_score": {"score": self.quality, "date": int(time.time())},
                "components": [{"type": "BODY", "text": self.body}],
                **({"rejected_reason": self.rejected_reason} if self.rejected_reason else {})}

    @property
    def parameters(self) -> list[str]:
        return list(dict.fromkeys(re.findall(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", self.body)))


@dataclass
class World:
    settings: Settings = field(default_factory=Settings)
    users: dict[tuple[str, str], User] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[tuple[str, str], list[float]] = field(default_factory=dict)   # [tokens, last refill]
    throughput: dict[str, list[float]] = field(default_factory=dict)           # per phone: [tokens, last]
    webhooks_posted: int = 0        # delivered (answered 200)
    webhook_failures: int = 0       # posts the receiver did not take, each retried
    webhooks_abandoned: int = 0     # not delivered within webhook_retry_seconds
    deliveries: set[asyncio.Task] = field(default_factory=set)  # webhooks on their way (deliver_later)
    client: httpx.AsyncClient | None = None
    templates: dict[tuple[str, str], Template] = field(default_factory=dict)   # (name, language)

    def whatsapp_user(self, recipient: str) -> User | None:
        """A WhatsApp user by phone number or by business-scoped user id."""
        return self.users.get(("whatsapp", recipient)) or next(
            (u for (platform, _), u in self.users.items() if platform == "whatsapp" and u.user_id == recipient),
            None)


def world(state: SandboxState) -> World:
    return state.extra.setdefault("messaging", World())


@surface.populator
def populate(state: SandboxState) -> None:
    d = SANDBOX_DEFAULTS
    for node_id, kind in ((d["MESSENGER_PAGE_ID"], "page"), (d["INSTAGRAM_USER_ID"], "ig_user"),
                          (d["WHATSAPP_PHONE_NUMBER_ID"], "whatsapp_phone_number")):
        state.nodes.setdefault(node_id, Node(node_id, kind))
    state.nodes.setdefault(d["WABA_ID"], Node(d["WABA_ID"], "whatsapp_business_account"))
    w = world(state)
    now = time.time()
    for platform, uid in (("messenger", "6789012345678901"), ("instagram", "8422491661125971"),
                          ("whatsapp", KNOWN_WA_USER[0])):
        w.users[(platform, uid)] = User(platform, uid, last_inbound_at=now - 3600,
                                        user_id=KNOWN_WA_USER[1] if platform == "whatsapp" else None)
    for i, (name, language, category, status, body, fmt) in enumerate(TEMPLATES):
        w.templates[(name, language)] = Template(template_id(i), name, language, category, status, body, fmt,
                                                 rejected_reason="PROMOTIONAL" if status == "REJECTED" else None)


# ───────────────────────────── limits ─────────────────────────────

def _within_rate(state: SandboxState, key: str, limit: int) -> bool:
    """Sliding one-second window; only accepted calls count against it."""
    bucket = state.bucket(key, limit=limit, window_seconds=1.0)
    with state.lock:
        bucket.limit = limit
        return bucket.try_hit(time.monotonic())


def _take_token(state: SandboxState, buckets: dict, key: Any, capacity: float, per_second: float) -> bool:
    """Token bucket: ``capacity`` in a burst, refilled at ``per_second``."""
    now = time.monotonic()
    with state.lock:
        tokens, last = buckets.get(key, [capacity, now])
        tokens = min(capacity, tokens + (now - last) * per_second)
        ok = tokens >= 1.0
        buckets[key] = [tokens - ok, now]
    return ok


def _throughput_ok(state: SandboxState, w: World, phone: str) -> bool:
    """WhatsApp throughput per phone number: ``whatsapp_mps`` per second, with at most one second of burst."""
    mps = float(w.settings.whatsapp_mps)
    return _take_token(state, w.throughput, phone, mps, mps)


def _pair_ok(state: SandboxState, w: World, phone: str, wa_id: str) -> bool:
    s = w.settings
    return _take_token(state, w.pairs, (phone, wa_id), float(s.pair_burst), 1.0 / s.pair_interval)


# ───────────────────────────── webhooks out ─────────────────────────────

def sign(secret: str, body: bytes) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "Content-Type": "application/json",
    }


async def post_webhooks(state: SandboxState, payloads: list[dict[str, Any]]) -> None:
    """Post each payload in order (statuses must not overtake each other), signed over the raw bytes, each
    until the receiver answers 200 or its retry window ends (module docstring)."""
    w = world(state)
    if not state.webhook_url or not payloads:
        return
    if w.client is None:
        w.client = httpx.AsyncClient(timeout=10.0)
    for payload in payloads:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        give_up = time.monotonic() + w.settings.webhook_retry_seconds
        wait = 0.5
        while True:
            try:
                response = await w.client.post(state.webhook_url, content=raw,
                                               headers=sign(state.app_secret, raw))
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            with state.lock:
                w.webhooks_posted += ok
                w.webhook_failures += not ok
                w.webhooks_abandoned += not ok and time.monotonic() + wait > give_up
            if ok or time.monotonic() + wait > give_up:
                break
            await asyncio.sleep(wait)
            wait = min(30.0, wait * 2)


async def deliver_later(state: SandboxState, payloads: list[dict[str, Any]]) -> None:
    """:func:`post_webhooks` in a task of its own, as Meta delivers: its retries never hold up the answer to
    the call that caused them, nor that connection's next request."""
    w = world(state)
    task = asyncio.create_task(post_webhooks(state, payloads))
    w.deliveries.add(task)
    task.add_done_callback(w.deliveries.discard)


def _ms(t: float) -> int:
    return int(t * 1000)


def echo_payload(platform: str, channel_id: str, recipient: str, mid: str, message: dict[str, Any],
                 app_id: str, at: float) -> dict[str, Any]:
    echo = {"mid": mid, "is_echo": True, "app_id": int(app_id)}
    echo.update({k: v for k, v in message.items() if k in ("text", "metadata", "quick_replies")})
    if "attachment" in message:
        echo["attachments"] = [message["attachment"]]
    return {"object": "page" if platform == "messenger" else "instagram",
            "entry": [{"id": channel_id, "time": _ms(at), "messaging": [
                {"sender": {"id": channel_id}, "recipient": {"id": recipient}, "timestamp": _ms(at),
                 "message": echo}]}]}


def status_payload(phone: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": SANDBOX_DEFAULTS["WABA_ID"], "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": phone},
            "statuses": [status]}}]}]}


def template_payload(field_name: str, value: dict[str, Any], at: float) -> dict[str, Any]:
    """A template webhook as Meta posts it: the WABA's entry, stamped in seconds."""
    return {"object": "whatsapp_business_account", "entry": [{"id": SANDBOX_DEFAULTS["WABA_ID"], "time": int(at),
                                                              "changes": [{"field": field_name, "value": value}]}]}


# ───────────────────────────── Messenger / Instagram ─────────────────────────────

def _invalid(detail: str) -> GraphError:
    return GraphError(100, "(#100) Invalid parameter", user_msg=detail, error_data={"details": detail})


def _outside_window() -> GraphError:
    return GraphError(10, "(#10) This message is sent outside of allowed window.", subcode=2018278,
                      user_title="Message Not Sent",
                      user_msg="This person isn't receiving messages from you right now.")


@surface.route("POST", "page", "messages")
@surface.route("POST", "ig_user", "messages")
async def send_api(req: GraphRequest) -> JSONResponse:
    state, w = req.state, world(req.state)
    body = req.json if isinstance(req.json, dict) else {}
    recipient = body.get("recipient") if isinstance(body.get("recipient"), dict) else {}
    recipient_id = str(recipient.get("id") or "")
    message = body.get("message") if isinstance(body.get("message"), dict) else None
    messaging_type = body.get("messaging_type")
    tag = body.get("tag")
    if not recipient_id:
        raise GraphError(100, "(#100) The parameter recipient is required")
    if message is None:
        raise GraphError(100, "(#100) The parameter message is required")
    if messaging_type not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
        raise _invalid(f"messaging_type must be RESPONSE, UPDATE or MESSAGE_TAG, not {messaging_type!r}")
    if messaging_type == "MESSAGE_TAG" and tag != "HUMAN_AGENT":
        raise _invalid(f"tag {tag!r} is not a supported message tag"
                       + (" (retired on 2026-04-27)" if tag in RETIRED_TAGS else ""))
    if tag is not None and messaging_type != "MESSAGE_TAG":
        raise _invalid("tag is only allowed with messaging_type MESSAGE_TAG")
    if not message.get("text") and not message.get("attachment"):
        raise _invalid("message must have text or attachment")
    if len(message.get("text") or "") > 2000:
        raise _invalid("message text must be at most 2000 characters")
    if len(message.get("quick_replies") or []) > 13:
        raise _invalid("at most 13 quick replies are allowed")

    channel_id = req.node.id
    user = w.users.get(("messenger", recipient_id)) or w.users.get(("instagram", recipient_id))
    if user is None or (req.node.kind == "ig_user" and user.platform != "instagram"):
        raise GraphError(100, "(#100) No matching user found", subcode=2018001)
    if user.platform == "instagram":
        channel_id = SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]
    if not _within_rate(state, f"messaging.page.{channel_id}", w.settings.page_sends_per_second):
        raise GraphError(613, "(#613) Calls to this api have exceeded the rate limit.", status=400)
    if user.unavailable:
        raise GraphError(551, "This person isn't available right now.", subcode=1545041)
    now = time.time()
    age = now - user.last_inbound_at if user.last_inbound_at is not None else float("inf")
    if age > (7 * DAY if tag == "HUMAN_AGENT" else DAY):
        raise _outside_window()

    mid = ("m_" if user.platform == "messenger" else "aWdfZAG1faXRlbToxOklHTWVzc2FnZA") + secrets.token_urlsafe(24)
    with state.lock:
        w.sent.append({"platform": user.platform, "channel_id": channel_id, "recipient_id": recipient_id,
                       "message_id": mid, "request": body, "at": now})
    state.count(f"messaging.sent.{user.platform}")
    task = None
    if w.settings.echo and state.webhook_url:
        echo = echo_payload(user.platform, channel_id, recipient_id, mid, message, req.token.app_id, now)
        task = BackgroundTask(deliver_later, state, [echo])
    return JSONResponse({"recipient_id": recipient_id, "message_id": mid}, background=task)


# ───────────────────────────── WhatsApp ─────────────────────────────

def _wa_invalid(detail: str, code: int = 100, message: str = "(#100) Invalid parameter") -> GraphError:
    return GraphError(code, message, error_data={"messaging_product": "whatsapp", "details": detail})


def _check_whatsapp_body(w: World, body: dict[str, Any]) -> tuple[str, Template | None]:
    """The recipient (digits of ``to``, or the ``recipient`` user id) and the template, if it is one."""
    if body.get("messaging_product") != "whatsapp":
        raise _wa_invalid("messaging_product must be 'whatsapp'",
                          message="(#100) The parameter messaging_product is required.")
    if body.get("recipient"):
        to = str(body["recipient"])
        if not re.fullmatch(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}", to):
            raise _wa_invalid("'recipient' must be a business-scoped user id such as US.13491208655302741918")
    else:
        to = "".join(ch for ch in str(body.get("to") or "") if ch.isdigit())
        if not 7 <= len(to) <= 15:
            raise _wa_invalid("'to' must be a phone number with country code")
    kind = body.get("type", "text")
    if kind not in WA_FREE_FORM | {"template"}:
        raise _wa_invalid(f"unknown message type {kind!r}")
    content = body.get(kind)
    if not isinstance(content, dict):
        raise _wa_invalid(f"the parameter {kind} is required for type {kind}")
    if kind == "text" and not content.get("body"):
        raise _wa_invalid("text.body is required")
    template = _check_template(w, content, to_user_id="recipient" in body) if kind == "template" else None
    if kind in ("image", "video", "audio", "document", "sticker") and not (content.get("link") or content.get("id")):
        raise _wa_invalid(f"{kind}.link or {kind}.id is required")
    if kind == "interactive" and not (isinstance(content.get("action"), dict) and content.get("type")):
        raise _wa_invalid("interactive.type and interactive.action are required")
    return to, template


def _check_template(w: World, content: dict[str, Any], *, to_user_id: bool) -> Template:
    lang = content.get("language") if isinstance(content.get("language"), dict) else {}
    if not content.get("name") or not lang.get("code"):
        raise _wa_invalid("template.name and template.language.code are required")
    template = w.templates.get((str(content["name"]), str(lang["code"])))
    if template is None or template.status not in ("APPROVED", *_TEMPLATE_SEND_ERRORS):
        raise GraphError(132001, "(#132001) Template name does not exist in the translation",
                         error_data={"messaging_product": "whatsapp",
                                     "details": f"template name ({content['name']}) does not exist in {lang['code']}"})
    if template.status in _TEMPLATE_SEND_ERRORS:
        code, message = _TEMPLATE_SEND_ERRORS[template.status]
        raise GraphError(code, message, error_data={"messaging_product": "whatsapp",
                                                    "details": f"template {template.name} is {template.status}"})
    given = [p for c in content.get("components") or () if isinstance(c, dict) and str(c.get("type")).lower() == "body"
             for p in c.get("parameters") or ()]
    if len(given) != len(template.parameters):
        raise GraphError(132000, "(#132000) Number of parameters does not match the expected number of params",
                         error_data={"messaging_product": "whatsapp",
                                     "details": f"body: number of localizable_params ({len(given)}) does not match "
                                                f"the expected number of params ({len(template.parameters)})"})
    if to_user_id and template.category == "AUTHENTICATION":
        raise _wa_invalid("authentication templates can only be sent to a phone number")
    return template


def _recipient(user: User | None, to: str, *, phone_key: str, user_id_key: str) -> dict[str, str]:
    """How Meta names the recipient: its number (unless hidden behind a username) and its user id."""
    phone = user.id if user else (None if "." in to else to)
    user_id = user.user_id if user else (to if "." in to else None)
    return {**({phone_key: phone} if phone and not (user and user.hides_phone) else {}),
            **({user_id_key: user_id} if user_id else {})}


def _pricing(template: Template | None, in_window: bool) -> dict[str, Any]:
    """Per-message pricing as Meta reports it: free-form messages are service (free); a utility template is
    free inside the customer service window; marketing and authentication templates are charged."""
    category = template.category.lower() if template else "service"
    free = category == "service" or (category == "utility" and in_window)
    return {"billable": not free, "pricing_model": "PMP", "category": category,
            "type": "free_customer_service" if free else "regular"}


def _statuses(w: World, phone: str, wamid: str, to: str, body: dict[str, Any], at: float,
              user: User | None, template: Template | None) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"id": wamid, **_recipient(user, to, phone_key="recipient_id",
                                                      user_id_key="recipient_user_id")}
    if body.get("biz_opaque_callback_data"):
        base["biz_opaque_callback_data"] = body["biz_opaque_callback_data"]
    in_window = user is not None and user.last_inbound_at is not None and at - user.last_inbound_at <= DAY
    error = None
    if body.get("type") != "template" and not in_window:
        error = {"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                 "error_data": {"details": "Message failed to send because more than 24 hours have passed "
                                           "since the customer last replied to this number."}}
    elif user is not None and user.unavailable:
        error = {"code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                 "error_data": {"details": "Message Undeliverable."}}
    if error:
        error["href"] = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
        return [{**base, "status": "failed", "timestamp": str(int(at) + 1), "errors": [error]}]
    pricing = _pricing(template, in_window)
    steps = ["sent", "delivered"] + (["read"] if w.settings.read else [])
    return [{**base, "status": s, "timestamp": str(int(at) + i), **({"pricing": pricing} if s != "read" else {})}
            for i, s in enumerate(steps)]


@surface.route("POST", "whatsapp_phone_number", "messages")
async def whatsapp_send(req: GraphRequest) -> JSONResponse:
    state, w = req.state, world(req.state)
    body = req.json if isinstance(req.json, dict) else {}
    if "whatsapp_business_messaging" not in req.token.scopes:
        raise GraphError(10, "(#10) Application does not have permission for this action")
    to, template = _check_whatsapp_body(w, body)
    phone = req.node.id
    if not _throughput_ok(state, w, phone):
        state.count("messaging.130429")
        raise _wa_invalid("Cloud API message throughput has been reached.", code=130429,
                          message="(#130429) Rate limit hit")
    if not _pair_ok(state, w, phone, to):
        state.count("messaging.131056")
        raise _wa_invalid("Message failed to send because there were too many messages sent from this phone "
                          "number to the same phone number in a short period of time.", code=131056,
                          message="(#131056) (Business Account, Consumer Account) pair rate limit hit")
    now = time.time()
    wamid = "wamid." + secrets.token_urlsafe(30)
    user = w.whatsapp_user(to)
    with state.lock:
        w.sent.append({"platform": "whatsapp", "channel_id": phone, "recipient_id": to, "message_id": wamid,
                       "request": body, "at": now})
    state.count("messaging.sent.whatsapp")
    task = None
    if w.settings.statuses and state.webhook_url:
        payloads = [status_payload(phone, s) for s in _statuses(w, phone, wamid, to, body, now, user, template)]
        task = BackgroundTask(deliver_later, state, payloads)
    contact = {"input": body.get("to") or body.get("recipient"),
               **_recipient(user, to, phone_key="wa_id", user_id_key="user_id")}
    return JSONResponse({"messaging_product": "whatsapp", "contacts": [contact],
                         "messages": [{"id": wamid, "message_status": "accepted"}]}, background=task)


@surface.route("GET", "whatsapp_business_account", "message_templates")
async def message_templates(req: GraphRequest) -> dict[str, Any]:
    """The WABA's templates, paged as Meta pages them, with the fields asked for (``id`` always)."""
    if "whatsapp_business_management" not in req.token.scopes:
        raise GraphError(200, "(#200) Requires whatsapp_business_management permission to manage the object")
    wanted = set(req.fields(("name", "language", "status", "category", "components")))
    items = [{k: v for k, v in t.listing().items() if k in wanted}
             for t in sorted(world(req.state).templates.values(), key=lambda t: (t.name, t.language))]
    return paged(req, items, default_limit=25, max_limit=100)


# ───────────────────────────── control routes ─────────────────────────────

def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox


async def control_users(request: Request) -> JSONResponse:
    """``{"users": [{"platform", "id", "last_inbound_at" (unix s) | "last_inbound_ago" (s), "unavailable",
    "user_id", "hides_phone"}]}``."""
    state = _state(request)
    w = world(state)
    body = await request.json()
    now = time.time()
    with state.lock:
        for spec in body.get("users", []):
            key = (spec["platform"], str(spec["id"]))
            user = w.users.get(key) or User(*key)
            if "last_inbound_ago" in spec:
                ago = spec["last_inbound_ago"]
                user.last_inbound_at = None if ago is None else now - float(ago)
            if "last_inbound_at" in spec:
                user.last_inbound_at = None if spec["last_inbound_at"] is None else float(spec["last_inbound_at"])
            user.unavailable = bool(spec.get("unavailable", user.unavailable))
            user.user_id = spec.get("user_id", user.user_id)
            user.hides_phone = bool(spec.get("hides_phone", user.hides_phone))
            w.users[key] = user
    return JSONResponse({"ok": True, "users": len(w.users)})


async def control_sent(request: Request) -> JSONResponse:
    w = world(_state(request))
    q = request.query_params
    sent = [s for s in list(w.sent)
            if (not q.get("platform") or s["platform"] == q["platform"])
            and (not q.get("recipient_id") or s["recipient_id"] == q["recipient_id"])]
    return JSONResponse({"count": len(sent), "data": sent if q.get("summary") != "1" else [],
                         "webhooks_posted": w.webhooks_posted, "webhook_failures": w.webhook_failures,
                         "webhooks_abandoned": w.webhooks_abandoned})


async def control_settings(request: Request) -> JSONResponse:
    w = world(_state(request))
    if request.method == "POST":
        body = await request.json()
        if body.pop("reset_pairs", False):
            w.pairs.clear()
            w.throughput.clear()
        for key, value in body.items():
            if not hasattr(w.settings, key):
                return JSONResponse({"error": f"unknown setting {key!r}"}, status_code=400)
            setattr(w.settings, key, type(getattr(w.settings, key))(value))
    return JSONResponse(asdict(w.settings))


async def control_templates(request: Request) -> JSONResponse:
    """``POST {"name", "language", "status"?, "quality"?, "category"?, "reason"?, "body"?}``: add a template
    (``body`` and ``category`` given, status PENDING unless said) or change one, then post each change's
    webhook as Meta does (``message_template_status_update``, ``message_template_quality_update``,
    ``template_category_update``). Answers with the template and the webhooks posted."""
    state = _state(request)
    w = world(state)
    spec = await request.json()
    key = (str(spec["name"]), str(spec.get("language", "en_US")))
    now = time.time()
    with state.lock:
        template = w.templates.get(key)
        if template is None:
            template = Template(template_id(len(w.templates)), key[0], key[1],
                                spec.get("category", "UTILITY"), "PENDING", spec.get("body", "Hello"))
            w.templates[key] = template
        ident = {"message_template_id": int(template.id), "message_template_name": template.name,
                 "message_template_language": template.language}
        payloads = []
        if "status" in spec:
            template.status = spec["status"]
            payloads.append(template_payload("message_template_status_update", {
                "event": template.status, **ident, "reason": spec.get("reason", "NONE"),
                "message_template_category": template.category}, now))
        if "quality" in spec:
            previous, template.quality = template.quality, spec["quality"]
            payloads.append(template_payload("message_template_quality_update", {
                "previous_quality_score": previous, "new_quality_score": template.quality, **ident}, now))
        if "category" in spec and spec["category"] != template.category:
            previous, template.category = template.category, spec["category"]
            payloads.append(template_payload("template_category_update", {
                **ident, "previous_category": previous, "new_category": template.category}, now))
    await post_webhooks(state, payloads)
    return JSONResponse({"template": template.listing(), "webhooks": payloads})


surface.control_routes += [
    Route("/_sandbox/messaging/users", control_users, methods=["POST"]),
    Route("/_sandbox/messaging/sent", control_sent, methods=["GET"]),
    Route("/_sandbox/messaging/settings", control_settings, methods=["GET", "POST"]),
    Route("/_sandbox/messaging/templates", control_templates, methods=["POST"]),
]
