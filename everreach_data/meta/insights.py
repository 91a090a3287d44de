"""The Marketing API's insights, read the way Meta recommends: async report runs, not one call per day.

For each (ad account, level, date chunk of up to :data:`CHUNK_DAYS`) one ``POST /act_{id}/insights`` starts
a report run with ``time_increment=1`` (a row per object per day); runs are polled with backoff
(``GET /{report_run_id}``) and each finished run is paged (``GET /{report_run_id}/insights``, stopping when
``paging.next`` is absent). All of it travels in Graph batch requests, as Airbyte polls its jobs: each round
is one batch (up to 50 calls per HTTP request) that starts the queued runs, polls the runs that are due and
fetches the next page of every finished run. A request Meta calls too large ("Please reduce the amount of
data", 1/100 with subcode 1487534) is split — the date range halved first, then the campaign ids, then the
metric fields (the parts' rows merged by day and object id before they are parsed) — a run Meta fails ("Job
Failed"/"Job Skipped") is restarted once and then split, and a page that is too large is fetched again at
half the page size. Throttling is the client's (usage headers of every batch item,
``estimated_time_to_regain_access``, backoff with jitter; throttled items are sent again). Permanent errors
(expired token, missing permission, a bad field) stop the read with :class:`InsightsError`, whose message
says what to fix.

The same machinery reads every report: a :class:`ReportShape` adds ``breakdowns`` (a row per object, day
and breakdown values), ``action_breakdowns`` and ``action_attribution_windows`` (a key per window on each
action) to the level's fields. Meta's rules for them are kept here: the windows it still serves
(:data:`ATTRIBUTION_WINDOWS`; 7d_view and 28d_view are refused, Meta stopped returning them on 12 January
2026), and reach, which Meta withholds from breakdown queries starting more than
:data:`REACH_BREAKDOWN_MONTHS` months back — such rows have no reach, and a breakdown range crossing that
line is cut there so its recent part keeps it.

Rows are parsed here and nowhere else: Meta sends every metric as a string; money and rates become
``Decimal`` and counts ``int``. ``conversions``/``conversion_value`` are summed from ``actions`` /
``action_values`` over a list of action types (:data:`DEFAULT_CONVERSION_ACTION_TYPES`), and
:func:`attribution_values` reads them per window.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from everreach_data.meta.client import BatchCall, GraphClient
from everreach_data.meta.errors import ErrorKind, GraphAPIError

LEVELS = ("campaign", "adset", "ad")
#: Meta serves insights for the last 37 months only (older start dates are refused with error 3018).
RETENTION_MONTHS = 37
#: Since 10 June 2025 Meta returns no reach for breakdown queries starting more than 13 months back.
REACH_BREAKDOWN_MONTHS = 13
#: The attribution windows Meta serves (``action_attribution_windows``), and those it no longer does.
ATTRIBUTION_WINDOWS = ("1d_click", "7d_click", "28d_click", "1d_view", "1d_engaged_view")
REMOVED_WINDOWS = {"7d_view": "12 January 2026", "28d_view": "12 January 2026"}
#: An action's ``value``: since June 2025 the ad set's own attribution setting, as in Ads Manager.
DEFAULT_WINDOW = "default"
ACCOUNT_PREFIX = "act_"


def ad_account_id(raw: str) -> str:
    """An ad account id as the Marketing API wants it (``act_…``), whether or not it came with the prefix."""
    raw = raw.strip()
    return raw if raw.startswith(ACCOUNT_PREFIX) else f"{ACCOUNT_PREFIX}{raw}"


def months_before(day: date, months: int) -> date:
    """The same day-of-month ``months`` earlier (clamped to the month's end)."""
    y, m = divmod(day.year * 12 + day.month - 1 - months, 12)
    month = m + 1
    next_month = date(y + (month == 12), month % 12 + 1, 1)
    return date(y, month, min(day.day, (next_month - timedelta(days=1)).day))


def earliest_insights_day(today: date) -> date:
    """The oldest day Meta still serves, with a day's margin for time zones."""
    return months_before(today, RETENTION_MONTHS) + timedelta(days=1)

#: Conversions counted by default: the leaf action types for purchases and leads, each counted once.
#: - ``offsite_conversion.fb_pixel_purchase``: purchases on the website (Pixel / Conversions API);
#: - ``onsite_conversion.purchase``: purchases in Facebook/Instagram shops;
#: - ``offsite_conversion.fb_pixel_lead``: leads on the website;
#: - ``onsite_conversion.lead_grouped``: instant-form leads (every lead form type, grouped once).
#: Aggregates such as ``omni_purchase``, ``purchase`` and ``lead`` already contain these, so adding one of
#: them to its parts would count the same conversion twice (:func:`check_action_types` refuses that).
DEFAULT_CONVERSION_ACTION_TYPES: tuple[str, ...] = (
    "offsite_conversion.fb_pixel_purchase",
    "onsite_conversion.purchase",
    "offsite_conversion.fb_pixel_lead",
    "onsite_conversion.lead_grouped",
)

#: Aggregate action types and the leaf types they include (Meta's action-type hierarchy).
AGGREGATE_ACTION_TYPES: dict[str, frozenset[str]] = {
    "omni_purchase": frozenset(
        {
            "purchase",
            "offsite_conversion.fb_pixel_purchase",
            "onsite_conversion.purchase",
            "app_custom_event.fb_mobile_purchase",
            "offline_conversion.purchase",
            "onsite_web_purchase",
            "onsite_web_app_purchase",
            "web_in_store_purchase",
        }
    ),
    "purchase": frozenset(
        {
            "offsite_conversion.fb_pixel_purchase",
            "onsite_web_purchase",
            "onsite_web_app_purchase",
            "web_in_store_purchase",
        }
    ),
    "lead": frozenset(
        {
            "offsite_conversion.fb_pixel_lead",
            "onsite_conversion.lead_grouped",
            "leadgen_grouped",
            "onsite_conversion.lead",
        }
    ),
    "omni_lead": frozenset(
        {
            "lead",
            "offsite_conversion.fb_pixel_lead",
            "onsite_conversion.lead_grouped",
            "leadgen_grouped",
            "onsite_conversion.lead",
        }
    ),
    "onsite_conversion.lead_grouped": frozenset({"leadgen_grouped", "onsite_conversion.lead"}),
}

def check_windows(windows: Iterable[str]) -> tuple[str, ...]:
    """The attribution windows asked for, refused (saying why) when Meta no longer serves or never had one."""
    chosen = tuple(dict.fromkeys(w.strip() for w in windows if w.strip() and w.strip() != DEFAULT_WINDOW))
    for w in chosen:
        if w in REMOVED_WINDOWS:
            raise ValueError(
                f"attribution window {w!r} is no longer served: Meta stopped returning the 7-day and 28-day "
                f"view windows on {REMOVED_WINDOWS[w]}; choose from {', '.join(ATTRIBUTION_WINDOWS)} "
                f"(and {DEFAULT_WINDOW}, the ad set's own setting)"
            )
        if w not in ATTRIBUTION_WINDOWS:
            raise ValueError(f"unknown attribution window {w!r}: choose from {', '.join(ATTRIBUTION_WINDOWS)}")
    return chosen


#: Fields asked for at each level (ids and names of the level and its parents; no action breakdowns).
METRIC_FIELDS = (
    "account_currency",
    "objective",
    "spend",
    "impressions",
    "clicks",
    "reach",
    "frequency",
    "cpc",
    "cpm",
    "ctr",
    "actions",
    "action_values",
)
LEVEL_IDS: dict[str, tuple[str, ...]] = {
    "campaign": ("campaign_id", "campaign_name"),
    "adset": ("campaign_id", "campaign_name", "adset_id", "adset_name"),
    "ad": ("campaign_id", "campaign_name", "adset_id", "adset_name", "ad_id", "ad_name"),
}
LEVEL_FIELDS: dict[str, tuple[str, ...]] = {level: (*ids, *METRIC_FIELDS) for level, ids in LEVEL_IDS.items()}
ID_FIELDS = frozenset(f for ids in LEVEL_IDS.values() for f in ids)


@dataclass(frozen=True)
class ReportShape:
    """What a report asks for besides the level's ids and names: its metrics, ``breakdowns``,
    ``action_breakdowns`` and ``action_attribution_windows`` (``ad_performance`` has none of the three)."""

    metrics: tuple[str, ...] = METRIC_FIELDS
    breakdowns: tuple[str, ...] = ()
    action_breakdowns: tuple[str, ...] = ()
    windows: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"breakdowns {','.join(self.breakdowns)}"] if self.breakdowns else []
        if self.action_breakdowns:
            parts.append(f"action breakdowns {','.join(self.action_breakdowns)}")
        if self.windows:
            parts.append(f"windows {','.join(self.windows)}")
        return "".join(f", {p}" for p in parts)


PLAIN = ReportShape()
#: Every status, so paused, archived and deleted objects' past delivery is not silently dropped.
ALL_STATUSES = (
    "ACTIVE",
    "PAUSED",
    "DELETED",
    "ARCHIVED",
    "IN_PROCESS",
    "WITH_ISSUES",
    "CAMPAIGN_PAUSED",
    "ADSET_PAUSED",
    "PENDING_REVIEW",
    "DISAPPROVED",
    "PREAPPROVED",
    "PENDING_BILLING_INFO",
)
DONE, FAILED = "Job Completed", ("Job Failed", "Job Skipped")


class InsightsError(RuntimeError):
    """A read that cannot succeed by retrying; the message says what to fix (and keeps Meta's codes)."""

    def __init__(self, message: str, cause: GraphAPIError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def check_action_types(types: Iterable[str]) -> tuple[str, ...]:
    """The list, unchanged, unless it would double count: an aggregate together with a type it contains."""
    chosen = tuple(dict.fromkeys(t.strip() for t in types if t.strip()))
    for agg, parts in AGGREGATE_ACTION_TYPES.items():
        overlap = sorted(parts & set(chosen)) if agg in chosen else []
        if overlap:
            raise ValueError(
                f"conversion action types {agg!r} and {', '.join(map(repr, overlap))} overlap: "
                f"{agg} already includes them, so the same conversions would be counted twice"
            )
    return chosen


# ───────────────────────────── rows ─────────────────────────────


@dataclass(frozen=True, slots=True)
class InsightRow:
    """One object's numbers for one day, typed. ``object_id`` is the id at ``level``."""

    account_id: str
    level: str
    object_id: str
    date: date
    campaign_id: str
    campaign_name: str | None
    adset_id: str | None
    adset_name: str | None
    ad_id: str | None
    ad_name: str | None
    spend: Decimal
    impressions: int
    clicks: int
    reach: int | None
    frequency: Decimal | None
    cpc: Decimal | None
    cpm: Decimal | None
    ctr: Decimal | None
    conversions: Decimal
    conversion_value: Decimal
    currency: str | None
    objective: str | None
    actions: list[dict[str, Any]]
    action_values: list[dict[str, Any]]
    breakdowns: tuple[tuple[str, str], ...] = ()  # (breakdown, value) in the report's order
    attribution_setting: str | None = None


def _decimal(raw: Mapping[str, Any], key: str) -> Decimal | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"insights field {key} is not a number: {value!r}") from exc
    if not number.is_finite():
        raise ValueError(f"insights field {key} is not a finite number: {value!r}")
    return number


def _int(raw: Mapping[str, Any], key: str) -> int | None:
    number = _decimal(raw, key)
    return None if number is None else int(number)


def sum_actions(items: Any, action_types: Sequence[str]) -> Decimal:
    """The sum of ``value`` over ``[{action_type, value}]`` items whose type is in ``action_types``."""
    wanted = set(action_types)
    total = Decimal(0)
    for item in items or ():
        if isinstance(item, Mapping) and item.get("action_type") in wanted:
            total += _decimal(item, "value") or 0
    return total


def parse_row(
    raw: Mapping[str, Any],
    *,
    account_id: str,
    level: str,
    action_types: Sequence[str] = DEFAULT_CONVERSION_ACTION_TYPES,
    breakdowns: Sequence[str] = (),
) -> InsightRow:
    """One insights row (``time_increment=1``) as Meta sends it, typed; ``ValueError`` names a bad field."""
    id_key = f"{level}_id"
    if not raw.get(id_key) or not raw.get("campaign_id"):
        raise ValueError(f"insights row at level {level} has no {id_key}/campaign_id: {sorted(raw)}")
    start, stop = raw.get("date_start"), raw.get("date_stop")
    if not start or start != stop:
        raise ValueError(f"insights row spans {start}..{stop}: expected one day (time_increment=1)")
    actions = list(raw.get("actions") or [])
    values = list(raw.get("action_values") or [])
    return InsightRow(
        account_id=account_id,
        level=level,
        object_id=str(raw[id_key]),
        date=date.fromisoformat(start),
        campaign_id=str(raw["campaign_id"]),
        campaign_name=raw.get("campaign_name"),
        adset_id=raw.get("adset_id"),
        adset_name=raw.get("adset_name"),
        ad_id=raw.get("ad_id"),
        ad_name=raw.get("ad_name"),
        spend=_decimal(raw, "spend") or Decimal(0),
        impressions=_int(raw, "impressions") or 0,
        clicks=_int(raw, "clicks") or 0,
        reach=_int(raw, "reach"),
        frequency=_decimal(raw, "frequency"),
        cpc=_decimal(raw, "cpc"),
        cpm=_decimal(raw, "cpm"),
        ctr=_decimal(raw, "ctr"),
        conversions=sum_actions(actions, action_types),
        conversion_value=sum_actions(values, action_types),
        currency=raw.get("account_currency"),
        objective=raw.get("objective"),
        actions=actions,
        action_values=values,
        breakdowns=tuple((b, str(raw.get(b) if raw.get(b) is not None else "")) for b in breakdowns),
        attribution_setting=raw.get("attribution_setting"),
    )


def attribution_values(
    row: InsightRow, action_types: Sequence[str], windows: Sequence[str]
) -> Iterator[tuple[str, str, Decimal, Decimal]]:
    """``(action_type, window, conversions, value)`` for each action type in ``action_types`` the row has,
    for each window asked for and :data:`DEFAULT_WINDOW` (the item's ``value``). A window Meta leaves out
    of an item counted nothing in it."""
    counts = {i.get("action_type"): i for i in row.actions if isinstance(i, Mapping)}
    values = {i.get("action_type"): i for i in row.action_values if isinstance(i, Mapping)}
    for action_type in action_types:
        if action_type not in counts and action_type not in values:
            continue
        count, value = counts.get(action_type, {}), values.get(action_type, {})
        for window, key in ((DEFAULT_WINDOW, "value"), *((w, w) for w in windows)):
            yield (action_type, window, _decimal(count, key) or Decimal(0), _decimal(value, key) or Decimal(0))


# ───────────────────────────── report runs ─────────────────────────────


@dataclass(frozen=True)
class ReportRequest:
    """What one async report run asks for. ``campaign_ids`` narrows it after a split by ids; ``fields``
    (the level's ids and names plus some of its metrics) after a split by fields, when it is one part of
    the rows of merge group ``part_of``."""

    account_id: str
    level: str
    since: date
    until: date
    campaign_ids: tuple[str, ...] | None = None
    attempt: int = 0
    fields: tuple[str, ...] | None = None
    part_of: int | None = None
    shape: ReportShape = PLAIN

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def asked_fields(self) -> tuple[str, ...]:
        return self.fields or (*LEVEL_IDS[self.level], *self.shape.metrics)

    def describe(self) -> str:
        ids = f", {len(self.campaign_ids)} campaigns" if self.campaign_ids else ""
        fields = f", fields {','.join(self.fields)}" if self.fields else ""
        return f"{self.account_id} level {self.level} {self.since}..{self.until}{self.shape.describe()}{ids}{fields}"


@dataclass
class _Merge:
    """The parts of a request split by fields: their rows, merged by (day, object id), are parsed once the
    last part has been read. ``pending`` counts the parts not yet read to the end."""

    pending: int
    rows: dict[tuple[Any, Any], dict[str, Any]] = field(default_factory=dict)


#: One report run covers up to this many days: as many as one backfill run of the asset (its
#: BackfillPolicy), so a 90-day backfill is one report run per level and account. Meta's only limit is
#: the data per run ("reduce the amount of data"), which splits the range when it bites.
CHUNK_DAYS = 92


@dataclass
class InsightsOptions:
    """How to read. ``chunk_days`` caps one report run's date range (Meta may still ask for less);
    ``max_in_flight`` caps report runs started and not yet finished (Airbyte allows 100; one batch is 50)."""

    chunk_days: int = CHUNK_DAYS
    page_size: int = 5000
    max_in_flight: int = 50
    poll_initial_seconds: float = 1.0
    poll_factor: float = 1.5
    poll_max_seconds: float = 30.0
    job_timeout_seconds: float = 3600.0
    action_types: tuple[str, ...] = DEFAULT_CONVERSION_ACTION_TYPES


@dataclass
class _Job:
    request: ReportRequest
    run_id: str
    started: float
    next_poll: float
    delay: float


@dataclass
class _Reading:
    """A finished run being paged: the next page's cursor and size."""

    job: _Job
    limit: int
    after: str | None = None


@dataclass
class ReadStats:
    report_runs: int = 0
    polls: int = 0
    pages: int = 0
    splits: int = 0
    failed_runs: int = 0  # runs Meta reported "Job Failed"/"Job Skipped" (retried once, then split)
    rows: dict[str, int] = field(default_factory=dict)  # level → rows read
    rows_without_reach: int = 0  # rows Meta sent no reach for although it was asked for


def reach_cutoff(today: date) -> date:
    """The first day a breakdown query may start on and still get reach from Meta."""
    return months_before(today, REACH_BREAKDOWN_MONTHS)


def chunks(since: date, until: date, days: int) -> list[tuple[date, date]]:
    """``[since, until]`` cut into consecutive ranges of at most ``days`` days."""
    out, start = [], since
    while start <= until:
        end = min(until, start + timedelta(days=max(1, days) - 1))
        out.append((start, end))
        start = end + timedelta(days=1)
    return out


def read_failed(error: GraphAPIError, request: ReportRequest) -> GraphAPIError | InsightsError:
    """What a failed call of a read raises: an outage (transient or throttled: the client's retries ran out)
    as it is, so the run can try again later; anything else as :func:`permanent_error`."""
    if error.retryable:
        return error
    failure = permanent_error(error, request)
    failure.__cause__ = error
    return failure


def permanent_error(error: GraphAPIError, request: ReportRequest) -> InsightsError:
    """The clear message for an error retrying will not fix."""
    where = request.describe()
    if error.kind is ErrorKind.AUTH:
        msg = (
            f"Meta rejected the ads access token (FB_ADS_ACCESS_TOKEN) while reading {where}: {error}. "
            "Generate a new system-user token with ads_read and set FB_ADS_ACCESS_TOKEN."
        )
    elif error.kind is ErrorKind.PERMISSION:
        msg = (
            f"The ads access token may not read {request.account_id}: {error}. Give the system user "
            "ads_read on this ad account (Business Settings → Ad accounts) or remove it from "
            "FB_ADS_ACCOUNT_ID."
        )
    elif error.kind is ErrorKind.INVALID:
        msg = (
            f"Meta refused the insights request for {where}: {error}. Check the account id and the fields "
            "asked for."
        )
    else:
        msg = f"Reading insights for {where} failed: {error}"
    return InsightsError(msg, error)


class InsightsReader:
    """Reads ``time_increment=1`` insights for accounts × levels × a date range (a :class:`GraphClient`)."""

    def __init__(
        self,
        client: GraphClient,
        options: InsightsOptions | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.client = client
        self.options = options or InsightsOptions()
        self.options.action_types = check_action_types(self.options.action_types)
        self.stats = ReadStats()
        self._sleep, self._clock, self._today = sleep, clock, today
        self._campaigns: dict[str, tuple[str, ...]] = {}
        self._merges: dict[int, _Merge] = {}
        self._merge_ids = itertools.count()

    # ── planning and splitting ──

    def plan(
        self, accounts: Sequence[str], levels: Sequence[str], since: date, until: date, shape: ReportShape = PLAIN
    ) -> list[ReportRequest]:
        bad = [lv for lv in levels if lv not in LEVELS]
        if bad:
            raise ValueError(f"unknown insights level(s) {bad}: choose from {', '.join(LEVELS)}")
        spans = [(since, until)]
        cutoff = reach_cutoff(self._today())
        if shape.breakdowns and "reach" in shape.metrics and since < cutoff <= until:
            spans = [(since, cutoff - timedelta(days=1)), (cutoff, until)]  # the recent part keeps its reach
        return [
            ReportRequest(acct, level, a, b, shape=shape)
            for acct in accounts
            for level in levels
            for start, end in spans
            for a, b in chunks(start, end, self.options.chunk_days)
        ]

    def campaign_ids(self, account_id: str) -> tuple[str, ...]:
        """Every campaign of the account (any status), for splitting a request by ids."""
        if account_id not in self._campaigns:
            params = {
                "fields": "id",
                "limit": 500,
                "filtering": json.dumps(
                    [
                        {
                            "field": "campaign.effective_status",
                            "operator": "IN",
                            "value": list(ALL_STATUSES[:4]),
                        }
                    ]
                ),
            }
            self._campaigns[account_id] = tuple(
                str(c["id"]) for c in self.client.paginate(f"{account_id}/campaigns", params)
            )
        return self._campaigns[account_id]

    def split(self, request: ReportRequest, error: GraphAPIError | str) -> list[ReportRequest]:
        """Two smaller requests: half the days, else half the campaigns, else half the metric fields
        (InsightsError when one day of one campaign is too much even for one metric)."""
        self.stats.splits += 1
        if request.days > 1:
            mid = request.since + timedelta(days=request.days // 2 - 1)
            return [
                replace(request, until=mid, attempt=0),
                replace(request, since=mid + timedelta(days=1), attempt=0),
            ]
        ids = (
            request.campaign_ids
            if request.campaign_ids is not None
            else self.campaign_ids(request.account_id)
        )
        if len(ids) > 1:
            half = len(ids) // 2
            return [
                replace(request, campaign_ids=ids[:half], attempt=0),
                replace(request, campaign_ids=ids[half:], attempt=0),
            ]
        metrics = [f for f in request.asked_fields if f not in ID_FIELDS]
        if len(metrics) > 1:
            # Airbyte's last resort too: the same rows in two runs, each with the ids and names and half
            # the metrics, merged by (day, object id, breakdown values) before parsing.
            keys = tuple(f for f in request.asked_fields if f in ID_FIELDS)
            if request.part_of is None:
                group = next(self._merge_ids)
                self._merges[group] = _Merge(pending=2)
            else:  # one part of a group becomes two
                group = request.part_of
                self._merges[group].pending += 1
            half = len(metrics) // 2
            return [
                replace(request, fields=keys + tuple(metrics[:half]), part_of=group, attempt=0),
                replace(request, fields=keys + tuple(metrics[half:]), part_of=group, attempt=0),
            ]
        raise InsightsError(
            f"Meta says one day of one campaign is too much data for {request.describe()} "
            f"({error}), even one metric at a time; ask for a coarser level.",
            error if isinstance(error, GraphAPIError) else None,
        )

    def _merged(
        self, request: ReportRequest, rows: list[Mapping[str, Any]], last_page: bool
    ) -> list[Mapping[str, Any]]:
        """A field-split part's page: kept until every part of its group is read, then all its rows."""
        assert request.part_of is not None
        merge = self._merges[request.part_of]
        id_key = f"{request.level}_id"
        breakdowns = request.shape.breakdowns
        for raw in rows:
            key = (raw.get("date_start"), raw.get(id_key), *(raw.get(b) for b in breakdowns))
            merge.rows.setdefault(key, {}).update(raw)
        if not last_page:
            return []
        merge.pending -= 1
        if merge.pending:
            return []
        return list(self._merges.pop(request.part_of).rows.values())

    # ── the Graph calls ──

    def _params(self, request: ReportRequest) -> dict[str, Any]:
        filtering: list[dict[str, Any]] = [
            {"field": f"{request.level}.effective_status", "operator": "IN", "value": list(ALL_STATUSES)}
        ]
        if request.campaign_ids is not None:
            filtering.append({"field": "campaign.id", "operator": "IN", "value": list(request.campaign_ids)})
        params = {
            "level": request.level,
            "fields": ",".join(request.asked_fields),
            "time_range": json.dumps(
                {"since": request.since.isoformat(), "until": request.until.isoformat()}
            ),
            "time_increment": "1",
            "filtering": json.dumps(filtering),
            "use_unified_attribution_setting": "true",
        }
        shape = request.shape
        for name, values in (("breakdowns", shape.breakdowns), ("action_breakdowns", shape.action_breakdowns),
                             ("action_attribution_windows", shape.windows)):
            if values:
                params[name] = json.dumps(list(values))
        return params

    def _start_call(self, request: ReportRequest) -> BatchCall:
        return BatchCall("POST", f"{request.account_id}/insights", self._params(request))

    def _started(self, request: ReportRequest, body: Mapping[str, Any]) -> _Job:
        run_id = body.get("report_run_id") or body.get("id")
        if not run_id:
            raise InsightsError(f"Meta started no report run for {request.describe()}: {body}")
        self.stats.report_runs += 1
        now = self._clock()
        return _Job(
            request,
            str(run_id),
            now,
            now + self.options.poll_initial_seconds,
            self.options.poll_initial_seconds,
        )

    @staticmethod
    def _poll_call(job: _Job) -> BatchCall:
        return BatchCall("GET", job.run_id, {"fields": "async_status,async_percent_completion"})

    @staticmethod
    def _page_call(reading: _Reading) -> BatchCall:
        params: dict[str, Any] = {"limit": reading.limit}
        if reading.after:
            params["after"] = reading.after
        return BatchCall("GET", f"{reading.job.run_id}/insights", params)

    def _parse(self, job: _Job, raws: Iterable[Mapping[str, Any]]) -> Iterator[InsightRow]:
        shape = job.request.shape
        for raw in raws:
            row = parse_row(
                raw,
                account_id=job.request.account_id,
                level=job.request.level,
                action_types=self.options.action_types,
                breakdowns=shape.breakdowns,
            )
            self.stats.rows[row.level] = self.stats.rows.get(row.level, 0) + 1
            if row.reach is None and "reach" in shape.metrics:
                self.stats.rows_without_reach += 1
            yield row

    # ── the loop ──

    def read(
        self, accounts: Sequence[str], levels: Sequence[str], since: date, until: date, shape: ReportShape = PLAIN
    ) -> Iterator[InsightRow]:
        """Every row for the accounts × levels × days, as report runs finish (not in date order).

        Each round is one batch (:meth:`GraphClient.batch`, 50 calls per HTTP request): start the queued
        report runs, poll the runs that are due, and fetch the next page of every finished run. A round
        with nothing but polls to send first sleeps until the earliest is due, and takes along every run
        due within half its delay, so runs started together are polled together."""
        queue: deque[ReportRequest] = deque(self.plan(accounts, levels, since, until, shape))
        in_flight: list[_Job] = []
        reading: list[_Reading] = []
        opts = self.options
        while queue or in_flight or reading:
            starts = [queue.popleft() for _ in range(min(len(queue), opts.max_in_flight - len(in_flight)))]
            if not starts and not reading:
                wait = min(j.next_poll for j in in_flight) - self._clock()
                if wait > 0:
                    self._sleep(wait)
                now = self._clock()
                due = [j for j in in_flight if j.next_poll <= now + j.delay / 2]
            else:
                now = self._clock()
                due = [j for j in in_flight if j.next_poll <= now]
            calls = (
                [self._start_call(r) for r in starts]
                + [self._poll_call(j) for j in due]
                + [self._page_call(r) for r in reading]
            )
            try:
                results = iter(self.client.batch(calls))
            except GraphAPIError as exc:  # the batch itself refused (a bad token) or never answered
                first = (starts or [j.request for j in due] or [r.job.request for r in reading])[0]
                raise read_failed(exc, first)  # noqa: B904 - read_failed keeps exc as the cause
            for request, result in zip(starts, results, strict=False):
                if result.error is None:
                    in_flight.append(self._started(request, result.body or {}))
                elif result.error.kind is ErrorKind.TOO_MUCH_DATA:
                    queue.extendleft(reversed(self.split(request, result.error)))
                else:
                    raise read_failed(result.error, request)
            for job, result in zip(due, results, strict=False):
                if result.error is not None:
                    raise read_failed(result.error, job.request)
                self.stats.polls += 1
                self._polled(job, result.body or {}, in_flight, reading, queue)
            for current, result in zip(list(reading), results, strict=False):
                if result.error is not None:
                    if result.error.kind is ErrorKind.TOO_MUCH_DATA and current.limit > 1:
                        current.limit = max(1, current.limit // 2)  # a page too large: ask again, smaller
                        continue
                    raise read_failed(result.error, current.job.request)
                body = result.body or {}
                self.stats.pages += 1
                paging = body.get("paging") or {}
                current.after = (paging.get("cursors") or {}).get("after")
                last_page = not paging.get("next") or not current.after
                if last_page:
                    reading.remove(current)
                rows = body.get("data") or []
                if current.job.request.part_of is not None:
                    rows = self._merged(current.job.request, rows, last_page)
                yield from self._parse(current.job, rows)

    def _polled(
        self,
        job: _Job,
        status: Mapping[str, Any],
        in_flight: list[_Job],
        reading: list[_Reading],
        queue: deque[ReportRequest],
    ) -> None:
        """Act on one run's status: read it, retry or split it, give up on it, or poll it again later."""
        opts = self.options
        state = status.get("async_status")
        if state == DONE:
            in_flight.remove(job)
            reading.append(_Reading(job, opts.page_size))
        elif state in FAILED:
            in_flight.remove(job)
            self.stats.failed_runs += 1
            # Meta fails too-large jobs as often as it refuses them up front: retry once, then split.
            if job.request.attempt == 0:
                queue.appendleft(replace(job.request, attempt=1))
            else:
                queue.extendleft(reversed(self.split(job.request, f"report run {job.run_id} {state}")))
        elif self._clock() - job.started > opts.job_timeout_seconds:
            raise InsightsError(
                f"report run {job.run_id} for {job.request.describe()} did not finish in "
                f"{opts.job_timeout_seconds:.0f}s (last status {state!r}, "
                f"{status.get('async_percent_completion')}%)"
            )
        else:
            job.delay = min(opts.poll_max_seconds, job.delay * opts.poll_factor)
            job.next_poll = self._clock() + job.delay
