"""The one ``dagster.Definitions`` for EverReach Data (``workspace.yaml`` loads this module)."""

import dagster as dg

from everreach_data.jobs.webhook_events import process_webhook_events
from everreach_data.resources import PostgresResource
from everreach_data.sensors.webhook_events import webhook_events_sensor

defs = dg.Definitions(
    assets=[],
    asset_checks=[],
    jobs=[process_webhook_events],
    sensors=[webhook_events_sensor],
    schedules=[],
    resources={
        "postgres": PostgresResource(),
    },
)
