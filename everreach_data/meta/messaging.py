"""Meta's messaging wire formats, in one place: Send API (Messenger, Instagram) and WhatsApp Cloud API
request bodies, their success responses, and the JSON paths that find our own messages again in raw
webhooks (echo ``metadata`` / status ``biz_opaque_callback_data`` carry the outbound job id, so a send whose
outcome was lost can be reconciled without re-sending). What a failed send means is in ``errors.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from everreach_data.meta.errors import error_for

PLATFORMS = ("messenger", "instagram", "whatsapp")
#: Tags Meta retired on 2026-04-27: sends carrying them fail with (#100) Invalid parameter.
RETIRED_TAGS = frozenset({"ACCOUNT_UPDATE", "CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE"})
HUMAN_AGENT = "HUMAN_AGENT"
MAX_QUICK_REPLIES = 13
WHATSAPP_MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
#: A WhatsApp business-scoped user id: a two-letter country code, a period, then up to 128 alphanumerics
#: (a parent id has ``ENT.`` after the country), e.g. ``US.13491208655302741918``.
USER_ID = re.compile(r"^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$")


def messenger_request(recipient_id: str, *, text: str | None = None,
                      quick_replies: list[dict[str, Any]] | None = None,
                      attachment: dict[str, Any] | None = None, messaging_type: str = "RESPONSE",
                      tag: str | None = None) -> dict[str, Any]:
    """A Send API body (Messenger and Instagram share it). ``attachment`` is ``{"type", "url"}``."""
    message: dict[str, Any] = {}
    if text is not None:
        message["text"] = text
    if attachment is not None:
        message["attachment"] = {"type": attachment["type"],
                                 "payload": {"url": attachment["url"], "is_reusable": True}}
    if quick_replies:
        message["quick_replies"] = [dict(q) for q in quick_replies]
    body: dict[str, Any] = {"recipient": {"id": recipient_id}, "messaging_type": messaging_type,
                            "message": message}
    if tag:
        body["tag"] = tag
    return body


def whatsapp_request(to: str, type: str, *, text: str | None = None, template: dict[str, Any] | None = None,
                     interactive: dict[str, Any] | None = None, media: dict[str, Any] | None = None,
                     preview_url: bool = False) -> dict[str, Any]:
    """A Cloud API ``/{phone_number_id}/messages`` body. ``media`` is ``{"link", "caption"?, "filename"?}``.
    ``to`` is a phone number (``to``) or a business-scoped user id (Meta takes those as ``recipient``)."""
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual",
                            "recipient" if is_user_id(to) else "to": to, "type": type}
    if type == "text":
        body["text"] = {"preview_url": preview_url, "body": text}
    elif type == "template":
        body["template"] = template
    elif type == "interactive":
        body["interactive"] = interactive
    else:
        body[type] = {k: v for k, v in (media or {}).items() if v is not None}
    return body


def with_job_reference(platform: str, request: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The request tagged with our job id where Meta hands it back: the echo's ``message.metadata``
    (Messenger/Instagram) or every status webhook's ``biz_opaque_callback_data`` (WhatsApp)."""
    tagged = dict(request)
    if platform == "whatsapp":
        tagged["biz_opaque_callback_data"] = job_id
    else:
        tagged["message"] = {**tagged.get("message", {}), "metadata": job_id}
    return tagged


def send_path(platform: str, channel_id: str) -> str:
    """Where a send goes. Page-linked Instagram accounts send through the Page token's ``me/messages``."""
    return "me/messages" if platform == "instagram" else f"{channel_id}/messages"


def is_user_id(to: str) -> bool:
    return USER_ID.match(to) is not None


def normalize_wa_id(to: str) -> str:
    """``+1 (217) 799-6721`` → ``12177996721``: WhatsApp ids are the digits of the number."""
    return re.sub(r"\D", "", to)


@dataclass(frozen=True)
class SentMessage:
    message_id: str            # mid / wamid
    recipient_id: str | None   # PSID / IGSID / wa_id as Meta resolved it
    accepted_status: str | None = None   # WhatsApp: accepted | held_for_quality_assessment | paused


def parse_send_response(platform: str, body: dict[str, Any]) -> SentMessage:
    """Meta's id for the message we sent; a body without one is an error (nothing to reconcile with)."""
    if platform == "whatsapp":
        messages = body.get("messages") or []
        contacts = body.get("contacts") or []
        if not messages or not messages[0].get("id"):
            raise error_for("WhatsApp answered 200 without messages[0].id")
        return SentMessage(str(messages[0]["id"]), contacts[0].get("wa_id") if contacts else None,
                           messages[0].get("message_status"))
    if not body.get("message_id"):
        raise error_for("Send API answered 200 without message_id")
    return SentMessage(str(body["message_id"]), body.get("recipient_id"))


# ───────────────────────────── finding our sends in raw webhooks ─────────────────────────────

#: (job id, mid) for Messenger/Instagram echoes whose ``metadata`` names an unknown-outcome job.
ECHO_BY_JOB_SQL = """
SELECT j.job_id, e.mid
FROM outbound_message_job j
CROSS JOIN LATERAL (
    SELECT m ->> 'mid' AS mid
    FROM meta_webhook_event w,
         jsonb_path_query(w.payload, '$.entry[*].messaging[*].message ? (@.is_echo == true)') AS m
    WHERE w.object IN ('page', 'instagram') AND w.received_at >= j.created_at
      AND m ->> 'metadata' = j.job_id::text
    LIMIT 1) e
WHERE j.status = 'unknown' AND j.platform IN ('messenger', 'instagram')
"""

#: (job id, wamid) for WhatsApp statuses whose ``biz_opaque_callback_data`` names an unknown-outcome job.
STATUS_BY_JOB_SQL = """
SELECT j.job_id, s.wamid
FROM outbound_message_job j
CROSS JOIN LATERAL (
    SELECT st ->> 'id' AS wamid
    FROM meta_webhook_event w,
         jsonb_path_query(w.payload, '$.entry[*].changes[*].value.statuses[*]') AS st
    WHERE w.object = 'whatsapp_business_account' AND w.received_at >= j.created_at
      AND st ->> 'biz_opaque_callback_data' = j.job_id::text
    LIMIT 1) s
WHERE j.status = 'unknown' AND j.platform = 'whatsapp'
"""
