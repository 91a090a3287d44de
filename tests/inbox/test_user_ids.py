"""WhatsApp's business-scoped user ids (since April 2026): a contact known by phone number, by user id, or by
both is one thread, whatever order Meta's webhooks come in, and ``user_id_update`` re-keys it."""

from __future__ import annotations

from typing import Any

from everreach_data.meta.webhooks import Message, UserIdUpdate, parse_webhook

from . import payloads as p
from .helpers import outbound, process

USER = "US.13491208655302741918"
NEW_USER = "US.24817305912873645029"
PHONE_NUMBER = "972987654321"


def _message(wamid: str, ts: int, *, phone: str | None, user_id: str | None, name: str = "Ana") -> dict[str, Any]:
    contact: dict[str, Any] = {"profile": {"name": name}}
    message: dict[str, Any] = {"id": wamid, "timestamp": str(ts), "type": "text", "text": {"body": wamid}}
    if phone:
        contact["wa_id"] = message["from"] = phone
    if user_id:
        contact["user_id"] = message["from_user_id"] = user_id
    return p.wa({"contacts": [contact], "messages": [message]})


def _user_id_update(previous: str, current: str, ts: int, phone: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"detail": "User id for Ana has been updated.", "timestamp": str(ts),
                            "user_id": {"previous": previous, "current": current}}
    if phone:
        item["wa_id"] = phone
    payload = p.wa({"user_id_update": [item]})
    payload["entry"][0]["changes"][0]["field"] = "user_id_update"
    return payload


def _threads(db) -> list[dict[str, Any]]:
    return db.execute("SELECT t.thread_id, participant_id, participant_user_id, participant_name, "
                      "(SELECT count(*) FROM conversation_message m WHERE m.thread_id = t.thread_id) AS messages "
                      "FROM conversation_thread t WHERE platform = 'whatsapp' ORDER BY created_at").fetchall()


def test_the_parser_reads_user_ids_wherever_meta_puts_them():
    both, = parse_webhook(_message("wamid.a", 1_780_000_000, phone=PHONE_NUMBER, user_id=USER)).records
    assert (both.participant_id, both.participant_phone, both.participant_user_id) == (PHONE_NUMBER, PHONE_NUMBER, USER)
    alone, = parse_webhook(_message("wamid.b", 1_780_000_001, phone=None, user_id=USER)).records
    assert isinstance(alone, Message) and (alone.participant_id, alone.participant_phone) == (USER, None)
    # Meta's system message when the id itself changes has no `from` at all, only the new id.
    system = p.wa({"messages": [{"id": "wamid.sys", "timestamp": "1780000002", "type": "system", "system": {
        "body": f"User Ana changed from {USER} to {NEW_USER}", "user_id": NEW_USER, "type": "user_changed_user_id"}}]})
    changed, = parse_webhook(system).records
    assert changed.participant_id == NEW_USER and changed.message_type == "system"
    update, = parse_webhook(_user_id_update(USER, NEW_USER, 1_780_000_003, phone="972900000001")).records
    assert update == UserIdUpdate(p.PHONE, USER, NEW_USER, 1_780_000_003_000, "972900000001")


def test_a_user_id_only_message_and_a_later_phone_and_user_id_message_are_one_thread(db, db_url):
    process(db_url, _message("wamid.username-only", 1_780_000_000, phone=None, user_id=USER))
    first, = _threads(db)
    assert (first["participant_id"], first["participant_user_id"]) == (USER, USER)

    process(db_url, _message("wamid.with-number", 1_780_000_100, phone=PHONE_NUMBER, user_id=USER))
    thread, = _threads(db)
    assert thread["thread_id"] == first["thread_id"] and thread["messages"] == 2
    assert (thread["participant_id"], thread["participant_user_id"]) == (PHONE_NUMBER, USER)

    # Meta leaves the number out again (the user adopted a username): still the same thread.
    process(db_url, _message("wamid.username-again", 1_780_000_200, phone=None, user_id=USER))
    again, = _threads(db)
    assert again["thread_id"] == first["thread_id"] and again["messages"] == 3


def test_a_phone_thread_and_a_user_id_thread_of_one_person_merge_when_meta_links_them(db, db_url):
    """Known first by phone alone (before 2026), then by user id alone: two threads until a webhook names
    both, then one — messages, windows and the name kept, nothing duplicated."""
    process(db_url, _message("wamid.old", 1_770_000_000, phone=PHONE_NUMBER, user_id=None, name="Ana Souza"))
    process(db_url, _message("wamid.new", 1_780_000_000, phone=None, user_id=USER, name="ana"))
    assert len(_threads(db)) == 2
    process(db_url, _message("wamid.both", 1_780_000_100, phone=PHONE_NUMBER, user_id=USER, name="Ana Souza"))
    thread, = _threads(db)
    assert (thread["participant_id"], thread["participant_user_id"], thread["messages"]) == (PHONE_NUMBER, USER, 3)
    windows = db.execute("SELECT window_type, opened_at FROM messaging_policy_window WHERE thread_id = %s",
                         (thread["thread_id"],)).fetchall()
    assert [w["window_type"] for w in windows] == ["standard"]
    assert windows[0]["opened_at"].timestamp() == 1_780_000_100


def test_a_send_to_a_phone_number_and_replies_by_user_id_share_the_thread(db, db_url):
    """Our own send created the thread by phone number; the user answers by user id once Meta links them."""
    outbound(db, "whatsapp", p.PHONE, PHONE_NUMBER, mid="wamid.ours")
    process(db_url, _message("wamid.reply", 1_780_000_000, phone=PHONE_NUMBER, user_id=USER),
            _message("wamid.later", 1_780_000_050, phone=None, user_id=USER))
    thread, = _threads(db)
    assert (thread["participant_id"], thread["participant_user_id"], thread["messages"]) == (PHONE_NUMBER, USER, 3)


def test_user_id_update_re_keys_the_thread_without_duplicating_it(db, db_url):
    process(db_url, _message("wamid.1", 1_780_000_000, phone=None, user_id=USER))
    # The id rotates (e.g. a new phone number): the system message names the new id before the update does.
    process(db_url, _message("wamid.2", 1_780_000_100, phone=None, user_id=NEW_USER))
    assert len(_threads(db)) == 2
    process(db_url, _user_id_update(USER, NEW_USER, 1_780_000_200))
    thread, = _threads(db)
    assert (thread["participant_id"], thread["participant_user_id"], thread["messages"]) == (NEW_USER, NEW_USER, 2)
    process(db_url, _message("wamid.3", 1_780_000_300, phone=None, user_id=NEW_USER))
    assert [t["messages"] for t in _threads(db)] == [3]
    # Replaying everything changes nothing.
    before = _threads(db)
    db.execute("UPDATE meta_webhook_event SET status = 'pending'")
    process(db_url)
    assert _threads(db) == before


def test_a_late_redelivery_of_the_old_id_does_not_undo_the_update(db, db_url):
    process(db_url, _message("wamid.1", 1_780_000_000, phone=PHONE_NUMBER, user_id=USER))
    process(db_url, _user_id_update(USER, NEW_USER, 1_780_000_200, phone=PHONE_NUMBER))
    process(db_url, _message("wamid.late", 1_780_000_100, phone=PHONE_NUMBER, user_id=USER))
    thread, = _threads(db)
    assert (thread["participant_id"], thread["participant_user_id"], thread["messages"]) == (PHONE_NUMBER, NEW_USER, 2)
