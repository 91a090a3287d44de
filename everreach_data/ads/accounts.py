"""Many ad accounts: their own days, and runs per group of accounts.

Meta counts an account's insights in its own time zone (``timezone_name``): the partition day
``2026-10-01`` of a Los Angeles account is Los Angeles' 1 October. A day is pulled once it has ended
there — accounts whose zone is not known yet are treated as the last place on Earth to finish a day
(UTC−12), so no day is pulled early. Scheduled runs take the accounts in groups (accounts sharing a zone
finish their day together), so one failing account fails only its group's run, and Dagster's run queue
caps how many run at once (``everreach/ads`` in ``dagster.yaml``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Where a day ends last (UTC−12; the IANA name's sign is inverted): the zone of an account not yet known.
LATEST_ZONE = "Etc/GMT+12"
#: The run tag naming a run's accounts (the UI shows it), and the one the run queue limits.
ACCOUNTS_TAG = "everreach/ad_accounts"
CONCURRENCY_TAG = "everreach/ads"

ZONES_SQL = "SELECT ad_account_id, timezone_name FROM ad_account"


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or LATEST_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(LATEST_ZONE)


def last_ended_day(zone_name: str | None, now: datetime) -> date:
    """The latest day that has ended in the zone at ``now`` (an aware datetime)."""
    return now.astimezone(zone(zone_name)).date() - timedelta(days=1)


def chunked(items: Sequence[str], size: int) -> list[list[str]]:
    size = max(1, size)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@dataclass(frozen=True)
class AccountGroup:
    """Accounts read in one run; ``zone_name`` is their shared time zone when grouped by it."""

    accounts: tuple[str, ...]
    zone_name: str | None = None

    @property
    def key(self) -> str:
        """Stable while the group's accounts are the same (part of a run key)."""
        return hashlib.sha1(",".join(sorted(self.accounts)).encode()).hexdigest()[:12]

    def tags(self) -> dict[str, str]:
        return {ACCOUNTS_TAG: ",".join(self.accounts), CONCURRENCY_TAG: "insights"}


def groups_by_zone(zones: Mapping[str, str | None], size: int) -> list[AccountGroup]:
    """The accounts grouped by time zone, each zone's cut into groups of at most ``size``."""
    by_zone: dict[str | None, list[str]] = {}
    for account, name in zones.items():
        by_zone.setdefault(name, []).append(account)
    return [AccountGroup(tuple(chunk), name)
            for name in sorted(by_zone, key=lambda n: n or "")
            for chunk in chunked(sorted(by_zone[name]), size)]


def due_days(zones: Mapping[str, str | None], now: datetime, size: int) -> list[tuple[date, AccountGroup]]:
    """Each group with the last day that has ended in its zone: what the daily schedule pulls at ``now``."""
    return [(last_ended_day(g.zone_name, now), g) for g in groups_by_zone(zones, size)]
