"""A client generated from the served document (datamodel-code-generator's pydantic models over its
schemas) round-trips the runbook's example bodies, and the receiver accepts what that client sends and
answers what its response models read."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import httpx
from datamodel_code_generator import DataModelType, InputFileType, generate
from datamodel_code_generator.format import Formatter

from tests.outbound.helpers import HOUR, user_wrote
from tests.tokens import bearer


def generated_client(document: dict, where: Path):
    """The document's schemas as a Python module of pydantic models, as an integrator would generate them."""
    source = where / "everreach_client.py"
    generate(json.dumps(document), input_file_type=InputFileType.OpenAPI, output=source,
             output_model_type=DataModelType.PydanticV2BaseModel, enum_field_as_literal="all",
             formatters=[Formatter.BUILTIN])
    spec = importlib.util.spec_from_file_location("everreach_client", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the models' forward references resolve through it
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_a_generated_client_round_trips_the_runbooks_examples(receiver, sandbox, document, db, tmp_path):
    client = generated_client(document, tmp_path)
    for platform, user in (("messenger", "1234567890"), ("whatsapp", "12177996721")):
        user_wrote(db, sandbox, platform, user, HOUR)  # the examples' customers wrote an hour ago
    sent = 0
    for path, item in document["paths"].items():
        for op in item.values():
            body = op.get("requestBody")
            if body is None or "examples" not in body["content"]["application/json"]:
                continue
            request_model = getattr(client, body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1])
            for name, example in body["content"]["application/json"]["examples"].items():
                parsed = request_model.model_validate(example["value"])
                wire = parsed.model_dump(mode="json", exclude_unset=True)
                assert wire == example["value"], name  # nothing lost, added or changed on the way through
                response = httpx.post(receiver + path, json=wire, headers=bearer("admin", sub="client"),
                                      timeout=30)
                assert 200 <= response.status_code < 300, (name, response.text)
                answer = op["responses"][str(response.status_code)]["content"]["application/json"]["schema"]
                answer_models = [getattr(client, ref["$ref"].rsplit("/", 1)[1])
                                 for ref in answer.get("anyOf", [answer])]
                assert any(_reads(model, response.json()) for model in answer_models), (name, response.text)
                sent += 1
    assert sent == 5  # two Messenger, two WhatsApp, one conversion: the runbook's bodies

    refused = httpx.post(receiver + "/api/v1/integrations/whatsapp/send", json={"to": "x"}, headers=bearer("admin"))
    error = client.ErrorResponse.model_validate(refused.json())
    assert refused.status_code == 422 and error.error.field == "to"


def _reads(model, data: dict) -> bool:
    try:
        model.model_validate(data)
    except ValueError:
        return False
    return True
