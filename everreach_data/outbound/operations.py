"""What operators do besides sending: put failed messages back in the queue, and resume channels paused
for re-authorization. The ``retry_failed_messages`` job and ``everreach-data retry-messages`` share it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from everreach_data.meta import messaging as wire
from everreach_data.outbound import queue

RESUME_CHANNELS = """
UPDATE meta_platform_config SET status = 'active', status_reason = NULL, paused_by = NULL, updated_at = now()
WHERE status = 'needs_reauth' AND platform = ANY (%(platforms)s::text[])
"""


async def retry_failed(database_url: str, *, job_ids: list[str] | None = None, since_hours: float = 24.0,
                       platform: str | None = None, include_unknown: bool = False,
                       resume_channels: bool = False) -> int:
    """Re-queue failed jobs (those of ``job_ids``, else all within ``since_hours``) and return how many.
    ``include_unknown`` also re-sends jobs whose outcome is unknown — the recipient may then get them twice;
    ``resume_channels`` first re-activates the paused channels (after the token is fixed)."""
    conn = await queue.connect_async(database_url)
    try:
        if resume_channels:
            await conn.execute(RESUME_CHANNELS, {"platforms": [platform] if platform else list(wire.PLATFORMS)})
        return await queue.requeue(
            conn, statuses=("failed", "unknown") if include_unknown else ("failed",),
            job_ids=[uuid.UUID(j) for j in job_ids or []] or None,
            since=None if job_ids else datetime.now(UTC) - timedelta(hours=since_hours), platform=platform)
    finally:
        await conn.close()
