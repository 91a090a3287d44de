"""Pure parts, property-tested: Meta's messaging wire formats and the policy decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from everreach_data.meta import messaging as wire
from everreach_data.meta.errors import GraphAPIError, GraphTransportError, error_for
from everreach_data.outbound.policy import PolicyViolation, Windows, decide_messenger, decide_whatsapp
from everreach_data.outbound.queue import _strip_ref

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
hours = st.one_of(st.none(), st.floats(min_value=-400, max_value=400, allow_nan=False))


def _at(h: float | None) -> datetime | None:
    return None if h is None else NOW + timedelta(hours=h)


def _open(h: float | None) -> bool:
    return h is not None and _at(h) > NOW


@given(st.text(alphabet="+ -().0123456789", max_size=30))
def test_wa_id_is_the_digits(raw):
    assert wire.normalize_wa_id(raw) == "".join(c for c in raw if c.isdigit())


@given(st.text(min_size=1, max_size=40), st.sampled_from(wire.PLATFORMS), st.uuids())
def test_job_reference_is_where_meta_echoes_it_and_ignored_for_idempotency(text, platform, job_id):
    base = (wire.whatsapp_request("12177996721", "text", text=text) if platform == "whatsapp"
            else wire.messenger_request("123", text=text))
    tagged = wire.with_job_reference(platform, base, str(job_id))
    where = tagged.get("biz_opaque_callback_data") or tagged["message"]["metadata"]
    assert where == str(job_id) and _strip_ref(tagged) == _strip_ref(base)
    assert base.get("message", {}).get("metadata") is None        # the original is not mutated


@given(st.text(min_size=1, max_size=60), st.text(max_size=20))
def test_send_responses_parse_to_meta_ids(mid, recipient):
    assert wire.parse_send_response("messenger", {"recipient_id": recipient, "message_id": mid}).message_id == mid
    wa = wire.parse_send_response("whatsapp", {"messaging_product": "whatsapp",
                                               "contacts": [{"input": "+" + recipient, "wa_id": recipient}],
                                               "messages": [{"id": mid, "message_status": "accepted"}]})
    assert (wa.message_id, wa.recipient_id, wa.accepted_status) == (mid, recipient, "accepted")


@pytest.mark.parametrize("platform, body", [("messenger", {}), ("whatsapp", {"messages": []}),
                                            ("whatsapp", {"messages": [{}]})])
def test_a_200_without_an_id_is_an_error(platform, body):
    with pytest.raises(GraphAPIError):
        wire.parse_send_response(platform, body)


@given(hours, hours, st.booleans(), st.sampled_from([None, "HUMAN_AGENT", "ACCOUNT_UPDATE",
                                                     "POST_PURCHASE_UPDATE", "SHIPPING_UPDATE"]))
def test_messenger_policy(std_h, human_h, human_agent, tag):
    windows = Windows(_at(std_h), _at(human_h))
    try:
        decision = decide_messenger(windows, NOW, human_agent=human_agent, tag=tag)
    except PolicyViolation:
        std_open, human_open = _open(std_h), _open(human_h)
        assert (tag not in (None, "HUMAN_AGENT") or (tag == "HUMAN_AGENT" and not human_agent)
                or not (std_open or (human_open and human_agent)))
        return
    assert tag in (None, "HUMAN_AGENT")
    if decision.tag:           # tagged only for a person, only when the 24 h window is closed
        assert human_agent and decision.messaging_type == "MESSAGE_TAG" and not _open(std_h)
        assert _open(human_h) and decision.window_rule == "human_agent"
    else:
        assert decision.messaging_type == "RESPONSE" and _open(std_h)


@given(hours, st.booleans())
def test_whatsapp_policy(std_h, template):
    try:
        decision = decide_whatsapp(Windows(_at(std_h)), NOW, is_template=template)
    except PolicyViolation as exc:
        assert not template and not _open(std_h) and "template" in str(exc)
        return
    assert decision.window_rule == ("none" if template else "standard") and not decision.used_message_tag


def test_plain_errors_say_what_happened():
    def err(code, subcode=None):
        return error_for("x", code=code, subcode=subcode, http_status=400).plain()
    assert err(10, 2018278).startswith("outside the messaging window")
    assert err(131047).startswith("outside the 24-hour window: WhatsApp only accepts a template")
    assert err(551, 1545041).startswith("recipient unavailable")
    assert err(131026).startswith("undeliverable") and err(132001).startswith("template problem")
    assert err(190).startswith("access token") and err(100).startswith("invalid parameter")
    request = httpx.Request("POST", "https://graph.facebook.com/v24.0/me/messages")
    assert GraphTransportError.from_exception(httpx.ReadTimeout("timed out", request=request)).may_have_taken_effect
    assert not GraphTransportError.from_exception(httpx.ConnectError("refused", request=request)).may_have_taken_effect
    assert not error_for("HTTP 502", http_status=502).may_have_taken_effect
