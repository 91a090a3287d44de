"""The Definitions as the code location loads them, and the one resource factory they share with the demo
and the tests."""

from __future__ import annotations

import dagster as dg
from pydantic import SecretStr

from everreach_data.config import Settings
from everreach_data.definitions import build_resources, defs
from everreach_sandbox.defaults import SANDBOX_DEFAULTS

CONTRACT_ASSETS = {"ad_performance", "social_media_post", "social_post_insights", "social_account_insights",
                   "meta_conversion_event"}


def test_the_definitions_load_with_the_contract_names():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert CONTRACT_ASSETS <= {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert {"process_webhook_events", "send_outbound_messages"} <= {job.name for job in repo.get_all_jobs()}
    assert {"webhook_events_sensor", "outbound_messages_sensor"} <= {s.name for s in repo.sensor_defs}


def test_secrets_reach_the_code_location_as_env_vars_and_unset_ones_as_none():
    settings = Settings(**{**SANDBOX_DEFAULTS, "WHATSAPP_ACCESS_TOKEN": None,
                           "DATABASE_URL": SecretStr("postgresql://u:secret@db/app")})
    resources = build_resources(settings)
    assert resources["meta_ads"].access_token == dg.EnvVar("FB_ADS_ACCESS_TOKEN")
    assert resources["postgres"].url == dg.EnvVar("DATABASE_URL")
    assert resources["outbound_messaging"].whatsapp_access_token is None
    assert resources["outbound_messaging"].messenger_page_id == SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
    every_value = repr({name: r.model_dump() for name, r in resources.items()})
    assert "secret@" not in every_value and SANDBOX_DEFAULTS["FB_ADS_ACCESS_TOKEN"] not in every_value

    values = build_resources(settings, secrets_as_env_vars=False)
    assert values["meta_ads"].access_token == SANDBOX_DEFAULTS["FB_ADS_ACCESS_TOKEN"]
    channels = values["outbound_messaging"].channels()
    assert channels["instagram"].token == SANDBOX_DEFAULTS["INSTAGRAM_PAGE_TOKEN"]
    assert channels["whatsapp"].token is None and channels["whatsapp"].channel_id


def test_the_catalog_shows_how_data_flows():
    graph = defs.get_repository_def().asset_graph

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}

    for table in ("conversation_thread", "conversation_message", "message_delivery_event"):
        assert "meta_webhook_event" in parents(table) or "conversation_message" in parents(table)
    assert "meta_webhook_event" in parents("conversation_message")
    assert "outbound_message_job" in parents("conversation_message")
    assert parents("meta_conversion_event") == {"user_event"}
    assert parents("campaign_performance_daily") == {"ad_performance", "campaign"}
    assert "campaign" in parents("ad_performance")
    assert parents("conversion_reconciliation_daily") == {"ad_performance", "meta_conversion_event"}
    assert parents("message_volume_daily") == {"conversation_message", "conversation_thread"}
    # Every table the project writes is in the catalog, with a description and an owner.
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable or node.is_external:
            assert node.description, key
