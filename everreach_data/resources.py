"""The resources every flow shares — the application database and Graph API access — and the one factory
that builds every resource from the settings (``definitions.py``, the demo and the tests all use it)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import dagster as dg
import psycopg

from everreach_data.config import Settings
from everreach_data.db.catalog import table_metadata
from everreach_data.db.connection import DatabaseUnavailable, connect, connection_lost
from everreach_data.db.embedded import APP_DATABASE, start_embedded
from everreach_data.meta.client import GraphClient, RetryPolicy
from everreach_data.meta.errors import ErrorKind, GraphAPIError

_DEFAULTS = Settings.model_fields


class PostgresResource(dg.ConfigurableResource):
    """The application database: ``url``, or when it is empty the embedded server under ``home`` (started or
    reused), so `dagster asset materialize` works on a fresh checkout."""

    url: str = ""
    home: str = str(_DEFAULTS["EVERREACH_HOME"].default)

    def resolved_url(self) -> str:
        return self.url or start_embedded(Path(self.home)).url(APP_DATABASE)

    @contextmanager
    def connect(self, **kwargs: Any) -> Iterator[psycopg.Connection]:
        with connect(self.resolved_url(), **kwargs) as conn:
            yield conn

    def describe(self, tables: Iterable[str], log: logging.Logger | dg.DagsterLogManager) -> dict[str, dict[str, Any]]:
        """:func:`table_metadata` of each table, for a queue run's report of what it wrote; none when the
        database cannot be reached just now: the report's counts come from the run, and a run that rode out a
        restart must not fail on describing the tables."""
        try:
            with self.connect() as conn:
                return {table: table_metadata(conn, table) for table in tables}
        except (DatabaseUnavailable, psycopg.OperationalError) as exc:
            log.warning(f"the tables' sizes and columns are left out of this report: {exc}")
            return {}


class GraphAPIResource(dg.ConfigurableResource):
    """Graph API access with one token; each Meta surface (ads, a Page, a pixel…) subclasses it and names
    the setting its token comes from (``TOKEN_SETTING``)."""

    TOKEN_SETTING: ClassVar[str] = ""

    access_token: str | None = None
    graph_url: str = _DEFAULTS["META_GRAPH_URL"].default
    api_version: str = _DEFAULTS["META_API_VERSION"].default
    timeout_seconds: float = 30.0
    max_attempts: int = 6
    #: An outage that outlasts the client's own retries (minutes of 5xx or throttling at Meta, the database
    #: restarting) fails the step, which Dagster then runs again this many times, after ``outage_retry_seconds``
    #: doubled each time (15 s to 4 min: with the client's retries, about nine minutes of outage — Airbyte's
    #: connector sleeps 2 to 10 minutes when Meta's usage is at the limit).
    outage_retries: int = 5
    outage_retry_seconds: float = 15.0

    def base_url(self) -> str:
        return f"{self.graph_url.rstrip('/')}/{self.api_version}"

    def client(self) -> GraphClient:
        """A new client (one httpx connection pool); use it as a context manager."""
        if not self.access_token:
            raise dg.Failure(description=f"{self.TOKEN_SETTING or 'the access token'} is not set: see "
                                         "docs/meta-setup.md for the token this needs")
        return GraphClient(self.base_url(), self.access_token, timeout=self.timeout_seconds,
                           retry=RetryPolicy(max_attempts=self.max_attempts))

    @contextmanager
    def failures(self, what: str) -> Iterator[None]:
        """Meta's permanent errors as a run failure that says what to do. An outage — Meta's transient errors
        and throttles, which the client already retried, or a lost database connection — asks Dagster to run
        the step again later (:attr:`outage_retries`): re-running a range replaces it, so a retry is safe."""
        try:
            yield
        except GraphAPIError as exc:
            if exc.retryable:
                raise self._retry_later(what, exc) from exc
            hint = HINTS.get(exc.kind, "").format(token=self.TOKEN_SETTING or "its setting")
            raise dg.Failure(description=f"{what} failed: {exc}" + (f" — {hint}" if hint else ""),
                             metadata={"meta_code": exc.code or 0, "meta_subcode": exc.subcode or 0,
                                       "fbtrace_id": exc.fbtrace_id or ""}, allow_retries=False) from exc
        except (psycopg.Error, DatabaseUnavailable) as exc:
            if isinstance(exc, psycopg.Error) and not connection_lost(exc):
                raise
            raise self._retry_later(what, exc) from exc

    def _retry_later(self, what: str, exc: Exception) -> dg.RetryRequested:
        try:
            context: dg.OpExecutionContext | None = dg.OpExecutionContext.get()
        except dg.DagsterInvariantViolationError:  # not in a step (a plain call): nothing to count
            context = None
        attempt = context.retry_number if context is not None else 0
        wait = self.outage_retry_seconds * 2 ** attempt
        if context is not None and attempt < self.outage_retries:
            context.log.warning(f"{what} failed ({exc}); running the step again in {wait:.0f} s "
                                f"(retry {attempt + 1} of {self.outage_retries})")
        return dg.RetryRequested(max_retries=self.outage_retries, seconds_to_wait=wait)


class ChannelsResource(dg.ConfigurableResource):
    """The messaging channels' ids and tokens, each field named as its setting in lower case, and the Graph
    API they are reached through; flows that need more of the settings subclass it and add theirs."""

    graph_url: str
    api_version: str
    messenger_page_id: str | None = None
    messenger_page_token: str | None = None
    instagram_user_id: str | None = None
    instagram_page_token: str | None = None
    whatsapp_phone_number_id: str | None = None
    whatsapp_access_token: str | None = None

    @classmethod
    def from_settings(cls, value: Callable[[str], Any], **fields: Any) -> Self:
        """The resource with every field named as a setting (in lower case) filled by ``value(setting)``."""
        named = {name: value(name.upper()) for name in cls.model_fields if name.upper() in Settings.model_fields}
        return cls(**named, **fields)

    def setting(self, name: str) -> Any:
        return getattr(self, name.lower(), None)

    def base_url(self) -> str:
        return f"{self.graph_url.rstrip('/')}/{self.api_version}"


HINTS = {
    ErrorKind.AUTH: "the access token is invalid or expired: generate a new one and update {token}",
    ErrorKind.PERMISSION: "the token in {token} lacks a permission this needs (docs/meta-setup.md lists them)",
    ErrorKind.INVALID: "Meta rejected a parameter of the request",
}


def setting_values(settings: Settings, *, secrets_as_env_vars: bool) -> Callable[[str], Any]:
    """How a resource field gets a setting's value. Secrets (and the database URL) that are set become
    ``dg.EnvVar`` when ``secrets_as_env_vars`` — read by each run, never shown in the UI — and their values
    otherwise (runs in this process: the demo, tests); anything unset is None, and the flow that needs it
    says so; other settings are their values."""
    def value(name: str) -> Any:
        plain = settings.secret(name)
        if plain is None or not secrets_as_env_vars or not settings.is_secret(name):
            return plain
        return dg.EnvVar(name)
    return value
