"""``webhook_events_sensor`` and ``process_webhook_events`` through Dagster's own test harness."""

from __future__ import annotations

import time
from collections import Counter

import dagster as dg
import psycopg
import pytest
from pydantic import ValidationError

from everreach_data.db.run_liveness import START_GRACE_SECONDS, live_runs, presence, runs_in_flight
from everreach_data.inbox.defs import (
    QUEUE_TAG,
    WebhookDrainConfig,
    next_request,
    process_webhook_events,
    report_written,
    webhook_events_sensor,
)
from everreach_data.inbox.drain import DRAIN_APPLICATION, DrainStats
from everreach_data.outbound.defs import SendOutboundConfig, send_outbound_messages
from everreach_data.resources import PostgresResource

from . import payloads as p
from .helpers import enqueue, message


def _evaluate(instance: dg.DagsterInstance, db_url: str, cursor: str | None = None):
    """(the run request or skip reason, the context with the sensor's new cursor, the reported asset events)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"postgres": PostgresResource(url=db_url)})
    result = webhook_events_sensor(context)
    context.update_cursor(result.cursor)
    return (result.run_requests[0] if result.run_requests else result.skip_reason), context, result.asset_events


def test_sensor_reports_what_arrived_in_the_inbox_at_most_once_a_minute(db_url, db):
    with dg.instance_for_test() as instance:
        assert not _evaluate(instance, db_url)[2]            # nothing arrived yet
        enqueue(db, p.MESSENGER, p.WHATSAPP_TEXT)
        [arrived] = _evaluate(instance, db_url)[2]
        assert arrived.asset_key == dg.AssetKey("meta_webhook_event")
        assert arrived.metadata["events_arrived"].value == 2
        instance.report_runless_asset_event(arrived)         # what the daemon does with a sensor's asset events
        enqueue(db, p.INSTAGRAM)
        assert not _evaluate(instance, db_url)[2]            # reported less than a minute ago


def test_sensor_requests_a_tagged_run_only_when_events_wait(db_url, db):
    with dg.instance_for_test() as instance:
        result, _, _ = _evaluate(instance, db_url)
        assert isinstance(result, dg.SkipReason)
        enqueue(db, p.MESSENGER, p.WHATSAPP_TEXT)
        request, context, _ = _evaluate(instance, db_url)
        assert isinstance(request, dg.RunRequest) and request.tags["everreach/queue"] == "webhook_events"
        again, _, _ = _evaluate(instance, db_url, cursor=context.cursor)
        assert again.run_key != request.run_key  # a new key per request (the in-flight cap dedupes)
        assert webhook_events_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_sensor_never_exceeds_the_concurrent_run_limit():
    assert isinstance(next_request(5000, 99, 2, None)[0], dg.SkipReason)
    assert isinstance(next_request(10, 99, 1, None)[0], dg.SkipReason)      # the running one takes it
    assert isinstance(next_request(5000, 99, 1, None)[0], dg.RunRequest)    # more than one batch waits
    request, cursor = next_request(5000, 99, 0, "98:4")
    assert request.run_key == "webhook-events-upto-99-5" and cursor == "99:5"


def test_a_started_run_whose_presence_is_gone_does_not_hold_the_queue(db_url):
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(process_webhook_events, tags=QUEUE_TAG,
                                          status=dg.DagsterRunStatus.STARTED)
        later = time.time() + START_GRACE_SECONDS + 1
        assert runs_in_flight(instance, QUEUE_TAG, set()) == 1  # just started: it may not have connected yet
        # Long started with no presence: its process died.
        assert runs_in_flight(instance, QUEUE_TAG, set(), now=later) == 0
        with presence(db_url, DRAIN_APPLICATION, run.run_id), psycopg.connect(db_url) as conn:
            live = live_runs(conn, DRAIN_APPLICATION)
        assert run.run_id in live and "another-run" not in live and len(live) == 1
        assert runs_in_flight(instance, QUEUE_TAG, live, now=later) == 1


def test_job_drains_the_inbox(db_url, db):
    enqueue(db, p.MESSENGER, p.INSTAGRAM, p.WHATSAPP_TEXT)
    result = process_webhook_events.execute_in_process(
        resources={"postgres": PostgresResource(url=db_url)}, tags=QUEUE_TAG,
        run_config={"ops": {"drain_webhook_events": {"config": {"linger_seconds": 0, "workers": 2}}}})
    assert result.success
    assert db.execute("SELECT count(*) AS n FROM meta_webhook_event WHERE status = 'done'").fetchone()["n"] == 3
    assert message(db, "m_EchoD")["status"] == "read"
    # The run reports what it wrote to each conversation table, with the table's columns as the schema says.
    wrote = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node(
        "drain_webhook_events")}
    assert set(wrote) == {"conversation_thread", "conversation_message", "message_delivery_event",
                          "messaging_policy_window"}
    messages = db.execute("SELECT platform, count(*) AS n FROM conversation_message GROUP BY 1").fetchall()
    assert wrote["conversation_message"]["messages_by_platform"].value == {r["platform"]: r["n"] for r in messages}
    columns = {c.name: c.description for c in wrote["conversation_message"]["dagster/column_schema"].schema.columns}
    assert columns["sent_at"] == "Meta's timestamp of the message" and "payload" in columns


def test_queue_runs_end_within_their_max_runtime_so_monitoring_can_fail_dead_ones():
    for job, config, budget in ((process_webhook_events, WebhookDrainConfig, "time_budget_seconds"),
                                (send_outbound_messages, SendOutboundConfig, "max_seconds")):
        max_runtime = float(job.tags["dagster/max_runtime"])
        assert getattr(config(), budget) < max_runtime
        with pytest.raises(ValidationError, match=budget):
            config(**{budget: max_runtime})


def test_a_runs_report_of_what_it_wrote_survives_a_database_that_is_away():
    """The drain rides out a database restart; its report every minute must too (it failed the run when the
    restart fell on it): the counts come from the run, only the tables' sizes and columns are left out."""
    stats = DrainStats(done=3, messages=3, messages_by_platform=Counter(whatsapp=3), inbound_messages=3,
                       threads_created=1)

    @dg.op
    def report(context, postgres: PostgresResource) -> None:
        report_written(context, postgres, stats)

    @dg.job
    def reporting() -> None:
        report()

    away = PostgresResource(url="postgresql://everreach@127.0.0.1:1/everreach?connect_timeout=2")
    run = reporting.execute_in_process(resources={"postgres": away})
    assert run.success
    written = {str(m.asset_key.path[-1]): m.metadata for m in run.asset_materializations_for_node("report")}
    assert set(written) == {"conversation_thread", "conversation_message", "messaging_policy_window"}
    assert written["conversation_message"]["messages_written"].value == 3
    assert "dagster/row_count" not in written["conversation_message"]
