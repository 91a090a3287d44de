"""``everreach-data``: migrate, seed, serve, sandbox, dev, demo, replay-webhooks, token, token exchange.

Each command is a thin function over the modules that do the work; the CLI only parses arguments,
turns known failures into one readable line (exit 2) and never prints a secret.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path

from everreach_data.config import PROJECT_ROOT, Settings, environment, load_settings
from everreach_data.db.connection import DatabaseUnavailable, connect, database_urls, redact
from everreach_data.db.embedded import EmbeddedPostgresError, start_embedded
from everreach_data.db.migrate import SQL_DIR, MigrationError, migrate
from everreach_data.receiver.auth import Role

log = logging.getLogger("everreach_data")

SANDBOX_PORT = 8765
RECEIVER_PORT = 8000
DAGSTER_PORT = 3000


class PortInUse(RuntimeError):
    pass


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Fail early, with the remedy, instead of a bind traceback from deep inside a server."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortInUse(f"port {port} on {host} is already in use, so the {what} cannot start there "
                            f"({exc.strerror}). Stop whatever holds it, or pick another port.") from exc


# ───────────────────────────── commands ─────────────────────────────

def cmd_migrate(args: argparse.Namespace) -> None:
    settings = load_settings()
    url = database_urls(settings)[0]
    applied = migrate(url)
    print(f"migrations: applied {', '.join(applied)}" if applied else "migrations: up to date")
    if args.seed:
        cmd_seed(args)


def cmd_seed(args: argparse.Namespace) -> None:
    url = database_urls(load_settings())[0]
    migrate(url)
    with connect(url) as conn:
        conn.execute((SQL_DIR / "seed" / "sample_data.sql").read_text())
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM auth.users) AS users, (SELECT count(*) FROM campaign) AS campaigns, "
            "(SELECT count(*) FROM user_event) AS user_events").fetchone()
    print(f"sample data loaded: {counts['users']} users, {counts['campaigns']} campaigns, "
          f"{counts['user_events']} user events")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from everreach_data.receiver.app import create_app

    settings = load_settings()
    url = database_urls(settings)[0]
    migrate(url)
    ensure_port_free(args.host, args.port, "receiver")
    create_app(settings, url)  # fail here, in one line, on missing secrets — not in every worker
    workers = f", {args.workers} worker processes" if args.workers > 1 else ""
    print(f"receiver listening on http://{args.host}:{args.port}{workers} (webhooks: /api/webhooks/meta)",
          flush=True)
    uvicorn.run("everreach_data.receiver.asgi:create", factory=True, host=args.host, port=args.port,
                log_level=args.log_level, workers=args.workers, access_log=args.access_log)


def cmd_sandbox(args: argparse.Namespace) -> None:
    from everreach_sandbox.server import run_sandbox

    ensure_port_free(args.host, args.port, "Graph API sandbox")
    run_sandbox(args)


def cmd_demo(args: argparse.Namespace) -> None:
    from everreach_data.demo import run_demo

    if not run_demo(load_settings(), seed=args.seed).ok:
        raise SystemExit(1)


def cmd_token(args: argparse.Namespace) -> None:
    from everreach_data.receiver.auth import TokenPolicy

    if not args.sub or not args.role:
        raise SystemExit("error: token needs --sub USER_ID --role ROLE (a JWT for /api/v1) or a subcommand: "
                         "exchange")
    try:
        policy = TokenPolicy.from_settings(load_settings())
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(policy.issue(args.sub, args.role, ttl_seconds=args.ttl))


def _user_token(args: argparse.Namespace) -> str:
    """The short-lived user token: from the named environment variable, a prompt that does not echo, or the
    first line of standard input — never an argument, which shell history and `ps` would keep."""
    import getpass

    if args.user_token_env:
        token = environment().get(args.user_token_env, "")
    elif sys.stdin.isatty():
        token = getpass.getpass("short-lived user token (from Facebook Login; not echoed): ")
    else:
        token = sys.stdin.readline()
    if not token.strip():
        raise SystemExit("error: no user token given (paste it at the prompt, pipe it in, or name its variable "
                         "with --user-token-env)")
    return token.strip()


def cmd_token_exchange(args: argparse.Namespace) -> None:
    """A short-lived user token → a long-lived one (about 60 days) → the Page tokens it derives (which do not
    expire), printed as the ``export`` lines to put in the environment. Nothing is logged."""
    from everreach_data.meta.client import GraphClient
    from everreach_data.meta.errors import GraphAPIError
    from everreach_data.meta.tokens import app_token, debug_tokens, exchange_for_long_lived, page_tokens

    settings = load_settings()
    app_id, secret = settings.META_APP_ID, settings.secret("META_APP_SECRET")
    if not app_id or not secret:
        raise SystemExit("error: META_APP_ID and META_APP_SECRET must be set: the app the user token was issued for")
    short = _user_token(args)
    base = settings.graph_base_url
    try:
        with GraphClient(base, None) as client:
            long_lived = exchange_for_long_lived(client, app_id=app_id, app_secret=secret, short_lived_token=short)
        with GraphClient(base, long_lived.access_token) as client:
            pages = page_tokens(client)
        with GraphClient(base, app_token(app_id, secret)) as client:
            infos = debug_tokens(client, [long_lived.access_token, *(page.access_token for page in pages)])
    except GraphAPIError as exc:
        raise SystemExit(f"error: Meta refused: {exc}") from None

    def lifetime(info) -> str:
        expiry = "never expires" if info.expires_at is None else f"expires {info.expires_at:%Y-%m-%d %H:%M} UTC"
        return f"{expiry}; scopes {', '.join(info.scopes) or 'none'}"

    print(f"# long-lived user token ({lifetime(infos[0])}): not a setting; keep it to derive Page tokens again")
    print(f"# {long_lived.access_token}")
    chosen = next((p for p in pages if p.page_id == settings.MESSENGER_PAGE_ID), pages[0] if pages else None)
    for page, info in zip(pages, infos[1:], strict=True):
        mark = "" if page is chosen else "# "
        print(f"\n# Page {page.name!r} ({page.page_id}): {lifetime(info)}; tasks {', '.join(page.tasks) or 'none'}")
        print(f"{mark}export MESSENGER_PAGE_ID={page.page_id}")
        print(f"{mark}export MESSENGER_PAGE_TOKEN={page.access_token}")
        if page.instagram_user_id:
            print(f"{mark}export INSTAGRAM_PAGE_ID={page.page_id}")
            print(f"{mark}export INSTAGRAM_PAGE_TOKEN={page.access_token}")
            print(f"{mark}export INSTAGRAM_USER_ID={page.instagram_user_id}")
    if not pages:
        print("# this user manages no Page: grant the app access to the Page in Facebook Login, then try again")


def real_meta_configured(settings: Settings) -> bool:
    """True when the environment points at real Meta: then the sandbox is not started."""
    return bool(settings.FB_ADS_ACCESS_TOKEN or settings.MESSENGER_PAGE_TOKEN or settings.WHATSAPP_ACCESS_TOKEN
                or settings.META_CONVERSIONS_API_TOKEN)


def dev_environment(settings: Settings, *, sandbox_port: int) -> tuple[dict[str, str], bool]:
    """The child processes' environment, and whether the sandbox stands in for Meta."""
    from everreach_sandbox.defaults import SANDBOX_DEFAULTS

    env = environment()
    use_sandbox = not real_meta_configured(settings)
    if use_sandbox:
        for key, value in SANDBOX_DEFAULTS.items():
            env.setdefault(key, value)
        env["META_GRAPH_URL"] = f"http://127.0.0.1:{sandbox_port}"
    return env, use_sandbox


def cmd_env(args: argparse.Namespace) -> None:
    """``export`` lines for what ``dev`` adds to its processes' environment, for a second terminal
    (``eval "$(everreach-data env)"``): the sandbox's settings when no real Meta token is set, and the
    database URLs. Only values this command adds are printed — never ones already in the environment."""
    import shlex

    settings = load_settings()
    env, _ = dev_environment(settings, sandbox_port=args.sandbox_port)
    settings = Settings(**{k: v for k, v in env.items() if k in Settings.model_fields})  # type: ignore[arg-type]
    app_url, dagster_url = database_urls(settings)
    env.update(DATABASE_URL=app_url, DAGSTER_PG_URL=dagster_url)
    inherited = environment()
    for key in sorted(env):
        if key not in inherited and (key in Settings.model_fields or key == "DAGSTER_PG_URL"):
            print(f"export {key}={shlex.quote(env[key])}")


def cmd_dev(args: argparse.Namespace) -> None:
    """Everything on one machine: Postgres, sandbox, receiver, webhook traffic, Dagster UI + daemon."""
    settings = load_settings()
    env, use_sandbox = dev_environment(settings, sandbox_port=args.sandbox_port)
    settings = Settings(**{k: v for k, v in env.items() if k in Settings.model_fields})  # type: ignore[arg-type]
    for port, what in [(args.dagster_port, "Dagster UI"), (args.receiver_port, "receiver")] + (
            [(args.sandbox_port, "Graph API sandbox")] if use_sandbox else []):
        ensure_port_free("127.0.0.1", port, what)

    embedded = start_embedded(settings.EVERREACH_HOME) if settings.uses_embedded_postgres else None
    try:  # whatever fails from here, the embedded server stops with us
        app_url, dagster_url = database_urls(settings)
        applied = migrate(app_url)
        print(f"database: {redact(app_url)} ({'embedded' if settings.uses_embedded_postgres else 'DATABASE_URL'}); "
              f"migrations {'applied: ' + ', '.join(applied) if applied else 'up to date'}", flush=True)
        dagster_home = settings.EVERREACH_HOME / "dagster"
        dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        env.update(DATABASE_URL=app_url, DAGSTER_PG_URL=dagster_url, DAGSTER_HOME=str(dagster_home),
                   PYTHONUNBUFFERED="1")

        exe = [sys.executable, "-m", "everreach_data.cli"]
        receiver_url = f"http://127.0.0.1:{args.receiver_port}"
        procs: list[tuple[str, list[str], Path]] = []  # (name, command, working directory)
        if use_sandbox:
            procs.append(("sandbox", exe + ["sandbox", "--port", str(args.sandbox_port),
                                            "--webhook-url", f"{receiver_url}/api/webhooks/meta"], PROJECT_ROOT))
        procs.append(("receiver", exe + ["serve", "--port", str(args.receiver_port)], PROJECT_ROOT))
        # Dagster runs in its home: started in the project root, it finds dagster.yaml there and warns that it
        # is not DAGSTER_HOME's (it is copied there, above).
        procs.append(("dagster", [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
                                  "-h", "127.0.0.1", "-p", str(args.dagster_port)], dagster_home))
        if use_sandbox and args.traffic_rate > 0:
            procs.append(("traffic", exe + ["traffic", "--url", f"{receiver_url}/api/webhooks/meta",
                                            "--rate", str(args.traffic_rate)], PROJECT_ROOT))
        if use_sandbox:
            first_start(f"http://127.0.0.1:{args.dagster_port}", dagster_home, f"{receiver_url}/api/webhooks/meta",
                        app_url, settings.secret("META_APP_SECRET") or "")
        run_supervised(procs, env, banner=[
            f"Dagster UI      http://127.0.0.1:{args.dagster_port}",
            f"receiver        {receiver_url}  (OpenAPI: {receiver_url}/openapi.json)",
            f"Graph API       {env.get('META_GRAPH_URL', settings.META_GRAPH_URL)}"
            + ("  (local sandbox: no Meta account needed)" if use_sandbox else ""),
            "Ctrl-C stops everything.",
        ])
    finally:
        if embedded is not None:
            embedded.stop()
            print(f"embedded Postgres stopped; its data stays in {embedded.pgdata}", flush=True)


def first_start(dagster_url: str, dagster_home: Path, webhook_url: str, database_url: str, app_secret: str) -> None:
    """On a first start, in the background while the processes come up: a week of sample conversations, then
    a backfill of the last days of every daily asset (:mod:`everreach_data.first_start`)."""
    from everreach_data.first_start import DAYS, MARKER, backfill_first_days, seed_history, wait_for_drain

    if (dagster_home / MARKER).exists():
        return

    def launch() -> None:
        try:
            posted = seed_history(webhook_url, app_secret)
            print(f"first start: {posted} sample webhooks from the last {DAYS} days posted", flush=True)
            wait_for_drain(database_url)
            if backfill_first_days(dagster_url, dagster_home):
                print(f"first start: backfilling the last {DAYS} days of every daily asset against the sandbox "
                      f"(Dagster UI → Overview → Backfills)", flush=True)
        except (RuntimeError, OSError) as exc:
            print(f"first start: no backfill launched ({exc})", file=sys.stderr, flush=True)

    threading.Thread(target=launch, name="first-start-backfill", daemon=True).start()


def run_supervised(procs: list[tuple[str, list[str], Path]], env: dict[str, str], *,
                   banner: list[str]) -> None:
    """Start each process, stop them all when one exits or on Ctrl-C."""
    running: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        for name, cmd, cwd in procs:
            running.append((name, subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)))
        print("\n".join(["", *("  " + line for line in banner), ""]), flush=True)
        while not stopping:
            for name, proc in running:
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping the rest", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        for _, proc in running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left in the group goes too: `dagster dev` leaves orphaned code servers behind
            # (they outlive their parent and ignore their heartbeat) that would hold the old code.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cmd_replay_webhooks(args: argparse.Namespace) -> None:
    """Put stored webhook events back in the queue; processing them again changes nothing already right."""
    from everreach_data.inbox.queue import requeue
    from everreach_data.meta.webhooks import OBJECT_PLATFORMS

    url = database_urls(load_settings())[0]
    migrate(url)
    with connect(url, autocommit=True) as conn:
        n = requeue(conn, statuses=args.status or ["done", "failed"], since=args.since, until=args.until,
                    handled_objects=list(OBJECT_PLATFORMS))
    print(f"re-queued {n} webhook events; webhook_events_sensor (or `dagster job execute -j "
          f"process_webhook_events`) will process them")


def cmd_discard_webhooks(args: argparse.Namespace) -> None:
    """Give up on failed webhook events: they count as finished, and inbox retention may drop their month."""
    from everreach_data.inbox.queue import discard

    url = database_urls(load_settings())[0]
    migrate(url)
    with connect(url, autocommit=True) as conn:
        n = discard(conn, since=args.since, until=args.until, ids=args.id)
    print(f"discarded {n} failed webhook events; their payloads stay until retention drops their month")


def cmd_retry_messages(args: argparse.Namespace) -> None:
    """Put failed (optionally unknown-outcome) outbound messages back in the queue."""
    import asyncio

    from everreach_data.outbound.operations import retry_failed

    url = database_urls(load_settings())[0]
    migrate(url)
    n = asyncio.run(retry_failed(url, job_ids=args.job_id, since_hours=args.since_hours, platform=args.platform,
                                 include_unknown=args.include_unknown, resume_channels=args.resume_channels))
    print(f"re-queued {n} outbound messages; outbound_messages_sensor (or `dagster job execute -j "
          f"send_outbound_messages`) will send them")


def cmd_traffic(args: argparse.Namespace) -> None:
    """Signed, realistic Messenger/Instagram/WhatsApp webhook traffic at a chosen rate."""
    import asyncio

    from everreach_sandbox.defaults import SANDBOX_DEFAULTS
    from everreach_sandbox.traffic import post_traffic

    secret = load_settings().secret("META_APP_SECRET") or SANDBOX_DEFAULTS["META_APP_SECRET"]
    result = asyncio.run(post_traffic(args.url, secret, rate=args.rate, count=args.count, seed=args.seed))
    print(f"traffic: posted {result['posted']}, 200 OK {result['ok']}, not OK {result['failed']}")


# ───────────────────────────── parser ─────────────────────────────

def _timestamp(value: str):
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="everreach-data", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply pending SQL migrations")
    p.add_argument("--seed", action="store_true", help="also load the sample data")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("seed", help="load sample users, campaigns and user events")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("serve", help="run the receiver (webhooks, send and conversion endpoints)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=RECEIVER_PORT)
    p.add_argument("--log-level", default="info")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--workers", type=int, default=1, help="receiver processes sharing the port")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("sandbox", help="run the local Graph API simulator (a development tool)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=SANDBOX_PORT)
    p.add_argument("--seed", type=int, default=42, help="seed for the synthetic accounts")
    p.add_argument("--latency-ms", default="0", help="added latency per request, e.g. 30 or 20-50")
    p.add_argument("--error-rate", type=float, default=0.0,
                   help="share of Graph calls answered with a transient 500 (0-1), to exercise retries")
    p.add_argument("--drop-rate", type=float, default=0.0,
                   help="share of Graph calls whose connection is dropped without an answer (0-1)")
    p.add_argument("--webhook-url", default=None, help="where to post signed status webhooks")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("demo", help="one end-to-end pass on the sandbox and embedded defaults, then a summary")
    p.add_argument("--seed", type=int, default=42, help="seed for the sandbox's synthetic accounts")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("dev", help="run everything: Postgres, sandbox, receiver, traffic, Dagster UI")
    p.add_argument("--dagster-port", type=int, default=DAGSTER_PORT)
    p.add_argument("--receiver-port", type=int, default=RECEIVER_PORT)
    p.add_argument("--sandbox-port", type=int, default=SANDBOX_PORT)
    p.add_argument("--traffic-rate", type=float, default=1.0,
                   help="sandbox webhook events per second posted to the receiver (0 = none)")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("env", help="print export lines for the settings dev uses (eval in another shell)")
    p.add_argument("--sandbox-port", type=int, default=SANDBOX_PORT)
    p.set_defaults(func=cmd_env)

    p = sub.add_parser("token", help="print a JWT for calling /api/v1 (--sub, --role; signed with JWT_SECRET), or "
                       "turn a Meta user token into Page tokens (token exchange)")
    p.add_argument("--sub", help="the caller's user id (recorded as the sender)")
    p.add_argument("--role", action="append", choices=[r.value for r in Role],
                   help="operator (send), analyst (insights, conversions) or admin (both); repeatable. "
                        "Put at JWT_ROLE_CLAIM, with JWT_AUDIENCE as aud when set")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until the JWT expires")
    p.set_defaults(func=cmd_token)
    token_sub = p.add_subparsers(dest="token_command", metavar="{exchange}")
    e = token_sub.add_parser("exchange", help="a short-lived Meta user token → a long-lived one and the Page tokens "
                             "it derives, printed as export lines (read from a prompt or stdin, never logged)")
    e.add_argument("--user-token-env", metavar="NAME", help="read the short-lived user token from this variable")
    e.set_defaults(func=cmd_token_exchange)
    p = sub.add_parser("replay-webhooks", help="re-queue stored webhook events for processing")
    p.add_argument("--since", type=_timestamp, help="received at or after (ISO 8601)")
    p.add_argument("--until", type=_timestamp, help="received before (ISO 8601)")
    p.add_argument("--status", action="append", choices=["done", "failed", "ignored", "pending", "discarded"],
                   help="only events in this status (repeatable; default done and failed)")
    p.set_defaults(func=cmd_replay_webhooks)

    p = sub.add_parser("discard-webhooks", help="give up on failed webhook events (retention may then drop them)")
    p.add_argument("--since", type=_timestamp, help="received at or after (ISO 8601)")
    p.add_argument("--until", type=_timestamp, help="received before (ISO 8601)")
    p.add_argument("--id", type=int, action="append", help="only this event (repeatable)")
    p.set_defaults(func=cmd_discard_webhooks)

    p = sub.add_parser("traffic", help="post signed sandbox webhook traffic to a receiver")
    p.add_argument("--url", required=True, help="the receiver's /api/webhooks/meta URL")
    p.add_argument("--rate", type=float, default=1.0, help="bodies per second")
    p.add_argument("--count", type=int, default=None, help="stop after this many (default: run forever)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_traffic)

    p = sub.add_parser("retry-messages", help="re-queue failed outbound messages (the policy window is "
                       "checked again when they are sent)")
    p.add_argument("--job-id", action="append", help="only this job (repeatable)")
    p.add_argument("--since-hours", type=float, default=24.0, help="failed within this many hours")
    p.add_argument("--platform", choices=["messenger", "instagram", "whatsapp"])
    p.add_argument("--include-unknown", action="store_true",
                   help="also re-send jobs whose outcome is unknown (the recipient may get them twice)")
    p.add_argument("--resume-channels", action="store_true",
                   help="re-activate channels paused for re-authorization (after fixing the token)")
    p.set_defaults(func=cmd_retry_messages)
    return parser


KNOWN_FAILURES: tuple[type[BaseException], ...] = (
    DatabaseUnavailable, MigrationError, EmbeddedPostgresError, PortInUse,
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # one line per HTTP call, or per step of Dagster's storage set-up, drowns the rest
        for noisy in ("httpx", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args)
    except KNOWN_FAILURES as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # configuration problems (e.g. a missing secret) raised as ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
