"""Serve an ASGI app from a thread of this process on loopback (the demo, benchmarks and tests use it)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on just now (for a process started next, which binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_background(app, *, host: str = "127.0.0.1", port: int = 0, lifespan: str = "on",
                        name: str = "server", **config) -> Iterator[str]:
    """Run ``app`` under uvicorn until the block ends; yields its base URL.

    Port 0 picks a free port. The socket is bound before uvicorn starts, so no other process can take the
    port in between; the block starts only once uvicorn says it is serving.
    """
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan=lifespan, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"{name}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # waits for an event with a deadline; not a sleep that makes anything pass
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the {name} did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
    """Return once something accepts connections on ``host:port`` (a server started in another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing is listening on {host}:{port} after {timeout:.0f} s")
