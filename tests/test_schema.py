"""The schema on a real Postgres: migrations, functions, triggers, constraints and monitoring views."""

from __future__ import annotations

import threading

import psycopg
import pytest

from everreach_data.db.connection import DatabaseUnavailable, connect
from everreach_data.db.migrate import MigrationError, migrate

SEED_TABLES = {
    "conversation_thread", "conversation_message", "messaging_policy_window", "message_delivery_event",
    "meta_platform_config", "social_media_post", "social_post_insights", "social_account_insights",
    "ad_performance", "meta_conversion_event", "meta_webhook_event",
}


def _tables(conn) -> set[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {r["table_name"] for r in rows}


def test_migrations_apply_to_empty_database_and_rerun_is_noop(empty_db_url):
    first = migrate(empty_db_url)
    assert first and first[0].startswith("001_")
    assert migrate(empty_db_url) == []
    with connect(empty_db_url) as conn:
        assert SEED_TABLES | {"campaign", "user_event", "outbound_message_job"} <= _tables(conn)
        assert conn.execute("SELECT count(*) AS n FROM auth.users").fetchone()["n"] == 0


def test_concurrent_migrate_runs_apply_each_migration_once(empty_db_url):
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(empty_db_url))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    applied = [name for r in results for name in r]
    assert len(applied) == len(set(applied))
    with connect(empty_db_url) as conn:
        rows = conn.execute("SELECT version, count(*) AS n FROM schema_migrations GROUP BY version").fetchall()
        assert all(r["n"] == 1 for r in rows)


def test_failing_migration_rolls_back_whole_and_is_named(empty_db_url, tmp_path):
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (tmp_path / "002_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nALTER TABLE no_such_table ADD COLUMN x int;")
    with pytest.raises(MigrationError) as info:
        migrate(empty_db_url, sql_dir=tmp_path)
    assert "002_broken.sql" in str(info.value) and "no_such_table" in str(info.value)
    with connect(empty_db_url) as conn:
        tables = _tables(conn)
        assert "ok_table" in tables and "half_done" not in tables
        assert [r["version"] for r in conn.execute("SELECT version FROM schema_migrations")] == [1]


def test_a_database_migrated_by_another_layout_is_refused_in_one_line(empty_db_url, capsys, monkeypatch):
    """A database whose ledger names migrations this checkout does not have (an older, unreleased layout of
    sql/) is refused with what to do, and left as it is."""
    migrate(empty_db_url)
    with connect(empty_db_url) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                     "VALUES (20, '020_webhook_receipts.sql', 'x')")
    with pytest.raises(MigrationError) as info:
        migrate(empty_db_url)
    assert "020_webhook_receipts.sql" in str(info.value) and "delete .everreach/" in str(info.value)

    from everreach_data.cli import main
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the database at") and "\n" not in err


def test_every_function_and_trigger_is_defined_in_one_file():
    import re

    from everreach_data.db.migrate import discover

    defined: dict[str, list[str]] = {}
    for migration in discover():
        for kind, name in re.findall(r"CREATE (?:OR REPLACE )?(FUNCTION|TRIGGER|VIEW|TABLE(?: IF NOT EXISTS)?) "
                                     r"([\w.]+)", migration.text):
            defined.setdefault(f"{kind.split()[0]} {name}", []).append(migration.name)
    assert defined and {k: v for k, v in defined.items() if len(v) > 1} == {}


def test_unreachable_database_gives_a_clear_error_without_the_password():
    with pytest.raises(DatabaseUnavailable) as info:
        with connect("postgresql://alice:s3cret@127.0.0.1:1/nowhere"):
            pass
    assert "cannot reach the database" in str(info.value)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def _thread(db, platform="messenger") -> str:
    return db.execute(
        "INSERT INTO conversation_thread (platform, channel_id, participant_id) VALUES (%s, 'page', 'psid') "
        "RETURNING thread_id", (platform,)).fetchone()["thread_id"]


def _inbound(db, thread_id, platform, ago: str, mid: str) -> None:
    db.execute(
        "INSERT INTO conversation_message (thread_id, platform, platform_message_id, direction, content, sent_at) "
        "VALUES (%s, %s, %s, 'inbound', 'hi', now() - %s::interval)", (thread_id, platform, mid, ago))


@pytest.mark.parametrize(("ago", "standard", "human_agent"), [
    ("23 hours 59 minutes", True, True),
    ("24 hours 1 minute", False, True),
    ("6 days 23 hours", False, True),
    ("7 days 1 minute", False, False),
])
def test_messaging_window_on_messenger(db, ago, standard, human_agent):
    thread = _thread(db)
    _inbound(db, thread, "messenger", ago, "m_1")
    row = db.execute("SELECT is_in_messaging_window(%s) AS std, "
                     "is_in_messaging_window(%s, 'human_agent') AS agent", (thread, thread)).fetchone()
    assert (row["std"], row["agent"]) == (standard, human_agent)


def test_whatsapp_has_no_human_agent_window(db):
    thread = _thread(db, "whatsapp")
    _inbound(db, thread, "whatsapp", "1 hour", "wamid.1")
    row = db.execute("SELECT is_in_messaging_window(%s) AS std, "
                     "is_in_messaging_window(%s, 'human_agent') AS agent", (thread, thread)).fetchone()
    assert row == {"std": True, "agent": False}


def test_window_follows_the_latest_inbound_message_even_when_it_arrives_late(db):
    thread = _thread(db)
    _inbound(db, thread, "messenger", "2 hours", "m_new")
    _inbound(db, thread, "messenger", "30 hours", "m_old")  # processed after, but older
    assert db.execute("SELECT is_in_messaging_window(%s) AS w", (thread,)).fetchone()["w"] is True


def test_message_logs_user_event_and_moves_thread_timestamp(db):
    thread = _thread(db)
    _inbound(db, thread, "messenger", "5 minutes", "m_a")
    events = db.execute("SELECT event_type, properties FROM user_event").fetchall()
    assert len(events) == 1 and events[0]["event_type"] == "message_received"
    assert events[0]["properties"]["thread_id"] == str(thread)
    t = db.execute("SELECT last_message_at, last_inbound_at, now() - last_message_at AS age "
                   "FROM conversation_thread WHERE thread_id = %s", (thread,)).fetchone()
    assert t["last_message_at"] == t["last_inbound_at"]
    assert 4 * 60 < t["age"].total_seconds() < 6 * 60


def test_duplicate_platform_message_id_is_rejected_by_name(db):
    thread = _thread(db)
    _inbound(db, thread, "messenger", "1 minute", "m_dup")
    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        _inbound(db, thread, "messenger", "1 minute", "m_dup")
    assert "conversation_message_platform_mid_key" in str(info.value)


@pytest.mark.parametrize(("statement", "constraint"), [
    ("INSERT INTO conversation_thread (platform, channel_id, participant_id) VALUES ('telegram', 'c', 'p')",
     "conversation_thread_platform_check"),
    ("INSERT INTO meta_webhook_event (object, payload, body_sha256, status) "
     "VALUES ('page', '{}', 'x', 'exploded')", "meta_webhook_event_status_check"),
])
def test_enumerations_are_checked_with_named_constraints(db, statement, constraint):
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        db.execute(statement)
    assert constraint in str(info.value)


def test_monitoring_views_answer_the_runbook_queries(db):
    """(Message volume is a report asset: tests/reports.)"""
    thread = _thread(db)
    _inbound(db, thread, "messenger", "1 hour", "m_v1")
    db.execute("INSERT INTO conversation_message (thread_id, platform, platform_message_id, direction, status) "
               "VALUES (%s, 'messenger', 'm_v2', 'outbound', 'delivered')", (thread,))
    rates = db.execute("SELECT status, percentage FROM outbound_status_rates_7d").fetchall()
    assert [(r["status"], float(r["percentage"])) for r in rates] == [("delivered", 100.0)]
