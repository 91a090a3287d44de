"""A send request, from validated input to a queued job: the one path the HTTP endpoints and the operators'
``send_message`` Dagster job share (so both get the same validation, policy windows and idempotency).

Unknown fields are refused (a misspelt ``recipent_id`` must not be ignored), except inside the objects that
are Meta's own and passed through as they are — template ``components`` and ``interactive`` — where Meta
adds fields with its versions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from everreach_data.config import Channels
from everreach_data.meta import messaging as wire
from everreach_data.outbound import queue
from everreach_data.outbound.policy import decide_messenger, decide_whatsapp
from everreach_data.outbound.templates import check_template

URL = r"^https?://\S+$"


class InvalidRequest(ValueError):
    """A combination of fields that is not valid; ``field`` names the one to fix."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class ChannelNotConfigured(RuntimeError):
    pass


class QuickReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content_type: Literal["text", "user_phone_number", "user_email"] = "text"
    title: str | None = Field(None, min_length=1, max_length=20)
    payload: str | None = Field(None, min_length=1, max_length=1000)
    image_url: str | None = Field(None, pattern=URL, max_length=2000)


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image", "video", "audio", "file"]
    url: str = Field(pattern=URL, max_length=2000)


class MessengerSend(BaseModel):
    """``POST /api/v1/integrations/messenger/send``: Messenger or Instagram DM."""

    model_config = ConfigDict(extra="forbid")
    platform: Literal["messenger", "instagram"] = "messenger"
    recipient_id: str = Field(min_length=1, max_length=64, pattern=r"^\d+$", description="PSID or IGSID")
    message_type: Literal["text", "image", "video", "audio", "file"] = "text"
    text: str | None = Field(None, min_length=1, max_length=2000)
    quick_replies: list[QuickReply] | None = Field(None, max_length=wire.MAX_QUICK_REPLIES)
    attachment: Attachment | None = None
    human_agent: bool = Field(False, description="a person (not a bot) wrote this message")
    tag: str | None = Field(None, max_length=64, description="only HUMAN_AGENT; needs human_agent: true")

    def check(self) -> None:
        if self.text is None and self.attachment is None:
            raise InvalidRequest("text or attachment is required", "text")
        if self.message_type == "text" and self.text is None:
            raise InvalidRequest("message_type 'text' needs text", "text")
        if self.message_type != "text" and (self.attachment is None or self.attachment.type != self.message_type):
            raise InvalidRequest(f"message_type {self.message_type!r} needs an attachment of that type",
                                 "attachment")
        if self.text is not None and self.attachment is not None:
            raise InvalidRequest("send text and an attachment as two messages", "attachment")
        for i, q in enumerate(self.quick_replies or []):
            if q.content_type == "text" and (not q.title or not q.payload):
                raise InvalidRequest("a text quick reply needs title and payload", f"quick_replies.{i}")


class TemplateLanguage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    policy: Literal["deterministic"] | None = None


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: TemplateLanguage
    components: list[dict[str, Any]] | None = Field(
        None, max_length=20, description="Meta's template components (header, body, buttons) with their parameters, "
                                         "passed through as given")


class InteractiveAction(BaseModel):
    """The interactive message's ``action``: Meta's object, passed through; only reply buttons are checked."""

    model_config = ConfigDict(extra="allow")
    buttons: list[dict[str, Any]] | None = Field(None, max_length=3, description="reply buttons: at most 3")


class Interactive(BaseModel):
    """Meta's ``interactive`` object (``header``, ``body``, ``footer`` pass through)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["button", "list", "cta_url", "product", "product_list", "flow"]
    action: InteractiveAction


class Media(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image", "video", "audio", "document", "sticker"] | None = None
    link: str = Field(pattern=URL, max_length=2000)
    caption: str | None = Field(None, max_length=1024)
    filename: str | None = Field(None, max_length=240)


class WhatsAppSend(BaseModel):
    """``POST /api/v1/integrations/whatsapp/send``."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(pattern=r"^(\+?[0-9][0-9 ()\-.]{5,22}|[A-Z]{2}\.[A-Za-z0-9.]{1,140})$",
                    description="phone number with country code, or the user's business-scoped user id "
                                "(US.13491208655302741918) when WhatsApp does not share their number")
    type: Literal["text", "template", "interactive", "media", "image", "video", "audio", "document",
                  "sticker"] = "text"
    message: str | None = Field(None, min_length=1, max_length=4096)
    template: Template | None = None
    interactive: Interactive | None = None
    media: Media | None = None
    preview_url: bool = False

    @property
    def wire_type(self) -> str:
        return (self.media.type or "") if self.type == "media" and self.media else self.type

    @property
    def to_user_id(self) -> bool:
        return wire.is_user_id(self.to)

    @property
    def recipient(self) -> str:
        """Whom Meta sends to: the number's digits, or the user id as given."""
        return self.to if self.to_user_id else wire.normalize_wa_id(self.to)

    def check(self) -> None:
        if not self.to_user_id and not 7 <= len(wire.normalize_wa_id(self.to)) <= 15:
            raise InvalidRequest("to must be a phone number with 7 to 15 digits including the country code, or a "
                                 "business-scoped user id such as US.13491208655302741918", "to")
        if self.type == "text" and self.message is None:
            raise InvalidRequest("type 'text' needs message", "message")
        if self.type == "template" and self.template is None:
            raise InvalidRequest("type 'template' needs template {name, language {code}}", "template")
        if self.type == "interactive" and self.interactive is None:
            raise InvalidRequest("interactive needs type (button, list, …) and action", "interactive")
        if self.type in ("media", *wire.WHATSAPP_MEDIA_TYPES):
            if self.media is None:
                raise InvalidRequest(f"type {self.type!r} needs media {{link}}", "media")
            if self.type == "media" and self.media.type is None:
                raise InvalidRequest("type 'media' needs media.type (image, video, audio, document)", "media.type")
            if self.type != "media" and self.media.type not in (None, self.type):
                raise InvalidRequest(f"media.type {self.media.type!r} does not match type {self.type!r}",
                                     "media.type")


class QueuedSend(BaseModel):
    """The answer to a send request (202): the job that will send it."""

    success: Literal[True] = True
    job_id: uuid.UUID
    thread_id: uuid.UUID
    platform: Literal["messenger", "instagram", "whatsapp"]
    recipient_id: str
    used_message_tag: bool = Field(description="sent as MESSAGE_TAG HUMAN_AGENT (24 h – 7 days after the "
                                               "customer's last message)")
    status: str = Field(description="queued; for a replayed Idempotency-Key, the job's state now")


@dataclass(frozen=True)
class Queued:
    job: dict[str, Any]
    created: bool

    def answer(self) -> QueuedSend:
        return QueuedSend(job_id=self.job["job_id"], thread_id=self.job["thread_id"], platform=self.job["platform"],
                          recipient_id=self.job["recipient_id"], used_message_tag=self.job["tag"] is not None,
                          status="queued" if self.created else self.job["status"])

    def response(self) -> dict[str, Any]:
        return self.answer().model_dump(mode="json")


def channel_for(channels: Channels, platform: str) -> str:
    channel = channels[platform]
    if not channel.channel_id:
        raise ChannelNotConfigured(f"{platform} is not configured: set {channel.id_setting}")
    return channel.channel_id


async def queue_messenger(conn: psycopg.AsyncConnection, channels: Channels, body: MessengerSend, *,
                          requested_by: str, idempotency_key: str | None = None) -> Queued:
    """Validate, decide the window, enqueue. Raises InvalidRequest, PolicyViolation, IdempotencyConflict."""
    body.check()
    channel_id = channel_for(channels, body.platform)
    job_id = uuid.uuid4()
    attachment = body.attachment.model_dump() if body.attachment else None
    replies = [q.model_dump(exclude_none=True) for q in body.quick_replies] if body.quick_replies else None

    def build(messaging_type: str, tag: str | None) -> dict[str, Any]:
        req = wire.messenger_request(body.recipient_id, text=body.text, quick_replies=replies,
                                     attachment=attachment, messaging_type=messaging_type, tag=tag)
        return wire.with_job_reference(body.platform, req, str(job_id))

    existing = await queue.existing_job(conn, requested_by, idempotency_key, build("RESPONSE", None))
    if existing is not None:
        return Queued(existing, False)
    windows = await queue.thread_windows(conn, body.platform, channel_id, body.recipient_id)
    decision = decide_messenger(windows.windows, datetime.now(UTC), human_agent=body.human_agent, tag=body.tag)
    row, created = await queue.enqueue(conn, queue.NewJob(
        platform=body.platform, channel_id=channel_id, recipient_id=body.recipient_id,
        request=build(decision.messaging_type or "RESPONSE", decision.tag), decision=decision,
        message_type=body.message_type, content=body.text or (attachment or {}).get("url"),
        requested_by=requested_by, idempotency_key=idempotency_key, job_id=job_id))
    return Queued(row, created)


async def queue_whatsapp(conn: psycopg.AsyncConnection, channels: Channels, body: WhatsAppSend, *,
                         requested_by: str, idempotency_key: str | None = None) -> Queued:
    """Validate, check a template against the catalog, decide the window, enqueue. Raises InvalidRequest,
    TemplateRefused, PolicyViolation, IdempotencyConflict."""
    body.check()
    channel_id = channel_for(channels, "whatsapp")
    recipient = body.recipient
    job_id = uuid.uuid4()
    media = body.media.model_dump(exclude={"type"}, exclude_none=True) if body.media else None
    template = body.template.model_dump(exclude_none=True) if body.template else None
    request = wire.with_job_reference("whatsapp", wire.whatsapp_request(
        recipient, body.wire_type, text=body.message, template=template,
        interactive=body.interactive.model_dump(exclude_none=True) if body.interactive else None,
        media=media, preview_url=body.preview_url), str(job_id))
    existing = await queue.existing_job(conn, requested_by, idempotency_key, request)
    if existing is not None:
        return Queued(existing, False)
    if template is not None:
        await check_template(conn, channels.waba_id, template, to_user_id=body.to_user_id)
    # A user id may belong to a thread we know by phone number: its windows are that thread's.
    participant = await queue.whatsapp_participant(conn, channel_id, recipient) if body.to_user_id else recipient
    windows = await queue.thread_windows(conn, "whatsapp", channel_id, participant)
    decision = decide_whatsapp(windows.windows, datetime.now(UTC), is_template=body.type == "template")
    content = body.message or (body.template.name if body.template else None) or (media or {}).get("link")
    row, created = await queue.enqueue(conn, queue.NewJob(
        platform="whatsapp", channel_id=channel_id, recipient_id=recipient, request=request, decision=decision,
        message_type=body.wire_type, content=content, requested_by=requested_by,
        idempotency_key=idempotency_key, job_id=job_id, participant_id=participant))
    return Queued(row, created)
