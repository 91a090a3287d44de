"""Processing stored webhook events into threads, messages, receipts and windows, on real Postgres."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from everreach_data.cli import main as cli_main
from everreach_data.db.run_liveness import LiveRuns, live_runs
from everreach_data.inbox import queue as inbox
from everreach_data.inbox.apply import apply_records
from everreach_data.inbox.batches import DIED, as_ranges
from everreach_data.inbox.drain import DEFAULT_MAX_ATTEMPTS, DRAIN_APPLICATION, drain, drain_url
from everreach_data.meta.webhooks import Message, parse_webhook
from everreach_sandbox.traffic import TrafficGenerator

from . import payloads as p
from .helpers import enqueue, message, outbound, process, snapshot


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def test_messenger_example_writes_thread_messages_receipts_and_windows(db_url, db):
    stats = process(db_url, p.MESSENGER)
    assert (stats.done, stats.failed) == (1, 0)
    thread = db.execute("SELECT * FROM conversation_thread").fetchone()
    assert (thread["platform"], thread["channel_id"], thread["participant_id"]) == ("messenger", p.PAGE, p.PSID)
    qr = message(db, "m_Ab3xYzQ")
    assert (qr["direction"], qr["message_type"], qr["content"], qr["status"], qr["reply_to_id"]) == (
        "inbound", "quick_reply", "Size M please", "received", "m_prevOutgoingA")
    assert qr["sent_at"] == ms(1718000000000) and qr["payload"]["quick_reply"] == {"payload": "SIZE_M"}
    assert message(db, "m_ImgB")["message_type"] == "image"
    assert message(db, "m_PbC")["message_type"] == "postback"
    echo = message(db, "m_EchoD")
    assert (echo["direction"], echo["is_echo"], echo["status"]) == ("outbound", True, "read")
    assert echo["delivered_at"] == ms(1718000020500) and echo["read_at"] == ms(1718000030000)
    windows = {w["window_type"]: w for w in db.execute("SELECT * FROM messaging_policy_window")}
    assert windows["standard"]["opened_at"] == ms(1718000010000)  # Meta's time of the last inbound item
    assert windows["standard"]["expires_at"] == ms(1718000010000) + timedelta(hours=24)
    assert windows["human_agent"]["expires_at"] == ms(1718000010000) + timedelta(days=7)
    assert thread["last_inbound_at"] == ms(1718000010000) and thread["last_message_at"] == ms(1718000020000)
    events = db.execute("SELECT event_type, platform_message_id, watermark, applied FROM message_delivery_event "
                        "ORDER BY event_type, platform_message_id").fetchall()
    assert [(e["event_type"], e["platform_message_id"], e["applied"]) for e in events] == [
        ("delivered", "m_EchoD", True), ("delivered", None, True), ("read", None, True)]
    assert db.execute("SELECT count(*) AS n FROM user_event").fetchone()["n"] == 4


def test_instagram_example_read_mid_unsend_and_standby(db_url, db):
    process(db_url, p.INSTAGRAM, p.INSTAGRAM_STANDBY)
    story = message(db, "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx")
    assert story["message_type"] == "story_reply" and story["payload"]["reply_to"]["story"]["id"]
    assert message(db, "aWdf3")["status"] == "read"  # echo read via read.mid
    assert message(db, "aWdfStandby1")["content"] == "hello from standby"
    process(db_url, p.INSTAGRAM_UNSEND)
    assert message(db, "aWdf2")["status"] == "deleted"
    thread = db.execute("SELECT * FROM conversation_thread").fetchone()
    assert (thread["platform"], thread["channel_id"], thread["participant_id"]) == ("instagram", p.IG, p.IGSID)


def test_whatsapp_messages_profile_name_and_statuses_with_errors(db_url, db):
    outbound(db, "whatsapp", p.PHONE, p.WA_ID, mid="wamid.xyz", status="sending")
    outbound(db, "whatsapp", p.PHONE, p.WA_ID, mid="wamid.abc")
    process(db_url, p.WHATSAPP_TEXT, p.WHATSAPP_TYPES, p.WHATSAPP_STATUSES)
    thread = db.execute("SELECT * FROM conversation_thread WHERE participant_id = %s", (p.WA_ID,)).fetchone()
    assert thread["channel_id"] == p.PHONE and thread["participant_name"] == "Test Name"
    assert message(db, "wamid.HBgMOTcyOTg3NjU0MzIxFQIAEhgg")["sent_at"] == ms(1697044746000)
    assert db.execute("SELECT count(*) AS n FROM conversation_message WHERE platform = 'whatsapp' "
                      "AND direction = 'inbound'").fetchone()["n"] == 9
    assert message(db, "wamid.int1")["content"] == "button-text"
    assert message(db, "wamid.rx1")["reply_to_id"] == "wamid.HBgMOTcyOTg3NjU0MzIxFQIAEhgg"
    assert message(db, "wamid.xyz")["status"] == "sent"
    failed = message(db, "wamid.abc")
    assert (failed["status"], failed["error_code"], failed["error_message"]) == (
        "failed", 131047, "Re-engagement message")
    sent_event = db.execute("SELECT * FROM message_delivery_event WHERE platform_message_id = 'wamid.xyz'").fetchone()
    assert sent_event["applied"] and sent_event["payload"]["biz_opaque_callback_data"] == "order-42"
    assert sent_event["payload"]["pricing"]["category"] == "service"
    assert sent_event["payload"]["conversation"]["id"] == "7270432eae37498234f4444b35ffc5"
    kinds = {r["window_type"] for r in db.execute("SELECT window_type FROM messaging_policy_window")}
    assert kinds == {"standard"}  # WhatsApp has no human-agent window


def test_out_of_order_statuses_are_monotonic_and_failed_is_terminal(db_url, db):
    outbound(db, "whatsapp", p.PHONE, p.WA_ID, mid="wamid.o1")
    process(db_url, p.wa_status("wamid.o1", "read", 1700000100))
    process(db_url, p.wa_status("wamid.o1", "delivered", 1700000090))  # late delivered
    row = message(db, "wamid.o1")
    assert row["status"] == "read"
    assert row["delivered_at"] == ms(1700000090000) and row["read_at"] == ms(1700000100000)
    process(db_url, p.wa_status("wamid.o1", "failed", 1700000200, errors=[{"code": 131026, "title": "Undeliverable"}]))
    process(db_url, p.wa_status("wamid.o1", "sent", 1700000300))
    row = message(db, "wamid.o1")
    assert (row["status"], row["error_code"], row["error_message"]) == ("failed", 131026, "Undeliverable")


def test_read_watermarks_out_of_order_never_regress(db_url, db):
    first = outbound(db, "messenger", p.PAGE, p.PSID, mid="m_w1", sent_at="2024-06-10 06:00:00+00")
    second = outbound(db, "messenger", p.PAGE, p.PSID, mid="m_w2", sent_at="2024-06-10 06:10:00+00")
    between = int(datetime(2024, 6, 10, 6, 5, tzinfo=UTC).timestamp() * 1000)
    later = int(datetime(2024, 6, 10, 6, 20, tzinfo=UTC).timestamp() * 1000)
    earlier = int(datetime(2024, 6, 10, 5, 0, tzinfo=UTC).timestamp() * 1000)
    sender = {"sender": {"id": p.PSID}, "recipient": {"id": p.PAGE}}
    process(db_url, p.messenger_items({**sender, "timestamp": between, "read": {"watermark": between}}))
    status = lambda mid: db.execute(  # noqa: E731
        "SELECT status FROM conversation_message WHERE message_id = %s", (mid,)).fetchone()["status"]
    assert (status(first), status(second)) == ("read", "sent")
    process(db_url, p.messenger_items({**sender, "delivery": {"watermark": earlier}}))  # late, older
    assert (status(first), status(second)) == ("read", "sent")
    process(db_url, p.messenger_items({**sender, "delivery": {"mids": [], "watermark": later}}))
    assert (status(first), status(second)) == ("read", "delivered")


def test_echoes_after_their_watermarks_land_delivered_or_read_in_one_write(db_url, db):
    at = lambda minute: int(datetime(2024, 6, 10, 6, minute, tzinfo=UTC).timestamp() * 1000)  # noqa: E731
    user = {"sender": {"id": p.PSID}, "recipient": {"id": p.PAGE}}
    process(db_url, p.messenger_items({**user, "timestamp": at(31), "delivery": {"watermark": at(30)}},
                                      {**user, "timestamp": at(21), "read": {"watermark": at(20)}}))
    page = {"sender": {"id": p.PAGE}, "recipient": {"id": p.PSID}}
    echoes = p.messenger_items(*({**page, "timestamp": at(m), "message": {"mid": f"m_e{m}", "is_echo": True}}
                                 for m in (10, 25, 40)))
    with db.transaction():
        apply_records(db, parse_webhook(echoes).records)
        rewritten = db.execute("SELECT pg_stat_get_xact_tuples_updated('conversation_message'::regclass) AS n")
        assert rewritten.fetchone()["n"] == 0  # inserted with their status, not inserted `sent` and updated
    rows = {r["platform_message_id"]: r for r in db.execute(
        "SELECT platform_message_id, status, delivered_at, read_at FROM conversation_message")}
    assert {mid: r["status"] for mid, r in rows.items()} == {"m_e10": "read", "m_e25": "delivered",
                                                           "m_e40": "sent"}
    assert (rows["m_e10"]["delivered_at"], rows["m_e10"]["read_at"]) == (ms(at(21)), ms(at(21)))
    assert (rows["m_e25"]["delivered_at"], rows["m_e25"]["read_at"]) == (ms(at(31)), None)


def test_receipts_before_the_message_apply_when_the_sender_stores_its_id(db_url, db):
    process(db_url, p.wa_status("wamid.late", "delivered", 1700000010), p.wa_status("wamid.late", "read", 1700000020))
    pending = db.execute("SELECT count(*) AS n FROM message_delivery_event WHERE NOT applied").fetchone()["n"]
    assert pending == 2
    queued = outbound(db, "whatsapp", p.PHONE, p.WA_ID, mid=None, status="queued")
    db.execute("UPDATE conversation_message SET platform_message_id = 'wamid.late', status = 'sent' "
               "WHERE message_id = %s", (queued,))
    row = message(db, "wamid.late")
    assert row["message_id"] == queued and row["status"] == "read" and row["read_at"] == ms(1700000020000)
    assert db.execute("SELECT count(*) AS n FROM message_delivery_event WHERE applied AND message_id = %s",
                      (queued,)).fetchone()["n"] == 2
    # A Messenger read watermark that came before our message got its mid.
    wm = int(datetime(2024, 6, 10, 7, 0, tzinfo=UTC).timestamp() * 1000)
    process(db_url, p.messenger_items({"sender": {"id": p.PSID}, "recipient": {"id": p.PAGE}, "timestamp": wm,
                                       "read": {"watermark": wm}}))
    msgr = outbound(db, "messenger", p.PAGE, p.PSID, mid=None, status="queued", sent_at="2024-06-10 06:59:00+00")
    db.execute("UPDATE conversation_message SET platform_message_id = 'm_after', status = 'sent' "
               "WHERE message_id = %s", (msgr,))
    assert message(db, "m_after")["status"] == "read"


def test_echo_of_our_send_updates_our_row_even_when_it_arrives_first(db_url, db):
    ours = outbound(db, "messenger", p.PAGE, p.PSID, mid="m_ours", status="sending")
    echo = {"sender": {"id": p.PAGE}, "recipient": {"id": p.PSID}, "timestamp": 1718000000000}
    process(db_url, p.messenger_items({**echo, "message": {"mid": "m_ours", "is_echo": True, "text": "hi"}}))
    rows = db.execute("SELECT message_id, status FROM conversation_message").fetchall()
    assert rows == [{"message_id": ours, "status": "sent"}]
    # Echo (and its delivery) processed before the sender stored Meta's id: folded in when it does.
    queued = outbound(db, "messenger", p.PAGE, p.PSID, mid=None, status="queued")
    process(db_url, p.messenger_items({**echo, "message": {"mid": "m_race", "is_echo": True, "text": "yo"}},
                                      {"sender": {"id": p.PSID}, "recipient": {"id": p.PAGE},
                                       "delivery": {"mids": ["m_race"], "watermark": 1718000000500}}))
    assert message(db, "m_race")["message_id"] != queued
    db.execute("UPDATE conversation_message SET platform_message_id = 'm_race', status = 'sent' "
               "WHERE message_id = %s", (queued,))
    row = message(db, "m_race")
    assert row["message_id"] == queued and row["status"] == "delivered"
    assert db.execute("SELECT count(*) AS n FROM conversation_message").fetchone()["n"] == 2
    assert db.execute("SELECT message_id FROM message_delivery_event WHERE platform_message_id = 'm_race'"
                      ).fetchone()["message_id"] == queued
    # An echo we did not send (the Page inbox app) becomes an outbound message.
    process(db_url, p.messenger_items({**echo, "message": {"mid": "m_inbox_app", "is_echo": True, "text": "x"}}))
    assert message(db, "m_inbox_app")["direction"] == "outbound"


def test_a_webhook_naming_our_job_lands_on_our_row_when_the_sender_never_stored_metas_id(db_url, db):
    """The sender died (or lost its database) between Meta's answer and storing Meta's id. The echo's metadata and
    the statuses' biz_opaque_callback_data name our job, so Meta's id goes on our row: the echo does not become a
    second row beside it (it did until the next send run reconciled the job, 90 s or more later), and the
    receipts apply to it."""
    def job(message_id: str, channel: str) -> str:
        return str(db.execute(
            "INSERT INTO outbound_message_job (message_id, thread_id, platform, channel_id, recipient_id, request, "
            "status) SELECT message_id, thread_id, platform, %s, 'them', '{}', 'sending' FROM conversation_message "
            "WHERE message_id = %s RETURNING job_id", (channel, message_id)).fetchone()["job_id"])

    ours = outbound(db, "messenger", p.PAGE, p.PSID, mid=None, status="queued")
    echo = {"sender": {"id": p.PAGE}, "recipient": {"id": p.PSID}, "timestamp": 1718000000000}
    process(db_url, p.messenger_items(
        {**echo, "message": {"mid": "m_answer_lost", "is_echo": True, "text": "hi", "metadata": job(ours, p.PAGE)}},
        {"sender": {"id": p.PSID}, "recipient": {"id": p.PAGE}, "delivery": {"mids": ["m_answer_lost"],
                                                                              "watermark": 1718000000500}}))
    assert db.execute("SELECT message_id, status FROM conversation_message").fetchall() == [
        {"message_id": ours, "status": "delivered"}]
    assert message(db, "m_answer_lost")["message_id"] == ours

    whatsapp = outbound(db, "whatsapp", p.PHONE, p.WA_ID, mid=None, status="queued")
    reference = job(whatsapp, p.PHONE)
    process(db_url, p.wa_status("wamid.answer_lost", "sent", 1718000001, biz_opaque_callback_data=reference),
            p.wa_status("wamid.answer_lost", "delivered", 1718000002, biz_opaque_callback_data=reference))
    assert (message(db, "wamid.answer_lost")["message_id"], message(db, "wamid.answer_lost")["status"]) == (
        whatsapp, "delivered")

    # Another app's echo, whatever its metadata, is a message of its own; our rows are untouched.
    process(db_url, p.messenger_items({**echo, "message": {"mid": "m_other_app", "is_echo": True, "text": "x",
                                                            "metadata": "campaign-7"}}))
    assert message(db, "m_other_app")["message_id"] not in (ours, whatsapp)


def test_replay_and_semantic_duplicates_change_nothing(db_url, db, monkeypatch):
    outbound(db, "whatsapp", p.PHONE, p.WA_ID, mid="wamid.abc")
    process(db_url, *p.ALL_EXAMPLES)
    before = snapshot(db)
    # The same events re-serialised (different bytes, so the receiver stored them again): nothing changes.
    enqueue(db, *[json.dumps(x, indent=1).encode() for x in p.ALL_EXAMPLES])
    process(db_url)
    assert snapshot(db) == before
    # `everreach-data replay-webhooks` re-queues by status and time range; reprocessing changes nothing.
    db.execute("UPDATE meta_webhook_event SET received_at = now() - interval '2 days' WHERE webhook_event_id <= 3")
    monkeypatch.setenv("DATABASE_URL", db_url)
    since = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    until = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert cli_main(["replay-webhooks", "--since", since, "--until", until]) == 0
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event WHERE status = 'pending'").fetchone()["n"] == 3
    assert cli_main(["replay-webhooks", "--status", "done"]) == 0
    n = db.execute("SELECT count(*) AS n FROM meta_webhook_event WHERE status = 'pending'").fetchone()["n"]
    assert n == 2 * len(p.ALL_EXAMPLES)
    stats = process(db_url)
    assert stats.done == n and snapshot(db) == before


def test_poison_events_fail_alone_after_retries(db_url, db):
    db.execute("""
        CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.participant_id = 'poison' THEN RAISE EXCEPTION 'poisoned participant'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER test_poison BEFORE INSERT ON conversation_thread FOR EACH ROW EXECUTE FUNCTION test_poison();
    """)
    poison = p.messenger_items({"sender": {"id": "poison"}, "recipient": {"id": p.PAGE}, "timestamp": 1718000000000,
                                "message": {"mid": "m_poison", "text": "x"}})
    unparsable = {"object": "page", "entry": [{"messaging": []}]}
    ids = enqueue(db, p.MESSENGER, poison, unparsable, p.WHATSAPP_TEXT)
    stats = process(db_url, max_attempts=3)
    rows = {r["webhook_event_id"]: r for r in db.execute("SELECT * FROM meta_webhook_event")}
    assert [rows[i]["status"] for i in ids] == ["done", "failed", "failed", "done"]
    assert rows[ids[1]]["attempts"] == 3 and "poisoned participant" in rows[ids[1]]["last_error"]
    assert rows[ids[2]]["attempts"] == 1 and "entry[0].id" in rows[ids[2]]["last_error"]
    assert stats.failed == 2 and message(db, "m_Ab3xYzQ") is not None


def _traffic(n: int, seed: int) -> list[bytes]:
    bodies, seen = [], set()
    for raw in TrafficGenerator(seed=seed).bodies():
        if raw not in seen:
            seen.add(raw)
            bodies.append(raw)
        if len(bodies) == n:
            return bodies
    raise AssertionError


def _expected_messages(bodies: list[bytes]) -> int:
    return len({(r.platform, r.mid) for b in bodies for r in parse_webhook(json.loads(b)).records
                if isinstance(r, Message)})


def test_a_drain_that_loses_the_database_reconnects_and_carries_on(db_url, pg_server):
    """Postgres restarts under a warm drain: it waits for the server and goes on draining (it used to fail its
    run, and the queue waited for the sensor's next run to start)."""
    bodies = _traffic(40, seed=23)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["stats"] = drain_url(db_url, workers=2, linger_seconds=5, time_budget_seconds=60,
                                         backoff_seconds=0)
        except Exception as exc:  # noqa: BLE001 - the assertion below says what it was
            outcome["error"] = exc

    def done(conn: psycopg.Connection, n: int) -> None:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM meta_webhook_event WHERE status = 'done'").fetchone()[0] < n:
            assert time.monotonic() < deadline and "error" not in outcome, outcome
            time.sleep(0.05)

    with psycopg.connect(db_url, autocommit=True) as conn:
        enqueue(conn, *bodies[:20])
        thread = threading.Thread(target=run)
        thread.start()
        done(conn, 20)  # the drain is lingering on an empty queue now
    pg_server.restart()
    with psycopg.connect(db_url, autocommit=True) as conn:
        enqueue(conn, *bodies[20:])
        done(conn, 40)
        thread.join(timeout=30)
        assert "error" not in outcome and outcome["stats"].done == 40
        assert conn.execute("SELECT count(*) FROM conversation_message").fetchone()[0] == _expected_messages(bodies)


def test_two_concurrent_drains_process_each_event_exactly_once(db_url, db):
    bodies = _traffic(1200, seed=11)
    enqueue(db, *bodies)
    results, errors = [], []

    def run() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                results.append(drain(conn, batch_size=40))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r.done for r in results) == len(bodies) and all(r.done > 0 for r in results)
    counts = db.execute("SELECT count(*) FILTER (WHERE status = 'done' AND attempts = 1) AS once, count(*) AS n "
                        "FROM meta_webhook_event").fetchone()
    assert counts["once"] == counts["n"] == len(bodies)
    expected = _expected_messages(bodies)
    assert db.execute("SELECT count(*) AS n FROM conversation_message").fetchone()["n"] == expected
    assert db.execute("SELECT count(*) AS n FROM user_event").fetchone()["n"] == expected
    # Receipts whose message a concurrent batch was writing are applied once the runs find the queue empty.
    assert db.execute("SELECT count(*) AS n FROM message_delivery_event e JOIN conversation_message m "
                      "ON m.platform = e.platform AND m.platform_message_id = e.platform_message_id "
                      "WHERE NOT e.applied").fetchone()["n"] == 0


def test_receipts_racing_their_message_in_a_concurrent_batch_are_applied(db_url, db):
    t = 1718000000000
    page_to_user = {"sender": {"id": p.PAGE}, "recipient": {"id": p.PSID}}
    user_to_page = {"sender": {"id": p.PSID}, "recipient": {"id": p.PAGE}}
    process(db_url, p.messenger_items({**user_to_page, "timestamp": t, "message": {"mid": "m_in", "text": "hi"}}))
    echo = p.messenger_items({**page_to_user, "timestamp": t + 1000,
                              "message": {"mid": "m_race", "is_echo": True, "text": "hello"}})
    receipts = p.messenger_items({**user_to_page, "timestamp": t + 2000,
                                  "delivery": {"mids": ["m_race"], "watermark": t + 2000}},
                                 {**user_to_page, "timestamp": t + 3000, "read": {"watermark": t + 3000}})
    # Two runs' batches in flight at once: each transaction cannot see what the other has not committed.
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
        apply_records(first, parse_webhook(echo).records)
        apply_records(second, parse_webhook(receipts).records)
        second.commit()
        first.commit()
    assert message(db, "m_race")["status"] == "sent"
    stats = process(db_url, p.messenger_items({**user_to_page, "timestamp": t + 4000,
                                               "message": {"mid": "m_in2", "text": "thanks"}}))
    assert stats.orphans_applied == 2  # the delivery by mid, then the read watermark
    row = message(db, "m_race")
    assert (row["status"], row["delivered_at"], row["read_at"]) == ("read", ms(t + 2000), ms(t + 3000))


def test_integers_beyond_64_bits_are_kept(db_url, db):
    # Postgres's jsonb takes any integer; the drain's fast JSON path must not choke on one.
    payload = p.clone(p.WHATSAPP_TEXT)
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["big"] = 123456789012345678901234567890
    stats = process(db_url, payload)
    assert (stats.done, stats.failed) == (1, 0)
    mid = payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    assert message(db, mid)["payload"]["big"] == 123456789012345678901234567890


def claimable(db: psycopg.Connection) -> int:
    """Pending events another drain could claim right now (not row-locked by a batch in flight)."""
    with db.transaction():
        return db.execute("SELECT count(*) AS n FROM (SELECT 1 FROM meta_webhook_event WHERE status = 'pending' "
                          "FOR UPDATE SKIP LOCKED) q").fetchone()["n"]


_DRAIN_CODE = ("import sys; from everreach_data.inbox.drain import drain_url; "
               "drain_url(sys.argv[1], batch_size=1000, lease_seconds=2, run_id='killed-run')")


def _kill_drain_blocked_on(db: psycopg.Connection, db_url: str, participant: str,
                           while_blocked: Callable[[], None] = lambda: None) -> None:
    """Run a drain in a process of its own until its batch waits for the thread of ``participant`` (held
    here by an uncommitted insert), SIGKILL it there, and wait for the dead run's session to end."""
    with psycopg.connect(db_url) as lock_conn:
        lock_conn.execute("INSERT INTO conversation_thread (platform, channel_id, participant_id) "
                          "VALUES ('messenger', %s, %s)", (p.PAGE, participant))
        proc = subprocess.Popen([sys.executable, "-c", _DRAIN_CODE, db_url])
        try:
            deadline = time.monotonic() + 60
            while not db.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'").fetchone()["n"]:
                assert proc.poll() is None and time.monotonic() < deadline, "drain never blocked"
                time.sleep(0.05)
            while_blocked()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        lock_conn.rollback()  # the dead run's backend goes on, finds its client gone, and rolls back
    deadline = time.monotonic() + 30
    while db.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                     "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()["n"]:
        assert time.monotonic() < deadline, "the killed run's session lingered"
        time.sleep(0.05)


def test_drain_killed_mid_batch_loses_nothing(db_url, db):
    bodies = _traffic(300, seed=5)
    blocker = p.messenger_items({"sender": {"id": "blocker"}, "recipient": {"id": p.PAGE}, "timestamp": 1718000000000,
                                 "message": {"mid": "m_blocker", "text": "x"}})
    bodies.append(json.dumps(blocker).encode())
    ids = enqueue(db, *bodies)

    def holds_every_claim() -> None:
        assert claimable(db) == 0  # the blocked batch holds every event's row lock
        assert live_runs(db, DRAIN_APPLICATION) == LiveRuns.of("killed-run")  # what the sensor sees of a live run

    _kill_drain_blocked_on(db, db_url, "blocker", holds_every_claim)
    assert live_runs(db, DRAIN_APPLICATION) == LiveRuns.of()  # …and of a dead one, even if Dagster still says STARTED
    assert db.execute("SELECT count(*) AS n FROM conversation_message").fetchone()["n"] == 0  # rolled back
    assert claimable(db) == len(bodies)  # the dead run's transaction ended with its session: no lease to wait out
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event WHERE status = 'pending' AND attempts = 0"
                      ).fetchone()["n"] == len(bodies)  # the killed attempt left nothing in the inbox…
    dead = db.execute("SELECT event_ids FROM webhook_drain_batch").fetchall()
    assert sorted(i for row in dead for run in row["event_ids"] for i in range(run.lower, run.upper)
                  ) == sorted(ids)  # …but its batch's record
    stats = process(db_url)
    assert (stats.done, stats.recovered, stats.failed) == (len(bodies), len(bodies), 0)
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event WHERE status = 'done' AND attempts = 2"
                      ).fetchone()["n"] == len(bodies)  # the killed attempt counts
    assert db.execute("SELECT count(*) AS n FROM webhook_drain_batch").fetchone()["n"] == 0
    expected = _expected_messages(bodies)
    assert db.execute("SELECT count(*) AS n FROM conversation_message").fetchone()["n"] == expected
    assert db.execute("SELECT count(*) AS n FROM user_event").fetchone()["n"] == expected


def test_an_event_that_kills_every_run_fails_alone_and_the_others_go_through(db_url, db):
    """Here the run is SIGKILLed whenever it reaches one event: as if that event crashed or exhausted it."""
    def item(sender: str, mid: str) -> dict:
        return p.messenger_items({"sender": {"id": sender}, "recipient": {"id": p.PAGE}, "timestamp": 1718000000000,
                                  "message": {"mid": mid, "text": "hi"}})

    ok1, ok2, killer, ok3, ok4 = enqueue(db, item("u1", "m_ok1"), item("u2", "m_ok2"), item("killer", "m_killer"),
                                         item("u3", "m_ok3"), item("u4", "m_ok4"))
    for _ in range(DEFAULT_MAX_ATTEMPTS):  # the whole batch dies; then the killer alone, twice
        _kill_drain_blocked_on(db, db_url, "killer")
    stats = process(db_url)
    assert (stats.recovered, stats.failed, stats.done) == (1, 1, 2)
    events = {r["webhook_event_id"]: r for r in db.execute("SELECT * FROM meta_webhook_event")}
    assert (events[killer]["status"], events[killer]["attempts"], events[killer]["last_error"]) == (
        "failed", DEFAULT_MAX_ATTEMPTS, DIED)
    assert {events[i]["status"] for i in (ok1, ok2, ok3, ok4)} == {"done"}
    mids = {r["platform_message_id"] for r in db.execute("SELECT platform_message_id FROM conversation_message")}
    assert mids == {"m_ok1", "m_ok2", "m_ok3", "m_ok4"}  # the killer was never processed again
    assert db.execute("SELECT count(*) AS n FROM webhook_drain_batch").fetchone()["n"] == 0


def test_a_stuck_batch_is_cut_off_and_its_events_released(db_url, db):
    """A run that stops mid-batch without dying (hung, paused) holds its claims only for the lease."""
    enqueue(db, p.MESSENGER, p.WHATSAPP_TEXT)
    with psycopg.connect(db_url, autocommit=True) as stuck:
        stuck.execute("BEGIN")
        inbox.configure_transaction(stuck, lease_seconds=0.5)
        assert len(inbox.claim(stuck, limit=10)) == 2 and claimable(db) == 0
        deadline = time.monotonic() + 15
        while claimable(db) < 2:
            assert time.monotonic() < deadline, "the stuck batch kept its claims"
            time.sleep(0.05)
        with pytest.raises(psycopg.Error):
            stuck.execute("SELECT 1")  # the server ended that session; nothing it held was committed
    assert process(db_url).done == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sets(st.integers(min_value=1, max_value=2**62), min_size=1, max_size=60)
       | st.sets(st.integers(1, 80), min_size=1, max_size=60))
def test_a_batch_record_holds_exactly_its_event_ids(db, ids):
    stored = db.execute("SELECT %s::int8range[] AS runs", (as_ranges(sorted(ids)),)).fetchone()["runs"]
    assert {i for run in stored for i in range(run.lower, run.upper)} == ids
