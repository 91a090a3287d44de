"""``webhook_events_sensor``: launch ``process_webhook_events`` when the inbox has claimable events.

The check is one cheap indexed query. A run drains until the queue is empty, so one run in flight usually
suffices; a second is launched only when there is more waiting than one run's batch, and never more than
:data:`MAX_CONCURRENT_RUNS` (dagster.yaml's tag limit for ``everreach/queue=webhook_events`` agrees).
"""


import time

import dagster as dg

from everreach_data.db import webhook_inbox as inbox
from everreach_data.jobs.webhook_events import (
    DEFAULT_BATCH_SIZE, QUEUE_TAG, live_drain_runs, process_webhook_events,
)
from everreach_data.resources import PostgresResource

MAX_CONCURRENT_RUNS = 2
INTERVAL_SECONDS = 5
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


#: A run started this recently may not have connected yet; an older one counts only while its drain sessions
#: are open in Postgres. One whose process died (killed, out of memory) can stay ``STARTED`` in Dagster for
#: good — run monitoring cannot always tell — and would otherwise hold the queue.
START_GRACE_SECONDS = 120.0


def runs_in_flight(instance: dg.DagsterInstance, live_run_ids: set[str], *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT, tags=QUEUE_TAG))
    return sum(1 for r in records
               if r.dagster_run.status != dg.DagsterRunStatus.STARTED or r.dagster_run.run_id in live_run_ids
               or now - (r.start_time or r.create_timestamp.timestamp()) < START_GRACE_SECONDS)


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
        live = live_drain_runs(conn)
    decision, cursor = next_request(pending, max_id, runs_in_flight(context.instance, live), context.cursor)
    if cursor != context.cursor:
        context.update_cursor(cursor)
    return decision
