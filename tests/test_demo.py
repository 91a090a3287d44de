"""``everreach-data demo`` and ``everreach-data sandbox`` as a newcomer runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import psycopg

from everreach_data.config import PROJECT_ROOT, Settings
from everreach_data.demo import STEPS, DemoContext, run_demo, step_webhooks
from everreach_data.serving import free_port
from everreach_sandbox.defaults import SANDBOX_DEFAULTS


def test_demo_runs_every_step_against_the_in_process_sandbox(empty_db_url: str) -> None:
    lines: list[str] = []
    result = run_demo(Settings(DATABASE_URL=empty_db_url), out=lines.append)  # type: ignore[arg-type]
    assert result.ok, lines
    assert [name for name, _ in result.lines] == [name for name, _ in STEPS]
    assert lines[0].startswith(
        "EverReach Data demo — Graph API sandbox (a development tool) at http://127.0.0.1:"
    )
    summary = dict(result.lines)
    assert "applied 001_core.sql" in summary["database"]
    assert summary["tokens"].count(" valid (") == 5 and "INVALID" not in summary["tokens"]
    assert "Page " in summary["organic (Graph API)"]
    assert lines[-1].startswith("done in ") and "Graph API calls" in lines[-1]
    with psycopg.connect(empty_db_url) as conn:  # what the summary says landed, landed
        ads_rows, posts, sent = conn.execute(
            "SELECT (SELECT count(*) FROM ad_performance WHERE date = current_date - 1), "
            "(SELECT count(*) FROM social_media_post), "
            "(SELECT count(*) FROM meta_conversion_event WHERE status = 'sent')").fetchone()
        assert f"ad_performance {ads_rows} rows" in summary["insights assets"] and ads_rows > 0
        assert f"meta_conversion_event {sent} sent" in summary["insights assets"] and posts > 0
        pending, messages = conn.execute(
            "SELECT (SELECT count(*) FROM meta_webhook_event WHERE status <> 'done'), "
            "(SELECT count(*) FROM conversation_message m WHERE NOT EXISTS "   # the send step adds its own
            " (SELECT 1 FROM outbound_message_job j WHERE j.message_id = m.message_id))").fetchone()
        assert pending == 0 and f"{messages} messages" in summary["webhooks in"]
        job, status = conn.execute("SELECT j.status, m.status FROM outbound_message_job j "
                                   "JOIN conversation_message m USING (message_id)").fetchone()
        assert (job, status) == ("sent", "read") and "message now 'read'" in summary["message out"]
        assert "outbound_message_job 1," in summary["what landed where"]
        stored_before = conn.execute("SELECT count(*) FROM meta_webhook_event").fetchone()[0]

    # A second demo on the same database (the embedded one keeps its data) reports what it added.
    again = run_demo(Settings(DATABASE_URL=empty_db_url), steps=[("webhooks in", step_webhooks)],
                     out=lambda line: None)  # type: ignore[arg-type]
    with psycopg.connect(empty_db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM meta_webhook_event").fetchone()[0]
    assert again.ok and 0 < stored - stored_before < stored
    assert f"({stored - stored_before} distinct events stored" in dict(again.lines)["webhooks in"]


def test_a_failing_step_stops_the_demo_with_its_name(db_url: str) -> None:
    def broken(ctx: DemoContext) -> str:
        raise RuntimeError("no luck")

    later: list[str] = []
    lines: list[str] = []
    result = run_demo(
        Settings(DATABASE_URL=db_url),
        steps=[("broken", broken), ("later", lambda c: later.append("x") or "")],
        out=lines.append,
    )  # type: ignore[arg-type]
    assert not result.ok and result.lines == [("broken", "FAILED: RuntimeError: no luck")] and later == []
    assert lines[-1].startswith("stopped in ")


def test_sandbox_command_binds_loopback_says_it_is_a_dev_tool_and_takes_fault_flags() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SANDBOX_DEFAULTS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "everreach_data.cli", "sandbox", "--port", str(port), "--error-rate", "1.0"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = proc.stdout.readline()
        assert "a development tool, not Meta" in banner and "loopback only" in banner
        assert f"http://127.0.0.1:{port}/v24.0" in banner
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/v24.0/me",
                    params={"access_token": SANDBOX_DEFAULTS["MESSENGER_PAGE_TOKEN"]},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert r.status_code == 500 and r.json()["error"]["is_transient"] is True  # --error-rate 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_demo_command_exits_zero_with_a_summary(db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SANDBOX_DEFAULTS}
    result = subprocess.run(
        [sys.executable, "-m", "everreach_data.cli", "demo"],
        env={**env, "DATABASE_URL": db_url},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ database" in result.stdout and "done in" in result.stdout
    assert "sandbox-" not in result.stdout  # no token is ever printed
