"""Pacing sends below Meta's limits, so throttling is avoided rather than retried.

- :class:`Pacer`: evenly spaced send slots per sender (a WhatsApp number, a Page or IG account), aimed at
  ``headroom`` × Meta's limit, because Meta counts arrivals in a sliding second and bursts or network jitter
  at exactly the limit would draw 130429; a throttle answer slows the sender down a little (AIMD).
- :class:`PairBucket`: WhatsApp's per-recipient pair rate (``burst`` messages, then one per ``interval``).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque


class Pacer:
    """Evenly spaced send slots at ``rate``/s with no credit for idle time, plus a sliding one-second gate checked
    at the moment of sending: tasks that wake late together (a busy event loop) cannot fire more than
    ``rate`` in any second. A throttle answer from Meta slows the channel down a little (AIMD-style)."""

    CATCH_UP = 0.1   # seconds of slots a late scheduler may still use (the gate bounds the burst)

    def __init__(self, rate: float) -> None:
        self.base = self.rate = rate
        self.floor = rate * 0.8
        self.interval = 1.0 / rate
        self.next_slot: float | None = None     # no credit from before the run started
        self.fired: deque[float] = deque()

    def ready(self, now: float, horizon: float) -> bool:
        return self.next_slot is None or max(self.next_slot, now) < now + horizon

    def take(self, now: float) -> float:
        if self.next_slot is None or self.next_slot < now - self.CATCH_UP:
            slot = now                 # idle or just started: no credit
        else:
            slot = self.next_slot      # on time, or a late scheduler using slots missed in the last CATCH_UP s
        self.next_slot = slot + self.interval
        return slot

    def _set(self, rate: float) -> None:
        self.rate = min(self.base, max(self.floor, rate))
        self.interval = 1.0 / self.rate

    def throttled(self, now: float, pause: float = 0.25) -> None:
        """Multiplicative decrease on a throttle answer, plus a short pause."""
        self._set(self.rate * 0.99)
        self.next_slot = max(self.next_slot or now, now + pause)

    def succeeded(self) -> None:
        """Additive increase back towards the configured rate."""
        if self.rate < self.base:
            self._set(self.rate + self.base * 0.0005)

    async def gate(self) -> None:
        """At most ``rate`` sends in any second, and at most a quarter of that (plus one) in any quarter
        second, so what reaches Meta stays smooth even when late tasks wake together."""
        cap = max(1, int(self.rate))
        quarter = cap // 4 + 1
        while True:
            now = time.monotonic()
            while self.fired and self.fired[0] <= now - 1.0:
                self.fired.popleft()
            recent = len(self.fired) - bisect.bisect_right(self.fired, now - 0.25)
            if len(self.fired) < cap and recent < quarter:
                self.fired.append(now)
                return
            oldest_recent = self.fired[len(self.fired) - recent] if recent >= quarter else now
            wait = min(self.fired[0] + 1.0 if len(self.fired) >= cap else now + 1.0,
                       oldest_recent + 0.25 if recent >= quarter else now + 1.0) - now
            await asyncio.sleep(max(0.001, wait))


class PairBucket:
    """WhatsApp's per-recipient pair rate: ``burst`` messages, then one per ``interval`` seconds."""

    def __init__(self, burst: int, interval: float, now: float) -> None:
        self.burst, self.interval = float(burst), interval
        self.tokens, self.last = float(burst), now

    def wait(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.last) / self.interval)
        self.last = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) * self.interval

    def take(self) -> None:
        self.tokens -= 1.0

    def empty(self) -> None:
        self.tokens = min(self.tokens, 0.0)
