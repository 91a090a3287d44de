"""The one ``dagster.Definitions`` for EverReach Data (``workspace.yaml`` loads this module)."""

import dagster as dg

from everreach_data.resources import PostgresResource

defs = dg.Definitions(
    assets=[],
    asset_checks=[],
    jobs=[],
    sensors=[],
    schedules=[],
    resources={
        "postgres": PostgresResource(),
    },
)
