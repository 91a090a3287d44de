"""The one ``dagster.Definitions`` for EverReach Data (``workspace.yaml`` loads this module)."""

import dagster as dg

from everreach_data.assets import ads, conversions, organic
from everreach_data.jobs import outbound_messages
from everreach_data.jobs.webhook_events import process_webhook_events
from everreach_data.resources import PostgresResource
from everreach_data.sensors.outbound_messages import outbound_messages_sensor
from everreach_data.sensors.webhook_events import webhook_events_sensor

defs = dg.Definitions(
    assets=[ads.ad_performance, conversions.meta_conversion_event, organic.social_media_post,
            organic.social_post_insights, organic.social_account_insights],
    asset_checks=[],
    jobs=[ads.ad_performance_job, conversions.meta_conversions_job, organic.organic_insights_job,
          process_webhook_events, outbound_messages.send_outbound_messages,
          outbound_messages.send_message, outbound_messages.retry_failed_messages],
    sensors=[webhook_events_sensor, outbound_messages_sensor],
    schedules=[*ads.schedules, conversions.meta_conversions_daily, organic.organic_insights_daily],
    resources={
        "postgres": PostgresResource(),
        "outbound_messaging": outbound_messages.OutboundMessagingResource(),
        "meta_ads": ads.MetaAdsResource(access_token=dg.EnvVar("FB_ADS_ACCESS_TOKEN")),
        "conversions_api": conversions.ConversionsAPIResource(
            access_token=dg.EnvVar("META_CONVERSIONS_API_TOKEN"), pixel_id=dg.EnvVar("META_PIXEL_ID")),
        "facebook_page": organic.FacebookPageResource(
            access_token=dg.EnvVar("MESSENGER_PAGE_TOKEN"), page_id=dg.EnvVar("MESSENGER_PAGE_ID")),
        "instagram_account": organic.InstagramAccountResource(
            access_token=dg.EnvVar("INSTAGRAM_PAGE_TOKEN"), ig_user_id=dg.EnvVar("INSTAGRAM_USER_ID")),
    },
)
