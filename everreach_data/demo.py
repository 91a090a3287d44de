"""``everreach-data demo``: one end-to-end pass on the embedded defaults, ending in a readable summary.

The Graph API sandbox runs in this process on a free loopback port and the project's settings point at it
(the sandbox's tokens, ``META_GRAPH_URL``); Postgres is ``DATABASE_URL`` or the embedded server. Then each
step in :data:`STEPS` runs in order and reports one line.

Adding a step: write ``def step_x(ctx: DemoContext) -> str`` (do the work through the project's own
modules, return one line saying what landed where) and insert ``("name", step_x)`` into :data:`STEPS` where
it belongs. A step that raises stops the demo with its name and the error; later steps can read what
earlier ones left in ``ctx.results``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from psycopg import sql
from pydantic import SecretStr

from everreach_data.config import Settings
from everreach_data.db.connection import connect, database_urls, redact
from everreach_data.db.migrate import SQL_DIR, migrate
from everreach_data.meta.client import GraphClient
from everreach_sandbox.core import SandboxState, utc_today
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from everreach_sandbox.server import build_state, serve_in_background


@dataclass
class DemoContext:
    """What every step gets: settings aimed at the in-process sandbox, the database, the sandbox itself."""

    settings: Settings
    db_url: str
    sandbox_url: str
    sandbox: SandboxState
    results: dict[str, Any] = field(default_factory=dict)

    def graph(self, token_name: str) -> GraphClient:
        """A Graph API client for one of the configured tokens (``FB_ADS_ACCESS_TOKEN``…)."""
        return GraphClient(self.settings.graph_base_url, self.settings.secret(token_name))


Step = Callable[[DemoContext], str]


# ───────────────────────────── steps ─────────────────────────────


def step_migrate(ctx: DemoContext) -> str:
    applied = migrate(ctx.db_url)
    return f"{redact(ctx.db_url)}: " + (f"applied {', '.join(applied)}" if applied else "schema up to date")


def step_tokens(ctx: DemoContext) -> str:
    """Token health, as the meta_platform_config asset records it every morning: each channel's token asked
    about with /debug_token, one row per channel."""
    from datetime import UTC, datetime

    from everreach_data.meta.tokens import app_token
    from everreach_data.operations.tokens import configured_tokens, inspect, record, verdict

    settings = ctx.settings
    health = inspect(settings.graph_base_url, configured_tokens(settings.secret),
                     app_token=app_token(settings.META_APP_ID or "", settings.secret("META_APP_SECRET") or ""))
    now = datetime.now(UTC)
    with connect(ctx.db_url) as conn:
        rows = record(conn, health, now)
    parts = []
    for row in rows:
        expires = row["token_expires_at"]
        life = "never expires" if expires is None else f"expires in {(expires - now).days} d"
        problems = verdict(row, now).errors
        parts.append(f"{row['platform']} {'valid' if row['token_valid'] and not problems else 'INVALID'} ({life})")
    ctx.results["tokens"] = parts
    return "; ".join(parts)


def step_organic_probe(ctx: DemoContext) -> str:
    """Read yesterday's Page and Instagram numbers from the Graph API (what the organic assets ingest)."""
    yesterday = utc_today() - timedelta(days=1)
    window = {"since": yesterday.isoformat(), "until": utc_today().isoformat(), "period": "day"}
    with ctx.graph("MESSENGER_PAGE_TOKEN") as g:
        page = g.get(
            f"/{ctx.settings.MESSENGER_PAGE_ID}/insights", metric="page_media_view,page_follows", **window
        )["data"]
        media = list(
            g.paginate(
                f"/{ctx.settings.INSTAGRAM_USER_ID}/media",
                {"fields": "id,media_type", "since": yesterday.isoformat(), "limit": 50},
            )
        )
    numbers = {m["name"]: m["values"][0]["value"] for m in page if m["values"]}
    ctx.results["organic_probe"] = numbers
    return (
        f"Page {yesterday}: media views {numbers.get('page_media_view')}, followers "
        f"{numbers.get('page_follows')}; Instagram media since yesterday: {len(media)}"
    )


def step_seed(ctx: DemoContext) -> str:
    """The runbook's sample data: users, campaigns and the app events the conversions asset sends."""
    with connect(ctx.db_url) as conn:
        conn.execute((SQL_DIR / "seed" / "sample_data.sql").read_text())
        n = conn.execute("SELECT count(*) AS n FROM user_event").fetchone()["n"]
    return f"sample users, campaigns and {n} user events loaded"


def step_assets(ctx: DemoContext) -> str:
    """Materialize yesterday's partition of every insights asset, as the daily schedules do."""
    import warnings

    import dagster as dg

    with warnings.catch_warnings():  # Dagster flags backfill policies as beta; not news for a demo reader
        warnings.simplefilter("ignore")
        from everreach_data.ads.defs import ad_performance
        from everreach_data.conversions.defs import meta_conversion_event
        from everreach_data.definitions import build_resources
        from everreach_data.organic.defs import (
            social_account_insights,
            social_media_post,
            social_post_insights,
        )

    yesterday = (utc_today() - timedelta(days=1)).isoformat()
    result = dg.materialize(
        [ad_performance, social_media_post, social_post_insights, social_account_insights, meta_conversion_event],
        partition_key=yesterday, raise_on_error=True,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        resources=build_resources(ctx.settings.model_copy(update={"DATABASE_URL": SecretStr(ctx.db_url)}),
                                  secrets_as_env_vars=False),
    )
    names = ("ad_performance", "social_media_post", "social_account_insights", "meta_conversion_event")
    meta = {name: result.asset_materializations_for_node(name)[0].metadata for name in names}
    ads_meta = meta["ad_performance"]
    ctx.results["assets"] = {k: {n: v.value for n, v in m.items()} for k, m in meta.items()}
    return (f"{yesterday}: ad_performance {ads_meta['rows_written'].value} rows "
            f"(spend {ads_meta['total_spend'].value}); social_media_post "
            f"{meta['social_media_post']['rows_written'].value}; social_account_insights "
            f"{meta['social_account_insights']['rows_written'].value} values; meta_conversion_event "
            f"{meta['meta_conversion_event']['events_sent'].value} sent")


def step_webhooks(ctx: DemoContext) -> str:
    """Post a burst of signed Messenger/Instagram/WhatsApp webhooks to the receiver, then drain them."""
    import asyncio

    from everreach_data.inbox.drain import drain_url
    from everreach_data.receiver.app import create_app
    from everreach_data.serving import serve_in_background
    from everreach_sandbox.traffic import post_traffic

    # Counted before and after: the embedded database keeps its data, so a second demo reports what it
    # added, not what the tables hold.
    tables = ("meta_webhook_event", "conversation_thread", "conversation_message", "message_delivery_event")
    before = table_counts(ctx.db_url, tables)
    with serve_in_background(create_app(ctx.settings, ctx.db_url), name="receiver") as receiver:
        ctx.sandbox.webhook_url = f"{receiver}/api/webhooks/meta"
        posted = asyncio.run(post_traffic(ctx.sandbox.webhook_url, ctx.settings.secret("META_APP_SECRET") or "",
                                          rate=500, count=300, seed=1))
        stats = drain_url(ctx.db_url)
    added = {t: n - before[t] for t, n in table_counts(ctx.db_url, tables).items()}
    ctx.results["webhooks"] = {**posted, **added}
    return (f"{posted['ok']} POSTs answered 200 ({added['meta_webhook_event']} distinct events stored, "
            f"duplicates dropped); drained {stats.claimed}: {added['conversation_thread']} new threads, "
            f"{added['conversation_message']} messages, {added['message_delivery_event']} receipts")


def step_send(ctx: DemoContext) -> str:
    """An operator sends a WhatsApp template through the receiver; the send job delivers it; the sandbox's
    signed status webhooks come back through the receiver and move the message along."""
    import asyncio

    import httpx

    from everreach_data.inbox.drain import drain_url
    from everreach_data.outbound.sender import drain
    from everreach_data.receiver.app import create_app
    from everreach_data.receiver.auth import Role, TokenPolicy
    from everreach_data.serving import serve_in_background
    from everreach_sandbox.traffic import KNOWN_USERS

    with serve_in_background(create_app(ctx.settings, ctx.db_url), name="receiver") as receiver:
        ctx.sandbox.webhook_url = f"{receiver}/api/webhooks/meta"
        token = TokenPolicy.from_settings(ctx.settings).issue("demo-operator", [Role.OPERATOR])
        answer = httpx.post(f"{receiver}/api/v1/integrations/whatsapp/send",
                            headers={"Authorization": f"Bearer {token}"},
                            json={"to": KNOWN_USERS["whatsapp"], "type": "template",
                                  "template": {"name": "hello_world", "language": {"code": "en_US"}}})
        answer.raise_for_status()
        job_id = answer.json()["job_id"]
        asyncio.run(drain(ctx.db_url, ctx.settings.channels()))
        deadline = time.monotonic() + 20
        while True:  # statuses arrive as webhooks; drain them until the message is read (or time is up)
            drain_url(ctx.db_url)
            with connect(ctx.db_url) as conn:
                row = conn.execute(
                    "SELECT j.status AS job, m.status, m.platform_message_id AS wamid FROM outbound_message_job j "
                    "JOIN conversation_message m USING (message_id) WHERE j.job_id = %s", (job_id,)).fetchone()
            if row["status"] in ("read", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    ctx.results["send"] = dict(row, job_id=job_id)
    return (f"WhatsApp template to {KNOWN_USERS['whatsapp']}: job {job_id[:8]}… {row['job']}, "
            f"Meta id {str(row['wamid'])[:24]}…, message now '{row['status']}' from status webhooks")


def step_summary(ctx: DemoContext) -> str:
    """What landed where."""
    tables = ("ad_performance", "campaign", "social_media_post", "social_post_insights",
              "social_account_insights", "meta_conversion_event", "meta_webhook_event", "conversation_thread",
              "conversation_message", "message_delivery_event", "messaging_policy_window",
              "outbound_message_job", "user_event")
    return ", ".join(f"{t} {n}" for t, n in table_counts(ctx.db_url, tables).items())


def table_counts(db_url: str, tables: tuple[str, ...]) -> dict[str, int]:
    """Row counts keyed by table name: the summary lists them, the webhook step takes differences."""
    query = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) FROM {t}) AS {t}").format(t=sql.Identifier(t)) for t in tables))
    with connect(db_url) as conn:
        return conn.execute(query).fetchone()


STEPS: list[tuple[str, Step]] = [
    ("database", step_migrate),
    ("tokens", step_tokens),
    ("organic (Graph API)", step_organic_probe),
    ("sample data", step_seed),
    ("insights assets", step_assets),
    ("webhooks in", step_webhooks),
    ("message out", step_send),
    ("what landed where", step_summary),
]


# ───────────────────────────── runner ─────────────────────────────


def demo_settings(base: Settings, graph_url: str) -> Settings:
    """``base`` with every Meta setting replaced by the sandbox's (the database setting is kept)."""
    values = {k: v for k, v in base.model_dump().items() if k in Settings.model_fields}
    return Settings(**{**values, **SANDBOX_DEFAULTS, "META_GRAPH_URL": graph_url})  # type: ignore[arg-type]


@dataclass
class DemoResult:
    lines: list[tuple[str, str]]
    ok: bool
    seconds: float


def run_demo(
    base: Settings,
    *,
    steps: list[tuple[str, Step]] | None = None,
    seed: int = 42,
    out: Callable[[str], None] = print,
) -> DemoResult:
    started = time.monotonic()
    state = build_state(seed=seed)
    lines: list[tuple[str, str]] = []
    with serve_in_background(state) as sandbox_url:
        settings = demo_settings(base, sandbox_url)
        out(f"EverReach Data demo — Graph API sandbox (a development tool) at {sandbox_url}, seed {seed}")
        ctx = DemoContext(
            settings=settings, db_url=database_urls(settings)[0], sandbox_url=sandbox_url, sandbox=state
        )
        for name, step in steps or STEPS:
            try:
                line = step(ctx)
            except Exception as exc:  # noqa: BLE001 - the demo reports which step failed and why, then stops
                lines.append((name, f"FAILED: {type(exc).__name__}: {exc}"))
                out(f"  ✗ {name:<22} {lines[-1][1]}")
                break
            lines.append((name, line))
            out(f"  ✓ {name:<22} {line}")
    seconds = time.monotonic() - started
    ok = all(not text.startswith("FAILED") for _, text in lines)
    calls = state.counters.get("requests", 0)
    out(f"{'done' if ok else 'stopped'} in {seconds:.1f} s; the sandbox answered {calls} Graph API calls")
    return DemoResult(lines=lines, ok=ok, seconds=seconds)
