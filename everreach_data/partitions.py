"""The daily partitions every insights asset uses, defined once.

A partition is one UTC day. The first one is ``PARTITIONS_START_DATE``, but never earlier than Meta keeps
insights (37 months: older start dates are refused with error 3018), and the last one is yesterday — today is
still changing. Meta keeps restating recent days, which the look-back schedules re-pull.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from everreach_data.config import Settings, load_settings

#: Meta serves insights for the last 37 months only.
META_RETENTION_MONTHS = 37


def months_before(day: date, months: int) -> date:
    """The same day-of-month ``months`` earlier (clamped to the month's end)."""
    y, m = divmod(day.year * 12 + day.month - 1 - months, 12)
    month = m + 1
    next_month = date(y + (month == 12), month % 12 + 1, 1)
    return date(y, month, min(day.day, (next_month - timedelta(days=1)).day))


def earliest_insights_day(today: date) -> date:
    """The oldest day Meta still serves, with a day's margin for time zones."""
    return months_before(today, META_RETENTION_MONTHS) + timedelta(days=1)


def partitions_start(settings: Settings, today: date | None = None) -> date:
    today = today or datetime.now(UTC).date()
    return max(settings.PARTITIONS_START_DATE, earliest_insights_day(today))


daily_partitions = dg.DailyPartitionsDefinition(
    start_date=partitions_start(load_settings()).isoformat(), timezone="UTC", end_offset=0
)

#: Backfills run in batches of this many days: each run asks Meta for its whole range at once (async
#: reports, windows), so fewer, larger runs are cheaper than one run per day, and a failure costs one batch.
BACKFILL_DAYS_PER_RUN = 92
insights_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_DAYS_PER_RUN)
