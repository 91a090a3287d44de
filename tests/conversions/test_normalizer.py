"""Meta's Conversions API normalizer: hashing rules, pre-hashed passthrough, clear per-field errors."""

from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from everreach_data.meta.capi import (
    HASHED_FIELDS,
    ConversionInputError,
    ServerEvent,
    custom_data,
    normalize_user_data,
    normalize_value,
    validate_event,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(("field", "raw", "normal"), [
    ("em", "  John.Doe@Example.COM ", "john.doe@example.com"),
    ("ph", "+1 (217) 799-6721", "12177996721"),
    ("ph", "0044 20 7946 0958", "442079460958"),
    ("fn", " Mary ", "mary"),
    ("ge", "Female", "f"),
    ("db", "1997-12-26", "19971226"),
    ("ct", "San Francisco", "sanfrancisco"),
    ("st", "C.A.", "ca"),
    ("zp", "94025-1234", "94025"),
    ("country", "US", "us"),
    ("external_id", " CRM-42 ", "crm-42"),
])
def test_meta_rules_then_sha256(field, raw, normal):
    assert normalize_value(field, raw) == sha(normal)


def test_prehashed_values_pass_through_and_unhashed_fields_are_sent_as_given():
    already = sha("someone@example.com")
    out = normalize_user_data({"em": already.upper(), "fbp": "fb.1.1596403881668.1116446470",
                               "client_user_agent": "Mozilla/5.0", "client_ip_address": "203.0.113.9"})
    assert out == {"em": already, "fbp": "fb.1.1596403881668.1116446470", "client_user_agent": "Mozilla/5.0",
                   "client_ip_address": "203.0.113.9"}


@pytest.mark.parametrize(("field", "raw"), [("em", "not-an-email"), ("ph", "12345"), ("ph", "0123456789"),
                                            ("country", "United States"), ("ge", "x"), ("db", "1997-13-45")])
def test_unusable_values_name_their_field(field, raw):
    with pytest.raises(ConversionInputError) as info:
        normalize_user_data({field: raw})
    assert info.value.field == field


emails = st.emails()
phones = st.integers(min_value=10**9, max_value=10**14 - 1).map(str)


@given(st.fixed_dictionaries({}, optional={"em": emails, "ph": phones, "fn": st.text(min_size=1, max_size=20),
                                           "external_id": st.text(min_size=1, max_size=30)}))
def test_output_is_only_hashes_and_normalizing_twice_changes_nothing(raw):
    try:
        once = normalize_user_data(raw)
    except ConversionInputError:
        return  # a typed, field-naming error is an allowed outcome for odd input
    assert all(len(v) == 64 and int(v, 16) >= 0 for k, v in once.items() if k in HASHED_FIELDS)
    for value in raw.values():
        if value.strip() and len(value.strip()) != 64:
            assert value not in once.values()
    assert normalize_user_data(once) == once


@given(emails, st.sampled_from(["", " ", "\t"]), st.booleans())
def test_email_case_and_whitespace_do_not_change_the_hash(email, pad, upper):
    variant = pad + (email.upper() if upper else email) + pad
    assert normalize_value("em", variant) == normalize_value("em", email)


@given(phones)
def test_phone_punctuation_does_not_change_the_hash(digits):
    formatted = f"+{digits[:2]} ({digits[2:5]}) {digits[5:8]}-{digits[8:]}"
    assert normalize_value("ph", formatted) == normalize_value("ph", digits)


def event(**overrides) -> ServerEvent:
    base = dict(event_name="Purchase", event_time=int(time.time()) - 60, event_id="e1", action_source="website",
                user_data=normalize_user_data({"em": "a@b.co", "client_user_agent": "UA"}),
                custom_data=custom_data(value=10, currency="usd"), event_source_url="https://shop.example/thanks")
    base.update(overrides)
    return ServerEvent(**base)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"event_time": int(time.time()) - 8 * 86400}, "event_time"),
    ({"event_time": int(time.time()) + 3600}, "event_time"),
    ({"action_source": "carrier_pigeon"}, "action_source"),
    ({"event_source_url": None}, "event_source_url"),
    ({"user_data": {"client_user_agent": "UA"}}, "user_data"),
    ({"user_data": {"client_ip_address": "203.0.113.7"}, "action_source": "app"}, "user_data"),  # IP needs its UA
    ({"custom_data": custom_data(value=10)}, "currency"),
    ({"custom_data": custom_data(currency="usd")}, "value"),
])
def test_event_rules_are_checked_before_sending(overrides, field):
    with pytest.raises(ConversionInputError) as info:
        validate_event(event(**overrides))
    assert info.value.field == field


def test_custom_data_currency_is_iso_and_content_ids_count_items():
    assert custom_data(value="29.99", currency="usd", content_ids=["p1", "p2"]) == {
        "value": 29.99, "currency": "USD", "content_ids": ["p1", "p2"], "num_items": 2}
    with pytest.raises(ConversionInputError, match="currency"):
        custom_data(currency="dollars")
