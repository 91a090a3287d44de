"""Sandbox surface: the Marketing API's insights, as Meta's wire format has them.

Deterministic synthetic ad accounts (campaign → ad set → ad) whose daily numbers come from the seed, the
ad id, the day and that day's restatement version, so tests can compute the expected figures from
:func:`ad_day` without going through our parser. Endpoints:

- ``GET /act_{id}`` and ``GET /act_{id}/campaigns`` (paged);
- ``GET /act_{id}/insights`` (synchronous) and ``POST /act_{id}/insights`` (async → ``{"report_run_id"}``);
- ``GET /{report_run_id}`` (``async_status`` / ``async_percent_completion`` move with time while polled)
  and ``GET /{report_run_id}/insights`` (pages; ``paging.next`` only when there are more).

Meta's limits: too much data for one request — too many rows, or (``max_report_cells``) rows × fields (sync:
code 1 "Please reduce the amount of data…"; async: 100/1487534) — the 37-month window (3018), and
per-account throttling with ``x-ad-account-usage`` / ``x-business-use-case-usage`` rising with calls and
17/2446079, 613/1487742 or 80004 past the limit.

Throttling and restatement are the framework's (``charge_ads_call``, ``state.restate`` /
``POST /_sandbox/restate``: a restated day's numbers change). Control routes (``/_sandbox/marketing/…``):
``accounts`` (add an account of any size, e.g. the ~200 campaign / ~1000 ad benchmark account),
``limits`` (:class:`InsightLimits`; ``max_job_rows`` fails every larger run) and ``fail-jobs`` (the next n
report runs end ``"Job Failed"`` with Meta's ``error_code``/``error_message`` fields).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from everreach_sandbox.core import (
    GraphError,
    GraphRequest,
    Node,
    SandboxState,
    Surface,
    charge_ads_call,
    paged,
    utc_today,
)
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

surface = Surface("marketing")

PRIMARY_ACCOUNT = SANDBOX_DEFAULTS["FB_ADS_ACCOUNT_ID"]
SECOND_ACCOUNT = "act_2208460119935571"
BUSINESS_ID = "1876231925981034"
REDUCE_DATA = "Please reduce the amount of data you're asking for, then retry your request"

# Action types, in the order Meta lists them. Aggregates overlap their parts on purpose (a parser that
# adds omni_purchase to offsite_conversion.fb_pixel_purchase double counts, as in real accounts).
ACTION_TYPES = (
    "link_click",
    "landing_page_view",
    "post_engagement",
    "page_engagement",
    "offsite_conversion.fb_pixel_purchase",
    "onsite_conversion.purchase",
    "purchase",
    "omni_purchase",
    "offsite_conversion.fb_pixel_lead",
    "onsite_conversion.lead_grouped",
    "lead",
)
VALUE_TYPES = (
    "offsite_conversion.fb_pixel_purchase",
    "onsite_conversion.purchase",
    "purchase",
    "omni_purchase",
)
OBJECTIVES = ("OUTCOME_SALES", "OUTCOME_LEADS", "OUTCOME_TRAFFIC", "OUTCOME_ENGAGEMENT")
LEVELS = ("account", "campaign", "adset", "ad")
INSIGHT_FIELDS = frozenset(
    {
        "account_id",
        "account_name",
        "account_currency",
        "campaign_id",
        "campaign_name",
        "adset_id",
        "adset_name",
        "ad_id",
        "ad_name",
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
        "date_start",
        "date_stop",
    }
)
CAMPAIGN_FIELDS = frozenset({"id", "name", "objective", "status", "effective_status", "account_id"})
_WORDS = (
    "Spring",
    "Summer",
    "Autumn",
    "Winter",
    "Evergreen",
    "Launch",
    "Retarget",
    "Lookalike",
    "Brand",
    "Promo",
    "Always-on",
    "Holiday",
    "Café",
    "Flash",
)


# ───────────────────────────── the world ─────────────────────────────


@dataclass(frozen=True)
class Ad:
    id: str
    name: str
    adset_id: str
    campaign_id: str
    scale: int  # size of the audience: multiplies impressions
    objective: str


@dataclass
class Account:
    id: str  # act_…
    name: str
    currency: str
    campaigns: dict[str, dict[str, str]] = field(default_factory=dict)  # id → {name, objective, status}
    adsets: dict[str, dict[str, str]] = field(default_factory=dict)  # id → {name, campaign_id}
    ads: list[Ad] = field(default_factory=list)
    by_level: dict[str, dict[str, list[Ad]]] = field(default_factory=dict)  # level → object id → its ads

    def index(self) -> None:
        self.by_level = {"ad": {}, "adset": {}, "campaign": {}, "account": {self.id: list(self.ads)}}
        for ad in self.ads:
            self.by_level["ad"][ad.id] = [ad]
            self.by_level["adset"].setdefault(ad.adset_id, []).append(ad)
            self.by_level["campaign"].setdefault(ad.campaign_id, []).append(ad)


@dataclass
class InsightLimits:
    """The Marketing API's data limits (call-rate limits are the framework's ``state.limits``)."""

    max_report_rows: int = 500_000  # async: 100/1487534 above this many rows in one report run
    max_report_cells: int = 0  # async: 100/1487534 above this many rows × fields (0 = no such limit)
    max_sync_rows: int = 20_000  # sync GET: code 1 "reduce the amount of data" above this
    max_page_size: int = 5000  # larger `limit`s are silently capped, as Meta does
    job_seconds: float = 0.2  # how long an async job runs (plus job_seconds_per_row per row)
    job_seconds_per_row: float = 2e-6
    max_job_rows: int = 0  # async: a run with more rows ends "Job Failed" (0 = never), as too-large jobs do


@dataclass
class World:
    accounts: dict[str, Account] = field(default_factory=dict)
    limits: InsightLimits = field(default_factory=InsightLimits)
    next_run_id: int = 6_023_920_149_050
    fail_next_jobs: int = (
        0  # the next N report runs started end "Job Failed" (POST /_sandbox/marketing/fail-jobs)
    )
    statuses_served: list[tuple[str, str, int]] = field(default_factory=list)  # (run id, status, percent)


def world(state: SandboxState) -> World:
    with state.lock:
        return state.extra.setdefault("marketing", World())


def add_account(
    state: SandboxState,
    account_id: str,
    *,
    campaigns: int = 3,
    adsets_per_campaign: int = 2,
    ads_per_adset: int = 2,
    currency: str = "USD",
    name: str | None = None,
) -> Account:
    """Create (or recreate) an ad account with a fixed-shape hierarchy, ids and names from the seed."""
    if not account_id.startswith("act_"):
        account_id = f"act_{account_id}"
    rng = random.Random(f"{state.seed}|{account_id}")
    used: set[str] = set()

    def new_id() -> str:
        while (i := str(rng.randrange(23_850_000_000_000_000, 23_860_000_000_000_000))) in used:
            pass
        used.add(i)
        return i

    acct = Account(account_id, name or f"EverReach {account_id[4:8]}", currency)
    for c in range(campaigns):
        objective = OBJECTIVES[c % len(OBJECTIVES)]
        cid = new_id()
        cname = f'{rng.choice(_WORDS)} "{objective.split("_")[1].title()}" – C{c + 1:03d}'
        acct.campaigns[cid] = {
            "name": cname,
            "objective": objective,
            "status": "ACTIVE" if c % 5 else "PAUSED",
        }
        for s in range(adsets_per_campaign):
            sid = new_id()
            acct.adsets[sid] = {"name": f"{cname} / set {s + 1}", "campaign_id": cid}
            for a in range(ads_per_adset):
                acct.ads.append(
                    Ad(new_id(), f"Ad {c + 1}.{s + 1}.{a + 1}", sid, cid, rng.randint(1, 4), objective)
                )
    acct.index()
    with state.lock:
        world(state).accounts[account_id] = acct
        state.add(Node(account_id, "ad_account", {"currency": currency}))
        for cid in acct.campaigns:
            state.add(Node(cid, "campaign", {"account_id": account_id}))
    return acct


@surface.populator
def populate(state: SandboxState) -> None:
    add_account(
        state,
        PRIMARY_ACCOUNT,
        campaigns=3,
        adsets_per_campaign=2,
        ads_per_adset=2,
        currency="USD",
        name="EverReach Ads",
    )
    add_account(
        state,
        SECOND_ACCOUNT,
        campaigns=2,
        adsets_per_campaign=1,
        ads_per_adset=2,
        currency="EUR",
        name="EverReach EU",
    )


# ───────────────────────────── the numbers ─────────────────────────────


@dataclass(frozen=True)
class Metrics:
    """One object's numbers for one day, in integers (money in cents) so sums are exact."""

    impressions: int
    reach: int
    clicks: int
    spend_cents: int
    actions: tuple[tuple[str, int], ...]
    value_cents: tuple[tuple[str, int], ...]

    def __add__(self, other: Metrics) -> Metrics:
        def merge(a, b):
            out = dict(a)
            for k, v in b:
                out[k] = out.get(k, 0) + v
            return tuple((k, out[k]) for k in ACTION_TYPES if k in out)

        return Metrics(
            self.impressions + other.impressions,
            self.reach + other.reach,
            self.clicks + other.clicks,
            self.spend_cents + other.spend_cents,
            merge(self.actions, other.actions),
            merge(self.value_cents, other.value_cents),
        )


@lru_cache(maxsize=400_000)
def ad_day(seed: int, ad: Ad, day: date, version: int = 0) -> Metrics | None:
    """An ad's numbers for a day (None: no delivery that day). Pure, so tests can recompute them."""
    rng = random.Random(f"{seed}|{ad.id}|{day.isoformat()}")
    if rng.random() < 0.12:
        return None
    impressions = rng.randint(150, 2500) * ad.scale
    reach = max(1, int(impressions / rng.uniform(1.05, 1.7)))
    clicks = int(impressions * rng.uniform(0.004, 0.03))
    spend = int(impressions * rng.uniform(0.35, 1.3))  # CPM $3.50–$13.00, in cents
    link = int(clicks * rng.uniform(0.6, 0.95))
    engagement = clicks + rng.randint(0, 40)
    pixel_purchase = onsite_purchase = pixel_lead = onsite_lead = 0
    if ad.objective == "OUTCOME_SALES":
        pixel_purchase, onsite_purchase = int(clicks * rng.uniform(0.01, 0.08)), rng.randint(0, 2)
    elif ad.objective == "OUTCOME_LEADS":
        pixel_lead, onsite_lead = int(clicks * rng.uniform(0.02, 0.1)), rng.randint(0, 5)
    else:
        pixel_purchase = rng.randint(0, 1)
    if version:  # a restatement: late-attributed conversions and a corrected spend
        late = random.Random(f"{seed}|{ad.id}|{day.isoformat()}|v{version}")
        pixel_purchase += late.randint(1, 3)
        pixel_lead += late.randint(0, 2)
        spend += late.randint(1, 500)
    pixel_value = sum(rng.randint(1500, 12000) for _ in range(pixel_purchase))
    onsite_value = sum(rng.randint(1500, 12000) for _ in range(onsite_purchase))
    counts = {
        "link_click": link,
        "landing_page_view": int(link * 0.8),
        "post_engagement": engagement,
        "page_engagement": engagement + rng.randint(0, 5),
        "offsite_conversion.fb_pixel_purchase": pixel_purchase,
        "onsite_conversion.purchase": onsite_purchase,
        "purchase": pixel_purchase,
        "omni_purchase": pixel_purchase + onsite_purchase,
        "offsite_conversion.fb_pixel_lead": pixel_lead,
        "onsite_conversion.lead_grouped": onsite_lead,
        "lead": pixel_lead + onsite_lead,
    }
    values = {
        "offsite_conversion.fb_pixel_purchase": pixel_value,
        "onsite_conversion.purchase": onsite_value,
        "purchase": pixel_value,
        "omni_purchase": pixel_value + onsite_value,
    }
    return Metrics(
        impressions,
        reach,
        clicks,
        spend,
        tuple((k, v) for k, v in counts.items() if v),
        tuple((k, v) for k, v in values.items() if v),
    )


def object_day(state: SandboxState, acct: Account, level: str, object_id: str, day: date) -> Metrics | None:
    """The numbers of one object at ``level`` for one day: its ads' numbers summed (reach de-duplicated)."""
    version = state.restate_salt(day)
    total: Metrics | None = None
    for ad in _ads_of(acct, level, object_id):
        m = ad_day(state.seed, ad, day, version)
        if m is not None:
            total = m if total is None else total + m
    if total is not None and level != "ad":
        total = Metrics(
            total.impressions,
            max(1, int(total.reach * 0.93)),
            total.clicks,
            total.spend_cents,
            total.actions,
            total.value_cents,
        )
    return total


def _ads_of(acct: Account, level: str, object_id: str) -> list[Ad]:
    return acct.by_level[level].get(object_id, [])


def _objects(acct: Account, level: str, filters: dict[str, set[str]]) -> list[str]:
    ads = [
        a
        for a in acct.ads
        if all(
            getattr(a, {"campaign.id": "campaign_id", "adset.id": "adset_id", "ad.id": "id"}[f]) in ids
            for f, ids in filters.items()
        )
    ]
    if level == "account":
        return [acct.id] if ads else []
    key = {"campaign": "campaign_id", "adset": "adset_id", "ad": "id"}[level]
    return sorted({getattr(a, key) for a in ads})


def _money(cents: int) -> str:
    return str(Decimal(cents).scaleb(-2))


def _ratio(num: Decimal | int, den: int) -> str:
    return str((Decimal(num) / Decimal(den)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def format_row(
    acct: Account, level: str, object_id: str, since: date, until: date, m: Metrics, fields: list[str]
) -> dict[str, Any]:
    """One insights row as Meta sends it: every metric a string, actions as [{action_type, value}]."""
    ad = acct.by_level["ad"][object_id][0] if level == "ad" else None
    adset_id = ad.adset_id if ad else (object_id if level == "adset" else None)
    campaign_id = (
        ad.campaign_id
        if ad
        else acct.adsets[object_id]["campaign_id"]
        if level == "adset"
        else object_id
        if level == "campaign"
        else None
    )
    spend = Decimal(m.spend_cents).scaleb(-2)
    full: dict[str, Any] = {
        "account_id": acct.id[4:],
        "account_name": acct.name,
        "account_currency": acct.currency,
        "spend": _money(m.spend_cents),
        "impressions": str(m.impressions),
        "clicks": str(m.clicks),
        "reach": str(m.reach),
        "frequency": _ratio(m.impressions, m.reach),
        "cpm": _ratio(spend * 1000, m.impressions),
        "ctr": _ratio(Decimal(m.clicks) * 100, m.impressions),
    }
    if m.clicks:
        full["cpc"] = _ratio(spend, m.clicks)
    if m.actions:
        full["actions"] = [{"action_type": k, "value": str(v)} for k, v in m.actions]
    if m.value_cents:
        full["action_values"] = [{"action_type": k, "value": _money(v)} for k, v in m.value_cents]
    if campaign_id:
        camp = acct.campaigns[campaign_id]
        full.update(campaign_id=campaign_id, campaign_name=camp["name"], objective=camp["objective"])
    if adset_id:
        full.update(adset_id=adset_id, adset_name=acct.adsets[adset_id]["name"])
    if ad:
        full.update(ad_id=ad.id, ad_name=ad.name)
    row = {f: full[f] for f in fields if f in full}
    row.update(date_start=since.isoformat(), date_stop=until.isoformat())
    return row


# ───────────────────────────── requests ─────────────────────────────


@dataclass
class Report:
    """A resolved insights request: which (object, day range) rows it yields, and how to format them."""

    acct: Account
    level: str
    fields: list[str]
    keys: list[tuple[str, date, date]]  # (object id, date_start, date_stop) with delivery

    def rows(self, state: SandboxState, start: int, stop: int) -> list[dict[str, Any]]:
        out = []
        for object_id, since, until in self.keys[start:stop]:
            m = _range_metrics(state, self.acct, self.level, object_id, since, until)
            if m is not None:
                out.append(format_row(self.acct, self.level, object_id, since, until, m, self.fields))
        return out


def _range_metrics(state, acct, level, object_id, since, until) -> Metrics | None:
    total = None
    day = since
    while day <= until:
        m = object_day(state, acct, level, object_id, day)
        if m is not None:
            total = m if total is None else total + m
        day += timedelta(days=1)
    return total


def _json_param(req: GraphRequest, name: str) -> Any:
    value = req.param(name)
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise GraphError(
            100, f"(#100) param {name} must be a JSON-encoded value", type="OAuthException"
        ) from exc


def _months_back(today: date, months: int) -> date:
    y, m = divmod(today.year * 12 + today.month - 1 - months, 12)
    return date(y, m + 1, min(today.day, 28))


def resolve_report(req: GraphRequest) -> Report:
    """Check an insights request as Meta does and list the rows it asks for."""
    state = req.state
    acct = world(state).accounts[req.node.id]
    level = req.param("level", "account")
    if level not in LEVELS:
        raise GraphError(100, f"(#100) level must be one of the following values: {', '.join(LEVELS)}")
    raw_fields = req.param("fields") or "spend,impressions"
    fields = [
        f.strip()
        for f in (raw_fields if isinstance(raw_fields, list) else str(raw_fields).split(","))
        if f.strip()
    ]
    for f in fields:
        if f not in INSIGHT_FIELDS:
            raise GraphError(
                100,
                f"(#100) {f} is not valid for fields param. please check "
                "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/ "
                "for all valid values",
            )
    today = utc_today()
    time_range = _json_param(req, "time_range")
    try:
        if time_range is None:
            since, until = today - timedelta(days=30), today - timedelta(days=1)
        else:
            since, until = date.fromisoformat(time_range["since"]), date.fromisoformat(time_range["until"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphError(
            100, "(#100) param time_range must be an object with since and until dates (YYYY-MM-DD)"
        ) from exc
    if until < since:
        raise GraphError(100, "(#100) time_range: since must be on or before until")
    if since < _months_back(today, 37):
        raise GraphError(
            3018, "(#3018) The start date of the time range cannot be beyond 37 months from the current date"
        )
    increment = str(req.param("time_increment", "all_days"))
    if increment not in ("1", "all_days"):
        raise GraphError(100, "(#100) the sandbox supports time_increment 1 and all_days")
    filters: dict[str, set[str]] = {}
    for flt in _json_param(req, "filtering") or []:
        fname, op, value = flt.get("field"), flt.get("operator"), flt.get("value")
        if fname in ("campaign.effective_status", "adset.effective_status", "ad.effective_status"):
            continue  # every object is included
        if fname not in ("campaign.id", "adset.id", "ad.id") or op not in ("IN", "EQUAL"):
            raise GraphError(100, f"(#100) Filtering field {fname} with operation {op} is not supported")
        filters[fname] = {str(v) for v in (value if isinstance(value, list) else [value])}
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    keys: list[tuple[str, date, date]] = []
    objects = _objects(acct, level, filters)
    if increment == "1":
        for day in days:
            keys += [(o, day, day) for o in objects if object_day(state, acct, level, o, day) is not None]
    else:
        keys = [(o, since, until) for o in objects if _range_metrics(state, acct, level, o, since, until)]
    return Report(acct, level, fields, keys)


def _check_access(req: GraphRequest) -> None:
    if not {"ads_read", "ads_management"} & set(req.token.scopes):
        raise GraphError(
            200,
            "(#200) Ad account owner has NOT grant ads_management or ads_read permission",
            type="OAuthException",
        )


class LazyRows:
    """A report's rows as a sequence that formats only the slice asked for (``paged`` slices it)."""

    def __init__(self, state: SandboxState, report: Report) -> None:
        self.state, self.report = state, report

    def __len__(self) -> int:
        return len(self.report.keys)

    def __getitem__(self, s: slice) -> list[dict[str, Any]]:
        start, stop, _ = s.indices(len(self))
        return self.report.rows(self.state, start, stop)


def page(req: GraphRequest, items: Any) -> dict[str, Any]:
    return paged(req, items, default_limit=25, max_limit=world(req.state).limits.max_page_size)


@surface.route("GET", "ad_account")
async def get_account(req: GraphRequest) -> dict[str, Any]:
    _check_access(req)
    acct = world(req.state).accounts[req.node.id]
    charge_ads_call(req, acct.id)
    return {
        "id": acct.id,
        "account_id": acct.id[4:],
        "name": acct.name,
        "currency": acct.currency,
        "timezone_name": "Etc/UTC",
    }


@surface.route("GET", "ad_account", "campaigns")
async def list_campaigns(req: GraphRequest) -> dict[str, Any]:
    _check_access(req)
    acct = world(req.state).accounts[req.node.id]
    charge_ads_call(req, acct.id)
    fields = [f.strip() for f in str(req.param("fields") or "id").split(",") if f.strip()]
    bad = [f for f in fields if f not in CAMPAIGN_FIELDS]
    if bad:
        raise GraphError(100, f"(#100) Tried accessing nonexisting field ({bad[0]}) on node type (Campaign)")
    items = []
    for cid, c in acct.campaigns.items():
        full = {
            "id": cid,
            "name": c["name"],
            "objective": c["objective"],
            "status": c["status"],
            "effective_status": c["status"],
            "account_id": acct.id[4:],
        }
        items.append({f: full[f] for f in fields})
    return page(req, items)


@surface.route("GET", "ad_account", "insights")
async def sync_insights(req: GraphRequest) -> dict[str, Any]:
    _check_access(req)
    charge_ads_call(req, req.node.id, use_case="ads_insights")
    report = resolve_report(req)
    if len(report.keys) > world(req.state).limits.max_sync_rows:
        raise GraphError(1, REDUCE_DATA, type="OAuthException", status=500)
    return page(req, LazyRows(req.state, report))


@surface.route("POST", "ad_account", "insights")
async def start_report(req: GraphRequest) -> dict[str, Any]:
    _check_access(req)
    charge_ads_call(req, req.node.id, use_case="ads_insights")
    report = resolve_report(req)
    w = world(req.state)
    cells = len(report.keys) * len(report.fields)
    if len(report.keys) > w.limits.max_report_rows or 0 < w.limits.max_report_cells < cells:
        raise GraphError(100, REDUCE_DATA, subcode=1487534, type="OAuthException")
    with req.state.lock:
        run_id = str(w.next_run_id)
        w.next_run_id += 1
        duration = w.limits.job_seconds + w.limits.job_seconds_per_row * len(report.keys)
        fails = w.fail_next_jobs > 0 or 0 < w.limits.max_job_rows < len(report.keys)
        w.fail_next_jobs = max(0, w.fail_next_jobs - 1)
        req.state.add(
            Node(
                run_id,
                "ad_report_run",
                {
                    "report": report,
                    "created": time.monotonic(),
                    "time_ref": int(time.time()),
                    "duration": duration,
                    "fails": fails,
                },
            )
        )
    req.state.count("marketing.report_runs")
    return {"report_run_id": run_id}


def _status(node: Node) -> tuple[str, int]:
    elapsed = time.monotonic() - node.data["created"]
    duration = node.data["duration"]
    if elapsed >= duration:
        return ("Job Failed", 0) if node.data.get("fails") else ("Job Completed", 100)
    if elapsed < duration * 0.25:
        return "Job Not Started", 0
    return "Job Running", max(1, min(99, int(100 * elapsed / duration)))


@surface.route("GET", "ad_report_run")
async def report_status(req: GraphRequest) -> dict[str, Any]:
    report: Report = req.node.data["report"]
    charge_ads_call(req, report.acct.id, use_case="ads_insights")
    status, percent = _status(req.node)
    with req.state.lock:
        world(req.state).statuses_served.append((req.node.id, status, percent))
    days = [k[1] for k in report.keys] + [k[2] for k in report.keys]
    body = {
        "id": req.node.id,
        "account_id": report.acct.id[4:],
        "time_ref": req.node.data["time_ref"],
        "async_status": status,
        "async_percent_completion": percent,
        "date_start": min(days).isoformat() if days else None,
        "date_stop": max(days).isoformat() if days else None,
    }
    if status == "Job Completed":
        body["time_completed"] = req.node.data["time_ref"] + max(1, int(req.node.data["duration"]))
    elif status == "Job Failed":
        body.update(
            error_code=2,
            error_message="An unexpected error has occurred. Please retry your request later.",
            error_user_title="Report failed",
            error_user_msg="The report could not be completed. Try again, or ask for less data.",
        )
    return body


@surface.route("GET", "ad_report_run", "insights")
async def report_rows(req: GraphRequest) -> dict[str, Any]:
    report: Report = req.node.data["report"]
    charge_ads_call(req, report.acct.id, use_case="ads_insights")
    if _status(req.node)[0] != "Job Completed":
        raise GraphError(
            100, "(#100) The report is not ready yet: poll the report run until async_status is Job Completed"
        )
    return page(req, LazyRows(req.state, report))


# ───────────────────────────── control routes ─────────────────────────────


def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox


async def control_accounts(request: Request) -> JSONResponse:
    """POST {"account_id", "campaigns", "adsets_per_campaign", "ads_per_adset", "currency", "name"}."""
    body = await request.json()
    acct = add_account(
        _state(request),
        str(body["account_id"]),
        campaigns=int(body.get("campaigns", 3)),
        adsets_per_campaign=int(body.get("adsets_per_campaign", 2)),
        ads_per_adset=int(body.get("ads_per_adset", 2)),
        currency=body.get("currency", "USD"),
        name=body.get("name"),
    )
    return JSONResponse(
        {
            "account_id": acct.id,
            "campaigns": len(acct.campaigns),
            "adsets": len(acct.adsets),
            "ads": len(acct.ads),
        }
    )


async def control_fail_jobs(request: Request) -> JSONResponse:
    """POST {"times": n}: the next n report runs started end "Job Failed" (Meta's transient job failure)."""
    body = await request.json() if await request.body() else {}
    times = body.get("times", 1)
    if not isinstance(times, int) or times < 0:
        return JSONResponse({"error": "times must be a non-negative integer"}, status_code=400)
    state = _state(request)
    with state.lock:
        world(state).fail_next_jobs = times
    return JSONResponse({"ok": True, "fail_next_jobs": times})


async def control_limits(request: Request) -> JSONResponse:
    """POST any of the :class:`InsightLimits` fields."""
    body = await request.json()
    lim = world(_state(request)).limits
    for key, value in body.items():
        if not hasattr(lim, key):
            return JSONResponse({"error": f"unknown limit {key}"}, status_code=400)
        setattr(lim, key, type(getattr(lim, key))(value))
    return JSONResponse({"ok": True})


surface.control_routes = [
    Route("/_sandbox/marketing/accounts", control_accounts, methods=["POST"]),
    Route("/_sandbox/marketing/limits", control_limits, methods=["POST"]),
    Route("/_sandbox/marketing/fail-jobs", control_fail_jobs, methods=["POST"]),
]
