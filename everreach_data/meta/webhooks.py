"""Meta's webhook payloads (Messenger, Instagram, WhatsApp Cloud API) parsed into typed records.

This is the one place that knows the wire shapes. It walks EVERY ``entry[]`` and, inside it, every
``messaging[]`` / ``standby[]`` / ``changes[]`` item and every WhatsApp ``messages[]`` / ``statuses[]`` item
(peer projects read only the first of each and silently drop the rest). Timestamps are normalised to epoch
milliseconds: Messenger and Instagram send milliseconds, WhatsApp sends seconds as a string.

WhatsApp users are known by phone number (``wa_id``), by business-scoped user id (``user_id``, since April
2026), or both: records carry both when Meta sends both, and the phone number may be absent for a user with
a username. Besides messages and statuses, WhatsApp changes of a template's status, quality or category and
of a user's id (``user_id_update``) are records too.

Anything malformed raises :class:`WebhookParseError` naming the JSON path; never ``KeyError`` /
``TypeError``. Well-formed items of kinds we do not store (optins, referrals without a message, feed
changes…) are counted in :attr:`ParsedWebhook.ignored`, not errors: Meta adds fields and event kinds over
time and they must not poison the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Platform = Literal["messenger", "instagram", "whatsapp"]
OBJECT_PLATFORMS: dict[str, Platform] = {
    "page": "messenger",
    "instagram": "instagram",
    "whatsapp_business_account": "whatsapp",
}
#: Largest epoch-ms value that is still a valid timestamp (9999-12-31) — bigger means a malformed payload.
MAX_EPOCH_MS = 253_402_300_799_999
WHATSAPP_STATUSES = frozenset({"sent", "delivered", "read", "failed", "deleted"})
INT32_MAX = 2**31 - 1


class WebhookParseError(ValueError):
    """The payload does not have the shape Meta documents; ``path`` says where (e.g. ``entry[0].id``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# ───────────────────────────── records ─────────────────────────────

@dataclass(frozen=True, slots=True)
class Attachment:
    type: str
    url: str | None = None          # Messenger/Instagram CDN URL
    media_id: str | None = None     # WhatsApp media id (download with GET /{media_id})
    mime_type: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message in a thread: inbound from the person, or outbound (an echo of what the business sent).

    ``mid`` is Meta's id (``mid`` / ``wamid``); postbacks without a ``mid`` and Messenger reactions (which
    have none of their own) get a deterministic derived id so replays still deduplicate.
    """

    platform: Platform
    channel_id: str                 # Page id, IG professional account id, WhatsApp phone_number_id
    participant_id: str             # PSID, IGSID, or wa_id (the user id when WhatsApp omits the number)
    mid: str
    timestamp_ms: int               # Meta's timestamp
    message_type: str               # text, quick_reply, postback, reaction, image, story_reply, share, …
    direction: Literal["inbound", "outbound"] = "inbound"
    is_echo: bool = False
    text: str | None = None
    quick_reply_payload: str | None = None
    postback_payload: str | None = None
    reply_to_id: str | None = None  # the mid/wamid replied (or reacted) to
    story_reply: dict[str, Any] | None = None
    attachments: tuple[Attachment, ...] = ()
    reaction: str | None = None     # emoji or reaction name
    referral: dict[str, Any] | None = None
    interactive_reply_id: str | None = None   # WhatsApp button/list reply id, template button payload
    participant_name: str | None = None       # WhatsApp contacts[].profile.name
    app_id: str | None = None                 # echoes: the app that sent it
    metadata: str | None = None               # echoes: what the sending app attached (ours: its job id)
    raw: dict[str, Any] = field(default_factory=dict)   # the item as Meta sent it, stored losslessly
    participant_user_id: str | None = None    # WhatsApp business-scoped user id, when Meta sends one
    participant_phone: str | None = None      # WhatsApp wa_id, when Meta sends one


@dataclass(frozen=True, slots=True)
class Delivery:
    """Messenger/Instagram delivery receipt: ``mids`` (may be absent) and everything up to ``watermark_ms``."""

    platform: Platform
    channel_id: str
    participant_id: str
    watermark_ms: int
    timestamp_ms: int
    mids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Read:
    """Read receipt: a Messenger ``watermark`` (everything up to it) or an Instagram ``read.mid``."""

    platform: Platform
    channel_id: str
    participant_id: str
    timestamp_ms: int
    watermark_ms: int | None = None
    mid: str | None = None


@dataclass(frozen=True, slots=True)
class Deletion:
    """The person unsent a message (Instagram ``is_deleted``)."""

    platform: Platform
    channel_id: str
    participant_id: str
    mid: str
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class StatusError:
    code: int | None
    title: str | None
    message: str | None = None
    details: str | None = None


@dataclass(frozen=True, slots=True)
class Pricing:
    """A WhatsApp status's ``pricing``: the category Meta charges the message in, and whether it is charged.
    ``billable`` is deprecated (Meta may stop sending it); ``type`` (from v24.0) says it instead: ``regular``
    is charged, ``free_customer_service`` and ``free_entry_point`` are not."""

    category: str
    type: str | None = None
    model: str | None = None          # PMP (per-message pricing), CBP before July 2025
    billable: bool | None = None

    @property
    def charged(self) -> bool:
        return self.billable if self.billable is not None else self.type == "regular"


@dataclass(frozen=True, slots=True)
class Status:
    """WhatsApp ``statuses[]`` item for a message the business sent."""

    platform: Platform
    channel_id: str                 # phone_number_id
    participant_id: str             # recipient_id (wa_id)
    mid: str                        # wamid
    status: Literal["sent", "delivered", "read", "failed", "deleted"]
    timestamp_ms: int
    errors: tuple[StatusError, ...] = ()
    conversation: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None
    biz_opaque_callback_data: str | None = None
    participant_user_id: str | None = None    # recipient_user_id
    priced: Pricing | None = None             # ``pricing``, read


@dataclass(frozen=True, slots=True)
class StoryInsights:
    """Instagram ``story_insights``: a story's final numbers, sent when it expires (Meta serves story
    insights for 24 hours only). ``metrics`` holds every number the value carries beside ``media_id``
    (``impressions``, ``reach``, ``taps_forward``…), so fields Meta adds are kept too."""

    platform: Platform
    channel_id: str                 # the Instagram professional account
    media_id: str
    metrics: tuple[tuple[str, int | float], ...]
    timestamp_ms: int | None        # the entry's time: the story's expiry


@dataclass(frozen=True, slots=True)
class TemplateUpdate:
    """A WhatsApp template changed: its status (``message_template_status_update``), quality score
    (``message_template_quality_update``) or category (``template_category_update``), to ``value``."""

    waba_id: str
    template_id: str
    name: str | None
    language: str | None
    change: Literal["status", "quality", "category"]
    value: str
    timestamp_ms: int               # the entry's time
    category: str | None = None     # status updates name the category too
    previous: str | None = None     # the previous quality score or category
    reason: str | None = None       # why it was rejected, paused, …


@dataclass(frozen=True, slots=True)
class UserIdUpdate:
    """WhatsApp ``user_id_update``: a user's business-scoped id changed from ``previous_user_id`` to
    ``user_id`` (it does when they change phone numbers; ``phone`` is the number when Meta shares it)."""

    channel_id: str                 # phone_number_id
    previous_user_id: str
    user_id: str
    timestamp_ms: int
    phone: str | None = None


Record = Message | Delivery | Read | Deletion | Status | StoryInsights | TemplateUpdate | UserIdUpdate


@dataclass(slots=True)
class ParsedWebhook:
    object: str
    platform: Platform | None
    records: list[Record] = field(default_factory=list)
    ignored: int = 0                # well-formed items of kinds we do not store


# ───────────────────────────── field helpers ─────────────────────────────

def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookParseError(path, f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise WebhookParseError(path, f"expected an array, got {type(value).__name__}")
    return value


def _id(value: Any, path: str) -> str:
    """Meta ids are strings; a few (``app_id``) arrive as numbers. Empty or other types are malformed."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise WebhookParseError(path, "expected a non-empty id")


def _opt_id(value: Any, path: str) -> str | None:
    """An id Meta may leave out, or send empty (a WhatsApp user's number, hidden behind a username)."""
    return None if value in (None, "") else _id(value, path)


def _opt_str(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise WebhookParseError(path, f"expected a string, got {type(value).__name__}")


def _opt_obj(value: Any, path: str) -> dict[str, Any] | None:
    return None if value is None else _obj(value, path)


def _ms(value: Any, path: str) -> int:
    """An epoch-milliseconds integer (Messenger/Instagram)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookParseError(path, "expected an integer timestamp in milliseconds")
    if not 0 <= value <= MAX_EPOCH_MS:
        raise WebhookParseError(path, "timestamp out of range")
    return value


def _seconds(value: Any, path: str) -> int:
    """WhatsApp's epoch seconds (a digit string; integers accepted) as epoch milliseconds."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise WebhookParseError(path, "expected a timestamp in seconds")
    return _ms(seconds * 1000, path)


def _error_code(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -INT32_MAX <= value <= INT32_MAX:
        raise WebhookParseError(path, "expected an integer error code")
    return value


# ───────────────────────────── Messenger / Instagram ─────────────────────────────

_IGNORED_MESSAGING_KINDS = frozenset({
    "referral", "optin", "account_linking", "pass_thread_control", "take_thread_control",
    "request_thread_control", "app_roles", "policy_enforcement", "game_play", "message_edit",
    "response_feedback", "messaging_feedback", "checkout_update", "payment", "handover",
})


def _attachments(value: Any, path: str) -> tuple[Attachment, ...]:
    out = []
    for i, item in enumerate(_list(value, path)):
        item = _obj(item, f"{path}[{i}]")
        kind = _opt_str(item.get("type"), f"{path}[{i}].type") or "unknown"
        payload = _opt_obj(item.get("payload"), f"{path}[{i}].payload") or {}
        url = payload.get("url")
        out.append(Attachment(type=kind, url=url if isinstance(url, str) else None))
    return tuple(out)


def _messaging_item(platform: Platform, channel_id: str, entry_ms: int | None, item: Any,
                    path: str, out: ParsedWebhook) -> None:
    item = _obj(item, path)
    if "message" in item or "postback" in item or "reaction" in item:
        sender = _id(_obj(item.get("sender"), f"{path}.sender").get("id"), f"{path}.sender.id")
        recipient = _id(_obj(item.get("recipient"), f"{path}.recipient").get("id"), f"{path}.recipient.id")
        ts = _ms(item.get("timestamp"), f"{path}.timestamp")
    if "message" in item:
        out.records.append(_message(platform, channel_id, sender, recipient, ts, item["message"],
                                    f"{path}.message"))
    elif "postback" in item:
        pb = _obj(item["postback"], f"{path}.postback")
        mid = _opt_str(pb.get("mid"), f"{path}.postback.mid") or f"postback:{sender}:{ts}"
        title = _opt_str(pb.get("title"), f"{path}.postback.title")
        out.records.append(Message(
            platform=platform, channel_id=channel_id, participant_id=sender, mid=mid, timestamp_ms=ts,
            message_type="postback", text=title,
            postback_payload=_opt_str(pb.get("payload"), f"{path}.postback.payload"),
            referral=_opt_obj(pb.get("referral"), f"{path}.postback.referral"), raw=pb))
    elif "reaction" in item:
        rx = _obj(item["reaction"], f"{path}.reaction")
        target = _id(rx.get("mid"), f"{path}.reaction.mid")
        action = _opt_str(rx.get("action"), f"{path}.reaction.action") or "react"
        emoji = _opt_str(rx.get("emoji"), f"{path}.reaction.emoji") or _opt_str(
            rx.get("reaction"), f"{path}.reaction.reaction")
        out.records.append(Message(
            platform=platform, channel_id=channel_id, participant_id=sender,
            mid=f"reaction:{target}:{sender}:{ts}:{action}", timestamp_ms=ts, message_type="reaction",
            text=emoji, reaction=emoji if action == "react" else None, reply_to_id=target, raw=rx))
    elif "delivery" in item:
        dl = _obj(item["delivery"], f"{path}.delivery")
        participant = _id(_obj(item.get("sender"), f"{path}.sender").get("id"), f"{path}.sender.id")
        watermark = _ms(dl.get("watermark"), f"{path}.delivery.watermark")
        mids = tuple(_id(m, f"{path}.delivery.mids[{i}]")
                     for i, m in enumerate(_list(dl.get("mids") or [], f"{path}.delivery.mids")))
        ts = _ms(item["timestamp"], f"{path}.timestamp") if "timestamp" in item else watermark
        out.records.append(Delivery(platform, channel_id, participant, watermark, ts, mids))
    elif "read" in item:
        rd = _obj(item["read"], f"{path}.read")
        participant = _id(_obj(item.get("sender"), f"{path}.sender").get("id"), f"{path}.sender.id")
        watermark = _ms(rd["watermark"], f"{path}.read.watermark") if "watermark" in rd else None
        mid = _id(rd["mid"], f"{path}.read.mid") if "mid" in rd else None
        if watermark is None and mid is None:
            raise WebhookParseError(f"{path}.read", "needs a watermark or a mid")
        if "timestamp" in item:
            ts = _ms(item["timestamp"], f"{path}.timestamp")
        else:
            ts = watermark if watermark is not None else entry_ms
            if ts is None:
                raise WebhookParseError(f"{path}.timestamp", "missing")
        out.records.append(Read(platform, channel_id, participant, ts, watermark, mid))
    elif any(k in item for k in _IGNORED_MESSAGING_KINDS):
        out.ignored += 1
    else:
        raise WebhookParseError(path, "unrecognised messaging item")


def _message(platform: Platform, channel_id: str, sender: str, recipient: str, ts: int, value: Any,
             path: str) -> Message | Deletion:
    msg = _obj(value, path)
    mid = _id(msg.get("mid"), f"{path}.mid")
    echo = msg.get("is_echo") is True
    participant = recipient if echo else sender
    if msg.get("is_deleted") is True:
        return Deletion(platform, channel_id, participant, mid, ts)  # type: ignore[return-value]
    text = _opt_str(msg.get("text"), f"{path}.text")
    qr = _opt_obj(msg.get("quick_reply"), f"{path}.quick_reply")
    qr_payload = _opt_str(qr.get("payload"), f"{path}.quick_reply.payload") if qr else None
    attachments = _attachments(msg["attachments"], f"{path}.attachments") if "attachments" in msg else ()
    reply_to = _opt_obj(msg.get("reply_to"), f"{path}.reply_to")
    reply_to_id = _opt_str(reply_to.get("mid"), f"{path}.reply_to.mid") if reply_to else None
    story = _opt_obj(reply_to.get("story"), f"{path}.reply_to.story") if reply_to else None
    if story is not None:
        kind = "story_reply"
    elif qr is not None:
        kind = "quick_reply"
    elif attachments:
        kind = attachments[0].type
    elif msg.get("is_unsupported") is True:
        kind = "unsupported"
    else:
        kind = "text"
    app_id = _id(msg["app_id"], f"{path}.app_id") if msg.get("app_id") is not None else None
    return Message(
        platform=platform, channel_id=channel_id, participant_id=participant, mid=mid, timestamp_ms=ts,
        message_type=kind, direction="outbound" if echo else "inbound", is_echo=echo, text=text,
        quick_reply_payload=qr_payload, reply_to_id=reply_to_id, story_reply=story, attachments=attachments,
        referral=_opt_obj(msg.get("referral"), f"{path}.referral"), app_id=app_id,
        metadata=_opt_str(msg.get("metadata"), f"{path}.metadata") if echo else None, raw=msg)


def _page_like_entry(platform: Platform, entry: dict[str, Any], path: str, out: ParsedWebhook) -> None:
    channel_id = _id(entry.get("id"), f"{path}.id")
    entry_ms = _ms(entry["time"], f"{path}.time") if entry.get("time") is not None else None
    for key in ("messaging", "standby"):
        if key in entry:
            for i, item in enumerate(_list(entry[key], f"{path}.{key}")):
                _messaging_item(platform, channel_id, entry_ms, item, f"{path}.{key}[{i}]", out)
    if "changes" in entry:
        for i, change in enumerate(_list(entry["changes"], f"{path}.changes")):
            cpath = f"{path}.changes[{i}]"
            change = _obj(change, cpath)
            # Instagram's dashboard test events put a messaging item under changes[].value.
            if change.get("field") in ("messages", "messaging_postbacks", "message_reactions") and (
                    platform == "instagram"):
                _messaging_item(platform, channel_id, entry_ms, change.get("value"), f"{cpath}.value", out)
            elif change.get("field") == "story_insights" and platform == "instagram":
                out.records.append(_story_insights(channel_id, entry_ms, change.get("value"), f"{cpath}.value"))
            else:
                out.ignored += 1


def _story_insights(channel_id: str, entry_time: int | None, value: Any, path: str) -> StoryInsights:
    value = _obj(value, path)
    metrics = tuple((k, v) for k, v in value.items()
                    if k != "media_id" and isinstance(v, int | float) and not isinstance(v, bool))
    # Instagram's changes entries carry time in seconds (messaging entries in milliseconds).
    ms = entry_time * 1000 if entry_time is not None and entry_time < 10**11 else entry_time
    return StoryInsights("instagram", channel_id, _id(value.get("media_id"), f"{path}.media_id"), metrics, ms)


# ───────────────────────────── WhatsApp ─────────────────────────────

def _wa_content(msg: dict[str, Any], kind: str, path: str) -> tuple[str | None, str | None, tuple[Attachment, ...]]:
    """(text, interactive/button reply id, attachments) for one WhatsApp message by its ``type``."""
    body = _opt_obj(msg.get(kind), f"{path}.{kind}") if kind in msg else None
    if body is None:
        return None, None, ()
    if kind == "text":
        return _opt_str(body.get("body"), f"{path}.text.body"), None, ()
    if kind == "button":
        return (_opt_str(body.get("text"), f"{path}.button.text"),
                _opt_str(body.get("payload"), f"{path}.button.payload"), ())
    if kind == "interactive":
        sub = _opt_str(body.get("type"), f"{path}.interactive.type")
        reply = _opt_obj(body.get(sub), f"{path}.interactive.{sub}") if sub else None
        if not reply:
            return None, None, ()
        return (_opt_str(reply.get("title") or reply.get("body"), f"{path}.interactive.{sub}.title"),
                _opt_str(reply.get("id"), f"{path}.interactive.{sub}.id"), ())
    if kind in ("image", "video", "audio", "document", "sticker"):
        media_id = body.get("id")
        attachment = Attachment(type=kind, media_id=_id(media_id, f"{path}.{kind}.id") if media_id else None,
                                mime_type=_opt_str(body.get("mime_type"), f"{path}.{kind}.mime_type"))
        return _opt_str(body.get("caption"), f"{path}.{kind}.caption"), None, (attachment,)
    if kind == "reaction":
        return _opt_str(body.get("emoji"), f"{path}.reaction.emoji"), None, ()
    if kind == "location":
        name = _opt_str(body.get("name"), f"{path}.location.name")
        address = _opt_str(body.get("address"), f"{path}.location.address")
        return ", ".join(p for p in (name, address) if p) or None, None, ()
    if kind == "system":
        return _opt_str(body.get("body"), f"{path}.system.body"), None, ()
    return None, None, ()


@dataclass(slots=True)
class _Contacts:
    """A change's ``contacts[]``: names and user ids by phone number and by user id."""

    names: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)      # wa_id → user_id
    only_user_id: str | None = None                              # the user id, when there is one contact

    @classmethod
    def parse(cls, value: Any, path: str) -> _Contacts:
        if not value:  # a change of statuses only: most of them
            return _NO_CONTACTS
        out = cls()
        contacts = _list(value, path)
        for j, contact in enumerate(contacts):
            contact = _obj(contact, f"{path}[{j}]")
            profile = _opt_obj(contact.get("profile"), f"{path}[{j}].profile") or {}
            name = _opt_str(profile.get("name"), f"{path}[{j}].profile.name")
            wa_id = _opt_id(contact.get("wa_id"), f"{path}[{j}].wa_id")
            user_id = _opt_id(contact.get("user_id"), f"{path}[{j}].user_id")
            for key in (wa_id, user_id):
                if key and name:
                    out.names[key] = name
            if wa_id and user_id:
                out.user_ids[wa_id] = user_id
            if len(contacts) == 1:
                out.only_user_id = user_id
        return out


_NO_CONTACTS = _Contacts()


def _wa_message(channel_id: str, contacts: _Contacts, msg: Any, path: str, *, echo: bool) -> Message:
    msg = _obj(msg, path)
    wamid = _id(msg.get("id"), f"{path}.id")
    ts = _seconds(msg.get("timestamp"), f"{path}.timestamp")
    kind = _opt_str(msg.get("type"), f"{path}.type") or "unknown"
    phone: str | None = None
    user_id: str | None = None
    if echo:
        participant = _id(msg.get("to"), f"{path}.to")
    else:
        phone = _opt_id(msg.get("from"), f"{path}.from")
        user_id = (_opt_id(msg.get("from_user_id"), f"{path}.from_user_id")
                   or (contacts.user_ids.get(phone) if phone else contacts.only_user_id))
        if phone is None and user_id is None and kind == "system" and isinstance(msg.get("system"), dict):
            user_id = _opt_id(msg["system"].get("user_id"), f"{path}.system.user_id")  # user_changed_user_id
        participant = _id(phone or user_id, f"{path}.from")
    text, reply_id, attachments = _wa_content(msg, kind, path)
    context = _opt_obj(msg.get("context"), f"{path}.context")
    reply_to = _opt_str(context.get("id"), f"{path}.context.id") if context else None
    reaction = None
    if kind == "reaction" and isinstance(msg.get("reaction"), dict):
        reaction = text
        reply_to = _opt_str(msg["reaction"].get("message_id"), f"{path}.reaction.message_id") or reply_to
    return Message(
        platform="whatsapp", channel_id=channel_id, participant_id=participant, mid=wamid, timestamp_ms=ts,
        message_type=kind, direction="outbound" if echo else "inbound", is_echo=echo, text=text,
        reply_to_id=reply_to, attachments=attachments, reaction=reaction,
        referral=_opt_obj(msg.get("referral"), f"{path}.referral"), interactive_reply_id=reply_id,
        participant_name=None if echo else contacts.names.get(participant), raw=msg,
        participant_user_id=user_id, participant_phone=phone)


def _pricing(value: dict[str, Any] | None, status_path: str) -> Pricing | None:
    if value is None or (category := value.get("category")) is None:
        return None
    kind = value.get("type") or value.get("pricing_type")
    model, billable = value.get("pricing_model"), value.get("billable")
    if not (isinstance(category, str) and category and isinstance(kind, str | None) and isinstance(model, str | None)
            and (billable is None or isinstance(billable, bool))):  # one check on the hot path; then say which
        path = f"{status_path}.pricing"
        _id(category, f"{path}.category")
        _opt_str(kind, f"{path}.type")
        _opt_str(model, f"{path}.pricing_model")
        raise WebhookParseError(f"{path}.billable", "expected a boolean")
    return Pricing(category, kind, model, billable)


def _wa_status(channel_id: str, item: Any, path: str) -> Status | None:
    item = _obj(item, path)
    state = _opt_str(item.get("status"), f"{path}.status")
    if state not in WHATSAPP_STATUSES:
        if state is None:
            raise WebhookParseError(f"{path}.status", "missing")
        return None  # e.g. "played", "warning": well-formed, not a delivery state we track
    user_id = item.get("recipient_user_id") or None
    if user_id is not None and not isinstance(user_id, str):
        _id(user_id, f"{path}.recipient_user_id")
    recipient = item.get("recipient_id") if item.get("recipient_id") not in (None, "") else user_id
    errors = []
    for i, err in enumerate(_list(item.get("errors") or [], f"{path}.errors")):
        err = _obj(err, f"{path}.errors[{i}]")
        data = _opt_obj(err.get("error_data"), f"{path}.errors[{i}].error_data") or {}
        errors.append(StatusError(
            code=_error_code(err.get("code"), f"{path}.errors[{i}].code"),
            title=_opt_str(err.get("title"), f"{path}.errors[{i}].title"),
            message=_opt_str(err.get("message"), f"{path}.errors[{i}].message"),
            details=_opt_str(data.get("details"), f"{path}.errors[{i}].error_data.details")))
    pricing = _opt_obj(item.get("pricing"), f"{path}.pricing")
    return Status(
        platform="whatsapp", channel_id=channel_id, participant_id=_id(recipient, f"{path}.recipient_id"),
        mid=_id(item.get("id"), f"{path}.id"), status=state,  # type: ignore[arg-type]
        timestamp_ms=_seconds(item.get("timestamp"), f"{path}.timestamp"), errors=tuple(errors),
        conversation=_opt_obj(item.get("conversation"), f"{path}.conversation"),
        pricing=pricing,
        biz_opaque_callback_data=_opt_str(item.get("biz_opaque_callback_data"),
                                          f"{path}.biz_opaque_callback_data"),
        participant_user_id=user_id, priced=_pricing(pricing, path))


#: The template webhooks: field → (what changed, the key of its new value, the key of the previous one).
TEMPLATE_FIELDS: dict[str, tuple[Literal["status", "quality", "category"], str, str | None]] = {
    "message_template_status_update": ("status", "event", None),
    "message_template_quality_update": ("quality", "new_quality_score", "previous_quality_score"),
    "template_category_update": ("category", "new_category", "previous_category"),
}


def _template_update(waba_id: str, entry_ms: int, fld: str, value: Any, path: str) -> TemplateUpdate:
    value = _obj(value, path)
    change, new_key, previous_key = TEMPLATE_FIELDS[fld]
    return TemplateUpdate(
        waba_id=waba_id, template_id=_id(value.get("message_template_id"), f"{path}.message_template_id"),
        name=_opt_str(value.get("message_template_name"), f"{path}.message_template_name"),
        language=_opt_str(value.get("message_template_language"), f"{path}.message_template_language"),
        change=change, value=_id(value.get(new_key), f"{path}.{new_key}"), timestamp_ms=entry_ms,
        category=_opt_str(value.get("message_template_category"), f"{path}.message_template_category"),
        previous=_opt_str(value.get(previous_key), f"{path}.{previous_key}") if previous_key else None,
        reason=_opt_str(value.get("reason"), f"{path}.reason"))


def _user_id_updates(value: dict[str, Any], path: str, out: ParsedWebhook) -> None:
    metadata = _obj(value.get("metadata"), f"{path}.metadata")
    channel_id = _id(metadata.get("phone_number_id"), f"{path}.metadata.phone_number_id")
    for j, item in enumerate(_list(value.get("user_id_update") or [], f"{path}.user_id_update")):
        ipath = f"{path}.user_id_update[{j}]"
        item = _obj(item, ipath)
        ids = _obj(item.get("user_id"), f"{ipath}.user_id")
        out.records.append(UserIdUpdate(
            channel_id=channel_id, previous_user_id=_id(ids.get("previous"), f"{ipath}.user_id.previous"),
            user_id=_id(ids.get("current"), f"{ipath}.user_id.current"),
            timestamp_ms=_seconds(item.get("timestamp"), f"{ipath}.timestamp"),
            phone=_opt_id(item.get("wa_id"), f"{ipath}.wa_id")))


def _whatsapp_entry(entry: dict[str, Any], path: str, out: ParsedWebhook) -> None:
    for i, change in enumerate(_list(entry.get("changes"), f"{path}.changes")):
        cpath = f"{path}.changes[{i}]"
        change = _obj(change, cpath)
        fld = change.get("field")
        fld = fld if isinstance(fld, str) else None
        if fld in TEMPLATE_FIELDS:
            # Meta stamps WhatsApp Business Account entries in seconds.
            out.records.append(_template_update(_id(entry.get("id"), f"{path}.id"),
                                                _seconds(entry.get("time"), f"{path}.time"), fld,
                                                change.get("value"), f"{cpath}.value"))
            continue
        if fld == "user_id_update":
            _user_id_updates(_obj(change.get("value"), f"{cpath}.value"), f"{cpath}.value", out)
            continue
        if fld not in ("messages", "smb_message_echoes"):
            out.ignored += 1
            continue
        value = _obj(change.get("value"), f"{cpath}.value")
        items_key = "messages" if fld == "messages" else "message_echoes"
        if not any(k in value for k in (items_key, "statuses")):
            out.ignored += 1  # e.g. a value carrying only errors[]
            continue
        metadata = _obj(value.get("metadata"), f"{cpath}.value.metadata")
        channel_id = _id(metadata.get("phone_number_id"), f"{cpath}.value.metadata.phone_number_id")
        contacts = _Contacts.parse(value.get("contacts"), f"{cpath}.value.contacts")
        for j, msg in enumerate(_list(value.get(items_key) or [], f"{cpath}.value.{items_key}")):
            out.records.append(_wa_message(channel_id, contacts, msg, f"{cpath}.value.{items_key}[{j}]",
                                           echo=fld == "smb_message_echoes"))
        for j, item in enumerate(_list(value.get("statuses") or [], f"{cpath}.value.statuses")):
            status = _wa_status(channel_id, item, f"{cpath}.value.statuses[{j}]")
            if status is None:
                out.ignored += 1
            else:
                out.records.append(status)


# ───────────────────────────── entry point ─────────────────────────────

def parse_webhook(payload: Any) -> ParsedWebhook:
    """Every record in one webhook delivery, in payload order. Unknown ``object`` kinds parse to nothing."""
    body = _obj(payload, "$")
    obj = body.get("object")
    if not isinstance(obj, str) or not obj:
        raise WebhookParseError("object", "expected a non-empty string")
    platform = OBJECT_PLATFORMS.get(obj)
    out = ParsedWebhook(object=obj, platform=platform)
    if platform is None:
        return out
    for i, entry in enumerate(_list(body.get("entry"), "entry")):
        entry = _obj(entry, f"entry[{i}]")
        if platform == "whatsapp":
            _whatsapp_entry(entry, f"entry[{i}]", out)
        else:
            _page_like_entry(platform, entry, f"entry[{i}]", out)
    return out
