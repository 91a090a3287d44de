"""The served OpenAPI document as an integrator uses it: valid OpenAPI 3.1, every route with its
parameters, request bodies with the runbook's examples, every answer with a schema, the bearer scheme; and
the interactive page, whose assets come from the installed package, never a CDN."""

from __future__ import annotations

import re

import httpx
from openapi_spec_validator import validate

from .conftest import api_operations

API = "/api/v1/integrations"


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema, $refs resolved


def test_every_route_is_documented(document):
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == {
        ("GET", "/healthz"),
        ("GET", "/api/webhooks/meta"), ("POST", "/api/webhooks/meta"),
        ("POST", f"{API}/messenger/send"), ("POST", f"{API}/whatsapp/send"),
        ("GET", f"{API}/messages/{{job_id}}"),
        ("GET", f"{API}/meta/ads-insights"), ("POST", f"{API}/meta/conversions"),
    }


def test_every_answer_has_a_schema_and_api_routes_their_error_answers(document):
    ops = api_operations(document)
    assert len(ops) == 5
    for method, path, op in ops:
        assert op["security"] == [{"bearer": []}], path
        assert {"401", "403", "500", "503"} <= set(op["responses"]), path
        if method == "POST":
            assert {"400", "413", "415", "422"} <= set(op["responses"]), path
    for item in document["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                [(media_type, content)] = response["content"].items()
                assert content["schema"], (op["operationId"], status)
                if status >= "400" and op["operationId"] != "healthz":  # health says "unavailable" its own way
                    assert media_type == "application/json"
                    assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    error = document["components"]["schemas"]["ErrorDetail"]
    assert {"message", "field", "request_id", "required_role"} <= set(error["properties"])
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_parameters_are_declared(document):
    def params(path, method):
        return {p["name"]: p for p in document["paths"][path][method].get("parameters", [])}

    job = params(f"{API}/messages/{{job_id}}", "get")["job_id"]
    assert job["in"] == "path" and job["required"] and job["schema"]["format"] == "uuid"
    for send in ("messenger", "whatsapp"):
        key = params(f"{API}/{send}/send", "post")["Idempotency-Key"]
        assert key["in"] == "header" and not key["required"] and key["schema"]["maxLength"] == 255
    insights = params(f"{API}/meta/ads-insights", "get")
    assert set(insights) == {"start_date", "end_date", "level", "limit", "ad_account_id"}
    assert insights["level"]["schema"]["enum"] == ["campaign", "adset", "ad"]
    assert insights["limit"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}
    assert set(params("/api/webhooks/meta", "get")) == {"hub.mode", "hub.challenge", "hub.verify_token"}
    assert params("/api/webhooks/meta", "post")["X-Hub-Signature-256"]["required"]


def test_request_bodies_carry_the_runbooks_examples(document):
    def examples(path):
        body = document["paths"][path]["post"]["requestBody"]
        assert body["required"]
        return {name: ex["value"] for name, ex in body["content"]["application/json"]["examples"].items()}

    messenger = examples(f"{API}/messenger/send")["text_with_quick_replies"]
    assert messenger["text"] == "Thanks for reaching out! 👋" and len(messenger["quick_replies"]) == 2
    whatsapp = examples(f"{API}/whatsapp/send")
    assert whatsapp["template"]["template"] == {"name": "hello_world", "language": {"code": "en_US"}}
    assert whatsapp["text"]["message"] == "Your order is on the way 🚚"
    purchase = examples(f"{API}/meta/conversions")["purchase"]
    assert (purchase["event_name"], purchase["value"], purchase["currency"]) == ("Purchase", 29.99, "USD")
    schemas = document["components"]["schemas"]
    assert schemas["MessengerSend"]["additionalProperties"] is False  # unknown fields are refused
    assert schemas["MessengerSend"]["properties"]["text"]["anyOf"][0]["maxLength"] == 2000


def test_docs_page_is_served_from_the_installed_package(receiver):
    page = httpx.get(f"{receiver}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text and 'url: "openapi.json"' in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text), "no asset from another host"
    assets = re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text)
    assert {"docs/assets/swagger-ui-bundle.js", "docs/assets/swagger-ui.css"} <= set(assets)
    for asset in assets:
        response = httpx.get(f"{receiver}/{asset}")
        assert response.status_code == 200 and len(response.content) > 500, asset
    bundle = httpx.get(f"{receiver}/docs/assets/swagger-ui-bundle.js").text
    assert re.search(r'"5\.\d+\.\d+"', bundle), "Swagger UI 5 (the first to read OpenAPI 3.1)"
