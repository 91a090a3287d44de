"""Instagram stories: the poll stores live stories and their numbers so far; once Meta stops serving them
(24 hours) nothing stored is lost, and the story_insights webhook brings the final numbers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from everreach_data.inbox.queue import requeue
from everreach_data.organic.defs import instagram_stories_job, social_post_insights
from everreach_sandbox.server import build_app, build_state
from tests.inbox.helpers import process
from tests.organic.helpers import IG, graph, resources, run
from tests.servers import serve

STORY_METRICS = "reach,replies,follows,profile_visits,shares,total_interactions,views,navigation"
STATE = build_state(seed=7)
#: The stories' clock, fixed (their numbers grow hour by hour): 3 h 30 min after yesterday's last story.
NOW = next(n.data["timestamp"] for n in build_app(STATE).state.sandbox.extra["pages"]["stories"]
           if n.data["posted"] < datetime.now(UTC).date()) + timedelta(hours=3, minutes=30)


@pytest.fixture
def sandbox():
    with serve(build_app(build_state(seed=7))) as base:
        set_clock(base, NOW)
        yield base


def set_clock(base: str, moment: datetime) -> None:
    httpx.post(f"{base}/_sandbox/pages/clock", json={"now": moment.isoformat()}).raise_for_status()


def live_stories(base: str) -> dict[str, dict[str, int]]:
    """What Meta serves now, asked independently: each live story's metrics (empty when withheld)."""
    with graph(base) as c:
        stories = c.get(f"/{IG}/stories", params={"fields": "id,timestamp"}).json()["data"]
        out = {}
        for story in stories:
            body = c.get(f"/{story['id']}/insights", params={"metric": STORY_METRICS}).json()
            out[story["id"]] = {e["name"]: e["values"][0]["value"] for e in body.get("data", [])}
    return out


def stored(db) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in db.execute("SELECT i.platform_post_id, i.metric, i.value FROM social_post_insights i "
                        "JOIN social_media_post p USING (platform, platform_post_id) WHERE p.media_type = 'STORY'"):
        out.setdefault(r["platform_post_id"], {})[r["metric"]] = int(r["value"])
    return out


def poll(db_url: str, sandbox: str):
    result = instagram_stories_job.execute_in_process(resources=resources(db_url, sandbox))
    assert result.success
    return result


def test_the_poll_stores_live_stories_and_their_numbers_so_far(db, db_url, sandbox):
    expected = live_stories(sandbox)
    assert expected and any(expected.values())
    poll(db_url, sandbox)
    rows = db.execute("SELECT platform_post_id, media_type, posted_at, metadata FROM social_media_post").fetchall()
    assert {r["platform_post_id"] for r in rows} == set(expected)
    assert all(r["media_type"] == "STORY" and r["metadata"]["media_product_type"] == "STORY" for r in rows)
    assert stored(db) == {k: v for k, v in expected.items() if v}
    dates = {r["platform_post_id"]: r["date"] for r in db.execute(
        "SELECT DISTINCT platform_post_id, date FROM social_post_insights")}
    assert dates == {r["platform_post_id"]: r["posted_at"].astimezone(UTC).date() for r in rows
                     if expected[r["platform_post_id"]]}

    poll(db_url, sandbox)  # again: the same rows, no duplicates
    assert stored(db) == {k: v for k, v in expected.items() if v}


def test_nothing_is_lost_once_meta_stops_serving_a_story(db, db_url, sandbox):
    poll(db_url, sandbox)
    before = stored(db)
    story = next(iter(before))
    set_clock(sandbox, NOW + timedelta(hours=25))
    with graph(sandbox) as c:  # Meta: the story is gone from /stories and has no insights any more
        assert story not in {s["id"] for s in c.get(f"/{IG}/stories").json()["data"]}
        assert c.get(f"/{story}/insights", params={"metric": "reach"}).json() == {"data": []}
    poll(db_url, sandbox)
    day = db.execute("SELECT (posted_at AT TIME ZONE 'UTC')::date AS d FROM social_media_post "
                     "WHERE platform_post_id = %s", (story,)).fetchone()["d"]
    assert run([social_post_insights], db_url, sandbox, day, day).success  # the day's posts re-read
    assert {k: v for k, v in stored(db).items() if k in before} == before


def test_the_webhook_brings_the_final_numbers_and_a_replay_changes_nothing(db, db_url, sandbox):
    poll(db_url, sandbox)
    polled = stored(db)
    set_clock(sandbox, NOW + timedelta(hours=25))
    payloads = httpx.post(f"{sandbox}/_sandbox/pages/stories/expire").json()["payloads"]
    finals = {p["entry"][0]["changes"][0]["value"]["media_id"]: p["entry"][0]["changes"][0]["value"]
              for p in payloads}
    assert set(polled) <= set(finals)  # every polled story has expired and Meta sent its numbers
    stats = process(db_url, *payloads)
    assert stats.done == len(payloads) and stats.failed == 0
    after = stored(db)
    for story, final in finals.items():
        numbers = {k: v for k, v in final.items() if k != "media_id"}
        assert {k: after[story][k] for k in numbers} == numbers  # exactly what Meta sent
        assert after[story]["reach"] >= polled.get(story, {}).get("reach", 0)
        assert {k: v for k, v in after[story].items() if k not in numbers} == {
            k: v for k, v in polled.get(story, {}).items() if k not in numbers}
    count = db.execute("SELECT count(*) AS n FROM social_post_insights").fetchone()["n"]
    with psycopg.connect(db_url, autocommit=True) as conn:  # replay-webhooks: the same events again
        assert requeue(conn, statuses=["done"], handled_objects=["instagram"]) == len(payloads)
    assert process(db_url).done == len(payloads)
    assert stored(db) == after
    assert db.execute("SELECT count(*) AS n FROM social_post_insights").fetchone()["n"] == count


def test_a_story_known_only_from_its_webhook_is_dated_from_its_expiry(db, db_url, sandbox):
    set_clock(sandbox, NOW + timedelta(hours=25))
    payload = httpx.post(f"{sandbox}/_sandbox/pages/stories/expire").json()["payloads"][0]
    value = payload["entry"][0]["changes"][0]["value"]
    expired = datetime.fromtimestamp(payload["entry"][0]["time"], UTC)
    process(db_url, payload)
    post = db.execute("SELECT account_id, media_type, posted_at FROM social_media_post "
                      "WHERE platform_post_id = %s", (value["media_id"],)).fetchone()
    assert (post["account_id"], post["media_type"]) == (IG, "STORY")
    assert post["posted_at"] == expired - timedelta(hours=24)
    rows = db.execute("SELECT date, metric, value FROM social_post_insights WHERE platform_post_id = %s",
                      (value["media_id"],)).fetchall()
    assert {r["metric"]: int(r["value"]) for r in rows} == {k: v for k, v in value.items() if k != "media_id"}
    assert {r["date"] for r in rows} == {(expired - timedelta(hours=24)).date()}


def test_end_to_end_meta_posts_story_insights_to_the_receiver_and_the_drain_stores_them(db, db_url, settings):
    from everreach_data.receiver.app import create_app

    state = build_state(seed=7)
    with serve(build_app(state)) as sandbox, serve(create_app(settings, db_url)) as receiver:
        state.webhook_url = f"{receiver}/api/webhooks/meta"
        set_clock(sandbox, NOW)
        poll(db_url, sandbox)
        polled = stored(db)
        set_clock(sandbox, NOW + timedelta(hours=25))
        poll(db_url, sandbox)  # Meta posts each expired story's webhook; here, after the poll's /stories call
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not db.execute(
                "SELECT count(*) AS n FROM meta_webhook_event WHERE object = 'instagram'").fetchone()["n"] >= len(
                polled):
            time.sleep(0.05)
    events = db.execute("SELECT status, payload FROM meta_webhook_event").fetchall()
    assert {e["status"] for e in events} == {"pending"}
    assert process(db_url).done == len(events)
    finals = {e["payload"]["entry"][0]["changes"][0]["value"]["media_id"]: e["payload"] for e in events}
    assert set(polled) <= set(finals)
    after = stored(db)
    assert all({"impressions", "taps_forward", "exits"} <= set(after[s]) for s in finals)
