"""The OpenAPI 3.1 document, written from the routes' :class:`~everreach_data.receiver.operation.Operation`
declarations and the pydantic models they validate with (one source: what is documented is what runs), and
the interactive page at ``/docs`` (Swagger UI from the ``swagger-ui-py`` package: no CDN at run time)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from everreach_data.receiver.auth import GRANTS, Role
from everreach_data.receiver.errors import ErrorResponse
from everreach_data.receiver.inputs import MAX_API_BODY_BYTES, MAX_DEPTH, MAX_STRING_CHARS
from everreach_data.receiver.operation import Answer, ApiRoute, Operation, PlainText

TITLE = "EverReach Data receiver"
VERSION = "1.0.0"
REF = "#/components/schemas/{model}"

#: Why an operation may answer each error status, added for the inputs it declares.
IMPLIED_ERRORS = {
    400: "The body is not JSON.",
    401: "No bearer token, or one that is malformed, signed with another secret or algorithm, expired, not yet "
         "valid, or for another audience.",
    403: "The token is valid but lacks the role this operation needs (`error.required_role`).",
    404: "The path names nothing that exists (or nothing this caller may see).",
    413: f"The body is larger than {MAX_API_BODY_BYTES} bytes; refused before it is read whole.",
    415: "Content-Type is not application/json.",
    422: "An input is invalid, unknown, too long, or holds a character Postgres cannot store (NUL, an unpaired "
         "surrogate): `error.field` names it, `error.problems` lists every problem. Nothing was stored.",
    500: "Unexpected error, logged with `error.request_id`.",
}

DESCRIPTION = f"""\
Meta's webhooks in; send requests, conversion events and ads summaries for your own callers.

**Authentication.** Every `/api/v1` operation needs `Authorization: Bearer <JWT>` (HS256, signed with
`JWT_SECRET`; a Supabase project's JWT secret works). **Roles** come from the claim at `JWT_ROLE_CLAIM`
(a string or a list): `operator` may queue sends and read its own jobs; `analyst` may read ads insights
and send conversion events; `admin` and Supabase's `service_role` may do both and read every job. Any
other role (Supabase's `authenticated`) may do nothing: 403, naming the role that was needed.

**Errors** all have one shape: `{{"success": false, "error": {{"message": …, "field": …}}}}` (see
`ErrorResponse`); `field` names the input to fix.

**Input rules.** Bodies are JSON (`application/json`, else 415), at most {MAX_API_BODY_BYTES} bytes (413).
Unknown fields are refused (422), so a misspelt field is never silently ignored. No string may hold NUL
or an unpaired surrogate, or be longer than {MAX_STRING_CHARS} characters where a field sets no tighter
limit; nesting stops at {MAX_DEPTH} levels (422).
"""


def _statuses(op: Operation) -> dict[int, str]:
    """Every error-shape status ``op`` can answer, and why: those its checked inputs imply, then its own."""
    implied = [500]
    if not op.bare:
        implied += [401, 403] if op.role is not None else []
        implied += [400, 413, 415, 422] if op.body is not None else []
        implied += [422] if op.query is not None or op.headers is not None else []
        implied += [404] if op.path is not None else []
    out = {status: IMPLIED_ERRORS[status] for status in sorted(set(implied))}
    for status, why in op.errors.items():
        out[status] = f"{out[status]} {why}" if status in out else why
    return dict(sorted(out.items()))


def _parameters(model: type[BaseModel] | None, where: str, defs: dict[str, Any]) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(mode="validation", ref_template=REF)
    defs.update(schema.pop("$defs", {}))
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        if description := prop.pop("description", None):
            param["description"] = description
        prop.pop("title", None)
        param["schema"] = _without_null(prop)
        params.append(param)
    return params


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without pydantic's ``| None``: a parameter left out is how HTTP says None."""
    options = [o for o in schema.get("anyOf", ()) if o != {"type": "null"}]
    if "anyOf" in schema and len(options) == 1:
        schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **options[0]}
    return {k: v for k, v in schema.items() if not (k == "default" and v is None)}


def _content(model: Any, schemas: dict[Any, Any], key: Any) -> dict[str, Any]:
    if isinstance(model, PlainText):
        return {"text/plain": {"schema": {"type": "string"}, "example": model.example}}
    return {"application/json": {"schema": schemas[key]}}


def _headers(headers: dict[str, str]) -> dict[str, Any]:
    return {name: {"description": why, "schema": {"type": "string"}} for name, why in headers.items()}


def document(routes: Iterable[BaseRoute], *, role_claim: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for the routes that declare an operation."""
    operations = [(route, method, route.operation) for route in routes if isinstance(route, ApiRoute)
                  for method in sorted(route.methods or ()) if method != "HEAD"]
    adapters: list[tuple[Any, str, TypeAdapter]] = [("error", "serialization", TypeAdapter(ErrorResponse))]
    for route, method, op in operations:
        if op.body is not None:
            adapters.append(((route.path, method, "body"), "validation", TypeAdapter(op.body)))
        for status, answer in op.answers.items():
            if not isinstance(answer.model, PlainText):
                adapters.append(((route.path, method, status), "serialization", TypeAdapter(answer.model)))
    schemas, definitions = TypeAdapter.json_schemas(adapters, ref_template=REF)
    schemas = {key: schema for (key, _mode), schema in schemas.items()}
    defs: dict[str, Any] = dict(definitions.get("$defs", {}))
    error_content = {"application/json": {"schema": schemas["error"]}}

    paths: dict[str, dict[str, Any]] = {}
    for route, method, op in operations:
        doc: dict[str, Any] = {"operationId": route.name, "summary": op.summary, "tags": [op.tag]}
        if route.description:
            doc["description"] = route.description
        parameters = (_parameters(op.path, "path", defs) + _parameters(op.headers, "header", defs)
                      + _parameters(op.query, "query", defs))
        if parameters:
            doc["parameters"] = parameters
        if op.body is not None:
            media: dict[str, Any] = {"schema": schemas[(route.path, method, "body")]}
            if op.examples:
                media["examples"] = {name: {"summary": ex.summary, "value": ex.value}
                                     for name, ex in op.examples.items()}
            doc["requestBody"] = {"required": True, "content": {"application/json": media}}
        responses: dict[str, Any] = {}
        for status, answer in sorted(op.answers.items()):
            responses[str(status)] = _answer(answer, _content(answer.model, schemas, (route.path, method, status)))
        for status, why in _statuses(op).items():
            if str(status) in responses:
                continue
            response: dict[str, Any] = {"description": why, "content": error_content}
            if status == 401:
                response["headers"] = _headers({"WWW-Authenticate": "Bearer, with the error when a token was sent"})
            elif status == 503:
                response["headers"] = _headers({"Retry-After": "seconds to wait before retrying"})
            elif status == 500:
                response["headers"] = _headers({"X-Request-Id": "the id in the log, as error.request_id"})
            responses[str(status)] = response
        doc["responses"] = responses
        doc["security"] = [{"bearer": []}] if op.role is not None else []
        if op.role is not None:
            holders = sorted(name for name, roles in GRANTS.items() if op.role in roles)
            doc["x-required-role"] = str(op.role)
            doc["description"] = (doc.get("description", "") + f"\n\nNeeds the `{op.role}` role "
                                  f"(held by tokens whose role is {', '.join(f'`{h}`' for h in holders)}).").strip()
        paths.setdefault(route.path, {})[method.lower()] = doc

    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(defs.items())),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": f"HS256 JWT signed with JWT_SECRET; roles at the `{role_claim}` claim "
                               f"({', '.join(r.value for r in Role)}, or service_role)."}},
        },
    }


def _answer(answer: Answer, content: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description, "content": content}
    if answer.headers:
        out["headers"] = _headers(dict(answer.headers))
    if answer.links:
        out["links"] = {name: {"operationId": link.operation_id, "parameters": dict(link.parameters)}
                        for name, link in answer.links.items()}
    return out


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{TITLE} — API</title>
  <link rel="stylesheet" href="docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"
    }});
  </script>
</body>
</html>
"""


async def docs_page(request: Request) -> HTMLResponse:
    return HTMLResponse(DOCS_PAGE)


#: ``/openapi.json``, ``/docs`` and the page's assets (served from the installed package, never a CDN).
routes: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"], include_in_schema=False),
    Route("/docs", docs_page, methods=["GET"], include_in_schema=False),
    Mount("/docs/assets", StaticFiles(packages=[("swagger_ui", "static")]), name="docs-assets"),
]
