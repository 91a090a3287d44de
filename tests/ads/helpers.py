"""Shared helpers for the ads tests: a sandbox on loopback, a fast client, and expected figures computed
straight from the sandbox's generator (not through our parser)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from everreach_data.meta.client import GraphClient, RetryPolicy
from everreach_data.meta.insights import DEFAULT_CONVERSION_ACTION_TYPES, InsightsOptions
from everreach_sandbox import marketing
from everreach_sandbox.core import SandboxState
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from everreach_sandbox.server import build_app, build_state
from tests.servers import serve

TOKEN = SANDBOX_DEFAULTS["FB_ADS_ACCESS_TOKEN"]
PRIMARY = marketing.PRIMARY_ACCOUNT
SECOND = marketing.SECOND_ACCOUNT
FAST_RETRY = RetryPolicy(
    max_attempts=10,
    backoff_base=0.2,
    backoff_max=2.0,
    pace_from=75.0,
    pace_max_pause=0.2,
    regain_max_wait=3.0,
)


def fast_options(**overrides) -> InsightsOptions:
    base = dict(poll_initial_seconds=0.03, poll_factor=1.5, poll_max_seconds=0.2, job_timeout_seconds=30.0)
    base.update(overrides)
    return InsightsOptions(**base)


@contextmanager
def sandbox(state: SandboxState | None = None) -> Iterator[tuple[SandboxState, str]]:
    state = state or build_state()
    with serve(build_app(state)) as base:
        yield state, base


def client(base: str, token: str = TOKEN, retry: RetryPolicy = FAST_RETRY) -> GraphClient:
    return GraphClient(f"{base}/v24.0", token, retry=retry, seed=7)


def days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


@dataclass
class Expected:
    rows: int = 0
    spend_cents: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    conversion_value_cents: int = 0


def expected(
    state: SandboxState,
    account_id: str,
    level: str,
    since: date,
    until: date,
    action_types=DEFAULT_CONVERSION_ACTION_TYPES,
) -> Expected:
    """What the sandbox generates for the account/level/days, summed from its per-ad integers."""
    acct = marketing.world(state).accounts[account_id]
    key = {"campaign": "campaign_id", "adset": "adset_id", "ad": "id"}[level]
    out = Expected()
    for day in days(since, until):
        delivering: set[str] = set()
        for ad in acct.ads:
            m = marketing.ad_day(state.seed, ad, day, state.restate_salt(day))
            if m is None:
                continue
            delivering.add(getattr(ad, key))
            out.spend_cents += m.spend_cents
            out.impressions += m.impressions
            out.clicks += m.clicks
            out.conversions += sum(v for k, v in m.actions if k in action_types)
            out.conversion_value_cents += sum(v for k, v in m.value_cents if k in action_types)
        out.rows += len(delivering)
    return out


def cents(value: Decimal) -> int:
    return int(value * 100)


def breakdown_cells(state: SandboxState, account_id: str, level: str, breakdowns: tuple[str, ...], since: date,
                    until: date) -> dict[tuple[str, date, str], marketing.Metrics]:
    """Every breakdown cell the sandbox generates: (object id, day, values joined by |) → its numbers."""
    cells = marketing.breakdown_cells(breakdowns)
    out = {}
    for _, object_id, day, m in delivering(state, account_id, level, since, until):
        key = f"{object_id}|{day}|{day}|{','.join(breakdowns)}"
        for cell, cm in marketing.split_metrics(state.seed, key, m, cells):
            out[(object_id, day, "|".join(cell))] = cm
    return out


def attribution_rows(state: SandboxState, account_id: str, level: str, since: date, until: date,
                     windows=marketing.WINDOWS, action_types=DEFAULT_CONVERSION_ACTION_TYPES) -> dict:
    """(object id, day, action type, window) → (count, value cents), straight from the sandbox."""
    out = {}
    for acct, object_id, day, m in delivering(state, account_id, level, since, until):
        counts, values = dict(m.actions), dict(m.value_cents)
        by_count, by_value = marketing.object_windows(state, acct, level, object_id, day, day)
        for t in action_types:
            if t not in counts and t not in values:
                continue
            out[(object_id, day, t, "default")] = (counts.get(t, 0), values.get(t, 0))
            for w in windows:
                out[(object_id, day, t, w)] = (by_count.get(t, {}).get(w, 0), by_value.get(t, {}).get(w, 0))
    return out


def delivering(state: SandboxState, account_id: str, level: str, since: date, until: date):
    """(account, object id, day, its numbers) for every object of the level with delivery that day."""
    acct = marketing.world(state).accounts[account_id]
    for day in days(since, until):
        for object_id in acct.by_level[level]:
            m = marketing.object_day(state, acct, level, object_id, day)
            if m is not None:
                yield acct, object_id, day, m
