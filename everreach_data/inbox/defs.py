"""Webhooks in, in Dagster: the ``process_webhook_events`` job over :func:`.drain.drain_url`, and the
sensor that launches it.

The sensor's check is one cheap indexed query. A run drains until the queue is empty, so one run in flight
usually suffices; a second is launched only when there is more waiting than one run's batch, and never more
than :data:`MAX_CONCURRENT_RUNS` (dagster.yaml's tag limit for ``everreach/queue=webhook_events`` agrees). A
run whose process died does not count (:mod:`everreach_data.db.run_liveness`).
"""

import dagster as dg

from everreach_data.db.run_liveness import live_runs, runs_in_flight, time_budget
from everreach_data.inbox import queue as inbox
from everreach_data.inbox.drain import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DRAIN_APPLICATION,
    drain_url,
)
from everreach_data.resources import PostgresResource

QUEUE_TAG = {"everreach/queue": "webhook_events"}
#: Run monitoring fails a run older than this (``dagster/max_runtime``). A run whose process died can stay
#: ``STARTED`` in Dagster when monitoring cannot reach the process that launched it, holding one of the
#: queue's two run slots for good; this frees it. A healthy run ends within its time budget plus a batch.
MAX_RUNTIME_SECONDS = 900


class WebhookDrainConfig(dg.Config):
    """Under steady traffic a run stays warm: it drains for up to ``time_budget_seconds`` and lingers
    ``linger_seconds`` on an empty queue, so events wait for a poll (0.5 s), not for a sensor tick plus a
    run start-up. The sensor and dagster.yaml still cap runs in flight at two."""

    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2
    time_budget_seconds: float = time_budget(600.0, max_runtime_seconds=MAX_RUNTIME_SECONDS,
                                             what="Stop taking batches after this long")
    linger_seconds: float = 60.0
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dg.op(tags=QUEUE_TAG)
def drain_webhook_events(context: dg.OpExecutionContext, config: WebhookDrainConfig,
                         postgres: PostgresResource) -> dg.Output[None]:
    """Drain the inbox until empty (or the time budget ends; the sensor launches another run)."""
    stats = drain_url(postgres.resolved_url(), run_id=context.run_id, workers=config.workers,
                      batch_size=config.batch_size,
                      time_budget_seconds=config.time_budget_seconds, lease_seconds=config.lease_seconds,
                      max_attempts=config.max_attempts, linger_seconds=config.linger_seconds)
    context.log.info(f"webhook events: {stats.done} done, {stats.failed} failed, {stats.retried} to retry "
                     f"in {stats.batches} batches ({stats.seconds:.2f} s); {stats.recovered} were in batches "
                     f"whose run died")
    return dg.Output(None, metadata=stats.as_metadata())


# In-process executor: one op, so the default multiprocess executor's only effect was a second Python
# process per run (importing everything again) — about half of each run's start-up.
@dg.job(tags={**QUEUE_TAG, "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
        executor_def=dg.in_process_executor,
        description="Process stored Meta webhook events into threads, messages and receipts.")
def process_webhook_events() -> None:
    drain_webhook_events()


MAX_CONCURRENT_RUNS = 2
SENSOR_INTERVAL_SECONDS = 5


def next_request(pending: int, max_id: int | None, in_flight: int, cursor: str | None,
                 *, batch_size: int = DEFAULT_BATCH_SIZE, max_runs: int = MAX_CONCURRENT_RUNS
                 ) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    """The sensor's decision as a plain function: (request or skip reason, new cursor)."""
    if not pending or max_id is None:
        return dg.SkipReason("no webhook events waiting"), cursor
    if in_flight >= max_runs:
        return dg.SkipReason(f"{in_flight} runs already draining (limit {max_runs})"), cursor
    if in_flight and pending <= batch_size:
        return dg.SkipReason("a run in flight will take what is waiting"), cursor
    seq = int(cursor.split(":")[1]) + 1 if cursor and ":" in cursor else 1
    run_key = f"webhook-events-upto-{max_id}-{seq}"
    return dg.RunRequest(run_key=run_key, tags={**QUEUE_TAG, "everreach/upto": str(max_id)}), f"{max_id}:{seq}"


@dg.sensor(job=process_webhook_events, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches process_webhook_events while meta_webhook_event has claimable rows.")
def webhook_events_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    with postgres.connect() as conn:
        pending, max_id = inbox.pending_work(conn)
        live = live_runs(conn, DRAIN_APPLICATION)
    in_flight = runs_in_flight(context.instance, QUEUE_TAG, live)
    decision, cursor = next_request(pending, max_id, in_flight, context.cursor)
    if cursor != context.cursor:
        context.update_cursor(cursor)
    return decision


defs = dg.Definitions(jobs=[process_webhook_events], sensors=[webhook_events_sensor])
