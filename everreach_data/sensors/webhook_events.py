"""``webhook_events_sensor``: launch ``process_webhook_events`` when the inbox has claimable events.

The check is one cheap indexed query. A run drains until the queue is empty, so one run in flight usually
suffices; a second is launched only when there is more waiting than one run's batch, and never more than
:data:`MAX_CONCURRENT_RUNS` (dagster.yaml's tag limit for ``everreach/queue=webhook_events`` agrees). A run
whose process died does not count (:mod:`everreach_data.run_liveness`).
"""

import dagster as dg

from everreach_data.db import webhook_inbox as inbox
from everreach_data.jobs.webhook_events import (
    DEFAULT_BATCH_SIZE, DRAIN_APPLICATION, QUEUE_TAG, process_webhook_events,
)
from everreach_data.resources import PostgresResource
from everreach_data.run_liveness import live_runs, runs_in_flight

MAX_CONCURRENT_RUNS = 2
INTERVAL_SECONDS = 5


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


@dg.sensor(job=process_webhook_events, minimum_interval_seconds=INTERVAL_SECONDS,
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
