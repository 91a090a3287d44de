"""The first-start backfill through a real Dagster webserver: one backfill of the last days of every daily
asset and of every other asset Meta feeds, and none on the next start."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

import dagster as dg

from everreach_data.config import PROJECT_ROOT
from everreach_data.first_start import MARKER, backfill_first_days, last_days
from everreach_data.serving import free_port


def test_a_first_start_backfills_the_last_week_of_every_daily_asset_and_the_objects_once(tmp_path, db_url):
    home = tmp_path / "dagster"
    home.mkdir()
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATABASE_URL": db_url}
    server = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-w", str(PROJECT_ROOT / "workspace.yaml"),
                               "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=home,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        backfill_id = backfill_first_days(f"http://127.0.0.1:{port}", home, today=date(2026, 11, 30))
        assert backfill_id and (home / MARKER).read_text().strip() == backfill_id
        assert backfill_first_days(f"http://127.0.0.1:{port}", home) is None  # later starts do not repeat it
    finally:
        server.terminate()
        server.wait(timeout=30)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [backfill] = instance.get_backfills()
        subset = backfill.asset_backfill_data.target_subset
        assets = {key.to_user_string() for key in subset.asset_keys}
        assert {"ad_performance", "social_account_insights", "meta_conversion_event", "message_volume_daily",
                "campaign_performance_daily"} <= assets
        # The objects ad_performance rows link to, token health and the template catalog, once.
        assert {"ad_account", "campaign", "ad_set", "ad", "ad_creative", "meta_platform_config",
                "whatsapp_message_template"} <= assets
        assert "conversation_message" not in assets                # queue-driven tables are not backfilled
        partitions = subset.get_partitions_subset(dg.AssetKey("ad_performance")).get_partition_keys()
        assert sorted(partitions) == last_days(date(2026, 11, 30)) == [
            "2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29"]
