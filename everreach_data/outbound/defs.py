"""Messages out in Dagster: the sender's resource, the sensor-launched ``send_outbound_messages`` job, and
the operators' ``send_message`` and ``retry_failed_messages`` jobs. The work is in the plain modules beside
this one (:mod:`.sender`, :mod:`.requests`, :mod:`.operations`).

The sensor launches a send run when the queue has work: a due ``queued`` job, a ``sending`` job whose lease
expired, or an ``unknown`` job still waiting to be reconciled — one cheap query. One run drains everything
due (paced per sender), so another is launched only after it has finished; dagster.yaml's tag limit for
``everreach/queue=outbound_messages`` agrees. A run whose process died does not count
(:mod:`everreach_data.db.run_liveness`): its leased jobs come due again and a new run takes them.
"""

import asyncio

import dagster as dg
from pydantic import ValidationError

from everreach_data.config import Channels
from everreach_data.db.run_liveness import live_runs, runs_in_flight, time_budget
from everreach_data.meta.templates import body_component
from everreach_data.outbound import queue
from everreach_data.outbound.operations import retry_failed
from everreach_data.outbound.policy import PolicyViolation
from everreach_data.outbound.requests import (
    InvalidRequest,
    MessengerSend,
    WhatsAppSend,
    queue_messenger,
    queue_whatsapp,
)
from everreach_data.outbound.sender import SEND_APPLICATION, SendConfig, drain
from everreach_data.outbound.templates import TemplateRefused
from everreach_data.resources import ChannelsResource, PostgresResource

QUEUE_TAG = {"everreach/queue": "outbound_messages"}

outbound_message_job = dg.AssetSpec(
    "outbound_message_job", group_name="outbound", kinds={"postgres", "meta"}, owners=["team:messaging"],
    description="The outbound queue: one row per send request (written by the send endpoints and the send_message "
                "job), and what became of it (sent with Meta's id, failed with Meta's reason, or unknown and "
                "reconciled), written by send_outbound_messages.",
    metadata={"dagster/table_name": "public.outbound_message_job"})
SENSOR_INTERVAL_SECONDS = 5
#: Run monitoring fails a run older than this (``dagster/max_runtime``): a run whose process died can stay
#: ``STARTED`` in Dagster, and with one run allowed at a time it would hold every send. A healthy run stops
#: claiming after ``max_seconds`` and ends once its sends in flight do.
MAX_RUNTIME_SECONDS = 600


class OutboundMessagingResource(ChannelsResource):
    """The messaging channels, the WhatsApp Business Account (its template catalog is checked at send time),
    and the sender's limits (Meta's defaults)."""

    waba_id: str | None = None
    whatsapp_messages_per_second: float = 80.0
    page_sends_per_second: float = 250.0
    pair_burst: int = 45
    pair_interval_seconds: float = 6.0
    backoff_base_seconds: float = 2.0

    def channels(self) -> Channels:
        return Channels.from_values(self.base_url(), self.setting)

    def send_config(self, **overrides: object) -> SendConfig:
        return SendConfig(whatsapp_messages_per_second=self.whatsapp_messages_per_second,
                          page_sends_per_second=self.page_sends_per_second, pair_burst=self.pair_burst,
                          pair_interval_seconds=self.pair_interval_seconds,
                          backoff_base_seconds=self.backoff_base_seconds, **overrides)  # type: ignore[arg-type]


# ───────────────────────────── the queue job and its sensor ─────────────────────────────

class SendOutboundConfig(dg.Config):
    max_seconds: float = time_budget(240.0, max_runtime_seconds=MAX_RUNTIME_SECONDS,
                                     what="Stop claiming jobs after this long")
    linger_seconds: float = 5.0
    unknown_grace_seconds: float = 600.0


@dg.op(tags=QUEUE_TAG)
def drain_outbound_messages(context: dg.OpExecutionContext, config: SendOutboundConfig,
                            postgres: PostgresResource, outbound_messaging: OutboundMessagingResource
                            ) -> dg.Output[None]:
    """Send every due outbound job, paced per sender; outcomes land in outbound_message_job."""
    cfg = outbound_messaging.send_config(max_seconds=config.max_seconds, linger_seconds=config.linger_seconds,
                                         unknown_grace_seconds=config.unknown_grace_seconds)
    report = asyncio.run(drain(postgres.resolved_url(), outbound_messaging.channels(), cfg,
                               run_id=context.run_id))
    context.log.info(f"outbound: {report.sent} sent, {report.retried} to retry, {report.failed} failed, "
                     f"{report.unknown} unknown, {report.reconciled} reconciled in {report.seconds} s")
    if report.paused_channels:
        context.log.warning(f"channels paused (need re-authorization): {report.paused_channels}")
    if report.claimed or report.reconciled or report.expired or report.flagged:
        described = postgres.describe(["outbound_message_job"], context.log)
        context.log_event(dg.AssetMaterialization(asset_key="outbound_message_job", metadata={
            "sent": report.sent, "failed": report.failed, "retried": report.retried, "unknown": report.unknown,
            "reconciled": report.reconciled, "throttled": dg.MetadataValue.json(report.throttled),
            **described.get("outbound_message_job", {})}))
    return dg.Output(None, metadata=report.as_metadata())


@dg.job(tags={**QUEUE_TAG, "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
        description="Send queued Messenger, Instagram and WhatsApp messages through the Graph API.")
def send_outbound_messages() -> None:
    drain_outbound_messages()


def next_request(due: bool, in_flight: int) -> dg.RunRequest | dg.SkipReason:
    """The sensor's decision as a plain function."""
    if not due:
        return dg.SkipReason("no outbound messages due")
    if in_flight:
        return dg.SkipReason("a send run is already draining the queue")
    return dg.RunRequest(tags=QUEUE_TAG)


@dg.sensor(job=send_outbound_messages, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Launches send_outbound_messages while outbound_message_job has due work.")
def outbound_messages_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    with postgres.connect() as conn:
        if not queue.due_work_sync(conn):
            return next_request(False, 0)
        live = live_runs(conn, SEND_APPLICATION)
    return next_request(True, runs_in_flight(context.instance, QUEUE_TAG, live))


# ───────────────────────────── operators ─────────────────────────────

class SendMessageConfig(dg.Config):
    """One message from an operator. ``text`` for free-form, or ``template_name`` (WhatsApp) for a template,
    with its body parameters in order (``{{1}}``, ``{{2}}``…) or by name for a NAMED template."""

    platform: str = "whatsapp"          # messenger | instagram | whatsapp
    recipient: str                       # PSID, IGSID, phone number or WhatsApp user id
    text: str = ""
    template_name: str = ""
    template_language: str = "en_US"
    template_parameters: list[str] = []
    template_named_parameters: dict[str, str] = {}
    human_agent: bool = True            # an operator is a person
    idempotency_key: str = ""
    requested_by: str = "dagster-operator"

    def request(self) -> MessengerSend | WhatsAppSend:
        """The same request models the HTTP endpoints validate."""
        if self.platform == "whatsapp":
            if self.template_name:
                template: dict = {"name": self.template_name, "language": {"code": self.template_language}}
                if self.template_parameters or self.template_named_parameters:
                    template["components"] = [body_component(self.template_parameters,
                                                             self.template_named_parameters)]
                return WhatsAppSend(to=self.recipient, type="template", template=template)
            return WhatsAppSend(to=self.recipient, type="text", message=self.text or None)
        return MessengerSend(platform=self.platform, recipient_id=self.recipient, text=self.text or None,
                             human_agent=self.human_agent)


async def _queue_operator_message(database_url: str, channels: Channels, config: SendMessageConfig) -> dict:
    body = config.request()
    enqueue = queue_whatsapp if isinstance(body, WhatsAppSend) else queue_messenger
    conn = await queue.connect_async(database_url)
    try:
        queued = await enqueue(conn, channels, body, requested_by=config.requested_by,  # type: ignore[arg-type]
                               idempotency_key=config.idempotency_key or None)
    finally:
        await conn.close()
    return queued.response()


@dg.op
def queue_message(context: dg.OpExecutionContext, config: SendMessageConfig, postgres: PostgresResource,
                  outbound_messaging: OutboundMessagingResource) -> dg.Output[None]:
    """Validate and queue through the same checks as the HTTP endpoint; the sensor sends it."""
    try:
        result = asyncio.run(_queue_operator_message(postgres.resolved_url(), outbound_messaging.channels(),
                                                     config))
    except (ValidationError, InvalidRequest, TemplateRefused, PolicyViolation, queue.IdempotencyConflict) as exc:
        raise dg.Failure(description=f"message not queued: {exc}") from exc
    context.log.info(f"queued job {result['job_id']} to {config.platform}:{config.recipient}")
    return dg.Output(None, metadata={k: str(v) for k, v in result.items()})


@dg.job(description="Operators: send one message (same validation, policy windows and queue as the API).")
def send_message() -> None:
    queue_message()


class RetryFailedConfig(dg.Config):
    """Re-queue failed jobs (all within ``since_hours``, or just ``job_ids``). ``include_unknown`` also
    re-sends jobs whose outcome is unknown — the recipient may then get them twice. ``resume_channels``
    re-activates channels paused for re-authorization (do it after fixing the token)."""

    job_ids: list[str] = []
    since_hours: float = 24.0
    platform: str = ""
    include_unknown: bool = False
    resume_channels: bool = False


@dg.op
def requeue_failed_messages(context: dg.OpExecutionContext, config: RetryFailedConfig,
                            postgres: PostgresResource) -> dg.Output[None]:
    count = asyncio.run(retry_failed(postgres.resolved_url(), job_ids=config.job_ids,
                                     since_hours=config.since_hours, platform=config.platform or None,
                                     include_unknown=config.include_unknown,
                                     resume_channels=config.resume_channels))
    context.log.info(f"re-queued {count} outbound jobs")
    return dg.Output(None, metadata={"requeued": count})


@dg.job(description="Operators: put failed (optionally unknown-outcome) outbound messages back in the queue.")
def retry_failed_messages() -> None:
    requeue_failed_messages()


defs = dg.Definitions(assets=[outbound_message_job], jobs=[send_outbound_messages, send_message, retry_failed_messages],
                      sensors=[outbound_messages_sensor])
