"""Dagster resources shared by every flow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from everreach_data.config import load_settings
from everreach_data.db.connection import app_database_url, connect
from everreach_data.meta.client import GraphClient, RetryPolicy
from everreach_data.meta.errors import ErrorKind, GraphAPIError


class PostgresResource(dg.ConfigurableResource):
    """The application database.

    ``url`` empty means "as the environment says": ``DATABASE_URL`` when set, else the embedded server
    under ``.everreach/`` (started or reused), so `dagster asset materialize` works on a fresh checkout.
    """

    url: str = ""

    def resolved_url(self) -> str:
        return self.url or app_database_url(load_settings())

    @contextmanager
    def connect(self, **kwargs) -> Iterator[psycopg.Connection]:
        with connect(self.resolved_url(), **kwargs) as conn:
            yield conn


class GraphAPIResource(dg.ConfigurableResource):
    """Graph API access with one token (one per Meta surface: ads, pages, conversions…).

    Instantiate with ``access_token=dg.EnvVar("…")`` so the token is read at run time and never shown in the
    UI. ``graph_url``/``api_version`` default to the environment's ``META_GRAPH_URL``/``META_API_VERSION``.
    """

    access_token: str
    graph_url: str = ""
    api_version: str = ""
    timeout_seconds: float = 30.0
    max_attempts: int = 6

    def base_url(self) -> str:
        settings = load_settings()
        return f"{(self.graph_url or settings.META_GRAPH_URL).rstrip('/')}/{self.api_version or settings.META_API_VERSION}"

    def client(self) -> GraphClient:
        """A new client (one httpx connection pool); use it as a context manager."""
        return GraphClient(self.base_url(), self.access_token, timeout=self.timeout_seconds,
                           retry=RetryPolicy(max_attempts=self.max_attempts))


HINTS = {
    ErrorKind.AUTH: "the access token is invalid or expired: generate a new one and update {token}",
    ErrorKind.PERMISSION: "the token in {token} lacks a permission this needs (see the runbook's token steps)",
    ErrorKind.INVALID: "Meta rejected a parameter of the request",
}


@contextmanager
def meta_failures(what: str, token: str) -> Iterator[None]:
    """Turn Meta's permanent errors into a run failure that says what to do; transient ones propagate
    (the client already retried them, and Dagster's run retries may try again)."""
    try:
        yield
    except GraphAPIError as exc:
        if exc.retryable:
            raise
        hint = HINTS.get(exc.kind, "").format(token=token)
        raise dg.Failure(description=f"{what} failed: {exc}" + (f" — {hint}" if hint else ""),
                         metadata={"meta_code": exc.code or 0, "meta_subcode": exc.subcode or 0,
                                   "fbtrace_id": exc.fbtrace_id or ""}) from exc
