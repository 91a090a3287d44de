"""Dagster resources shared by every flow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from everreach_data.config import load_settings
from everreach_data.db.connection import app_database_url, connect
from everreach_data.meta.client import GraphClient, RetryPolicy


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
