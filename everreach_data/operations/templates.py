"""The WhatsApp template catalog (``whatsapp_message_template``): a full sync from Meta's listing. The
template webhooks keep it current between syncs (``inbox/apply.py``), and sends are checked against it
(``outbound/templates.py``).

A sync counts as a change made when it started: a webhook Meta sent after that wins over what the listing
said, one sent before loses to it (Meta stamps webhooks in whole seconds, so one from the second the sync
started in wins too); templates the listing no longer has (deleted at Meta) are dropped, unless a webhook
told us of them after the sync started.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import psycopg

from everreach_data.db.fast_json import jsonb
from everreach_data.meta.client import GraphClient
from everreach_data.meta.templates import APPROVED, PAGE_SIZE, Template, list_templates

UPSERT_TEMPLATES = """
INSERT INTO whatsapp_message_template AS t (waba_id, template_id, name, language, status, category, previous_category,
                                            quality_score, parameter_format, components, rejected_reason,
                                            status_changed_at, quality_changed_at, category_changed_at, synced_at)
SELECT %(waba_id)s, template_id, name, language, status, category, previous_category, quality_score,
       parameter_format, components, rejected_reason, %(as_of)s, %(as_of)s, %(as_of)s, %(started)s
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS x (template_id text, name text, language text, status text, category text, previous_category text,
           quality_score text, parameter_format text, components jsonb, rejected_reason text)
ON CONFLICT (waba_id, template_id) DO UPDATE SET
    name = EXCLUDED.name, language = EXCLUDED.language, components = EXCLUDED.components,
    parameter_format = EXCLUDED.parameter_format, synced_at = EXCLUDED.synced_at,
    status = CASE WHEN coalesce(t.status_changed_at, '-infinity') <= EXCLUDED.status_changed_at
                  THEN EXCLUDED.status ELSE t.status END,
    rejected_reason = CASE WHEN coalesce(t.status_changed_at, '-infinity') <= EXCLUDED.status_changed_at
                           THEN EXCLUDED.rejected_reason ELSE t.rejected_reason END,
    status_changed_at = GREATEST(t.status_changed_at, EXCLUDED.status_changed_at),
    quality_score = CASE WHEN coalesce(t.quality_changed_at, '-infinity') <= EXCLUDED.quality_changed_at
                         THEN EXCLUDED.quality_score ELSE t.quality_score END,
    quality_changed_at = GREATEST(t.quality_changed_at, EXCLUDED.quality_changed_at),
    category = CASE WHEN coalesce(t.category_changed_at, '-infinity') <= EXCLUDED.category_changed_at
                    THEN EXCLUDED.category ELSE t.category END,
    previous_category = CASE WHEN coalesce(t.category_changed_at, '-infinity') <= EXCLUDED.category_changed_at
                             THEN EXCLUDED.previous_category ELSE t.previous_category END,
    category_changed_at = GREATEST(t.category_changed_at, EXCLUDED.category_changed_at),
    updated_at = now()
"""

DROP_UNLISTED = """
DELETE FROM whatsapp_message_template
WHERE waba_id = %(waba_id)s AND coalesce(synced_at, '-infinity') < %(started)s AND updated_at < %(started)s
"""

BY_STATUS = """
SELECT coalesce(jsonb_object_agg(status, n), '{}') AS by_status
FROM (SELECT coalesce(status, 'UNKNOWN') AS status, count(*) AS n FROM whatsapp_message_template
      WHERE waba_id = %(waba_id)s GROUP BY 1) s
"""


@dataclass(frozen=True)
class SyncResult:
    listed: int
    dropped: int
    approved: int
    by_status: dict[str, int]
    api_calls: int


def sync_templates(conn: psycopg.Connection, client: GraphClient, waba_id: str, started: datetime, *,
                   page_size: int = PAGE_SIZE) -> SyncResult:
    """Replace the catalog of ``waba_id`` with Meta's listing (every page), in one transaction."""
    templates: list[Template] = list(list_templates(client, waba_id, page_size=page_size))
    params = {"waba_id": waba_id, "started": started,
              "as_of": started.replace(microsecond=0) - timedelta(seconds=1)}
    with conn.transaction():
        if templates:
            conn.execute(UPSERT_TEMPLATES, {**params, "rows": jsonb([asdict(t) for t in templates])})
        dropped = conn.execute(DROP_UNLISTED, params).rowcount
        by_status = conn.execute(BY_STATUS, params).fetchone()["by_status"]
    return SyncResult(listed=len(templates), dropped=dropped, approved=by_status.get(APPROVED, 0),
                      by_status=by_status, api_calls=client.stats.calls)
