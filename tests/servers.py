"""Real HTTP on 127.0.0.1 for tests: run an ASGI app under uvicorn in a background thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from everreach_data.serving import serve_in_background


@contextmanager
def serve(app, *, port: int | None = None, **config) -> Iterator[str]:
    """Serve ``app`` on loopback until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    with serve_in_background(app, port=port or 0, name="test server", **config) as url:
        yield url
