"""The sandbox's world as settings: the ids and tokens it accepts, which `everreach-data dev`, `demo` and
the tests point the project at when no real Meta settings are given."""

#: They are not secrets: they only open the sandbox on 127.0.0.1.
SANDBOX_DEFAULTS: dict[str, str] = {
    "MESSENGER_PAGE_ID": "104719425342721",
    "MESSENGER_PAGE_TOKEN": "sandbox-page-token",
    "INSTAGRAM_PAGE_ID": "104719425342721",
    "INSTAGRAM_PAGE_TOKEN": "sandbox-page-token",
    "INSTAGRAM_USER_ID": "17841470026191358",
    "WHATSAPP_PHONE_NUMBER_ID": "1122334455667",
    "WHATSAPP_ACCESS_TOKEN": "sandbox-whatsapp-token",
    "WABA_ID": "5467539754836534",
    "FB_ADS_ACCESS_TOKEN": "sandbox-ads-token",
    "FB_ADS_ACCOUNT_ID": "act_1130334212412487",
    "META_PIXEL_ID": "990011223344556",
    "META_CONVERSIONS_API_TOKEN": "sandbox-capi-token",
    "META_WEBHOOK_VERIFY_TOKEN": "everreach_meta_verify_2025",
    "META_APP_ID": "263902037430900",
    "META_APP_SECRET": "sandbox-app-secret",
    "JWT_SECRET": "sandbox-jwt-secret-change-me-0123456789",
}
