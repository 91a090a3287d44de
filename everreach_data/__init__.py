"""EverReach Data: Meta channels as data, in Postgres, orchestrated by Dagster."""
