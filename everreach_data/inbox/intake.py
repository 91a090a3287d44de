"""The webhook intake's writer: durable, deduplicated, and cheap per request (group commit).

Concurrent requests share commits: while one INSERT … COMMIT is in flight, newly arrived bodies queue up and
go in the next multi-row INSERT, so under load one fsync acknowledges many events. Each request still gets
its 200 only after the commit that holds its row; a failed commit answers 503 to everyone in it (Meta
retries, and the body hash makes a redelivery of an event that did land a no-op).

The JSON is checked by Postgres in that same INSERT (it parses the body into ``jsonb`` anyway; parsing it
in Python too cost ~40 % of the handler): bodies that are not JSON, not an object, or have no string
``object`` are not stored, and the route answers 400.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from everreach_data.meta.webhooks import OBJECT_PLATFORMS

#: Rows per INSERT when many requests wait for the same commit.
MAX_GROUP = 256
#: Commits in flight at once (each holds one pool connection). Two: while one group waits for Postgres, the
#: next is already on its way, so the server and Postgres work side by side instead of taking turns — 10–15 %
#: more acknowledged requests/s at concurrency 64 than one (bench/webhook_intake.py); three or four did no
#: better.
MAX_FLUSHERS = 2

# Binary parameters (%b): the text format would escape every quote of every JSON body in Python. The
# objects we handle are a constant of the code, rendered into the statement once (psycopg's Literal): as a
# third parameter, its list was typed and encoded again on every commit.
# Stores the bodies that are JSON objects with a non-empty string ``object`` and whose hash is new to
# meta_webhook_event_digest (byte-identical redeliveries are stored once, in whichever month they arrive:
# the inbox is partitioned by month and cannot hold a unique key on the hash); returns the others (1-based
# position, jsonb type) so their requests get 400. A body that is not JSON at all fails the statement (22P02)
# and the group is retried one body at a time. The group's bodies are distinct (GroupCommitWriter._insert).
INSERT_EVENTS = sql.SQL("""
WITH b AS MATERIALIZED (
    SELECT u.i, u.body::jsonb AS p, u.sha FROM unnest(%b::text[], %b::bytea[]) WITH ORDINALITY AS u (body, sha, i)
), new AS (
    INSERT INTO meta_webhook_event_digest (body_sha256)
    SELECT sha FROM b WHERE jsonb_typeof(p -> 'object') = 'string' AND p ->> 'object' <> ''
    ON CONFLICT (body_sha256) DO NOTHING
    RETURNING body_sha256
), ins AS (
    INSERT INTO meta_webhook_event (object, payload, body_sha256, status)
    SELECT p ->> 'object', p, sha, CASE WHEN p ->> 'object' = ANY({handled}::text[]) THEN 'pending' ELSE 'ignored' END
    FROM b JOIN new ON new.body_sha256 = b.sha
    ORDER BY b.i
)
SELECT i, jsonb_typeof(p) FROM b
WHERE jsonb_typeof(p -> 'object') IS DISTINCT FROM 'string' OR p ->> 'object' = ''
""").format(handled=sql.Literal(sorted(OBJECT_PLATFORMS))).as_string()


class StoreUnavailable(Exception):
    """The database could not take the event; Meta should retry (503)."""


class BodyNotStorable(Exception):
    """Postgres refused this body: not JSON (``not_json``), or e.g. ``\\u0000`` or a lone surrogate in it."""

    def __init__(self, message: str, *, not_json: bool = False) -> None:
        super().__init__(message)
        self.not_json = not_json


class NotAnEvent(Exception):
    """Valid JSON, but not an object with a string ``object`` field; ``json_type`` is what it was."""

    def __init__(self, json_type: str) -> None:
        super().__init__(json_type)
        self.json_type = json_type


@dataclass(slots=True)
class _Pending:
    body: str
    sha256: bytes
    done: asyncio.Future


class GroupCommitWriter:
    """Batches concurrent inserts into shared commits; see the module docstring."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._queue: list[_Pending] = []
        self._flushers = 0

    def store(self, body: str, sha256: bytes) -> asyncio.Future[None]:
        """A future that resolves once ``body`` is committed (or was already stored), or fails with
        :class:`NotAnEvent`, :class:`BodyNotStorable` or :class:`StoreUnavailable`.

        A future, not a coroutine: a request waiting for its commit is suspended and resumed through every
        coroutine between the server and the await, so each level less is a few µs less per request.
        """
        done = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(body, sha256, done))
        if self._flushers < MAX_FLUSHERS:
            self._flushers += 1
            asyncio.create_task(self._flush_loop())
        return done

    async def _flush_loop(self) -> None:
        """Commit what is queued, group after group, on one connection held while there is any: taking it
        from the pool and setting autocommit for every group cost about half as much again as the INSERT's
        own round trip."""
        try:
            while self._queue:
                try:
                    async with self._pool.connection() as conn:  # waits the pool's timeout at most
                        # One statement in autocommit is its own transaction: INSERT+COMMIT in one round trip.
                        await conn.set_autocommit(True)
                        cur = conn.cursor()
                        try:
                            while self._queue and not conn.broken:
                                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                                await self._commit_group(cur, group)
                        finally:  # the pool is shared: its connection goes back as it came
                            if not conn.closed and not conn.broken:
                                with contextlib.suppress(psycopg.Error):
                                    await conn.set_autocommit(False)
                except (PoolTimeout, OSError, psycopg.Error) as exc:  # no usable connection for the next group
                    group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                    for item in group:
                        _settle(item, StoreUnavailable(type(exc).__name__))
        finally:
            self._flushers -= 1

    async def _commit_group(self, cur: psycopg.AsyncCursor, group: list[_Pending]) -> None:
        try:
            rejected = await self._insert(cur, group)
        except BodyNotStorable as exc:
            if len(group) == 1:
                _settle(group[0], exc)
                return
            for item in group:  # isolate the body Postgres refused; the rest still land
                try:
                    rejected = await self._insert(cur, [item])
                except Exception as exc:  # noqa: BLE001 - settled per request below
                    _settle(item, exc)
                else:
                    _settle(item, NotAnEvent(rejected[1]) if rejected else None)
            return
        except Exception as exc:  # noqa: BLE001 - every failure becomes the requests' answer
            for item in group:
                _settle(item, exc)
            return
        for i, item in enumerate(group, 1):
            _settle(item, NotAnEvent(rejected[i]) if i in rejected else None)

    @staticmethod
    async def _insert(cur: psycopg.AsyncCursor, group: list[_Pending]) -> dict[int, str]:
        """INSERT+COMMIT ``group``; returns {1-based position: JSON type} of the bodies not stored. A body
        posted twice within one group (concurrent redeliveries) goes in once and answers for both."""
        first: dict[bytes, int] = {}
        for i, item in enumerate(group, 1):
            first.setdefault(item.sha256, i)
        distinct = [group[i - 1] for i in first.values()]
        try:
            await cur.execute(INSERT_EVENTS, ([g.body for g in distinct], [g.sha256 for g in distinct]))
            rejected = dict(await cur.fetchall())
        except psycopg.Error as exc:
            # Class 22 (data exception) or 54 (e.g. 54001, nested too deeply): the body, not the database.
            # 22P02 is "not JSON" (bad syntax, NaN, …) unless it is about Unicode (a lone surrogate).
            if not isinstance(exc, psycopg.DataError) and (exc.sqlstate or "")[:2] != "54":
                raise StoreUnavailable(type(exc).__name__) from exc
            unicode = "Unicode" in (exc.diag.message_detail or "") + (exc.diag.message_primary or "")
            raise BodyNotStorable(str(exc), not_json=exc.sqlstate == "22P02" and not unicode) from exc
        except OSError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        if len(distinct) == len(group):
            return rejected
        position = {item.sha256: n for n, item in enumerate(distinct, 1)}
        return {i: rejected[position[item.sha256]] for i, item in enumerate(group, 1)
                if position[item.sha256] in rejected}


def _settle(item: _Pending, exc: BaseException | None) -> None:
    if item.done.done():
        return
    if exc is None:
        item.done.set_result(None)
    else:
        item.done.set_exception(exc)
