"""Meta's published webhook examples (Messenger Platform webhook reference, Instagram Messaging, WhatsApp
Cloud API "Webhooks: messages" reference) and the shapes in shared/reference/meta-messaging-webhooks.md,
with Meta's placeholders filled in with realistic values. Shared by the parser and processing tests."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

from everreach_sandbox.defaults import SANDBOX_DEFAULTS

PAGE = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
IG = SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]
PHONE = SANDBOX_DEFAULTS["WHATSAPP_PHONE_NUMBER_ID"]
PSID = "6789012345678901"
IGSID = "8422491661125971"
WA_ID = "972987654321"
SECRET = SANDBOX_DEFAULTS["META_APP_SECRET"]

# Messenger, reference §2.1: quick reply + reply_to, attachment, postback, echo, delivery, read.
MESSENGER = {
    "object": "page",
    "entry": [{"id": PAGE, "time": 1718000001123, "messaging": [
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1718000000000,
         "message": {"mid": "m_Ab3xYzQ", "text": "Size M please", "quick_reply": {"payload": "SIZE_M"},
                     "reply_to": {"mid": "m_prevOutgoingA"}}},
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1718000005000,
         "message": {"mid": "m_ImgB", "attachments": [
             {"type": "image", "payload": {"url": "https://scontent.xx.fbcdn.net/v/t1.15752-9/x.jpg"}}]}},
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1718000010000,
         "postback": {"mid": "m_PbC", "title": "Talk to an agent", "payload": "CARE_HELP"}},
        {"sender": {"id": PAGE}, "recipient": {"id": PSID}, "timestamp": 1718000020000,
         "message": {"mid": "m_EchoD", "is_echo": True, "app_id": 263902037430900,
                     "text": "Thanks, an agent will reply shortly."}},
        {"sender": {"id": PSID}, "recipient": {"id": PAGE},
         "delivery": {"mids": ["m_EchoD"], "watermark": 1718000020500}},
        {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1718000030000,
         "read": {"watermark": 1718000020500}},
    ]}],
}

# Messenger Platform webhook reference: messages (text), message_reactions, postbacks with referral.
MESSENGER_REFERENCE_ITEMS = [
    {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1458692752478,
     "message": {"mid": "mid.1457764197618:41d102a3e1ae206a38", "text": "hello, world!"}},
    {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1458668856463,
     "reaction": {"mid": "mid.1457764197618:41d102a3e1ae206a38", "action": "react", "reaction": "love",
                  "emoji": "\u2764\ufe0f"}},
    {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1527459824000,
     "postback": {"mid": "m_MESSAGE-ID", "title": "Get Started", "payload": "GET_STARTED",
                  "referral": {"ref": "spring_sale", "source": "SHORTLINK", "type": "OPEN_THREAD"}}},
    {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": 1527459825000,
     "optin": {"type": "notification_messages", "payload": "ADDITIONAL-INFORMATION"}},
]

# Instagram, reference §2.2 (adapted from chatwoot#10341): story reply, share, echo, read.mid.
INSTAGRAM = {
    "object": "instagram",
    "entry": [{"time": 1729604868526, "id": IG, "messaging": [
        {"sender": {"id": IGSID}, "recipient": {"id": IG}, "timestamp": 1729604868365,
         "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx", "text": "Is this still available?",
                     "reply_to": {"story": {"id": "18031234567890123",
                                            "url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"}}}},
        {"sender": {"id": IGSID}, "recipient": {"id": IG}, "timestamp": 1729604870000,
         "message": {"mid": "aWdf2", "attachments": [
             {"type": "share", "payload": {"url": "https://lookaside.fbsbx.com/share"}}]}},
        {"sender": {"id": IG}, "recipient": {"id": IGSID}, "timestamp": 1729604880000,
         "message": {"mid": "aWdf3", "text": "Yes, it is!", "is_echo": True}},
        {"sender": {"id": IGSID}, "recipient": {"id": IG}, "timestamp": 1729604890000,
         "read": {"mid": "aWdf3"}},
    ]}],
}
INSTAGRAM_UNSEND = {"object": "instagram", "entry": [{"time": 1729604900000, "id": IG, "messaging": [
    {"sender": {"id": IGSID}, "recipient": {"id": IG}, "timestamp": 1729604900000,
     "message": {"mid": "aWdf2", "is_deleted": True}}]}]}
INSTAGRAM_STANDBY = {"object": "instagram", "entry": [{"time": 1729604910000, "id": IG, "standby": [
    {"sender": {"id": IGSID}, "recipient": {"id": IG}, "timestamp": 1729604910000,
     "message": {"mid": "aWdfStandby1", "text": "hello from standby"}}]}]}


def wa(value: dict[str, Any], *, waba: str = "1234567890987654321") -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": waba, "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001234", "phone_number_id": PHONE}, **value}}]}]}


# WhatsApp Cloud API reference: text reply with contact profile (reference §2.3).
WHATSAPP_TEXT = wa({
    "contacts": [{"profile": {"name": "Test Name"}, "wa_id": WA_ID, "user_id": "US.13491208655302741918"}],
    "messages": [{"from": WA_ID, "id": "wamid.HBgMOTcyOTg3NjU0MzIxFQIAEhgg", "timestamp": "1697044746",
                  "type": "text", "text": {"body": "replied text"},
                  "context": {"from": "15550001234", "id": "wamid.HBgMprev"}}],
})
# Every message type Meta documents, in one change (a batch of items).
WHATSAPP_TYPES = wa({
    "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": "16315551234"}],
    "messages": [
        {"from": "16315551234", "id": "wamid.int1", "timestamp": "1603059201", "type": "interactive",
         "interactive": {"type": "button_reply", "button_reply": {"id": "unique-button-identifier-here",
                                                                  "title": "button-text"}}},
        {"from": "16315551234", "id": "wamid.list1", "timestamp": "1603059202", "type": "interactive",
         "interactive": {"type": "list_reply", "list_reply": {"id": "list_reply_id", "title": "list_reply_title",
                                                              "description": "list_reply_description"}}},
        {"context": {"from": "15550001234", "id": "wamid.tpl"}, "from": "16315551234", "id": "wamid.btn1",
         "timestamp": "1603059203", "type": "button", "button": {"text": "No", "payload": "No-Button-Payload"}},
        {"from": "16315551234", "id": "wamid.img1", "timestamp": "1603059204", "type": "image",
         "image": {"caption": "CAPTION", "mime_type": "image/jpeg", "sha256": "IMAGE_HASH", "id": "1234567"}},
        {"from": "16315551234", "id": "wamid.rx1", "timestamp": "1603059205", "type": "reaction",
         "reaction": {"message_id": "wamid.HBgMOTcyOTg3NjU0MzIxFQIAEhgg", "emoji": "\U0001f44d"}},
        {"from": "16315551234", "id": "wamid.loc1", "timestamp": "1603059206", "type": "location",
         "location": {"latitude": 38.71, "longitude": -9.14, "name": "Main Street Beach",
                      "address": "Main Street Beach, Santa Cruz, CA"}},
        {"from": "16315551234", "id": "wamid.ref1", "timestamp": "1603059207", "type": "text",
         "text": {"body": "Hi from the ad"},
         "referral": {"source_url": "https://fb.me/ad", "source_id": "ADID", "source_type": "ad",
                      "headline": "AD_TITLE", "body": "AD_DESCRIPTION", "media_type": "image",
                      "image_url": "https://x/img.jpg", "ctwa_clid": "CTWA_CLID"}},
        {"from": "16315551234", "id": "wamid.unk1", "timestamp": "1603059208", "type": "unknown",
         "errors": [{"code": 131051, "details": "Message type is not currently supported",
                     "title": "Unsupported message type"}]},
    ],
})
# Statuses: reference §2.3 (the failed item is a real payload, frappe_whatsapp#133).
WHATSAPP_STATUSES = wa({"statuses": [
    {"id": "wamid.xyz", "status": "sent", "timestamp": "1698266945", "recipient_id": WA_ID,
     "biz_opaque_callback_data": "order-42",
     "conversation": {"id": "7270432eae37498234f4444b35ffc5", "expiration_timestamp": "1698339900",
                      "origin": {"type": "service"}},
     "pricing": {"billable": False, "pricing_model": "PMP", "category": "service",
                 "type": "free_customer_service"}},
    {"id": "wamid.abc", "status": "failed", "timestamp": "1744609253", "recipient_id": WA_ID,
     "errors": [{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                 "error_data": {"details": "Message failed to send because more than 24 hours have passed "
                                           "since the customer last replied to this number."},
                 "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]},
]}, waba="5467539754836534")


def wa_status(wamid: str, status: str, ts: int, *, recipient: str = WA_ID, **extra: Any) -> dict[str, Any]:
    return wa({"statuses": [{"id": wamid, "status": status, "timestamp": str(ts), "recipient_id": recipient,
                             **extra}]})


def messenger_items(*items: dict[str, Any], channel: str = PAGE, obj: str = "page") -> dict[str, Any]:
    return {"object": obj, "entry": [{"id": channel, "time": 1718000000000, "messaging": list(items)}]}


ALL_EXAMPLES = [MESSENGER, messenger_items(*MESSENGER_REFERENCE_ITEMS), INSTAGRAM, INSTAGRAM_UNSEND,
                INSTAGRAM_STANDBY, WHATSAPP_TEXT, WHATSAPP_TYPES, WHATSAPP_STATUSES]


def raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


def clone(payload: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(payload)
