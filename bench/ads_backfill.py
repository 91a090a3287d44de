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

The many-account case (``many_accounts`` in the line; ``--accounts 0`` skips it): 50 small accounts
(4 campaigns × 2 ads, time zones mixed) × 90 days × 3 levels plus the 4 default breakdown reports, read
and written as the assets do, once as 1 run holding every account and once as 4 runs side by side (4
processes, as Dagster's run queue would start them, each a quarter of the accounts), compared with:

- one call per account, day, level and report (``baseline_calls``);
- a raw COPY of the breakdown rows into a plain table (``ad_performance_breakdown``'s write — delete the
  range, COPY into the keyed table — timed in turns with it, medians).

The sandbox runs in its own process (``everreach-data sandbox``), so ``peak_rss_mb`` is ours alone;
Postgres is a throwaway embedded server. Prints one JSON line.

    .venv/bin/python bench/ads_backfill.py [--days 90] [--campaigns 200] [--ads-per-campaign 5] [--accounts 50]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
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

from everreach_data.ads.breakdowns import COLUMNS as BREAKDOWN_COLUMNS  # noqa: E402
from everreach_data.ads.breakdowns import COPY_SQL as BREAKDOWN_COPY  # noqa: E402
from everreach_data.ads.breakdowns import sync_breakdown  # noqa: E402
from everreach_data.ads.reports import DEFAULT_REPORTS  # noqa: E402
from everreach_data.ads.sync import sync_ad_performance  # noqa: E402
from everreach_data.ads.writer import Spool, replace_range, replace_rows  # noqa: E402
from everreach_data.db.connection import connect  # noqa: E402
from everreach_data.db.embedded import start_embedded  # noqa: E402
from everreach_data.db.migrate import migrate  # noqa: E402
from everreach_data.meta.client import GraphClient  # noqa: E402
from everreach_data.meta.insights import InsightsOptions, InsightsReader  # noqa: E402
from everreach_data.serving import free_port  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402

ACCOUNT = "act_7000000000000001"
LEVELS = ["campaign", "adset", "ad"]
REPEATS = 3  # the write and the raw COPYs are timed in turns this many times; medians are reported


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


ZONES = ("America/Los_Angeles", "America/New_York", "Etc/UTC", "Europe/Berlin", "Asia/Tokyo")


def run_group(base: str, url: str, accounts: list[str], since, until) -> dict:
    """One run's work, as the assets do it: ad_performance (3 levels) and the 4 default reports."""
    calls = graph = rows = 0
    with GraphClient(f"{base}/v24.0", SANDBOX_DEFAULTS["FB_ADS_ACCESS_TOKEN"]) as client:
        result = sync_ad_performance(url, client, accounts=accounts, levels=LEVELS, since=since, until=until)
        rows += result.rows_written
        for report in DEFAULT_REPORTS:
            rows += sync_breakdown(url, client, report=report, accounts=accounts, since=since, until=until
                                   ).run.rows_written
        calls, graph = client.stats.calls, client.stats.graph_requests
    return {"api_calls": calls, "graph_requests": graph, "rows": rows}


def runs_in_parallel(base: str, url: str, accounts: list[str], since, until, runs: int) -> tuple[float, list]:
    groups = [accounts[i::runs] for i in range(runs)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(runs) as pool:
        results = pool.starmap(run_group, [(base, url, g, since, until) for g in groups])
    return time.perf_counter() - started, results


def breakdown_write_vs_copy(url: str, accounts: list[str], since, until) -> dict:
    """The breakdown table's write (delete the range, COPY into the keyed table) vs a raw COPY of the same
    rows into a plain table, in turns, medians."""
    import psycopg

    columns = ", ".join(BREAKDOWN_COLUMNS)
    buf = bytearray()
    with psycopg.connect(url) as conn, conn.cursor().copy(f"COPY ad_performance_breakdown ({columns}) TO STDOUT") as cp:
        for block in cp:
            buf += block
    data = bytes(buf)
    rows = data.count(b"\n")
    delete = ("DELETE FROM ad_performance_breakdown WHERE ad_account_id = ANY(%(accounts)s) "
              "AND date BETWEEN %(since)s AND %(until)s")
    times: dict[str, list[float]] = {"write": [], "raw": []}
    for _ in range(REPEATS):
        spool = Spool()
        spool.file.write(data)
        with connect(url) as conn:
            started = time.perf_counter()
            replace_rows(conn, spool, delete=delete, copy=BREAKDOWN_COPY,
                         params={"accounts": accounts, "since": since, "until": until})
            times["write"].append(time.perf_counter() - started)
        spool.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS scratch")
            conn.execute(f"CREATE TABLE scratch AS SELECT {columns} FROM ad_performance_breakdown LIMIT 0")
        with psycopg.connect(url) as conn:
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur, cur.copy(f"COPY scratch ({columns}) FROM STDIN") as cp:
                for i in range(0, len(data), 1 << 20):
                    cp.write(data[i : i + (1 << 20)])
            times["raw"].append(time.perf_counter() - started)
    write_rps = rows / statistics.median(times["write"])
    raw_rps = rows / statistics.median(times["raw"])
    return {"breakdown_rows": rows, "rows_per_second_written": round(write_rps),
            "raw_copy_rows_per_second": round(raw_rps), "written_vs_raw_copy": round(write_rps / raw_rps, 3),
            "write_seconds": [round(t, 3) for t in times["write"]],
            "raw_copy_seconds": [round(t, 3) for t in times["raw"]]}


def many_accounts(base: str, url: str, n: int, days: int) -> dict:
    accounts = []
    for i in range(n):
        account = f"act_71{i:014d}"
        httpx.post(f"{base}/_sandbox/marketing/accounts", json={
            "account_id": account, "campaigns": 4, "adsets_per_campaign": 1, "ads_per_adset": 2,
            "timezone_name": ZONES[i % len(ZONES)]}).raise_for_status()
        accounts.append(account)
    until = datetime.now(UTC).date() - timedelta(days=2)
    since = until - timedelta(days=days - 1)
    one_wall, (one,) = runs_in_parallel(base, url, accounts, since, until, 1)
    four_wall, four = runs_in_parallel(base, url, accounts, since, until, 4)
    reports = len(LEVELS) + len(DEFAULT_REPORTS)
    baseline = n * days * reports
    return {
        "accounts": n, "days": days, "levels": len(LEVELS), "breakdown_reports": len(DEFAULT_REPORTS),
        "rows_written": one["rows"],
        "api_calls": one["api_calls"], "graph_requests": one["graph_requests"],
        "baseline_calls_one_per_account_day_level_report": baseline,
        "calls_vs_baseline": round(one["api_calls"] / baseline, 4),
        "graph_requests_vs_baseline": round(one["graph_requests"] / baseline, 4),
        "wall_seconds_1_run": round(one_wall, 1), "wall_seconds_4_runs": round(four_wall, 1),
        "speedup_4_vs_1": round(one_wall / four_wall, 2),
        "api_calls_4_runs": sum(r["api_calls"] for r in four),
        **breakdown_write_vs_copy(url, accounts, since, until),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--campaigns", type=int, default=200)
    ap.add_argument("--ads-per-campaign", type=int, default=5)
    ap.add_argument("--latency-ms", default="20-50")
    ap.add_argument("--chunk-days", type=int, default=InsightsOptions.chunk_days)
    ap.add_argument("--page-size", type=int, default=InsightsOptions.page_size)
    ap.add_argument("--accounts", type=int, default=50, help="the many-account case (0: skip it)")
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
        many = many_accounts(base, url, args.accounts, args.days) if args.accounts else None
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
                    "many_accounts": many,
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
