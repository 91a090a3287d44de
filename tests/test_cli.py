"""The CLI as a newcomer meets it: clear one-line errors (exit 2), never tracebacks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from everreach_data.config import PROJECT_ROOT
from everreach_data.db.embedded import start_embedded
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

CLI = [sys.executable, "-m", "everreach_data.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SANDBOX_DEFAULTS and k != "DATABASE_URL"}
    return subprocess.run([*CLI, *args], env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=PROJECT_ROOT)


def test_unreachable_database_url_is_one_clear_line():
    result = run_cli("migrate", env={"DATABASE_URL": "postgresql://bob:hunter2@127.0.0.1:1/app"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the database at postgresql://bob:***@127.0.0.1:1/app")
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_port_in_use_is_reported_with_the_port(db_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port), env={**SANDBOX_DEFAULTS, "DATABASE_URL": db_url})
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_receiver_refuses_to_start_without_app_secret(db_url):
    env = {**SANDBOX_DEFAULTS, "DATABASE_URL": db_url}
    env.pop("META_APP_SECRET")
    result = run_cli("serve", "--port", "0", env=env)
    assert result.returncode == 2
    assert "META_APP_SECRET is not set" in result.stderr


def test_seed_loads_sample_data_idempotently(db_url):
    for _ in range(2):
        result = run_cli("seed", env={"DATABASE_URL": db_url})
        assert result.returncode == 0, result.stderr
    assert "3 users, 3 campaigns, 24 user events" in result.stdout


def test_dagster_definitions_validate(db_url):
    result = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DAGSTER_HOME": "", "DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_embedded_postgres_keeps_data_across_a_restart(tmp_path: Path):
    os.chmod(tmp_path, 0o755)
    server = start_embedded(tmp_path, databases=("everreach",))
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        server.stop()
        again = start_embedded(tmp_path, databases=("everreach",))
        assert again.pgdata == server.pgdata
        with psycopg.connect(again.url()) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("still here",)
    finally:
        server.stop()


def test_dagster_storage_gets_its_own_database_unless_told_otherwise(tmp_path: Path):
    from everreach_data.config import Settings
    from everreach_data.db.connection import database_urls

    os.chmod(tmp_path, 0o755)
    embedded_app, embedded_dagster = database_urls(Settings(EVERREACH_HOME=tmp_path))  # type: ignore[arg-type]
    try:
        assert embedded_app.endswith(f"/everreach?host={tmp_path}/pgdata")
        assert embedded_dagster.startswith("postgresql+psycopg2://") and "/dagster?" in embedded_dagster
        # what `dev` hands its children: both URLs, so Dagster stays out of the app's database
        app, dagster = database_urls(Settings(DATABASE_URL=embedded_app,  # type: ignore[arg-type]
                                              DAGSTER_PG_URL=embedded_dagster.replace("+psycopg2", "")))
        assert (app, dagster) == (embedded_app, embedded_dagster)
        only_app = database_urls(Settings(DATABASE_URL="postgresql://u@h/app"))  # type: ignore[arg-type]
        assert only_app == ("postgresql://u@h/app", "postgresql+psycopg2://u@h/app")
    finally:
        start_embedded(tmp_path).stop()


def test_serve_with_several_worker_processes_comes_up_and_answers(db_url):
    import httpx

    from everreach_data.serving import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SANDBOX_DEFAULTS and k != "DATABASE_URL"}
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "2", "--no-access-log"],
                            env={**env, **SANDBOX_DEFAULTS, "DATABASE_URL": db_url}, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "2 worker processes" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while True:  # wait, with a deadline, for the workers to come up
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json() == {"status": "ok"}:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "receiver workers did not start"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_env_prints_what_dev_adds_and_never_the_users_own_settings(db_url):
    result = run_cli("env", env={"DATABASE_URL": db_url, "META_APP_SECRET": "users-own-secret"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "export META_GRAPH_URL=http://127.0.0.1:8765" in lines
    assert f"export FB_ADS_ACCESS_TOKEN={SANDBOX_DEFAULTS['FB_ADS_ACCESS_TOKEN']}" in lines
    assert any(line.startswith("export DAGSTER_PG_URL=") for line in lines)
    assert not any("META_APP_SECRET" in line or "users-own-secret" in line for line in lines)
    assert not any(line.startswith("export DATABASE_URL=") for line in lines)  # already set by the user
