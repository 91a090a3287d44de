"""Backfill 90 days x 3 levels of a ~200 campaign / ~1000 ad account from the sandbox (20-50 ms latency),
the way the ``ad_performance`` asset does (``sync_ad_performance``'s two steps: read into a spool, then
``replace_range``), and compare in the same run against:

- the one-request-per-day-per-level baseline: days x levels calls (the fewest a per-day client could make).
  ``api_calls`` is HTTP requests made (a Graph batch of up to 50 calls is one request);
  ``graph_requests`` is the Graph calls they carried (each batch item, as Meta counts it for rate limits);
- a raw COPY of the same rows into a scratch table: a plain table with the same columns and no indexes,
  checks or keys (``raw_copy_rows_per_second``, the goal's baseline), and, for context, one with the same
  indexes (``LIKE … INCLUDING ALL``; still no foreign key). The write (into an empty range, as a first
  backfill finds it) and the two raw COPYs are timed in turns, three times each on the same rows, and the
  medians compared: single timings on a shared machine swing by a third.

The sandbox runs in its own process (``everreach-data sandbox``), so ``peak_rss_mb`` is ours alone;
Postgres is a throwaway embedded server. Prints one JSON line.

    .venv/bin/python bench/ads_backfill.py [--days 90] [--campaigns 200] [--ads-per-campaign 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from everreach_data.ads.writer import Spool, replace_range  # noqa: E402
from everreach_data.db.connection import connect  # noqa: E402
from everreach_data.db.embedded import start_embedded  # noqa: E402
from everreach_data.db.migrate import migrate  # noqa: E402
from everreach_data.meta.client import GraphClient  # noqa: E402
from everreach_data.meta.insights import InsightsOptions, InsightsReader  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402

ACCOUNT = "act_7000000000000001"
LEVELS = ["campaign", "adset", "ad"]
REPEATS = 3  # the write and the raw COPYs are timed in turns this many times; medians are reported


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(port: int, latency: str) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "everreach-data"
    proc = subprocess.Popen(
        [str(exe), "sandbox", "--port", str(port), "--latency-ms", latency],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the sandbox did not start")


def table_copy_text(url: str) -> bytes:
    """The rows written, as COPY text: what the raw baselines load."""
    import psycopg

    buf = bytearray()
    with psycopg.connect(url) as conn, conn.cursor().copy("COPY ad_performance TO STDOUT") as copy:
        for block in copy:
            buf += block
    return bytes(buf)


def raw_copy_seconds(url: str, data: bytes, like: str) -> float:
    """COPY ``data`` into a fresh scratch table ``LIKE ad_performance {like}``: INCLUDING DEFAULTS is a plain
    table (no indexes, checks or keys); INCLUDING ALL has the same indexes and checks (no foreign key)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS scratch")
        conn.execute(f"CREATE TABLE scratch (LIKE ad_performance {like})")
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY scratch FROM STDIN") as copy:
                for i in range(0, len(data), 1 << 20):
                    copy.write(data[i : i + (1 << 20)])
        return time.perf_counter() - started


def write_seconds(url: str, spool: Spool, since, until) -> float:
    """The asset's write (:func:`replace_range`: upsert campaigns, delete the range, COPY) into an empty
    range, as a first backfill finds it."""
    with connect(url) as conn:
        conn.execute("TRUNCATE ad_performance")
        conn.commit()
        started = time.perf_counter()
        replace_range(conn, spool, accounts=[ACCOUNT], levels=LEVELS, since=since, until=until)
        return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--campaigns", type=int, default=200)
    ap.add_argument("--ads-per-campaign", type=int, default=5)
    ap.add_argument("--latency-ms", default="20-50")
    ap.add_argument("--chunk-days", type=int, default=InsightsOptions.chunk_days)
    ap.add_argument("--page-size", type=int, default=InsightsOptions.page_size)
    args = ap.parse_args()
    rss_start_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    home = Path(tempfile.mkdtemp(prefix="everreach-bench-"))
    port = free_port()
    sandbox = start_sandbox(port, args.latency_ms)
    pg = None
    try:
        pg = start_embedded(home, databases=("bench",))
        url = pg.url("bench")
        migrate(url)
        base = f"http://127.0.0.1:{port}"
        made = httpx.post(
            f"{base}/_sandbox/marketing/accounts",
            json={
                "account_id": ACCOUNT,
                "campaigns": args.campaigns,
                "adsets_per_campaign": 1,
                "ads_per_adset": args.ads_per_campaign,
            },
        ).json()
        until = datetime.now(UTC).date() - timedelta(days=2)
        since = until - timedelta(days=args.days - 1)
        started = time.perf_counter()
        # what sync_ad_performance does, in its two steps, so the write can be timed more than once
        options = InsightsOptions(chunk_days=args.chunk_days, page_size=args.page_size)
        spool = Spool()
        with GraphClient(f"{base}/v24.0", SANDBOX_DEFAULTS["FB_ADS_ACCESS_TOKEN"]) as client:
            reader = InsightsReader(client, options)
            for row in reader.read([ACCOUNT], LEVELS, since, until):
                spool.add(row)
        read_seconds = time.perf_counter() - started
        with connect(url) as conn:  # the run's own write (timed again below, in turns with the baselines)
            rows_written = replace_range(
                conn, spool, accounts=[ACCOUNT], levels=LEVELS, since=since, until=until
            )
        wall = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the baseline's buffers
        # the write and the raw COPYs timed in turns, three times each, on the same rows: medians
        data = table_copy_text(url)
        times: dict[str, list[float]] = {"write": [], "no_indexes": [], "same_indexes": []}
        for _ in range(REPEATS):
            times["write"].append(write_seconds(url, spool, since, until))
            times["no_indexes"].append(raw_copy_seconds(url, data, "INCLUDING DEFAULTS"))
            times["same_indexes"].append(raw_copy_seconds(url, data, "INCLUDING ALL"))
        spool.close()
        rps = {k: rows_written / statistics.median(v) for k, v in times.items()}
        write_rps, copy_rps = rps["write"], rps
        baseline_calls = args.days * len(LEVELS)
        stats = client.stats
        print(
            json.dumps(
                {
                    "benchmark": "ads_backfill",
                    "account": {"campaigns": made["campaigns"], "adsets": made["adsets"], "ads": made["ads"]},
                    "days": args.days,
                    "levels": len(LEVELS),
                    "latency_ms": args.latency_ms,
                    "rows_written": rows_written,
                    "api_calls": stats.calls,
                    "api_calls_means": "HTTP requests made (a Graph batch of <= 50 calls is one)",
                    "graph_requests": stats.graph_requests,
                    "report_runs": reader.stats.report_runs,
                    "baseline_calls_one_per_day_per_level": baseline_calls,
                    "calls_vs_baseline": round(stats.calls / baseline_calls, 3),
                    "graph_requests_vs_baseline": round(stats.graph_requests / baseline_calls, 3),
                    # a per-day client starts, polls and pages each report: at least 3 calls per day and level
                    "baseline_calls_one_report_per_day_per_level": 3 * baseline_calls,
                    "chunk_days": args.chunk_days,
                    "page_size": args.page_size,
                    "wall_seconds": round(wall, 2),
                    "read_seconds": round(read_seconds, 2),
                    "write_seconds": [round(t, 3) for t in times["write"]],
                    "raw_copy_seconds": [round(t, 3) for t in times["no_indexes"]],
                    "rows_per_second_written": round(write_rps),
                    "raw_copy_rows_per_second": round(copy_rps["no_indexes"]),
                    "written_vs_raw_copy": round(write_rps / copy_rps["no_indexes"], 3),
                    "raw_copy_same_indexes_rows_per_second": round(copy_rps["same_indexes"]),
                    "written_vs_raw_copy_same_indexes": round(write_rps / copy_rps["same_indexes"], 3),
                    "peak_rss_mb": round(peak_mb, 1),
                    "rss_after_imports_mb": round(rss_start_mb, 1),
                }
            )
        )
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        if pg is not None:
            pg.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
