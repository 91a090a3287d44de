"""Token health: what Meta says about every configured token (``/debug_token``), kept as one
``meta_platform_config`` row per channel; what is wrong with a channel's token (the asset check reads it);
and which messaging channels must stop sending (the sensor pauses them, and resumes those it paused once
their token is healthy again). Plain functions, testable without Dagster; ``defs.py`` wraps them.

Tokens are never stored or logged: a row names the setting its token comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from everreach_data.config import CHANNEL_SETTINGS, Settings
from everreach_data.db.fast_json import jsonb
from everreach_data.meta.client import GraphClient
from everreach_data.meta.errors import GraphAPIError
from everreach_data.meta.insights import ad_account_id
from everreach_data.meta.messaging import PLATFORMS as MESSAGING_PLATFORMS
from everreach_data.meta.tokens import TokenInfo, debug_tokens


@dataclass(frozen=True)
class FlowNeeds:
    """The scopes a flow needs its channel's token to have; ``sends``: without them its messages fail."""

    platform: str
    scopes: tuple[str, ...]
    sends: bool = False


#: What each flow needs of its channel's token: the one table of required scopes (docs/meta-setup.md
#: explains them).
REQUIRED_SCOPES: dict[str, FlowNeeds] = {
    "Messenger sends": FlowNeeds("messenger", ("pages_messaging",), sends=True),
    "Page insights": FlowNeeds("messenger", ("pages_read_engagement", "read_insights")),
    "Instagram sends": FlowNeeds("instagram", ("instagram_basic", "instagram_manage_messages"), sends=True),
    "Instagram insights": FlowNeeds("instagram", ("instagram_manage_insights",)),
    "WhatsApp sends": FlowNeeds("whatsapp", ("whatsapp_business_messaging",), sends=True),
    "WhatsApp templates": FlowNeeds("whatsapp", ("whatsapp_business_management",)),
    "ads insights": FlowNeeds("ads", ("ads_read",)),
}
#: A token expiring within this long is warned about.
EXPIRY_WARNING = timedelta(days=7)
#: Where each channel's id and token are configured (setting names, tokens in order of preference).
TOKEN_CHANNELS: dict[str, tuple[str, tuple[str, ...]]] = {
    **CHANNEL_SETTINGS,
    "ads": ("FB_ADS_ACCOUNT_ID", ("FB_ADS_ACCESS_TOKEN",)),
    "conversions": ("META_PIXEL_ID", ("META_CONVERSIONS_API_TOKEN",)),
}


@dataclass(frozen=True)
class ConfiguredToken:
    """A channel and the token it is configured with (``setting`` None: none of its settings is set)."""

    platform: str
    account_id: str
    setting: str | None
    token: str | None = field(default=None, repr=False)


def configured_tokens(value: Callable[[str], str | None]) -> list[ConfiguredToken]:
    """Every configured channel (one per ad account), from a lookup of setting names."""
    out = []
    for platform, (id_setting, token_settings) in TOKEN_CHANNELS.items():
        setting = next((name for name in token_settings if value(name)), None)
        for account in Settings.csv(value(id_setting)):
            out.append(ConfiguredToken(platform, ad_account_id(account) if platform == "ads" else account,
                                       setting, value(setting) if setting else None))
    return out


@dataclass(frozen=True)
class TokenHealth:
    channel: ConfiguredToken
    info: TokenInfo | None          # None: no token to ask about

    def row(self, checked_at: datetime) -> dict[str, Any]:
        info = self.info or TokenInfo(is_valid=False, error="no token configured")
        return {"platform": self.channel.platform, "account_id": self.channel.account_id,
                "token_setting": self.channel.setting, "token_valid": info.is_valid, "token_type": info.type,
                "token_app_id": info.app_id, "token_user_id": info.user_id or info.profile_id,
                "token_expires_at": info.expires_at, "data_access_expires_at": info.data_access_expires_at,
                "scopes": list(info.scopes), "token_error": info.error, "token_checked_at": checked_at}


def inspect(graph_base_url: str, channels: list[ConfiguredToken], *, app_token: str | None,
            timeout: float = 30.0) -> list[TokenHealth]:
    """Ask ``/debug_token`` about every distinct token once: all in one batch with the app token, else each
    token about itself (a token Meta no longer accepts cannot, and that refusal is its answer)."""
    distinct = list(dict.fromkeys(c.token for c in channels if c.token))
    infos: dict[str, TokenInfo] = {}
    if app_token:
        with GraphClient(graph_base_url, app_token, timeout=timeout) as client:
            infos = dict(zip(distinct, debug_tokens(client, distinct), strict=True))
    else:
        for token in distinct:
            with GraphClient(graph_base_url, token, timeout=timeout) as client:
                try:
                    infos[token] = debug_tokens(client, [token])[0]
                except GraphAPIError as exc:
                    if exc.retryable:
                        raise
                    infos[token] = TokenInfo.refused(exc)
    return [TokenHealth(c, infos.get(c.token) if c.token else None) for c in channels]


# ───────────────────────────── what is wrong ─────────────────────────────

@dataclass(frozen=True)
class Verdict:
    """A channel's token as the check sees it: ``errors`` fail the check, ``warnings`` warn; ``pause`` is
    why a messaging channel must stop sending (None: it may send)."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    pause: str | None = None


def verdict(row: Mapping[str, Any], now: datetime) -> Verdict:
    """What is wrong with a ``meta_platform_config`` row's token at ``now``: invalid, expired (the token or
    its data access), or lacking a scope a flow of its channel needs; or about to expire."""
    setting = row["token_setting"] or " or ".join(TOKEN_CHANNELS[row["platform"]][1])
    fatal: list[str] = []
    if row["token_setting"] is None:
        fatal.append(f"{setting} is not set")
    elif not row["token_valid"]:
        fatal.append(f"{setting} is not valid: {row['token_error'] or 'Meta says so'}")
    for column, what in (("token_expires_at", "expired"), ("data_access_expires_at", "lost its data access")):
        if row[column] is not None and row[column] <= now and row["token_valid"]:
            fatal.append(f"{setting} {what} at {row[column]:%Y-%m-%d %H:%M} UTC")
    scopes = set(row["scopes"] or ())
    lacking = [] if fatal else [
        (needs.sends, f"{setting} lacks {', '.join(m)} (needed by {flow})")
        for flow, needs in REQUIRED_SCOPES.items()
        if needs.platform == row["platform"] and (m := [s for s in needs.scopes if s not in scopes])]
    warnings = [f"{setting} {what} in {(row[column] - now) / timedelta(days=1):.1f} days, at "
                f"{row[column]:%Y-%m-%d %H:%M} UTC"
                for column, what in (("token_expires_at", "expires"), ("data_access_expires_at", "loses data access"))
                if row[column] is not None and now < row[column] <= now + EXPIRY_WARNING]
    blocking = fatal + [text for sends, text in lacking if sends]
    pause = None
    if row["platform"] in MESSAGING_PLATFORMS and row["token_setting"] is not None and blocking:
        pause = "token health: " + "; ".join(blocking)
    return Verdict(tuple(fatal + [text for _, text in lacking]), tuple(warnings), pause)


# ───────────────────────────── meta_platform_config ─────────────────────────────

RECORD_HEALTH = """
INSERT INTO meta_platform_config AS c (platform, account_id, token_setting, token_valid, token_type, token_app_id,
                                       token_user_id, token_expires_at, data_access_expires_at, scopes,
                                       token_error, token_checked_at, updated_at)
SELECT platform, account_id, token_setting, token_valid, token_type, token_app_id, token_user_id,
       token_expires_at, data_access_expires_at, scopes, token_error, token_checked_at, now()
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS x (platform text, account_id text, token_setting text, token_valid boolean, token_type text,
           token_app_id text, token_user_id text, token_expires_at timestamptz, data_access_expires_at timestamptz,
           scopes text[], token_error text, token_checked_at timestamptz)
ON CONFLICT (platform, account_id) DO UPDATE SET
    token_setting = EXCLUDED.token_setting, token_valid = EXCLUDED.token_valid, token_type = EXCLUDED.token_type,
    token_app_id = EXCLUDED.token_app_id, token_user_id = EXCLUDED.token_user_id,
    token_expires_at = EXCLUDED.token_expires_at, data_access_expires_at = EXCLUDED.data_access_expires_at,
    scopes = EXCLUDED.scopes, token_error = EXCLUDED.token_error, token_checked_at = EXCLUDED.token_checked_at,
    updated_at = now()
RETURNING platform, account_id, status, paused_by, token_setting, token_valid, token_expires_at,
          data_access_expires_at, scopes, token_error
"""

CHECKED_CHANNELS = """
SELECT platform, account_id, status, paused_by, token_setting, token_valid, token_expires_at, data_access_expires_at,
       scopes, token_error
FROM meta_platform_config WHERE token_checked_at IS NOT NULL
ORDER BY platform, account_id
"""

PAUSE = """
UPDATE meta_platform_config SET status = 'needs_reauth', paused_by = 'token_health', status_reason = %(reason)s,
                                updated_at = now()
WHERE platform = %(platform)s AND account_id = %(account_id)s AND status = 'active'
"""

RESUME = """
UPDATE meta_platform_config SET status = 'active', paused_by = NULL, status_reason = NULL, updated_at = now()
WHERE platform = %(platform)s AND account_id = %(account_id)s AND status = 'needs_reauth'
  AND paused_by = 'token_health'
"""


def record(conn: psycopg.Connection, health: Iterable[TokenHealth], checked_at: datetime) -> list[dict[str, Any]]:
    """Write each channel's token health; returns the rows as the check and the sensor read them."""
    rows = [h.row(checked_at) for h in health]
    if not rows:
        return []
    return conn.execute(RECORD_HEALTH, {"rows": jsonb(rows)}).fetchall()


def checked_channels(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return conn.execute(CHECKED_CHANNELS).fetchall()


@dataclass
class Enforcement:
    paused: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


def enforce(conn: psycopg.Connection, now: datetime) -> Enforcement:
    """Pause the messaging channels whose token stops them sending (their queued messages wait: the sender's
    claims skip channels that are not active), and resume those this paused whose token is healthy again."""
    done = Enforcement()
    for row in checked_channels(conn):
        reason = verdict(row, now).pause
        key = {"platform": row["platform"], "account_id": row["account_id"]}
        if reason and row["status"] == "active":
            if conn.execute(PAUSE, {**key, "reason": reason}).rowcount:
                done.paused.append(f"{row['platform']}:{row['account_id']}")
        elif not reason and row["status"] == "needs_reauth" and row["paused_by"] == "token_health":
            if conn.execute(RESUME, key).rowcount:
                done.resumed.append(f"{row['platform']}:{row['account_id']}")
    return done
