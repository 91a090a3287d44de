"""Scale on this machine: the receiver with 1 vs 2 processes, the webhook drain with 1 vs 2 concurrent runs.
Prints one JSON line.

1. Intake: two receivers run at once, ``everreach-data serve --workers 1`` and ``--workers 2`` (uvicorn
   processes sharing a port), over one database; signed POSTs at concurrency 64 from webhook_intake.py's
   load generator (in this process) go to each in alternating rounds, so load from elsewhere falls on both
   alike. Every body is unique and acknowledged only after its commit. The ratio is 2-process / 1-process.
2. Drain: the same mixed events (webhook_drain.py's) COPY'd into a fresh database each round, drained by one
   run or by two runs at once — each run a process of its own doing what the job does (``drain_url`` with
   two workers) — in alternating rounds. events/s = events / time from the first run's start of work to
   the last run's end (the runs' process start-up left out). The Python CPU includes their imports.

Postgres's CPU and WAL bytes per request or event are reported for both: they are what runs out first
once there are enough receiver processes or runs (README "Scaling").

    .venv/bin/python bench/scale.py [--requests 24000] [--rounds 4] [--events 40000] [--drain-rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from procstat import postgres_cpu  # noqa: E402
from webhook_drain import unique_bodies  # noqa: E402
from webhook_intake import load, summary  # noqa: E402

from everreach_data.db.embedded import start_embedded  # noqa: E402
from everreach_data.db.migrate import migrate  # noqa: E402
from everreach_data.serving import free_port, wait_for_port  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402


# One run: what the job's op does, timed from its first claim to its end (a run's start-up, measured by
# webhook_drain.py, is left out: here it would be two processes importing Dagster on the cores the drains
# share).
def wal_position(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])


DRAIN_RUN = """
import json, sys, time
from everreach_data.inbox.drain import drain_url
started = time.time()
stats = drain_url(sys.argv[1], workers=2)
print(json.dumps({"started": started, "ended": time.time(), "done": stats.done}))
"""


def intake(url: str, pgdata: Path, requests: int, rounds: int, concurrency: int) -> dict:
    bodies = unique_bodies(requests, seed=11)
    env = {**os.environ, **SANDBOX_DEFAULTS, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    servers: dict[int, tuple[subprocess.Popen, int]] = {}
    try:
        for workers in (1, 2):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "everreach_data.cli", "serve", "--port", str(port),
                                     "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
                                    env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            servers[workers] = (proc, port)
            wait_for_port(port)
        for workers, (_, port) in servers.items():  # warm every process's pool
            warm = [json.dumps({"object": "page", "entry": [], "warm": f"{workers}-{i}"}).encode() for i in range(2000)]
            asyncio.run(load(port, "/api/webhooks/meta", warm, concurrency))
        per_round = len(bodies) // (2 * rounds)
        measured: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(rounds):
            for i, workers in enumerate((1, 2) if r % 2 == 0 else (2, 1)):
                chunk = bodies[(2 * r + i) * per_round:(2 * r + i + 1) * per_round]
                pg0, wal0 = postgres_cpu(pgdata), wal_position(url)
                result = asyncio.run(load(servers[workers][1], "/api/webhooks/meta", chunk, concurrency))
                result.update(server_cpu=0.0, client_cpu=0.0, postgres_cpu=postgres_cpu(pgdata) - pg0,
                              wal=wal_position(url) - wal0)
                measured[workers].append(result)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=20)
    one, two = summary(measured[1]), summary(measured[2])
    with psycopg.connect(url) as conn:
        stored = {bytes(r[0]) for r in conn.execute("SELECT body_sha256 FROM meta_webhook_event")}
    acked = bodies[:per_round * 2 * rounds]
    return {
        "intake_rps_1_process": one["rps"], "intake_rps_2_processes": two["rps"],
        "intake_ratio_2_vs_1": round(two["rps"] / one["rps"], 3),
        "intake_p99_ms_1_process": one["p99_ms"], "intake_p99_ms_2_processes": two["p99_ms"],
        "intake_round_rps": {str(w): [round(len(r["latencies"]) / r["seconds"]) for r in measured[w]] for w in (1, 2)},
        "intake_postgres_cpu_us_per_req": {"1": one["postgres_cpu_us_per_req"], "2": two["postgres_cpu_us_per_req"]},
        "intake_wal_bytes_per_req": round(sum(r["wal"] for w in (1, 2) for r in measured[w])
                                          / sum(len(r["latencies"]) for w in (1, 2) for r in measured[w])),
        "intake_status_codes": {"1": one["codes"], "2": two["codes"]},
        "intake_every_acked_body_stored": all(hashlib.sha256(b).digest() in stored for b in acked),
    }


def _fresh(server, name: str) -> str:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE drain_template").format(sql.Identifier(name)))
    return server.url(name)


def drain_round(server, bodies: list[bytes], runs: int) -> dict:
    url = _fresh(server, "drain_round")
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor().copy("COPY meta_webhook_event (object, payload, body_sha256) FROM STDIN") as copy:
            for raw in bodies:
                copy.write_row((json.loads(raw)["object"], raw.decode(), hashlib.sha256(raw).digest()))
        conn.execute("ANALYZE")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg0, wal0 = postgres_cpu(server.pgdata), wal_position(url)
    procs = [subprocess.Popen([sys.executable, "-c", DRAIN_RUN, url], env=env, cwd=ROOT, stdout=subprocess.PIPE)
             for _ in range(runs)]
    ends = [json.loads(proc.communicate()[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    seconds = max(e["ended"] for e in ends) - min(e["started"] for e in ends)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with psycopg.connect(url) as conn:
        for _ in range(500):  # the runs' backends count once they have exited
            if not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()").fetchone()[0]:
                break
            time.sleep(0.01)
        done, messages = conn.execute("SELECT (SELECT count(*) FROM meta_webhook_event WHERE status = 'done'), "
                                      "(SELECT count(*) FROM conversation_message)").fetchone()
    return {"seconds": seconds, "all_done": done == len(bodies), "messages": messages,
            "wal": wal_position(url) - wal0,
            "python_cpu": children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime,
            "postgres_cpu": postgres_cpu(server.pgdata) - pg0}


def drain(server, events: int, rounds: int) -> dict:
    bodies = unique_bodies(events, seed=1)
    migrate(server.url("drain_template"))
    results: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(rounds):
        for runs in (1, 2) if r % 2 == 0 else (2, 1):
            results[runs].append(drain_round(server, bodies, runs))

    def rate(runs: int) -> float:
        return events * len(results[runs]) / sum(x["seconds"] for x in results[runs])

    def per_event(runs: int, key: str) -> float:
        return round(sum(x[key] for x in results[runs]) / (events * len(results[runs])) * 1e6)

    return {
        "drain_events": events, "drain_events_per_s_1_run": round(rate(1)), "drain_events_per_s_2_runs": round(rate(2)),
        "drain_ratio_2_vs_1": round(rate(2) / rate(1), 3),
        "drain_round_events_per_s": {str(n): [round(events / x["seconds"]) for x in results[n]] for n in (1, 2)},
        "drain_python_cpu_us_per_event": {str(n): per_event(n, "python_cpu") for n in (1, 2)},
        "drain_postgres_cpu_us_per_event": {str(n): per_event(n, "postgres_cpu") for n in (1, 2)},
        "drain_wal_bytes_per_event": round(sum(x["wal"] for n in (1, 2) for x in results[n])
                                           / (events * sum(len(results[n]) for n in (1, 2)))),
        "drain_all_done": all(x["all_done"] for n in (1, 2) for x in results[n]),
        "drain_same_messages": len({x["messages"] for n in (1, 2) for x in results[n]}) == 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=24_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--drain-rounds", type=int, default=2)
    args = parser.parse_args()

    load_before = round(os.getloadavg()[0], 2)
    home = Path(tempfile.mkdtemp(prefix="everreach-bench-scale-"))
    server = start_embedded(home, databases=("intake", "drain_template"))
    try:
        url = server.url("intake")
        migrate(url)
        figures = intake(url, server.pgdata, args.requests, args.rounds, args.concurrency)
        figures |= drain(server, args.events, args.drain_rounds)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({"bench": "scale", "cpus": os.cpu_count(), "load_avg_1m_before": load_before,
                      "requests": args.requests, "concurrency": args.concurrency, **figures,
                      "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
