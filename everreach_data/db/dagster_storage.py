"""Dagster's own storage (runs, event logs, schedules) in the app's Postgres server, ``dagster`` database.

This is dagster-postgres' storage with one difference: when ``dagster.yaml`` gives no URL it resolves
one the way the rest of the project does (``DAGSTER_PG_URL``, else ``DATABASE_URL``, else the embedded
server). So bare ``dagster`` commands run in the checkout record their runs where the UI shows them.
"""

from __future__ import annotations

from dagster import Field, StringSource
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from everreach_data.config import load_settings
from everreach_data.db.connection import database_urls


class EverReachDagsterStorage(DagsterPostgresStorage):
    @classmethod
    def config_type(cls):
        return {"postgres_url": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict):
        url = config_value.get("postgres_url") or database_urls(load_settings())[1]
        return cls(postgres_url=url, inst_data=inst_data)
