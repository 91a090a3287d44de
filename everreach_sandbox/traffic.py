"""Realistic, signed Meta webhook traffic for the receiver: ``everreach-data traffic --url … --rate …``.

It produces what Meta produces, in Meta's wire formats, for the sandbox's Page, Instagram account and
WhatsApp number (``SANDBOX_DEFAULTS``), so the system's own sends and this traffic share threads:
Messenger and Instagram messages (text, quick replies, attachments, replies, story replies, shares),
echoes, postbacks, reactions, deliveries with mids and millisecond watermarks, reads (watermark, and
Instagram ``read.mid``), unsends; WhatsApp messages of every common type with the contact's profile name
and business-scoped user id (some users hide their number behind a username: only the id is sent),
sent/delivered/read/failed statuses with conversation and per-message pricing, and now and then a template's
quality changing. Some bodies batch several entries or items, some are posted twice byte-for-byte (Meta's
at-least-once delivery), and receipts are shuffled (a ``read`` may come before its ``delivered``, a status
before its message).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from everreach_sandbox.messaging import KNOWN_WA_USER, TEMPLATES, template_id, template_payload

PAGE_ID = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
IG_ID = SANDBOX_DEFAULTS["INSTAGRAM_USER_ID"]
PHONE_NUMBER_ID = SANDBOX_DEFAULTS["WHATSAPP_PHONE_NUMBER_ID"]
WABA_ID = SANDBOX_DEFAULTS["WABA_ID"]
DISPLAY_PHONE = "15550001234"
APP_ID = int(SANDBOX_DEFAULTS["META_APP_ID"])
#: The sandbox's own known users (sandbox/messaging.py), so sends to them and this traffic share threads.
KNOWN_USERS = {"messenger": "6789012345678901", "instagram": "8422491661125971", "whatsapp": KNOWN_WA_USER[0]}
#: The share of WhatsApp users with a username, whose number Meta leaves out.
USERNAME_SHARE = 0.1
#: (category, type) of the pricing statuses carry, as per-message pricing has them.
PRICING = [("marketing", "regular"), ("utility", "regular"), ("utility", "free_customer_service"),
           ("authentication", "regular"), ("service", "free_customer_service")]
TEXTS = ["Hi! Is this still available?", "Size M please", "What are your opening hours?", "Thanks 👋",
         "Can I change my delivery address?", "¿Tienen envío internacional?", "Great, order placed",
         "When will it ship?", "I need help with my order", "ok"]
NAMES = ["Ana Souza", "Test Name", "Jordan Lee", "Priya Patel", "Chen Wei", "Fatima Zahra", "Lukas Müller"]


def encode(payload: dict[str, Any]) -> bytes:
    """Meta's serialisation: compact, non-ASCII escaped (``\\uXXXX``), signed over exactly these bytes."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()


def sign(secret: str | bytes, raw: bytes) -> dict[str, str]:
    key = secret.encode() if isinstance(secret, str) else secret
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(key, raw, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


@dataclass
class TrafficGenerator:
    """An endless, seeded stream of webhook payloads (dicts); see the module docstring."""

    seed: int = 0
    participants: int = 40
    duplicate_rate: float = 0.05
    #: Seconds since the epoch that the payloads' timestamps say it is (past days, for sample history).
    clock: Callable[[], float] = time.time
    rng: random.Random = field(init=False)
    users: dict[str, list[str]] = field(init=False)
    user_ids: dict[str, str] = field(init=False)       # WhatsApp wa_id → business-scoped user id
    usernames: set[str] = field(init=False)            # wa_ids whose number webhooks leave out
    _counter: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.users = {
            "messenger": [KNOWN_USERS["messenger"]] + [str(self.rng.randrange(10**15, 10**16))
                                                       for _ in range(self.participants)],
            "instagram": [KNOWN_USERS["instagram"]] + [str(self.rng.randrange(10**15, 10**16))
                                                       for _ in range(self.participants)],
            "whatsapp": [KNOWN_USERS["whatsapp"]] + [str(self.rng.randrange(10**10, 10**12))
                                                     for _ in range(self.participants)],
        }
        self.user_ids = {w: f"{self.rng.choice(['US', 'BR', 'IN', 'PT'])}.{self.rng.randrange(10**19, 10**20)}"
                         for w in self.users["whatsapp"]}
        self.user_ids[KNOWN_WA_USER[0]] = KNOWN_WA_USER[1]
        self.usernames = {w for w in self.users["whatsapp"][1:] if self.rng.random() < USERNAME_SHARE}

    # ── ids and clocks ──
    def _id(self, prefix: str) -> str:
        self._counter += 1
        token = hashlib.blake2s(f"{self.seed}:{self._counter}".encode(), digest_size=18).hexdigest()
        return f"{prefix}{token}"

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _user(self, platform: str) -> str:
        return self.rng.choice(self.users[platform])

    # ── Messenger / Instagram ──
    def _page_envelope(self, obj: str, channel: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"object": obj, "entry": [{"id": channel, "time": self._now_ms(), "messaging": items}]}

    def _inbound_item(self, platform: str, user: str, channel: str, ts: int) -> dict[str, Any]:
        kind = self.rng.choice(["text", "text", "text", "quick_reply", "attachment", "reply", "extra"])
        msg: dict[str, Any] = {"mid": self._id("m_" if platform == "messenger" else "aWdf")}
        if kind == "text":
            msg["text"] = self.rng.choice(TEXTS)
        elif kind == "quick_reply":
            msg.update(text="Size M", quick_reply={"payload": "SIZE_M"})
        elif kind == "attachment":
            atype = self.rng.choice(["image", "video", "file", "audio"])
            msg["attachments"] = [{"type": atype, "payload": {"url": f"https://scontent.xx.fbcdn.net/v/{self._id('')}.jpg"}}]
        elif kind == "reply":
            msg.update(text=self.rng.choice(TEXTS), reply_to={"mid": self._id("m_prev")})
        elif platform == "instagram":
            if self.rng.random() < 0.5:
                msg.update(text="Love this!", reply_to={"story": {"id": self._id("1803"),
                                                                   "url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"}})
            else:
                msg["attachments"] = [{"type": "share", "payload": {"url": "https://lookaside.fbsbx.com/share"}}]
        else:
            msg["text"] = self.rng.choice(TEXTS)
        return {"sender": {"id": user}, "recipient": {"id": channel}, "timestamp": ts, "message": msg}

    def _page_conversation(self, platform: str) -> list[dict[str, Any]]:
        """Inbound, an echo, its delivery and read — receipts possibly out of order."""
        obj, channel = ("page", PAGE_ID) if platform == "messenger" else ("instagram", IG_ID)
        user = self._user(platform)
        now = self._now_ms()
        inbound = self._inbound_item(platform, user, channel, now - 3000)
        echo_mid = self._id("m_" if platform == "messenger" else "aWdf")
        echo = {"sender": {"id": channel}, "recipient": {"id": user}, "timestamp": now - 2000,
                "message": {"mid": echo_mid, "is_echo": True, "app_id": APP_ID,
                            "text": "Thanks, an agent will reply shortly."}}
        payloads = [self._page_envelope(obj, channel, [inbound]), self._page_envelope(obj, channel, [echo])]
        if platform == "messenger":
            delivery = {"sender": {"id": user}, "recipient": {"id": channel},
                        "delivery": {"mids": [echo_mid], "watermark": now - 1500}}
            read = {"sender": {"id": user}, "recipient": {"id": channel}, "timestamp": now - 500,
                    "read": {"watermark": now - 1500}}
            receipts = [self._page_envelope(obj, channel, [delivery]), self._page_envelope(obj, channel, [read])]
        else:
            read = {"sender": {"id": user}, "recipient": {"id": channel}, "timestamp": now - 500,
                    "read": {"mid": echo_mid}}
            receipts = [self._page_envelope(obj, channel, [read])]
        self.rng.shuffle(receipts)
        if self.rng.random() < 0.2:  # a receipt before the echo it refers to
            payloads.insert(1, receipts.pop())
        return payloads + receipts

    def _page_misc(self, platform: str) -> list[dict[str, Any]]:
        obj, channel = ("page", PAGE_ID) if platform == "messenger" else ("instagram", IG_ID)
        user = self._user(platform)
        now = self._now_ms()
        choice = self.rng.random()
        if choice < 0.3:
            item = {"sender": {"id": user}, "recipient": {"id": channel}, "timestamp": now,
                    "postback": {"mid": self._id("m_pb"), "title": "Talk to an agent", "payload": "CARE_HELP"}}
            return [self._page_envelope(obj, channel, [item])]
        if choice < 0.5:
            target = self._id("m_")
            item = {"sender": {"id": user}, "recipient": {"id": channel}, "timestamp": now,
                    "reaction": {"mid": target, "action": "react", "reaction": "love", "emoji": "❤"}}
            return [self._page_envelope(obj, channel, [item])]
        if choice < 0.7 and platform == "instagram":  # sent, then unsent
            first = self._inbound_item(platform, user, channel, now - 1000)
            unsend = {"sender": {"id": user}, "recipient": {"id": channel}, "timestamp": now,
                      "message": {"mid": first["message"]["mid"], "is_deleted": True}}
            return [self._page_envelope(obj, channel, [first]), self._page_envelope(obj, channel, [unsend])]
        if choice < 0.8 and platform == "instagram":  # another app owns the thread
            item = self._inbound_item(platform, user, channel, now)
            return [{"object": obj, "entry": [{"id": channel, "time": now, "standby": [item]}]}]
        # Batched: several entries, several items each.
        entries = []
        for _ in range(self.rng.randint(2, 3)):
            items = [self._inbound_item(platform, self._user(platform), channel, now - self.rng.randint(0, 5000))
                     for _ in range(self.rng.randint(1, 3))]
            entries.append({"id": channel, "time": now, "messaging": items})
        return [{"object": obj, "entry": entries}]

    # ── WhatsApp ──
    def _wa_envelope(self, values: list[dict[str, Any]]) -> dict[str, Any]:
        changes = [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": DISPLAY_PHONE, "phone_number_id": PHONE_NUMBER_ID}, **v}}
            for v in values]
        return {"object": "whatsapp_business_account", "entry": [{"id": WABA_ID, "changes": changes}]}

    def _wa_message(self, wa_id: str, ts: int) -> dict[str, Any]:
        kind = self.rng.choice(["text", "text", "text", "interactive", "button", "image", "reaction",
                                "location", "referral"])
        msg: dict[str, Any] = {"id": self._id("wamid.HBgM"), "timestamp": str(ts),
                               "from_user_id": self.user_ids[wa_id]}
        if wa_id not in self.usernames:
            msg["from"] = wa_id
        if kind == "interactive":
            msg.update(type="interactive", interactive={"type": "button_reply",
                                                        "button_reply": {"id": "yes_ship", "title": "Yes"}})
        elif kind == "button":
            msg.update(type="button", button={"payload": "STOP_PROMO", "text": "Stop promotions"})
        elif kind == "image":
            msg.update(type="image", image={"mime_type": "image/jpeg", "sha256": "abc=", "id": self._id("")[:15],
                                            "caption": "my receipt"})
        elif kind == "reaction":
            msg.update(type="reaction", reaction={"message_id": self._id("wamid.HBgM"), "emoji": "👍"})
        elif kind == "location":
            msg.update(type="location", location={"latitude": 38.7, "longitude": -9.1, "name": "Store",
                                                  "address": "Rua Augusta 1"})
        else:
            msg.update(type="text", text={"body": self.rng.choice(TEXTS)})
            if kind == "referral":
                msg["referral"] = {"source_url": "https://fb.me/ad", "source_id": "120200", "source_type": "ad",
                                   "headline": "Summer sale", "body": "Chat with us", "ctwa_clid": self._id("")}
        if self.rng.random() < 0.2:
            msg["context"] = {"from": DISPLAY_PHONE, "id": self._id("wamid.HBgM")}
        return msg

    def _wa_inbound(self) -> list[dict[str, Any]]:
        now = int(self.clock())
        wa_ids = list({self._user("whatsapp") for _ in range(self.rng.randint(1, 3))})
        contacts = [{"profile": {"name": self.rng.choice(NAMES)}, "user_id": self.user_ids[w],
                     **({} if w in self.usernames else {"wa_id": w})} for w in wa_ids]
        messages = [self._wa_message(w, now - self.rng.randint(0, 5)) for w in wa_ids]
        return [self._wa_envelope([{"contacts": contacts, "messages": messages}])]

    def _wa_statuses(self) -> list[dict[str, Any]]:
        """Statuses for a message the business sent, in shuffled order; sometimes it fails instead."""
        wa_id, wamid, now = self._user("whatsapp"), self._id("wamid.HBgM"), int(self.clock())
        base = {"id": wamid, "recipient_user_id": self.user_ids[wa_id],
                **({} if wa_id in self.usernames else {"recipient_id": wa_id})}
        category, kind = self.rng.choice(PRICING)
        pricing = {"billable": kind == "regular", "pricing_model": "PMP", "category": category, "type": kind}
        conversation = {"id": self._id("")[:30], "expiration_timestamp": str(now + 86400),
                        "origin": {"type": "utility"}}
        if self.rng.random() < 0.1:
            failed = {**base, "status": "failed", "timestamp": str(now), "errors": [{
                "code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                "error_data": {"details": "Message failed to send because more than 24 hours have passed "
                                          "since the customer last replied to this number."}}]}
            return [self._wa_envelope([{"statuses": [failed]}])]
        sent = {**base, "status": "sent", "timestamp": str(now - 2), "conversation": conversation,
                "pricing": pricing, "biz_opaque_callback_data": f"order-{self.rng.randint(1, 9999)}"}
        delivered = {**base, "status": "delivered", "timestamp": str(now - 1), "conversation": conversation,
                     "pricing": pricing}
        read = {**base, "status": "read", "timestamp": str(now)}
        statuses = [sent, delivered, read]
        self.rng.shuffle(statuses)
        if self.rng.random() < 0.3:  # batched in one change
            return [self._wa_envelope([{"statuses": statuses}])]
        return [self._wa_envelope([{"statuses": [s]}]) for s in statuses]

    def _wa_template_quality(self) -> list[dict[str, Any]]:
        """A template's quality rating moves (Meta rates templates by how people react to them)."""
        i = self.rng.randrange(len(TEMPLATES))
        name, language = TEMPLATES[i][:2]
        previous, new = self.rng.sample(["GREEN", "YELLOW", "RED"], 2)
        return [template_payload("message_template_quality_update", {
            "previous_quality_score": previous, "new_quality_score": new, "message_template_id": int(template_id(i)),
            "message_template_name": name, "message_template_language": language}, self.clock())]

    # ── the stream ──
    def scenario(self) -> list[dict[str, Any]]:
        """One realistic burst of payloads (a conversation turn, a status sequence, a batch…)."""
        r = self.rng.random()
        if r < 0.25:
            return self._page_conversation("messenger")
        if r < 0.4:
            return self._page_conversation("instagram")
        if r < 0.5:
            return self._page_misc(self.rng.choice(["messenger", "instagram"]))
        if r < 0.75:
            return self._wa_inbound()
        if r < 0.995:
            return self._wa_statuses()
        return self._wa_template_quality()

    def bodies(self) -> Iterator[bytes]:
        """Encoded bodies forever, with byte-identical redeliveries now and then."""
        previous: bytes | None = None
        while True:
            for payload in self.scenario():
                raw = encode(payload)
                yield raw
                if previous is not None and self.rng.random() < self.duplicate_rate:
                    yield previous
                previous = raw


async def post_traffic(url: str, app_secret: str, *, rate: float, count: int | None = None, seed: int = 0,
                       concurrency: int = 16, days_ago: float = 0.0) -> dict[str, int]:
    """POST signed bodies to ``url`` at ``rate`` per second (``count`` of them, or forever). With ``days_ago``,
    their timestamps are spread evenly over that many past days instead of now (sample history)."""
    step = days_ago * 86400 / count if days_ago > 0 and count else 0.0
    now = [time.time() - days_ago * 86400]
    gen = TrafficGenerator(seed=seed, clock=(lambda: now[0]) if step else time.time)
    results = {"posted": 0, "ok": 0, "failed": 0}
    interval = 1.0 / rate if rate > 0 else 0.0
    sem = asyncio.Semaphore(concurrency)

    async def send(client: httpx.AsyncClient, raw: bytes) -> None:
        try:
            response = await client.post(url, content=raw, headers=sign(app_secret, raw))
            results["ok" if response.status_code == 200 else "failed"] += 1
        except httpx.HTTPError:
            results["failed"] += 1
        finally:
            sem.release()

    async with httpx.AsyncClient(timeout=30) as client:
        tasks = set()
        start = time.monotonic()
        for raw in gen.bodies():
            if count is not None and results["posted"] >= count:
                break
            due = start + results["posted"] * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            results["posted"] += 1
            now[0] += step
            task = asyncio.create_task(send(client, raw))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return results


def story_insights_payload(ig_user_id: str, media_id: str, metrics: dict[str, int], at: int) -> dict[str, Any]:
    """Meta's ``story_insights`` webhook for a story that expired at ``at`` (epoch seconds, as Instagram's
    ``changes`` entries carry it): the story's final numbers beside its ``media_id``."""
    return {"object": "instagram", "entry": [{"id": ig_user_id, "time": at, "changes": [
        {"field": "story_insights", "value": {"media_id": media_id, **metrics}}]}]}
