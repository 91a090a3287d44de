"""The WhatsApp template catalog: synced from Meta's listing (every page), kept current by the template
webhooks through the drain, and what template sends are checked against before anything is queued."""

from __future__ import annotations

import dagster as dg
import httpx

from everreach_data.definitions import build_resources
from everreach_data.inbox.drain import drain_url
from everreach_data.operations.defs import whatsapp_message_template
from everreach_data.outbound import defs as outbound_jobs
from everreach_sandbox.defaults import SANDBOX_DEFAULTS
from tests.inbox.helpers import process
from tests.outbound.helpers import new_user, run_drain, sandbox_sent, send_whatsapp, user_wrote, wait_for

WABA = SANDBOX_DEFAULTS["WABA_ID"]


def _sync(settings, **resource_config):
    resources = build_resources(settings, secrets_as_env_vars=False)
    templates = resources["whatsapp_templates"]
    resources["whatsapp_templates"] = type(templates)(**{**templates.model_dump(), **resource_config})
    result = dg.materialize([whatsapp_message_template], resources=resources)
    return result.asset_materializations_for_node("whatsapp_message_template")[0].metadata, resources


def _catalog(db) -> dict[tuple[str, str], dict]:
    return {(r["name"], r["language"]): r for r in db.execute("SELECT * FROM whatsapp_message_template")}


def _template(name: str, language: str = "en_US", *params: str) -> dict:
    template: dict = {"name": name, "language": {"code": language}}
    if params:
        template["components"] = [{"type": "body", "parameters": [{"type": "text", "text": v} for v in params]}]
    return {"type": "template", "template": template}


def _nothing_queued(db) -> bool:
    return db.execute("SELECT (SELECT count(*) FROM outbound_message_job) + (SELECT count(*) FROM "
                      "conversation_message) AS n").fetchone()["n"] == 0


def test_the_sync_reads_every_page_of_the_listing(out_settings, sandbox, db):
    meta, _ = _sync(out_settings, page_size=3)
    catalog = _catalog(db)
    assert meta["templates"].value == len(catalog) == 11 and meta["api_calls"].value == 4  # 3 + 3 + 3 + 2
    shipped = catalog["order_shipped", "pt_BR"]
    assert (shipped["status"], shipped["category"], shipped["quality_score"], shipped["parameter_format"]) == (
        "APPROVED", "UTILITY", "GREEN", "POSITIONAL")
    assert shipped["components"][0]["text"] == "O pedido {{1}} foi enviado e chega em {{2}}."
    assert catalog["appointment_reminder", "en_US"]["parameter_format"] == "NAMED"
    assert catalog["spam_blast", "en_US"]["rejected_reason"] == "PROMOTIONAL"
    assert meta["by_status"].value == {"APPROVED": 8, "PENDING": 1, "REJECTED": 1, "PAUSED": 1}


def test_template_webhooks_keep_the_catalog_current_and_a_late_one_changes_nothing(out_settings, sandbox_state,
                                                                                     receiver, db, db_url):
    _sync(out_settings)
    sandbox = out_settings.META_GRAPH_URL
    change = httpx.post(f"{sandbox}/_sandbox/messaging/templates",
                        json={"name": "flash_deal", "status": "APPROVED", "quality": "YELLOW",
                              "category": "UTILITY"}).json()
    assert [w["entry"][0]["changes"][0]["field"] for w in change["webhooks"]] == [
        "message_template_status_update", "message_template_quality_update", "template_category_update"]
    wait_for(lambda: db.execute("SELECT count(*) AS n FROM meta_webhook_event").fetchone()["n"] == 3,
             what="the template webhooks")
    drain_url(db_url)
    deal = _catalog(db)["flash_deal", "en_US"]
    assert (deal["status"], deal["quality_score"], deal["category"], deal["previous_category"]) == (
        "APPROVED", "YELLOW", "UTILITY", "MARKETING")

    # A redelivery from before those changes (Meta's retries come late) does not undo them…
    late = dict(change["webhooks"][0])
    late["entry"] = [{**late["entry"][0], "time": late["entry"][0]["time"] - 3600}]
    late["entry"][0]["changes"] = [{"field": "message_template_status_update", "value": {
        **late["entry"][0]["changes"][0]["value"], "event": "PENDING"}}]
    process(db_url, late)
    assert _catalog(db)["flash_deal", "en_US"]["status"] == "APPROVED"
    # …and a template created after the last sync is known from its webhook until the next one.
    httpx.post(f"{sandbox}/_sandbox/messaging/templates",
               json={"name": "back_in_stock", "category": "MARKETING", "body": "{{1}} is back!", "status": "APPROVED"})
    wait_for(lambda: db.execute("SELECT count(*) AS n FROM meta_webhook_event").fetchone()["n"] == 5,
             what="the new template's webhook")
    drain_url(db_url)
    new = _catalog(db)["back_in_stock", "en_US"]
    assert (new["status"], new["category"], new["components"]) == ("APPROVED", "MARKETING", None)
    _sync(out_settings)
    assert _catalog(db)["back_in_stock", "en_US"]["components"][0]["text"] == "{{1}} is back!"


def test_a_template_that_is_not_approved_is_refused_before_anything_is_queued(out_settings, receiver, db):
    _sync(out_settings)
    for name in ("flash_deal", "spam_blast", "winter_promo", "no_such_template"):
        answer = send_whatsapp(receiver, {"to": new_user("whatsapp"), **_template(name, "en_US", "x")})
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["field"] == "template.name" and error["reason"] == "template"
        assert "hello_world (en_US)" in error["approved_templates"]
        unapproved = {"flash_deal (en_US)", "spam_blast (en_US)", "winter_promo (en_US)"}
        assert not unapproved & set(error["approved_templates"])
        assert error["message"].startswith(f"template.name: template {name} (en_US) is ")
        assert "approved: " in error["message"] and "order_shipped (pt_BR)" in error["message"]
    wrong_language = send_whatsapp(receiver, {"to": new_user("whatsapp"), **_template("hello_world", "fr_FR")})
    assert wrong_language.status_code == 422 and "hello_world (fr_FR) is not in the template catalog" in (
        wrong_language.json()["error"]["message"])
    assert _nothing_queued(db)


def test_the_number_of_body_parameters_is_checked(out_settings, receiver, db, sandbox):
    _sync(out_settings)
    too_few = send_whatsapp(receiver, {"to": new_user("whatsapp"), **_template("order_shipped", "en_US", "#42")})
    assert too_few.status_code == 422
    assert too_few.json()["error"] == {**too_few.json()["error"], "field": "template.components"}
    assert "takes 2 body parameters ({{1}}, {{2}}), not 1" in too_few.json()["error"]["message"]
    named = send_whatsapp(receiver, {"to": new_user("whatsapp"), **_template("appointment_reminder", "en_US", "Ana",
                                                                              "10:00")})
    assert named.status_code == 422 and "named body parameters {{first_name}}, {{time}}" in named.json()["error"][
        "message"]
    assert _nothing_queued(db)

    right = send_whatsapp(receiver, {"to": new_user("whatsapp"),
                                     **_template("order_shipped", "en_US", "#42", "Friday")})
    assert right.status_code == 202
    assert run_drain(out_settings, out_settings.DATABASE_URL.get_secret_value()).sent == 1
    assert sandbox_sent(sandbox)[0]["request"]["template"]["components"][0]["parameters"][1]["text"] == "Friday"


def test_an_unsynced_catalog_checks_nothing_and_meta_refuses_instead(out_settings, receiver, db, db_url, sandbox):
    answer = send_whatsapp(receiver, {"to": new_user("whatsapp"), **_template("spam_blast")})
    assert answer.status_code == 202
    report = run_drain(out_settings, db_url)
    assert report.failed == 1 and sandbox_sent(sandbox) == []
    assert db.execute("SELECT error_code FROM outbound_message_job").fetchone()["error_code"] == 132001



def test_a_catalog_known_only_from_quality_and_category_webhooks_refuses_nothing(out_settings, receiver, db,
                                                                                  db_url, sandbox):
    """Before the first sync, the drain adds templates from quality and category webhooks with no status: not
    knowing whether they are approved, the send check leaves it to Meta (it once refused every template)."""
    change = httpx.post(f"{out_settings.META_GRAPH_URL}/_sandbox/messaging/templates",
                        json={"name": "order_shipped", "language": "en_US", "quality": "YELLOW"}).json()
    assert [w["entry"][0]["changes"][0]["field"] for w in change["webhooks"]] == ["message_template_quality_update"]
    wait_for(lambda: db.execute("SELECT count(*) AS n FROM meta_webhook_event").fetchone()["n"] == 1,
             what="the quality webhook")
    drain_url(db_url)
    assert [(r["name"], r["status"]) for r in _catalog(db).values()] == [("order_shipped", None)]
    for name in ("order_shipped", "hello_world"):
        answer = send_whatsapp(receiver, {"to": new_user("whatsapp"), **_template(name, "en_US", "#42", "Friday")})
        assert answer.status_code == 202, answer.text

def test_the_operators_send_message_job_takes_the_same_check(out_settings, db, sandbox):
    _, resources = _sync(out_settings)
    user = new_user("whatsapp")

    def send(**config):
        return outbound_jobs.send_message.execute_in_process(
            run_config={"ops": {"queue_message": {"config": {"recipient": user, **config}}}}, resources=resources,
            raise_on_error=False)

    refused = send(template_name="winter_promo", template_parameters=["20%"])
    assert not refused.success
    failure = refused.failure_data_for_node("queue_message").user_failure_data
    assert "winter_promo (en_US) is PAUSED" in failure.description
    assert send(template_name="order_shipped", template_parameters=["#7", "Monday"]).success
    assert send(template_name="appointment_reminder",
                template_named_parameters={"first_name": "Ana", "time": "10:00"}).success
    assert db.execute("SELECT count(*) AS n FROM outbound_message_job").fetchone()["n"] == 2


def test_a_user_id_is_addressed_as_meta_allows(out_settings, receiver, db, db_url, sandbox):
    """Sends may address a business-scoped user id (Meta's `recipient`), in the thread we know them by; not with
    an authentication template, which Meta sends to phone numbers only."""
    _sync(out_settings)
    phone, user_id = new_user("whatsapp"), "US.55501234567890123"
    httpx.post(f"{sandbox}/_sandbox/messaging/users", json={"users": [
        {"platform": "whatsapp", "id": phone, "user_id": user_id, "hides_phone": True}]}).raise_for_status()
    user_wrote(db, sandbox, "whatsapp", phone, 600)
    db.execute("UPDATE conversation_thread SET participant_user_id = %s WHERE participant_id = %s", (user_id, phone))

    code = send_whatsapp(receiver, {"to": user_id, **_template("login_code", "en_US", "123456")})
    assert code.status_code == 422 and code.json()["error"]["field"] == "to"
    text = send_whatsapp(receiver, {"to": user_id, "type": "text", "message": "Your order shipped"})
    assert text.status_code == 202, text.text                       # inside the phone thread's 24-hour window
    assert text.json()["recipient_id"] == user_id
    assert run_drain(out_settings, db_url).sent == 1
    sent, = sandbox_sent(sandbox)
    assert sent["request"]["recipient"] == user_id and "to" not in sent["request"]
    thread, = db.execute("SELECT thread_id FROM conversation_thread WHERE platform = 'whatsapp'").fetchall()
    assert db.execute("SELECT thread_id FROM outbound_message_job").fetchone()["thread_id"] == thread["thread_id"]
