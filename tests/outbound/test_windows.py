"""Policy windows on every platform, at request time (HTTP 202/422) and again at send time (the sandbox
enforces Meta's rules too, so a send that slips past us fails the way Meta fails it)."""

from __future__ import annotations

import pytest

from .helpers import (
    HOUR,
    job_row,
    job_status,
    new_user,
    run_drain,
    sandbox_sent,
    send_messenger,
    send_whatsapp,
    user_wrote,
)

DAY = 24 * HOUR


@pytest.mark.parametrize("platform", ["messenger", "instagram"])
def test_messenger_and_instagram_windows(platform, receiver, sandbox, db, db_url, out_settings):
    inside, human_only, closed, never = (new_user(platform) for _ in range(4))
    user_wrote(db, sandbox, platform, inside, 2 * HOUR)
    user_wrote(db, sandbox, platform, human_only, 30 * HOUR)
    user_wrote(db, sandbox, platform, closed, 8 * DAY)
    user_wrote(db, sandbox, platform, never, None)

    ok = send_messenger(receiver, {"platform": platform, "recipient_id": inside, "text": "Hi",
                                   "quick_replies": [{"content_type": "text", "title": "Help", "payload": "HELP"}]})
    assert ok.status_code == 202, ok.text
    body = ok.json()
    assert (body["status"], body["platform"], body["used_message_tag"]) == ("queued", platform, False)

    # Between 24 h and 7 days: refused for a bot, allowed (and tagged) for a human agent.
    bot = send_messenger(receiver, {"platform": platform, "recipient_id": human_only, "text": "Hi"})
    assert bot.status_code == 422 and "human agent" in bot.json()["error"]["message"]
    assert bot.json()["error"]["window_closed_at"]
    human = send_messenger(receiver, {"platform": platform, "recipient_id": human_only, "text": "Agent here",
                                      "human_agent": True})
    assert human.status_code == 202 and human.json()["used_message_tag"] is True

    for user in (closed, never):
        refused = send_messenger(receiver, {"platform": platform, "recipient_id": user, "text": "Hi",
                                            "human_agent": True})
        assert refused.status_code == 422
        assert "outside the messaging window" in refused.json()["error"]["message"]
    retired = send_messenger(receiver, {"platform": platform, "recipient_id": inside, "text": "Hi",
                                        "tag": "ACCOUNT_UPDATE"})
    assert retired.status_code == 422 and "retired" in retired.json()["error"]["message"]
    assert retired.json()["error"]["field"] == "tag"
    untagged_bot = send_messenger(receiver, {"platform": platform, "recipient_id": human_only, "text": "Hi",
                                             "tag": "HUMAN_AGENT"})
    assert untagged_bot.status_code == 422 and untagged_bot.json()["error"]["field"] == "human_agent"

    report = run_drain(out_settings, db_url)
    assert (report.sent, report.failed) == (2, 0)
    sent = {s["recipient_id"]: s["request"] for s in sandbox_sent(sandbox, platform=platform)}
    assert sent[inside]["messaging_type"] == "RESPONSE" and "tag" not in sent[inside]
    assert sent[inside]["message"]["quick_replies"][0]["payload"] == "HELP"
    assert (sent[human_only]["messaging_type"], sent[human_only]["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    state = job_status(receiver, human.json()["job_id"])
    assert state["status"] == "sent" and state["message_id"] and state["used_message_tag"] is True


def test_whatsapp_windows(receiver, sandbox, db, db_url, out_settings):
    inside, outside = new_user("whatsapp"), new_user("whatsapp")
    user_wrote(db, sandbox, "whatsapp", inside, HOUR)
    user_wrote(db, sandbox, "whatsapp", outside, 2 * DAY)
    text = send_whatsapp(receiver, {"to": "+" + inside, "type": "text", "message": "On its way 🚚"})
    assert text.status_code == 202 and text.json()["recipient_id"] == inside
    refused = send_whatsapp(receiver, {"to": outside, "type": "text", "message": "Hello again"})
    assert refused.status_code == 422
    assert "template" in refused.json()["error"]["message"] and refused.json()["error"]["field"] == "type"
    never = send_whatsapp(receiver, {"to": new_user("whatsapp"), "type": "image",
                                     "media": {"link": "https://cdn.example.com/p.jpg"}})
    assert never.status_code == 422
    template = {"to": outside, "type": "template",
                "template": {"name": "hello_world", "language": {"code": "en_US"}}}
    assert send_whatsapp(receiver, template).status_code == 202
    stranger = send_whatsapp(receiver, {**template, "to": new_user("whatsapp")})
    assert stranger.status_code == 202       # templates need no window at all

    report = run_drain(out_settings, db_url)
    assert (report.sent, report.failed) == (3, 0)
    by_type = sorted(s["request"]["type"] for s in sandbox_sent(sandbox, platform="whatsapp"))
    assert by_type == ["template", "template", "text"]


def test_window_rechecked_at_send_time(receiver, sandbox, db, db_url, out_settings):
    """A message that waited in the queue past its window fails before sending, with Meta's code."""
    user = new_user("messenger")
    user_wrote(db, sandbox, "messenger", user, 2 * HOUR)
    job_id = send_messenger(receiver, {"recipient_id": user, "text": "late"}).json()["job_id"]
    db.execute("UPDATE messaging_policy_window SET expires_at = now() - interval '1 minute'")
    report = run_drain(out_settings, db_url)
    assert report.window_closed == 1 and report.sent == 0
    row = job_row(db, job_id)
    assert (row["status"], row["error_code"], row["error_subcode"], row["attempts"]) == ("failed", 10, 2018278, 0)
    assert "window closed" in row["error_message"]
    assert sandbox_sent(sandbox, recipient_id=user) == []
    message = db.execute("SELECT status, error_code FROM conversation_message WHERE direction = 'outbound'").fetchone()
    assert (message["status"], message["error_code"]) == ("failed", 10)


def test_meta_window_error_is_permanent(receiver, sandbox, db, db_url, out_settings):
    """Our record says the window is open but Meta disagrees (10/2018278): failed at once, never retried."""
    user = new_user("messenger")
    user_wrote(db, sandbox, "messenger", user, HOUR)
    user_wrote(db, sandbox, "messenger", user, None)   # only the sandbox forgets: Meta's view wins
    job_id = send_messenger(receiver, {"recipient_id": user, "text": "hi"}).json()["job_id"]
    report = run_drain(out_settings, db_url, linger_seconds=0.3)
    assert (report.failed, report.retried) == (1, 0)
    row = job_row(db, job_id)
    assert (row["status"], row["error_code"], row["error_subcode"], row["attempts"]) == ("failed", 10, 2018278, 1)
    assert row["error_message"].startswith("outside the messaging window")
    state = job_status(receiver, job_id)
    assert state["status"] == "failed" and state["error"]["code"] == 10
