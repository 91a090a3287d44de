"""Fixtures for the outbound tests: the Graph API sandbox and the receiver on loopback, wired together
(the sandbox posts its echo/status webhooks to the receiver), over this test's migrated database."""

from __future__ import annotations

import pytest

from everreach_data.receiver.app import create_app
from everreach_sandbox.server import build_app, build_state
from tests.servers import serve


@pytest.fixture
def sandbox_state():
    return build_state()


@pytest.fixture
def sandbox(sandbox_state):
    with serve(build_app(sandbox_state)) as base:
        yield base


@pytest.fixture
def out_settings(settings, sandbox):
    return settings.model_copy(update={"META_GRAPH_URL": sandbox})


@pytest.fixture
def receiver(out_settings, db_url, sandbox_state):
    with serve(create_app(out_settings, db_url)) as base:
        sandbox_state.webhook_url = base + "/api/webhooks/meta"
        yield base
        sandbox_state.webhook_url = None
