"""Conversions in Dagster: asset ``meta_conversion_event`` (daily partitions over :mod:`.sync`), its checks,
job and schedule."""

import time
from datetime import timedelta

import dagster as dg

from everreach_data.conversions.store import PARTITION_ROWS, UNHASHED_VALUES
from everreach_data.conversions.sync import DEFAULT_EVENT_MAP, SyncReport, collect_app_events, send_pending
from everreach_data.db.catalog import table_metadata
from everreach_data.meta.capi import HASHED_FIELDS, STORABLE_FIELDS
from everreach_data.partitions import daily_partitions, insights_backfill_policy
from everreach_data.resources import GraphAPIResource, PostgresResource

user_event = dg.AssetSpec(
    "user_event", group_name="conversions", kinds={"postgres"}, owners=["team:app"],
    description="The app's behavioural events (written by the app, and by the message triggers): the source of "
                "meta_conversion_event.", metadata={"dagster/table_name": "public.user_event"})


class ConversionsAPIResource(GraphAPIResource):
    """The Conversions API: a pixel (``META_PIXEL_ID``) and its token."""

    TOKEN_SETTING = "META_CONVERSIONS_API_TOKEN"

    pixel_id: str | None = None


class ConversionsConfig(dg.Config):
    event_map: dict[str, str] = DEFAULT_EVENT_MAP
    action_source: str = "other"


@dg.asset(
    name="meta_conversion_event",
    partitions_def=daily_partitions,
    backfill_policy=insights_backfill_policy,
    group_name="conversions",
    kinds={"postgres", "meta"},
    deps=[user_event],
    owners=["team:analytics"],
    freshness_policy=dg.FreshnessPolicy.cron(deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=2)),
    check_specs=[
        dg.AssetCheckSpec("meta_received_every_event_sent", asset="meta_conversion_event",
                          description="events_received equals the events sent"),
    ],
)
def meta_conversion_event(context: dg.AssetExecutionContext, config: ConversionsConfig,
                          postgres: PostgresResource, conversions_api: ConversionsAPIResource) -> dg.MaterializeResult:
    """Send the app's conversion events for the partition range to Meta's Conversions API."""
    pixel_id = conversions_api.pixel_id
    window = context.partition_time_window
    report = SyncReport()
    started = time.monotonic()
    if not pixel_id:
        raise dg.Failure(description="META_PIXEL_ID is not set: the Conversions API needs the pixel's id")
    with conversions_api.failures("sending conversion events"), postgres.connect() as conn, \
            conversions_api.client() as client:
        report.collected, report.skipped_invalid = collect_app_events(
            conn, pixel_id, window.start, window.end, config.event_map, config.action_source)
        conn.commit()
        send_pending(conn, client, pixel_id, window.start, window.end, report)
        rows = conn.execute(PARTITION_ROWS, {"start": window.start, "end": window.end}).fetchone()["n"]
        table = table_metadata(conn, "meta_conversion_event", row_count=rows)
        calls = client.stats.calls
    return dg.MaterializeResult(
        metadata={
            "events_collected": report.collected, "events_sent": report.sent,
            "events_received": report.events_received, "stale_not_sent": report.stale,
            "rejected": report.failed, "skipped_unusable": report.skipped_invalid,
            "requests": report.batches, "api_calls": calls,
            "fbtrace_ids": dg.MetadataValue.json(list(report.fbtrace_ids[:20])),
            "duration_seconds": round(time.monotonic() - started, 3), **table,
        },
        check_results=[
            dg.AssetCheckResult(check_name="meta_received_every_event_sent",
                                passed=report.events_received == report.sent,
                                metadata={"sent": report.sent, "received": report.events_received}),
        ],
    )


@dg.asset_check(asset=meta_conversion_event, description="No raw PII: every stored identifier is a SHA-256 hash, "
                                                          "and nothing is stored that may not be")
def identifiers_are_hashed(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        bad = conn.execute(UNHASHED_VALUES, {"storable": list(STORABLE_FIELDS),
                                             "hashed": list(HASHED_FIELDS)}).fetchone()["n"]
    return dg.AssetCheckResult(passed=bad == 0, metadata={"unhashed_values": bad})


meta_conversions_job = dg.define_asset_job("meta_conversions_job", selection=[meta_conversion_event],
                                           partitions_def=daily_partitions)

meta_conversions_daily = dg.build_schedule_from_partitioned_job(
    meta_conversions_job, name="meta_conversions_daily", hour_of_day=1, minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="yesterday's app conversions to the Conversions API, well inside Meta's 7-day limit")


defs = dg.Definitions(assets=[user_event, meta_conversion_event], asset_checks=[identifiers_are_hashed],
                      jobs=[meta_conversions_job],
                      schedules=[meta_conversions_daily])
