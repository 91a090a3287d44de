"""The sandbox every organic test reads, on loopback (seed 7)."""

from __future__ import annotations

import pytest

from everreach_sandbox.server import build_app, build_state
from tests.servers import serve

SEED = 7


@pytest.fixture
def sandbox():
    with serve(build_app(build_state(seed=SEED))) as base:
        yield base
