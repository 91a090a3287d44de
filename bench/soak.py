"""A fault soak: the whole system under steady traffic while Postgres restarts, runs are killed and the Graph
API misbehaves — then a count of what was acknowledged, stored, processed, sent, and how long each fault took
to recover from. Prints one JSON line.

What runs, all on loopback in a temporary directory, as it is deployed:

- the embedded Postgres (``everreach_data.db.embedded``), the app's database and Dagster's;
- the Graph API sandbox (``everreach-data sandbox``, 5–15 ms latency), posting its echo and status webhooks
  to the receiver;
- the receiver: ``everreach-data serve --workers 2`` (two processes on one port, restarted by uvicorn when
  one dies);
- Dagster: a code server (``dagster api grpc``), the daemon (``dagster-daemon run``: sensors, the run queue,
  backfills, run monitoring) and, with backfills, the webserver, sharing ``$DAGSTER_HOME/dagster.yaml`` (this
  repository's). The webhook drain and the sender are the runs their sensors launch; the ``ad_performance``
  backfills are launched through the webserver's GraphQL API, as the UI launches them.

The load: signed webhook bodies from the sandbox's traffic generator at a fixed rate (Meta's byte-identical
redeliveries and out-of-order receipts included), each posted as Meta posts it: a 503 or a connection error
is retried with the same bytes, after 0.25 s doubling to 4 s, until it is acknowledged. Send requests at a
fixed rate (Messenger text and WhatsApp text, to people who wrote in, so inside their windows; one in ten to
a person Meta does not know, or naming a template that does not exist, which Meta refuses), each retried the
same way with its Idempotency-Key.

The faults (:data:`SCHEDULES`, seconds from the start of traffic): Postgres restarted (fast and immediate
shutdown), a drain run and a send run SIGKILLed (a started run whose presence lock is held, its processes by
the pids in the run's event log), one receiver process SIGKILLed (uvicorn starts
another), and the sandbox answering every Graph call with a 5xx, a hang (the call carried out, its answer never
sent: a send happens and the sender cannot know), a dropped connection (before the call is carried out), or a
throttle (code 4 on every call, 17 and 80004 on the Marketing API, 130429 on WhatsApp sends) for a minute each.
An infrastructure fault falls in the middle of a Graph minute, so several hit at once.

The line: webhooks posted (POSTs of a body for the first time, redeliveries included), unique bodies,
acknowledged (200), refused (503 answers, each retried), connection errors (retried), stored and processed;
``lost``: acknowledged but not stored (must be 0); ``messages.duplicated`` (must be 0): messages stored as
more than one row — rows sharing Meta's id, or a message the sandbox sent held by both its job's row and an
echo's; ``messages.missing``: Meta ids in acknowledged bodies with no message row. Sends: requested (202),
jobs by final status, failed by Meta's code, ``went_unknown`` (no answer, or a lease that expired while
sending: the send runs' own reports), ``reconciled`` from Meta's webhooks, left unknown at the end (and of
those, how many Meta never got), and ``sent_twice`` (must be 0): jobs the sandbox's record of sends
(``GET /_sandbox/messaging/sent``) holds more than once; the sandbox's webhook deliveries (posted, refused
and retried, abandoned). Backfills: rows and spend per level against the sandbox's truth (its generator, in
this process, same seed), and each backfill's status.
The drain and send runs by final status. Per fault: ``intake_back_s`` and ``drain_back_s``, seconds from its
start until the intake backlog (bodies posted and not yet acknowledged) and the drain backlog (stored events
still pending) were back under their steady level — twice their 95th percentile before the first fault, and at
least one second (intake) or two seconds (drain) of traffic — or 0 when the fault did not keep them over it
for a second before the next fault began (``window_s``).

    .venv/bin/python bench/soak.py [--seconds 600] [--schedule full|short] [--webhook-rate 20] [--send-rate 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from everreach_data.db.connection import sqlalchemy_url  # noqa: E402
from everreach_data.db.embedded import DAGSTER_DATABASE, EmbeddedPostgres, start_embedded  # noqa: E402
from everreach_data.db.migrate import migrate  # noqa: E402
from everreach_data.db.run_liveness import live_runs  # noqa: E402
from everreach_data.first_start import LAUNCH, wait_until_serving  # noqa: E402
from everreach_data.inbox.drain import DRAIN_APPLICATION  # noqa: E402
from everreach_data.meta.webhooks import Message, parse_webhook  # noqa: E402
from everreach_data.outbound.sender import SEND_APPLICATION  # noqa: E402
from everreach_data.receiver.auth import Role, issue_token  # noqa: E402
from everreach_data.serving import free_port, wait_for_port  # noqa: E402
from everreach_sandbox import marketing  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402
from everreach_sandbox.server import build_app, build_state  # noqa: E402
from everreach_sandbox.traffic import TrafficGenerator, sign  # noqa: E402

D = SANDBOX_DEFAULTS
APP_SECRET = D["META_APP_SECRET"]
PHONE = D["WHATSAPP_PHONE_NUMBER_ID"]
SAMPLE_SECONDS = 0.5
LATENCY_MS = (5, 15)  # the sandbox's latency per Graph call
RECIPIENTS = 20  # per platform


def operator_token() -> str:
    """The Bearer JWT the send requests carry (one place, so a change to the tokens' claims lands here)."""
    return issue_token(D["JWT_SECRET"], "soak-operator", roles=[Role.OPERATOR], ttl_seconds=6 * 3600)


# ───────────────────────────── the schedule ─────────────────────────────

@dataclass(frozen=True)
class Fault:
    at: float           # seconds from the start of traffic
    name: str
    seconds: float = 0  # how long a Graph fault lasts (the others are one action)


#: Graph faults: what ``POST /_sandbox/faults`` queues for their minute (``times`` outlasts it).
GRAPH_FAULTS: dict[str, list[dict]] = {
    "graph_5xx": [{"kind": "status", "status": 500}],
    # Meta carries the call out and its answer never comes (a send happens; the sender cannot tell).
    "graph_timeouts": [{"kind": "timeout", "delay_seconds": 120, "after": True}],
    "graph_dropped_connections": [{"kind": "drop"}],
    "graph_throttle_4": [{"kind": "graph", "status": 400, "code": 4, "subcode": 1504022,
                          "message": "(#4) Application request limit reached"}],
    "graph_throttle_17": [{"kind": "graph", "path_contains": "/act_", "status": 400, "code": 17,
                           "subcode": 2446079, "message": "(#17) User request limit reached"}],
    "graph_throttle_80004": [{"kind": "graph", "path_contains": "/act_", "status": 400, "code": 80004,
                              "subcode": 2446079, "message": "(#80004) There have been too many calls to this "
                              "ad-account. Wait a bit and try again."}],
    "graph_throttle_130429": [{"kind": "graph", "path_contains": f"/{PHONE}/messages", "status": 400,
                               "code": 130429, "message": "(#130429) Rate limit hit"}],
}

SCHEDULES: dict[str, dict] = {
    # Ten minutes: the infrastructure faults a minute apart, each inside a minute of Graph trouble, and a
    # backfill launched into four of those minutes; the last one and a half minutes steady.
    "full": {"faults": [
        Fault(60, "postgres_restart_fast"),
        Fault(90, "graph_5xx", 60),
        Fault(120, "drain_run_killed"),
        Fault(150, "graph_timeouts", 60),
        Fault(180, "postgres_restart_immediate"),
        Fault(210, "graph_dropped_connections", 60),
        Fault(240, "send_run_killed"),
        Fault(270, "graph_throttle_4", 60),
        Fault(300, "receiver_process_killed"),
        Fault(330, "graph_throttle_17", 60),
        Fault(390, "graph_throttle_80004", 60),
        Fault(450, "graph_throttle_130429", 60),
    ], "backfills": [92, 212, 272, 332]},
    # About a minute, for the test suite: each kind of process fault once, and a burst of 5xx.
    "short": {"faults": [
        Fault(10, "postgres_restart_immediate"),
        Fault(18, "graph_5xx", 8),
        Fault(20, "drain_run_killed"),
        Fault(28, "send_run_killed"),
        Fault(36, "receiver_process_killed"),
        Fault(44, "postgres_restart_fast"),
    ], "backfills": []},
}
BACKFILL_DAYS = 30
BACKFILL_FIRST_DAY = date(2025, 3, 1)


# ───────────────────────────── processes ─────────────────────────────

def wait_until(what: str, check, timeout: float, every: float = 0.25):
    """``check()``'s first truthy value, polled until ``timeout``; a clear error naming ``what`` else."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, psycopg.Error, httpx.HTTPError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"soak: {what} did not happen within {timeout:.0f} s")
        time.sleep(every)


@dataclass
class Stack:
    """The processes, started in order and stopped in reverse (whole process groups: ours only)."""

    home: Path
    keep_logs: bool = False
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    pg: EmbeddedPostgres | None = None

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in reversed(list(self.procs.values())):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # run workers and code servers left in the group
                os.killpg(proc.pid, signal.SIGKILL)
        if self.pg is not None:
            self.pg.stop()


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ───────────────────────────── load ─────────────────────────────

@dataclass
class Body:
    raw: bytes
    sha: bytes
    acked: bool = False


@dataclass
class Intake:
    """The webhook side: every body posted, and what the receiver answered."""

    bodies: dict[bytes, Body] = field(default_factory=dict)
    posted: int = 0            # first POSTs of a body (the generator's redeliveries count again)
    redeliveries: int = 0      # byte-identical bodies posted again by the generator, as Meta does
    refused: int = 0           # 503 answers (retried)
    connection_errors: int = 0
    rejected: Counter = field(default_factory=Counter)  # any other answer (none expected)
    in_flight: int = 0         # bodies posted and not yet acknowledged: the intake backlog


@dataclass
class Sends:
    requested: int = 0          # 202 answers (one per logical request, retries included)
    replayed: int = 0           # 202 answers that were an Idempotency-Key replay of a request already queued
    retried: int = 0            # 503 answers or connection errors, retried with the same key
    refused: Counter = field(default_factory=Counter)  # 4xx (none expected)
    job_ids: set[str] = field(default_factory=set)
    in_flight: int = 0


def backoff(attempt: int) -> float:
    return min(4.0, 0.25 * 2 ** attempt)


def inbound(platform: str, user: str, n: int) -> dict:
    """A person's message, as Meta delivers it: opens their policy window."""
    now_ms = int(time.time() * 1000)
    if platform == "whatsapp":
        return {"object": "whatsapp_business_account", "entry": [{"id": D["WABA_ID"], "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001234", "phone_number_id": PHONE},
                "contacts": [{"profile": {"name": f"Soak {n}"}, "wa_id": user}],
                "messages": [{"from": user, "id": f"wamid.soak{user}{n}", "timestamp": str(now_ms // 1000),
                              "type": "text", "text": {"body": "hello"}}]}}]}]}
    page = D["MESSENGER_PAGE_ID"]
    return {"object": "page", "entry": [{"id": page, "time": now_ms, "messaging": [{
        "sender": {"id": user}, "recipient": {"id": page}, "timestamp": now_ms,
        "message": {"mid": f"m_soak{user}{n}", "text": "hello"}}]}]}


class Load:
    """Webhooks and send requests at fixed rates, in an asyncio loop on a thread of its own."""

    def __init__(self, receiver: str, *, webhook_rate: float, send_rate: float, seed: int) -> None:
        self.receiver, self.webhook_rate, self.send_rate = receiver, webhook_rate, send_rate
        self.intake, self.sends = Intake(), Sends()
        self.generator = TrafficGenerator(seed=seed).bodies()
        self.stop = threading.Event()
        self.started_at = 0.0
        self.messenger = [str(6100000000000000 + i) for i in range(RECIPIENTS)]
        self.whatsapp = [str(35191000000 + i) for i in range(RECIPIENTS)]
        self.strangers = [str(6200000000000000 + i) for i in range(3)]  # wrote in; Meta does not know them
        self.token = operator_token()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future | None = None
        self.retry_until = float("inf")

    # ── the loop ──
    def run_in_background(self) -> None:
        self._thread = threading.Thread(target=self._loop.run_forever, name="load", daemon=True)
        self._thread.start()

    def call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start_traffic(self) -> None:
        self.started_at = time.monotonic()
        self._done = asyncio.run_coroutine_threadsafe(self._traffic(), self._loop)

    def stop_traffic(self) -> None:
        self.stop.set()

    def settle(self, timeout: float) -> None:
        """Wait until every body is acknowledged and every send request answered (or ``timeout``), then
        stop retrying."""
        with contextlib.suppress(RuntimeError):
            wait_until("the last webhooks' and sends' acknowledgement",
                       lambda: self.intake.in_flight == 0 and self.sends.in_flight == 0, timeout)
        self.retry_until = 0.0
        self._done.result(timeout=30)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(timeout=10)

    async def _traffic(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=self.receiver, timeout=10, limits=limits) as client:
            tasks: set[asyncio.Task] = set()
            await asyncio.gather(self._pace(self.webhook_rate, lambda i: self._post_body(client, next(self.generator)),
                                            tasks),
                                 self._pace(self.send_rate, lambda i: self._send(client, i), tasks))
            while tasks and time.monotonic() < self.retry_until:
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()

    async def _pace(self, rate: float, make, tasks: set) -> None:
        if rate <= 0:
            return
        i = 0
        start = time.monotonic()
        while not self.stop.is_set():
            task = asyncio.ensure_future(make(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))

    # ── webhooks ──
    async def post_once(self, client: httpx.AsyncClient, payload: dict) -> None:
        """One body, posted until acknowledged (the preflight's)."""
        await self._post_body(client, json.dumps(payload, separators=(",", ":")).encode())

    async def _post_body(self, client: httpx.AsyncClient, raw: bytes) -> None:
        intake = self.intake
        sha = hashlib.sha256(raw).digest()
        body = intake.bodies.get(sha)
        if body is None:
            body = intake.bodies[sha] = Body(raw, sha)
        else:
            intake.redeliveries += 1
        intake.posted += 1
        intake.in_flight += 1

        def retried(kind: str) -> None:
            if kind == "503":
                intake.refused += 1
            else:
                intake.connection_errors += 1

        try:
            response = await self._until_answered(
                lambda: client.post("/api/webhooks/meta", content=raw, headers=sign(APP_SECRET, raw)), retried)
            if response is None:
                return
            if response.status_code == 200:
                body.acked = True
            else:
                intake.rejected[response.status_code] += 1
        finally:
            intake.in_flight -= 1

    async def _until_answered(self, post, retried) -> httpx.Response | None:
        """``post()`` again (the same bytes, the same Idempotency-Key) after a 503 or a connection error, as Meta
        and a careful client do, until it is answered otherwise; None once the soak stops retrying."""
        attempt = 0
        while time.monotonic() < self.retry_until:
            try:
                response = await post()
            except httpx.TransportError:
                retried("connection_error")
            else:
                if response.status_code != 503:
                    return response
                retried("503")
            await asyncio.sleep(backoff(attempt))
            attempt += 1
        return None

    # ── sends ──
    def _request(self, i: int) -> tuple[str, dict]:
        n = i // 2
        if i % 2 == 0:
            to = self.strangers[n % 3] if n % 10 == 9 else self.messenger[n % RECIPIENTS]
            return "/api/v1/integrations/messenger/send", {"platform": "messenger", "recipient_id": to,
                                                             "message_type": "text", "text": f"Soak message {i}"}
        to = self.whatsapp[n % RECIPIENTS]
        if n % 10 == 9:
            return "/api/v1/integrations/whatsapp/send", {"to": to, "type": "template", "template": {
                "name": "no_such_template", "language": {"code": "en_US"}}}
        return "/api/v1/integrations/whatsapp/send", {"to": to, "type": "text", "message": f"Soak message {i}"}

    async def _send(self, client: httpx.AsyncClient, i: int) -> None:
        path, body = self._request(i)
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": str(uuid.uuid4())}
        sends = self.sends
        sends.in_flight += 1

        def retried(kind: str) -> None:
            sends.retried += 1

        try:
            response = await self._until_answered(lambda: client.post(path, json=body, headers=headers), retried)
            if response is None:
                return
            if response.status_code == 202:
                sends.requested += 1
                sends.replayed += response.headers.get("idempotent-replayed") == "true"
                sends.job_ids.add(response.json()["job_id"])
            else:
                sends.refused[f"{response.status_code}: {response.text[:200]}"] += 1
        finally:
            sends.in_flight -= 1


# ───────────────────────────── watching ─────────────────────────────

PENDING = "SELECT count(*) FROM meta_webhook_event WHERE status = 'pending'"


class Monitor:
    """Every half second: the intake backlog (the load's) and the drain backlog (Postgres'; ``None`` while
    Postgres is unreachable)."""

    def __init__(self, url: str, load: Load) -> None:
        self.url, self.load = url, load
        self.samples: list[tuple[float, int, int | None]] = []  # (t, intake backlog, drain backlog)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            t = time.monotonic() - self.load.started_at
            pending = None
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
                pending = conn.execute(PENDING).fetchone()[0]
            except psycopg.Error:
                conn = None
            self.samples.append((t, self.load.intake.in_flight, pending))
            self._stop.wait(SAMPLE_SECONDS)


def steady_levels(samples, first_fault: float, rate: float) -> tuple[float, float]:
    """The backlogs' steady levels: twice their 95th percentile before the first fault, and at least one
    second (intake) or two seconds (drain) of traffic."""
    before = [s for s in samples if 5 <= s[0] < first_fault]

    def p95(values: list[int]) -> float:
        values = sorted(values)
        return float(values[int(len(values) * 0.95)]) if values else 0.0

    return (max(2 * p95([s[1] for s in before]), rate),
            max(2 * p95([s[2] for s in before if s[2] is not None]), 2 * rate))


def recovery(samples, fault: Fault, until: float, level: float, column: int) -> float | None:
    """Seconds from ``fault``'s start until ``column``'s backlog was back under ``level``; 0 if it did not stay
    over it for a second (two samples) before ``until`` (the next fault's start: what happens after that is the
    next fault's); None if it never came back."""
    def high(sample) -> bool:
        return sample[column] is None or sample[column] > level

    over = next((a for a, b in zip(samples, samples[1:], strict=False)
                 if fault.at <= a[0] < until and high(a) and high(b)), None)
    if over is None:
        return 0.0
    back = next((s for s in samples if s[0] > over[0] and s[column] is not None and s[column] <= level), None)
    return round(back[0] - fault.at, 1) if back else None


# ───────────────────────────── the soak ─────────────────────────────

class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.schedule = SCHEDULES[args.schedule]
        self.home = Path(tempfile.mkdtemp(prefix="everreach-soak-"))
        os.chmod(self.home, 0o755)  # the embedded server runs as another user when we are root
        (self.home / "logs").mkdir()
        self.stack = Stack(self.home)
        self.fault_log: list[dict] = []
        self.backfills: list[tuple[str, date, date]] = []
        self.launch_failures: list[dict] = []
        self.graph_lock = threading.Lock()
        self.graph_fault: str | None = None
        self.dagster_url: str | None = None

    # ── start-up ──
    def start(self) -> None:
        stack = self.stack
        pg = stack.pg = start_embedded(self.home)
        self.app_url = pg.url()
        migrate(self.app_url)
        ports = {name: free_port() for name in ("sandbox", "receiver", "grpc", "webserver")}
        self.sandbox = f"http://127.0.0.1:{ports['sandbox']}"
        self.receiver = f"http://127.0.0.1:{ports['receiver']}"
        dagster_home = self.home / "dagster"
        dagster_home.mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        workspace = self.home / "workspace.yaml"
        workspace.write_text(f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {ports['grpc']}\n"
                             f"      location_name: everreach_data\n")
        self.env = env = {
            **os.environ, **D, "META_GRAPH_URL": self.sandbox, "DATABASE_URL": self.app_url,
            "DAGSTER_PG_URL": sqlalchemy_url(pg.url(DAGSTER_DATABASE)), "DAGSTER_HOME": str(dagster_home),
            "EVERREACH_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        # A DagsterInstance in this process (to find a run's processes) reads its storage as theirs do.
        os.environ.update({k: env[k] for k in ("DAGSTER_PG_URL", "DATABASE_URL", "DAGSTER_HOME", "EVERREACH_HOME")})
        bin_dir = Path(sys.executable).parent
        cli = [sys.executable, "-m", "everreach_data.cli"]
        stack.start("sandbox", cli + ["sandbox", "--port", str(ports["sandbox"]),
                                      "--latency-ms", "-".join(map(str, LATENCY_MS)),
                                      "--webhook-url", f"{self.receiver}/api/webhooks/meta"], env, ROOT)
        stack.start("receiver", cli + ["serve", "--port", str(ports["receiver"]), "--workers", "2",
                                       "--log-level", "warning", "--no-access-log"], env, ROOT)
        stack.start("code-server", [str(bin_dir / "dagster"), "api", "grpc", "-m", "everreach_data.definitions",
                                    "-h", "127.0.0.1", "-p", str(ports["grpc"]), "-d", str(ROOT)], env, ROOT)
        wait_for_port(ports["grpc"], timeout=120)  # the daemon and the webserver load the location from it
        ws = ["-w", str(workspace)]
        stack.start("daemon", [str(bin_dir / "dagster-daemon"), "run", *ws], env, dagster_home)
        if self.schedule["backfills"]:
            stack.start("webserver", [str(bin_dir / "dagster-webserver"), *ws, "-h", "127.0.0.1", "-p",
                                      str(ports["webserver"])], env, dagster_home)
            self.dagster_url = f"http://127.0.0.1:{ports['webserver']}"
        wait_until("the sandbox", lambda: httpx.get(f"{self.sandbox}/_sandbox/stats").is_success, 60)
        wait_until("the receiver", lambda: httpx.get(f"{self.receiver}/healthz").is_success, 60)

    def open_windows(self, load: Load) -> None:
        """The recipients wrote in (so the sends are inside their windows) — which also shows the daemon's
        sensor launching drain runs before the clock starts."""
        users = [{"platform": "messenger", "id": u, "last_inbound_ago": 60} for u in load.messenger]
        users += [{"platform": "whatsapp", "id": u, "last_inbound_ago": 60} for u in load.whatsapp]
        httpx.post(f"{self.sandbox}/_sandbox/messaging/users", json={"users": users}).raise_for_status()

        async def post_all() -> None:
            async with httpx.AsyncClient(base_url=self.receiver, timeout=10) as client:
                people = [("messenger", u) for u in load.messenger + load.strangers]
                people += [("whatsapp", u) for u in load.whatsapp]
                await asyncio.gather(*(load.post_once(client, inbound(p, u, 0)) for p, u in people))

        load.call(post_all(), timeout=120)
        expected = 2 * RECIPIENTS + len(load.strangers)
        with psycopg.connect(self.app_url, autocommit=True) as conn:
            wait_until("the first drain run (the sensor's)", lambda: conn.execute(
                "SELECT count(*) FROM messaging_policy_window WHERE window_type = 'standard'").fetchone()[0]
                >= expected, 180)

    # ── faults ──
    def inject(self, fault: Fault, load: Load) -> dict:
        started = time.monotonic() - load.started_at
        entry: dict = {"fault": fault.name, "at_s": round(started, 1)}
        if fault.name.startswith("postgres_restart"):
            t = time.monotonic()
            self.stack.pg.restart(mode=fault.name.rsplit("_", 1)[1])
            entry["postgres_down_s"] = round(time.monotonic() - t, 2)
        elif fault.name in ("drain_run_killed", "send_run_killed"):
            entry.update(self.kill_run("process_webhook_events", DRAIN_APPLICATION) if fault.name == "drain_run_killed"
                         else self.kill_run("send_outbound_messages", SEND_APPLICATION))
        elif fault.name == "receiver_process_killed":
            workers = [p for p in children(self.stack.procs["receiver"].pid) if "spawn_main" in cmdline(p)
                       and "resource_tracker" not in cmdline(p)]
            os.kill(workers[0], signal.SIGKILL)
            entry["killed_pid"] = workers[0]
        else:
            # One Graph fault at a time: the next one replaces it (its minute starts as this one's ends).
            with self.graph_lock:
                self.graph_fault = fault.name
                self._sandbox_faults([{**spec, "times": 10**9} for spec in GRAPH_FAULTS[fault.name]])
            time.sleep(fault.seconds)  # the fault's minute: the traffic and the runs carry on meanwhile
            with self.graph_lock:
                if self.graph_fault == fault.name:
                    self._sandbox_faults([])
                    self.graph_fault = None
        return entry

    def _sandbox_faults(self, faults: list[dict]) -> None:
        """Replace the sandbox's injected faults (its latency stays as the soak set it)."""
        httpx.post(f"{self.sandbox}/_sandbox/faults", json={"clear": True, "latency_ms": list(LATENCY_MS),
                                                            "faults": faults}).raise_for_status()

    def _inject(self, fault: Fault, load: Load) -> None:
        try:
            self.fault_log.append(self.inject(fault, load))
        except Exception as exc:  # noqa: BLE001 - a fault that could not be injected is reported, not fatal
            self.fault_log.append({"fault": fault.name, "at_s": round(fault.at, 1),
                                   "not_injected": f"{type(exc).__name__}: {exc}"})

    def kill_run(self, job: str, application: str) -> dict:
        """SIGKILL every process of one live run of ``job``: a started run whose presence lock is held in
        Postgres (:mod:`everreach_data.db.run_liveness`), its processes by the pids in the run's event log."""
        import dagster as dg

        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance, \
                psycopg.connect(self.app_url, autocommit=True) as conn:
            def live() -> list[str]:
                started = instance.get_run_records(dg.RunsFilter(job_name=job,
                                                                 statuses=[dg.DagsterRunStatus.STARTED]))
                present = live_runs(conn, application)
                return [r.dagster_run.run_id for r in started if r.dagster_run.run_id in present]

            run_id = wait_until(f"a live {job} run", live, 120)[0]
            pids = {e.dagster_event.pid for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.pid}
        ours = [p for p in pids if self._is_ours(p)]
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return {"run_id": run_id, "killed_pids": sorted(ours)}

    def _is_ours(self, pid: int) -> bool:
        """A process of this soak's Dagster (pids get reused; never signal anyone else's)."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"DAGSTER_HOME={self.env['DAGSTER_HOME']}".encode() in environ

    def launch_backfill(self, index: int) -> str | None:
        since = BACKFILL_FIRST_DAY + timedelta(days=index * BACKFILL_DAYS)
        until = since + timedelta(days=BACKFILL_DAYS - 1)
        days = [(since + timedelta(days=i)).isoformat() for i in range(BACKFILL_DAYS)]
        params = {"assetSelection": [{"path": ["ad_performance"]}], "partitionNames": days,
                  "title": f"Soak backfill {index + 1}"}
        answers: list[str] = []

        def launched() -> str | None:  # an operator clicks again when the UI says it failed
            response = client.post("/graphql", json={"query": LAUNCH, "variables": {"params": params}})
            result = (response.json().get("data") or {}).get("launchPartitionBackfill") if response.is_success else None
            if result and result["__typename"] == "LaunchBackfillSuccess":
                return result["backfillId"]
            answers.append(f"{response.status_code}: {response.text[:300]}")
            return None

        with httpx.Client(base_url=self.dagster_url, timeout=30) as client:
            wait_until_serving(client, 120)
            try:
                backfill_id = wait_until(f"backfill {index + 1}'s launch", launched, 60, every=2.0)
            except RuntimeError:
                self.launch_failures.append({"backfill": index + 1, "answers": answers})
                return None
        self.backfills.append((backfill_id, since, until))
        self.launch_failures += [{"backfill": index + 1, "refused_first": a} for a in answers]
        return backfill_id

    # ── the run ──
    def run(self) -> dict:
        args = self.args
        load = Load(self.receiver, webhook_rate=args.webhook_rate, send_rate=args.send_rate, seed=args.seed)
        load.run_in_background()
        try:
            self.open_windows(load)
            monitor = Monitor(self.app_url, load)
            load.start_traffic()
            monitor.start()
            events = sorted([(f.at, "fault", f) for f in self.schedule["faults"]]
                            + [(at, "backfill", i) for i, at in enumerate(self.schedule["backfills"])],
                            key=lambda e: e[0])
            threads = []
            for at, kind, what in events:
                if at >= args.seconds:
                    continue
                time.sleep(max(0.0, load.started_at + at - time.monotonic()))
                if kind == "backfill":
                    self.launch_backfill(what)
                    continue
                thread = threading.Thread(target=self._inject, args=(what, load), name=what.name)
                thread.start()
                threads.append(thread)
            time.sleep(max(0.0, load.started_at + args.seconds - time.monotonic()))
            load.stop_traffic()
            for thread in threads:
                thread.join()
            traffic_seconds = time.monotonic() - load.started_at
            load.settle(args.settle_seconds)
            settled = self.settle(args.settle_seconds)
            monitor.stop()
            if args.keep:
                (self.home / "samples.json").write_text(json.dumps(monitor.samples))
            return self.report(load, monitor, traffic_seconds, settled)
        finally:
            load.close()

    def settle(self, timeout: float) -> dict:
        """Wait (up to ``timeout``) for the inbox to be drained, the send queue to have nothing due, and the
        backfills to end; says which did."""
        out = {}
        with psycopg.connect(self.app_url, autocommit=True) as conn:
            checks = {
                "inbox_drained": lambda: conn.execute(PENDING).fetchone()[0] == 0,
                "sends_settled": lambda: conn.execute(
                    "SELECT NOT EXISTS (SELECT 1 FROM outbound_message_job WHERE status = 'sending' OR "
                    "(status = 'queued' AND next_attempt_at <= now() AND "
                    "(locked_until IS NULL OR locked_until < now())))").fetchone()[0],
            }
            deadline = time.monotonic() + timeout
            for name, check in checks.items():
                try:
                    wait_until(name, check, max(1.0, deadline - time.monotonic()), every=1.0)
                    out[name] = True
                except RuntimeError:
                    out[name] = False
        if self.backfills:
            out["backfills"] = self._backfill_statuses(max(1.0, deadline - time.monotonic()))
        return out

    def _backfill_statuses(self, timeout: float) -> bool:
        import dagster as dg

        ids = {b[0] for b in self.backfills}
        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            def statuses() -> dict[str, str]:
                return {b.backfill_id: b.status.value for b in instance.get_backfills() if b.backfill_id in ids}

            with contextlib.suppress(RuntimeError):
                wait_until("the backfills", lambda: all(s not in ("REQUESTED", "CANCELING", "FAILING")
                                                        for s in statuses().values()), timeout, every=2.0)
            return statuses()

    # ── the figures ──
    def report(self, load: Load, monitor: Monitor, traffic_seconds: float, settled: dict) -> dict:
        intake, sends = load.intake, load.sends
        acked = {b.sha for b in intake.bodies.values() if b.acked}
        with psycopg.connect(self.app_url, autocommit=True) as conn:
            stored = {bytes(r[0]): r[1] for r in conn.execute(
                "SELECT body_sha256, status FROM meta_webhook_event WHERE body_sha256 = ANY(%s)",
                ([b.sha for b in intake.bodies.values()],))}
            mids = {(r.platform, r.mid) for b in intake.bodies.values() if b.sha in acked
                    for r in parse_webhook(json.loads(b.raw)).records if isinstance(r, Message) and r.mid}
            rows = Counter((p, m) for p, m in conn.execute(
                "SELECT platform, platform_message_id FROM conversation_message WHERE platform_message_id IS NOT NULL"))
            jobs = {r[0]: r[1:] for r in conn.execute(
                "SELECT j.job_id::text, j.status, j.error_code, j.platform_message_id, m.platform_message_id "
                "FROM outbound_message_job j JOIN conversation_message m ON m.message_id = j.message_id")}
            backfill = self.backfill_truth(conn)
        record = httpx.get(f"{self.sandbox}/_sandbox/messaging/sent", timeout=30).json()
        sandbox_sent = record["data"]
        by_job = Counter(_job_reference(s) for s in sandbox_sent)
        sent_mids = {s["message_id"]: _job_reference(s) for s in sandbox_sent}
        # A message the sandbox sent is one row: its job's, with Meta's id. An echo row beside a job row
        # still without the id is the same message twice.
        echo_beside_job = sum(1 for mid, job in sent_mids.items()
                              if job in jobs and rows[(_platform_of(mid), mid)] and jobs[job][3] != mid)
        statuses = Counter(j[0] for j in jobs.values())
        runs = self.dagster_runs()
        ours = sends.job_ids
        levels = steady_levels(monitor.samples, min(f.at for f in self.schedule["faults"]),
                               load.webhook_rate)
        faults = []
        starts = sorted(f.at for f in self.schedule["faults"] if f.at < traffic_seconds) + [traffic_seconds]
        for entry, fault in self._faults_with_entries():
            until = next(t for t in starts if t > fault.at)
            faults.append({**entry, "lasted_s": fault.seconds or entry.get("postgres_down_s", 0),
                           "window_s": round(until - fault.at, 1),
                           "intake_back_s": recovery(monitor.samples, fault, until, levels[0], 1),
                           "drain_back_s": recovery(monitor.samples, fault, until, levels[1], 2)})
        return {
            "bench": "soak", "schedule": self.args.schedule, "cpus": os.cpu_count(),
            "load_avg_1m_before": self.load_before, "load_avg_1m_after": round(os.getloadavg()[0], 2),
            "traffic_seconds": round(traffic_seconds, 1), "webhook_rate": load.webhook_rate,
            "send_rate": load.send_rate,
            "webhooks": {
                "posted": intake.posted, "unique_bodies": len(intake.bodies), "redeliveries": intake.redeliveries,
                "acknowledged": len(acked), "refused_503": intake.refused,
                "connection_errors": intake.connection_errors, "rejected": dict(intake.rejected),
                "never_acknowledged": len(intake.bodies) - len(acked),
                "stored": sum(1 for sha in acked if sha in stored),
                "processed": sum(1 for sha in acked if stored.get(sha) == "done"),
                "failed": sum(1 for sha in acked if stored.get(sha) == "failed"),
                "lost": sum(1 for sha in acked if sha not in stored),
            },
            "messages": {
                "meta_ids_in_acknowledged_bodies": len(mids),
                "missing": sum(1 for key in mids if not rows[key]),
                "duplicated": sum(n - 1 for n in rows.values() if n > 1) + echo_beside_job,
            },
            "sends": {
                "requested": sends.requested, "idempotent_replays": sends.replayed, "retried": sends.retried,
                "refused": dict(sends.refused),
                "by_status": dict(statuses),
                "sent": sum(1 for j in ours if jobs.get(j, ("",))[0] == "sent"),
                "failed_by_meta_code": dict(Counter(str(jobs[j][1]) for j in ours
                                                    if j in jobs and jobs[j][0] == "failed")),
                "unknown_at_end": sum(1 for j in ours if jobs.get(j, ("",))[0] == "unknown"),
                # Meta never got these (a connection dropped before the call was carried out): no webhook
                # will settle them, so after the grace an operator is asked; re-sending them is safe.
                "unknown_never_reached_meta": sum(1 for j in ours if jobs.get(j, ("",))[0] == "unknown"
                                                  and j not in by_job),
                **{k: v for k, v in runs.items() if k != "runs"},
                "sandbox_accepted": len(sandbox_sent),
                "sent_twice": sum(1 for n in by_job.values() if n > 1),
                "sent_without_a_job": sum(1 for j in by_job if j not in jobs),
                "sandbox_webhooks": {k: record[k] for k in ("webhooks_posted", "webhook_failures",
                                                            "webhooks_abandoned")},
            },
            "backfills": backfill, "backfill_launch_problems": self.launch_failures,
            "dagster_runs": runs["runs"],
            "steady_backlog": {"intake": levels[0], "drain": levels[1]},
            "faults": faults,
            "settled": settled,
        }

    def dagster_runs(self) -> dict:
        """The drain and send runs by final status, and what the send runs reported (their op's output):
        outcomes that went unknown (no answer, or a lease that expired while sending), and unknown ones
        reconciled from Meta's webhooks or flagged for an operator."""
        import dagster as dg

        totals: Counter = Counter()
        runs: dict[str, Counter] = {"process_webhook_events": Counter(), "send_outbound_messages": Counter()}
        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            for job, statuses in runs.items():
                for record in instance.get_run_records(dg.RunsFilter(job_name=job)):
                    statuses[record.dagster_run.status.value] += 1
                    if job != "send_outbound_messages":
                        continue
                    for entry in instance.all_logs(record.dagster_run.run_id,
                                                   of_type=dg.DagsterEventType.STEP_OUTPUT):
                        metadata = entry.dagster_event.event_specific_data.metadata
                        for key in ("unknown", "expired", "reconciled", "flagged"):
                            totals[key] += metadata[key].value
        return {"went_unknown": totals["unknown"] + totals["expired"], "reconciled": totals["reconciled"],
                "flagged_for_an_operator": totals["flagged"], "runs": {k: dict(v) for k, v in runs.items()}}

    def _faults_with_entries(self):
        by_name = {f.name: f for f in self.schedule["faults"]}
        return [(entry, by_name[entry["fault"]]) for entry in sorted(self.fault_log, key=lambda e: e["at_s"])]

    def backfill_truth(self, conn: psycopg.Connection) -> list[dict]:
        """Each backfill's rows and spend per level against what the sandbox generates for those days."""
        if not self.backfills:
            return []
        state = build_state()
        build_app(state)  # populates the world from the seed, as the sandbox process did
        acct = marketing.world(state).accounts[marketing.PRIMARY_ACCOUNT]
        out = []
        for _, since, until in self.backfills:
            for level in ("campaign", "adset", "ad"):
                truth_rows, truth_cents = 0, 0
                for i in range((until - since).days + 1):
                    for object_id in acct.by_level[level]:
                        m = marketing.object_day(state, acct, level, object_id, since + timedelta(days=i))
                        if m is not None:
                            truth_rows += 1
                            truth_cents += m.spend_cents
                got_rows, got_spend = conn.execute(
                    "SELECT count(*), coalesce(sum(spend), 0) FROM ad_performance WHERE ad_account_id = %s "
                    "AND level = %s AND date BETWEEN %s AND %s",
                    (marketing.PRIMARY_ACCOUNT, level, since, until)).fetchone()
                out.append({"days": f"{since}..{until}", "level": level, "rows": got_rows, "truth_rows": truth_rows,
                            "spend_matches": int(round(got_spend * 100)) == truth_cents})
        return out


def _job_reference(sent: dict) -> str | None:
    request = sent["request"]
    if sent["platform"] == "whatsapp":
        return request.get("biz_opaque_callback_data")
    return (request.get("message") or {}).get("metadata")


def _platform_of(mid: str) -> str:
    return "whatsapp" if mid.startswith("wamid.") else "messenger"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="seconds of traffic")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="full")
    parser.add_argument("--webhook-rate", type=float, default=20, help="webhook bodies per second")
    parser.add_argument("--send-rate", type=float, default=4, help="send requests per second")
    parser.add_argument("--settle-seconds", type=float, default=240,
                        help="after the traffic, how long to wait for the queues to drain")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args()
    soak = Soak(args)
    soak.load_before = round(os.getloadavg()[0], 2)
    try:
        soak.start()
        result = soak.run()
    finally:
        soak.stack.stop()
        if args.keep:
            print(f"soak: kept {soak.home}", file=sys.stderr)
        else:
            shutil.rmtree(soak.home, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
