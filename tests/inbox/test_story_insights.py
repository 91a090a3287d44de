"""Instagram's story_insights webhook: parsed into a typed record (every number kept, malformed input a
typed error naming the path) and written by the drain into the organic tables."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from everreach_data.meta.webhooks import StoryInsights, WebhookParseError, parse_webhook
from tests.inbox.helpers import process
from tests.inbox.payloads import IG

# Meta's Instagram webhooks reference, field story_insights (its example values), at a story's expiry.
EXPIRED_AT = 1759435200  # 2025-10-02T20:00:00Z: the story was posted 2025-10-01T20:00Z (10-02 in Tokyo)
STORY_INSIGHTS = {"object": "instagram", "entry": [{"id": IG, "time": EXPIRED_AT, "changes": [{
    "field": "story_insights",
    "value": {"media_id": "17887498072083520", "impressions": 444, "reach": 44, "taps_forward": 4,
              "taps_back": 3, "exits": 3, "replies": 0}}]}]}


def test_metas_example_parses_to_one_record_with_every_number():
    parsed = parse_webhook(STORY_INSIGHTS)
    assert parsed.ignored == 0
    assert parsed.records == [StoryInsights(
        "instagram", IG, "17887498072083520",
        (("impressions", 444), ("reach", 44), ("taps_forward", 4), ("taps_back", 3), ("exits", 3), ("replies", 0)),
        EXPIRED_AT * 1000)]


def test_the_same_field_on_a_page_object_is_not_a_story():
    page = {**STORY_INSIGHTS, "object": "page"}
    assert parse_webhook(page).records == [] and parse_webhook(page).ignored == 1


@pytest.mark.parametrize(("value", "path"), [
    ({"reach": 4}, "entry[0].changes[0].value.media_id"),
    ({"media_id": "", "reach": 4}, "entry[0].changes[0].value.media_id"),
    ("not an object", "entry[0].changes[0].value"),
])
def test_malformed_values_are_typed_errors_naming_the_path(value, path):
    bad = {"object": "instagram", "entry": [{"id": IG, "time": EXPIRED_AT,
                                             "changes": [{"field": "story_insights", "value": value}]}]}
    with pytest.raises(WebhookParseError) as info:
        parse_webhook(bad)
    assert info.value.path == path


metric_names = st.text(st.characters(categories=["Ll"]) | st.just("_"), min_size=1, max_size=20).filter(
    lambda s: s != "media_id")
json_scalars = st.none() | st.booleans() | st.text(max_size=5) | st.lists(st.integers(), max_size=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(metric_names, st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False),
                       max_size=8),
       st.dictionaries(metric_names, json_scalars, max_size=4))
def test_numbers_are_metrics_and_anything_else_is_left_out(numbers, others):
    value = {"media_id": "1789", **{k: v for k, v in others.items() if k not in numbers}, **numbers}
    payload = {"object": "instagram", "entry": [{"id": IG, "changes": [{"field": "story_insights", "value": value}]}]}
    (record,) = parse_webhook(payload).records
    assert dict(record.metrics) == numbers and record.timestamp_ms is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.none() | st.integers() | st.text(max_size=3) | st.lists(st.none()))
def test_mutated_example_only_typed_errors(rnd: random.Random, replacement):
    payload = {"object": "instagram", "entry": [{"id": IG, "time": EXPIRED_AT, "changes": [
        {"field": "story_insights", "value": dict(STORY_INSIGHTS["entry"][0]["changes"][0]["value"])}]}]}
    holders = [payload["entry"][0], payload["entry"][0]["changes"][0], payload["entry"][0]["changes"][0]["value"]]
    holder = rnd.choice(holders)
    holder[rnd.choice(sorted(holder))] = replacement
    try:
        parse_webhook(payload)
    except WebhookParseError:
        pass


def test_the_drain_stores_the_numbers_under_the_stories_utc_day_and_a_replay_keeps_them(db, db_url):
    db.execute(sql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Tokyo'").format(sql.Identifier(db.info.dbname)))
    stats = process(db_url, STORY_INSIGHTS)
    assert (stats.done, stats.failed, stats.messages) == (1, 0, 0)
    post = db.execute("SELECT platform, account_id, media_type, posted_at FROM social_media_post").fetchone()
    assert (post["platform"], post["account_id"], post["media_type"]) == ("instagram", IG, "STORY")
    assert post["posted_at"].timestamp() == EXPIRED_AT - 86400
    rows = db.execute("SELECT platform_post_id, date, metric, value FROM social_post_insights").fetchall()
    assert {(r["platform_post_id"], r["date"].isoformat(), r["metric"], int(r["value"])) for r in rows} == {
        ("17887498072083520", "2025-10-01", m, v)
        for m, v in STORY_INSIGHTS["entry"][0]["changes"][0]["value"].items() if m != "media_id"}
    later = {**STORY_INSIGHTS, "entry": [{**STORY_INSIGHTS["entry"][0], "changes": [{
        "field": "story_insights", "value": {"media_id": "17887498072083520", "reach": 40, "replies": 2}}]}]}
    process(db_url, later)  # a lower reach never replaces a higher one; a new higher value does
    values = {r["metric"]: int(r["value"]) for r in db.execute("SELECT metric, value FROM social_post_insights")}
    assert (values["reach"], values["replies"], len(values)) == (44, 2, 6)
