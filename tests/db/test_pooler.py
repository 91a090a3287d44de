"""The queues, the receiver and the migration runner through a real PgBouncer in transaction mode: what
Supabase's pooler (port 6543) and managed poolers run. Every connection here goes through the pooler except
``db`` (direct), which looks at the server from outside."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from everreach_data.db.migrate import discover, migrate
from everreach_data.db.run_liveness import LiveRuns, live_runs, presence
from everreach_data.inbox import queue as inbox
from everreach_data.inbox.drain import DRAIN_APPLICATION, drain_url
from everreach_data.outbound.sender import SendConfig, drain
from everreach_data.receiver.app import create_app
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from everreach_sandbox.server import build_app, build_state
from everreach_sandbox.traffic import TrafficGenerator, sign
from tests.db.pgbouncer import POOL_SIZE
from tests.inbox import payloads as p
from tests.inbox.helpers import enqueue
from tests.outbound.helpers import FAST, new_user, send_whatsapp
from tests.servers import serve


def _bodies(n: int, seed: int) -> list[bytes]:
    out: dict[bytes, None] = {}
    for raw in TrafficGenerator(seed=seed).bodies():
        out.setdefault(raw)
        if len(out) == n:
            return list(out)
    raise AssertionError


def _pooled_sessions(url: str) -> list[tuple]:
    """(pid, synchronous_commit, idle timeout, prepared statements) of each of the pool's server sessions:
    as many clients as the pool has sessions, each in a transaction at once, so that every one is seen."""
    conns = [psycopg.connect(url) for _ in range(POOL_SIZE)]
    try:
        return [c.execute("SELECT pg_backend_pid(), current_setting('synchronous_commit'), "
                          "current_setting('idle_in_transaction_session_timeout'), "
                          "(SELECT count(*) FROM pg_prepared_statements)").fetchone() for c in conns]
    finally:
        for c in conns:
            c.close()


def _written(conn: psycopg.Connection) -> dict[str, set]:
    """What a drain wrote, by Meta's ids (the rows' own ids differ between databases)."""
    return {
        "threads": {tuple(r.values()) for r in conn.execute(
            "SELECT platform, channel_id, participant_id, participant_name, last_inbound_at "
            "FROM conversation_thread")},
        "messages": {tuple(r.values()) for r in conn.execute(
            "SELECT platform_message_id, direction, status, content, sent_at, delivered_at, read_at "
            "FROM conversation_message")},
        "receipts": {tuple(r.values()) for r in conn.execute(
            "SELECT platform_message_id, event_type, watermark, occurred_at, applied FROM message_delivery_event")},
        "inbox": {tuple(r.values()) for r in conn.execute("SELECT body_sha256, status FROM meta_webhook_event")},
    }


def _advisory_locks(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
                      "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                      ).fetchone()["n"]


def test_migrations_through_the_pooler(pooled_empty_url, empty_db_url):
    assert migrate(pooled_empty_url) == [m.name for m in discover()]
    assert migrate(pooled_empty_url) == []  # a session lock left on a pooled session would hang this one
    with psycopg.connect(empty_db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as db:
        assert _advisory_locks(db) == 0
        assert db.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()["n"] == len(discover())


def test_concurrent_migrations_through_the_pooler_apply_each_once(pooled_empty_url, empty_db_url):
    with ThreadPoolExecutor(3) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(migrate, pooled_empty_url) for _ in range(3)]]
    applied = [name for r in results for name in r]
    assert sorted(applied) == [m.name for m in discover()]  # each once, by whichever run got there first
    with psycopg.connect(empty_db_url) as db:
        assert db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0


def test_drain_through_the_pooler_matches_a_direct_drain(pooled_url, db, empty_db_url):
    bodies = _bodies(400, seed=11)
    enqueue(db, *bodies)
    # Small batches: each statement runs far more often than psycopg's threshold for preparing it. One
    # worker, so that both drains apply the batches in the same order (a contact's name is the latest one
    # applied, and the traffic gives some numbers two names).
    stats = drain_url(pooled_url, run_id="pooled-run", batch_size=25, backoff_seconds=0)
    assert (stats.claimed, stats.done, stats.failed) == (400, 400, 0) and stats.batches >= 16
    migrate(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True, row_factory=psycopg.rows.dict_row) as direct:
        enqueue(direct, *bodies)
        drain_url(empty_db_url, batch_size=25, backoff_seconds=0)
        assert _written(db) == _written(direct)


def test_the_pooled_sessions_keep_nothing_of_the_drain(pooled_url, db):
    """What a drain sets is set for its own transactions: the sessions the pool hands to the receiver next
    still commit synchronously (durable acknowledgements), time out nothing, and hold no prepared statement."""
    enqueue(db, *_bodies(200, seed=3))
    drain_url(pooled_url, workers=2, run_id="leaky-run", batch_size=10, backoff_seconds=0)
    sessions = _pooled_sessions(pooled_url)
    assert len({pid for pid, *_ in sessions}) == POOL_SIZE
    assert {tuple(rest) for _, *rest in sessions} == {("on", "0", 0)}


def test_a_run_is_present_through_the_pooler_and_a_stale_session_name_is_not(pooled_url, db):
    with psycopg.connect(pooled_url, application_name=f"{DRAIN_APPLICATION} departed-run") as departed:
        departed.execute("SELECT 1")
    # The pooler keeps the server session, named after the client that left, for the next client…
    names = {r["application_name"] for r in db.execute("SELECT application_name FROM pg_stat_activity")}
    assert f"{DRAIN_APPLICATION} departed-run" in names
    with psycopg.connect(pooled_url, autocommit=True) as conn:
        assert live_runs(conn, DRAIN_APPLICATION) == LiveRuns.of()  # …which is not taken for a live run
        with presence(pooled_url, DRAIN_APPLICATION, "present-run"):
            assert live_runs(conn, DRAIN_APPLICATION) == LiveRuns.of("present-run")
        assert live_runs(conn, DRAIN_APPLICATION) == LiveRuns.of()


_DRAIN_CODE = ("import sys; from everreach_data.inbox.drain import drain_url; "
               "drain_url(sys.argv[1], batch_size=1000, lease_seconds=5, run_id='killed-run')")


def test_a_drain_killed_through_the_pooler_loses_nothing_and_is_seen_dead(pooled_url, db, db_url):
    bodies = _bodies(150, seed=5)
    blocker = p.messenger_items({"sender": {"id": "blocker"}, "recipient": {"id": p.PAGE},
                                 "timestamp": 1718000000000, "message": {"mid": "m_blocker", "text": "x"}})
    ids = enqueue(db, *bodies, json.dumps(blocker).encode())
    with psycopg.connect(db_url) as lock_conn:  # holds the blocker's thread, so the batch waits in flight
        lock_conn.execute("INSERT INTO conversation_thread (platform, channel_id, participant_id) "
                          "VALUES ('messenger', %s, 'blocker')", (p.PAGE,))
        proc = subprocess.Popen([sys.executable, "-c", _DRAIN_CODE, pooled_url])
        try:
            deadline = time.monotonic() + 60
            while not db.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'").fetchone()["n"]:
                assert proc.poll() is None and time.monotonic() < deadline, "the drain never blocked"
                time.sleep(0.05)
            assert live_runs(db, DRAIN_APPLICATION) == LiveRuns.of("killed-run")
            assert db.execute("SELECT count(*) AS n FROM webhook_drain_batch").fetchone()["n"] == 1
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        lock_conn.rollback()
    deadline = time.monotonic() + 30
    while live_runs(db, DRAIN_APPLICATION) or _advisory_locks(db):
        assert time.monotonic() < deadline, "the killed run's transactions outlived it behind the pooler"
        time.sleep(0.05)
    assert db.execute("SELECT count(*) AS n FROM conversation_message").fetchone()["n"] == 0  # rolled back

    stats = drain_url(pooled_url, backoff_seconds=0, lease_seconds=5)  # the next run, through the pooler too
    assert stats.recovered == len(ids)  # the dead batch was noticed: every event counted an attempt…
    assert stats.done == len(ids)  # …and retried one at a time, all fine this time
    rows = db.execute("SELECT status, attempts FROM meta_webhook_event").fetchall()
    assert {(r["status"], r["attempts"]) for r in rows} == {("done", 2)}  # the killed attempt counted
    assert db.execute("SELECT count(*) AS n FROM webhook_drain_batch").fetchone()["n"] == 0


def test_a_stuck_batch_behind_the_pooler_is_cut_off(pooled_url, db):
    enqueue(db, p.MESSENGER, p.WHATSAPP_TEXT)
    with psycopg.connect(pooled_url, autocommit=True) as stuck:
        stuck.execute("BEGIN")
        inbox.configure_transaction(stuck, lease_seconds=0.5)
        assert len(inbox.claim(stuck, limit=10)) == 2
        deadline = time.monotonic() + 15
        while db.execute("SELECT count(*) AS n FROM (SELECT 1 FROM meta_webhook_event WHERE status = 'pending' "
                         "FOR UPDATE SKIP LOCKED) q").fetchone()["n"] < 2:
            assert time.monotonic() < deadline, "the stuck batch kept its claims"
            time.sleep(0.05)
        with pytest.raises(psycopg.Error):
            stuck.execute("SELECT 1")
    assert drain_url(pooled_url, backoff_seconds=0).done == 2


def test_receiver_and_sender_through_the_pooler(pooled_url, db, settings):
    """Webhooks in and messages out with DATABASE_URL at the pooler: every acknowledged webhook stored,
    every queued message sent."""
    state = build_state()
    with serve(build_app(state)) as sandbox:
        out = settings.model_copy(update={"META_GRAPH_URL": sandbox, "DATABASE_URL": pooled_url})
        with serve(create_app(out, pooled_url, pool_max_size=4)) as receiver:
            state.webhook_url = receiver + "/api/webhooks/meta"
            bodies = _bodies(120, seed=9)
            secret = SANDBOX_DEFAULTS["META_APP_SECRET"]

            def post(body: bytes) -> int:
                return httpx.post(receiver + "/api/webhooks/meta", content=body, headers=sign(secret, body),
                                  timeout=30).status_code

            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(post, bodies)) == {200}
            stored = {bytes(r["body_sha256"]) for r in db.execute("SELECT body_sha256 FROM meta_webhook_event")}
            assert stored == {hashlib.sha256(b).digest() for b in bodies}

            accepted = [send_whatsapp(receiver, {"to": new_user("whatsapp"), "type": "template", "template": {
                "name": "hello_world", "language": {"code": "en_US"}}}) for _ in range(12)]
            assert {r.status_code for r in accepted} == {202}
            report = asyncio.run(drain(pooled_url, out.channels(), SendConfig(**FAST), run_id="pooled-send"))
            assert report.sent == 12
            state.webhook_url = None
    statuses = {r["status"] for r in db.execute("SELECT status FROM outbound_message_job")}
    assert statuses == {"sent"}
