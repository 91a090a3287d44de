"""The one ``dagster.Definitions`` for EverReach Data (``workspace.yaml`` loads this module): each flow's
definitions merged, with every resource built once from the settings."""

import warnings
from typing import Any

import dagster as dg

from everreach_data.ads import defs as ads
from everreach_data.config import Settings, definition_settings
from everreach_data.conversions import defs as conversions
from everreach_data.inbox import defs as inbox
from everreach_data.meta.insights import ATTRIBUTION_WINDOWS, DEFAULT_CONVERSION_ACTION_TYPES, LEVELS
from everreach_data.operations import defs as operations
from everreach_data.organic import defs as organic
from everreach_data.outbound import defs as outbound
from everreach_data.reports import defs as reports
from everreach_data.resources import PostgresResource, setting_values

# Dagster copies each sensor when it binds resources, and each copy warns that sensors' ``owners`` is beta,
# though none of ours has owners: a screenful in every process that loads the definitions.
warnings.filterwarnings("ignore", message="Parameter `owners` of initializer `SensorDefinition",
                        category=dg.BetaWarning)


def build_resources(settings: Settings, *, secrets_as_env_vars: bool = True) -> dict[str, Any]:
    """Every resource the flows use. The code location passes ``secrets_as_env_vars`` (secrets become
    ``dg.EnvVar``, read when a run starts and never shown in the UI); the demo and the tests, which run in
    this process, pass False and get the values."""
    value = setting_values(settings, secrets_as_env_vars=secrets_as_env_vars)
    graph = {"graph_url": settings.META_GRAPH_URL, "api_version": settings.META_API_VERSION}
    return {
        "postgres": PostgresResource(url=value("DATABASE_URL") or "", home=str(settings.EVERREACH_HOME)),
        "meta_ads": ads.MetaAdsResource(
            access_token=value(ads.MetaAdsResource.TOKEN_SETTING), ad_account_ids=settings.ad_account_ids,
            levels=settings.csv(settings.ADS_LEVELS) or list(LEVELS),
            conversion_action_types=settings.csv(settings.ADS_CONVERSION_ACTION_TYPES)
            or list(DEFAULT_CONVERSION_ACTION_TYPES),
            attribution_windows=settings.csv(settings.ADS_ATTRIBUTION_WINDOWS) or list(ATTRIBUTION_WINDOWS),
            **graph),
        "conversions_api": conversions.ConversionsAPIResource(
            access_token=value(conversions.ConversionsAPIResource.TOKEN_SETTING), pixel_id=settings.META_PIXEL_ID,
            **graph),
        "facebook_page": organic.FacebookPageResource(
            access_token=value(organic.FacebookPageResource.TOKEN_SETTING), page_id=settings.MESSENGER_PAGE_ID,
            **graph),
        "instagram_account": organic.InstagramAccountResource(
            access_token=value(organic.InstagramAccountResource.TOKEN_SETTING),
            ig_user_id=settings.INSTAGRAM_USER_ID, **graph),
        "outbound_messaging": outbound.OutboundMessagingResource.from_settings(value, **graph),
        "meta_tokens": operations.MetaTokensResource.from_settings(value, **graph),
        "whatsapp_templates": operations.WhatsAppTemplatesResource(
            access_token=value(operations.WhatsAppTemplatesResource.TOKEN_SETTING), waba_id=settings.WABA_ID,
            **graph),
        "inbox_retention": operations.InboxRetentionResource(
            retention_days=settings.WEBHOOK_RETENTION_DAYS, dedupe_days=settings.WEBHOOK_DEDUPE_DAYS),
    }


defs = dg.Definitions.merge(
    ads.defs, organic.defs, conversions.defs, inbox.defs, outbound.defs, reports.defs, operations.defs,
    dg.Definitions(resources=build_resources(definition_settings())),
)
