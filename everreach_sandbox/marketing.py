"""Sandbox surface: the Marketing API — ad objects and insights — as Meta's wire format has them.

Deterministic synthetic ad accounts (campaign → ad set → ad, each ad with its creative) whose daily numbers
come from the seed, the ad id, the day and that day's restatement version, so tests can compute the
expected figures from :func:`ad_day` (and :func:`ad_windows`, :func:`split_metrics`) without going
through our parser. Each account has its own currency and time zone (``timezone_name``): insights dates
are the account's days. Endpoints:

- ``GET /act_{id}``, ``/{campaign|adset|ad|creative id}`` and ``/me`` honour ``fields`` (``id`` always);
  ``GET /act_{id}/campaigns|adsets|ads|adcreatives`` (paged) leave DELETED and ARCHIVED objects out unless
  ``effective_status`` (or ``filtering`` on it) asks for them; ``GET /me/adaccounts`` lists what the
  token may read;
- ``GET /act_{id}/insights`` (synchronous) and ``POST /act_{id}/insights`` (async → ``{"report_run_id"}``)
  with ``breakdowns`` (age, gender, country, publisher_platform + platform_position, device_platform,
  impression_device: cells that add up to the totals exactly, reach excepted) and
  ``action_attribution_windows`` (a key per window on each action; 7d_view and 28d_view, gone since
  January 2026, are left out); reach is withheld from breakdown queries starting more than 13 months back
  (async runs keep it for ``old_reach_runs_per_day`` runs per account and day);
- ``GET /{report_run_id}`` (``async_status`` / ``async_percent_completion`` move with time while polled)
  and ``GET /{report_run_id}/insights`` (pages; ``paging.next`` only when there are more).

List parameters are read as Meta reads them: comma-separated or JSON-encoded, as Meta's SDKs send them
(``fields=["spend","impressions"]``). Meta's limits: too much data for one request — too many rows, or
(``max_report_cells``) rows × fields (sync: code 1 "Please reduce the amount of data…"; async:
100/1487534) — the 37-month window (3018), and per-account throttling with ``x-ad-account-usage`` /
``x-business-use-case-usage`` rising with calls and 17/2446079, 613/1487742 or 80004 past the limit.

Throttling and restatement are the framework's (``charge_ads_call``, ``state.restate`` /
``POST /_sandbox/restate``: a restated day's numbers change). Control routes (``/_sandbox/marketing/…``):
``accounts`` (add an account of any size and time zone, or one the token may not read), ``limits``
(:class:`InsightLimits`; ``max_job_rows`` fails every larger run) and ``fail-jobs`` (the next n report
runs end ``"Job Failed"`` with Meta's ``error_code``/``error_message`` fields).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

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
    list_param,
    paged,
    unit,
)
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

surface = Surface("marketing")

PRIMARY_ACCOUNT = SANDBOX_DEFAULTS["FB_ADS_ACCOUNT_ID"]
SECOND_ACCOUNT = "act_2208460119935571"
BUSINESS_ID = "1876231925981034"
SYSTEM_USER_ID = "122098765432101234"  # /me for the ads tokens
PAGE_ID = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]  # the Page the creatives' posts are on
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
        "attribution_setting",
        "date_start",
        "date_stop",
    }
)
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
    timezone_name: str = "Etc/UTC"
    account_status: int = 1  # 1 ACTIVE, 2 DISABLED, 3 UNSETTLED, 101 CLOSED…
    blocked: bool = False  # the token may not read it (error 200), as an account removed from the business
    campaigns: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → its fields (Campaign)
    adsets: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → its fields (AdSet)
    ads: list[Ad] = field(default_factory=list)
    ad_fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # ad id → its fields (Ad)
    creatives: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → its fields (AdCreative)
    by_level: dict[str, dict[str, list[Ad]]] = field(default_factory=dict)  # level → object id → its ads

    def index(self) -> None:
        self.by_level = {"ad": {}, "adset": {}, "campaign": {}, "account": {self.id: list(self.ads)}}
        for ad in self.ads:
            self.by_level["ad"][ad.id] = [ad]
            self.by_level["adset"].setdefault(ad.adset_id, []).append(ad)
            self.by_level["campaign"].setdefault(ad.campaign_id, []).append(ad)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone_name)

    def today(self) -> date:
        """Today in the account's time zone: the day Meta's insights dates are counted in."""
        return datetime.now(self.zone).date()


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
    # Breakdown queries starting more than 13 months back: async runs still get reach, up to this many a
    # day per account (Meta's best-practices doc: "about 10"); synchronous ones never do.
    old_reach_runs_per_day: int = 10


@dataclass
class World:
    accounts: dict[str, Account] = field(default_factory=dict)
    limits: InsightLimits = field(default_factory=InsightLimits)
    next_run_id: int = 6_023_920_149_050
    fail_next_jobs: int = (
        0  # the next N report runs started end "Job Failed" (POST /_sandbox/marketing/fail-jobs)
    )
    statuses_served: list[tuple[str, str, int]] = field(default_factory=list)  # (run id, status, percent)
    old_reach_runs: dict[tuple[str, date], int] = field(default_factory=dict)  # (account, day) → runs


def world(state: SandboxState) -> World:
    with state.lock:
        return state.extra.setdefault("marketing", World())


#: Ad sets' attribution settings (Meta's names) and the spec each stands for; the first is Meta's default.
ATTRIBUTION_SETTINGS: dict[str, tuple[tuple[str, int], ...]] = {
    "7d_click_1d_view": (("CLICK_THROUGH", 7), ("VIEW_THROUGH", 1)),
    "7d_click": (("CLICK_THROUGH", 7),),
    "1d_click": (("CLICK_THROUGH", 1),),
    "1d_click_1d_view": (("CLICK_THROUGH", 1), ("VIEW_THROUGH", 1)),
}
OPTIMIZATION = {
    "OUTCOME_SALES": ("OFFSITE_CONVERSIONS", "IMPRESSIONS"),
    "OUTCOME_LEADS": ("LEAD_GENERATION", "IMPRESSIONS"),
    "OUTCOME_TRAFFIC": ("LINK_CLICKS", "LINK_CLICKS"),
    "OUTCOME_ENGAGEMENT": ("POST_ENGAGEMENT", "IMPRESSIONS"),
}
#: Where objects' timestamps start (deterministic: never "now").
EPOCH = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


def meta_local_time(moment: datetime, zone: ZoneInfo) -> str:
    """Meta's object timestamps: the account's local time with its offset, ``2026-03-04T10:00:00-0800``."""
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S%z")


def _effective(own: str, *parents: str) -> str:
    """An object's effective status from its own and its parents' (campaign first)."""
    if own in ("DELETED", "ARCHIVED"):
        return own
    for parent, paused in zip(parents, ("CAMPAIGN_PAUSED", "ADSET_PAUSED"), strict=False):
        if parent in ("DELETED", "ARCHIVED"):
            return parent
        if parent == "PAUSED":
            return paused
    return own


def add_account(
    state: SandboxState,
    account_id: str,
    *,
    campaigns: int = 3,
    adsets_per_campaign: int = 2,
    ads_per_adset: int = 2,
    currency: str = "USD",
    name: str | None = None,
    timezone_name: str = "Etc/UTC",
) -> Account:
    """Create (or recreate) an ad account with a fixed-shape hierarchy, ids and names from the seed.

    Statuses follow positions, so every account of three campaigns (two ad sets each) has each kind Meta
    has: campaign 1 (and every 5th) PAUSED, campaign 3's second ad set ARCHIVED with its ads, ad sets
    whose positions add up to 2 (mod 4) PAUSED, the second ad of campaign 2's first ad set DELETED; from
    four campaigns on, campaign 4 (and every 7th after it) ARCHIVED with everything under it."""
    if not account_id.startswith("act_"):
        account_id = f"act_{account_id}"
    rng = random.Random(f"{state.seed}|{account_id}")
    used: set[str] = set()
    seed = state.seed

    def new_id() -> str:
        while (i := str(rng.randrange(23_850_000_000_000_000, 23_860_000_000_000_000))) in used:
            pass
        used.add(i)
        return i

    acct = Account(account_id, name or f"EverReach {account_id[4:8]}", currency, timezone_name=timezone_name)
    zone = acct.zone
    placed: list[tuple[int, int, int, Ad]] = []
    for c in range(campaigns):
        objective = OBJECTIVES[c % len(OBJECTIVES)]
        cid = new_id()
        cname = f'{rng.choice(_WORDS)} "{objective.split("_")[1].title()}" – C{c + 1:03d}'
        status = "PAUSED" if c % 5 == 0 else "ARCHIVED" if c % 7 == 3 else "ACTIVE"
        created = EPOCH + timedelta(days=c * 3, hours=int(unit(seed, cid, "created") * 10))
        camp: dict[str, Any] = {
            "name": cname,
            "objective": objective,
            "status": status,
            "configured_status": status,
            "effective_status": status,
            "buying_type": "AUCTION",
            "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
            "special_ad_categories": [],
            "start_time": meta_local_time(created + timedelta(days=1), zone),
            "created_time": meta_local_time(created, zone),
            "updated_time": meta_local_time(created + timedelta(days=40 + c), zone),
        }
        if c % 2 == 0:  # campaign budget optimisation: the budget is the campaign's
            budget = 1000 * (1 + int(unit(seed, cid, "budget") * 20))
            camp.update(daily_budget=str(budget), budget_remaining=str(budget - budget // 3))
        if status == "ARCHIVED":
            camp["stop_time"] = meta_local_time(created + timedelta(days=60), zone)
        acct.campaigns[cid] = camp
        for s in range(adsets_per_campaign):
            sid = new_id()
            own = "ARCHIVED" if status == "ARCHIVED" or (c, s) == (2, 1) else (
                "PAUSED" if (c + s) % 4 == 2 else "ACTIVE"
            )
            goal, billing = OPTIMIZATION[objective]
            setting = list(ATTRIBUTION_SETTINGS)[int(unit(seed, sid, "attribution") * 10) % 4 if s else 0]
            adset: dict[str, Any] = {
                "name": f"{cname} / set {s + 1}",
                "campaign_id": cid,
                "status": own,
                "configured_status": own,
                "effective_status": _effective(own, status),
                "optimization_goal": goal,
                "billing_event": billing,
                "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
                "attribution_setting": setting,
                "attribution_spec": [
                    {"event_type": kind, "window_days": days} for kind, days in ATTRIBUTION_SETTINGS[setting]
                ],
                "start_time": camp["start_time"],
                "created_time": meta_local_time(created + timedelta(hours=s + 1), zone),
                "updated_time": meta_local_time(created + timedelta(days=20 + s), zone),
            }
            if c % 2:  # without a campaign budget, each ad set has its own
                budget = 500 * (1 + int(unit(seed, sid, "budget") * 10))
                if s % 2:
                    adset.update(lifetime_budget=str(budget * 30), budget_remaining=str(budget * 11))
                    adset["end_time"] = meta_local_time(created + timedelta(days=90), zone)
                else:
                    adset.update(daily_budget=str(budget), budget_remaining=str(budget // 2))
            acct.adsets[sid] = adset
            for a in range(ads_per_adset):
                ad = Ad(new_id(), f"Ad {c + 1}.{s + 1}.{a + 1}", sid, cid, rng.randint(1, 4), objective)
                acct.ads.append(ad)
                placed.append((c, s, a, ad))
    # creatives after the hierarchy, so the ids and numbers above are the same as before creatives existed
    for c, s, a, ad in placed:
        creative_id = new_id()
        campaign, adset = acct.campaigns[ad.campaign_id], acct.adsets[ad.adset_id]
        own = "DELETED" if (c, s, a) == (1, 0, 1) else "ARCHIVED" if adset["status"] == "ARCHIVED" else (
            "PAUSED" if (c + s + a) % 6 == 5 else "ACTIVE"
        )
        acct.ad_fields[ad.id] = {
            "name": ad.name,
            "adset_id": ad.adset_id,
            "campaign_id": ad.campaign_id,
            "status": own,
            "configured_status": own,
            "effective_status": _effective(own, campaign["status"], adset["status"]),
            "creative": {"id": creative_id},
            "created_time": adset["created_time"],
            "updated_time": meta_local_time(EPOCH + timedelta(days=50 + a), zone),
        }
        kind = ("SHARE", "VIDEO", "PHOTO")[(c + a) % 3]
        creative: dict[str, Any] = {
            "name": f"{ad.name} creative",
            "status": "DELETED" if own == "DELETED" else "ACTIVE",
            "title": f"{campaign['name'].split(' – ')[0]} — {ad.name}",
            "body": f"Ad {c + 1}.{s + 1}.{a + 1}: {('Shop the range', 'Sign up today', 'See what is new')[a % 3]}",
            "object_type": kind,
            "call_to_action_type": ("SHOP_NOW", "SIGN_UP", "LEARN_MORE")[c % 3],
            "thumbnail_url": f"https://scontent.xx.fbcdn.net/v/t45.1600-4/{creative_id}_n.png",
            "effective_object_story_id": f"{PAGE_ID}_{creative_id[-12:]}",
        }
        if kind != "VIDEO":
            creative["image_url"] = f"https://scontent.xx.fbcdn.net/v/t45.1600-4/{creative_id}_o.jpg"
        if a % 2 == 0:
            creative["instagram_permalink_url"] = f"https://www.instagram.com/p/C{creative_id[-9:]}/"
        acct.creatives[creative_id] = creative
    acct.index()
    with state.lock:
        world(state).accounts[account_id] = acct
        state.add(Node(account_id, "ad_account", {"currency": currency}))
        for kind, objects in (("campaign", acct.campaigns), ("adset", acct.adsets), ("ad", acct.ad_fields),
                              ("adcreative", acct.creatives)):
            for oid in objects:
                state.add(Node(oid, kind, {"account_id": account_id}))
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
        timezone_name="America/Los_Angeles",
    )
    add_account(
        state,
        SECOND_ACCOUNT,
        campaigns=2,
        adsets_per_campaign=1,
        ads_per_adset=2,
        currency="EUR",
        name="EverReach EU",
        timezone_name="Europe/Berlin",
    )
    # /me for the ads tokens is their system user, whose edge /me/adaccounts lists what they may read
    state.add(Node(SYSTEM_USER_ID, "system_user", {"name": "EverReach Data"}))
    for token in state.tokens.values():
        if token.profile_id is None and {"ads_read", "ads_management"} & set(token.scopes):
            token.profile_id = SYSTEM_USER_ID


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


# ── attribution windows ──

#: The windows Meta serves (``action_attribution_windows``); 7d_view and 28d_view stopped being returned on
#: 12 January 2026 and are silently left out, as Meta does.
WINDOWS = ("1d_click", "7d_click", "28d_click", "1d_view", "1d_engaged_view")
REMOVED_WINDOWS = ("7d_view", "28d_view")
#: Aggregate action types as sums of the leaf types the sandbox generates (windows add up like counts).
AGGREGATES = {
    "purchase": ("offsite_conversion.fb_pixel_purchase",),
    "omni_purchase": ("offsite_conversion.fb_pixel_purchase", "onsite_conversion.purchase"),
    "lead": ("offsite_conversion.fb_pixel_lead", "onsite_conversion.lead_grouped"),
}
#: One object-day's windows: action type → window → count, and the same for values (cents).
Windows = tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]


def split_windows(seed: int, key: str, action_type: str, count: int, setting: str) -> dict[str, int]:
    """One count (the default window, ``setting``) spread over every window, deterministically: the
    windows the setting names add up to ``count`` (7d_click + 1d_view for Meta's default), 1d ≤ 7d ≤ 28d
    clicks, engaged views a share of views."""
    u = [unit(seed, key, action_type, i) for i in range(4)]
    view = int(count * 0.3 * u[0])
    clicks = count - view if setting.endswith("1d_view") else count
    if setting.startswith("7d_click"):
        c7, c1 = clicks, clicks - int(clicks * 0.25 * u[1])
    else:
        c1 = clicks
        c7 = c1 + int(c1 * 0.3 * u[1])
    return {"1d_click": c1, "7d_click": c7, "28d_click": c7 + int(c7 * 0.2 * u[2]), "1d_view": view,
            "1d_engaged_view": int(view * 0.5 * u[3])}


def metric_windows(seed: int, key: str, m: Metrics, setting: str) -> Windows:
    """Every action type's windows for one set of numbers (an ad-day, or one breakdown cell)."""
    counts = dict(m.actions)
    values = dict(m.value_cents)
    by_count: dict[str, dict[str, int]] = {}
    by_value: dict[str, dict[str, int]] = {}
    for t, v in counts.items():
        if t in AGGREGATES:
            continue
        by_count[t] = split_windows(seed, key, t, v, setting)
        if values.get(t):
            by_value[t] = {w: values[t] * c // v for w, c in by_count[t].items()}
    for agg, parts in AGGREGATES.items():
        if agg in counts:
            by_count[agg] = {w: sum(by_count.get(p, {}).get(w, 0) for p in parts) for w in WINDOWS}
        if agg in values:
            by_value[agg] = {w: sum(by_value.get(p, {}).get(w, 0) for p in parts) for w in WINDOWS}
    return by_count, by_value


@lru_cache(maxsize=200_000)
def ad_windows(seed: int, ad: Ad, day: date, version: int, setting: str) -> Windows | None:
    """An ad's windows for a day, under its ad set's attribution setting (None: no delivery)."""
    m = ad_day(seed, ad, day, version)
    return None if m is None else metric_windows(seed, f"{ad.id}|{day}|v{version}", m, setting)


def _add_windows(total: Windows | None, more: Windows) -> Windows:
    if total is None:
        return ({t: dict(w) for t, w in more[0].items()}, {t: dict(w) for t, w in more[1].items()})
    for mine, theirs in zip(total, more, strict=True):
        for t, windows in theirs.items():
            into = mine.setdefault(t, {})
            for w, c in windows.items():
                into[w] = into.get(w, 0) + c
    return total


def object_windows(state: SandboxState, acct: Account, level: str, object_id: str, since: date,
                   until: date) -> Windows | None:
    """An object's windows over days: its ads' windows, each under its own ad set's setting, summed."""
    total: Windows | None = None
    day = since
    while day <= until:
        version = state.restate_salt(day)
        for ad in _ads_of(acct, level, object_id):
            w = ad_windows(state.seed, ad, day, version, acct.adsets[ad.adset_id]["attribution_setting"])
            if w is not None:
                total = _add_windows(total, w)
        day += timedelta(days=1)
    return total


def attribution_setting(acct: Account, level: str, object_id: str) -> str:
    """Meta's ``attribution_setting`` field: the ad sets' setting, or ``mixed`` when they differ."""
    settings = {acct.adsets[ad.adset_id]["attribution_setting"] for ad in _ads_of(acct, level, object_id)}
    return settings.pop() if len(settings) == 1 else "mixed"


# ── breakdowns ──

#: Each breakdown's values, in the order Meta lists them. ``platform_position`` depends on the platform.
BREAKDOWN_VALUES: dict[str, tuple[str, ...]] = {
    "age": ("18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "gender": ("female", "male", "unknown"),
    "country": ("US", "GB", "DE", "FR", "BR", "IN", "CA", "AU"),
    "publisher_platform": ("facebook", "instagram", "audience_network", "messenger"),
    "device_platform": ("mobile_app", "mobile_web", "desktop"),
    "impression_device": ("iphone", "android_smartphone", "ipad", "android_tablet", "desktop", "other"),
}
PLATFORM_POSITIONS: dict[str, tuple[str, ...]] = {
    "facebook": ("feed", "facebook_reels", "facebook_stories", "marketplace", "video_feeds", "right_hand_column"),
    "instagram": ("feed", "instagram_reels", "instagram_stories", "instagram_explore"),
    "audience_network": ("an_classic", "rewarded_video"),
    "messenger": ("messenger_inbox", "messenger_stories"),
}
BREAKDOWNS = (*BREAKDOWN_VALUES, "platform_position")
ACTION_BREAKDOWNS = ("action_type",)  # the only one simulated: actions are always per action_type
#: Meta withholds reach from breakdown queries that start more than this many months back.
REACH_BREAKDOWN_MONTHS = 13


def breakdown_cells(breakdowns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every combination of the breakdowns' values (placements only under their own platform)."""
    positions = tuple(dict.fromkeys(p for ps in PLATFORM_POSITIONS.values() for p in ps))
    pools = [positions if b == "platform_position" else BREAKDOWN_VALUES[b] for b in breakdowns]
    cells = list(itertools.product(*pools))
    if "platform_position" in breakdowns:
        pos, plat = breakdowns.index("platform_position"), breakdowns.index("publisher_platform")
        cells = [c for c in cells if c[pos] in PLATFORM_POSITIONS[c[plat]]]
    return cells


def _allocate(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights``, in integers that add up to it (largest remainder)."""
    whole = sum(weights)
    raw = [total * w / whole for w in weights]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))[: total - sum(out)]:
        out[i] += 1
    return out


def split_metrics(seed: int, key: str, m: Metrics, cells: list[tuple[str, ...]]) -> list[tuple[tuple[str, ...],
                                                                                               Metrics]]:
    """One object-day's numbers spread over breakdown cells: impressions, clicks, spend and every action
    count and value add up to the total exactly; reach does not (a person can be in several cells)."""
    weights = [unit(seed, key, *cell) ** 2 for cell in cells]
    weights = [w if w >= 0.05 else 0.0 for w in weights]
    if not any(weights):
        weights[0] = 1.0
    impressions = _allocate(m.impressions, weights)
    clicks = _allocate(m.clicks, weights)
    spend = _allocate(m.spend_cents, weights)
    actions = {t: _allocate(v, weights) for t, v in m.actions}
    values = {t: _allocate(v, weights) for t, v in m.value_cents}
    out = []
    for i, cell in enumerate(cells):
        if not (impressions[i] or clicks[i] or spend[i]):
            continue
        reach = min(impressions[i], max(1, round(m.reach * impressions[i] / max(1, m.impressions) * 1.08)))
        out.append((cell, Metrics(
            impressions[i], reach, clicks[i], spend[i],
            tuple((t, v[i]) for t, v in actions.items() if v[i]),
            tuple((t, v[i]) for t, v in values.items() if v[i]),
        )))
    return out


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


def _action_items(items: tuple[tuple[str, int], ...], windows: dict[str, dict[str, int]] | None,
                  asked: tuple[str, ...], money: bool) -> list[dict[str, Any]]:
    fmt = _money if money else str
    out = []
    for t, v in items:
        item: dict[str, Any] = {"action_type": t, "value": fmt(v)}
        for w in asked:
            if windows and (c := windows.get(t, {}).get(w)):
                item[w] = fmt(c)
        out.append(item)
    return out


def format_row(
    acct: Account,
    level: str,
    object_id: str,
    since: date,
    until: date,
    m: Metrics,
    fields: list[str],
    *,
    breakdowns: dict[str, str] | None = None,
    windows: Windows | None = None,
    asked_windows: tuple[str, ...] = (),
    withhold_reach: bool = False,
) -> dict[str, Any]:
    """One insights row as Meta sends it: every metric a string, actions as [{action_type, value}] (plus a
    key per attribution window asked for), breakdown values as fields of their own."""
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
        "frequency": _ratio(m.impressions, m.reach),
        "cpm": _ratio(spend * 1000, m.impressions) if m.impressions else "0",
        "ctr": _ratio(Decimal(m.clicks) * 100, m.impressions) if m.impressions else "0",
        "attribution_setting": attribution_setting(acct, level, object_id),
    }
    if not withhold_reach:
        full["reach"] = str(m.reach)
    if m.clicks:
        full["cpc"] = _ratio(spend, m.clicks)
    if m.actions:
        full["actions"] = _action_items(m.actions, windows[0] if windows else None, asked_windows, False)
    if m.value_cents:
        full["action_values"] = _action_items(m.value_cents, windows[1] if windows else None, asked_windows,
                                              True)
    if campaign_id:
        camp = acct.campaigns[campaign_id]
        full.update(campaign_id=campaign_id, campaign_name=camp["name"], objective=camp["objective"])
    if adset_id:
        full.update(adset_id=adset_id, adset_name=acct.adsets[adset_id]["name"])
    if ad:
        full.update(ad_id=ad.id, ad_name=ad.name)
    row = {f: full[f] for f in fields if f in full}
    row.update(breakdowns or {})
    row.update(date_start=since.isoformat(), date_stop=until.isoformat())
    return row


# ───────────────────────────── requests ─────────────────────────────


@dataclass
class Report:
    """A resolved insights request: which (object, day range) rows it yields, and how to format them.
    Breakdown reports hold their cells' numbers (``cells``, one per key) as resolved."""

    acct: Account
    level: str
    fields: list[str]
    keys: list[tuple[str, date, date]]  # (object id, date_start, date_stop) with delivery
    breakdowns: tuple[str, ...] = ()
    cells: list[tuple[tuple[str, ...], Metrics]] = field(default_factory=list)
    windows: tuple[str, ...] = ()
    withhold_reach: bool = False

    def rows(self, state: SandboxState, start: int, stop: int) -> list[dict[str, Any]]:
        out = []
        for i in range(start, min(stop, len(self.keys))):
            object_id, since, until = self.keys[i]
            if self.breakdowns:
                cell, m = self.cells[i]
                key = f"{object_id}|{since}|{'|'.join(cell)}"
                windows = metric_windows(state.seed, key, m, "7d_click_1d_view") if self.windows else None
                out.append(format_row(self.acct, self.level, object_id, since, until, m, self.fields,
                                      breakdowns=dict(zip(self.breakdowns, cell, strict=True)),
                                      windows=windows, asked_windows=self.windows,
                                      withhold_reach=self.withhold_reach))
                continue
            m = _range_metrics(state, self.acct, self.level, object_id, since, until)
            if m is not None:
                windows = (object_windows(state, self.acct, self.level, object_id, since, until)
                           if self.windows else None)
                out.append(format_row(self.acct, self.level, object_id, since, until, m, self.fields,
                                      windows=windows, asked_windows=self.windows))
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


def _enum_list(req: GraphRequest, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(list_param(req.param(name), name) or ())
    for i, v in enumerate(values):
        if v not in allowed:
            raise GraphError(100, f"(#100) {name}[{i}] must be one of the following values: {', '.join(allowed)}")
    return values


def resolve_report(req: GraphRequest, *, asynchronous: bool = False) -> Report:
    """Check an insights request as Meta does and list the rows it asks for."""
    state = req.state
    acct = world(state).accounts[req.node.id]
    level = req.param("level", "account")
    if level not in LEVELS:
        raise GraphError(100, f"(#100) level must be one of the following values: {', '.join(LEVELS)}")
    fields = list_param(req.param("fields"), "fields") or ["spend", "impressions"]
    for f in fields:
        if f not in INSIGHT_FIELDS:
            raise GraphError(
                100,
                f"(#100) {f} is not valid for fields param. please check "
                "https://developers.facebook.com/docs/marketing-api/reference/ads-insights/ "
                "for all valid values",
            )
    breakdowns = _enum_list(req, "breakdowns", BREAKDOWNS)
    if "platform_position" in breakdowns and "publisher_platform" not in breakdowns:
        raise GraphError(100, "(#100) Current combination of data breakdown columns (platform_position) is "
                              "invalid: platform_position requires publisher_platform")
    _enum_list(req, "action_breakdowns", ACTION_BREAKDOWNS)
    windows = tuple(w for w in _enum_list(req, "action_attribution_windows", (*WINDOWS, *REMOVED_WINDOWS))
                    if w in WINDOWS)
    today = acct.today()
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
    report = Report(acct, level, fields, keys, breakdowns=breakdowns, windows=windows)
    if breakdowns:
        old = since < _months_back(today, REACH_BREAKDOWN_MONTHS)
        report.withhold_reach = old and not (asynchronous and _old_reach_allowed(state, acct, today))
        cells = breakdown_cells(breakdowns)
        spans = [(d, d) for d in days] if increment == "1" else [(since, until)]
        for a, b in spans:
            for o in objects:
                m = _range_metrics(state, acct, level, o, a, b)
                if m is None:
                    continue
                for cell, cm in split_metrics(state.seed, f"{o}|{a}|{b}|{','.join(breakdowns)}", m, cells):
                    keys.append((o, a, b))
                    report.cells.append((cell, cm))
    elif increment == "1":
        for day in days:
            keys += [(o, day, day) for o in objects if object_day(state, acct, level, o, day) is not None]
    else:
        keys += [(o, since, until) for o in objects if _range_metrics(state, acct, level, o, since, until)]
    return report


def _old_reach_allowed(state: SandboxState, acct: Account, today: date) -> bool:
    """One more async breakdown run reaching back past 13 months may still have reach (about 10 a day)."""
    w = world(state)
    with state.lock:
        used = w.old_reach_runs.get((acct.id, today), 0)
        if used >= w.limits.old_reach_runs_per_day:
            return False
        w.old_reach_runs[(acct.id, today)] = used + 1
        return True


def _check_access(req: GraphRequest, acct: Account | None = None) -> None:
    if not {"ads_read", "ads_management"} & set(req.token.scopes) or (acct is not None and acct.blocked):
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


# ───────────────────────────── objects ─────────────────────────────

#: Each object kind's fields (``id`` is always one); a GET with ``fields`` answers ``id`` and those,
#: without ``fields`` the defaults, and an unknown field is Meta's error 100.
OBJECT_FIELDS: dict[str, tuple[str, ...]] = {
    "ad_account": ("id", "account_id", "name", "currency", "timezone_name", "timezone_offset_hours_utc",
                   "account_status", "disable_reason", "business", "amount_spent", "created_time"),
    "campaign": ("id", "account_id", "name", "objective", "status", "configured_status", "effective_status",
                 "buying_type", "bid_strategy", "special_ad_categories", "daily_budget", "lifetime_budget",
                 "budget_remaining", "start_time", "stop_time", "created_time", "updated_time"),
    "adset": ("id", "account_id", "campaign_id", "name", "status", "configured_status", "effective_status",
              "optimization_goal", "billing_event", "bid_strategy", "daily_budget", "lifetime_budget",
              "budget_remaining", "attribution_spec", "start_time", "end_time", "created_time", "updated_time"),
    "ad": ("id", "account_id", "campaign_id", "adset_id", "name", "status", "configured_status",
           "effective_status", "creative", "created_time", "updated_time"),
    "adcreative": ("id", "account_id", "name", "status", "title", "body", "object_type", "call_to_action_type",
                   "thumbnail_url", "image_url", "effective_object_story_id", "instagram_permalink_url"),
    "ad_report_run": ("id", "account_id", "time_ref", "async_status", "async_percent_completion",
                      "date_start", "date_stop", "time_completed", "error_code", "error_message",
                      "error_subcode", "error_user_title", "error_user_msg"),
    "system_user": ("id", "name"),
}
TYPE_NAMES = {"ad_account": "AdAccount", "campaign": "Campaign", "adset": "AdSet", "ad": "Ad",
              "adcreative": "AdCreative", "ad_report_run": "AdReportRun", "system_user": "User"}
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "ad_account": ("id", "account_id"),
    "ad_report_run": OBJECT_FIELDS["ad_report_run"],  # a report run answers its whole status
}
#: Statuses an edge leaves out unless ``effective_status`` (or a filter on it) asks for them.
HIDDEN_STATUSES = ("DELETED", "ARCHIVED")


def pick(req: GraphRequest, kind: str, full: dict[str, Any]) -> dict[str, Any]:
    """``fields`` honoured: ``id`` and the fields asked for that the object has (Meta omits unset ones)."""
    asked = list_param(req.param("fields"), "fields")
    names = ["id", *[f for f in asked if f != "id"]] if asked else list(DEFAULT_FIELDS.get(kind, ("id",)))
    for f in names:
        if f not in OBJECT_FIELDS[kind]:
            raise GraphError(100, f"(#100) Tried accessing nonexisting field ({f}) on node type "
                                  f"({TYPE_NAMES[kind]})")
    return {f: full[f] for f in names if f in full}


def account_object(acct: Account) -> dict[str, Any]:
    offset = datetime.now(acct.zone).utcoffset() or timedelta(0)
    spent = int(unit(0, acct.id, "amount_spent") * 10**9)
    return {"id": acct.id, "account_id": acct.id[4:], "name": acct.name, "currency": acct.currency,
            "timezone_name": acct.timezone_name, "timezone_offset_hours_utc": offset.total_seconds() / 3600,
            "account_status": acct.account_status, "disable_reason": 0,
            "business": {"id": BUSINESS_ID, "name": "EverReach"}, "amount_spent": str(spent),
            "created_time": meta_local_time(EPOCH - timedelta(days=30), acct.zone)}


def _with_ids(acct: Account, kind: str, oid: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"id": oid, "account_id": acct.id[4:], **fields}


def _objects_of(acct: Account, kind: str) -> dict[str, dict[str, Any]]:
    return {"campaign": acct.campaigns, "adset": acct.adsets, "ad": acct.ad_fields,
            "adcreative": acct.creatives}[kind]


def _statuses_asked(req: GraphRequest, kind: str) -> set[str] | None:
    """The statuses an edge is asked for (``effective_status``, or filtering on it); None: the default."""
    asked = list_param(req.param("effective_status"), "effective_status")
    for flt in _json_param(req, "filtering") or []:
        if flt.get("field") in ("effective_status", f"{kind}.effective_status") and flt.get("operator") == "IN":
            asked = [str(v) for v in flt.get("value") or []]
    return set(asked) if asked is not None else None


def list_objects(req: GraphRequest, kind: str) -> dict[str, Any]:
    acct = world(req.state).accounts[req.node.id]
    _check_access(req, acct)
    charge_ads_call(req, acct.id)
    asked = _statuses_asked(req, kind)
    items = []
    for oid, fields in _objects_of(acct, kind).items():
        status = fields.get("effective_status")  # creatives have none: their edge lists them all
        if status is not None and ((status in HIDDEN_STATUSES and asked is None) or (asked and status not in asked)):
            continue
        items.append(pick(req, kind, _with_ids(acct, kind, oid, fields)))
    return page(req, items)


def _owner(req: GraphRequest) -> Account:
    return world(req.state).accounts[req.node.data["account_id"]]


@surface.route("GET", "ad_account")
async def get_account(req: GraphRequest) -> dict[str, Any]:
    acct = world(req.state).accounts[req.node.id]
    _check_access(req, acct)
    charge_ads_call(req, acct.id)
    return pick(req, "ad_account", account_object(acct))


@surface.route("GET", "system_user")
async def get_system_user(req: GraphRequest) -> dict[str, Any]:
    return pick(req, "system_user", {"id": req.node.id, **req.node.data})


@surface.route("GET", "system_user", "adaccounts")
async def list_ad_accounts(req: GraphRequest) -> dict[str, Any]:
    """``/me/adaccounts``: every account the token may read (blocked ones are not listed)."""
    _check_access(req)
    accounts = [a for a in world(req.state).accounts.values() if not a.blocked]
    return page(req, [pick(req, "ad_account", account_object(a)) for a in accounts])


def _object_route(kind: str, edge: str) -> None:
    async def get_one(req: GraphRequest) -> dict[str, Any]:
        acct = _owner(req)
        _check_access(req, acct)
        charge_ads_call(req, acct.id)
        return pick(req, kind, _with_ids(acct, kind, req.node.id, _objects_of(acct, kind)[req.node.id]))

    async def get_many(req: GraphRequest) -> dict[str, Any]:
        return list_objects(req, kind)

    surface.route("GET", kind)(get_one)
    surface.route("GET", "ad_account", edge)(get_many)


for _kind, _edge in (("campaign", "campaigns"), ("adset", "adsets"), ("ad", "ads"), ("adcreative", "adcreatives")):
    _object_route(_kind, _edge)


# ───────────────────────────── insights ─────────────────────────────


@surface.route("GET", "ad_account", "insights")
async def sync_insights(req: GraphRequest) -> dict[str, Any]:
    acct = world(req.state).accounts[req.node.id]
    _check_access(req, acct)
    charge_ads_call(req, req.node.id, use_case="ads_insights")
    report = resolve_report(req)
    if len(report.keys) > world(req.state).limits.max_sync_rows:
        raise GraphError(1, REDUCE_DATA, type="OAuthException", status=500)
    return page(req, LazyRows(req.state, report))


@surface.route("POST", "ad_account", "insights")
async def start_report(req: GraphRequest) -> dict[str, Any]:
    acct = world(req.state).accounts[req.node.id]
    _check_access(req, acct)
    charge_ads_call(req, req.node.id, use_case="ads_insights")
    report = resolve_report(req, asynchronous=True)
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
    return pick(req, "ad_report_run", body)


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
    """POST {"account_id", "campaigns", "adsets_per_campaign", "ads_per_adset", "currency", "name",
    "timezone_name", "blocked"}."""
    body = await request.json()
    acct = add_account(
        _state(request),
        str(body["account_id"]),
        campaigns=int(body.get("campaigns", 3)),
        adsets_per_campaign=int(body.get("adsets_per_campaign", 2)),
        ads_per_adset=int(body.get("ads_per_adset", 2)),
        currency=body.get("currency", "USD"),
        name=body.get("name"),
        timezone_name=body.get("timezone_name", "Etc/UTC"),
    )
    acct.blocked = bool(body.get("blocked", False))
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
