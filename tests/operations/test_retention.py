"""Inbox retention: meta_webhook_event is partitioned by received month; the retention job drops a month past
the retention age only when every event in it is finished, and never loses a failed one. Redeliveries are
stored once even across a month boundary."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx

from everreach_data import cli
from everreach_data.definitions import build_resources
from everreach_data.inbox.queue import discard
from everreach_data.operations import defs as operations
from everreach_data.operations.retention import apply_retention
from everreach_data.receiver.app import create_app
from tests.inbox import payloads as p
from tests.servers import serve

NOW = datetime.now(UTC)


def _months_ago(n: int) -> datetime:
    first = NOW.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    for _ in range(n):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def _event(db, received_at: datetime, status: str = "done", n: int = 0) -> int:
    body = json.dumps({"object": "page", "entry": [], "n": n, "at": received_at.isoformat()}).encode()
    return db.execute(
        "INSERT INTO meta_webhook_event (object, payload, body_sha256, status, received_at) "
        "VALUES ('page', %s::jsonb, %s, %s, %s) RETURNING webhook_event_id",
        (body.decode(), hashlib.sha256(body).digest(), status, received_at)).fetchone()["webhook_event_id"]


def _partitions(db) -> list[str]:
    return [r["partition"] for r in db.execute("SELECT partition FROM meta_webhook_event_partitions "
                                              "WHERE to_time IS NOT NULL ORDER BY from_time")]


def _month(at: datetime) -> str:
    return f"meta_webhook_event_p{at:%Y_%m}"


def test_retention_drops_only_fully_processed_months_and_loses_no_failed_event(db):
    old, older, oldest, recent = _months_ago(4), _months_ago(5), _months_ago(6), _months_ago(1)
    # Months created before their events arrived (the migration and each run keep months ahead), except the
    # oldest, whose events the default partition catches and the run moves into their month.
    for month in (older, old, recent):
        db.execute("SELECT create_webhook_event_partition(%s)", (month.date(),))
    for i, status in enumerate(["done", "ignored", "done"]):
        _event(db, old, status, i)
    failed = _event(db, older, "failed", 10)
    _event(db, older, "done", 11)
    pending = _event(db, oldest, "pending", 20)
    _event(db, recent, "done", 30)
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event_default").fetchone()["n"] == 1

    report = apply_retention(db, NOW, retention_days=90, dedupe_days=7)
    assert report.dropped == [_month(old)]
    assert set(report.kept) == {_month(older), _month(oldest)}
    assert "1 failed and 0 pending" in report.kept[_month(older)]
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event_default").fetchone()["n"] == 0
    assert {_month(oldest), _month(older), _month(recent), _month(NOW)} <= set(_partitions(db))
    assert _month(old) not in _partitions(db)
    kept = {r["webhook_event_id"]: r["status"] for r in db.execute(
        "SELECT webhook_event_id, status FROM meta_webhook_event WHERE status IN ('failed', 'pending')")}
    assert kept == {failed: "failed", pending: "pending"}
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event WHERE received_at >= %s",
                      (recent,)).fetchone()["n"] == 1

    # The operator discards the failed event: its month goes on the next run; the pending one's stays.
    assert discard(db, ids=[failed]) == 1
    report = apply_retention(db, NOW, retention_days=90, dedupe_days=7)
    assert report.dropped == [_month(older)] and list(report.kept) == [_month(oldest)]


def test_the_operator_discards_failed_events_from_the_command_line(db, db_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", db_url)
    failed = _event(db, _months_ago(0), "failed", 1)
    _event(db, _months_ago(0), "done", 2)
    assert cli.main(["discard-webhooks", "--id", str(failed)]) == 0
    assert "discarded 1 failed webhook events" in capsys.readouterr().out
    row = db.execute("SELECT status, last_error FROM meta_webhook_event WHERE webhook_event_id = %s",
                     (failed,)).fetchone()
    assert row["status"] == "discarded" and row["last_error"].startswith("discarded by an operator")
    assert cli.main(["replay-webhooks", "--status", "discarded"]) == 0
    assert db.execute("SELECT status FROM meta_webhook_event WHERE webhook_event_id = %s",
                      (failed,)).fetchone()["status"] == "pending"


def test_the_retention_job_runs_with_the_configured_age(settings, db):
    _event(db, _months_ago(2), "done")
    db.execute("SELECT create_webhook_event_partition(%s)", (_months_ago(2).date(),))
    resources = build_resources(settings, secrets_as_env_vars=False)
    result = operations.webhook_events_retention.execute_in_process(
        resources={**resources, "inbox_retention": operations.InboxRetentionResource(retention_days=30)})
    assert result.success
    meta = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT").event_specific_data.metadata
    assert _month(_months_ago(2)) in meta["partitions_dropped"].value
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event").fetchone()["n"] == 0


def test_a_redelivery_is_stored_once_even_in_another_month(settings, db, db_url):
    """Meta retries for hours (WhatsApp for days): a body first stored last month is not stored again this
    month, and the dedupe window, not the event's month, decides when it is forgotten."""
    with serve(create_app(settings, db_url)) as base:
        body = p.raw(p.WHATSAPP_TEXT)
        assert httpx.post(f"{base}/api/webhooks/meta", content=body, headers=p.signed(body)).status_code == 200
        # The first delivery was last month (moved there, as if received on the 28th at 23:59).
        last_month = _months_ago(1).replace(day=28, hour=23, minute=59)
        db.execute("SELECT create_webhook_event_partition(%s)", (last_month.date(),))
        db.execute("UPDATE meta_webhook_event SET received_at = %s", (last_month,))
        db.execute("UPDATE meta_webhook_event_digest SET received_at = %s", (last_month,))
        for _ in range(2):
            assert httpx.post(f"{base}/api/webhooks/meta", content=body, headers=p.signed(body)).status_code == 200
        assert db.execute("SELECT count(*) AS n FROM meta_webhook_event").fetchone()["n"] == 1
        assert db.execute("SELECT count(*) AS n FROM meta_webhook_event_digest").fetchone()["n"] == 1

        report = apply_retention(db, NOW, retention_days=90, dedupe_days=(NOW - last_month).days - 1)
        assert report.digests_deleted == 1 and report.dropped == []
        assert httpx.post(f"{base}/api/webhooks/meta", content=body, headers=p.signed(body)).status_code == 200
        assert db.execute("SELECT count(*) AS n FROM meta_webhook_event").fetchone()["n"] == 2


def test_the_schedules_sensor_and_job_are_defined():
    from everreach_data.definitions import defs

    repo = defs.get_repository_def()
    assert {"meta_platform_config", "whatsapp_message_template", "whatsapp_pricing_daily"} <= {
        k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert "webhook_events_retention" in {j.name for j in repo.get_all_jobs()}
    assert "token_health_sensor" in {s.name for s in repo.sensor_defs}
    assert {"token_health_daily", "whatsapp_templates_sync", "whatsapp_pricing_daily_schedule",
            "webhook_events_retention_daily"} <= {s.name for s in repo.schedule_defs}
    assert isinstance(operations.token_health_sensor, dg.SensorDefinition)


def test_an_existing_inbox_is_partitioned_by_the_migration_with_nothing_lost(empty_db_url, tmp_path):
    import shutil

    import psycopg
    from psycopg.rows import dict_row

    from everreach_data.db.migrate import SQL_DIR, migrate

    for name in ("001_core.sql", "002_inbox.sql", "003_outbound.sql"):
        shutil.copy(SQL_DIR / name, tmp_path / name)
    migrate(empty_db_url, sql_dir=tmp_path)
    with psycopg.connect(empty_db_url, autocommit=True, row_factory=dict_row) as db:
        before = [_event(db, at, status, i) for i, (at, status) in enumerate(
            [(_months_ago(3), "done"), (_months_ago(3), "failed"), (_months_ago(0), "pending")])]
        migrate(empty_db_url)
        rows = db.execute("SELECT webhook_event_id, status, tableoid::regclass::text AS part FROM meta_webhook_event "
                          "ORDER BY webhook_event_id").fetchall()
        assert [(r["webhook_event_id"], r["status"]) for r in rows] == list(zip(before, ["done", "failed", "pending"],
                                                                              strict=True))
        assert [r["part"] for r in rows] == [_month(_months_ago(3))] * 2 + [_month(_months_ago(0))]
        assert db.execute("SELECT count(*) AS n FROM meta_webhook_event_digest").fetchone()["n"] == 3
        assert _event(db, NOW, "pending", 99) == before[-1] + 1            # ids go on from where they were
        assert db.execute("SELECT count(*) AS n FROM meta_webhook_event_default").fetchone()["n"] == 0
