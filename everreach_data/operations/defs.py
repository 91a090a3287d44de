"""Channel operations in Dagster: token health (asset ``meta_platform_config``, its ``token_health`` check,
and ``token_health_sensor``, which pauses a messaging channel whose token stops it sending), the WhatsApp
template catalog (asset ``whatsapp_message_template``), the WhatsApp pricing report (asset
``whatsapp_pricing_daily``) and inbox retention (job ``webhook_events_retention``). The work is in the plain
modules beside this one."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from everreach_data.db.catalog import table_metadata
from everreach_data.meta.errors import GraphAPIError
from everreach_data.meta.templates import PAGE_SIZE
from everreach_data.meta.tokens import app_token
from everreach_data.operations.pricing import replace_days
from everreach_data.operations.retention import apply_retention
from everreach_data.operations.templates import sync_templates
from everreach_data.operations.tokens import ConfiguredToken, configured_tokens, enforce, inspect, record, verdict
from everreach_data.partitions import daily_partitions, insights_backfill_policy
from everreach_data.resources import ChannelsResource, GraphAPIResource, PostgresResource

OPERATIONS = {"group_name": "operations", "owners": ["team:messaging"]}

# ───────────────────────────── token health ─────────────────────────────


class MetaTokensResource(ChannelsResource):
    """Every channel's id and token (the messaging channels, the ad accounts, the pixel), and the app
    (``META_APP_ID``, ``META_APP_SECRET``) whose token asks Meta about them; without the app id each token
    asks about itself."""

    meta_app_id: str | None = None
    meta_app_secret: str | None = None
    fb_ads_account_id: str | None = None
    fb_ads_access_token: str | None = None
    meta_pixel_id: str | None = None
    meta_conversions_api_token: str | None = None

    def channels(self) -> list[ConfiguredToken]:
        return configured_tokens(self.setting)

    def app_token(self) -> str | None:
        return app_token(self.meta_app_id, self.meta_app_secret) if self.meta_app_id and self.meta_app_secret else None


TOKEN_CHECK = dg.AssetCheckSpec(
    "token_health", asset="meta_platform_config",
    description="every configured token is valid and has the scopes its flows need (fails); none expires "
                "within 7 days (warns)")


@dg.asset(**OPERATIONS, kinds={"postgres", "meta"}, check_specs=[TOKEN_CHECK],
          description="One row per channel: what /debug_token says of its token — validity, expiry, data-access "
                      "expiry, scopes, the app and user it belongs to.")
def meta_platform_config(context: dg.AssetExecutionContext, postgres: PostgresResource,
                         meta_tokens: MetaTokensResource) -> dg.MaterializeResult:
    channels = meta_tokens.channels()
    now = datetime.now(UTC)
    try:
        health = inspect(meta_tokens.base_url(), channels, app_token=meta_tokens.app_token())
    except GraphAPIError as exc:
        if exc.retryable:
            raise
        raise dg.Failure(description=f"Meta refused to check the tokens: {exc} — META_APP_ID and META_APP_SECRET "
                                     "must be the app's id and secret (or unset META_APP_ID: each token then asks "
                                     "about itself)") from exc
    with postgres.connect() as conn:
        rows = record(conn, health, now)
        table = table_metadata(conn, "meta_platform_config", row_count=len(rows))
    verdicts = {f"{r['platform']}:{r['account_id']}": verdict(r, now) for r in rows}
    errors = {k: list(v.errors) for k, v in verdicts.items() if v.errors}
    warnings = {k: list(v.warnings) for k, v in verdicts.items() if v.warnings}
    for key, problems in {**warnings, **errors}.items():
        context.log.warning(f"{key}: {'; '.join(problems)}")
    summary = {f"{r['platform']}:{r['account_id']}": {
        "setting": r["token_setting"], "valid": r["token_valid"],
        "expires_at": r["token_expires_at"].isoformat() if r["token_expires_at"] else "never"} for r in rows}
    check = dg.AssetCheckResult(
        check_name="token_health", passed=not errors and not warnings,
        severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
        description="; ".join(p for ps in {**warnings, **errors}.values() for p in ps) or "every token is healthy",
        metadata={"errors": dg.MetadataValue.json(errors), "warnings": dg.MetadataValue.json(warnings)})
    return dg.MaterializeResult(
        metadata={**table, "channels": len(rows), "tokens": dg.MetadataValue.json(summary),
                  "with_errors": len(errors), "with_warnings": len(warnings)},
        check_results=[check])


token_health_job = dg.define_asset_job("token_health_job", selection=[meta_platform_config])
token_health_daily = dg.ScheduleDefinition(
    name="token_health_daily", job=token_health_job, cron_schedule="0 5 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING, description="every token asked about, every morning")

TOKEN_SENSOR_INTERVAL_SECONDS = 15


@dg.sensor(minimum_interval_seconds=TOKEN_SENSOR_INTERVAL_SECONDS, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Pauses (needs_reauth) a messaging channel whose token is invalid, expired or lacks a "
                       "scope sends need, as meta_platform_config records it, and resumes the ones it paused "
                       "once their token is healthy again. Launches nothing.")
def token_health_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SkipReason:
    with postgres.connect() as conn:
        done = enforce(conn, datetime.now(UTC))
    for channel in done.paused:
        context.log.warning(f"{channel} paused: its token stops it sending (see meta_platform_config.status_reason)")
    for channel in done.resumed:
        context.log.info(f"{channel} resumed: its token is healthy again")
    return dg.SkipReason(f"paused {done.paused or 'none'}, resumed {done.resumed or 'none'}")


# ───────────────────────────── WhatsApp templates ─────────────────────────────


class WhatsAppTemplatesResource(GraphAPIResource):
    """The WhatsApp Business Account (``WABA_ID``) whose templates are listed, with the WhatsApp token."""

    TOKEN_SETTING = "WHATSAPP_ACCESS_TOKEN"

    waba_id: str | None = None
    page_size: int = PAGE_SIZE


@dg.asset(**OPERATIONS, kinds={"postgres", "meta"}, deps=["meta_webhook_event"],
          description="The WhatsApp template catalog: every template of WABA_ID with its status, quality, "
                      "category, components and parameter format (kept current by the template webhooks).")
def whatsapp_message_template(context: dg.AssetExecutionContext, postgres: PostgresResource,
                              whatsapp_templates: WhatsAppTemplatesResource) -> dg.MaterializeResult:
    if not whatsapp_templates.waba_id:
        raise dg.Failure(description="WABA_ID is not set: it names the WhatsApp Business Account whose templates "
                                     "are synced (docs/meta-setup.md)")
    started = datetime.now(UTC)
    with (whatsapp_templates.failures("listing the WhatsApp templates"), whatsapp_templates.client() as client,
          postgres.connect() as conn):
        result = sync_templates(conn, client, whatsapp_templates.waba_id, started,
                                page_size=whatsapp_templates.page_size)
        table = table_metadata(conn, "whatsapp_message_template")
    context.log.info(f"{result.listed} templates ({result.approved} approved), {result.dropped} dropped")
    return dg.MaterializeResult(metadata={**table, "templates": result.listed, "approved": result.approved,
                                          "dropped": result.dropped,
                                          "by_status": dg.MetadataValue.json(result.by_status),
                                          "api_calls": result.api_calls})


templates_job = dg.define_asset_job("whatsapp_templates_job", selection=[whatsapp_message_template])
whatsapp_templates_sync = dg.ScheduleDefinition(
    name="whatsapp_templates_sync", job=templates_job, cron_schedule="15 */3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="the template catalog re-synced every 3 hours (webhooks keep it current in between)")


# ───────────────────────────── WhatsApp pricing ─────────────────────────────


@dg.asset(partitions_def=daily_partitions, backfill_policy=insights_backfill_policy, group_name="operations",
          owners=["team:analytics"], kinds={"postgres"}, deps=["meta_webhook_event"],
          description="Per day, WhatsApp number, pricing category and type: messages Meta priced, and the billable "
                      "ones delivered — what Meta charges for.")
def whatsapp_pricing_daily(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    window = context.partition_time_window
    since, until = window.start.date(), window.end.date()
    with postgres.connect() as conn:
        by_category = replace_days(conn, since, until)
        table = table_metadata(conn, "whatsapp_pricing_daily")
    return dg.MaterializeResult(metadata={**table,
        "billable_messages": sum(c["billable"] for c in by_category.values()),
        "priced_messages": sum(c["messages"] for c in by_category.values()),
        "billable_by_category": dg.MetadataValue.json({k: c["billable"] for k, c in by_category.items()}),
        "date_range": f"{since}..{until - timedelta(days=1)}"})


pricing_job = dg.define_asset_job("whatsapp_pricing_job", selection=[whatsapp_pricing_daily],
                                  partitions_def=daily_partitions)
whatsapp_pricing_daily_schedule = dg.build_schedule_from_partitioned_job(
    pricing_job, name="whatsapp_pricing_daily_schedule", hour_of_day=7, minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.RUNNING, description="yesterday's WhatsApp pricing, every morning")


# ───────────────────────────── inbox retention ─────────────────────────────


class InboxRetentionResource(dg.ConfigurableResource):
    """How long the webhook inbox keeps a month (``WEBHOOK_RETENTION_DAYS``) and body hashes for dedupe
    (``WEBHOOK_DEDUPE_DAYS``)."""

    retention_days: int = 90
    dedupe_days: int = 7


@dg.op
def drop_finished_months(context: dg.OpExecutionContext, postgres: PostgresResource,
                         inbox_retention: InboxRetentionResource) -> dg.Output[None]:
    """Drop the inbox's months past retention whose events are all finished; keep the others, saying why."""
    with postgres.connect(autocommit=True) as conn:
        report = apply_retention(conn, datetime.now(UTC), retention_days=inbox_retention.retention_days,
                                 dedupe_days=inbox_retention.dedupe_days)
    for partition, why in report.kept.items():
        context.log.warning(f"{partition} kept: {why}")
    context.log.info(f"dropped {report.dropped or 'nothing'}; created {report.created or 'nothing'}; "
                     f"{report.digests_deleted} old body hashes forgotten")
    return dg.Output(None, metadata=report.as_metadata())


@dg.job(description="Inbox retention: drop meta_webhook_event months past WEBHOOK_RETENTION_DAYS whose events are "
                    "all finished (failed ones keep their month), create the months ahead.")
def webhook_events_retention() -> None:
    drop_finished_months()


webhook_events_retention_daily = dg.ScheduleDefinition(
    name="webhook_events_retention_daily", job=webhook_events_retention, cron_schedule="30 3 * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)


defs = dg.Definitions(
    assets=[meta_platform_config, whatsapp_message_template, whatsapp_pricing_daily],
    jobs=[token_health_job, templates_job, pricing_job, webhook_events_retention],
    schedules=[token_health_daily, whatsapp_templates_sync, whatsapp_pricing_daily_schedule,
               webhook_events_retention_daily],
    sensors=[token_health_sensor])
