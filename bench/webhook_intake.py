"""Webhook intake: signed POSTs at concurrency 64 against the receiver under uvicorn on loopback.

Measures durable-ack requests/s (200 only after the row is committed) and p50/p99 latency, against a bare
200-OK ASGI endpoint served by the same uvicorn process in the same run (the baseline: what HTTP alone
costs here). The load generator is a minimal keep-alive HTTP/1.1 client on asyncio streams in this
process; the server is a separate process, so they do not share a GIL. Every body is unique (a real
insert each time) and signed with the app secret. Prints one JSON line.

Both endpoints run in one uvicorn (uvloop + httptools, access log off) and are measured in alternating
rounds (bare, webhook, bare, webhook, …), so load from elsewhere on the machine falls on both alike; the
ratio is over the rounds' summed requests and seconds.

    .venv/bin/python bench/webhook_intake.py [--requests 30000] [--rounds 6] [--concurrency 64]
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
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procstat import cpu_seconds, postgres_cpu  # noqa: E402

from everreach_data.db.embedded import start_embedded  # noqa: E402
from everreach_data.db.migrate import migrate  # noqa: E402
from everreach_data.serving import free_port, wait_for_port  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402
from everreach_sandbox.traffic import TrafficGenerator, sign  # noqa: E402

SERVER = """
import sys, uvicorn
from everreach_data.config import load_settings
from everreach_data.receiver.app import create_app

receiver = create_app(load_settings(), sys.argv[1])

async def app(scope, receive, send):
    # The baseline: same process, same uvicorn, a bare 200 with no work at all.
    if scope["type"] == "http" and scope["path"] == "/bare":
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"OK"})
        return
    await receiver(scope, receive, send)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False,
            loop="uvloop", http="httptools")
"""


async def _connection(port: int, queue: list[bytes], path: str, latencies: list[float], codes: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue:
            body = queue.pop()
            headers = sign(SANDBOX_DEFAULTS["META_APP_SECRET"], body)
            request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                       + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            code = int(status_line.split()[1])
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()


async def load(port: int, path: str, bodies: list[bytes], concurrency: int) -> dict:
    queue = list(reversed(bodies))
    latencies: list[float] = []
    codes: dict[int, int] = {}
    start = time.perf_counter()
    await asyncio.gather(*[_connection(port, queue, path, latencies, codes) for _ in range(concurrency)])
    return {"seconds": time.perf_counter() - start, "latencies": latencies, "codes": codes}


def summary(rounds: list[dict]) -> dict:
    latencies = sorted(x for r in rounds for x in r["latencies"])
    codes: dict[int, int] = {}
    for r in rounds:
        for code, n in r["codes"].items():
            codes[code] = codes.get(code, 0) + n
    return {"rps": round(len(latencies) / sum(r["seconds"] for r in rounds), 1),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
            "codes": codes,
            "server_cpu_us_per_req": round(sum(r["server_cpu"] for r in rounds) / len(latencies) * 1e6),
            "postgres_cpu_us_per_req": round(sum(r["postgres_cpu"] for r in rounds) / len(latencies) * 1e6),
            "client_cpu_us_per_req": round(sum(r["client_cpu"] for r in rounds) / len(latencies) * 1e6)}


def measured(pid: int, pgdata: Path, port: int, path: str, bodies: list[bytes], concurrency: int) -> dict:
    server0, pg0, client0 = cpu_seconds(pid), postgres_cpu(pgdata), time.process_time()
    result = asyncio.run(load(port, path, bodies, concurrency))
    result["client_cpu"] = time.process_time() - client0
    result["server_cpu"] = cpu_seconds(pid) - server0
    result["postgres_cpu"] = postgres_cpu(pgdata) - pg0
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    load_before = round(os.getloadavg()[0], 2)
    home = Path(tempfile.mkdtemp(prefix="everreach-bench-intake-"))
    server = start_embedded(home, databases=("bench",))
    try:
        url = server.url("bench")
        migrate(url)
        gen = TrafficGenerator(seed=7, duplicate_rate=0.0).bodies()
        seen: set[bytes] = set()
        bodies: list[bytes] = []
        while len(bodies) < args.requests:
            raw = next(gen)
            if raw not in seen:
                seen.add(raw)
                bodies.append(raw)
        warmup = [json.dumps({"object": "page", "entry": [], "warm": i}).encode() for i in range(500)]

        port = free_port()
        env = {**os.environ, **SANDBOX_DEFAULTS, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", SERVER, url, str(port)], env=env, cwd=ROOT)
        try:
            wait_for_port(port)
            asyncio.run(load(port, "/api/webhooks/meta", warmup, args.concurrency))
            asyncio.run(load(port, "/bare", warmup, args.concurrency))
            per_round = len(bodies) // args.rounds
            bare_rounds, webhook_rounds = [], []
            for r in range(args.rounds):
                chunk = bodies[r * per_round:(r + 1) * per_round]
                bare_rounds.append(measured(proc.pid, server.pgdata, port, "/bare", chunk, args.concurrency))
                webhook_rounds.append(measured(proc.pid, server.pgdata, port, "/api/webhooks/meta", chunk,
                                               args.concurrency))
            bare, webhook = summary(bare_rounds), summary(webhook_rounds)
            round_ratios = [
                round(len(w["latencies"]) / w["seconds"] / (len(b["latencies"]) / b["seconds"]), 3)
                for b, w in zip(bare_rounds, webhook_rounds, strict=True)
            ]
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        with psycopg.connect(url) as conn:
            stored = {bytes(r[0]) for r in conn.execute("SELECT body_sha256 FROM meta_webhook_event")}
        all_stored = all(hashlib.sha256(b).digest() in stored for b in bodies[:per_round * args.rounds])
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({
        "bench": "webhook_intake", "requests": args.requests, "concurrency": args.concurrency,
        "cpus": os.cpu_count(), "load_avg_1m_before": load_before, "load_avg_1m": round(os.getloadavg()[0], 2),
        "webhook_rps": webhook["rps"], "webhook_p50_ms": webhook["p50_ms"], "webhook_p99_ms": webhook["p99_ms"],
        "bare_rps": bare["rps"], "bare_p50_ms": bare["p50_ms"], "bare_p99_ms": bare["p99_ms"],
        "ratio_vs_bare": round(webhook["rps"] / bare["rps"], 3), "goal_ratio": 0.5, "round_ratios": round_ratios,
        "webhook_server_cpu_us_per_req": webhook["server_cpu_us_per_req"],
        "webhook_postgres_cpu_us_per_req": webhook["postgres_cpu_us_per_req"],
        "webhook_client_cpu_us_per_req": webhook["client_cpu_us_per_req"],
        "bare_server_cpu_us_per_req": bare["server_cpu_us_per_req"],
        "bare_client_cpu_us_per_req": bare["client_cpu_us_per_req"],
        "webhook_status_codes": webhook["codes"], "every_acked_body_stored": all_stored,
    }))


if __name__ == "__main__":
    main()
