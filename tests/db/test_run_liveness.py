"""A queue run's presence outlives a database restart: the run that rode it out is seen alive again (its lock
taken on a new connection), so its sensor does not count it dead and start a second one; and the block it
guards ends cleanly, without the lost connection's error failing the run at its very end."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from everreach_data.db.run_liveness import PRESENCE_CHECK_SECONDS, live_runs, presence, presence_async
from everreach_data.inbox.drain import DRAIN_APPLICATION
from everreach_data.outbound.sender import SEND_APPLICATION


def seen_alive(url: str, application: str, run_id: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            return run_id in live_runs(conn, application)
    except psycopg.OperationalError:  # still restarting
        return False


def alive_within(url: str, application: str, run_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not seen_alive(url, application, run_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_runs_presence_is_taken_again_after_a_restart(db_url, pg_server):
    with presence(db_url, DRAIN_APPLICATION, "run-through-a-restart"):
        assert seen_alive(db_url, DRAIN_APPLICATION, "run-through-a-restart")
        pg_server.restart()
        assert not seen_alive(db_url, DRAIN_APPLICATION, "run-through-a-restart")  # the old lock went with it
        assert alive_within(db_url, DRAIN_APPLICATION, "run-through-a-restart", 4 * PRESENCE_CHECK_SECONDS)
    assert not seen_alive(db_url, DRAIN_APPLICATION, "run-through-a-restart")


@pytest.mark.parametrize("restart", ["during", "at_the_end"])
def test_an_async_runs_presence_is_taken_again_and_ends_cleanly(db_url, pg_server, restart):
    run_id = f"async-run-{restart}"

    async def run() -> bool:
        async with presence_async(db_url, SEND_APPLICATION, run_id):
            assert await asyncio.to_thread(seen_alive, db_url, SEND_APPLICATION, run_id)
            await asyncio.to_thread(pg_server.restart)
            if restart == "during":
                return await asyncio.to_thread(alive_within, db_url, SEND_APPLICATION, run_id,
                                               4 * PRESENCE_CHECK_SECONDS)
        return True

    assert asyncio.run(run())
    assert not seen_alive(db_url, SEND_APPLICATION, run_id)
