"""The parser on Meta's published examples, batched payloads, and fuzzed input (typed errors only)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everreach_data.meta.webhooks import (
    Deletion,
    Delivery,
    Message,
    Read,
    Status,
    WebhookParseError,
    parse_webhook,
)
from everreach_sandbox.traffic import TrafficGenerator

from . import payloads as p


def test_messenger_example_every_item():
    parsed = parse_webhook(p.MESSENGER)
    kinds = [type(r).__name__ for r in parsed.records]
    assert kinds == ["Message", "Message", "Message", "Message", "Delivery", "Read"]
    qr, image, postback, echo, delivery, read = parsed.records
    assert (qr.message_type, qr.text, qr.quick_reply_payload, qr.reply_to_id) == (
        "quick_reply", "Size M please", "SIZE_M", "m_prevOutgoingA")
    assert qr.participant_id == p.PSID and qr.channel_id == p.PAGE and qr.timestamp_ms == 1718000000000
    assert image.message_type == "image" and image.attachments[0].url.endswith("x.jpg")
    assert (postback.message_type, postback.text, postback.postback_payload) == (
        "postback", "Talk to an agent", "CARE_HELP")
    assert echo.is_echo and echo.direction == "outbound" and echo.participant_id == p.PSID
    assert echo.app_id == "263902037430900"
    assert isinstance(delivery, Delivery) and delivery.mids == ("m_EchoD",)
    assert delivery.watermark_ms == 1718000020500 and delivery.timestamp_ms == 1718000020500
    assert isinstance(read, Read) and read.watermark_ms == 1718000020500 and read.mid is None


def test_messenger_reference_reaction_postback_referral_and_ignored_optin():
    parsed = parse_webhook(p.messenger_items(*p.MESSENGER_REFERENCE_ITEMS))
    text, reaction, postback = parsed.records
    assert text.text == "hello, world!"
    assert reaction.message_type == "reaction" and reaction.reaction == "\u2764\ufe0f"
    assert reaction.reply_to_id == "mid.1457764197618:41d102a3e1ae206a38"
    assert reaction.mid.startswith("reaction:")  # derived, deterministic: replays deduplicate
    assert parse_webhook(p.messenger_items(*p.MESSENGER_REFERENCE_ITEMS)).records[1].mid == reaction.mid
    assert postback.referral == {"ref": "spring_sale", "source": "SHORTLINK", "type": "OPEN_THREAD"}
    assert parsed.ignored == 1  # the optin


def test_instagram_story_reply_share_echo_read_mid_unsend_standby():
    story, share, echo, read = parse_webhook(p.INSTAGRAM).records
    assert story.platform == "instagram" and story.message_type == "story_reply"
    assert story.story_reply["id"] == "18031234567890123" and story.channel_id == p.IG
    assert share.message_type == "share"
    assert echo.is_echo and echo.participant_id == p.IGSID
    assert isinstance(read, Read) and read.mid == "aWdf3" and read.watermark_ms is None
    (deletion,) = parse_webhook(p.INSTAGRAM_UNSEND).records
    assert isinstance(deletion, Deletion) and deletion.mid == "aWdf2"
    (standby,) = parse_webhook(p.INSTAGRAM_STANDBY).records
    assert isinstance(standby, Message) and standby.text == "hello from standby"


def test_whatsapp_text_with_profile_name_and_seconds_timestamp():
    (msg,) = parse_webhook(p.WHATSAPP_TEXT).records
    assert msg.platform == "whatsapp" and msg.channel_id == p.PHONE and msg.participant_id == p.WA_ID
    assert msg.participant_name == "Test Name"
    assert msg.timestamp_ms == 1697044746000  # seconds → ms
    assert msg.reply_to_id == "wamid.HBgMprev" and msg.text == "replied text"


def test_whatsapp_every_message_type():
    records = parse_webhook(p.WHATSAPP_TYPES).records
    by_id = {r.mid: r for r in records}
    assert len(records) == 8 and all(r.participant_name == "Kerry Fisher" for r in records)
    assert (by_id["wamid.int1"].text, by_id["wamid.int1"].interactive_reply_id) == (
        "button-text", "unique-button-identifier-here")
    assert by_id["wamid.list1"].interactive_reply_id == "list_reply_id"
    assert (by_id["wamid.btn1"].text, by_id["wamid.btn1"].interactive_reply_id) == ("No", "No-Button-Payload")
    assert by_id["wamid.btn1"].reply_to_id == "wamid.tpl"
    img = by_id["wamid.img1"]
    assert img.attachments[0].media_id == "1234567" and img.text == "CAPTION"
    rx = by_id["wamid.rx1"]
    assert rx.reaction == "\U0001f44d" and rx.reply_to_id == "wamid.HBgMOTcyOTg3NjU0MzIxFQIAEhgg"
    assert "Main Street Beach" in by_id["wamid.loc1"].text
    assert by_id["wamid.ref1"].referral["ctwa_clid"] == "CTWA_CLID"
    assert by_id["wamid.unk1"].message_type == "unknown"


def test_whatsapp_statuses_with_errors_conversation_pricing_callback():
    sent, failed = parse_webhook(p.WHATSAPP_STATUSES).records
    assert isinstance(sent, Status) and sent.status == "sent" and sent.timestamp_ms == 1698266945000
    assert sent.biz_opaque_callback_data == "order-42"
    assert sent.conversation["id"] == "7270432eae37498234f4444b35ffc5"
    assert sent.pricing["type"] == "free_customer_service"
    assert failed.status == "failed" and failed.errors[0].code == 131047
    assert failed.errors[0].title == "Re-engagement message" and "24 hours" in failed.errors[0].details


def test_every_entry_change_and_item_of_a_batch_is_parsed():
    value = p.WHATSAPP_TEXT["entry"][0]["changes"][0]["value"]
    two_msgs = {**value, "messages": [value["messages"][0], {**value["messages"][0], "id": "wamid.second"}],
                "statuses": p.WHATSAPP_STATUSES["entry"][0]["changes"][0]["value"]["statuses"]}
    change = {"field": "messages", "value": two_msgs}
    payload = {"object": "whatsapp_business_account",
               "entry": [{"id": "1", "changes": [change, change]}, {"id": "2", "changes": [change]}]}
    records = parse_webhook(payload).records
    assert len(records) == 3 * 4  # 3 changes × (2 messages + 2 statuses)
    page = {"object": "page", "entry": [p.MESSENGER["entry"][0], p.MESSENGER["entry"][0]]}
    assert len(parse_webhook(page).records) == 12


def test_unknown_object_parses_to_nothing_and_other_fields_are_ignored():
    assert parse_webhook({"object": "user", "entry": [{"whatever": 1}]}).records == []
    quality = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "phone_number_quality_update", "value": {"event": "THROUGHPUT_UPGRADE"}}]}]}
    parsed = parse_webhook(quality)
    assert parsed.records == [] and parsed.ignored == 1


@pytest.mark.parametrize("payload, path", [
    ({"object": "page", "entry": {"id": 1}}, "entry"),
    ({"object": "page", "entry": [{"messaging": []}]}, "entry[0].id"),
    ({"object": "page", "entry": [{"id": "1", "messaging": [{"sender": {"id": "2"}, "recipient": {"id": "1"},
                                                             "timestamp": "soon", "message": {"mid": "m"}}]}]},
     "entry[0].messaging[0].timestamp"),
    ({"object": "page", "entry": [{"id": "1", "messaging": [{"sender": {"id": "2"}, "recipient": {"id": "1"},
                                                             "delivery": {"mids": ["m"]}}]}]},
     "entry[0].messaging[0].delivery.watermark"),
    (p.wa({"messages": [{"from": "1", "id": "w", "timestamp": 1.5, "type": "text"}]}),
     "entry[0].changes[0].value.messages[0].timestamp"),
    ({"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {
        "messages": []}}]}]}, "entry[0].changes[0].value.metadata"),
    ({"entry": []}, "object"),
])
def test_malformed_payloads_raise_one_typed_error_naming_the_path(payload, path):
    with pytest.raises(WebhookParseError) as info:
        parse_webhook(payload)
    assert info.value.path == path


def test_traffic_generator_bodies_all_parse():
    bodies = TrafficGenerator(seed=3).bodies()
    for _ in range(500):
        parse_webhook(json.loads(next(bodies)))


# ───────────────────────────── fuzz ─────────────────────────────

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["page", "instagram", "whatsapp_business_account", "messages",
                                             "1718000000000", "subscribe", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["object", "entry", "id", "time", "messaging", "standby", "changes", "field", "value",
                         "sender", "recipient", "timestamp", "message", "mid", "text", "delivery", "read",
                         "watermark", "mids", "statuses", "messages", "metadata", "phone_number_id", "status",
                         "errors", "code", "type", "from", "contacts", "is_echo", "attachments", "postback",
                         "reaction", "reply_to", "story", "interactive", "quick_reply", "payload"]),
        children, max_size=5),
    max_leaves=30)


def _check(payload) -> None:
    try:
        parse_webhook(payload)
    except WebhookParseError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_arbitrary_json_only_typed_errors(payload):
    _check(payload)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(node, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    copy = list(node)
    copy[head] = _replace(node[head], rest, value)
    return copy


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(p.ALL_EXAMPLES), st.randoms(use_true_random=False), json_values)
def test_fuzz_mutated_meta_examples_only_typed_errors(example, rnd: random.Random, value):
    paths = list(_paths(example))
    mutated = example
    for _ in range(rnd.randint(1, 3)):
        paths = list(_paths(mutated))
        mutated = _replace(mutated, rnd.choice(paths), value)
    _check(mutated)
