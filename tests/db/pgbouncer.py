"""A real PgBouncer in transaction mode in front of a test Postgres, on loopback (Debian's ``pgbouncer``).

Transaction mode is what Supabase's pooler and most managed poolers run: a client gets a server session for
one transaction at a time, consecutive transactions may run on different sessions, and what one client
leaves on a session (a setting, a prepared statement, a session lock) is there for the next client. The pool
is kept small so that tests share server sessions and see such leaks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from everreach_data.db.embedded import EmbeddedPostgres
from everreach_data.serving import free_port

#: Server sessions per database: room for a drain run with two workers (its presence, two batches and their
#: trackers), small enough that consecutive tests' transactions land on sessions used before.
POOL_SIZE = 5

CONFIG = """\
[databases]
* = host={socket_dir} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = {home}/pgbouncer.log
pidfile = {home}/pgbouncer.pid
"""


def executable() -> str:
    """PgBouncer, installed by ``.ci/run`` (``apt-get install pgbouncer``): Debian puts it in /usr/sbin."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("pgbouncer is not installed: apt-get install pgbouncer (.ci/run does)")
    return found


@contextmanager
def pgbouncer(server: EmbeddedPostgres) -> Iterator[int]:
    """Run PgBouncer for ``server`` until the block ends; yields its port on 127.0.0.1."""
    home = Path(tempfile.mkdtemp(prefix="everreach-pgbouncer-"))
    port = free_port()
    (home / "pgbouncer.ini").write_text(CONFIG.format(socket_dir=server.socket_dir, port=port, home=home,
                                                      pool_size=POOL_SIZE))
    command = [executable(), str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer will not run as root; run it as the server's own user
        owner = server.pgdata.stat().st_uid
        os.chown(home, owner, -1)
        command[1:1] = ["-u", pwd.getpwuid(owner).pw_name]
    # Its log goes to the file only: a pipe nobody reads would fill up and stop it mid-suite.
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = home / "pgbouncer.log"
                raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else 'no log'}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def pooled(url: str, port: int) -> str:
    """``url`` (an embedded server's, on its Unix socket) through the pooler on ``port``."""
    return f"postgresql://postgres@127.0.0.1:{port}/{conninfo_to_dict(url)['dbname']}"
