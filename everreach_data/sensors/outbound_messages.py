"""``outbound_messages_sensor``: launch ``send_outbound_messages`` when the outbound queue has work.

Work is a due ``queued`` job, a ``sending`` job whose lease expired, or an ``unknown`` job still waiting to be
reconciled — one cheap query. One run drains everything due (paced per sender), so a second is launched only
after the first has finished; dagster.yaml's tag limit for ``everreach/queue=outbound_messages`` agrees. A run
whose process died does not count (:mod:`everreach_data.run_liveness`): its leased jobs come due again and a
new run takes them.
"""

import dagster as dg

from everreach_data.db.outbound_queue import due_work_sync
from everreach_data.jobs.outbound_messages import QUEUE_TAG, SEND_APPLICATION, send_outbound_messages
from everreach_data.resources import PostgresResource
from everreach_data.run_liveness import live_runs, runs_in_flight

INTERVAL_SECONDS = 5


def next_request(due: bool, in_flight: int) -> dg.RunRequest | dg.SkipReason:
    """The sensor's decision as a plain function."""
    if not due:
        return dg.SkipReason("no outbound messages due")
    if in_flight:
        return dg.SkipReason("a send run is already draining the queue")
    return dg.RunRequest(tags=QUEUE_TAG)


@dg.sensor(job=send_outbound_messages, minimum_interval_seconds=INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches send_outbound_messages while outbound_message_job has due work.")
def outbound_messages_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    with postgres.connect() as conn:
        if not due_work_sync(conn):
            return next_request(False, 0)
        live = live_runs(conn, SEND_APPLICATION)
    return next_request(True, runs_in_flight(context.instance, QUEUE_TAG, live))
