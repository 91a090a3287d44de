"""The Dagster side: the operator's send_message job (same checks and queue as the API), the sensor that
launches send_outbound_messages, the job itself, and retry_failed_messages."""

from __future__ import annotations

import asyncio
import threading

import dagster as dg
import httpx

from everreach_data import cli
from everreach_data.db import run_liveness
from everreach_data.db.run_liveness import LiveRuns, live_runs, presence
from everreach_data.definitions import build_resources
from everreach_data.outbound import defs as jobs
from everreach_data.outbound.defs import outbound_messages_sensor
from everreach_data.outbound.sender import SEND_APPLICATION, SendConfig, drain

from .helpers import FAST, HOUR, new_user, sandbox_sent, send_whatsapp, user_wrote, wait_for


def _resources(out_settings) -> dict:
    """What definitions.py builds, from this test's settings (the sandbox's, this test's database)."""
    return build_resources(out_settings, secrets_as_env_vars=False)


def _send(resources, **config):
    return jobs.send_message.execute_in_process(
        run_config={"ops": {"queue_message": {"config": config}}}, resources=resources, raise_on_error=False)


def test_operator_send_goes_through_the_same_checks_and_queue(monkeypatch, out_settings, sandbox, db, db_url):
    resources = _resources(out_settings)
    quiet, chatty = new_user("whatsapp"), new_user("messenger")
    user_wrote(db, sandbox, "messenger", chatty, 30 * HOUR)       # human-agent window only

    assert _send(resources, platform="whatsapp", recipient=quiet, template_name="hello_world").success
    refused = _send(resources, platform="whatsapp", recipient=quiet, text="free-form, no window")
    assert not refused.success
    assert "template" in refused.failure_data_for_node("queue_message").user_failure_data.description
    # An operator is a person: Messenger between 24 h and 7 days goes out tagged HUMAN_AGENT.
    assert _send(resources, platform="messenger", recipient=chatty, text="An agent here").success
    jobs_ = db.execute("SELECT platform, tag, requested_by FROM outbound_message_job ORDER BY created_at").fetchall()
    assert jobs_ == [{"platform": "whatsapp", "tag": None, "requested_by": "dagster-operator"},
                     {"platform": "messenger", "tag": "HUMAN_AGENT", "requested_by": "dagster-operator"}]

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"postgres": resources["postgres"]})
        request = outbound_messages_sensor(context)
        assert isinstance(request, dg.RunRequest) and request.tags == {"everreach/queue": "outbound_messages"}

        result = jobs.send_outbound_messages.execute_in_process(
            run_config={"ops": {"drain_outbound_messages": {"config": {"linger_seconds": 0.0}}}},
            resources=resources, instance=instance)
        assert result.success
        output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
        assert output.event_specific_data.metadata["sent"].value == 2
        [queue] = result.asset_materializations_for_node("drain_outbound_messages")
        assert queue.asset_key == dg.AssetKey("outbound_message_job") and queue.metadata["sent"].value == 2
        assert queue.metadata["dagster/row_count"].value >= 0
        assert len(sandbox_sent(sandbox)) == 2
        assert isinstance(outbound_messages_sensor(dg.build_sensor_context(
            instance=instance, resources={"postgres": resources["postgres"]})), dg.SkipReason)

    db.execute("UPDATE outbound_message_job SET status = 'failed', error_message = 'x' WHERE platform = 'whatsapp'")
    retried = jobs.retry_failed_messages.execute_in_process(
        run_config={"ops": {"requeue_failed_messages": {"config": {"platform": "whatsapp"}}}}, resources=resources)
    assert retried.success
    assert db.execute("SELECT status, attempts FROM outbound_message_job WHERE platform = 'whatsapp'").fetchone() == {
        "status": "queued", "attempts": 0}

    # The same from the command line, which reads the environment.
    monkeypatch.setenv("DATABASE_URL", db_url)
    db.execute("UPDATE outbound_message_job SET status = 'failed' WHERE platform = 'whatsapp'")
    assert cli.main(["retry-messages", "--platform", "whatsapp"]) == 0
    assert db.execute("SELECT status FROM outbound_message_job WHERE platform = 'whatsapp'").fetchone() == {
        "status": "queued"}


def test_a_send_run_whose_process_died_does_not_hold_the_outbound_queue(monkeypatch, out_settings, db_url):
    """One send run at a time: a dead one that Dagster still shows STARTED must not hold every send."""
    resources = _resources(out_settings)
    assert _send(resources, platform="whatsapp", recipient=new_user("whatsapp"), template_name="hello_world").success

    def evaluate(instance):
        return outbound_messages_sensor(dg.build_sensor_context(instance=instance,
                                                                resources={"postgres": resources["postgres"]}))

    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(jobs.send_outbound_messages, tags=jobs.QUEUE_TAG,
                                          status=dg.DagsterRunStatus.STARTED)
        assert isinstance(evaluate(instance), dg.SkipReason)  # just started: it may not have connected yet
        monkeypatch.setattr(run_liveness, "START_GRACE_SECONDS", 0.0)
        assert isinstance(evaluate(instance), dg.RunRequest)  # started, no presence: its process died
        with presence(db_url, SEND_APPLICATION, run.run_id):
            assert isinstance(evaluate(instance), dg.SkipReason)  # alive



def test_a_send_run_is_present_while_it_sends(receiver, sandbox, db, db_url, out_settings):
    """What the sensor reads: the presence of a run that is sending, and none once it has ended."""
    send_whatsapp(receiver, {"to": new_user("whatsapp"), "type": "template",
                             "template": {"name": "hello_world", "language": {"code": "en_US"}}})
    httpx.post(f"{sandbox}/_sandbox/faults", json={"latency_ms": 1500}).raise_for_status()  # a send in flight
    run = threading.Thread(target=lambda: asyncio.run(drain(db_url, out_settings.channels(), SendConfig(**FAST),
                                                                 run_id="send-run-1")))
    run.start()
    try:
        wait_for(lambda: live_runs(db, SEND_APPLICATION) == LiveRuns.of("send-run-1"), timeout=30,
                 what="the run's presence")
    finally:
        run.join(timeout=30)
    assert live_runs(db, SEND_APPLICATION) == LiveRuns.of()
    assert len(sandbox_sent(sandbox)) == 1
