"""Webhook drain: 100,000 mixed stored events processed into threads/messages/receipts, plus run start-up
and POST-to-message-row latency with the sensor running. Prints one JSON line.

1. Throughput: the traffic generator's mix (Messenger/Instagram messages, echoes, postbacks, reactions,
   deliveries, reads, unsends; WhatsApp messages and statuses; batched bodies) COPY'd into the inbox, then
   drained by the job's function (2 workers, as the job runs it). events/s excludes run start-up.
2. Run start-up: an empty-queue run of ``process_webhook_events`` as ``dagster job execute`` in a fresh
   process (what the default run launcher does per run), and in-process (``execute_in_process``).
3. Latency: the receiver under uvicorn takes signed POSTs at a steady rate; every 5 s (the sensor's
   minimum interval) the sensor's own decision (``inbox.pending_work`` + ``next_request`` with the count
   of runs in flight) is evaluated and each RunRequest is launched as a ``dagster job execute`` process,
   which lingers 60 s for more work as configured (the job runs in-process: one op, no step subprocess). The
   Dagster daemon itself is not used (it would only
   add its own tick scheduling); latency = message row ``created_at`` − the moment its body was POSTed.

    .venv/bin/python bench/webhook_drain.py [--events 100000] [--latency-seconds 40] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procstat import postgres_cpu  # noqa: E402

from everreach_data.db.embedded import start_embedded  # noqa: E402
from everreach_data.db.migrate import migrate  # noqa: E402
from everreach_data.inbox import queue as inbox  # noqa: E402
from everreach_data.inbox.defs import SENSOR_INTERVAL_SECONDS, next_request, process_webhook_events  # noqa: E402
from everreach_data.inbox.drain import drain_url  # noqa: E402
from everreach_data.meta.webhooks import Message, parse_webhook  # noqa: E402
from everreach_data.resources import PostgresResource  # noqa: E402
from everreach_data.serving import free_port, wait_for_port  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402
from everreach_sandbox.traffic import TrafficGenerator, sign  # noqa: E402

JOB_CMD = [sys.executable, "-m", "dagster", "job", "execute", "-m", "everreach_data.definitions",
           "-j", "process_webhook_events"]


def unique_bodies(n: int, seed: int) -> list[bytes]:
    seen: set[bytes] = set()
    out: list[bytes] = []
    for raw in TrafficGenerator(seed=seed).bodies():
        if raw not in seen:
            seen.add(raw)
            out.append(raw)
            if len(out) == n:
                return out
    raise AssertionError


def throughput(url: str, pgdata: Path, n: int) -> dict:
    bodies = unique_bodies(n, seed=1)
    mix: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor().copy("COPY meta_webhook_event (object, payload, body_sha256) FROM STDIN") as copy:
            for raw in bodies:
                obj = json.loads(raw)["object"]
                mix[obj] = mix.get(obj, 0) + 1
                copy.write_row((obj, raw.decode(), hashlib.sha256(raw).digest()))
        conn.execute("ANALYZE")
    cpu0, pg0 = time.process_time(), postgres_cpu(pgdata)
    stats = drain_url(url, workers=2, batch_size=1000)
    python_cpu = time.process_time() - cpu0
    with psycopg.connect(url) as conn:
        # The drain's backends count once they have exited (their CPU moves to the postmaster's children).
        others = ("SELECT count(*) FROM pg_stat_activity "
                  "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        for _ in range(500):
            if conn.execute(others).fetchone()[0] == 0:
                break
            time.sleep(0.01)
        pg_cpu = postgres_cpu(pgdata) - pg0
        done, messages, receipts, stranded = conn.execute(
            "SELECT (SELECT count(*) FROM meta_webhook_event WHERE status = 'done'), "
            "(SELECT count(*) FROM conversation_message), (SELECT count(*) FROM message_delivery_event), "
            "(SELECT count(*) FROM message_delivery_event e JOIN conversation_message m "
            " ON m.platform = e.platform AND m.platform_message_id = e.platform_message_id "
            " WHERE NOT e.applied)").fetchone()
    return {"events": n, "events_mix": mix, "drain_seconds": round(stats.seconds, 2),
            "events_per_s": round(n / stats.seconds), "goal_events_per_s": 10_000,
            "python_cpu_seconds": round(python_cpu, 2), "postgres_cpu_seconds": round(pg_cpu, 2),
            "all_done": done == n, "messages_written": messages, "receipts_written": receipts,
            "message_updates_from_raced_receipts": stats.orphans_applied, "receipts_left_unapplied": stranded}


def startup(url: str, env: dict[str, str]) -> dict:
    t = time.perf_counter()
    subprocess.run(JOB_CMD + ["-c", "/dev/stdin"], input=RUN_CONFIG_EMPTY, env=env, cwd=ROOT, check=True,
                   capture_output=True, text=True)
    fresh = time.perf_counter() - t
    t = time.perf_counter()
    process_webhook_events.execute_in_process(
        resources={"postgres": PostgresResource(url=url)},
        run_config={"ops": {"drain_webhook_events": {"config": {"linger_seconds": 0}}}})
    return {"run_startup_seconds_subprocess": round(fresh, 2),
            "run_startup_seconds_in_process": round(time.perf_counter() - t, 2)}


RUN_CONFIG_EMPTY = json.dumps({"ops": {"drain_webhook_events": {"config": {"linger_seconds": 0}}}})


def latency(url: str, env: dict[str, str], seconds: float, rate: float) -> dict:
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "everreach_data.cli", "serve", "--port", str(port),
                                 "--log-level", "warning", "--no-access-log"], env=env, cwd=ROOT)
    runs: list[subprocess.Popen] = []
    posted: dict[str, float] = {}   # mid -> POST time (epoch seconds)
    stop = threading.Event()
    launched = {"runs": 0}

    def sensor_loop() -> None:
        cursor = None
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                pending, max_id = inbox.pending_work(conn)
                in_flight = sum(1 for r in runs if r.poll() is None)
                decision, cursor = next_request(pending, max_id, in_flight, cursor)
                if hasattr(decision, "run_key"):
                    runs.append(subprocess.Popen(JOB_CMD, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
                    launched["runs"] += 1
                stop.wait(SENSOR_INTERVAL_SECONDS)

    async def post_all() -> None:
        gen = TrafficGenerator(seed=int(time.time())).bodies()
        async with httpx.AsyncClient(timeout=30) as client:
            start = time.monotonic()
            i = 0
            while time.monotonic() - start < seconds:
                raw = next(gen)
                mids = [r.mid for r in parse_webhook(json.loads(raw)).records if isinstance(r, Message)]
                sent_at = time.time()
                response = await client.post(f"http://127.0.0.1:{port}/api/webhooks/meta", content=raw,
                                             headers=sign(SANDBOX_DEFAULTS["META_APP_SECRET"], raw))
                if response.status_code == 200:
                    for mid in mids:
                        posted.setdefault(mid, sent_at)
                i += 1
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))

    wait_for_port(port)
    sensor = threading.Thread(target=sensor_loop, daemon=True)
    sensor.start()
    try:
        asyncio.run(post_all())
        deadline = time.monotonic() + 120
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                n = conn.execute("SELECT count(*) FROM conversation_message WHERE platform_message_id = ANY(%s)",
                                 (list(posted),)).fetchone()[0]
                if n >= len(posted):
                    break
                time.sleep(0.5)
            rows = conn.execute("SELECT platform_message_id, extract(epoch FROM created_at) FROM "
                                "conversation_message WHERE platform_message_id = ANY(%s)",
                                (list(posted),)).fetchall()
    finally:
        stop.set()
        sensor.join()
        for r in runs:
            if r.poll() is None:
                r.terminate()
        for r in runs:
            try:
                r.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.kill()
        receiver.terminate()
        receiver.wait(timeout=15)
    lat = sorted(float(created) - posted[mid] for mid, created in rows)
    pick = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))], 2)  # noqa: E731
    return {"latency_messages": len(lat), "latency_messages_posted": len(posted), "latency_runs_launched":
            launched["runs"], "post_to_row_p50_s": pick(0.5), "post_to_row_p95_s": pick(0.95),
            "post_to_row_max_s": round(lat[-1], 2), "goal_p95_s": 15}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency-seconds", type=float, default=40)
    parser.add_argument("--rate", type=float, default=50, help="POSTs per second in the latency phase")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="everreach-bench-drain-"))
    server = start_embedded(home, databases=("bench", "latency"))
    try:
        url, latency_url = server.url("bench"), server.url("latency")
        migrate(url)
        migrate(latency_url)
        dagster_home = home / "dagster"
        dagster_home.mkdir()
        env = {**os.environ, **SANDBOX_DEFAULTS, "DAGSTER_HOME": str(dagster_home), "PYTHONPATH": str(ROOT)}
        result = {"bench": "webhook_drain", "cpus": os.cpu_count(),
                  "load_avg_1m_before": round(os.getloadavg()[0], 2)}
        result.update(throughput(url, server.pgdata, args.events))
        latency_env = {**env, "DATABASE_URL": latency_url}
        result.update(startup(latency_url, latency_env))
        result.update(latency(latency_url, latency_env, args.latency_seconds, args.rate))
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
