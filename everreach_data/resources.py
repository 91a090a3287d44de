"""Dagster resources shared by every flow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from everreach_data.config import load_settings
from everreach_data.db.connection import app_database_url, connect


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
