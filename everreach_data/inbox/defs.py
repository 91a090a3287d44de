"""Webhooks in, in Dagster: the inbox and the conversation tables as assets, the ``process_webhook_events``
job over :func:`.drain.drain_url`, and the sensor that launches it.

The tables are external assets: the receiver writes ``meta_webhook_event`` (the sensor reports what arrived,
at most once a minute, so its freshness says whether Meta's webhooks are still coming), and each drain run
reports what it wrote to the conversation tables. They stay queue-driven: nothing here is materialized on
demand.

The sensor's check is one cheap indexed query. A run drains until the queue is empty, so one run in flight
usually suffices; a second is launched only when there is more waiting than one run's batch, and never more
than :data:`MAX_CONCURRENT_RUNS` (dagster.yaml's tag limit for ``everreach/queue=webhook_events`` agrees). A
run whose process died does not count (:mod:`everreach_data.db.run_liveness`).
"""

import time
from datetime import timedelta

import dagster as dg

from everreach_data.db.catalog import table_metadata
from everreach_data.db.run_liveness import live_runs, presence, runs_in_flight, time_budget
from everreach_data.inbox import queue as inbox
from everreach_data.inbox.drain import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DRAIN_APPLICATION,
    DrainStats,
    drain_url,
)
from everreach_data.resources import PostgresResource

QUEUE_TAG = {"everreach/queue": "webhook_events"}
OWNERS = ["team:messaging"]
#: Reports of what arrived in the inbox, and of what a drain run wrote, come this often at most.
INTAKE_REPORT_SECONDS = 60
REPORT_EVERY_SECONDS = 60.0

meta_webhook_event = dg.AssetSpec(
    "meta_webhook_event", group_name="inbox", kinds={"postgres", "meta"}, owners=OWNERS,
    description="Every webhook body Meta sent, stored by the receiver before it answered 200 (once per byte-identical "
                "body), drained by process_webhook_events.",
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=24), warn_window=timedelta(hours=1)),
    metadata={"dagster/table_name": "public.meta_webhook_event"})


def _conversation_table(name: str, description: str, *, deps: list[str]) -> dg.AssetSpec:
    return dg.AssetSpec(name, deps=deps, group_name="inbox", kinds={"postgres"}, owners=OWNERS,
                        description=description + " Written by process_webhook_events.",
                        metadata={"dagster/table_name": f"public.{name}"})


conversation_thread = _conversation_table(
    "conversation_thread", "One thread per platform, channel and person.", deps=["meta_webhook_event"])
conversation_message = _conversation_table(
    "conversation_message", "Every message in and out, unique by Meta's id; outbound ones are queued by the send "
    "endpoints and moved along by send_outbound_messages and the status webhooks.",
    deps=["meta_webhook_event", "conversation_thread", "outbound_message_job"])
message_delivery_event = _conversation_table(
    "message_delivery_event", "Receipts: statuses, deliveries, reads and deletions, applied to their messages.",
    deps=["meta_webhook_event", "conversation_message"])
messaging_policy_window = _conversation_table(
    "messaging_policy_window", "When each thread may be messaged, opened by the person's messages.",
    deps=["conversation_message"])
CONVERSATION_TABLES = (conversation_thread, conversation_message, message_delivery_event, messaging_policy_window)


def written(stats: DrainStats) -> dict[str, dict[str, object]]:
    """What a run wrote, per conversation table (only the tables it wrote)."""
    out: dict[str, dict[str, object]] = {}
    if stats.threads_created or stats.messages:
        out["conversation_thread"] = {"threads_created": stats.threads_created}
    if stats.messages:
        waited = stats.as_metadata()
        out["conversation_message"] = {
            "messages_written": stats.messages,
            "messages_by_platform": dg.MetadataValue.json(dict(stats.messages_by_platform)),
            "webhook_wait_seconds_mean": waited["waited_seconds_mean"],
            "webhook_wait_seconds_max": round(stats.waited_seconds_max, 3)}
    if stats.receipts:
        out["message_delivery_event"] = {"receipts_written": stats.receipts,
                                         "receipts_applied_late": stats.orphans_applied}
    if stats.inbound_messages:
        out["messaging_policy_window"] = {"windows_opened_or_extended_by": stats.inbound_messages}
    return out
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
    """Drain the inbox until empty (or the time budget ends; the sensor launches another run), reporting what
    was written to the conversation tables every minute or so: under steady traffic a run lasts minutes."""
    deadline = time.monotonic() + config.time_budget_seconds
    total = DrainStats(idle=True)
    url = postgres.resolved_url()
    # The run's presence is held across the reports too: between two drains it must not look dead.
    with presence(url, DRAIN_APPLICATION, context.run_id):
        while True:
            stats = drain_url(url, workers=config.workers, batch_size=config.batch_size,
                              lease_seconds=config.lease_seconds,
                              time_budget_seconds=max(1.0, min(REPORT_EVERY_SECONDS, deadline - time.monotonic())),
                              max_attempts=config.max_attempts, linger_seconds=config.linger_seconds)
            report_written(context, postgres, stats)
            total.add(stats)
            total.seconds += stats.seconds
            if stats.idle or time.monotonic() >= deadline:
                break
    context.log.info(f"webhook events: {total.done} done, {total.failed} failed, {total.retried} to retry "
                     f"in {total.batches} batches ({total.seconds:.2f} s); {total.recovered} were in batches "
                     f"whose run died")
    return dg.Output(None, metadata=total.as_metadata())


def report_written(context: dg.OpExecutionContext, postgres: PostgresResource, stats: DrainStats) -> None:
    if tables := written(stats):
        described = postgres.describe(tables, context.log)
        for table, metadata in tables.items():
            context.log_event(dg.AssetMaterialization(asset_key=table,
                                                      metadata={**metadata, **described.get(table, {})}))


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
def webhook_events_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SensorResult:
    with postgres.connect() as conn:
        pending, max_id = inbox.pending_work(conn)
        live = live_runs(conn, DRAIN_APPLICATION)
        arrived = intake_report(context.instance, conn)
    in_flight = runs_in_flight(context.instance, QUEUE_TAG, live)
    decision, cursor = next_request(pending, max_id, in_flight, context.cursor)
    return dg.SensorResult(
        run_requests=[decision] if isinstance(decision, dg.RunRequest) else None,
        skip_reason=decision if isinstance(decision, dg.SkipReason) else None,
        cursor=cursor, asset_events=[arrived] if arrived else None)


def intake_report(instance: dg.DagsterInstance, conn) -> dg.AssetMaterialization | None:
    """A materialization of ``meta_webhook_event`` for what arrived since the last one, once a minute at most."""
    last = instance.get_latest_materialization_event(dg.AssetKey("meta_webhook_event"))
    if last is not None and time.time() - last.timestamp < INTAKE_REPORT_SECONDS:
        return None
    entry = last.asset_materialization.metadata.get("newest_webhook_event_id") if last else None
    after = int(entry.value) if entry is not None else 0
    arrived = inbox.arrived_since(conn, after)
    if not arrived["events"]:
        return None
    return dg.AssetMaterialization(asset_key="meta_webhook_event", metadata={
        "events_arrived": arrived["events"], "newest_webhook_event_id": arrived["newest_id"],
        "newest_received_at": arrived["newest_at"].isoformat(), **table_metadata(conn, "meta_webhook_event")})


defs = dg.Definitions(assets=[meta_webhook_event, *CONVERSATION_TABLES], jobs=[process_webhook_events],
                      sensors=[webhook_events_sensor])
