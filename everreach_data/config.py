"""Settings from the environment: the one place that reads ``os.environ``.

Every other module takes a :class:`Settings` (or the values it needs) as an argument, so tests and the
sandbox can build settings explicitly without touching the process environment.
"""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent



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
    ADS_LEVELS: str = "campaign,adset,ad"                  # insights levels ad_performance reads
    ADS_CONVERSION_ACTION_TYPES: str | None = None         # comma-separated; unset = meta.insights' default
    ADS_LOOKBACK_DAILY_DAYS: int = 3                       # re-pulled every day (the days before yesterday)
    ADS_LOOKBACK_WEEKLY_DAYS: int = 28                     # re-pulled weekly: Meta restates up to 28 days
    PARTITIONS_START_DATE: date = date(2025, 1, 1)         # first daily partition (clamped to Meta's 37 months)
    # Conversions API
    META_PIXEL_ID: str | None = None
    META_CONVERSIONS_API_TOKEN: SecretStr | None = None
    # Webhooks and auth
    META_WEBHOOK_VERIFY_TOKEN: SecretStr | None = None
    META_APP_SECRET: SecretStr | None = None
    JWT_SECRET: SecretStr | None = None
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
        """``FB_ADS_ACCOUNT_ID`` as a list of ``act_``-prefixed ids (the prefix is optional in the env)."""
        raw = self.FB_ADS_ACCOUNT_ID or ""
        ids = [part.strip() for part in raw.split(",") if part.strip()]
        return [i if i.startswith("act_") else f"act_{i}" for i in ids]

    @property
    def graph_base_url(self) -> str:
        return f"{self.META_GRAPH_URL}/{self.META_API_VERSION}"

    @property
    def uses_embedded_postgres(self) -> bool:
        return self.DATABASE_URL is None

    def secret(self, name: str) -> str | None:
        """The plain value of a secret setting, for the one place that needs to send it."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value


def load_settings(**overrides: object) -> Settings:
    """Settings from the process environment, with explicit overrides (used by tests and the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
