"""The daily partitions every insights asset uses, defined once.

A partition is one UTC day. The first one is ``PARTITIONS_START_DATE``, but never earlier than Meta keeps
insights (:data:`~everreach_data.meta.insights.RETENTION_MONTHS`), and the last one is yesterday — today is
still changing. Meta keeps restating recent days, which the look-back schedules re-pull.
"""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from everreach_data.config import Settings, definition_settings
from everreach_data.meta.insights import CHUNK_DAYS, earliest_insights_day


def lookback_range(today: date, first_back: int, days: int, earliest: date) -> tuple[date, date] | None:
    """The ``days`` days ending ``first_back`` days before ``today`` (inclusive partition keys), clipped to the
    first partition (``earliest``); None when nothing is left."""
    end = today - timedelta(days=first_back)
    start = max(earliest, end - timedelta(days=days - 1))
    return (start, end) if start <= end else None


def partitions_start(settings: Settings, today: date | None = None) -> date:
    today = today or datetime.now(UTC).date()
    return max(settings.PARTITIONS_START_DATE, earliest_insights_day(today))


daily_partitions = dg.DailyPartitionsDefinition(
    start_date=partitions_start(definition_settings()).isoformat(), timezone="UTC", end_offset=0
)

#: Backfills run in batches of this many days, one report run per account and level each: fewer, larger
#: runs are cheaper than one run per day (async reports, windows), and a failure costs one batch.
DAYS_PER_RUN = CHUNK_DAYS
insights_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=DAYS_PER_RUN)
# Dagster calls an asset's backfill_policy beta and warns for each asset in every process that loads the
# definitions (code server, daemon, every run): a screenful at each start. Batched backfills are deliberate.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
