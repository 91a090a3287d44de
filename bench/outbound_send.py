"""Outbound throughput: 10,000 WhatsApp messages to 1,000 recipients through the receiver, the queue and the
sender, against the sandbox's 80 messages/s per phone number (it answers 130429 above that, as Meta does).

Sending starts once ``--head-start`` messages are queued; enqueueing goes on meanwhile (on a small machine
the receiver, the sandbox and the sender share the cores). Figures: the achieved send rate against the limit
(goal: within 5 % of it, zero 130429), enqueue-to-sent
latency p50/p95 (mostly queueing: 10,000 messages at 80/s take ~125 s however fast they are enqueued).
Baseline, measured in the same run against the same sandbox: an unthrottled concurrent sender (what peer
projects do) sending 1,000 messages — how many it gets refused with 130429.

The sandbox, the receiver and the enqueuing client each run in their own process (as they would in
production), so the sender's pacing is not disturbed by their work. Prints one JSON line.

    .venv/bin/python bench/outbound_send.py [--messages 10000] [--recipients 1000] [--mps 80]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from everreach_data.config import Settings  # noqa: E402
from everreach_data.db.embedded import start_embedded  # noqa: E402
from everreach_data.db.migrate import migrate  # noqa: E402
from everreach_data.meta.client import AsyncGraphClient  # noqa: E402
from everreach_data.meta.errors import GraphAPIError  # noqa: E402
from everreach_data.outbound.sender import SendConfig, drain  # noqa: E402
from everreach_data.receiver.auth import issue_token  # noqa: E402
from everreach_data.serving import free_port  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402

PHONE = SANDBOX_DEFAULTS["WHATSAPP_PHONE_NUMBER_ID"]
TEMPLATE = {"name": "order_update", "language": {"code": "en_US"}}


def _serve_sandbox(port: int) -> None:
    import uvicorn

    from everreach_sandbox.server import build_app

    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="error", access_log=False)


def _serve_receiver(port: int, settings_json: str, db_url: str) -> None:
    import uvicorn

    from everreach_data.receiver.app import create_app

    uvicorn.run(create_app(Settings.model_validate_json(settings_json), db_url), host="127.0.0.1", port=port,
                log_level="error", access_log=False)


def _enqueue(base: str, messages: int, recipients: int, concurrency: int, out: mp.Queue) -> None:
    """POST the sends (round-robin over recipients, as a campaign would) and report the enqueue rate."""
    token = issue_token(SANDBOX_DEFAULTS["JWT_SECRET"], "bench", roles=["operator"], ttl_seconds=3600)
    headers = {"Authorization": f"Bearer {token}"}

    async def run() -> tuple[int, float]:
        started = time.monotonic()
        accepted = 0
        queue_: asyncio.Queue[int] = asyncio.Queue()
        for i in range(messages):
            queue_.put_nowait(i)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
            async def worker() -> None:
                nonlocal accepted
                while not queue_.empty():
                    i = queue_.get_nowait()
                    to = f"4915{(i % recipients):08d}"
                    r = await client.post("/api/v1/integrations/whatsapp/send",
                                          json={"to": to, "type": "template", "template": TEMPLATE})
                    accepted += r.status_code == 202
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return accepted, time.monotonic() - started

    out.put(asyncio.run(run()))


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def baseline(graph: str, messages: int, concurrency: int) -> dict:
    """Unthrottled: as many concurrent sends as the connection pool allows, no pacing, no retries."""
    refused = ok = 0
    started = time.monotonic()
    async with AsyncGraphClient(graph, SANDBOX_DEFAULTS["WHATSAPP_ACCESS_TOKEN"], max_connections=concurrency) as c:
        async def one(i: int) -> None:
            nonlocal refused, ok
            try:
                await c.post(f"{PHONE}/messages", retry=False, json={
                    "messaging_product": "whatsapp", "to": f"4477{i:08d}", "type": "template", "template": TEMPLATE})
                ok += 1
            except GraphAPIError as exc:
                refused += exc.code == 130429
        sem = asyncio.Semaphore(concurrency)

        async def guarded(i: int) -> None:
            async with sem:
                await one(i)
        await asyncio.gather(*(guarded(i) for i in range(messages)))
    seconds = time.monotonic() - started
    return {"messages": messages, "accepted": ok, "errors_130429": refused,
            "refused_pct": round(100 * refused / messages, 1), "attempted_per_s": round(messages / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--recipients", type=int, default=1_000)
    parser.add_argument("--mps", type=float, default=80.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--head-start", type=int, default=4_000,
                        help="start sending once this many are queued (enqueueing continues meanwhile)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="everreach-bench-"))
    os.chmod(home, 0o755)
    pg = start_embedded(home, databases=("bench",))
    db_url = pg.url("bench")
    migrate(db_url)
    procs: list[mp.Process] = []
    try:
        sandbox_port, receiver_port = free_port(), free_port()
        graph = f"http://127.0.0.1:{sandbox_port}"
        settings = Settings(**SANDBOX_DEFAULTS, DATABASE_URL=db_url, META_GRAPH_URL=graph)  # type: ignore[arg-type]
        ctx = mp.get_context("spawn")
        procs.append(ctx.Process(target=_serve_sandbox, args=(sandbox_port,), daemon=True))
        procs.append(ctx.Process(target=_serve_receiver, args=(receiver_port, _settings_json(settings), db_url),
                                daemon=True))
        for p in procs:
            p.start()
        _wait_up(graph + "/_sandbox/stats")
        _wait_up(f"http://127.0.0.1:{receiver_port}/healthz")
        httpx.post(graph + "/_sandbox/messaging/settings", json={"whatsapp_mps": int(args.mps)}).raise_for_status()

        base = asyncio.run(baseline(settings.graph_base_url, 1_000, 64))
        time.sleep(2.0)     # let the sandbox's one-second window forget the baseline

        results: mp.Queue = ctx.Queue()
        enqueuer = ctx.Process(target=_enqueue, args=(f"http://127.0.0.1:{receiver_port}", args.messages,
                                                      args.recipients, args.concurrency, results))
        enqueuer.start()
        _wait_for_backlog(db_url, args.head_start)
        cfg = SendConfig(whatsapp_messages_per_second=args.mps, max_seconds=3600, linger_seconds=3.0)
        report = asyncio.run(drain(db_url, settings.channels(), cfg))
        accepted, enqueue_seconds = results.get(timeout=600)
        enqueuer.join()

        import psycopg

        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT extract(epoch FROM sent_at - created_at), extract(epoch FROM sent_at) "
                                "FROM outbound_message_job WHERE status = 'sent'").fetchall()
            statuses = dict(conn.execute(
                "SELECT status, count(*) FROM outbound_message_job GROUP BY status").fetchall())
        latencies = sorted(float(r[0]) for r in rows)
        sent_times = sorted(float(r[1]) for r in rows)
        counters = httpx.get(graph + "/_sandbox/stats").json()["counters"]
        span = sent_times[-1] - sent_times[0] if len(sent_times) > 1 else 0.0
        achieved = (len(sent_times) - 1) / span if span else 0.0
        lo, hi = sent_times[len(sent_times) // 10], sent_times[(9 * len(sent_times)) // 10]
        steady = (0.8 * len(sent_times)) / (hi - lo) if hi > lo else 0.0
        print(json.dumps({
            "bench": "outbound_send", "messages": args.messages, "recipients": args.recipients,
            "enqueued": accepted, "enqueue_per_s": round(accepted / enqueue_seconds, 1),
            "sent": len(rows), "job_statuses": statuses,
            "limit_mps": args.mps, "achieved_mps": round(achieved, 2),
            "achieved_pct_of_limit": round(100 * achieved / args.mps, 1), "steady_mps_p10_p90": round(steady, 2),
            "within_5pct": abs(achieved - args.mps) <= 0.05 * args.mps,
            "errors_130429": counters.get("messaging.130429", 0) - base["errors_130429"],
            "errors_131056": counters.get("messaging.131056", 0),
            "sender_retries": report.retried, "latency_p50_s": round(statistics.median(latencies), 2),
            "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
            "send_seconds": round(span, 1), "baseline_unthrottled": base,
        }))
    finally:
        for p in procs:
            p.terminate()
            p.join(timeout=10)
        pg.stop()
        shutil.rmtree(home, ignore_errors=True)


def _wait_for_backlog(db_url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        deadline = time.monotonic() + 300
        while conn.execute("SELECT count(*) FROM outbound_message_job").fetchone()[0] < n:
            if time.monotonic() > deadline:
                raise RuntimeError("enqueueing stalled")
            time.sleep(0.2)


def _settings_json(settings: Settings) -> str:
    """Settings with secrets in the clear, for the receiver process only (never printed)."""
    data = {k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
            for k, v in settings.model_dump().items()}
    return json.dumps(data, default=str)


if __name__ == "__main__":
    main()
