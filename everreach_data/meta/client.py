"""The Graph API client: one ``httpx`` client per resource, with Meta's rules built in.

- Retries only what retrying can fix (transport failures, 5xx, the transient and throttling codes), with
  exponential backoff and full jitter; never 100, 190, 200-299 or 10.
- Paces by the usage headers: above ``pace_from`` percent it slows down in proportion, and when Meta
  says how long until access is regained it waits that out, before the limit turns into errors.
- Pages by ``paging.next`` and stops when it is absent (``cursors.after`` is present even on the last page).
- Counts calls, so assets can report how many they made: ``stats.calls`` is HTTP requests made,
  ``stats.graph_requests`` the Graph calls they carried (a batch of n counts n, as Meta counts it).
- Batches (:meth:`GraphClient.batch`): up to 50 calls in one ``POST /`` (Meta's batch requests), each
  answered on its own — a typed error per failed item, usage read from every item's headers, and items
  that failed transiently (or were not run: ``null``) sent again in the next batch, with backoff.

:class:`GraphClient` is synchronous (Dagster ops); :class:`AsyncGraphClient` is the same policy for
high-throughput senders. Surface modules (insights, messaging, capi) build requests on top of these.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from everreach_data.meta.errors import (
    ErrorKind,
    GraphAPIError,
    GraphTransportError,
    error_for,
    error_from_response,
)
from everreach_data.meta.usage import Usage, parse_usage

JSON = dict[str, Any]


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    backoff_base: float = 0.5     # seconds; attempt n waits up to base * 2**n (full jitter)
    backoff_max: float = 60.0
    pace_from: float = 75.0       # usage percent at which to start slowing down
    pace_max_pause: float = 10.0  # pause at 100 % usage when Meta gives no regain estimate
    regain_max_wait: float = 15 * 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.backoff_max, self.backoff_base * (2 ** attempt)))

    def pace(self, usage: Usage) -> float:
        """Seconds to pause before the next call, given the last usage reading."""
        if usage.regain_seconds > 0:
            return min(usage.regain_seconds, self.regain_max_wait)
        if usage.percent <= self.pace_from:
            return 0.0
        share = min(1.0, (usage.percent - self.pace_from) / max(1.0, 100.0 - self.pace_from))
        return share * self.pace_max_pause


@dataclass
class CallStats:
    calls: int = 0            # HTTP requests made (attempts included)
    retries: int = 0
    throttled: int = 0        # throttled answers: whole requests and batch items
    paused_seconds: float = 0.0
    graph_requests: int = 0   # Graph calls carried: 1 per plain request, n per batch of n
    batches: int = 0          # HTTP requests that were batches
    last_usage: Usage = field(default_factory=Usage)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, *, retried: bool = False, throttled: bool = False, graph_requests: int = 1,
               batch: bool = False) -> None:
        with self._lock:
            self.calls += 1
            self.retries += int(retried)
            self.throttled += int(throttled)
            self.graph_requests += graph_requests
            self.batches += int(batch)


#: Meta's limit of calls in one batch request.
MAX_BATCH = 50
#: What one attempt of a request came to: Meta's response, or no response at all.
Outcome = httpx.Response | httpx.TransportError
#: One step of :meth:`_Policy.batch_steps`: ("post", the calls to send) or ("pause", seconds).
BatchStep = tuple[str, Any]


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return jsonlib.dumps(value, separators=(",", ":"))
    return str(value)


@dataclass(frozen=True)
class BatchCall:
    """One Graph call inside a batch: ``path`` relative to the client's version (``act_1/insights``);
    ``params`` go in the query of a GET/DELETE and in the form-encoded ``body`` of a POST."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None

    def item(self) -> JSON:
        encoded = urlencode({k: _form_value(v) for k, v in (self.params or {}).items()})
        method = self.method.upper()
        item: JSON = {"method": method, "relative_url": self.path.lstrip("/")}
        if method == "POST":
            if encoded:
                item["body"] = encoded
        elif encoded:
            item["relative_url"] += ("&" if "?" in item["relative_url"] else "?") + encoded
        return item


@dataclass
class BatchResult:
    """One item's answer: ``body`` on success, else ``error`` (typed as for a plain request; a ``null``
    answer — Meta did not run the item — is a transient :class:`GraphTransportError`)."""

    call: BatchCall
    status: int | None
    body: JSON | None = None
    error: GraphAPIError | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Policy:
    """What both clients share: request shaping, response checking, and the retry decision."""

    def __init__(self, base_url: str, access_token: str | None, *, timeout: float, retry: RetryPolicy | None,
                 seed: int | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = access_token
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.retry = retry or RetryPolicy()
        self.stats = CallStats()
        self._rng = random.Random(seed)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def check(self, response: httpx.Response) -> JSON:
        self.stats.last_usage = parse_usage(response.headers)
        if response.is_success:
            try:
                body = response.json()
            except ValueError as exc:
                raise error_for(f"non-JSON success body from {response.request.url.path}",
                                http_status=response.status_code) from exc
            return body if isinstance(body, dict) else {"data": body}
        raise error_from_response(response.status_code, response.content, dict(response.headers))

    def wait_after(self, error: GraphAPIError, attempt: int) -> float | None:
        """Seconds to wait before retrying ``error`` on ``attempt`` (0-based), or None to give up."""
        if not error.retryable or attempt + 1 >= self.retry.max_attempts:
            return None
        wait = self.retry.backoff(attempt, self._rng)
        if error.kind is ErrorKind.THROTTLED:
            wait = max(wait, self.retry.pace(self.stats.last_usage), self.retry.backoff_base)
        return wait

    def pause_before_call(self) -> float:
        return self.retry.pace(self.stats.last_usage)

    def attempts(self, *, carried: int = 0, retry: bool = True) -> Generator[float, Outcome, JSON]:
        """The retry loop without I/O, so the sync and async clients share it: yields the seconds to pause
        before each attempt (send back its response, or the transport error it raised); returns the body,
        or raises the error once retrying is over. ``carried`` > 0 marks a batch of that many calls."""
        attempt = 0
        pause = self.pause_before_call()
        weight = {"graph_requests": carried or 1, "batch": carried > 0}
        while True:
            outcome = yield pause
            try:
                if isinstance(outcome, httpx.TransportError):
                    raise GraphTransportError.from_exception(outcome)
                body = self.check(outcome)
            except GraphAPIError as error:
                self.stats.record(retried=attempt > 0, throttled=error.kind is ErrorKind.THROTTLED, **weight)
                wait = self.wait_after(error, attempt) if retry else None
                if wait is None:
                    raise
                pause = wait  # the retry's wait already includes the usage pacing: do not wait it twice
                attempt += 1
                continue
            self.stats.record(retried=attempt > 0, **weight)
            return body

    # ── batches ──

    @staticmethod
    def batch_form(calls: Sequence[BatchCall]) -> dict[str, str]:
        items = jsonlib.dumps([c.item() for c in calls], separators=(",", ":"))
        return {"batch": items, "include_headers": "true"}

    def batch_results(self, calls: Sequence[BatchCall], body: JSON) -> list[BatchResult]:
        """Meta's answer array read item by item; usage is the worst reading of the batch and its items."""
        answers = body.get("data")
        if not isinstance(answers, list) or len(answers) != len(calls):
            raise error_for(f"a batch of {len(calls)} calls was answered with {str(answers)[:200]!r}")
        results: list[BatchResult] = []
        usages = [self.stats.last_usage]
        for call, answer in zip(calls, answers, strict=True):
            result = _batch_result(call, answer)
            if result.headers:
                usages.append(parse_usage(result.headers))
            if result.error is not None and result.error.kind is ErrorKind.THROTTLED:
                with self.stats._lock:
                    self.stats.throttled += 1
            results.append(result)
        self.stats.last_usage = Usage(
            percent=max(u.percent for u in usages), regain_seconds=max(u.regain_seconds for u in usages)
        )
        return results

    def batch_retry_wait(self, results: Sequence[BatchResult], attempt: int) -> float | None:
        """How long to wait before sending the retryable failures again (None: none left to retry)."""
        waits = [self.wait_after(r.error, attempt) for r in results if r.error and r.error.retryable]
        return None if not waits or None in waits else max(w for w in waits if w is not None)

    def batch_steps(self, calls: Sequence[BatchCall], retry: bool) -> Generator[BatchStep, JSON | None,
                                                                                   list[BatchResult]]:
        """The batch loop without I/O, so the sync and async clients share it: yields ``("post", calls)``
        for each HTTP request (send back its body) and ``("pause", seconds)`` between retries; returns the
        results in the order of ``calls``."""
        results: list[BatchResult | None] = [None] * len(calls)
        pending = list(range(len(calls)))
        attempt = 0
        while pending:
            for start in range(0, len(pending), MAX_BATCH):
                chunk = pending[start : start + MAX_BATCH]
                sent = [calls[i] for i in chunk]
                body = yield ("post", sent)
                for i, result in zip(chunk, self.batch_results(sent, body), strict=True):
                    results[i] = result
            failed = [r for i in pending if (r := results[i]) is not None]
            wait = self.batch_retry_wait(failed, attempt) if retry else None
            if wait is None:
                break
            pending = [i for i in pending if (r := results[i]) is not None and r.error and r.error.retryable]
            yield ("pause", max(0.0, wait - self.pause_before_call()))  # _request adds the pacing
            attempt += 1
        return [r for r in results if r is not None]


def _batch_result(call: BatchCall, answer: Any) -> BatchResult:
    if answer is None:
        return BatchResult(call, None, error=GraphTransportError("batch item not run (null answer)"))
    if not isinstance(answer, dict):
        return BatchResult(call, None, error=error_for(f"malformed batch answer: {str(answer)[:200]!r}"))
    status = int(answer.get("code") or 0)
    headers = {
        str(h.get("name", "")).lower(): str(h.get("value", ""))
        for h in answer.get("headers") or ()
        if isinstance(h, dict)
    }
    raw = answer.get("body")
    text = raw if isinstance(raw, str) else jsonlib.dumps(raw)
    if 200 <= status < 300:
        try:
            body = jsonlib.loads(text) if text else {}
        except ValueError:
            return BatchResult(call, status, error=error_for(f"non-JSON batch item body: {text[:200]!r}",
                                                             http_status=status), headers=headers)
        return BatchResult(call, status, body if isinstance(body, dict) else {"data": body}, headers=headers)
    error = error_from_response(status, text.encode(), headers)
    return BatchResult(call, status, error=error, headers=headers)


def _next_page(body: JSON) -> str | None:
    paging = body.get("paging")
    return paging.get("next") if isinstance(paging, dict) else None


class GraphClient:
    """Synchronous Graph API client. Use as a context manager or call :meth:`close`."""

    def __init__(self, base_url: str, access_token: str | None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, seed: int | None = None,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None) -> None:
        self._policy = _Policy(base_url, access_token, timeout=timeout, retry=retry, seed=seed)
        self._sleep = sleep
        self._http = httpx.Client(timeout=self._policy.timeout, headers=self._policy.headers(),
                                  transport=transport)

    @property
    def stats(self) -> CallStats:
        return self._policy.stats

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.paused_seconds += seconds
            self._sleep(seconds)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                data: Mapping[str, Any] | None = None, json: Any = None) -> JSON:
        return self._request(method, path, params=params, data=data, json=json)

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 data: Mapping[str, Any] | None = None, json: Any = None, carried: int = 0) -> JSON:
        """One HTTP request with retries; ``carried`` > 0 marks a batch of that many Graph calls."""
        steps = self._policy.attempts(carried=carried)
        pause = next(steps)
        while True:
            self._pause(pause)
            try:
                outcome: Outcome = self._http.request(
                    method, self._policy.url(path), params=params, data=data, json=json)
            except httpx.TransportError as exc:
                outcome = exc
            try:
                pause = steps.send(outcome)
            except StopIteration as done:
                return done.value

    def get(self, path: str, **params: Any) -> JSON:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, params: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
             json: Any = None) -> JSON:
        return self.request("POST", path, params=params, data=data, json=json)

    def batch(self, calls: Sequence[BatchCall], *, retry: bool = True) -> list[BatchResult]:
        """Every call answered, in order, in as few HTTP requests as Meta allows (50 calls each). A failed
        item does not fail the others: its result carries the typed error. With ``retry``, items whose error
        is transient or throttling (or that were not run) are sent again, together, after the backoff and
        the usage pacing; what still fails after ``max_attempts`` is returned as failed. A failure of the
        batch request itself (transport, a bad token for the whole batch) raises as :meth:`request` does."""
        steps = self._policy.batch_steps(calls, retry)
        try:
            step, arg = next(steps)
            while True:
                if step == "post":
                    reply = self._request("POST", "", data=self._policy.batch_form(arg), carried=len(arg))
                else:
                    self._pause(arg)
                    reply = None
                step, arg = steps.send(reply)
        except StopIteration as finished:
            return finished.value

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[JSON]:
        """Every item of ``data`` across pages, following ``paging.next`` until it is absent."""
        body = self.request("GET", path, params=params)
        while True:
            yield from body.get("data") or []
            nxt = _next_page(body)
            if not nxt:
                return
            body = self.request("GET", nxt)


class AsyncGraphClient:
    """The same policy as :class:`GraphClient`, for asyncio callers (the outbound sender)."""

    def __init__(self, base_url: str, access_token: str | None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, seed: int | None = None,
                 max_connections: int = 100, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._policy = _Policy(base_url, access_token, timeout=timeout, retry=retry, seed=seed)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(timeout=self._policy.timeout, headers=self._policy.headers(),
                                       limits=limits, transport=transport)

    @property
    def stats(self) -> CallStats:
        return self._policy.stats

    async def __aenter__(self) -> AsyncGraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      data: Mapping[str, Any] | None = None, json: Any = None, retry: bool = True) -> JSON:
        """One call; with ``retry=False`` the first error is raised (callers that keep their own queue)."""
        return await self._request(method, path, params=params, data=data, json=json, retry=retry)

    async def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                       data: Mapping[str, Any] | None = None, json: Any = None, retry: bool = True,
                       carried: int = 0) -> JSON:
        steps = self._policy.attempts(carried=carried, retry=retry)
        pause = next(steps)
        while True:
            if pause > 0:
                self.stats.paused_seconds += pause
                await asyncio.sleep(pause)
            try:
                outcome: Outcome = await self._http.request(
                    method, self._policy.url(path), params=params, data=data, json=json)
            except httpx.TransportError as exc:
                outcome = exc
            try:
                pause = steps.send(outcome)
            except StopIteration as done:
                return done.value

    async def get(self, path: str, **params: Any) -> JSON:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, *, json: Any = None, data: Mapping[str, Any] | None = None,
                   retry: bool = True) -> JSON:
        return await self.request("POST", path, json=json, data=data, retry=retry)

    async def batch(self, calls: Sequence[BatchCall], *, retry: bool = True) -> list[BatchResult]:
        """:meth:`GraphClient.batch` for asyncio callers."""
        steps = self._policy.batch_steps(calls, retry)
        try:
            step, arg = next(steps)
            while True:
                if step == "post":
                    reply = await self._request("POST", "", data=self._policy.batch_form(arg), carried=len(arg))
                else:
                    if arg > 0:
                        self.stats.paused_seconds += arg
                        await asyncio.sleep(arg)
                    reply = None
                step, arg = steps.send(reply)
        except StopIteration as finished:
            return finished.value

    async def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> AsyncIterator[JSON]:
        body = await self.request("GET", path, params=params)
        while True:
            for item in body.get("data") or []:
                yield item
            nxt = _next_page(body)
            if not nxt:
                return
            body = await self.request("GET", nxt)
