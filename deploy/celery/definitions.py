"""The Celery variant's code location: the project's definitions, with dagster-celery's executor for every
job that does not choose its own. The asset jobs' steps (ads ranges, organic insights, conversions) and the
send and operator jobs then run on Celery workers; the webhook drain keeps the in-process executor it
chose (a Celery round trip per run would only add latency to a webhook's path). Serve it instead of
``everreach_data.definitions``:

    dagster code-server start -h 0.0.0.0 -p 4000 -f deploy/celery/definitions.py
    dagster-celery worker start -A dagster_celery.app -y deploy/celery/celery.yaml

(``deploy/compose/celery.yaml`` adds both, and a Redis broker, to the single-host compose file.)
"""

from pathlib import Path

import dagster as dg
import yaml
from dagster_celery import celery_executor

from everreach_data.definitions import defs as everreach

#: The executor's configuration, shared with the workers (``-y``).
CELERY_YAML = Path(__file__).with_name("celery.yaml")


def executor_config() -> dict:
    return yaml.safe_load(CELERY_YAML.read_text(encoding="utf-8"))["execution"]["config"]


defs = dg.Definitions.merge(everreach, dg.Definitions(executor=celery_executor.configured(executor_config(),
                                                                                         name="celery")))
