"""Token health: the meta_platform_config asset asks /debug_token about every configured token, its check
warns before a token expires and fails on one that is invalid or lacks a scope its flow needs, and
token_health_sensor pauses a messaging channel whose token stops it sending — within one tick."""

from __future__ import annotations

import dagster as dg
import httpx
import pytest

from everreach_data.definitions import build_resources
from everreach_data.operations.defs import meta_platform_config, token_health_sensor
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from tests.outbound.helpers import new_user, run_drain, sandbox_sent, send_whatsapp

WHATSAPP_SCOPES = ["whatsapp_business_messaging", "whatsapp_business_management"]
DAY = 86400


def _token(sandbox: str, token: str, *, scopes: list[str], expires_in: float | None = None, **extra) -> None:
    httpx.post(f"{sandbox}/_sandbox/tokens", json={"token": token, "scopes": scopes, "expires_in": expires_in,
                                                   **extra}).raise_for_status()


def _materialize(settings):
    resources = build_resources(settings, secrets_as_env_vars=False)
    result = dg.materialize([meta_platform_config], resources=resources, raise_on_error=False)
    check, = result.get_asset_check_evaluations()
    return result, check, resources


def _tick(resources) -> dg.SkipReason:
    return token_health_sensor(dg.build_sensor_context(resources={"postgres": resources["postgres"]}))


def _channel(db, platform: str) -> dict:
    return db.execute("SELECT * FROM meta_platform_config WHERE platform = %s", (platform,)).fetchone()


def test_every_configured_token_is_recorded_one_row_per_channel(out_settings, db):
    result, check, _ = _materialize(out_settings)
    assert result.success and check.passed
    rows = {(r["platform"], r["account_id"]): r for r in db.execute("SELECT * FROM meta_platform_config")}
    d = SANDBOX_DEFAULTS
    assert set(rows) == {("messenger", d["MESSENGER_PAGE_ID"]), ("instagram", d["INSTAGRAM_USER_ID"]),
                         ("whatsapp", d["WHATSAPP_PHONE_NUMBER_ID"]), ("ads", d["FB_ADS_ACCOUNT_ID"]),
                         ("conversions", d["META_PIXEL_ID"])}
    page = rows["messenger", d["MESSENGER_PAGE_ID"]]
    assert page["token_setting"] == "MESSENGER_PAGE_TOKEN" and page["token_valid"] and page["token_type"] == "PAGE"
    assert page["token_expires_at"] is not None and "pages_messaging" in page["scopes"]
    assert page["data_access_expires_at"] is not None and page["token_app_id"] == d["META_APP_ID"]
    # Instagram sends with the Page's token when it has none of its own; the row says which setting.
    assert rows["instagram", d["INSTAGRAM_USER_ID"]]["token_setting"] == "INSTAGRAM_PAGE_TOKEN"
    assert rows["whatsapp", d["WHATSAPP_PHONE_NUMBER_ID"]]["token_expires_at"] is None  # a system user's
    every_value = repr(list(rows.values())) + repr(result.asset_materializations_for_node("meta_platform_config"))
    assert not any(d[name] in every_value for name in ("MESSENGER_PAGE_TOKEN", "WHATSAPP_ACCESS_TOKEN",
                                                        "FB_ADS_ACCESS_TOKEN", "META_CONVERSIONS_API_TOKEN"))


def test_a_token_expiring_in_three_days_warns_and_fails_nothing(out_settings, sandbox, db):
    _token(sandbox, "wa-expiring", scopes=WHATSAPP_SCOPES, expires_in=3 * DAY)
    result, check, resources = _materialize(out_settings.model_copy(update={"WHATSAPP_ACCESS_TOKEN": "wa-expiring"}))
    assert result.success
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    warnings = check.metadata["warnings"].value
    assert list(warnings) == [f"whatsapp:{SANDBOX_DEFAULTS['WHATSAPP_PHONE_NUMBER_ID']}"]
    assert "WHATSAPP_ACCESS_TOKEN expires in 3.0 days" in warnings[next(iter(warnings))][0]
    assert check.metadata["errors"].value == {}
    _tick(resources)
    assert _channel(db, "whatsapp")["status"] == "active"


def test_an_expired_token_pauses_its_channel_within_one_sensor_tick(out_settings, sandbox, receiver, db, db_url):
    _token(sandbox, "wa-expired", scopes=WHATSAPP_SCOPES, expires_in=-60)
    settings = out_settings.model_copy(update={"WHATSAPP_ACCESS_TOKEN": "wa-expired"})
    result, check, resources = _materialize(settings)
    assert result.success and not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "WHATSAPP_ACCESS_TOKEN is not valid: (190/463)" in check.description
    assert _channel(db, "whatsapp")["status"] == "active"          # the check reports; the sensor acts

    _tick(resources)
    row = _channel(db, "whatsapp")
    assert (row["status"], row["paused_by"]) == ("needs_reauth", "token_health")
    assert row["status_reason"].startswith("token health: WHATSAPP_ACCESS_TOKEN is not valid")
    assert _channel(db, "messenger")["status"] == "active"          # only that channel stops
    # What is queued for it now waits instead of failing at Meta one message after another.
    queued = send_whatsapp(receiver, {"to": new_user("whatsapp"), "type": "template",
                                      "template": {"name": "hello_world", "language": {"code": "en_US"}}})
    assert queued.status_code == 202
    report = run_drain(settings, db_url)
    assert report.claimed == 0 and sandbox_sent(sandbox) == []

    # The token is replaced: the next check records it healthy and the sensor resumes what it paused.
    _token(sandbox, "wa-renewed", scopes=WHATSAPP_SCOPES)
    renewed = out_settings.model_copy(update={"WHATSAPP_ACCESS_TOKEN": "wa-renewed"})
    _, check, resources = _materialize(renewed)
    assert check.passed
    _tick(resources)
    assert (_channel(db, "whatsapp")["status"], _channel(db, "whatsapp")["paused_by"]) == ("active", None)
    assert run_drain(renewed, db_url).sent == 1


def test_a_token_that_expires_after_the_check_pauses_its_channel_at_the_next_tick(out_settings, sandbox, db):
    """The sensor reads the recorded expiry, so a channel stops when its token does, not at the next check."""
    _token(sandbox, "wa-soon", scopes=WHATSAPP_SCOPES, expires_in=3 * DAY)
    _, _, resources = _materialize(out_settings.model_copy(update={"WHATSAPP_ACCESS_TOKEN": "wa-soon"}))
    db.execute("UPDATE meta_platform_config SET token_expires_at = now() - interval '1 second' "
               "WHERE platform = 'whatsapp'")
    _tick(resources)
    assert _channel(db, "whatsapp")["status"] == "needs_reauth"
    assert "WHATSAPP_ACCESS_TOKEN expired at" in _channel(db, "whatsapp")["status_reason"]


@pytest.mark.parametrize("platform, setting, scopes, pauses, needed", [
    ("whatsapp", "WHATSAPP_ACCESS_TOKEN", ["whatsapp_business_management"], True,
     "lacks whatsapp_business_messaging (needed by WhatsApp sends)"),
    ("messenger", "MESSENGER_PAGE_TOKEN", ["pages_messaging"], False,
     "lacks pages_read_engagement, read_insights (needed by Page insights)"),
])
def test_a_missing_scope_fails_the_check_and_pauses_only_if_sends_need_it(out_settings, sandbox, db, platform,
                                                                           setting, scopes, pauses, needed):
    _token(sandbox, "narrow", scopes=scopes, type="PAGE" if platform == "messenger" else "SYSTEM_USER")
    _, check, resources = _materialize(out_settings.model_copy(update={setting: "narrow"}))
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert f"{setting} {needed}" in check.description
    _tick(resources)
    assert _channel(db, platform)["status"] == ("needs_reauth" if pauses else "active")


def test_an_unknown_token_and_one_that_can_no_longer_ask_about_itself_are_invalid(out_settings, sandbox, db):
    """With the app token, Meta answers for any token (an unknown one: not valid). Without META_APP_ID each
    token asks about itself, and an expired one is refused: that refusal is the answer."""
    _, check, _ = _materialize(out_settings.model_copy(update={"FB_ADS_ACCESS_TOKEN": "typo-token"}))
    assert "FB_ADS_ACCESS_TOKEN is not valid: (190) Invalid OAuth access token." in check.description

    _token(sandbox, "wa-gone", scopes=WHATSAPP_SCOPES, expires_in=-60)
    result, check, _ = _materialize(out_settings.model_copy(update={"META_APP_ID": None,
                                                                   "WHATSAPP_ACCESS_TOKEN": "wa-gone"}))
    assert result.success and not check.passed
    row = _channel(db, "whatsapp")
    assert row["token_valid"] is False and row["token_error"].startswith("(190/463) Error validating access token")
    assert _channel(db, "messenger")["token_valid"] is True       # the others could still ask about themselves


def test_a_channel_the_sender_paused_is_left_to_the_operator(out_settings, db):
    """Only pauses it made itself are undone by the sensor: a 190 at send time stays until an operator
    resumes the channel, even if the recorded token looks healthy."""
    _, check, resources = _materialize(out_settings)
    assert check.passed
    db.execute("UPDATE meta_platform_config SET status = 'needs_reauth', paused_by = 'sender' "
               "WHERE platform = 'messenger'")
    _tick(resources)
    assert _channel(db, "messenger")["status"] == "needs_reauth"
