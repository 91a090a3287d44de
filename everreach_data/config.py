"""Settings from the environment: the one place that reads ``os.environ``.

Every other module takes a :class:`Settings` (or the values it needs) as an argument, so tests and the
sandbox can build settings explicitly without touching the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import cache, cached_property
from pathlib import Path
from typing import get_args

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where each messaging platform's channel id and sending token are configured (setting names, tokens in
#: order of preference): a Page-linked Instagram account sends with its Page's token when it has none.
CHANNEL_SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "messenger": ("MESSENGER_PAGE_ID", ("MESSENGER_PAGE_TOKEN",)),
    "instagram": ("INSTAGRAM_USER_ID", ("INSTAGRAM_PAGE_TOKEN", "MESSENGER_PAGE_TOKEN")),
    "whatsapp": ("WHATSAPP_PHONE_NUMBER_ID", ("WHATSAPP_ACCESS_TOKEN",)),
}


@dataclass(frozen=True)
class Channel:
    """One messaging channel as configured: the Page, IG account or phone number id, and its token."""

    platform: str
    channel_id: str | None
    token: str | None = field(default=None, repr=False)

    @property
    def id_setting(self) -> str:
        return CHANNEL_SETTINGS[self.platform][0]


@dataclass(frozen=True)
class Channels:
    """The messaging channels and the Graph API they send through."""

    graph_base_url: str
    by_platform: dict[str, Channel]
    waba_id: str | None = None      # the WhatsApp Business Account: its template catalog is checked at send time

    def __getitem__(self, platform: str) -> Channel:
        return self.by_platform[platform]

    @classmethod
    def from_values(cls, graph_base_url: str, value: Callable[[str], str | None]) -> Channels:
        """The channels from a lookup of setting names (the settings, or a resource's fields)."""
        return cls(graph_base_url, {
            platform: Channel(platform, value(id_name), next((t for n in tokens if (t := value(n))), None))
            for platform, (id_name, tokens) in CHANNEL_SETTINGS.items()}, waba_id=value("WABA_ID"))



class Settings(BaseSettings):
    """Everything configurable, named as in the runbook. Secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)

    # Messenger / Instagram
    MESSENGER_PAGE_ID: str | None = None
    MESSENGER_PAGE_TOKEN: SecretStr | None = None
    INSTAGRAM_PAGE_ID: str | None = None
    INSTAGRAM_PAGE_TOKEN: SecretStr | None = None
    INSTAGRAM_USER_ID: str | None = None
    # WhatsApp
    WHATSAPP_PHONE_NUMBER_ID: str | None = None
    WHATSAPP_ACCESS_TOKEN: SecretStr | None = None
    WABA_ID: str | None = None
    # Ads
    FB_ADS_ACCESS_TOKEN: SecretStr | None = None
    FB_ADS_ACCOUNT_ID: str | None = Field(default=None, description="comma-separated for several accounts")
    ADS_LEVELS: str | None = None                          # insights levels ad_performance reads (unset: all)
    ADS_CONVERSION_ACTION_TYPES: str | None = None         # comma-separated; unset = meta.insights' default
    ADS_BREAKDOWN_REPORTS: str | None = None               # TOML file of breakdown reports (unset: 4 defaults)
    ADS_ATTRIBUTION_WINDOWS: str | None = None             # comma-separated; unset = every window Meta serves
    ADS_ACCOUNTS_PER_RUN: int = 10                         # scheduled runs split the accounts into groups
    ADS_LOOKBACK_DAILY_DAYS: int = 3                       # re-pulled every day (the days before yesterday)
    ADS_LOOKBACK_WEEKLY_DAYS: int = 28                     # re-pulled weekly: Meta restates up to 28 days
    PARTITIONS_START_DATE: date = date(2025, 1, 1)         # first daily partition (clamped to Meta's 37 months)
    # Conversions API
    META_PIXEL_ID: str | None = None
    META_CONVERSIONS_API_TOKEN: SecretStr | None = None
    # Webhooks and auth
    META_WEBHOOK_VERIFY_TOKEN: SecretStr | None = None
    META_APP_ID: str | None = None                         # with the secret: the app token /debug_token takes
    META_APP_SECRET: SecretStr | None = None
    WEBHOOK_RETENTION_DAYS: int = 90                       # months of the inbox older than this are dropped…
    WEBHOOK_DEDUPE_DAYS: int = 7                           # …and body hashes after this (WhatsApp retries 7 days)
    JWT_SECRET: SecretStr | None = None                   # HS256, at least 32 bytes (the receiver checks)
    JWT_ROLE_CLAIM: str = Field("role", min_length=1)      # dotted path: role, app_metadata.everreach_role, …
    JWT_AUDIENCE: str | None = None                        # set: tokens must carry this aud (Supabase: authenticated)
    JWT_LEEWAY_SECONDS: int = Field(30, ge=0, le=300)      # clock skew allowed on nbf and iat (exp is exact)
    # Infrastructure
    DATABASE_URL: SecretStr | None = None
    DAGSTER_PG_URL: SecretStr | None = None   # Dagster's storage; unset: its own database beside the app's
    META_GRAPH_URL: str = "https://graph.facebook.com"
    META_API_VERSION: str = "v24.0"
    EVERREACH_HOME: Path = PROJECT_ROOT / ".everreach"
    RECEIVER_MAX_BODY_BYTES: int = 3 * 1024 * 1024  # Meta's payloads are at most 3 MB

    @field_validator("META_GRAPH_URL")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @cached_property
    def ad_account_ids(self) -> list[str]:
        """``FB_ADS_ACCOUNT_ID`` as a list (the ``act_`` prefix is added where Meta wants it)."""
        return self.csv(self.FB_ADS_ACCOUNT_ID)

    @staticmethod
    def csv(value: str | None) -> list[str]:
        """A comma-separated setting as a list (blanks dropped)."""
        return [part.strip() for part in (value or "").split(",") if part.strip()]

    @property
    def graph_base_url(self) -> str:
        return f"{self.META_GRAPH_URL}/{self.META_API_VERSION}"

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.DATABASE_URL is None

    def secret(self, name: str) -> str | None:
        """The plain value of a setting (secret or not), for the one place that needs to send it."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    @classmethod
    def is_secret(cls, name: str) -> bool:
        annotation = cls.model_fields[name].annotation
        return annotation is SecretStr or SecretStr in get_args(annotation)

    def channels(self) -> Channels:
        return Channels.from_values(self.graph_base_url, self.secret)


def load_settings(**overrides: object) -> Settings:
    """Settings from the process environment, with explicit overrides (used by tests and the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def environment() -> dict[str, str]:
    """A copy of the process environment, for the processes ``everreach-data dev`` starts."""
    return dict(os.environ)


@cache
def definition_settings() -> Settings:
    """The settings Dagster's definitions are shaped by (the first partition, the look-back windows, which
    channels and accounts exist), read once when the code location loads. Secrets reach runs as
    ``dg.EnvVar`` instead (:func:`everreach_data.resources.build_resources`)."""
    return load_settings()
